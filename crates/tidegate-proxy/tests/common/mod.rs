//! Shared fixtures: a real backend, a gateway serving a [`Proxy`] on port 0, tokens.
#![allow(dead_code)]
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tidegate_auth::{JwtConfig, Verifier};
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::EventLog;
use tidegate_proxy::{Proxy, ProxyConfig};

pub const SECRET: &str = "tidegate-proxy-test-secret-0123456789";

pub fn token(secret: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "jti": "s1", "exp": now + exp_offset}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn verifier() -> Arc<Verifier> {
    Arc::new(Verifier::new(JwtConfig::from_rig(SECRET, "HS256").unwrap()).unwrap())
}

pub fn open_log(dir: &std::path::Path) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(EmbeddedConfig::new(dir)).unwrap()
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// What the backend saw of the last request to `/echo…`, and async correlation ids.
pub struct Backend {
    pub addr: SocketAddr,
    pub async_ids: tokio::sync::Mutex<mpsc::Receiver<String>>,
}

#[derive(Clone)]
struct BackendState {
    async_tx: mpsc::Sender<String>,
}

async fn echo(req: Request) -> Json<Value> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// Counts the request body as it streams in; answers `{bytes, chunks}`.
async fn upload(body: Body) -> Json<Value> {
    let mut stream = body.into_data_stream();
    let (mut bytes, mut chunks, mut sum) = (0usize, 0usize, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        chunks += 1;
        sum += chunk.iter().map(|b| *b as u64).sum::<u64>();
    }
    Json(json!({"bytes": bytes, "chunks": chunks, "sum": sum}))
}

/// `n` chunks of 64 KiB, streamed with a pause between some.
async fn big() -> Response {
    let stream = futures_util::stream::iter(0..64u8).then(|i| async move {
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, std::io::Error>(Bytes::from(vec![i; 64 * 1024]))
    });
    Response::builder()
        .header("x-backend", "yes")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn accepted(State(s): State<BackendState>, req: Request) -> Response {
    let correlation = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("correlation=")))
        .unwrap_or("")
        .to_owned();
    let header = req
        .headers()
        .get("rig-correlation")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        correlation, header,
        "query parameter and header carry the same id"
    );
    let _ = s.async_tx.send(correlation).await;
    (StatusCode::ACCEPTED, "later").into_response()
}

async fn cached() -> Response {
    (StatusCode::OK, "from cache").into_response()
}

pub async fn backend() -> Arc<Backend> {
    let (async_tx, async_rx) = mpsc::channel(16);
    let router = Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/upload", post(upload))
        .route("/big", get(big))
        .route("/slow", get(slow))
        .route("/async", post(accepted))
        .route("/cached", post(cached))
        .with_state(BackendState { async_tx });
    let addr = serve(router).await;
    Arc::new(Backend {
        addr,
        async_ids: tokio::sync::Mutex::new(async_rx),
    })
}

pub struct Gateway {
    pub proxy: Arc<Proxy>,
    /// Inbound port (the proxy as fallback).
    pub inbound: String,
    /// Internal port (`/v3/apis`, `/v3/responses`).
    pub internal: String,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .expect("tasks stop on shutdown");
    }
}

pub async fn gateway(log: Arc<dyn EventLog>, config: ProxyConfig) -> Gateway {
    let proxy = Proxy::open(log, config).await.unwrap();
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    proxy.spawn_follower(&tasks, shutdown.clone());
    // The gateway's own routes first, the proxy as the fallback — as the binary wires it.
    let inbound = Router::new()
        .route("/_rig/health", get(|| async { "own route" }))
        .fallback_service(proxy.inbound_fallback());
    let inbound = serve(inbound).await;
    let internal = serve(proxy.management_router()).await;
    Gateway {
        proxy,
        inbound: format!("http://{inbound}"),
        internal: format!("http://{internal}"),
        tasks,
        shutdown,
    }
}

pub fn api(id: &str, port: u16, endpoints: Value) -> Value {
    json!({
        "id": id,
        "name": id,
        "auth_type": "jwt",
        "auth": {"use_header": true, "header_name": "Authorization", "use_query": true, "query_name": "token"},
        "proxy": {"target_url": "127.0.0.1", "port": port},
        "version_data": {"default": {
            "transform_request_headers": {"add_headers": {"x-added": "by-gateway"}},
            "endpoints": endpoints
        }}
    })
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
