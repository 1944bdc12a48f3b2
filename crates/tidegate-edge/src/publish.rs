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

use tidegate_auth::Check;
use tidegate_core::cursor::Cursor;
use tidegate_core::event::{self, IngestEvent};
use tidegate_core::record;
use tidegate_hub::frame::CURSOR_ATTRIBUTE;
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

/// Structured and batch bodies take the ingest fast path (validated without a
/// `Value` tree, the producer's bytes kept as the delivered JSON); binary mode
/// builds its JSON from headers and body.
fn parse(headers: &HeaderMap, body: &[u8]) -> ApiResult<(Vec<IngestEvent>, bool)> {
    let bad = |e: event::EventError| ApiError::bad_request(format!("not a valid CloudEvent: {e}"));
    match mode(headers)? {
        Mode::Structured => Ok((
            vec![event::parse_structured_ingest(body).map_err(bad)?],
            false,
        )),
        Mode::Batch => Ok((event::parse_batch_ingest(body).map_err(bad)?, true)),
        Mode::Binary => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let hs = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
            Ok((
                vec![event::parse_binary("ce-", hs, ct, body)
                    .map_err(bad)?
                    .into()],
                false,
            ))
        }
    }
}

fn is_transient(state: &AppState, ev: &IngestEvent) -> bool {
    if state.cfg.transient_types.contains(&ev.event_type) {
        return true;
    }
    match ev.attribute(TRANSIENT_ATTRIBUTE) {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    }
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
    // Only an external check reads the event; the others decide on the token alone.
    let check_body = check && matches!(state.submission_check.check(), Check::External(_));
    let mut transient = Vec::with_capacity(events.len());
    for ev in &events {
        if ev.event_type.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "event type must not contain control characters",
            ));
        }
        if ev.json.len() > state.cfg.max_event_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event of {} bytes exceeds the limit of {}",
                    ev.json.len(),
                    state.cfg.max_event_bytes
                ),
            ));
        }
        if check {
            let authorization = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let value = if check_body {
                serde_json::Value::Object(ev.attributes())
            } else {
                serde_json::Value::Null
            };
            state
                .submission_check
                .authorize(&value, authorization, &state.verifier, bearer(headers))
                .await
                .map_err(|e| {
                    ApiError::from_status(e.status(), format!("submission denied: {}", e.reason()))
                })?;
        }
        transient.push(is_transient(state, ev));
    }

    // The records and dedup keys of a request share two allocations.
    let (mut payloads, mut keys) = {
        let kept = || {
            events
                .iter()
                .zip(&transient)
                .filter(|(_, t)| !**t)
                .map(|(ev, _)| ev)
        };
        (
            BytesMut::with_capacity(
                kept()
                    .map(|ev| record::encoded_len(&ev.event_type, &ev.json))
                    .sum(),
            ),
            BytesMut::with_capacity(
                kept()
                    .map(|ev| record::dedup_key_len(&ev.source, &ev.id))
                    .sum(),
            ),
        )
    };
    let mut records = Vec::new();
    for (ev, transient) in events.iter().zip(&transient) {
        if !transient {
            record::try_encode_into(&mut payloads, &ev.event_type, &ev.json)
                .map_err(|e| ApiError::bad_request(format!("event type is not usable: {e}")))?;
            record::dedup_key_into(&mut keys, &ev.source, &ev.id);
            records.push(AppendRecord {
                dedup_key: Some(keys.split().freeze()),
                payload: payloads.split().freeze(),
            });
        }
    }
    let appended = if records.is_empty() {
        Vec::new()
    } else {
        state.log.append(&state.stream, records).await?
    };

    // Each acknowledgement is the event as subscribers receive it: its JSON with the
    // cursor attribute (as `tidegate_hub::Encoded` frames it), or as is when transient.
    let epoch = state.log.epoch();
    let mut out = BytesMut::with_capacity(
        events
            .iter()
            .map(|ev| ev.json.len() + CURSOR_ATTRIBUTE.len() + 40)
            .sum::<usize>()
            + 2,
    );
    if batch {
        out.put_u8(b'[');
    }
    let mut stored = appended.iter();
    for (i, (ev, transient)) in events.iter().zip(&transient).enumerate() {
        let offset = if *transient {
            state.hub.publish_transient(&ev.event_type, &ev.json)?;
            None
        } else {
            let Some(a) = stored.next() else { break };
            if matches!(a, Appended::Duplicate(_)) {
                state.metrics.events_duplicate.inc();
            }
            Some(a.offset())
        };
        if i > 0 {
            out.put_u8(b',');
        }
        put_ack(&mut out, &ev.json, offset.map(|o| (epoch, o)));
    }
    if batch {
        out.put_u8(b']');
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

    let mut resp = (StatusCode::ACCEPTED, out.freeze()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(resp)
}

/// One acknowledged event: its JSON with the cursor attribute appended, byte for byte
/// as `tidegate_hub::Encoded::new` frames it for subscribers (no cursor for transient
/// events).
fn put_ack(buf: &mut BytesMut, json: &[u8], cursor: Option<(u64, u64)>) {
    match cursor {
        Some((epoch, offset)) if json.len() > 2 && json.last() == Some(&b'}') => {
            buf.put_slice(&json[..json.len() - 1]);
            buf.put_slice(b",\"");
            buf.put_slice(CURSOR_ATTRIBUTE.as_bytes());
            buf.put_slice(b"\":\"");
            // Cursors are base64url: nothing to escape.
            Cursor::write_single(epoch, offset, buf);
            buf.put_slice(b"\"}");
        }
        _ => buf.put_slice(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_hub::Encoded;

    #[test]
    fn ack_is_framed_like_the_hub_frames_subscribers_events() {
        let json = br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#;
        for (epoch, offset) in [(0, 0), (7, 12345), (u64::MAX, u64::MAX)] {
            let mut buf = BytesMut::new();
            put_ack(&mut buf, json, Some((epoch, offset)));
            let cursor = Cursor::single(epoch, offset).encode();
            assert_eq!(
                buf.as_ref(),
                Encoded::new("t", Some(cursor), json).json.as_ref()
            );
        }
        for json in [b"{}".as_slice(), b"x", b""] {
            let mut buf = BytesMut::new();
            put_ack(&mut buf, json, Some((1, 2)));
            let cursor = Cursor::single(1, 2).encode();
            assert_eq!(
                buf.as_ref(),
                Encoded::new("t", Some(cursor), json).json.as_ref()
            );
        }
        let mut buf = BytesMut::new();
        put_ack(&mut buf, json, None);
        assert_eq!(buf.as_ref(), json.as_slice());
    }
}
