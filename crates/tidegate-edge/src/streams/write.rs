//! Writes: `PUT` (create, idempotent re-create, forks), `POST` (append, close,
//! idempotent producers, `Stream-Seq`), `DELETE` (soft-delete while forks read the
//! data, cascading clean-up), and TTL / `Expires-At` expiry.
//!
//! Every write holds the stream's write lock from validation through the log append
//! to publishing the new snapshot; one write is one log batch (data records and the
//! trailing control record), so producer state never diverges from the data.
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::net::SocketAddr;

use tidegate_log::AppendRecord;

use super::producer::{self, Verdict};
use super::read::read_range;
use super::store::{self, Control, Meta, Piece, ProducerTuple, Requested, Status};
use super::{
    format_offset, parse_offset, require_live, set, set_content_type, Locked, OffsetParam, CLOSED,
    NEXT_OFFSET,
};
use crate::error::ApiError;
use crate::state::SharedState;

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} is not valid text"))),
    }
}

/// `Stream-Closed` counts only when it is `true` (any case).
fn is_true(h: &HeaderMap, name: &str) -> bool {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A non-negative decimal integer without sign, leading zeros, point or exponent.
fn strict_uint(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

async fn body_bytes(state: &SharedState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, state.cfg.max_body_bytes)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large"))
}

/// JSON mode: validates and flattens one level of array into messages.
fn json_messages(body: &[u8], allow_empty_array: bool) -> Result<Vec<Bytes>, ApiError> {
    let v: &serde_json::value::RawValue = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let text = v.get().trim_start();
    if text.starts_with('[') {
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(v.get())
            .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
        if items.is_empty() && !allow_empty_array {
            return Err(ApiError::bad_request("an empty JSON array appends nothing"));
        }
        Ok(items
            .into_iter()
            .map(|i| Bytes::copy_from_slice(i.get().as_bytes()))
            .collect())
    } else {
        Ok(vec![Bytes::copy_from_slice(v.get().as_bytes())])
    }
}

/// Message records of a body: JSON messages, or the bytes split into record-sized chunks.
fn messages(
    state: &SharedState,
    json: bool,
    body: &Bytes,
    put: bool,
) -> Result<Vec<Bytes>, ApiError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if json {
        return json_messages(body, put);
    }
    let max = state.streams.cfg.max_record_bytes.max(1);
    Ok((0..body.len())
        .step_by(max)
        .map(|i| body.slice(i..(i + max).min(body.len())))
        .collect())
}

/// Appends one batch and applies it to the published state.
async fn commit(
    state: &SharedState,
    l: &mut Locked<'_>,
    payloads: Vec<Bytes>,
) -> Result<Meta, ApiError> {
    let name = l.entry.log_name.clone();
    state.log.ensure_stream(&name).await?;
    let records = payloads
        .iter()
        .map(|p| AppendRecord {
            dedup_key: None,
            payload: p.clone(),
        })
        .collect();
    let mut w = l.begin();
    let appended = state.log.append(&name, records).await?;
    let mut meta = (*l.meta()).clone();
    for (a, p) in appended.iter().zip(&payloads) {
        store::apply(&mut meta, &mut w, &name, a.offset(), p);
    }
    l.end(w);
    l.publish(meta.clone());
    l.entry.touch();
    Ok(meta)
}

