//! What every handler shares: configuration, the log, the hub, auth, metrics.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tidegate_auth::{Checker, Verifier};
use tidegate_core::subscription::Limits;
use tidegate_core::Extractors;
use tidegate_hub::Hub;
use tidegate_log::EventLog;
use tidegate_telemetry::{LogLevelHandle, Metrics};

use crate::blacklist::BlacklistStore;
use crate::cors::Cors;

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub cors: Cors,
    /// Largest accepted request body (publish, PUT subscriptions).
    pub max_body_bytes: usize,
    /// Largest single event (its JSON).
    pub max_event_bytes: usize,
    /// Most events in one batch publish.
    pub max_batch_events: usize,
    /// How long an empty long-poll waits before answering with no events.
    pub longpoll_wait: Duration,
    /// JSON pointer of the session id claim (RIG's `JWT_SESSION_FIELD`).
    pub session_field: String,
    /// Event types delivered live only, never stored.
    pub transient_types: HashSet<String>,
    pub subscription_limits: Limits,
    /// Largest WebSocket message accepted from a client.
    pub ws_max_message: usize,
    /// Bytes of queued frames written per write (coalescing bound).
    pub write_batch_bytes: usize,
    /// Bearer token the internal API requires; `None` = open (development only).
    pub api_token: Option<String>,
    /// Max events returned by the history endpoint per page.
    pub history_max: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            cors: Cors::Any,
            max_body_bytes: 4 << 20,
            max_event_bytes: 1 << 20,
            max_batch_events: 1000,
            longpoll_wait: Duration::from_secs(5),
            session_field: "/jti".into(),
            transient_types: HashSet::new(),
            subscription_limits: Limits {
                max_subscriptions: 100,
                max_constraints: 100,
            },
            ws_max_message: 64 << 10,
            write_batch_bytes: 64 << 10,
            api_token: None,
            history_max: 1000,
        }
    }
}

/// Names and states of dependencies: `Err(reason)` when down.
pub type Dependencies = Box<dyn Fn() -> Vec<(String, Result<(), String>)> + Send + Sync>;

pub struct AppState {
    pub cfg: EdgeConfig,
    pub hub: Hub,
    pub log: Arc<dyn EventLog>,
    /// Log stream of events (the hub's).
    pub stream: String,
    pub metrics: Arc<Metrics>,
    pub extractors: Arc<Extractors>,
    pub verifier: Arc<Verifier>,
    pub subscription_check: Checker,
    pub submission_check: Checker,
    pub blacklist: Arc<BlacklistStore>,
    pub log_level: Option<LogLevelHandle>,
    /// Exposition text of the log backend's own statistics, rendered at scrape time.
    pub log_metrics: Option<Box<dyn Fn() -> String + Send + Sync>>,
    /// Readiness of the dependencies besides the log (event sources, brokers), each
    /// `(name, Err(reason))` when down; asked by `/health/ready`.
    pub dependencies: Option<Dependencies>,
    /// Node-wide bound on new connections (RIG's `MAX_CONNECTIONS_PER_MINUTE`).
    pub connection_rate: Option<tidegate_flow::rate::Gcra>,
    /// Per-client rate, per-session and long-poll bounds ([`crate::limits`]).
    pub limits: crate::limits::ConnectionLimits,
    pub admission: crate::admission::Admission,
    /// Ingestion routes and their delivery (status, DLQ) ([`crate::ingest`]).
    pub ingest: crate::ingest::Ingest,
    /// The Durable Streams protocol's table of streams ([`crate::streams`]).
    pub streams: crate::streams::Streams,
}

pub type SharedState = Arc<AppState>;
