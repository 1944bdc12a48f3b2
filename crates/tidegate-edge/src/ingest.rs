//! Ingestion routes (`[[routes]]`) on the inbound port, and the route / DLQ
//! API on the internal port.
//!
//! An ingestion request is checked (client rate, content type, body size,
//! optionally JSON well-formedness and a JSON Schema: `422` with the
//! violations), wrapped in an [`Envelope`] with a fresh
//! UUID v7 message id, appended to the route's stream under the log's
//! durability, and acknowledged with the route's status and body. An
//! `Idempotency-Key` header becomes the record's dedup key: a retry within the
//! log's dedup window stores nothing and gets the original acknowledgement
//! (same message id) with `Idempotency-Replayed: true`. Delivery is the
//! worker's business ([`tidegate_delivery::worker`]).
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;

use tidegate_delivery::{Delivery, DeliveryError, Envelope, Route, SchemaViolations};
use tidegate_flow::rate::KeyedGcra;
use tidegate_log::{AppendRecord, Appended};

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The ingestion side of every route.
pub struct Ingest {
    pub delivery: Arc<Delivery>,
    routes: Vec<IngestRoute>,
}

struct IngestRoute {
    route: Arc<Route>,
    method: Method,
    rate: Option<KeyedGcra<IpAddr>>,
    /// Lower-case media types; empty = any.
    content_types: Vec<String>,
    keep: Vec<HeaderName>,
    ack_status: StatusCode,
    ack_content_type: HeaderValue,
}

impl Ingest {
    pub fn new(delivery: Arc<Delivery>) -> Result<Ingest, String> {
        let mut routes = Vec::new();
        for route in delivery.routes() {
            let c = &route.config;
            let bad = |what: &str| format!("routes.{}.{what} is invalid", c.name);
            let method = Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| bad("method"))?;
            let rate = if c.rate_per_client > 0.0 {
                Some(
                    KeyedGcra::new(c.rate_per_client, c.burst_per_client.max(1), 100_000)
                        .map_err(|e| format!("routes.{}.rate_per_client: {e}", c.name))?,
                )
            } else {
                None
            };
            let keep = c
                .keep_headers
                .iter()
                .map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("keep_headers"))?;
            routes.push(IngestRoute {
                route: route.clone(),
                method,
                rate,
                content_types: c
                    .content_types
                    .iter()
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect(),
                keep,
                ack_status: StatusCode::from_u16(c.ack_status).map_err(|_| bad("ack_status"))?,
                ack_content_type: HeaderValue::from_str(&c.ack_content_type)
                    .map_err(|_| bad("ack_content_type"))?,
            });
        }
        Ok(Ingest { delivery, routes })
    }
}

/// The ingestion endpoints, one method router per configured path.
pub fn router(state: &SharedState) -> Router<SharedState> {
    let mut by_path: Vec<(String, MethodRouter<SharedState>)> = Vec::new();
    for (idx, r) in state.ingest.routes.iter().enumerate() {
        let Ok(filter) = MethodFilter::try_from(r.method.clone()) else {
            continue; // validated at start-up
        };
        let handler = move |State(s): State<SharedState>, req: Request| handle(s, idx, req);
        let path = r.route.config.path.clone();
        match by_path.iter_mut().find(|(p, _)| *p == path) {
            Some((_, mr)) => *mr = std::mem::take(mr).on(filter, handler),
            None => by_path.push((path, axum::routing::on(filter, handler))),
        }
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, mr)| router.route(&path, mr))
}

async fn handle(state: SharedState, idx: usize, req: Request) -> Response {
    let Some(r) = state.ingest.routes.get(idx) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match accept(&state, r, req).await {
        Ok(resp) => resp,
        Err(e) => {
            r.route
                .stats
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn accept(state: &SharedState, r: &IngestRoute, req: Request) -> ApiResult<Response> {
    let c = &r.route.config;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0);
    if let (Some(rate), Some(peer)) = (&r.rate, peer) {
        if let Err(retry) = rate.check(&peer.ip(), tokio::time::Instant::now()) {
            return Err(ApiError::too_many(
                format!("route `{}`: rate limit per client exceeded", c.name),
                retry.as_header_secs(),
            ));
        }
    }
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !r.content_types.is_empty() && !r.content_types.contains(&media_type(&content_type)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type `{content_type}` is not accepted here; expected one of: {}",
                r.content_types.join(", ")
            ),
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds the maximum of {} bytes", c.max_body_bytes),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > c.max_body_bytes as u64) {
        return Err(too_large());
    }
    let body: Bytes = match axum::body::to_bytes(body, c.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                source = s.source();
            }
            return Err(ApiError::bad_request(format!("cannot read the body: {e}")));
        }
    };
    let not_json =
        |e: serde_json::Error| ApiError::bad_request(format!("body is not valid JSON: {e}"));
    if r.route.has_schema() {
        let value = serde_json::from_slice::<serde_json::Value>(&body).map_err(not_json)?;
        if let Err(v) = r.route.check_schema(&value) {
            r.route
                .stats
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            return Ok(schema_rejection(&c.name, v));
        }
    } else if c.validate_json {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(not_json)?;
    }
    let dedup_key = match parts.headers.get("idempotency-key") {
        Some(v) if v.is_empty() || v.len() > MAX_IDEMPOTENCY_KEY => {
            return Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            )))
        }
        Some(v) => {
            let mut k = Vec::with_capacity(v.len() + 5);
            k.extend_from_slice(b"idem:");
            k.extend_from_slice(v.as_bytes());
            Some(Bytes::from(k))
        }
        None => None,
    };
    let headers = r
        .keep
        .iter()
        .flat_map(|name| {
            parts.headers.get_all(name).iter().map(|v| {
                (
                    name.as_str().to_string(),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
        })
        .collect();
    let env = Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        received_ms: now_ms(),
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        client: peer.map(|p| p.to_string()).unwrap_or_default(),
        content_type,
        headers,
        body,
    };
    let appended = state
        .log
        .append(
            &r.route.stream,
            vec![AppendRecord {
                dedup_key,
                payload: env.encode(),
            }],
        )
        .await?;
    let stats = &r.route.stats;
    match appended.first().copied() {
        Some(Appended::New(_)) => {
            stats.ingested.fetch_add(1, Ordering::Relaxed);
            Ok(ack(r, &env.id, false))
        }
        Some(Appended::Duplicate(offset)) => {
            stats.ingest_duplicates.fetch_add(1, Ordering::Relaxed);
            let original = state.log.read(&r.route.stream, offset, 1, 1).await?;
            match original.into_iter().next() {
                Some(rec) if rec.offset == offset => {
                    let id = Envelope::decode(rec.payload).map(|e| e.id).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    Ok(ack(r, &id, true))
                }
                _ => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Idempotency-Key was used for a message that is no longer stored",
                )),
            }
        }
        None => Err(ApiError::unavailable("message could not be stored", 1)),
    }
}

