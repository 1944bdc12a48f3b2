//! Event sources: backends publish CloudEvents to Kafka topics and NATS subjects;
//! the sources here consume them and append them to the durable log, from which the
//! hub delivers to browsers.
//!
//! ```text
//! broker ─► source task ─► decode ─► LogSink::append ─► log (durable) ─► ack / store offset
//!                                     (hub credits)
//! ```
//!
//! A message is acknowledged (Kafka offset stored, JetStream ack) only after its events
//! are durably in the log, so a crash loses nothing and redelivers at most a batch —
//! which the log's dedup key (`source` + `id`) stores once.
//!
//! - [`sink`]: [`LogSink`], the one way a source stores events (same framing, dedup
//!   key and size limit as HTTP publishing), with hub flow control.
//! - [`kafka`]: [`KafkaSourceConfig`] (RIG's `KAFKA_*` variables) and the consumer-group
//!   source.
//! - [`nats`]: [`NatsSourceConfig`] (RIG's `NATS_*` variables) and the JetStream
//!   durable pull consumer and core NATS queue-group sources.
//! - [`status`]: [`SourceStatus`] snapshots and their OpenMetrics text.
//! - `decode`: message → events (structured, binary, batch); `ingest`: one batch
//!   through the sink, with counting and logging of what was skipped.
//! - [`Sources`]: starts the configured sources as owned tasks and answers readiness.
#![forbid(unsafe_code)]

mod decode;
mod env;
mod ingest;
pub mod kafka;
pub mod nats;
pub mod sink;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use env::ConfigError;
pub use kafka::KafkaSourceConfig;
pub use nats::NatsSourceConfig;
pub use sink::{LogSink, Rejection, SinkError, Stored};
pub use status::{render_metrics, SourceState, SourceStatus};

/// One source to run.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Kafka(KafkaSourceConfig),
    Nats(NatsSourceConfig),
}

impl SourceConfig {
    /// The sources RIG's environment asks for: Kafka when `KAFKA_BROKERS` is set and
    /// topics are configured, NATS when `NATS_SERVERS` is set.
    pub fn from_rig_env(get: impl Fn(&str) -> Option<String>) -> Result<Vec<Self>, ConfigError> {
        let mut out = Vec::new();
        if let Some(k) = KafkaSourceConfig::from_rig_env(&get)? {
            out.push(SourceConfig::Kafka(k));
        }
        if let Some(n) = NatsSourceConfig::from_rig_env(&get)? {
            out.push(SourceConfig::Nats(n));
        }
        Ok(out)
    }

    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Kafka(k) => &k.name,
            SourceConfig::Nats(n) => &n.name,
        }
    }
}

/// The running sources of a process.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    cells: Vec<Arc<status::Cell>>,
}

impl Sources {
    /// Spawns every source on `tasks`; each stops when `shutdown` is cancelled, after
    /// committing what it stored (Kafka) and flushing its acks (NATS). Must be called
    /// inside a Tokio runtime. A name used twice gets a `-2`, `-3`… suffix so metric
    /// labels stay unique.
    pub fn start(
        configs: Vec<SourceConfig>,
        sink: LogSink,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Sources {
        let mut cells: Vec<Arc<status::Cell>> = Vec::with_capacity(configs.len());
        for config in configs {
            let mut name = config.name().to_owned();
            let mut n = 1;
            while cells.iter().any(|c| c.name() == name) {
                n += 1;
                name = format!("{}-{n}", config.name());
            }
            match config {
                SourceConfig::Kafka(mut k) => {
                    k.name = name;
                    let cell = Arc::new(status::Cell::new(&k.name, "kafka"));
                    tasks.spawn(kafka::run(k, sink.clone(), cell.clone(), shutdown.clone()));
                    cells.push(cell);
                }
                SourceConfig::Nats(mut c) => {
                    c.name = name;
                    let kind = if c.jetstream.is_some() {
                        "jetstream"
                    } else {
                        "nats"
                    };
                    let cell = Arc::new(status::Cell::new(&c.name, kind));
                    tasks.spawn(nats::run(c, sink.clone(), cell.clone(), shutdown.clone()));
                    cells.push(cell);
                }
            }
        }
        Sources { cells }
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn status(&self) -> Vec<SourceStatus> {
        self.cells.iter().map(|c| c.snapshot()).collect()
    }

    /// For `/health/ready`: `Err` names every source that is not running.
    pub fn ready(&self) -> Result<(), String> {
        let not_ready: Vec<String> = self
            .cells
            .iter()
            .map(|c| c.snapshot())
            .filter_map(|s| match s.state {
                SourceState::Running => None,
                SourceState::Connecting => Some(format!("source {} is connecting", s.name)),
                SourceState::Down(reason) => Some(format!("source {} is down: {reason}", s.name)),
            })
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(not_ready.join("; "))
        }
    }

    /// OpenMetrics text of every source (see [`render_metrics`]), no `# EOF`.
    pub fn render_metrics(&self) -> String {
        render_metrics(&self.status())
    }
}

/// Sleeps `delay` unless `shutdown` comes first; `false` when shutting down.
pub(crate) async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Backoff between reconnect attempts of a source: 200 ms doubling to 30 s, full jitter.
pub(crate) fn reconnect_backoff() -> tidegate_flow::retry::Backoff {
    tidegate_flow::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
        .unwrap_or_default()
}
