//! What a source reports about itself: its connection state and its counters.
//!
//! Each running source owns one [`Cell`] and is its only writer; readers
//! (`/health/ready`, `/metrics`, the admin API) take a [`SourceStatus`] snapshot
//! with [`Cell::snapshot`], which is a handful of atomic loads and one short lock.
//! [`render_metrics`] turns snapshots into OpenMetrics text; the metric names live
//! here and nowhere else.
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Connection state of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    /// Started, not connected yet.
    Connecting,
    /// Connected and consuming.
    Running,
    /// Not consuming; the reason says why. The source keeps retrying.
    Down(String),
}

impl SourceState {
    pub fn is_running(&self) -> bool {
        matches!(self, SourceState::Running)
    }
}

/// A snapshot of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// Unique per process; the `source` label of the metrics (`kafka`, `nats`, …).
    pub name: String,
    /// `kafka`, `nats` or `jetstream`.
    pub kind: &'static str,
    pub state: SourceState,
    /// Broker messages taken (a batch message counts once).
    pub received: u64,
    /// Events newly stored in the log.
    pub appended: u64,
    /// Messages or events that could not be stored (not a CloudEvent, too large, bad
    /// type); they are acknowledged and skipped.
    pub rejected: u64,
    /// Events the log already held (same `source` + `id` within the dedup window).
    pub duplicates: u64,
    /// Times the source recovered after being down.
    pub reconnects: u64,
    /// Messages waiting at the broker: Kafka: high watermark − stored position,
    /// summed over the assigned partitions; JetStream: the consumer's pending count.
    /// `None` where unknown (core NATS has no such thing).
    pub lag: Option<u64>,
}

/// The live, shared state behind a [`SourceStatus`].
#[derive(Debug)]
pub(crate) struct Cell {
    name: String,
    kind: &'static str,
    state: Mutex<SourceState>,
    received: AtomicU64,
    appended: AtomicU64,
    rejected: AtomicU64,
    duplicates: AtomicU64,
    reconnects: AtomicU64,
    /// `u64::MAX`: unknown.
    lag: AtomicU64,
}

const LAG_UNKNOWN: u64 = u64::MAX;

