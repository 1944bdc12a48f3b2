//! Telemetry: the one place metric names are defined and logging is initialised.
//!
//! - [`Metrics`] owns every Prometheus metric of the process; components receive an
//!   `Arc<Metrics>` and only increment what they own (the hub counts deliveries, the
//!   edge counts connections and rejections). Labels have bounded cardinality: a
//!   transport, a reason, a policy — never a connection or user.
//! - [`init_tracing`] installs the subscriber and returns a [`LogLevelHandle`] so the
//!   admin API can change the level at runtime.
#![forbid(unsafe_code)]

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use tracing_subscriber::{reload, EnvFilter};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `sse`, `ws` or `longpolling`.
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// Every metric of the process. Field docs are the metric help texts.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<TransportLabel, Gauge>,
    pub connections_opened: Family<TransportLabel, Counter>,
    pub connections_rejected: Family<ReasonLabel, Counter>,
    pub subscriptions: Gauge,
    pub events_received: Family<SourceLabel, Counter>,
    pub events_rejected: Family<ReasonLabel, Counter>,
    pub events_duplicate: Counter,
    pub events_dispatched: Counter,
    pub events_dropped_unsubscribed: Counter,
    pub events_delivered: Counter,
    pub events_transient: Counter,
    pub queue_overflows: Family<PolicyLabel, Counter>,
    pub queue_dropped_events: Family<PolicyLabel, Counter>,
    pub slow_client_disconnects: Counter,
    pub replays: Counter,
    pub replayed_events: Counter,
    pub loss_events: Counter,
    pub sessions_killed: Counter,
    pub publish_latency_seconds: Histogram,
    pub hub_lag_records: Gauge,
    pub connection_queue_bytes: Histogram,
    pub queued_bytes: Gauge,
    pub http_overload: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidegate");
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                registry.register($name, $help, m.clone());
                m
            }};
        }
        Metrics {
            connections: reg!(
                "connections",
                "Open frontend connections",
                Family::default()
            ),
            connections_opened: reg!(
                "connections_opened",
                "Frontend connections opened",
                Family::default()
            ),
            connections_rejected: reg!(
                "connections_rejected",
                "Frontend connections refused, by reason",
                Family::default()
            ),
            subscriptions: reg!(
                "subscriptions",
                "Subscriptions held by connections of this node",
                Gauge::default()
            ),
            events_received: reg!(
                "events_received",
                "Events accepted for publishing, by source",
                Family::default()
            ),
            events_rejected: reg!(
                "events_rejected",
                "Publish requests refused, by reason",
                Family::default()
            ),
            events_duplicate: reg!(
                "events_duplicate",
                "Events recognised as duplicates by (source, id) and not stored again",
                Counter::default()
            ),
            events_dispatched: reg!(
                "events_dispatched",
                "Events read from the log tail by the hub",
                Counter::default()
            ),
            events_dropped_unsubscribed: reg!(
                "events_dropped_unsubscribed",
                "Events nobody on this node subscribed to, dropped before parsing",
                Counter::default()
            ),
            events_delivered: reg!(
                "events_delivered",
                "Event deliveries queued to connections",
                Counter::default()
            ),
            events_transient: reg!(
                "events_transient",
                "Transient events delivered live without being stored",
                Counter::default()
            ),
            queue_overflows: reg!(
                "queue_overflows",
                "Connection queue overflows, by overflow policy",
                Family::default()
            ),
            queue_dropped_events: reg!(
                "queue_dropped_events",
                "Events dropped from connection queues, by overflow policy",
                Family::default()
            ),
            slow_client_disconnects: reg!(
                "slow_client_disconnects",
                "Connections closed because their queue overflowed",
                Counter::default()
            ),
            replays: reg!("replays", "Resumes served from the log", Counter::default()),
            replayed_events: reg!(
                "replayed_events",
                "Events replayed to resuming connections",
                Counter::default()
            ),
            loss_events: reg!(
                "loss_events",
                "Explicit loss signals sent (cursor older than retention)",
                Counter::default()
            ),
            sessions_killed: reg!(
                "sessions_killed",
                "Connections closed because their session was blacklisted",
                Counter::default()
            ),
            publish_latency_seconds: reg!(
                "publish_latency_seconds",
                "Time from receiving a publish request to its durable acknowledgement",
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            ),
            hub_lag_records: reg!(
                "hub_lag_records",
                "Committed log records not yet dispatched by the hub",
                Gauge::default()
            ),
            connection_queue_bytes: reg!(
                "connection_queue_bytes",
                "Bytes queued per connection, sampled at every heartbeat sweep",
                Histogram::new(exponential_buckets(64.0, 4.0, 10))
            ),
            queued_bytes: reg!(
                "queued_bytes",
                "Bytes queued to all connections at the last heartbeat sweep",
                Gauge::default()
            ),
            http_overload: reg!(
                "http_overload",
                "Requests answered 429/503 by admission control, by reason",
                Family::default()
            ),
            registry,
        }
    }

    /// OpenMetrics text of every registered metric followed by `extra` lines (already
    /// in exposition format, e.g. the log's own statistics).
    pub fn encode(&self, extra: &str) -> String {
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        out.push_str(extra);
        out.push_str("# EOF\n");
        out
    }
}

/// Changes the log filter at runtime (admin API `PUT /v3/log-level`).
#[derive(Clone)]
pub struct LogLevelHandle {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// The active filter directive, kept for `GET`.
    current: Arc<Mutex<String>>,
}

impl LogLevelHandle {
    pub fn set(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive)
            .map_err(|e| format!("invalid log filter `{directive}`: {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        if let Ok(mut cur) = self.current.lock() {
            *cur = directive.to_string();
        }
        Ok(())
    }
    pub fn get(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Log output format: RIG's `LOG_FMT` (`erlang` = human text, `json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is a tracing filter (`info`,
/// `tidegate_hub=debug,info`); RIG's level names (`warn`, `error`, `debug`) are valid.
pub fn init_tracing(level: &str, format: LogFormat) -> Result<LogLevelHandle, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid log level `{level}`: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    res.map_err(|e| e.to_string())?;
    Ok(LogLevelHandle {
        handle,
        current: Arc::new(Mutex::new(level.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics_and_extra_lines() {
        let m = Metrics::new();
        m.events_delivered.inc_by(3);
        m.connections
            .get_or_create(&TransportLabel { transport: "sse" })
            .set(2);
        let text = m.encode("# TYPE tidegate_log_appends counter\ntidegate_log_appends_total 5\n");
        assert!(text.contains("tidegate_events_delivered_total 3"), "{text}");
        assert!(
            text.contains("tidegate_connections{transport=\"sse\"} 2"),
            "{text}"
        );
        assert!(text.contains("tidegate_log_appends_total 5"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
