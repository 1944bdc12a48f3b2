//! Reads: `GET` in catch-up, long-poll (`live=long-poll`) and SSE (`live=sse`) modes,
//! and `HEAD`. A read takes a [`Meta`] snapshot and serves virtual positions below its
//! tail from the pieces' log streams (a fork's inherited part from its source's log),
//! skipping control records. Live modes wait on the entry's `watch` of snapshots.
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

use tidegate_log::{EventLog, LogError};

use super::store::{self, Meta, Status};
use super::{
    cursor, format_offset, parse_offset, require_live, set, set_content_type, OffsetParam, CLOSED,
    CURSOR, NEXT_OFFSET, UP_TO_DATE,
};
use crate::error::ApiError;
use crate::state::SharedState;

/// Messages read from a range, and where the next read starts.
pub struct Chunk {
    pub messages: Vec<Bytes>,
    pub bytes: usize,
    pub next: u64,
}

/// Data below `meta.tail` from `from` on, about `max_bytes` (at least one message).
pub async fn read_range(
    log: &dyn EventLog,
    meta: &Meta,
    from: u64,
    max_bytes: usize,
) -> Result<Chunk, LogError> {
    let mut out = Chunk {
        messages: Vec::new(),
        bytes: 0,
        next: meta.tail,
    };
    let mut pos = from.max(meta.start);
    for piece in meta.pieces.iter() {
        let end = piece.to_v.map_or(meta.tail, |t| t.min(meta.tail));
        pos = pos.max(piece.from_v);
        while pos < end {
            let lo = (pos as i64 - piece.delta).max(0) as u64;
            let recs = log.read(&piece.log, lo, 512, max_bytes.max(4096)).await?;
            if recs.is_empty() {
                break;
            }
            for r in &recs {
                let v = store::v_of(r.offset, piece.delta);
                if v < pos {
                    continue;
                }
                if v >= end {
                    pos = end;
                    break;
                }
                if r.payload.first() == Some(&store::DATA) {
                    let data = r.payload.slice(1..);
                    if !out.messages.is_empty() && out.bytes + data.len() > max_bytes {
                        out.next = v;
                        return Ok(out);
                    }
                    out.bytes += data.len();
                    out.messages.push(data);
                }
                pos = v + 1;
            }
        }
    }
    Ok(out)
}

/// The response body of a chunk: a JSON array in JSON mode, the bytes otherwise.
pub fn body_of(json: bool, messages: &[Bytes]) -> Bytes {
    if !json {
        if messages.len() == 1 {
            return messages[0].clone();
        }
        let mut b = BytesMut::with_capacity(messages.iter().map(Bytes::len).sum());
        for m in messages {
            b.extend_from_slice(m);
        }
        return b.freeze();
    }
    let mut b = BytesMut::with_capacity(messages.iter().map(|m| m.len() + 1).sum::<usize>() + 2);
    b.extend_from_slice(b"[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            b.extend_from_slice(b",");
        }
        b.extend_from_slice(m);
    }
    b.extend_from_slice(b"]");
    b.freeze()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    No,
    LongPoll,
    Sse,
}

struct Query {
    offset: Option<OffsetParam>,
    live: Live,
    cursor: Option<String>,
}

fn parse_query(q: Option<&str>) -> Result<Query, ApiError> {
    let mut out = Query {
        offset: None,
        live: Live::No,
        cursor: None,
    };
    let mut seen_offset = false;
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "offset" => {
                if seen_offset {
                    return Err(ApiError::bad_request("offset given more than once"));
                }
                seen_offset = true;
                out.offset =
                    Some(parse_offset(v).ok_or_else(|| ApiError::bad_request("malformed offset"))?);
            }
            "live" => {
                out.live = match v {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => return Err(ApiError::bad_request("live must be long-poll or sse")),
                }
            }
            "cursor" => out.cursor = Some(v.to_owned()),
            _ => {}
        }
    }
    Ok(out)
}

