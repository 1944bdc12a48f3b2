//! Errors of this crate, and the one place they become [`LogError`]s (what the
//! `EventLog` trait returns): bad configuration is `Io(InvalidInput)` as in the
//! embedded log; anything the broker did or did not answer is `Unavailable`, which
//! callers retry (503 + Retry-After).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tidegate_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka log config: {0}")]
    Config(String),
    #[error("kafka: {op}: {source}")]
    Kafka {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("kafka: {0} timed out")]
    Timeout(&'static str),
    #[error("kafka: {0}")]
    Broker(String),
    #[error("kafka: topic `{topic}` has {partitions} partitions; the Kafka log needs exactly one")]
    Partitions { topic: String, partitions: usize },
    #[error("kafka: meta topic `{0}` holds an invalid epoch record")]
    BadEpoch(String),
    #[error("log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { op, source }
    }
}

impl From<Error> for LogError {
    fn from(e: Error) -> Self {
        match e {
            Error::Config(_) => LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                e.to_string(),
            )),
            Error::Closed => LogError::Closed,
            Error::Partitions { .. } | Error::BadEpoch(_) => LogError::Corrupt(e.to_string()),
            Error::Kafka {
                source: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                ..
            } => LogError::Overloaded,
            Error::Kafka { .. } | Error::Timeout(_) | Error::Broker(_) => {
                LogError::Unavailable(e.to_string())
            }
        }
    }
}

/// Whether a Kafka error means "this topic already exists" (create is idempotent).
pub(crate) fn is_already_exists(code: RDKafkaErrorCode) -> bool {
    code == RDKafkaErrorCode::TopicAlreadyExists
}