fn peer(req: &axum::http::request::Parts) -> Option<SocketAddr> {
    req.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Deletes the stream if its TTL or `Expires-At` has passed.
pub async fn expire_if_due(state: &SharedState, l: &mut Locked<'_>) -> Result<(), ApiError> {
    let meta = l.meta();
    if l.entry.expired(&meta) {
        tracing::debug!(path = %l.entry.path, "Stream expired.");
        delete_locked(state, l).await?;
    }
    Ok(())
}

async fn delete_locked(state: &SharedState, l: &mut Locked<'_>) -> Result<(), ApiError> {
    let meta = commit(state, l, vec![store::control_payload(&Control::Delete)]).await?;
    if meta.status == Status::Missing {
        if let Some(source) = meta.requested.fork_from.clone() {
            release_source(state, source, l.entry.path.clone()).await?;
        }
    }
    Ok(())
}

/// Drops a fork's reference on its source, cleaning up soft-deleted sources up the chain.
async fn release_source(
    state: &SharedState,
    mut source: String,
    mut fork: String,
) -> Result<(), ApiError> {
    loop {
        let entry = state.streams.entry(&source)?;
        let mut l = entry.lock(&*state.log).await?;
        let payload = store::control_payload(&Control::ForkRef { fork, add: false });
        let meta = commit(state, &mut l, vec![payload]).await?;
        match (&meta.status, meta.requested.fork_from.clone()) {
            (Status::Missing, Some(up)) if meta.forks.is_empty() => {
                fork = source;
                source = up;
            }
            _ => return Ok(()),
        }
    }
}

fn created_headers(resp: &mut Response, meta: &Meta) {
    let h = resp.headers_mut();
    set_content_type(h, &meta.content_type);
    set(h, NEXT_OFFSET, format_offset(meta.tail));
    if meta.closed {
        set(h, CLOSED, "true");
    }
}

struct PutRequest {
    content_type: Option<String>,
    ttl: Option<u64>,
    expires_at: Option<(String, i64)>,
    closed: bool,
    fork_from: Option<String>,
    fork_offset: Option<u64>,
    sub_offset: u64,
}

fn parse_put(h: &HeaderMap) -> Result<PutRequest, ApiError> {
    let content_type = header_str(h, "content-type")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let ttl =
        match header_str(h, "stream-ttl")? {
            None => None,
            Some(s) => Some(strict_uint(s).ok_or_else(|| {
                ApiError::bad_request("Stream-TTL must be a non-negative integer")
            })?),
        };
    let expires_at = match header_str(h, "stream-expires-at")? {
        None => None,
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::bad_request("Stream-Expires-At must be an RFC 3339 timestamp")
                })?;
            Some((s.to_owned(), (t.unix_timestamp_nanos() / 1_000_000) as i64))
        }
    };
    if ttl.is_some() && expires_at.is_some() {
        return Err(ApiError::bad_request(
            "Stream-TTL and Stream-Expires-At exclude each other",
        ));
    }
    let fork_from = header_str(h, "stream-forked-from")?.map(str::to_owned);
    let fork_offset = match header_str(h, "stream-fork-offset")? {
        None => None,
        Some(s) => match parse_offset(s) {
            Some(OffsetParam::At(v)) => Some(v),
            _ => return Err(ApiError::bad_request("malformed Stream-Fork-Offset")),
        },
    };
    let sub = header_str(h, "stream-fork-sub-offset")?;
    if (fork_offset.is_some() || sub.is_some()) && fork_from.is_none() {
        return Err(ApiError::bad_request(
            "fork headers need Stream-Forked-From",
        ));
    }
    let sub_offset = match sub {
        None => 0,
        Some(s) => strict_uint(s)
            .ok_or_else(|| ApiError::bad_request("malformed Stream-Fork-Sub-Offset"))?,
    };
    if sub_offset > 0 && fork_offset.is_none() {
        return Err(ApiError::bad_request(
            "Stream-Fork-Sub-Offset needs Stream-Fork-Offset",
        ));
    }
    Ok(PutRequest {
        content_type,
        ttl,
        expires_at,
        closed: is_true(h, "stream-closed"),
        fork_from,
        fork_offset,
        sub_offset,
    })
}

