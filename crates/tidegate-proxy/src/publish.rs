//! Fire-and-forget targets: the [`Publisher`] trait the `kafka` and `nats` endpoints
//! publish through, and its two implementations ([`kafka::KafkaPublisher`],
//! [`nats::NatsPublisher`]).
//!
//! The contract that differs from RIG: `publish` returns only after the broker
//! acknowledged the message (Kafka: `acks=all` delivery report; NATS: JetStream ack, or
//! for subjects outside any stream a flushed core publish). The proxy answers `202`
//! only on `Ok`; every [`PublishError`] becomes a `503` with `Retry-After` (or `502`
//! when the broker rejected the message itself), in [`crate::error`].
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

pub mod kafka;
pub mod nats;

/// Message headers: name and raw value.
pub type Headers = Vec<(String, Bytes)>;

/// A request/reply answer (`response_from: nats`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub headers: Headers,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not connected, connection lost, local queue full: retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No acknowledgement (or reply) in time.
    #[error("no acknowledgement from the broker within {0:?}")]
    Timeout(Duration),
    /// Nobody listens on the request subject (NATS request/reply).
    #[error("no responders on subject `{0}`")]
    NoResponders(String),
    /// The broker refused this message (too large, invalid topic, …): retrying will not help.
    #[error("message rejected by the broker: {0}")]
    Rejected(String),
    #[error("{0} does not support request/reply")]
    Unsupported(&'static str),
}

#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// `kafka` or `nats`, for logs.
    fn name(&self) -> &'static str;

    /// Publishes `payload` to `topic` (Kafka topic / NATS subject) and returns once the
    /// broker acknowledged it.
    async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), PublishError>;

    /// Sends a request and waits up to `timeout` for its reply (NATS request/reply).
    async fn request(
        &self,
        _topic: &str,
        _headers: Headers,
        _payload: Bytes,
        _timeout: Duration,
    ) -> Result<Reply, PublishError> {
        Err(PublishError::Unsupported(self.name()))
    }
}
