//! The Durable Streams protocol (ElectricSQL, PROTOCOL.md v1.0) on the log, mounted
//! at a configurable prefix of the inbound port (default `/v1/stream`).
//!
//! - [`store`]: the on-log format (data and control records, one log stream per
//!   stream path) and the replay that rebuilds a stream's state.
//! - [`producer`]: idempotent producer validation (pure).
//! - [`write`]: `PUT` (create, forks), `POST` (append, close), `DELETE`.
//! - [`read`]: `GET` in catch-up, long-poll and SSE modes, `HEAD`.
//!
//! [`Streams`] owns the in-memory table of streams. Each [`Entry`] has a write lock
//! (serializes validation + append per stream, as the protocol requires per
//! producer) and a `watch` of its [`store::Meta`]: writers publish a new snapshot after
//! each commit; readers take snapshots and wait for the next one to tail live.
//! State is loaded lazily, by replaying the stream's log records on first use.
pub mod producer;
pub mod read;
pub mod store;
pub mod write;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use tidegate_log::EventLog;

use crate::error::ApiError;
use crate::state::SharedState;
use store::{Meta, Status, WriterState};

pub const NEXT_OFFSET: &str = "stream-next-offset";
pub const UP_TO_DATE: &str = "stream-up-to-date";
pub const CLOSED: &str = "stream-closed";
pub const CURSOR: &str = "stream-cursor";

/// Log stream names of Durable Streams start with this (then hex of the path).
const LOG_PREFIX: &str = "ds.";

#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// URL path prefix, e.g. `/v1/stream`; empty disables the protocol.
    pub prefix: String,
    /// Require a valid JWT (`Authorization: Bearer`) on every request under the prefix.
    pub require_auth: bool,
    /// How long a long-poll waits for data before `204`.
    pub longpoll_wait: Duration,
    /// SSE connections are closed after this (clients reconnect; CDN collapsing).
    pub sse_max: Duration,
    /// Most body bytes in one catch-up response.
    pub max_chunk_bytes: usize,
    /// Largest log record written for one data chunk (bodies are split above this).
    pub max_record_bytes: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            prefix: "/v1/stream".into(),
            require_auth: false,
            longpoll_wait: Duration::from_secs(5),
            sse_max: Duration::from_secs(60),
            max_chunk_bytes: 64 << 10,
            max_record_bytes: 256 << 10,
        }
    }
}

/// One stream path.
pub struct Entry {
    pub path: String,
    pub log_name: String,
    writer: tokio::sync::Mutex<Option<WriterState>>,
    meta: watch::Sender<Arc<Meta>>,
    /// Milliseconds since the epoch of the last read or write (sliding TTL).
    last_access: AtomicU64,
    /// `meta` reflects the log (set after replay, cleared by [`Entry::invalidate`]).
    loaded: AtomicBool,
}

