//! The internal API (port 4010): health, metrics, publishing, the session blacklist,
//! the runtime log level. Protected by a bearer token unless explicitly opened.
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::blacklist::AddError;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, SharedState};

/// Requires `Authorization: Bearer <api token>` on everything but the health probes.
pub async fn require_token(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = matches!(path, "/health" | "/health/live" | "/health/ready");
    if let (false, Some(expected)) = (open, &state.cfg.api_token) {
        let given = crate::connect::bearer(req.headers());
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the internal API requires Authorization: Bearer <token>",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Liveness (`/health/live`): the process answers.
pub async fn live() -> Response {
    text_ok("OK".to_owned())
}

/// RIG's `/health`: `OK` while every dependency is up; otherwise still `200` (a broker
/// outage must not make an orchestrator restart the node — `/health/ready` is the
/// probe that says 503) but the body names what is down, one `name: reason` a line.
pub async fn health(State(state): State<SharedState>) -> Response {
    let down: Vec<String> = dependencies(&state)
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|reason| format!("{name}: {reason}")))
        .collect();
    if down.is_empty() {
        text_ok("OK".to_owned())
    } else {
        text_ok(format!("DEGRADED\n{}\n", down.join("\n")))
    }
}

fn dependencies(state: &AppState) -> Vec<(String, Result<(), String>)> {
    let log = state
        .log
        .bounds(&state.stream)
        .map(|_| ())
        .map_err(|e| e.to_string())
        .and_then(|()| state.log.health());
    let mut deps = vec![("log".to_owned(), log)];
    if let Some(f) = &state.dependencies {
        deps.extend(f());
    }
    deps
}

fn text_ok(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `200 {"status":"ready","log":"up",…}` or `503 {"status":"not ready",…}` with each
/// dependency's state: `"up"` or the reason it is down.
pub async fn ready(State(state): State<SharedState>) -> Response {
    let deps = dependencies(&state);
    let ready = deps.iter().all(|(_, r)| r.is_ok());
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        Value::from(if ready { "ready" } else { "not ready" }),
    );
    for (name, r) in deps {
        let v = match r {
            Ok(()) => Value::from("up"),
            Err(reason) => Value::from(reason),
        };
        body.insert(name, v);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Value::Object(body).to_string()).into_response()
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let extra = state.log_metrics.as_ref().map(|f| f()).unwrap_or_default();
    let text = state.metrics.encode(&extra);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlacklistRequest {
    session_id: Option<Value>,
    validity_in_seconds: Option<Value>,
}

pub async fn blacklist_add(State(state): State<SharedState>, body: Bytes) -> ApiResult<Response> {
    let req: BlacklistRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let id = match req.session_id {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => {
            return Err(ApiError::bad_request(
                "Expected non-empty string for \"sessionId\"",
            ))
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::bad_request("Expected a string for \"sessionId\"")),
        None => return Err(ApiError::bad_request("Missing value for \"sessionId\"")),
    };
    let validity = match req.validity_in_seconds {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        None => {
            return Err(ApiError::bad_request(
                "Missing value for \"validityInSeconds\"",
            ))
        }
        Some(_) => None,
    };
    let validity = match validity {
        Some(v) if v.is_finite() && v > 0.0 => v.ceil() as u64,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Expected a positive number for \"validityInSeconds\"",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "Expected a number for \"validityInSeconds\"",
            ))
        }
    };
    match state.blacklist.add(&state.hub, &id, validity).await {
        Ok(_) => {}
        Err(AddError::Full(e)) => return Err(ApiError::unavailable(e.to_string(), 60)),
        Err(AddError::Log(e)) => return Err(e.into()),
    }
    let mut resp = (StatusCode::CREATED, "{}").into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/v3/session-blacklist/{}", urlencode(&id))) {
        h.insert(header::LOCATION, loc);
    }
    Ok(resp)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn blacklist_get(State(state): State<SharedState>, Path(id): Path<String>) -> Response {
    if state.blacklist.contains(&id) {
        let mut resp = (StatusCode::OK, "{}").into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        resp
    } else {
        (StatusCode::NOT_FOUND, "Not found.").into_response()
    }
}

pub async fn log_level_get(State(state): State<SharedState>) -> Response {
    match &state.log_level {
        Some(h) => h.get().into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "log level is not adjustable in this process",
        )
            .into_response(),
    }
}

pub async fn log_level_put(State(state): State<SharedState>, body: Bytes) -> ApiResult<Response> {
    let Some(h) = &state.log_level else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "log level is not adjustable in this process",
        ));
    };
    let level = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("log level must be UTF-8 text"))?
        .trim();
    h.set(level).map_err(ApiError::bad_request)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
