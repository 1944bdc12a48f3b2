//! Framing of an event inside a log record: `[version u8][type len u16 BE][type][json]`.
//! The hub reads the type with [`peek_type`] and drops events nobody subscribed to
//! before their JSON is parsed.
//!
//! The JSON is the event's delivered form ([`crate::Event::to_json`]), stored once and
//! shared as `Bytes` by every subscriber.
use bytes::{BufMut, Bytes, BytesMut};

/// The only framing version so far; a new layout gets a new number so old logs stay
/// readable.
pub const VERSION: u8 = 1;

/// Bytes before the event type: version and type length.
const HEADER_LEN: usize = 3;

/// The longest event type a record can carry.
pub const MAX_TYPE_LEN: usize = u16::MAX as usize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record too short")]
    Truncated,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("event type is not UTF-8")]
    BadType,
    #[error("event type is {0} bytes, the limit is {MAX_TYPE_LEN}")]
    TypeTooLong(usize),
}

/// Frames an event. Event types longer than [`MAX_TYPE_LEN`] cannot occur (events are
/// size-limited long before they reach the log); should one slip through, the result is
/// an empty buffer that [`decode`] rejects as truncated — never a record whose type was
/// silently cut. Use [`try_encode`] where the limit is not already guaranteed.
pub fn encode(event_type: &str, json: &[u8]) -> Bytes {
    debug_assert!(
        event_type.len() <= MAX_TYPE_LEN,
        "event type of {} bytes reached the log",
        event_type.len()
    );
    try_encode(event_type, json).unwrap_or_default()
}

/// Frames an event, or says why it cannot be framed.
pub fn try_encode(event_type: &str, json: &[u8]) -> Result<Bytes, RecordError> {
    let type_len =
        u16::try_from(event_type.len()).map_err(|_| RecordError::TypeTooLong(event_type.len()))?;
    let mut buf = BytesMut::with_capacity(HEADER_LEN + event_type.len() + json.len());
    buf.put_u8(VERSION);
    buf.put_u16(type_len);
    buf.put_slice(event_type.as_bytes());
    buf.put_slice(json);
    Ok(buf.freeze())
}

/// [`try_encode`] appended to `buf`, so that the records of a batch can share one
/// allocation (split them off with `BytesMut::split`). Nothing is written on error.
pub fn try_encode_into(
    buf: &mut BytesMut,
    event_type: &str,
    json: &[u8],
) -> Result<(), RecordError> {
    let type_len =
        u16::try_from(event_type.len()).map_err(|_| RecordError::TypeTooLong(event_type.len()))?;
    buf.reserve(HEADER_LEN + event_type.len() + json.len());
    buf.put_u8(VERSION);
    buf.put_u16(type_len);
    buf.put_slice(event_type.as_bytes());
    buf.put_slice(json);
    Ok(())
}

/// Bytes [`try_encode_into`] appends.
pub fn encoded_len(event_type: &str, json: &[u8]) -> usize {
    HEADER_LEN + event_type.len() + json.len()
}

/// Returns `(event_type, json)`.
pub fn decode(buf: &[u8]) -> Result<(&str, &[u8]), RecordError> {
    let (&version, rest) = buf.split_first().ok_or(RecordError::Truncated)?;
    if version != VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(RecordError::Truncated)?;
    let type_len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < type_len {
        return Err(RecordError::Truncated);
    }
    let (event_type, json) = rest.split_at(type_len);
    let event_type = std::str::from_utf8(event_type).map_err(|_| RecordError::BadType)?;
    Ok((event_type, json))
}

/// The log's idempotency key of an event: `source`, a NUL, `id` (CloudEvents says the
/// pair identifies an event). Every producer — HTTP, Kafka, NATS — uses this one key, so
/// the same event arriving twice, by any path, is stored once within the dedup window.
pub fn dedup_key(source: &str, id: &str) -> Bytes {
    let mut key = BytesMut::with_capacity(source.len() + id.len() + 1);
    key.put_slice(source.as_bytes());
    key.put_u8(0);
    key.put_slice(id.as_bytes());
    key.freeze()
}

