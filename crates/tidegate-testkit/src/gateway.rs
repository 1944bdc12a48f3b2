//! An in-process gateway on `127.0.0.1:0` with a temporary log directory.
//!
//! [`GatewayBuilder`] starts from [`tidegate::config::Config::default`] with test
//! values (ephemeral ports, an internal token, the test JWT secret, short heartbeats
//! and long-poll waits); [`Gateway`] exposes the bound addresses, publish helpers, and
//! [`Gateway::restart`] on the same log directory.
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

use tidegate::config::Config;
use tidegate::Running;

use crate::{http_client, jwt};

/// The internal API token of every test gateway.
pub const API_TOKEN: &str = "e2e-internal-token";

/// RIG's canonical extractor example: greetings are filtered by `name`, taken from the
/// event's `/data/name` and inferred from the token's `/sub`.
pub const GREETING_EXTRACTORS: &str = r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/sub"}}}}"#;

pub struct GatewayBuilder {
    cfg: Config,
    dir: Option<Arc<tempfile::TempDir>>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayBuilder {
    pub fn new() -> Self {
        let mut cfg = Config::default();
        cfg.inbound.host = "127.0.0.1".into();
        cfg.inbound.port = 0;
        cfg.internal.host = "127.0.0.1".into();
        cfg.internal.port = 0;
        cfg.internal.token = Some(API_TOKEN.into());
        cfg.jwt.secret_key = jwt::SECRET.into();
        cfg.connections.heartbeat_secs = 5;
        cfg.connections.longpoll_wait_secs = 1;
        cfg.log.durability = "buffered".into();
        GatewayBuilder { cfg, dir: None }
    }

    /// RIG's `EXTRACTORS` (inline JSON).
    pub fn extractors(mut self, json: &str) -> Self {
        self.cfg.extractors = Some(json.into());
        self
    }

    /// [`GREETING_EXTRACTORS`].
    pub fn greeting_extractors(self) -> Self {
        self.extractors(GREETING_EXTRACTORS)
    }

    /// Heartbeat interval; it is also the period of the hub's sweep (long-poll expiry).
    pub fn heartbeat_secs(mut self, secs: u64) -> Self {
        self.cfg.connections.heartbeat_secs = secs;
        self
    }

    pub fn longpoll_session_timeout_secs(mut self, secs: u64) -> Self {
        self.cfg.connections.longpoll_session_timeout_secs = secs;
        self
    }

    /// `fsync` or `buffered` (the default here: the tests are not about power loss).
    pub fn durability(mut self, d: &str) -> Self {
        self.cfg.log.durability = d.into();
        self
    }

    /// Any other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// Uses this log directory instead of a new temporary one.
    pub fn log_dir(mut self, dir: Arc<tempfile::TempDir>) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> Gateway {
        let dir = match self.dir {
            Some(d) => d,
            None => Arc::new(tempfile::tempdir().expect("creating a log tempdir")),
        };
        let mut cfg = self.cfg;
        cfg.log.dir = dir.path().to_path_buf();
        cfg.validate().expect("test configuration is valid");
        let running = tidegate::start(cfg.clone(), None)
            .await
            .expect("starting the gateway");
        Gateway {
            inbound: running.inbound,
            internal: running.internal,
            running: Some(running),
            dir,
            cfg,
            http: http_client(),
        }
    }
}

/// A running in-process gateway.
pub struct Gateway {
    pub inbound: std::net::SocketAddr,
    pub internal: std::net::SocketAddr,
    pub http: reqwest::Client,
    running: Option<Running>,
    dir: Arc<tempfile::TempDir>,
    cfg: Config,
}

/// The answer to a publish (or any plain request).
#[derive(Debug, Clone)]
pub struct Published {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Published {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }

    /// The `tidegatecursor` attribute of the acknowledged event.
    pub fn cursor(&self) -> String {
        assert_eq!(self.status, 202, "publish failed: {}", self.body);
        self.json()["tidegatecursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no tidegatecursor in {}", self.body))
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and a non-empty reason; returns the reason.
    pub fn assert_rejected(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        assert!(
            !self.body.trim().is_empty(),
            "HTTP {status} without a reason"
        );
        self.body.trim()
    }
}

impl Gateway {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.inbound, path_and_query)
    }

    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.inbound, path_and_query)
    }

    pub fn internal_url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.internal, path_and_query)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Any request on the inbound port, answered in full.
    pub async fn request(&self, req: reqwest::RequestBuilder) -> Published {
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("reading the response body");
        Published {
            status,
            headers,
            body,
        }
    }

    /// `POST /_rig/v1/events` with a structured CloudEvent (`application/cloudevents+json`).
    pub async fn publish(&self, event: &Value) -> Published {
        self.post_events("application/cloudevents+json", event.to_string())
            .await
    }

    /// `POST /v3/messages` on the internal port with the bearer token.
    pub async fn publish_internal(&self, event: &Value) -> Published {
        self.request(
            self.http
                .post(self.internal_url("/v3/messages"))
                .bearer_auth(API_TOKEN)
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string()),
        )
        .await
    }

    /// `POST /_rig/v1/events` with any content type and body.
    pub async fn post_events(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Published {
        self.request(
            self.http
                .post(self.url("/_rig/v1/events"))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// `PUT /_rig/v1/connection/{transport}/{token}/subscriptions` with a JSON body.
    pub async fn put_subscriptions(&self, transport: &str, token: &str, body: &Value) -> Published {
        self.request(
            self.http
                .put(self.url(&format!(
                    "/_rig/v1/connection/{transport}/{token}/subscriptions"
                )))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Both health endpoints answer `OK`.
    pub async fn assert_healthy(&self) {
        for url in [self.internal_url("/health"), self.url("/_rig/health")] {
            let r = self.request(self.http.get(&url)).await;
            assert_eq!((r.status, r.body.as_str()), (200, "OK"), "{url}");
        }
    }

    /// Stops the gateway (connections are closed, the log is flushed) and hands back
    /// its log directory.
    pub async fn shutdown(mut self) -> Arc<tempfile::TempDir> {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir.clone()
    }

    /// Shuts down and starts a new gateway with the same configuration on the same log
    /// directory (new ports).
    pub async fn restart(self) -> Gateway {
        let cfg = self.cfg.clone();
        let dir = self.shutdown().await;
        GatewayBuilder {
            cfg,
            dir: Some(dir),
        }
        .start()
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test that panicked never called shutdown: at least stop the listeners.
        if let Some(r) = &self.running {
            r.trigger_shutdown();
        }
    }
}

/// A CloudEvents 1.0 structured event.
pub fn ce(event_type: &str, id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tidegate/e2e",
        "type": event_type,
        "data": data,
    })
}

/// A `greeting` for `name` (see [`GREETING_EXTRACTORS`]).
pub fn greeting(name: &str, id: &str) -> Value {
    ce("greeting", id, json!({ "name": name }))
}
