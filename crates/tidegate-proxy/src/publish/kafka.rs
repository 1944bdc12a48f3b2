//! Kafka for the proxy: [`KafkaPublisher`] produces requests of `target: kafka`
//! endpoints; [`KafkaResponses`] consumes `PROXY_KAFKA_RESPONSE_TOPICS` and resolves
//! waiting `response_from: kafka` requests by their `rig-correlation` header.
//!
//! The producer is idempotent with `acks=all`, so `publish` returning `Ok` means every
//! in-sync replica has the message. The response consumer joins a consumer group of its
//! own per process (`<group>-<uuid>`, starting at the topic's end): a response must
//! reach the node holding the waiting request, so every node reads every response,
//! unlike RIG's shared group, which relied on Erlang's cluster-wide process messages.
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Headers, PublishError, Publisher};
use crate::correlation::{parse_response, Correlations};

/// While the response consumer keeps failing, how often it says so.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Connection settings shared by the producer and the response consumer.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`, comma-separated `host:port`.
    pub brokers: String,
    /// Extra librdkafka properties (SASL, SSL from `KAFKA_SASL` / `KAFKA_SSL_*`).
    pub properties: Vec<(String, String)>,
    /// How long a produce may wait for its acknowledgement.
    pub ack_timeout: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
            ack_timeout: Duration::from_secs(5),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Produces through one `FutureProducer` (idempotent, `acks=all`).
pub struct KafkaPublisher {
    producer: FutureProducer,
    ack_timeout: Duration,
}

impl KafkaPublisher {
    pub fn new(config: &KafkaConfig) -> Result<Self, PublishError> {
        let ack_ms = config
            .ack_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128)
            .to_string();
        let producer: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", &ack_ms)
            .set("linger.ms", "2")
            .create()
            .map_err(|e| PublishError::Unavailable(format!("creating the Kafka producer: {e}")))?;
        Ok(Self {
            producer,
            ack_timeout: config.ack_timeout,
        })
    }
}

fn classify(e: KafkaError, timeout: Duration) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) | Some(RDKafkaErrorCode::RequestTimedOut) => {
            PublishError::Timeout(timeout)
        }
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord,
        ) => PublishError::Rejected(e.to_string()),
        _ => PublishError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in &headers {
            kafka_headers = kafka_headers.insert(Header {
                key: name,
                value: Some(value.as_ref()),
            });
        }
        let mut record = FutureRecord::to(topic)
            .payload(payload.as_ref())
            .headers(kafka_headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        // The queue timeout only covers a full local queue; the delivery report is
        // bounded by `message.timeout.ms`, the outer timeout is a safety net.
        let send = self
            .producer
            .send(record, Timeout::After(Duration::from_millis(500)));
        match tokio::time::timeout(self.ack_timeout + Duration::from_secs(1), send).await {
            Ok(Ok(_delivery)) => Ok(()),
            Ok(Err((e, _msg))) => Err(classify(e, self.ack_timeout)),
            Err(_) => Err(PublishError::Timeout(self.ack_timeout)),
        }
    }
}

/// Settings of the response consumer (`PROXY_KAFKA_RESPONSE_*`).
#[derive(Debug, Clone)]
pub struct KafkaResponsesConfig {
    pub kafka: KafkaConfig,
    /// `PROXY_KAFKA_RESPONSE_TOPICS` (default `rig-proxy-response`).
    pub topics: Vec<String>,
    /// `PROXY_KAFKA_RESPONSE_KAFKA_GROUP_ID` (default `rig-proxy-response`), used as prefix.
    pub group_prefix: String,
}

impl KafkaResponsesConfig {
    pub fn new(kafka: KafkaConfig) -> Self {
        Self {
            kafka,
            topics: vec!["rig-proxy-response".to_owned()],
            group_prefix: "rig-proxy-response".to_owned(),
        }
    }
}

/// Consumes response topics and resolves waiting requests.
pub struct KafkaResponses;

impl KafkaResponses {
    /// Subscribes and spawns the consumer task into `tasks`; it stops on `shutdown`.
    pub fn spawn(
        config: &KafkaResponsesConfig,
        correlations: Arc<Correlations>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), PublishError> {
        let group = format!("{}-{}", config.group_prefix, uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = config
            .kafka
            .client_config()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .create()
            .map_err(|e| PublishError::Unavailable(format!("creating the Kafka consumer: {e}")))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| PublishError::Unavailable(format!("subscribing to {topics:?}: {e}")))?;
        info!(topics = ?config.topics, group = %group, "Consuming proxy responses from Kafka");
        tasks.spawn(async move {
            // While the broker is away the consumer fails every 500 ms: the first error
            // is logged, then one summary per interval, and the recovery.
            let mut failing: Option<(Instant, u64)> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = consumer.recv() => match msg {
                        Ok(msg) => {
                            if let Some((_, n)) = failing.take() {
                                info!(errors = n, "Kafka response consumer recovered");
                            }
                            let mut headers: Vec<(&str, &[u8])> = Vec::new();
                            if let Some(h) = msg.headers() {
                                for header in h.iter() {
                                    headers.push((header.key, header.value.unwrap_or_default()));
                                }
                            }
                            let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
                            match parse_response(headers, body) {
                                Ok((id, response)) => {
                                    let delivered = correlations.resolve(&id, response);
                                    debug!(correlation = %id, delivered, "Proxy response from Kafka");
                                }
                                Err(e) => debug!(error = %e, topic = msg.topic(), "Ignoring a Kafka message that is no proxy response"),
                            }
                        }
                        Err(e) => {
                            match &mut failing {
                                None => {
                                    warn!(error = %e, "Kafka response consumer error; retrying every 500 ms");
                                    failing = Some((Instant::now(), 0));
                                }
                                Some((since, n)) => {
                                    *n += 1;
                                    if since.elapsed() >= ERROR_LOG_INTERVAL {
                                        warn!(error = %e, errors = *n, "Kafka response consumer still failing");
                                        *since = Instant::now();
                                    }
                                }
                            }
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                        }
                    },
                }
            }
            debug!("Kafka response consumer stopped");
        });
        Ok(())
    }
}