fn matches_existing(p: &PutRequest, meta: &Meta) -> bool {
    let ct_ok = match &p.content_type {
        Some(ct) => store::media_type(ct) == store::media_type(&meta.content_type),
        None if p.fork_from.is_some() => true,
        None => store::media_type(DEFAULT_CONTENT_TYPE) == store::media_type(&meta.content_type),
    };
    let r = &meta.requested;
    ct_ok
        && p.ttl == r.ttl
        && p.expires_at.as_ref().map(|e| e.1) == r.expires_at_ms
        && p.closed == meta.closed
        && p.fork_from == r.fork_from
        && p.fork_offset == r.fork_offset
        && p.sub_offset == r.sub_offset
}

fn location(h: &HeaderMap, path: &str) -> String {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{path}")
}

/// What a fork takes from its source, resolved under the source's lock.
struct ForkPlan {
    content_type: String,
    ttl: Option<u64>,
    expires: Option<(String, i64)>,
    inherited: Vec<Piece>,
    base_v: u64,
    prefix: Vec<Bytes>,
}

async fn plan_fork(
    state: &SharedState,
    p: &PutRequest,
    source: &str,
    fork_path: &str,
) -> Result<ForkPlan, ApiError> {
    if source == fork_path {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a stream cannot fork itself",
        ));
    }
    let entry = state
        .streams
        .entry(source)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "source stream not found"))?;
    let mut l = entry.lock(&*state.log).await?;
    expire_if_due(state, &mut l).await?;
    let src = l.meta();
    match src.status {
        Status::Missing => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "source stream not found",
            ))
        }
        Status::SoftDeleted => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "source stream was deleted",
            ))
        }
        Status::Live => {}
    }
    if let Some(ct) = &p.content_type {
        if store::media_type(ct) != store::media_type(&src.content_type) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "content type differs from the source's",
            ));
        }
    }
    let at = p.fork_offset.unwrap_or(src.tail);
    if at > src.tail {
        return Err(ApiError::bad_request(
            "Stream-Fork-Offset is beyond the source's tail",
        ));
    }
    let at = at.max(src.start);
    let inherited: Vec<Piece> = src
        .pieces
        .iter()
        .filter_map(|piece| {
            let to = piece.to_v.unwrap_or(u64::MAX).min(at);
            (piece.from_v < to).then(|| Piece {
                to_v: Some(to),
                ..piece.clone()
            })
        })
        .collect();
    let mut prefix = Vec::new();
    if p.sub_offset > 0 {
        let want = p.sub_offset as usize;
        let (mut pos, mut got) = (at, 0usize);
        while got < want && pos < src.tail {
            let chunk = read_range(&*state.log, &src, pos, 1 << 20).await?;
            pos = chunk.next;
            for m in chunk.messages {
                if got >= want {
                    break;
                }
                if src.is_json() {
                    got += 1;
                    prefix.push(m);
                } else {
                    let take = (want - got).min(m.len());
                    got += take;
                    prefix.push(m.slice(..take));
                }
            }
        }
        if got < want {
            return Err(ApiError::bad_request(
                "Stream-Fork-Sub-Offset is beyond the source's data",
            ));
        }
    }
    let (ttl, expires) = if p.ttl.is_none() && p.expires_at.is_none() {
        (src.ttl, src.expires_at.clone().zip(src.expires_at_ms))
    } else {
        (p.ttl, p.expires_at.clone())
    };
    // Reference the source before the fork exists: a crash in between leaks a
    // reference (the source stays soft-deleted), never loses data a fork reads.
    let payload = store::control_payload(&Control::ForkRef {
        fork: fork_path.to_owned(),
        add: true,
    });
    commit(state, &mut l, vec![payload]).await?;
    Ok(ForkPlan {
        content_type: src.content_type.clone(),
        ttl,
        expires,
        inherited,
        base_v: at,
        prefix,
    })
}

