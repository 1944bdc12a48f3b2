//! NATS for the proxy: [`NatsPublisher`] publishes requests of `target: nats`
//! endpoints and does RIG's request/reply for `response_from: nats`.
//!
//! Acknowledgement, decided per subject ([`NatsAck::Auto`], the default): when the
//! subject belongs to a JetStream stream (asked once via `STREAM.NAMES` and cached for
//! [`STREAM_CACHE_TTL`]) the message is published through JetStream and `publish`
//! returns after the stream's ack; otherwise it is a core publish followed by a flush —
//! core NATS has no acknowledgement, so `Ok` means "written to a connected server",
//! the most core NATS can promise. Publishing never waits for a reconnect: a client
//! that is not connected fails at once with [`PublishError::Unavailable`] (503).
use async_nats::jetstream;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

use super::{Headers, PublishError, Publisher, Reply};

/// How long "does this subject belong to a stream" is remembered.
pub const STREAM_CACHE_TTL: Duration = Duration::from_secs(30);
/// At most this many subjects are remembered; the cache is cleared when full.
const STREAM_CACHE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsAck {
    /// JetStream ack when the subject is in a stream, else core publish + flush.
    #[default]
    Auto,
    /// Always core publish + flush.
    Core,
    /// Always JetStream; a subject outside every stream is an error (503).
    JetStream,
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `NATS_SERVERS`, comma-separated.
    pub servers: String,
    pub ack: NatsAck,
    /// How long a publish may wait for its flush / JetStream ack.
    pub ack_timeout: Duration,
}

impl NatsConfig {
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            ack: NatsAck::Auto,
            ack_timeout: Duration::from_secs(5),
        }
    }
}

pub struct NatsPublisher {
    client: async_nats::Client,
    js: jetstream::Context,
    ack: NatsAck,
    ack_timeout: Duration,
    in_stream: Mutex<HashMap<String, (bool, Instant)>>,
}

impl NatsPublisher {
    /// Starts connecting in the background (a NATS server that is down at start-up
    /// does not stop the gateway; publishes fail with 503 until it is reachable).
    pub async fn connect(config: &NatsConfig) -> Result<Self, PublishError> {
        let servers: Vec<async_nats::ServerAddr> = config
            .servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                PublishError::Unavailable(format!(
                    "invalid NATS server list `{}`: {e}",
                    config.servers
                ))
            })?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(servers)
            .await
            .map_err(|e| PublishError::Unavailable(format!("connecting to NATS: {e}")))?;
        Ok(Self::with_client(client, config))
    }

    /// Uses an existing client (shared with the rest of the gateway).
    pub fn with_client(client: async_nats::Client, config: &NatsConfig) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            ack: config.ack,
            ack_timeout: config.ack_timeout,
            in_stream: Mutex::new(HashMap::new()),
        }
    }

    fn ensure_connected(&self) -> Result<(), PublishError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(PublishError::Unavailable(format!(
                "NATS is not connected ({state})"
            ))),
        }
    }

    async fn subject_in_stream(&self, subject: &str) -> bool {
        let now = Instant::now();
        if let Some((yes, at)) = self.in_stream.lock().get(subject) {
            if now.duration_since(*at) < STREAM_CACHE_TTL {
                return *yes;
            }
        }
        let lookup =
            tokio::time::timeout(self.ack_timeout, self.js.stream_by_subject(subject)).await;
        let yes = matches!(lookup, Ok(Ok(_)));
        debug!(subject, in_stream = yes, "NATS subject stream lookup");
        let mut cache = self.in_stream.lock();
        if cache.len() >= STREAM_CACHE_MAX {
            cache.clear();
        }
        cache.insert(subject.to_owned(), (yes, now));
        yes
    }
}

fn header_map(headers: &Headers) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(name.as_str(), String::from_utf8_lossy(value).as_ref());
    }
    map
}

#[async_trait]
impl Publisher for NatsPublisher {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn publish(
        &self,
        topic: &str,
        _key: Option<&[u8]>,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        self.ensure_connected()?;
        let jetstream = match self.ack {
            NatsAck::Core => false,
            NatsAck::JetStream => true,
            NatsAck::Auto => self.subject_in_stream(topic).await,
        };
        let headers = header_map(&headers);
        let timeout = self.ack_timeout;
        if jetstream {
            let publish = async {
                let ack = self
                    .js
                    .publish_with_headers(topic.to_owned(), headers, payload)
                    .await
                    .map_err(js_error)?;
                ack.await.map_err(js_error)
            };
            match tokio::time::timeout(timeout, publish).await {
                Ok(Ok(_ack)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(PublishError::Timeout(timeout)),
            }
        } else {
            let publish = async {
                self.client
                    .publish_with_headers(topic.to_owned(), headers, payload)
                    .await
                    .map_err(|e| PublishError::Unavailable(e.to_string()))?;
                self.client
                    .flush()
                    .await
                    .map_err(|e| PublishError::Unavailable(e.to_string()))
            };
            match tokio::time::timeout(timeout, publish).await {
                Ok(result) => result,
                Err(_) => Err(PublishError::Timeout(timeout)),
            }
        }
    }

    async fn request(
        &self,
        topic: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply, PublishError> {
        use async_nats::client::RequestErrorKind;
        self.ensure_connected()?;
        let request = async_nats::Request::new()
            .headers(header_map(&headers))
            .payload(payload)
            .timeout(Some(timeout));
        let send = self.client.send_request(topic.to_owned(), request);
        let msg = match tokio::time::timeout(timeout + Duration::from_millis(500), send).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    RequestErrorKind::TimedOut => PublishError::Timeout(timeout),
                    RequestErrorKind::NoResponders => PublishError::NoResponders(topic.to_owned()),
                    RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                        PublishError::Rejected(e.to_string())
                    }
                    _ => PublishError::Unavailable(e.to_string()),
                })
            }
            Err(_) => return Err(PublishError::Timeout(timeout)),
        };
        let mut reply_headers = Vec::new();
        if let Some(h) = &msg.headers {
            for (name, values) in h.iter() {
                for v in values {
                    reply_headers.push((
                        name.to_string(),
                        Bytes::copy_from_slice(v.as_str().as_bytes()),
                    ));
                }
            }
        }
        Ok(Reply {
            headers: reply_headers,
            payload: msg.payload,
        })
    }
}

fn js_error(e: jetstream::context::PublishError) -> PublishError {
    use jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::TimedOut => PublishError::Unavailable(e.to_string()),
        K::StreamNotFound => PublishError::Unavailable(e.to_string()),
        K::MaxPayloadExceeded => PublishError::Rejected(e.to_string()),
        _ => PublishError::Unavailable(e.to_string()),
    }
}
