//! The stored form of an ingested request and of a dead letter.
//!
//! A compact binary layout (the body is arbitrary bytes, so JSON would need
//! base64 and a copy): a 4-byte magic, fixed-width integers big-endian,
//! strings as `u16 length + bytes`, and the body last so decoding slices it
//! out of the record's `Bytes` without copying.
//!
//! ```text
//! envelope:    "TGE1" received_ms:u64 id method path query client content_type
//!              headers:u16 (name value)* body_len:u32 body
//! dead letter: "TGD1" source_offset:u64 attempts:u32 last_status:u16 dead_ms:u64
//!              reason envelope…
//! tombstone:   "TGT1" dlq_offset:u64 kind:u8 (1 = replayed, 2 = deleted)
//! ```
use bytes::{BufMut, Bytes, BytesMut};

const ENVELOPE: &[u8; 4] = b"TGE1";
const DEAD_LETTER: &[u8; 4] = b"TGD1";
const TOMBSTONE: &[u8; 4] = b"TGT1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed record: {0}")]
pub struct DecodeError(&'static str);

/// One ingested request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The message id (UUID v7), sent to the backend as `Idempotency-Key`.
    pub id: String,
    pub received_ms: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Client address (`ip:port`), empty when unknown.
    pub client: String,
    pub content_type: String,
    /// The route's `keep_headers` that were present, lower-case names.
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    out.put_u16(n as u16);
    out.put_slice(&s[..n]);
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError("truncated"));
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
    fn magic(&mut self, m: &[u8; 4]) -> Result<(), DecodeError> {
        if self.take(4)?.as_ref() == m {
            Ok(())
        } else {
            Err(DecodeError("bad magic"))
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes16(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes16()?.to_vec()).map_err(|_| DecodeError("invalid UTF-8"))
    }
    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }
}

impl Envelope {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.body.len() + self.path.len());
        out.put_slice(ENVELOPE);
        out.put_u64(self.received_ms);
        for s in [
            &self.id,
            &self.method,
            &self.path,
            &self.query,
            &self.client,
            &self.content_type,
        ] {
            put_str(&mut out, s.as_bytes());
        }
        let n = self.headers.len().min(u16::MAX as usize);
        out.put_u16(n as u16);
        for (k, v) in &self.headers[..n] {
            put_str(&mut out, k.as_bytes());
            put_str(&mut out, v);
        }
        out.put_u32(u32::try_from(self.body.len()).unwrap_or(u32::MAX));
        out.put_slice(&self.body);
        out.freeze()
    }

    pub fn decode(buf: Bytes) -> Result<Envelope, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        r.magic(ENVELOPE)?;
        let received_ms = r.u64()?;
        let id = r.string()?;
        let method = r.string()?;
        let path = r.string()?;
        let query = r.string()?;
        let client = r.string()?;
        let content_type = r.string()?;
        let n = r.u16()?;
        let mut headers = Vec::with_capacity(n as usize);
        for _ in 0..n {
            headers.push((r.string()?, r.bytes16()?));
        }
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        Ok(Envelope {
            id,
            received_ms,
            method,
            path,
            query,
            client,
            content_type,
            headers,
            body,
        })
    }
}

/// A message that will not be delivered, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Offset of the message in the route's stream.
    pub source_offset: u64,
    pub attempts: u32,
    /// Last HTTP status from the backend, if it answered.
    pub last_status: Option<u16>,
    pub dead_ms: u64,
    pub reason: String,
    /// The stored envelope, unchanged (replay appends it again).
    pub envelope: Bytes,
}

impl DeadLetter {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + self.reason.len() + self.envelope.len());
        out.put_slice(DEAD_LETTER);
        out.put_u64(self.source_offset);
        out.put_u32(self.attempts);
        out.put_u16(self.last_status.unwrap_or(0));
        out.put_u64(self.dead_ms);
        put_str(&mut out, self.reason.as_bytes());
        out.put_slice(&self.envelope);
        out.freeze()
    }

    fn decode_from(mut r: Reader) -> Result<DeadLetter, DecodeError> {
        let source_offset = r.u64()?;
        let attempts = r.u32()?;
        let last_status = Some(r.u16()?).filter(|s| *s != 0);
        let dead_ms = r.u64()?;
        let reason = r.string()?;
        Ok(DeadLetter {
            source_offset,
            attempts,
            last_status,
            dead_ms,
            reason,
            envelope: r.rest(),
        })
    }
}

/// What ended a dead letter's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tombstone {
    Replayed(u64),
    Deleted(u64),
}

impl Tombstone {
    pub fn encode(self) -> Bytes {
        let (offset, kind) = match self {
            Tombstone::Replayed(o) => (o, 1u8),
            Tombstone::Deleted(o) => (o, 2u8),
        };
        let mut out = BytesMut::with_capacity(13);
        out.put_slice(TOMBSTONE);
        out.put_u64(offset);
        out.put_u8(kind);
        out.freeze()
    }
}

/// A record of a `<stream>.dlq` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqRecord {
    DeadLetter(DeadLetter),
    Tombstone(Tombstone),
}

impl DlqRecord {
    pub fn decode(buf: Bytes) -> Result<DlqRecord, DecodeError> {
        let head = buf.get(..4).ok_or(DecodeError("truncated"))?;
        let mut r = Reader {
            buf: buf.clone(),
            pos: 4,
        };
        if head == DEAD_LETTER {
            DeadLetter::decode_from(r).map(DlqRecord::DeadLetter)
        } else if head == TOMBSTONE {
            let offset = r.u64()?;
            match r.u8()? {
                1 => Ok(DlqRecord::Tombstone(Tombstone::Replayed(offset))),
                2 => Ok(DlqRecord::Tombstone(Tombstone::Deleted(offset))),
                _ => Err(DecodeError("unknown tombstone kind")),
            }
        } else {
            Err(DecodeError("bad magic"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            id: "0190-abc".into(),
            received_ms: 1_700_000_000_123,
            method: "POST".into(),
            path: "/leads".into(),
            query: "a=1".into(),
            client: "127.0.0.1:5000".into(),
            content_type: "application/json".into(),
            headers: vec![("x-tenant".into(), Bytes::from_static(b"\xffacme"))],
            body: Bytes::from_static(b"{\"name\":\"x\"}\0binary"),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let e = sample();
        assert_eq!(Envelope::decode(e.encode()).unwrap(), e);
    }

    #[test]
    fn dead_letter_and_tombstone_round_trip() {
        let d = DeadLetter {
            source_offset: 42,
            attempts: 3,
            last_status: Some(422),
            dead_ms: 5,
            reason: "backend answered 422".into(),
            envelope: sample().encode(),
        };
        assert_eq!(
            DlqRecord::decode(d.encode()).unwrap(),
            DlqRecord::DeadLetter(d.clone())
        );
        for t in [Tombstone::Replayed(7), Tombstone::Deleted(9)] {
            assert_eq!(
                DlqRecord::decode(t.encode()).unwrap(),
                DlqRecord::Tombstone(t)
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Envelope::decode(enc.slice(..n)).is_err());
        }
        assert!(DlqRecord::decode(Bytes::from_static(b"XXXX")).is_err());
        assert!(DlqRecord::decode(Bytes::from_static(b"TG")).is_err());
    }
}
