//! The librdkafka client context shared by all our clients: forwards librdkafka's
//! log lines to `tracing`, counts global errors, and marks the backend unhealthy when
//! librdkafka says every broker is down. [`Health`] is the one owner of the
//! backend's reachability: the context sets it down, the periodic metadata probe
//! sets it up or down.

use crate::config::Role;
use crate::stats::Stats;
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Reachability of the brokers: `None` when healthy, else why not.
#[derive(Debug, Default)]
pub(crate) struct Health {
    down: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn get(&self) -> Result<(), String> {
        match &*self.down.lock() {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    pub(crate) fn set_down(&self, why: String) {
        let mut down = self.down.lock();
        if down.is_none() {
            tracing::warn!(reason = %why, "Kafka log unavailable.");
        }
        *down = Some(why);
    }

    pub(crate) fn set_up(&self) {
        let mut down = self.down.lock();
        if down.take().is_some() {
            tracing::info!("Kafka log reachable again.");
        }
    }
}

pub(crate) struct Ctx {
    role: Role,
    health: Arc<Health>,
    stats: Arc<Stats>,
    /// When an error was last logged at warn level.
    last: Mutex<Option<Instant>>,
}

impl Ctx {
    pub(crate) fn new(role: Role, health: Arc<Health>, stats: Arc<Stats>) -> Self {
        Ctx {
            role,
            health,
            stats,
            last: Mutex::new(None),
        }
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let client = self.role.name();
        match level {
            // Connection failures also arrive through `error` (rate-limited there).
            _ if fac == "FAIL" => tracing::debug!(target: "librdkafka", client, fac, "{msg}"),
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", client, fac, "{msg}"),
            RDKafkaLogLevel::Notice => tracing::info!(target: "librdkafka", client, fac, "{msg}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, fac, "{msg}")
            }
        }
    }

    fn stats(&self, _statistics: rdkafka::Statistics) {}

    fn error(&self, error: KafkaError, reason: &str) {
        // With `enable.partition.eof` librdkafka also reports the end of a partition
        // here; it is a normal event, already handled by the poll loops.
        if matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF))
        {
            return;
        }
        self.stats.client_errors.fetch_add(1, Ordering::Relaxed);
        let text = format!("{error}: {reason}");
        let all_down = matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        if all_down {
            self.health
                .set_down(format!("kafka: all brokers are down ({reason})"));
        }
        // A down broker makes every connection of every client fail about once a
        // second: log the first error and then at most one per LOG_EVERY.
        let mut last = self.last.lock();
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(client = self.role.name(), error = %text, "Kafka client error.");
            *last = Some(now);
        } else {
            tracing::debug!(client = self.role.name(), error = %text, "Kafka client error.");
        }
    }
}

impl ConsumerContext for Ctx {}
