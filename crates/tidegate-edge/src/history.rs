//! `GET /_tidegate/v1/history`: the current head cursor and the newest `limit` stored
//! events matching the caller's subscriptions up to (before) a cursor, oldest first.
//! A frontend renders them and then connects with `lastEventId=<head>`: the head is
//! read before the history, so nothing between the two is missed.
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use std::collections::{HashSet, VecDeque};

use tidegate_core::cursor::Cursor;
use tidegate_core::index::naive_matches;
use tidegate_core::record;
use tidegate_hub::{Encoded, Resume};

use crate::connect::{self, START};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

#[derive(Debug, Default, serde::Deserialize)]
pub struct HistoryQuery {
    pub jwt: Option<String>,
    pub subscriptions: Option<String>,
    /// Exclusive upper bound (a cursor from a previous page's `before`, or any event id).
    pub before: Option<String>,
    pub limit: Option<usize>,
}

/// Records examined per request at most; beyond it the page is returned with a
/// `before` cursor to continue from, so one request cannot scan the whole log.
const MAX_SCAN: u64 = 200_000;
const WINDOW: u64 = 2048;

pub async fn handler(
    State(state): State<SharedState>,
    Query(q): Query<HistoryQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let caller = connect::authenticate(&state, q.jwt.as_deref(), &headers)?;
    let subs = connect::resolve_subscriptions(
        &state,
        &caller,
        q.subscriptions.as_deref().map(str::as_bytes),
        403,
    )
    .await?;
    if subs.is_empty() {
        return Err(ApiError::bad_request(
            "history needs subscriptions (query `subscriptions` or a JWT they are inferred from)",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, state.cfg.history_max);
    let epoch = state.log.epoch();
    let bounds = state.log.bounds(&state.stream)?;
    let head = if bounds.next == 0 {
        START.to_string()
    } else {
        Cursor::single(epoch, bounds.next - 1).encode()
    };
    let end = match connect::parse_resume(q.before.as_deref())? {
        None => bounds.next,
        Some(Resume::Start) => bounds.first,
        Some(Resume::After(c)) => {
            if c.epoch != epoch || c.offsets.len() != 1 {
                return Err(ApiError::bad_request(
                    "`before` cursor belongs to a different log",
                ));
            }
            c.offsets[0].min(bounds.next)
        }
    };
    let types: HashSet<&str> = subs.iter().map(|s| s.event_type.as_str()).collect();
    let mut found: VecDeque<(u64, bytes::Bytes)> = VecDeque::new();
    let mut upper = end;
    let mut scanned = 0u64;
    while upper > bounds.first && found.len() < limit && scanned < MAX_SCAN {
        let lower = upper.saturating_sub(WINDOW).max(bounds.first);
        let mut window = Vec::new();
        let mut pos = lower;
        while pos < upper {
            let records = state
                .log
                .read(&state.stream, pos, (upper - pos) as usize, 4 << 20)
                .await?;
            let Some(last) = records.last() else { break };
            pos = last.offset + 1;
            for r in records.into_iter().filter(|r| r.offset < upper) {
                let Ok((t, json)) = record::decode(&r.payload) else {
                    continue;
                };
                if !types.contains(t) {
                    continue;
                }
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
                    continue;
                };
                if naive_matches(&subs, t, &value, &state.extractors) {
                    let cursor = Cursor::single(epoch, r.offset).encode();
                    window.push((r.offset, Encoded::new(t, Some(cursor), json).json.clone()));
                }
            }
        }
        for item in window.into_iter().rev() {
            if found.len() == limit {
                break;
            }
            found.push_front(item);
        }
        scanned += upper - lower;
        upper = lower;
    }
    // More may exist below: continue from the oldest returned event, or from where
    // the scan stopped.
    let before = if found.len() == limit {
        found
            .front()
            .map(|(o, _)| Cursor::single(epoch, *o).encode())
    } else if upper > bounds.first {
        Some(Cursor::single(epoch, upper).encode())
    } else {
        None
    };
    let mut body =
        BytesMut::with_capacity(found.iter().map(|(_, j)| j.len() + 1).sum::<usize>() + 128);
    body.put_slice(b"{\"head\":");
    body.put_slice(serde_json::Value::String(head).to_string().as_bytes());
    body.put_slice(b",\"events\":[");
    for (i, (_, json)) in found.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(json);
    }
    body.put_slice(b"],\"before\":");
    body.put_slice(
        before
            .map_or("null".to_string(), |b| {
                serde_json::Value::String(b).to_string()
            })
            .as_bytes(),
    );
    body.put_u8(b'}');
    let mut resp = (StatusCode::OK, body.freeze()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
