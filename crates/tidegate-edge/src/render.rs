//! Transport renderings of the frames the hub queues. Events carry bytes encoded once
//! by the hub; only rare frames (gap markers, close notices) are built here.
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use std::sync::Arc;

use tidegate_hub::hub::gateway_frame;
use tidegate_hub::{CloseReason, Encoded, Frame};

/// Gateway event sent when a lossy overflow policy dropped events.
pub const EVENTS_DROPPED: &str = "tidegate.events_dropped";
/// Gateway event sent before the gateway closes a connection that should resume.
pub const DISCONNECT: &str = "tidegate.disconnect";

pub const SSE_HEARTBEAT: &[u8] = b": heartbeat\n\n";

pub fn gap_event(dropped: u64) -> Arc<Encoded> {
    gateway_frame(EVENTS_DROPPED, json!({ "dropped": dropped }))
}

/// The last frame before the gateway closes: `rig.session_killed`, or a
/// `tidegate.disconnect` telling the client to reconnect with its last cursor.
pub fn close_event(reason: &CloseReason) -> Arc<Encoded> {
    match reason {
        CloseReason::SessionKilled(frame) => frame.clone(),
        other => gateway_frame(
            DISCONNECT,
            json!({ "reason": other.as_str(), "resume": other.resumable() }),
        ),
    }
}

/// SSE bytes of a batch: one shared buffer when there is a single event (no copy),
/// otherwise one coalesced buffer for one write.
pub fn sse_batch(frames: &[Frame]) -> Bytes {
    if let [Frame::Event(e)] = frames {
        return e.sse().clone();
    }
    let len: usize = frames.iter().map(|f| f.cost()).sum();
    let mut buf = BytesMut::with_capacity(len + 64);
    for f in frames {
        match f {
            Frame::Event(e) => buf.put_slice(e.sse()),
            Frame::Gap { dropped } => buf.put_slice(gap_event(*dropped).sse()),
            Frame::Heartbeat => buf.put_slice(SSE_HEARTBEAT),
        }
    }
    buf.freeze()
}

/// JSON bytes of one frame for WebSocket text frames and long-poll arrays;
/// `None` for heartbeats (WebSocket pings instead; long-poll has none).
pub fn json_of(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::Event(e) => Some(e.json.clone()),
        Frame::Gap { dropped } => Some(gap_event(*dropped).json.clone()),
        Frame::Heartbeat => None,
    }
}