/// [`dedup_key`] appended to `buf` (see [`try_encode_into`]).
pub fn dedup_key_into(buf: &mut BytesMut, source: &str, id: &str) {
    buf.reserve(dedup_key_len(source, id));
    buf.put_slice(source.as_bytes());
    buf.put_u8(0);
    buf.put_slice(id.as_bytes());
}

/// Bytes [`dedup_key_into`] appends.
pub fn dedup_key_len(source: &str, id: &str) -> usize {
    source.len() + id.len() + 1
}

pub fn peek_type(buf: &[u8]) -> Result<&str, RecordError> {
    decode(buf).map(|(t, _)| t)
}

/// [`decode`] for a shared buffer: the JSON comes back as a slice of `buf`, so it can
/// be handed to subscribers without copying.
pub fn decode_bytes(buf: &Bytes) -> Result<(&str, Bytes), RecordError> {
    let (event_type, json) = decode(buf)?;
    Ok((event_type, buf.slice_ref(json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn into_variants_match_and_share_one_buffer() {
        let mut buf = BytesMut::new();
        try_encode_into(&mut buf, "greeting", b"{}").unwrap();
        assert_eq!(buf.len(), encoded_len("greeting", b"{}"));
        let first = buf.split().freeze();
        try_encode_into(&mut buf, "t", b"{\"a\":1}").unwrap();
        let second = buf.split().freeze();
        assert_eq!(first, encode("greeting", b"{}"));
        assert_eq!(second, encode("t", b"{\"a\":1}"));
        let long = "x".repeat(MAX_TYPE_LEN + 1);
        assert_eq!(
            try_encode_into(&mut buf, &long, b"{}"),
            Err(RecordError::TypeTooLong(MAX_TYPE_LEN + 1))
        );
        assert!(buf.is_empty(), "nothing written on error");
        dedup_key_into(&mut buf, "/src", "id-1");
        assert_eq!(buf.len(), dedup_key_len("/src", "id-1"));
        assert_eq!(buf.split().freeze(), dedup_key("/src", "id-1"));
    }

    #[test]
    fn layout() {
        let rec = encode("greeting", b"{}");
        assert_eq!(rec.as_ref(), b"\x01\x00\x08greeting{}");
        assert_eq!(decode(&rec).unwrap(), ("greeting", b"{}".as_slice()));
        assert_eq!(peek_type(&rec).unwrap(), "greeting");
    }

    #[test]
    fn empty_type_and_json() {
        let rec = encode("", b"");
        assert_eq!(rec.as_ref(), b"\x01\x00\x00");
        assert_eq!(decode(&rec).unwrap(), ("", b"".as_slice()));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode(b""), Err(RecordError::Truncated));
        assert_eq!(decode(b"\x01"), Err(RecordError::Truncated));
        assert_eq!(decode(b"\x01\x00"), Err(RecordError::Truncated));
        assert_eq!(decode(b"\x01\x00\x05abcd"), Err(RecordError::Truncated));
        assert_eq!(decode(b"\x02\x00\x00"), Err(RecordError::UnknownVersion(2)));
        assert_eq!(decode(b"\x01\x00\x01\xff{}"), Err(RecordError::BadType));
    }

    #[test]
    fn too_long_type() {
        let long = "x".repeat(MAX_TYPE_LEN + 1);
        assert_eq!(
            try_encode(&long, b"{}"),
            Err(RecordError::TypeTooLong(MAX_TYPE_LEN + 1))
        );
        let max = "x".repeat(MAX_TYPE_LEN);
        let rec = try_encode(&max, b"{}").unwrap();
        assert_eq!(decode(&rec).unwrap(), (max.as_str(), b"{}".as_slice()));
    }

    #[test]
    fn decode_bytes_shares_the_buffer() {
        let rec = encode("t", b"[1]");
        let (t, json) = decode_bytes(&rec).unwrap();
        assert_eq!((t, json.as_ref()), ("t", b"[1]".as_slice()));
    }

    proptest! {
        #[test]
        fn round_trip(event_type in ".{0,40}", json in proptest::collection::vec(any::<u8>(), 0..64)) {
            let rec = encode(&event_type, &json);
            prop_assert_eq!(decode(&rec).unwrap(), (event_type.as_str(), json.as_slice()));
        }

        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&buf);
        }
    }
}