/// `422` with the violations as JSON (counted as rejected by the caller).
fn schema_rejection(route: &str, v: SchemaViolations) -> Response {
    let error = if v.more {
        format!(
            "body does not match the JSON Schema of route `{route}` (first {} violations)",
            v.violations.len()
        )
    } else {
        format!("body does not match the JSON Schema of route `{route}`")
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(serde_json::json!({ "error": error, "violations": v.violations })),
    )
        .into_response()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ack(r: &IngestRoute, id: &str, replayed: bool) -> Response {
    let body = r.route.config.ack_body.replace("{id}", id);
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = r.ack_status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, r.ack_content_type.clone());
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-message-id", v);
    }
    if replayed {
        h.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    resp
}

// === internal API ===

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::UnknownRoute(_) | DeliveryError::NoDeadLetter(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            DeliveryError::Log(l) => l.into(),
            DeliveryError::Config(..) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// `GET /v3/routes`
pub async fn routes_list(State(s): State<SharedState>) -> ApiResult<Response> {
    Ok(Json(s.ingest.delivery.statuses().await?).into_response())
}

/// `GET /v3/routes/{name}`
pub async fn route_get(
    State(s): State<SharedState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.ingest.delivery.status(&name).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    from: u64,
    limit: Option<usize>,
    status: Option<u16>,
    reason: Option<String>,
    id: Option<String>,
    dead_after: Option<u64>,
    dead_before: Option<u64>,
}

/// The filters of a list or replay: `status`, `reason` (substring), `id`, `dead_after` /
/// `dead_before` (ms since the epoch). Unknown parameters are refused (`400`), so a
/// misspelt filter never widens a replay to every dead letter.
fn dlq_filter(
    status: Option<u16>,
    reason: Option<String>,
    id: Option<String>,
    dead_after: Option<u64>,
    dead_before: Option<u64>,
) -> tidegate_delivery::DlqFilter {
    tidegate_delivery::DlqFilter {
        status,
        reason,
        id,
        dead_after_ms: dead_after,
        dead_before_ms: dead_before,
    }
}

/// `GET /v3/routes/{name}/dlq?from=N&limit=M[&filters]`
pub async fn dlq_list(
    State(s): State<SharedState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let filter = dlq_filter(q.status, q.reason, q.id, q.dead_after, q.dead_before);
    let items = s.ingest.delivery.dlq_list(&name, q.from, limit, &filter)?;
    let next = items.last().map(|d| d.offset + 1);
    Ok(Json(serde_json::json!({ "dead_letters": items, "next_from": next })).into_response())
}

/// `GET /v3/routes/{name}/dlq/{offset}`
pub async fn dlq_get(
    State(s): State<SharedState>,
    Path((name, offset)): Path<(String, u64)>,
) -> ApiResult<Response> {
    Ok(Json(s.ingest.delivery.dlq_get(&name, offset).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    offset: Option<u64>,
    status: Option<u16>,
    reason: Option<String>,
    id: Option<String>,
    dead_after: Option<u64>,
    dead_before: Option<u64>,
}

/// `POST /v3/routes/{name}/dlq/replay[?offset=N | ?filters]`: one, all, or those matching.
pub async fn dlq_replay(
    State(s): State<SharedState>,
    Path(name): Path<String>,
    Query(q): Query<ReplayQuery>,
) -> ApiResult<Response> {
    let filter = dlq_filter(q.status, q.reason, q.id, q.dead_after, q.dead_before);
    if q.offset.is_some() && !filter.is_empty() {
        return Err(ApiError::bad_request(
            "offset names one dead letter; it cannot be combined with filters",
        ));
    }
    let done = s
        .ingest
        .delivery
        .dlq_replay(&name, q.offset, &filter)
        .await?;
    Ok(Json(serde_json::json!({ "replayed": done.len(), "offsets": done })).into_response())
}

/// `DELETE /v3/routes/{name}/dlq/{offset}`
pub async fn dlq_delete(
    State(s): State<SharedState>,
    Path((name, offset)): Path<(String, u64)>,
) -> ApiResult<StatusCode> {
    s.ingest.delivery.dlq_delete(&name, offset).await?;
    Ok(StatusCode::NO_CONTENT)
}
