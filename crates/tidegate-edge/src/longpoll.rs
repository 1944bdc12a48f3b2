//! `GET /_rig/v1/connection/longpolling`: RIG's cookie protocol. The first call opens a
//! session (cookies `connection_token` and `last_event_id`, body `"ok"`); later calls
//! return `{"last_event_id":…,"events":[…]}`, waiting up to `longpoll_wait` when
//! nothing is queued. A session not polled within the hub's long-poll timeout expires;
//! a client coming back after that gets a new session that resumes from its
//! `last_event_id` cookie, so nothing stored is lost.
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};

use tidegate_core::cursor::Cursor;
use tidegate_hub::{ConnInfo, Frame, Resume, Transport};

use crate::connect::{self, ConnectQuery};
use crate::error::{ApiError, ApiResult};
use crate::render;
use crate::state::SharedState;

const TOKEN_COOKIE: &str = "connection_token";
const LAST_ID_COOKIE: &str = "last_event_id";
const FIRST_EVENT: &str = "first_event";

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        // RIG writes JSON-quoted cookie values.
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn set_cookie(resp: &mut Response, name: &str, value: &str, clear: bool) {
    let extra = if clear { "; Max-Age=0" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly{extra}")) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn json_response(body: impl Into<axum::body::Body>) -> Response {
    let mut resp = (StatusCode::OK, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub async fn handler(
    State(state): State<SharedState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let last_id = cookie(&headers, LAST_ID_COOKIE)
        .unwrap_or(FIRST_EVENT)
        .to_string();
    if let Some(token) = cookie(&headers, TOKEN_COOKIE) {
        if let Ok(info) = state.hub.lookup(token) {
            if info.transport == Transport::LongPolling {
                return Ok(poll(&state, info, token, &last_id).await);
            }
        }
    }
    // New session; resume from the cookie's cursor when it has one (a session that
    // expired or was cut), otherwise from the query/header cursor.
    let from_cookie = if last_id == FIRST_EVENT {
        None
    } else {
        Cursor::parse(&last_id).ok().map(Resume::After)
    };
    let resume = match from_cookie {
        Some(c) => Some(c),
        None => connect::resume_cursor(&headers, query.last_event_id.as_deref())?,
    };
    let conn = match connect::open(&state, Transport::LongPolling, &query, &headers, resume).await {
        Ok(c) => c,
        Err(e) => {
            let mut resp = e.into_response();
            // A cursor this log cannot use must not wedge the client forever.
            set_cookie(&mut resp, LAST_ID_COOKIE, FIRST_EVENT, true);
            return Ok(resp);
        }
    };
    let token = conn.token.clone();
    conn.into_session();
    let mut resp = json_response("\"ok\"");
    set_cookie(&mut resp, TOKEN_COOKIE, &token, false);
    set_cookie(&mut resp, LAST_ID_COOKIE, &last_id, false);
    Ok(resp)
}

async fn poll(state: &SharedState, info: ConnInfo, token: &str, last_id: &str) -> Response {
    let mut frames = Vec::new();
    let mut closed = None;
    match info.outbox.take_unconfirmed() {
        // The cookie does not show the last response's id: that response was lost in
        // flight (client aborted, proxy dropped it). Send its events again, except
        // those the cookie proves were received.
        Some((sent, stash)) if sent != last_id => {
            let seen = Cursor::parse(last_id)
                .ok()
                .and_then(|c| c.offsets.first().copied());
            frames = stash
                .into_iter()
                .filter(|f| match (f, seen) {
                    (Frame::Event(e), Some(seen)) => e
                        .cursor
                        .as_deref()
                        .and_then(|c| Cursor::parse(c).ok())
                        .and_then(|c| c.offsets.first().copied())
                        .is_none_or(|o| o > seen),
                    _ => true,
                })
                .collect();
        }
        _ => {}
    }
    if frames.is_empty() {
        let wait = state.cfg.longpoll_wait;
        let batch = state.cfg.write_batch_bytes.max(256 << 10);
        closed = tokio::time::timeout(wait, info.outbox.take(&mut frames, batch))
            .await
            .unwrap_or(None);
    }
    let mut last = last_id.to_string();
    let mut body = BytesMut::with_capacity(frames.iter().map(Frame::cost).sum::<usize>() + 64);
    let mut events = Vec::with_capacity(frames.len() + 1);
    for f in &frames {
        if let Frame::Event(e) = f {
            if let Some(c) = &e.cursor {
                last = c.to_string();
            }
        }
        if let Some(json) = render::json_of(f) {
            events.push(json);
        }
    }
    if let Some(reason) = &closed {
        events.push(render::close_event(reason).json.clone());
        state.hub.close(info.id);
    }
    body.put_slice(b"{\"last_event_id\":");
    body.put_slice(
        serde_json::Value::String(last.clone())
            .to_string()
            .as_bytes(),
    );
    body.put_slice(b",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(e);
    }
    body.put_slice(b"]}");
    if closed.is_none() {
        info.outbox.set_unconfirmed(last.clone(), frames);
    }
    let mut resp = json_response(body.freeze());
    // The session ends with a close: the next poll opens a new one (and resumes).
    set_cookie(&mut resp, TOKEN_COOKIE, token, closed.is_some());
    set_cookie(&mut resp, LAST_ID_COOKIE, &last, false);
    resp
}

pub fn unknown_transport(t: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unknown transport `{t}` (expected sse, ws or longpolling)"
    ))
}
