//! Frames queued to a connection. An event is encoded once into [`Encoded`] and the
//! same `Arc` is queued to every recipient; transports render from its shared bytes.
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::{Arc, OnceLock};

use tidegate_core::event::Event;

/// CloudEvents extension attribute carrying the cursor inside the event JSON, for
/// transports without an SSE-style `id:` field (WebSocket, long-polling).
pub const CURSOR_ATTRIBUTE: &str = "tidegatecursor";

/// One event ready for the wire.
#[derive(Debug)]
pub struct Encoded {
    pub event_type: Box<str>,
    /// `None` for gateway events and transient events: they cannot be resumed from.
    pub cursor: Option<Box<str>>,
    /// The CloudEvent JSON as delivered (with the cursor attribute when there is one).
    pub json: Bytes,
    sse: OnceLock<Bytes>,
}

impl Encoded {
    /// `json` must be a compact JSON object as produced by `Event::to_json`.
    pub fn new(event_type: &str, cursor: Option<String>, json: &[u8]) -> Arc<Encoded> {
        let json = match &cursor {
            Some(c) if json.len() > 2 && json.last() == Some(&b'}') => {
                let mut buf =
                    BytesMut::with_capacity(json.len() + c.len() + CURSOR_ATTRIBUTE.len() + 8);
                buf.put_slice(&json[..json.len() - 1]);
                buf.put_slice(b",\"");
                buf.put_slice(CURSOR_ATTRIBUTE.as_bytes());
                buf.put_slice(b"\":\"");
                // Cursors are base64url: nothing to escape.
                buf.put_slice(c.as_bytes());
                buf.put_slice(b"\"}");
                buf.freeze()
            }
            _ => Bytes::copy_from_slice(json),
        };
        Arc::new(Encoded {
            event_type: event_type.into(),
            cursor: cursor.map(String::into_boxed_str),
            json,
            sse: OnceLock::new(),
        })
    }

    /// A gateway-originated event (`rig.connection.create`, …): no cursor.
    pub fn gateway(event: &Event) -> Arc<Encoded> {
        Encoded::new(&event.event_type, None, &event.to_json())
    }

    /// Bytes the queue accounts for this frame (approximate wire size).
    pub fn cost(&self) -> usize {
        self.json.len() + self.event_type.len() + self.cursor.as_ref().map_or(0, |c| c.len()) + 24
    }

    /// `event: <type>\nid: <cursor>\ndata: <json>\n\n`, rendered on first use and shared.
    pub fn sse(&self) -> &Bytes {
        self.sse.get_or_init(|| {
            let mut buf = BytesMut::with_capacity(self.cost() + 16);
            buf.put_slice(b"event: ");
            // A line break inside a field would end the SSE field early; types are
            // validated at ingest, this is the last line of defence.
            for b in self.event_type.bytes() {
                buf.put_u8(if b == b'\n' || b == b'\r' { b' ' } else { b });
            }
            if let Some(c) = &self.cursor {
                buf.put_slice(b"\nid: ");
                buf.put_slice(c.as_bytes());
            }
            buf.put_slice(b"\ndata: ");
            buf.put_slice(&self.json);
            buf.put_slice(b"\n\n");
            buf.freeze()
        })
    }
}

/// What a connection's queue holds.
#[derive(Debug, Clone)]
pub enum Frame {
    Event(Arc<Encoded>),
    /// `dropped` events were discarded by a lossy overflow policy at this point.
    Gap {
        dropped: u64,
    },
    Heartbeat,
}

impl Frame {
    pub fn cost(&self) -> usize {
        match self {
            Frame::Event(e) => e.cost(),
            Frame::Gap { .. } | Frame::Heartbeat => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_cursor_into_json_and_renders_sse_once() {
        let e = Encoded::new(
            "greeting",
            Some("AQID".into()),
            br#"{"specversion":"1.0","type":"greeting"}"#,
        );
        assert_eq!(
            &e.json[..],
            br#"{"specversion":"1.0","type":"greeting","tidegatecursor":"AQID"}"#
        );
        let a = e.sse().clone();
        assert_eq!(
            &a[..],
            &b"event: greeting\nid: AQID\ndata: {\"specversion\":\"1.0\",\"type\":\"greeting\",\"tidegatecursor\":\"AQID\"}\n\n"[..]
        );
        // Shared, not re-rendered.
        assert_eq!(a.as_ptr(), e.sse().as_ptr());
    }

    #[test]
    fn gateway_events_have_no_id_line() {
        let e = Encoded::new("rig.connection.create", None, br#"{"a":1}"#);
        assert_eq!(
            &e.sse()[..],
            b"event: rig.connection.create\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(&e.json[..], br#"{"a":1}"#);
    }
}
