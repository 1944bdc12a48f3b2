//! `GET /_rig/v1/connection/sse`: an event stream fed by the connection's outbox.
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::convert::Infallible;

use tidegate_hub::{Connection, Transport};

use crate::connect::{self, ConnectQuery};
use crate::error::ApiResult;
use crate::render;
use crate::state::SharedState;

pub async fn handler(
    State(state): State<SharedState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let resume = connect::resume_cursor(&headers, query.last_event_id.as_deref())?;
    let conn = connect::open(&state, Transport::Sse, &query, &headers, resume).await?;
    let batch = state.cfg.write_batch_bytes;
    let body = Body::from_stream(futures_util::stream::unfold(
        Some(Stream {
            conn,
            frames: Vec::new(),
            batch,
        }),
        next,
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) must not buffer an event stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

struct Stream {
    conn: Connection,
    frames: Vec<tidegate_hub::Frame>,
    batch: usize,
}

async fn next(state: Option<Stream>) -> Option<(Result<Bytes, Infallible>, Option<Stream>)> {
    let mut s = state?;
    s.frames.clear();
    match s.conn.outbox.take(&mut s.frames, s.batch).await {
        None => {
            let bytes = render::sse_batch(&s.frames);
            Some((Ok(bytes), Some(s)))
        }
        Some(reason) => {
            // Last words, then the stream ends (and the Connection drops: unregistered).
            let bytes = render::close_event(&reason).sse().clone();
            Some((Ok(bytes), None))
        }
    }
}