fn cache_control(state: &SharedState) -> &'static str {
    if state.streams.cfg.require_auth {
        "private, max-age=60, stale-while-revalidate=300"
    } else {
        "public, max-age=60, stale-while-revalidate=300"
    }
}

pub async fn head(state: &SharedState, req: Request) -> Result<Response, ApiError> {
    let entry = state.streams.entry(req.uri().path())?;
    let meta = entry.snapshot(state).await?;
    require_live(&meta)?;
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    set_content_type(h, &meta.content_type);
    set(h, NEXT_OFFSET, format_offset(meta.tail));
    if let Some(ttl) = meta.ttl {
        set(h, "stream-ttl", ttl.to_string());
    }
    if let Some(at) = &meta.expires_at {
        set(h, "stream-expires-at", at);
    }
    if meta.closed {
        set(h, CLOSED, "true");
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub async fn get(state: &SharedState, req: Request) -> Result<Response, ApiError> {
    let q = parse_query(req.uri().query())?;
    let entry = state.streams.entry(req.uri().path())?;
    let meta = entry.snapshot(state).await?;
    require_live(&meta)?;
    entry.touch();
    if q.live != Live::No && q.offset.is_none() {
        return Err(ApiError::bad_request("live reads need an offset"));
    }
    let from = match q.offset {
        None | Some(OffsetParam::Start) => meta.start,
        Some(OffsetParam::Now) => meta.tail,
        Some(OffsetParam::At(v)) => v.max(meta.start),
    };
    if from > meta.tail {
        return Err(ApiError::bad_request(
            "offset is beyond the tail of the stream",
        ));
    }
    let now = q.offset == Some(OffsetParam::Now);
    match q.live {
        Live::No => catch_up(state, &meta, from, now, &q, req.headers(), false).await,
        Live::LongPoll => long_poll(state, entry.subscribe(), from, &q).await,
        Live::Sse => Ok(sse(state, entry.subscribe(), from, q.cursor)),
    }
}

/// A catch-up answer for `meta` from `from` (also long-poll's answer once data exists).
async fn catch_up(
    state: &SharedState,
    meta: &Meta,
    from: u64,
    now: bool,
    q: &Query,
    req_headers: &HeaderMap,
    live: bool,
) -> Result<Response, ApiError> {
    let chunk = if now {
        Chunk {
            messages: Vec::new(),
            bytes: 0,
            next: meta.tail,
        }
    } else {
        read_range(&*state.log, meta, from, state.streams.cfg.max_chunk_bytes).await?
    };
    let up_to_date = chunk.next >= meta.tail;
    let closed = meta.closed && up_to_date;
    let etag = format!(
        "\"{}:{}:{}{}\"",
        meta.incarnation,
        from,
        chunk.next,
        if closed { ":c" } else { "" }
    );
    let not_modified = !now
        && req_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim() == etag));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::OK,
            Body::from(body_of(meta.is_json(), &chunk.messages)),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    set_content_type(h, &meta.content_type);
    set(h, NEXT_OFFSET, format_offset(chunk.next));
    if up_to_date {
        set(h, UP_TO_DATE, "true");
    }
    if closed {
        set(h, CLOSED, "true");
    }
    if now {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        set(h, "etag", &etag);
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control(state)),
        );
    }
    if live && !closed {
        set(h, CURSOR, cursor(q.cursor.as_deref()));
    }
    Ok(resp)
}

fn no_content(meta: &Meta, from: u64, q: &Query) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    set(h, NEXT_OFFSET, format_offset(from.max(meta.tail)));
    set(h, UP_TO_DATE, "true");
    if meta.closed {
        set(h, CLOSED, "true");
    } else {
        set(h, CURSOR, cursor(q.cursor.as_deref()));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn long_poll(
    state: &SharedState,
    mut rx: watch::Receiver<Arc<Meta>>,
    from: u64,
    q: &Query,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.streams.cfg.longpoll_wait;
    loop {
        let meta = rx.borrow_and_update().clone();
        require_live(&meta)?;
        if meta.tail > from {
            return catch_up(state, &meta, from, false, q, &HeaderMap::new(), true).await;
        }
        if meta.closed {
            return Ok(no_content(&meta, from, q));
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ApiError::unavailable("stream is shutting down", 1)),
            Err(_) => return Ok(no_content(&meta, from, q)),
        }
    }
}