pub struct Streams {
    pub cfg: StreamsConfig,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ds.` + hex of the path below the prefix: a valid, collision-free log stream name.
fn log_name(rest: &str) -> Option<String> {
    let name_len = LOG_PREFIX.len() + rest.len() * 2;
    if rest.is_empty() || name_len > 200 {
        return None;
    }
    let mut s = String::with_capacity(name_len);
    s.push_str(LOG_PREFIX);
    for b in rest.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    Some(s)
}

impl Streams {
    pub fn new(cfg: StreamsConfig) -> Streams {
        Streams {
            cfg,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry of a full request path (`/v1/stream/a/b`), or 400/404 for a path
    /// that cannot name a stream.
    pub fn entry(&self, path: &str) -> Result<Arc<Entry>, ApiError> {
        let rest = path
            .strip_prefix(self.cfg.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not a stream path"))?;
        let name = log_name(rest).ok_or_else(|| {
            ApiError::bad_request("stream path is empty or too long (at most 98 bytes)")
        })?;
        let mut map = self.entries.lock();
        Ok(map
            .entry(path.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    path: path.to_owned(),
                    log_name: name,
                    writer: tokio::sync::Mutex::new(None),
                    meta: watch::Sender::new(Arc::new(Meta::missing())),
                    last_access: AtomicU64::new(now_ms()),
                    loaded: AtomicBool::new(false),
                })
            })
            .clone())
    }
}

/// The write lock of an entry, with its state loaded.
pub struct Locked<'a> {
    pub entry: &'a Entry,
    guard: tokio::sync::MutexGuard<'a, Option<WriterState>>,
}

impl Locked<'_> {
    pub fn writer(&mut self) -> &mut WriterState {
        self.guard.get_or_insert_with(WriterState::default)
    }
    pub fn meta(&self) -> Arc<Meta> {
        self.entry.meta.borrow().clone()
    }
    pub fn publish(&self, meta: Meta) {
        self.entry.meta.send_replace(Arc::new(meta));
    }

    /// Takes the writer state out for an append whose outcome is unknown until it
    /// returns: if the request is dropped meanwhile, the next access replays the log.
    pub fn begin(&mut self) -> WriterState {
        self.entry.loaded.store(false, Ordering::Release);
        self.guard.take().unwrap_or_default()
    }

    /// Puts the writer state back after a known outcome.
    pub fn end(&mut self, w: WriterState) {
        *self.guard = Some(w);
        self.entry.loaded.store(true, Ordering::Release);
    }
}

impl Entry {
    pub async fn lock(&self, log: &dyn EventLog) -> Result<Locked<'_>, ApiError> {
        let mut guard = self.writer.lock().await;
        if guard.is_none() {
            let (meta, w) = store::replay(log, &self.log_name).await?;
            self.meta.send_replace(Arc::new(meta));
            self.last_access.store(now_ms(), Ordering::Relaxed);
            *guard = Some(w);
            self.loaded.store(true, Ordering::Release);
        }
        Ok(Locked { entry: self, guard })
    }

    /// A loaded snapshot; expired streams are deleted on the way.
    pub async fn snapshot(&self, state: &SharedState) -> Result<Arc<Meta>, ApiError> {
        let loaded = self.loaded.load(Ordering::Acquire);
        let meta = self.meta.borrow().clone();
        if loaded && !self.expired(&meta) {
            return Ok(meta);
        }
        let mut l = self.lock(&*state.log).await?;
        write::expire_if_due(state, &mut l).await?;
        Ok(l.meta())
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Meta>> {
        self.meta.subscribe()
    }

    pub fn touch(&self) {
        self.last_access.store(now_ms(), Ordering::Relaxed);
    }

    pub fn expired(&self, meta: &Meta) -> bool {
        if meta.status != Status::Live {
            return false;
        }
        let now = now_ms();
        if let Some(at) = meta.expires_at_ms {
            if (now as i64) >= at {
                return true;
            }
        }
        if let Some(ttl) = meta.ttl {
            let last = self.last_access.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= ttl.saturating_mul(1000) {
                return true;
            }
        }
        false
    }
}

// === offsets and cursors ===

/// `0000000000000000_<v:016>`: fixed width, so lexicographic order is offset order.
pub fn format_offset(v: u64) -> String {
    format!("{:016}_{v:016}", 0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetParam {
    Start,
    Now,
    At(u64),
}

pub fn parse_offset(s: &str) -> Option<OffsetParam> {
    match s {
        "-1" => return Some(OffsetParam::Start),
        "now" => return Some(OffsetParam::Now),
        _ => {}
    }
    let (hi, lo) = s.split_once('_')?;
    let digits = |p: &str| p.len() == 16 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(hi) || !digits(lo) {
        return None;
    }
    lo.parse().ok().map(OffsetParam::At)
}

/// Interval number since 2024-10-09T00:00:00Z in 20 s steps, strictly above the
/// client's cursor when it is not behind (so CDN cache keys always move forward).
pub fn cursor(client: Option<&str>) -> String {
    const EPOCH_MS: u64 = 1_728_432_000_000;
    let current = now_ms().saturating_sub(EPOCH_MS) / 20_000;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(c) if c >= current => {
            let jitter_secs: u64 = rand::random_range(1..=3600);
            (c + (jitter_secs / 20).max(1)).to_string()
        }
        _ => current.to_string(),
    }
}

// === shared response pieces ===

pub fn set(h: &mut HeaderMap, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        h.insert(HeaderName::from_static(name), v);
    }
}

pub fn set_content_type(h: &mut HeaderMap, ct: &str) {
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
}

/// `410` for a soft-deleted stream, `404` for a missing one.
pub fn require_live(meta: &Meta) -> Result<(), ApiError> {
    match meta.status {
        Status::Live => Ok(()),
        Status::SoftDeleted => Err(ApiError::new(StatusCode::GONE, "stream was deleted")),
        Status::Missing => Err(ApiError::new(StatusCode::NOT_FOUND, "stream not found")),
    }
}

/// Browser security headers on every response (PROTOCOL.md §12.7), errors included.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    resp
}

async fn require_auth(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if state.streams.cfg.require_auth {
        let ok =
            crate::connect::bearer(req.headers()).is_some_and(|t| state.verifier.verify(t).is_ok());
        if !ok {
            return ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
                .into_response();
        }
    }
    next.run(req).await
}

/// Routes under the configured prefix; merged into the inbound router.
pub fn router(state: SharedState) -> Router<SharedState> {
    let prefix = state.streams.cfg.prefix.trim_end_matches('/').to_owned();
    if prefix.is_empty() {
        return Router::new();
    }
    Router::new()
        .route(&format!("{prefix}/{{*path}}"), any(dispatch))
        .layer(axum::middleware::from_fn_with_state(state, require_auth))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn dispatch(State(state): State<SharedState>, req: Request) -> Response {
    use axum::http::Method;
    let method = req.method().clone();
    let result = match method {
        Method::GET => read::get(&state, req).await,
        Method::HEAD => read::head(&state, req).await,
        Method::PUT => write::put(&state, req).await,
        Method::POST => write::post(&state, req).await,
        Method::DELETE => write::delete(&state, req).await,
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on a stream",
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
