//! `POST /_rig/v1/events` (inbound) and `POST /v3/messages` (internal): CloudEvents
//! over HTTP in structured, binary and batch mode. An event is acknowledged (`202`)
//! only after the log stored it with the configured durability; the response carries
//! the event with its cursor. Fan-out happens from the log's tail, not from here.
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use std::time::Instant;

use tidegate_core::cursor::Cursor;
use tidegate_core::event::{self, Event};
use tidegate_core::record;
use tidegate_hub::Encoded;
use tidegate_log::{AppendRecord, Appended};
use tidegate_telemetry::{ReasonLabel, SourceLabel};

use crate::connect::bearer;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, SharedState};

/// Extension attribute marking one event as transient (live only, never stored).
pub const TRANSIENT_ATTRIBUTE: &str = "tidegatetransient";

enum Mode {
    Structured,
    Batch,
    Binary,
}

fn mode(headers: &HeaderMap) -> ApiResult<Mode> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/cloudevents-batch+json" {
        return Ok(Mode::Batch);
    }
    if essence.starts_with("application/cloudevents") {
        return if essence == "application/cloudevents+json" {
            Ok(Mode::Structured)
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported CloudEvents format `{essence}`"),
            ))
        };
    }
    if headers.contains_key("ce-specversion") {
        return Ok(Mode::Binary);
    }
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(Mode::Structured);
    }
    if essence.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type is required (application/cloudevents+json, application/cloudevents-batch+json, or binary mode with ce-* headers)",
        ));
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("unsupported content type `{essence}`"),
    ))
}

fn parse(headers: &HeaderMap, body: &[u8]) -> ApiResult<(Vec<Event>, bool)> {
    let bad = |e: event::EventError| ApiError::bad_request(format!("not a valid CloudEvent: {e}"));
    match mode(headers)? {
        Mode::Structured => Ok((vec![event::parse_structured(body).map_err(bad)?], false)),
        Mode::Batch => Ok((event::parse_batch(body).map_err(bad)?, true)),
        Mode::Binary => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let hs = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
            Ok((
                vec![event::parse_binary("ce-", hs, ct, body).map_err(bad)?],
                false,
            ))
        }
    }
}

fn is_transient(state: &AppState, ev: &Event) -> bool {
    state.cfg.transient_types.contains(&ev.event_type)
        || matches!(
            ev.attributes.get(TRANSIENT_ATTRIBUTE),
            Some(serde_json::Value::Bool(true))
        )
        || matches!(ev.attributes.get(TRANSIENT_ATTRIBUTE), Some(serde_json::Value::String(s)) if s == "true")
}

pub async fn inbound(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let permit = match state.admission.admit(&state, &headers, Some(peer)) {
        Ok(p) => p,
        Err(e) => return respond(&state, Err(e)),
    };
    let resp = respond(&state, publish(&state, &headers, &body, true).await);
    drop(permit);
    resp
}

pub async fn internal(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The internal port is authenticated by its own token; no submission check (RIG).
    // Backends are trusted but still bounded: in-flight and backlog limits apply.
    let permit = match state.admission.admit(&state, &headers, None) {
        Ok(p) => p,
        Err(e) => return respond(&state, Err(e)),
    };
    let resp = respond(&state, publish(&state, &headers, &body, false).await);
    drop(permit);
    resp
}

fn respond(state: &AppState, res: ApiResult<Response>) -> Response {
    match res {
        Ok(r) => r,
        Err(e) => {
            let reason = match e.status.as_u16() {
                413 => "too_large",
                415 => "unsupported_media_type",
                403 | 401 => "denied",
                503 => "unavailable",
                429 => "rate_limited",
                _ => "invalid",
            };
            state
                .metrics
                .events_rejected
                .get_or_create(&ReasonLabel { reason })
                .inc();
            e.into_response()
        }
    }
}

async fn publish(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    check: bool,
) -> ApiResult<Response> {
    let started = Instant::now();
    let (events, batch) = parse(headers, body)?;
    if events.len() > state.cfg.max_batch_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {} events exceeds the limit of {}",
                events.len(),
                state.cfg.max_batch_events
            ),
        ));
    }
    let mut encoded = Vec::with_capacity(events.len());
    for ev in &events {
        if ev.event_type.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "event type must not contain control characters",
            ));
        }
        let json = ev.to_json();
        if json.len() > state.cfg.max_event_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event of {} bytes exceeds the limit of {}",
                    json.len(),
                    state.cfg.max_event_bytes
                ),
            ));
        }
        if check {
            let authorization = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let value = serde_json::Value::Object(ev.attributes.clone());
            state
                .submission_check
                .authorize(&value, authorization, &state.verifier, bearer(headers))
                .await
                .map_err(|e| {
                    ApiError::from_status(e.status(), format!("submission denied: {}", e.reason()))
                })?;
        }
        encoded.push((is_transient(state, ev), json));
    }

    let mut records = Vec::new();
    for (ev, (transient, json)) in events.iter().zip(&encoded) {
        if !transient {
            let payload = record::try_encode(&ev.event_type, json)
                .map_err(|e| ApiError::bad_request(format!("event type is not usable: {e}")))?;
            records.push(AppendRecord {
                dedup_key: Some(record::dedup_key(&ev.source, &ev.id)),
                payload,
            });
        }
    }
    let appended = if records.is_empty() {
        Vec::new()
    } else {
        state.log.append(&state.stream, records).await?
    };

    let epoch = state.log.epoch();
    let mut acks = Vec::with_capacity(events.len());
    let mut stored = appended.iter();
    for (ev, (transient, json)) in events.iter().zip(&encoded) {
        if *transient {
            state.hub.publish_transient(&ev.event_type, json)?;
            acks.push(json.clone());
        } else {
            let Some(a) = stored.next() else { break };
            if matches!(a, Appended::Duplicate(_)) {
                state.metrics.events_duplicate.inc();
            }
            let cursor = Cursor::single(epoch, a.offset()).encode();
            acks.push(
                Encoded::new(&ev.event_type, Some(cursor), json)
                    .json
                    .clone(),
            );
        }
    }
    state
        .metrics
        .events_received
        .get_or_create(&SourceLabel { source: "http" })
        .inc_by(events.len() as u64);
    state
        .metrics
        .publish_latency_seconds
        .observe(started.elapsed().as_secs_f64());

    let body = if batch {
        let mut buf = BytesMut::with_capacity(acks.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
        buf.put_u8(b'[');
        for (i, a) in acks.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.put_slice(a);
        }
        buf.put_u8(b']');
        buf.freeze()
    } else {
        acks.into_iter().next().unwrap_or_default()
    };
    let mut resp = (StatusCode::ACCEPTED, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(resp)
}
