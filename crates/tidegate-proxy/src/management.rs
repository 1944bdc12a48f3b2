//! The internal-port routes of the proxy: RIG's `/v3/apis` CRUD and `POST /v3/responses`.
//!
//! `/v3/apis` bodies and status codes are RIG's: list → 200 (active APIs), get → 200 or
//! 404 `{"message":"API with id=… doesn't exists."}`, create → 201 `{"message":"ok"}`,
//! 409 when active, 400 with RIG's error map; update → 200 / 404 / 400; delete
//! (deactivate) → 204 / 404. A log failure is 503 with `Retry-After`: nothing changed.
//!
//! `/v3/responses` takes a response in RIG's binary format (`rig-correlation`,
//! `rig-response-code`, body) and hands it to the waiting request: 202, 400 when the
//! headers are missing, 404 when no request waits under that id on this node.
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::{debug, info, warn};

use crate::correlation::parse_http_response;
use crate::error::RETRY_AFTER_SECS;
use crate::store::StoreError;
use crate::Proxy;

pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/v3/apis", get(list).post(create))
        .route("/v3/apis/{id}", get(detail).put(update).delete(deactivate))
        .route("/v3/responses", post(responses))
        .with_state(proxy)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Invalid(errors) => {
            (StatusCode::BAD_REQUEST, Json(errors.to_json())).into_response()
        }
        StoreError::Exists(_) => message(StatusCode::CONFLICT, e.to_string()),
        StoreError::NotFound(_) => message(StatusCode::NOT_FOUND, e.to_string()),
        StoreError::Log(log) => {
            warn!(error = %log, "Storing an API definition change failed");
            let mut r = message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("API definitions cannot be stored: {log}"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            r
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("Request body is not valid JSON: {e}"))
}

async fn list(State(proxy): State<Arc<Proxy>>) -> Response {
    let apis: Vec<Value> = proxy
        .store
        .list_active()
        .iter()
        .map(|d| d.to_json())
        .collect();
    (StatusCode::OK, Json(Value::Array(apis))).into_response()
}

async fn detail(State(proxy): State<Arc<Proxy>>, Path(id): Path<String>) -> Response {
    match proxy.store.get_active(&id) {
        Some(def) => (StatusCode::OK, Json(def.to_json())).into_response(),
        None => store_error(StoreError::NotFound(id)),
    }
}

async fn create(State(proxy): State<Arc<Proxy>>, body: Bytes) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(reason) => return message(StatusCode::BAD_REQUEST, reason),
    };
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match proxy.store.create(value).await {
        Ok(()) => {
            info!(api = %id, "API definition created");
            message(StatusCode::CREATED, "ok")
        }
        Err(e) => store_error(e),
    }
}

async fn update(State(proxy): State<Arc<Proxy>>, Path(id): Path<String>, body: Bytes) -> Response {
    let value = match parse_json(&body) {
        Ok(v) => v,
        Err(reason) => return message(StatusCode::BAD_REQUEST, reason),
    };
    match proxy.store.update(&id, value).await {
        Ok(()) => {
            info!(api = %id, "API definition updated");
            message(StatusCode::OK, "ok")
        }
        Err(e) => store_error(e),
    }
}

async fn deactivate(State(proxy): State<Arc<Proxy>>, Path(id): Path<String>) -> Response {
    match proxy.store.deactivate(&id).await {
        Ok(()) => {
            info!(api = %id, "API definition deactivated");
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Err(e) => store_error(e),
    }
}

async fn responses(State(proxy): State<Arc<Proxy>>, headers: HeaderMap, body: Body) -> Response {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let body = match crate::inbound::read_body(body, proxy.http.max_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(&proxy.config.cors),
    };
    match parse_http_response(&headers, body) {
        Ok((id, response)) => {
            if proxy.correlations.resolve(&id, response) {
                debug!(correlation = %id, "Asynchronous response delivered");
                text(
                    StatusCode::ACCEPTED,
                    "message sent to correlated reverse proxy request".to_owned(),
                )
            } else {
                message(
                    StatusCode::NOT_FOUND,
                    format!("no request is waiting for correlation id {id} (timed out, or on another node)"),
                )
            }
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse request body: {e}"),
        ),
    }
}