pub async fn put(state: &SharedState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let entry = state.streams.entry(&path)?;
    let _permit = state.admission.admit(state, &parts.headers, peer(&parts))?;
    let p = parse_put(&parts.headers)?;
    let body = body_bytes(state, body).await?;
    let mut l = entry.lock(&*state.log).await?;
    expire_if_due(state, &mut l).await?;
    let meta = l.meta();
    match meta.status {
        Status::SoftDeleted => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stream was deleted and is still referenced by forks",
            ))
        }
        Status::Live => {
            if !matches_existing(&p, &meta) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "stream exists with a different configuration",
                ));
            }
            entry.touch();
            let mut resp = StatusCode::OK.into_response();
            created_headers(&mut resp, &meta);
            return Ok(resp);
        }
        Status::Missing => {}
    }
    let fork = match &p.fork_from {
        Some(source) => Some(plan_fork(state, &p, source, &path).await?),
        None => None,
    };
    let content_type = match &fork {
        Some(f) => f.content_type.clone(),
        None => p
            .content_type
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
    };
    let msgs = match messages(state, store::is_json(&content_type), &body, true) {
        Ok(m) => m,
        Err(e) => {
            if let Some(source) = &p.fork_from {
                release_source(state, source.clone(), path.clone()).await?;
            }
            return Err(e);
        }
    };
    let (ttl, expires) = match &fork {
        Some(f) => (f.ttl, f.expires.clone()),
        None => (p.ttl, p.expires_at.clone()),
    };
    let create = Control::Create {
        content_type,
        ttl,
        expires_at: expires.as_ref().map(|e| e.0.clone()),
        expires_at_ms: expires.as_ref().map(|e| e.1),
        closed: p.closed,
        requested: Requested {
            content_type: p.content_type.clone(),
            ttl: p.ttl,
            expires_at_ms: p.expires_at.as_ref().map(|e| e.1),
            fork_from: p.fork_from.clone(),
            fork_offset: p.fork_offset,
            sub_offset: p.sub_offset,
        },
        inherited: fork
            .as_ref()
            .map(|f| f.inherited.clone())
            .unwrap_or_default(),
        base_v: fork.as_ref().map(|f| f.base_v),
    };
    let mut payloads = vec![store::control_payload(&create)];
    if let Some(f) = &fork {
        payloads.extend(f.prefix.iter().map(|m| store::data_payload(m)));
    }
    payloads.extend(msgs.iter().map(|m| store::data_payload(m)));
    let meta = commit(state, &mut l, payloads).await?;
    let mut resp = StatusCode::CREATED.into_response();
    created_headers(&mut resp, &meta);
    set(
        resp.headers_mut(),
        "location",
        location(&parts.headers, &path),
    );
    Ok(resp)
}

fn closed_conflict(meta: &Meta) -> Response {
    let mut resp = ApiError::new(StatusCode::CONFLICT, "stream is closed").into_response();
    set(resp.headers_mut(), CLOSED, "true");
    set(resp.headers_mut(), NEXT_OFFSET, format_offset(meta.tail));
    resp
}

fn producer_headers(resp: &mut Response, epoch: u64, seq: u64) {
    set(resp.headers_mut(), "producer-epoch", epoch.to_string());
    set(resp.headers_mut(), "producer-seq", seq.to_string());
}

