//! CloudEvents in, one normalised [`Event`] out.
use bytes::Bytes;
use serde_json::{Map, Value};

/// The CloudEvents version an event arrived in. Tidegate delivers an event in the
/// version it was published in (RIG frontends read 0.1/0.2 attribute names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecVersion {
    V01,
    V02,
    V10,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub specversion: SpecVersion,
    pub id: String,
    pub source: String,
    pub event_type: String,
    /// All attributes (including `data`/`data_base64` and extensions) with the
    /// attribute names of `specversion`, key order preserved.
    pub attributes: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("not a CloudEvent: {0}")]
    NotACloudEvent(String),
    #[error("missing required attribute `{0}`")]
    MissingAttribute(&'static str),
    #[error("attribute `{0}` is invalid: {1}")]
    InvalidAttribute(String, String),
    #[error("unsupported specversion `{0}`")]
    UnsupportedVersion(String),
    #[error("event {index} in batch: {source}")]
    InBatch { index: usize, source: Box<EventError> },
    #[error("batch is empty")]
    EmptyBatch,
}

impl Event {
    /// Compact JSON object of [`Event::attributes`].
    pub fn to_json(&self) -> Bytes {
        todo!()
    }
}

/// Structured mode: one JSON object. Detects 0.1 (`cloudEventsVersion`), 0.2 and 1.0 (`specversion`).
pub fn parse_structured(body: &[u8]) -> Result<Event, EventError> {
    let _ = body;
    todo!()
}

/// Batch mode (`application/cloudevents-batch+json`): a JSON array of structured events.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, EventError> {
    let _ = body;
    todo!()
}

/// Binary mode: attributes in headers named `<prefix><attr>` (`ce-` for HTTP, `ce_` for
/// Kafka), percent-decoded; `content_type` becomes `datacontenttype`; the body is the data.
pub fn parse_binary<'a>(
    prefix: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Event, EventError> {
    let _ = (prefix, headers.into_iter().count(), content_type, body);
    todo!()
}

/// Builds a gateway-originated 1.0 event (`rig.connection.create`, …).
pub fn gateway_event(event_type: &str, id: &str, time_rfc3339: &str, data: Value) -> Event {
    let _ = (event_type, id, time_rfc3339, data);
    todo!()
}