impl Cell {
    pub(crate) fn new(name: &str, kind: &'static str) -> Self {
        Cell {
            name: name.to_owned(),
            kind,
            state: Mutex::new(SourceState::Connecting),
            received: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            lag: AtomicU64::new(LAG_UNKNOWN),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Marks the source running; a recovery from `Down` counts as a reconnect.
    pub(crate) fn running(&self) {
        let mut state = self.state.lock();
        match &*state {
            SourceState::Running => {}
            SourceState::Down(_) => {
                *state = SourceState::Running;
                drop(state);
                self.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(source = %self.name, "Source recovered.");
            }
            SourceState::Connecting => {
                *state = SourceState::Running;
                drop(state);
                tracing::info!(source = %self.name, "Source running.");
            }
        }
    }

    /// Marks the source running again if it is down for exactly `reason` (a
    /// reconnect clears a disconnect, not an unrelated failure).
    pub(crate) fn running_if_down_with(&self, reason: &str) {
        let down_for_reason = matches!(&*self.state.lock(), SourceState::Down(r) if r == reason);
        if down_for_reason {
            self.running();
        }
    }

    pub(crate) fn down(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut state = self.state.lock();
        if *state != SourceState::Down(reason.clone()) {
            tracing::warn!(source = %self.name, %reason, "Source down.");
            *state = SourceState::Down(reason);
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.lock().is_running()
    }

    pub(crate) fn received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn appended(&self, n: u64) {
        self.appended.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, lag: Option<u64>) {
        self.lag.store(
            lag.map_or(LAG_UNKNOWN, |l| l.min(LAG_UNKNOWN - 1)),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn snapshot(&self) -> SourceStatus {
        let lag = self.lag.load(Ordering::Relaxed);
        SourceStatus {
            name: self.name.clone(),
            kind: self.kind,
            state: self.state.lock().clone(),
            received: self.received.load(Ordering::Relaxed),
            appended: self.appended.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            lag: (lag != LAG_UNKNOWN).then_some(lag),
        }
    }
}

// === metrics ===

/// OpenMetrics text of the given sources, without the final `# EOF` (the caller
/// appends this to its own exposition, before its `# EOF`).
///
/// | metric | type | labels |
/// |---|---|---|
/// | `tidegate_source_events_total` | counter | `source`, `result` = `appended` \| `rejected` \| `duplicate` |
/// | `tidegate_source_received_total` | counter | `source` |
/// | `tidegate_source_up` | gauge (1 running, 0 otherwise) | `source` |
/// | `tidegate_source_lag` | gauge (omitted while unknown) | `source` |
/// | `tidegate_source_reconnects_total` | counter | `source` |
pub fn render_metrics(statuses: &[SourceStatus]) -> String {
    let mut out = String::new();
    if statuses.is_empty() {
        return out;
    }
    out.push_str("# HELP tidegate_source_events Events taken from a broker source, by result.\n");
    out.push_str("# TYPE tidegate_source_events counter\n");
    for s in statuses {
        let name = escape(&s.name);
        for (result, n) in [
            ("appended", s.appended),
            ("rejected", s.rejected),
            ("duplicate", s.duplicates),
        ] {
            let _ = writeln!(
                out,
                "tidegate_source_events_total{{source=\"{name}\",result=\"{result}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP tidegate_source_received Broker messages taken by a source.\n");
    out.push_str("# TYPE tidegate_source_received counter\n");
    for s in statuses {
        let _ = writeln!(
            out,
            "tidegate_source_received_total{{source=\"{}\"}} {}",
            escape(&s.name),
            s.received
        );
    }
    out.push_str("# HELP tidegate_source_up Whether a source is connected and consuming.\n");
    out.push_str("# TYPE tidegate_source_up gauge\n");
    for s in statuses {
        let _ = writeln!(
            out,
            "tidegate_source_up{{source=\"{}\"}} {}",
            escape(&s.name),
            u8::from(s.state.is_running())
        );
    }
    out.push_str("# HELP tidegate_source_lag Messages waiting at the broker for a source.\n");
    out.push_str("# TYPE tidegate_source_lag gauge\n");
    for s in statuses {
        if let Some(lag) = s.lag {
            let _ = writeln!(
                out,
                "tidegate_source_lag{{source=\"{}\"}} {lag}",
                escape(&s.name)
            );
        }
    }
    out.push_str("# HELP tidegate_source_reconnects Times a source recovered after being down.\n");
    out.push_str("# TYPE tidegate_source_reconnects counter\n");
    for s in statuses {
        let _ = writeln!(
            out,
            "tidegate_source_reconnects_total{{source=\"{}\"}} {}",
            escape(&s.name),
            s.reconnects
        );
    }
    out
}

/// Label value escaping of the text format: backslash, double quote, newline.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_counts_as_reconnect_first_start_does_not() {
        let cell = Cell::new("kafka", "kafka");
        cell.running();
        assert_eq!(cell.snapshot().reconnects, 0);
        cell.down("all brokers down");
        assert_eq!(
            cell.snapshot().state,
            SourceState::Down("all brokers down".into())
        );
        cell.running();
        cell.running();
        let s = cell.snapshot();
        assert_eq!(s.state, SourceState::Running);
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.lag, None);
        cell.set_lag(Some(7));
        assert_eq!(cell.snapshot().lag, Some(7));
    }

    #[test]
    fn metrics_text() {
        let cell = Cell::new("na\"ts", "nats");
        cell.appended(3);
        cell.rejected(1);
        cell.set_lag(Some(2));
        let text = render_metrics(&[cell.snapshot()]);
        assert!(text
            .contains("tidegate_source_events_total{source=\"na\\\"ts\",result=\"appended\"} 3\n"));
        assert!(text.contains("tidegate_source_up{source=\"na\\\"ts\"} 0\n"));
        assert!(text.contains("tidegate_source_lag{source=\"na\\\"ts\"} 2\n"));
        assert!(text.contains("# TYPE tidegate_source_reconnects counter\n"));
        assert!(!text.contains("# EOF"));
        assert_eq!(render_metrics(&[]), "");
    }
}