// === SSE ===

fn sse_data(json: bool, text: bool, messages: &[Bytes]) -> Bytes {
    let mut out = BytesMut::from(&b"event: data\n"[..]);
    if json || text {
        let body = body_of(json, messages);
        let s = String::from_utf8_lossy(&body);
        // Every line break an SSE parser knows (CRLF, CR, LF) starts a new `data:`
        // line, so payload bytes can never end the event or inject fields.
        for line in s.replace("\r\n", "\n").split(['\n', '\r']) {
            out.extend_from_slice(b"data:");
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\n");
        }
    } else {
        let body = body_of(false, messages);
        out.extend_from_slice(b"data:");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&body)
                .as_bytes(),
        );
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
    out.freeze()
}

fn sse_control(next: u64, up_to_date: bool, closed: bool, cursor_from: Option<&str>) -> Bytes {
    let mut c = serde_json::Map::new();
    c.insert("streamNextOffset".into(), format_offset(next).into());
    if closed {
        c.insert("streamClosed".into(), true.into());
        c.insert("upToDate".into(), true.into());
    } else {
        c.insert("streamCursor".into(), cursor(cursor_from).into());
        if up_to_date {
            c.insert("upToDate".into(), true.into());
        }
    }
    Bytes::from(format!(
        "event: control\ndata:{}\n\n",
        serde_json::Value::Object(c)
    ))
}

struct SseState {
    state: SharedState,
    rx: watch::Receiver<Arc<Meta>>,
    pos: u64,
    cursor: Option<String>,
    deadline: Instant,
    /// A control event was sent for the current position (nothing new to say).
    announced: bool,
    done: bool,
}

async fn sse_next(mut s: SseState) -> Option<(Result<Bytes, Infallible>, SseState)> {
    loop {
        if s.done {
            return None;
        }
        let meta = s.rx.borrow_and_update().clone();
        if meta.status != Status::Live {
            return None;
        }
        if meta.tail > s.pos {
            let max = s.state.streams.cfg.max_chunk_bytes;
            let chunk = match read_range(&*s.state.log, &meta, s.pos, max).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Stream read failed; closing the event stream.");
                    return None;
                }
            };
            s.pos = chunk.next;
            let up_to_date = chunk.next >= meta.tail;
            let closed = meta.closed && up_to_date;
            let mut out = BytesMut::new();
            if !chunk.messages.is_empty() {
                let text = store::media_type(&meta.content_type).starts_with("text/");
                out.extend_from_slice(&sse_data(meta.is_json(), text, &chunk.messages));
            }
            out.extend_from_slice(&sse_control(s.pos, up_to_date, closed, s.cursor.as_deref()));
            s.announced = true;
            s.done = closed;
            return Some((Ok(out.freeze()), s));
        }
        if meta.closed {
            s.done = true;
            return Some((Ok(sse_control(s.pos, true, true, None)), s));
        }
        if !s.announced {
            s.announced = true;
            return Some((Ok(sse_control(s.pos, true, false, s.cursor.as_deref())), s));
        }
        match tokio::time::timeout_at(s.deadline, s.rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

fn sse(
    state: &SharedState,
    rx: watch::Receiver<Arc<Meta>>,
    from: u64,
    cursor: Option<String>,
) -> Response {
    let meta = rx.borrow().clone();
    let binary = !meta.is_json() && !store::media_type(&meta.content_type).starts_with("text/");
    let s = SseState {
        state: state.clone(),
        rx,
        pos: from,
        cursor,
        deadline: Instant::now() + state.streams.cfg.sse_max,
        announced: false,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(s, sse_next));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if binary {
        set(h, "stream-sse-data-encoding", "base64");
    }
    resp
}
