//! Framing of an event inside a log record: `[version u8][type len u16 BE][type][json]`.
//! The hub reads the type with [`peek_type`] and drops events nobody subscribed to
//! before their JSON is parsed.
use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record too short")]
    Truncated,
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    #[error("event type is not UTF-8")]
    BadType,
}

pub fn encode(event_type: &str, json: &[u8]) -> Bytes {
    let _ = (event_type, json);
    todo!()
}

/// Returns `(event_type, json)`.
pub fn decode(buf: &[u8]) -> Result<(&str, &[u8]), RecordError> {
    let _ = buf;
    todo!()
}

pub fn peek_type(buf: &[u8]) -> Result<&str, RecordError> {
    decode(buf).map(|(t, _)| t)
}