pub async fn post(state: &SharedState, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let entry = state.streams.entry(&path)?;
    let _permit = state.admission.admit(state, &parts.headers, peer(&parts))?;
    let h = &parts.headers;
    let close = is_true(h, "stream-closed");
    let producer = producer::parse(h).map_err(ApiError::bad_request)?;
    let stream_seq = header_str(h, "stream-seq")?.map(str::to_owned);
    let content_type = header_str(h, "content-type")?.map(str::to_owned);
    let body = body_bytes(state, body).await?;
    if body.is_empty() && !close {
        return Err(ApiError::bad_request(
            "an append needs a body (or Stream-Closed: true)",
        ));
    }
    let mut l = entry.lock(&*state.log).await?;
    expire_if_due(state, &mut l).await?;
    let meta = l.meta();
    require_live(&meta)?;
    if meta.closed {
        let w = l.writer();
        if let (Some(p), Some(by)) = (&producer, &w.closed_by) {
            if p == by {
                let mut resp = StatusCode::NO_CONTENT.into_response();
                set(resp.headers_mut(), NEXT_OFFSET, format_offset(meta.tail));
                set(resp.headers_mut(), CLOSED, "true");
                producer_headers(&mut resp, p.epoch, p.seq);
                return Ok(resp);
            }
        }
        if body.is_empty() && close {
            entry.touch();
            let mut resp = StatusCode::NO_CONTENT.into_response();
            set(resp.headers_mut(), NEXT_OFFSET, format_offset(meta.tail));
            set(resp.headers_mut(), CLOSED, "true");
            return Ok(resp);
        }
        return Ok(closed_conflict(&meta));
    }
    if !body.is_empty() {
        let ct = content_type
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::bad_request("Content-Type is required"))?;
        if store::media_type(ct) != store::media_type(&meta.content_type) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "content type does not match the stream's",
            ));
        }
    }
    let msgs = messages(state, meta.is_json(), &body, false)?;
    if let Some(p) = &producer {
        let current = l.writer().producers.get(&p.id).copied();
        match producer::check(current, p) {
            Verdict::Accept => {}
            Verdict::Duplicate { last_seq } => {
                let mut resp = StatusCode::NO_CONTENT.into_response();
                set(resp.headers_mut(), NEXT_OFFSET, format_offset(meta.tail));
                producer_headers(&mut resp, p.epoch, last_seq);
                return Ok(resp);
            }
            Verdict::StaleEpoch { current } => {
                let mut resp =
                    ApiError::new(StatusCode::FORBIDDEN, "stale producer epoch").into_response();
                set(resp.headers_mut(), "producer-epoch", current.to_string());
                return Ok(resp);
            }
            Verdict::BadEpochStart => {
                return Err(ApiError::bad_request(
                    "a new producer epoch starts at seq 0",
                ))
            }
            Verdict::Gap { expected, received } => {
                let mut resp =
                    ApiError::new(StatusCode::CONFLICT, "producer sequence gap").into_response();
                set(
                    resp.headers_mut(),
                    "producer-expected-seq",
                    expected.to_string(),
                );
                set(
                    resp.headers_mut(),
                    "producer-received-seq",
                    received.to_string(),
                );
                return Ok(resp);
            }
        }
    }
    if let Some(seq) = &stream_seq {
        if l.writer()
            .last_stream_seq
            .as_deref()
            .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Stream-Seq is not above the last one",
            ));
        }
    }
    let mut payloads: Vec<Bytes> = msgs.iter().map(|m| store::data_payload(m)).collect();
    if producer.is_some() || stream_seq.is_some() || close {
        payloads.push(store::control_payload(&Control::Append {
            producer: producer.clone(),
            stream_seq,
            close,
        }));
    }
    let meta = commit(state, &mut l, payloads).await?;
    let status = if producer.is_some() && !msgs.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut resp = status.into_response();
    set(resp.headers_mut(), NEXT_OFFSET, format_offset(meta.tail));
    if meta.closed {
        set(resp.headers_mut(), CLOSED, "true");
    }
    if let Some(ProducerTuple { epoch, seq, .. }) = producer {
        producer_headers(&mut resp, epoch, seq);
    }
    Ok(resp)
}

pub async fn delete(state: &SharedState, req: Request) -> Result<Response, ApiError> {
    let (parts, _body) = req.into_parts();
    let entry = state.streams.entry(parts.uri.path())?;
    let _permit = state.admission.admit(state, &parts.headers, peer(&parts))?;
    let mut l = entry.lock(&*state.log).await?;
    expire_if_due(state, &mut l).await?;
    require_live(&l.meta())?;
    delete_locked(state, &mut l).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
