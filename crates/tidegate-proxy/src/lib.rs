//! Tidegate's API gateway: RIG's reverse proxy (`PROXY_CONFIG_FILE`, `/v3/apis`), with
//! the same definition format, routes, status codes and bodies.
//!
//! - [`config`] owns the definition format: serde types, RIG's defaults, loading a
//!   path or inline JSON, validation errors in RIG's shape.
//! - [`router`] compiles definitions into an immutable routing [`router::Table`]
//!   (method + `path` / `path_regex`, first match wins, `path_replacement`).
//! - [`store`] owns the definitions: file first, then the log stream `_apis` replayed
//!   and followed, so runtime changes survive restarts and reach every node.
//! - [`inbound`] is the inbound port's fallback: match → JWT check → target.
//! - [`http`] forwards to HTTP backends, streaming both bodies.
//! - [`publish`] is the broker side: the [`publish::Publisher`] trait with Kafka and
//!   NATS implementations, and the Kafka response consumer.
//! - [`correlation`] holds requests waiting for asynchronous responses (bounded).
//! - [`management`] serves `/v3/apis` and `/v3/responses` on the internal port.
//! - [`error`] is the one place errors become HTTP responses.
//!
//! A request moves: inbound router fallback → [`Proxy`] → `store.table()` lookup →
//! `http` or `publish` → (optionally) `correlation` waiter ← `/v3/responses` / Kafka.
#![forbid(unsafe_code)]

pub mod config;
pub mod correlation;
pub mod error;
pub mod http;
pub mod inbound;
pub mod management;
pub mod publish;
pub mod router;
pub mod store;

use axum::Router;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tidegate_auth::Verifier;
use tidegate_log::{EventLog, LogError};

pub use config::{ApiDefinition, ConfigError, ValidationErrors};
pub use correlation::{AsyncResponse, Correlations};
pub use error::ProxyError;
pub use publish::kafka::{KafkaConfig, KafkaPublisher, KafkaResponses, KafkaResponsesConfig};
pub use publish::nats::{NatsAck, NatsConfig, NatsPublisher};
pub use publish::{PublishError, Publisher};

/// Decides whether a verified token's session is refused (the session blacklist).
pub type SessionCheck = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// Timeouts, with RIG's env names and defaults.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connecting to an HTTP backend (no RIG equivalent).
    pub connect: Duration,
    /// `PROXY_RECV_TIMEOUT` (5 s): waiting for an HTTP backend's response head, and
    /// between two reads of its body.
    pub recv: Duration,
    /// `PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT` (5 s).
    pub http_async_response: Duration,
    /// `PROXY_KAFKA_RESPONSE_TIMEOUT` (5 s).
    pub kafka_response: Duration,
    /// `PROXY_NATS_RESPONSE_TIMEOUT` (60 s).
    pub nats_response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            recv: Duration::from_secs(5),
            http_async_response: Duration::from_secs(5),
            kafka_response: Duration::from_secs(5),
            nats_response: Duration::from_secs(60),
        }
    }
}

pub struct ProxyConfig {
    /// `PROXY_CONFIG_FILE`: a path or inline JSON; `None` = no file definitions.
    pub file: Option<String>,
    pub timeouts: Timeouts,
    /// Publisher for `target: kafka`; without it such endpoints answer 503.
    pub kafka: Option<Arc<dyn Publisher>>,
    /// Publisher for `target: nats` (and `response_from: nats` request/reply).
    pub nats: Option<Arc<dyn Publisher>>,
    /// Verifies tokens of `secured` endpoints; without it they always answer 401.
    pub verifier: Option<Arc<Verifier>>,
    /// Refuses tokens of blacklisted sessions (RIG checked `jti` against its blacklist).
    pub session_denied: Option<SessionCheck>,
    /// Largest request body forwarded or published (default 10 MiB).
    pub max_body: usize,
    /// Most requests waiting for asynchronous responses at once (default 10 000).
    pub max_waiters: usize,
    /// RIG's `CORS` (default `*`).
    pub cors: String,
    /// `by=` of the `forwarded` header (RIG: the gateway's host address); `None` omits it.
    pub forwarded_by: Option<String>,
    /// Scheme of the inbound port (`http`/`https`), for `x-forwarded-proto` and `rig.scheme`.
    pub scheme: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            file: None,
            timeouts: Timeouts::default(),
            kafka: None,
            nats: None,
            verifier: None,
            session_denied: None,
            max_body: 10 << 20,
            max_waiters: 10_000,
            cors: "*".to_owned(),
            forwarded_by: None,
            scheme: "http".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the API definitions stream: {0}")]
    Log(#[from] LogError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

/// The API gateway: definitions, routing table, HTTP client, publishers, waiters.
pub struct Proxy {
    pub(crate) config: ProxyConfig,
    pub(crate) store: Arc<store::ApiStore>,
    pub(crate) http: http::HttpClient,
    pub(crate) correlations: Arc<Correlations>,
}

impl Proxy {
    /// Loads `PROXY_CONFIG_FILE` (any invalid definition fails start-up, as in RIG),
    /// then replays the `_apis` stream over it.
    pub async fn open(
        log: Arc<dyn EventLog>,
        config: ProxyConfig,
    ) -> Result<Arc<Proxy>, OpenError> {
        let file_defs = match config.file.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => config::load(f)?,
            _ => Vec::new(),
        };
        let store = Arc::new(store::ApiStore::open(log, file_defs).await?);
        let http = http::HttpClient::new(
            config.timeouts.connect,
            config.timeouts.recv,
            config.max_body,
        )?;
        let correlations = Correlations::new(config.max_waiters);
        Ok(Arc::new(Proxy {
            config,
            store,
            http,
            correlations,
        }))
    }

    /// Follows `_apis` for changes made by other nodes until `shutdown`.
    pub fn spawn_follower(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        tasks.spawn(self.store.clone().follow(shutdown));
    }

    /// Starts the `PROXY_KAFKA_RESPONSE_TOPICS` consumer for `response_from: kafka`.
    pub fn spawn_kafka_responses(
        &self,
        config: &KafkaResponsesConfig,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), PublishError> {
        KafkaResponses::spawn(config, self.correlations.clone(), tasks, shutdown)
    }

    /// The inbound port's fallback: every unmatched path of the gateway goes here;
    /// no API route → 404 `{"message":"Not Found"}`. Use with `Router::fallback_service`.
    pub fn inbound_fallback(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(inbound::handle)
            .with_state(self.clone())
    }

    /// `/v3/apis[/{id}]` and `/v3/responses`, to merge into the internal router.
    pub fn management_router(self: &Arc<Self>) -> Router {
        management::router(self.clone())
    }

    /// The waiting requests (for metrics, or another response source).
    pub fn correlations(&self) -> &Arc<Correlations> {
        &self.correlations
    }

    /// Active definitions, as `GET /v3/apis` lists them.
    pub fn apis(&self) -> Vec<ApiDefinition> {
        self.store.list_active()
    }
}
