//! `GET /_rig/v1/connection/ws`: one text frame per event (the CloudEvent JSON, as
//! RIG sends it). Buffers are sized explicitly: tungstenite's defaults cost ~128 KiB
//! per idle connection.
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::SinkExt;

use tidegate_hub::{CloseReason, Connection, Frame, Transport};

use crate::connect::{self, ConnectQuery};
use crate::error::ApiResult;
use crate::render;
use crate::state::SharedState;

/// Close codes: 1000 as RIG for a killed session; 1013 "try again later" for
/// resumable closes (slow client, lagging replay, shutdown), 1001 when expired.
fn close_code(reason: &CloseReason) -> u16 {
    match reason {
        CloseReason::SessionKilled(_) => 1000,
        CloseReason::Shutdown => 1001,
        _ => 1013,
    }
}

pub async fn handler(
    State(state): State<SharedState>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let resume = connect::resume_cursor(&headers, query.last_event_id.as_deref())?;
    // Authenticate and register before upgrading, so errors are plain HTTP 4xx.
    let conn = connect::open(&state, Transport::Ws, &query, &headers, resume).await?;
    let batch = state.cfg.write_batch_bytes;
    let max_msg = state.cfg.ws_max_message;
    Ok(ws
        // Clients send only pings, pongs and close frames: 1 KiB is allocated up front
        // per connection, larger client messages are read in 1 KiB steps.
        .read_buffer_size(1 << 10)
        .write_buffer_size(8 << 10)
        .max_write_buffer_size(state.cfg.write_batch_bytes * 4 + (64 << 10))
        .max_message_size(max_msg)
        .max_frame_size(max_msg)
        .on_upgrade(move |socket| run(socket, conn, batch)))
}

async fn run(mut socket: WebSocket, conn: Connection, batch: usize) {
    let mut frames = Vec::new();
    loop {
        tokio::select! {
            // Cancel-safe: `take` only awaits while nothing has been taken.
            closed = conn.outbox.take(&mut frames, batch) => {
                if write_frames(&mut socket, &mut frames).await.is_err() {
                    return;
                }
                if let Some(reason) = closed {
                    let last = render::close_event(&reason);
                    let _ = socket.feed(text(&last.json)).await;
                    let frame = CloseFrame { code: close_code(&reason), reason: Utf8Bytes::from(reason.as_str()) };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pings are answered by the protocol layer; client data is ignored
                // (the endpoint is server-to-client, as in RIG).
                Some(Ok(_)) => {}
            },
        }
    }
}

fn text(json: &bytes::Bytes) -> Message {
    // Event JSON is valid UTF-8 by construction (it came out of serde_json).
    Message::Text(Utf8Bytes::try_from(json.clone()).unwrap_or_else(|_| Utf8Bytes::from("{}")))
}

/// Feeds every frame, then flushes once: one write for the whole batch.
async fn write_frames(socket: &mut WebSocket, frames: &mut Vec<Frame>) -> Result<(), axum::Error> {
    if frames.is_empty() {
        return Ok(());
    }
    for f in frames.drain(..) {
        match &f {
            Frame::Heartbeat => socket.feed(Message::Ping(bytes::Bytes::new())).await?,
            other => {
                if let Some(json) = render::json_of(other) {
                    socket.feed(text(&json)).await?;
                }
            }
        }
    }
    socket.flush().await
}
