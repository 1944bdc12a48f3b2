//! CloudEvents in, one normalised [`Event`] out.
//!
//! Every publishing path (HTTP structured, binary and batch; Kafka; NATS) ends in
//! [`Event`]: the three attributes the gateway routes on (`id`, `source`, type) pulled
//! out, and the full attribute map kept exactly as sent — names, order and
//! extensions — so a frontend receives the event in the CloudEvents version it was
//! published in. RIG frontends read 0.1/0.2 names (`eventType`, `eventID`), newer
//! ones read 1.0 names; translating would break one of them.
//!
//! Validation is deliberately light: required attributes must be non-empty strings,
//! and only rules the spec states plainly are enforced (string-typed `time`, 1.0
//! attribute naming, `data` xor `data_base64`). Anything stricter would reject events
//! RIG accepted.
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value};

mod fast;
pub use fast::{parse_batch_ingest, parse_structured_ingest, IngestEvent};

/// The CloudEvents version an event arrived in. Tidegate delivers an event in the
/// version it was published in (RIG frontends read 0.1/0.2 attribute names).
///
/// 0.3 is accepted too and reported as [`SpecVersion::V10`]: its required attributes
/// and naming rules are those of 1.0, and its attributes are kept as sent anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Names the attribute as spelled in the event's version (`eventID` in 0.1, `id`
    /// in 0.2/1.0).
    #[error("missing required attribute `{0}`")]
    MissingAttribute(&'static str),
    #[error("attribute `{0}` is invalid: {1}")]
    InvalidAttribute(String, String),
    #[error("unsupported specversion `{0}`")]
    UnsupportedVersion(String),
    #[error("event {index} in batch: {source}")]
    InBatch {
        index: usize,
        source: Box<EventError>,
    },
    #[error("batch is empty")]
    EmptyBatch,
}

// === impl Event ===

impl Event {
    /// Compact JSON object of [`Event::attributes`].
    pub fn to_json(&self) -> Bytes {
        // Serialising a `Map<String, Value>` cannot fail: keys are strings and every
        // value is plain JSON. The fallback only exists to avoid a panic path.
        match serde_json::to_vec(&self.attributes) {
            Ok(json) => Bytes::from(json),
            Err(_) => Bytes::from_static(b"{}"),
        }
    }

    /// The event's `data` attribute, if any (`data_base64` is not decoded).
    pub fn data(&self) -> Option<&Value> {
        self.attributes.get("data")
    }
}

/// Attribute names of the routing attributes, per version.
struct Names {
    version: &'static str,
    id: &'static str,
    source: &'static str,
    event_type: &'static str,
}

const NAMES_V01: Names = Names {
    version: "cloudEventsVersion",
    id: "eventID",
    source: "source",
    event_type: "eventType",
};

const NAMES_V02_V10: Names = Names {
    version: "specversion",
    id: "id",
    source: "source",
    event_type: "type",
};

/// Structured mode: one JSON object. Detects 0.1 (`cloudEventsVersion`), 0.2 and 1.0 (`specversion`).
pub fn parse_structured(body: &[u8]) -> Result<Event, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::InvalidJson(e.to_string()))?;
    from_value(value)
}

/// Batch mode (`application/cloudevents-batch+json`): a JSON array of structured events.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Event>, EventError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::InvalidJson(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(EventError::NotACloudEvent(format!(
            "a batch must be a JSON array, got {}",
            json_kind(&value)
        )));
    };
    if items.is_empty() {
        return Err(EventError::EmptyBatch);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            from_value(item).map_err(|e| EventError::InBatch {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

/// Binary mode: attributes in headers named `<prefix><attr>` (`ce-` for HTTP, `ce_` for
/// Kafka), percent-decoded; `content_type` becomes `datacontenttype`; the body is the data.
///
/// The prefix matches case-insensitively and attribute names are lowercased, because
/// HTTP header names are case-insensitive and 1.0 names are lowercase. Invalid percent
/// sequences are kept literally rather than rejected: the Kafka binding does not
/// percent-encode, and a literal `%` in a Kafka header must survive.
///
/// The body becomes `data`: parsed JSON for a JSON content type (or no content type
/// and a body that parses as JSON), a string for UTF-8 text, and otherwise base64 in
/// `data_base64` (1.0), or base64 in `data` (0.2, and 0.3 with
/// `datacontentencoding: base64`). An empty body means no data.
pub fn parse_binary<'a>(
    prefix: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Event, EventError> {
    let mut attributes = Map::new();
    for (name, raw) in headers {
        let Some(attr) = strip_prefix_ignore_case(name, prefix) else {
            continue;
        };
        let attr = attr.to_ascii_lowercase();
        if attr.is_empty() {
            return Err(EventError::InvalidAttribute(
                name.to_string(),
                "header has no attribute name after the prefix".into(),
            ));
        }
        if attr == "data" || attr == "data_base64" {
            return Err(EventError::InvalidAttribute(
                attr,
                "in binary mode the data is the body, not a header".into(),
            ));
        }
        let decoded = String::from_utf8(percent_decode(raw)).map_err(|_| {
            EventError::InvalidAttribute(
                attr.clone(),
                "value is not UTF-8 after percent-decoding".into(),
            )
        })?;
        if attributes.contains_key(&attr) {
            return Err(EventError::InvalidAttribute(
                attr,
                "given more than once".into(),
            ));
        }
        attributes.insert(attr, Value::String(decoded));
    }

    let raw_version = match attributes.get("specversion") {
        Some(Value::String(v)) => v.clone(),
        _ => return Err(EventError::MissingAttribute("specversion")),
    };
    let (version, content_type_attr) = match raw_version.as_str() {
        "1.0" | "0.3" => (SpecVersion::V10, "datacontenttype"),
        "0.2" => (SpecVersion::V02, "contenttype"),
        other => return Err(EventError::UnsupportedVersion(other.to_string())),
    };
    if let Some(ct) = content_type {
        attributes.insert(content_type_attr.to_string(), Value::String(ct.to_string()));
    }

    match body_data(content_type, body)? {
        None => {}
        Some(BodyData::Json(v)) => {
            attributes.insert("data".into(), v);
        }
        Some(BodyData::Text(s)) => {
            attributes.insert("data".into(), Value::String(s));
        }
        Some(BodyData::Binary(bytes)) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            match (version, raw_version.as_str()) {
                (SpecVersion::V10, "1.0") => {
                    attributes.insert("data_base64".into(), Value::String(encoded));
                }
                (SpecVersion::V10, _) => {
                    // 0.3 has no `data_base64`; it marks base64 data with an attribute.
                    attributes.insert("datacontentencoding".into(), Value::String("base64".into()));
                    attributes.insert("data".into(), Value::String(encoded));
                }
                _ => {
                    attributes.insert("data".into(), Value::String(encoded));
                }
            }
        }
    }
    from_map(attributes)
}

/// Builds a gateway-originated 1.0 event (`rig.connection.create`, …).
///
/// The source is `rig`, as RIG sent it, so frontends filtering on it keep working.
pub fn gateway_event(event_type: &str, id: &str, time_rfc3339: &str, data: Value) -> Event {
    let mut attributes = Map::new();
    attributes.insert("specversion".into(), Value::String("1.0".into()));
    attributes.insert("id".into(), Value::String(id.to_string()));
    attributes.insert("source".into(), Value::String(GATEWAY_SOURCE.into()));
    attributes.insert("type".into(), Value::String(event_type.to_string()));
    attributes.insert("time".into(), Value::String(time_rfc3339.to_string()));
    attributes.insert("data".into(), data);
    Event {
        specversion: SpecVersion::V10,
        id: id.to_string(),
        source: GATEWAY_SOURCE.to_string(),
        event_type: event_type.to_string(),
        attributes,
    }
}

/// `source` of events the gateway itself emits.
pub const GATEWAY_SOURCE: &str = "rig";

// === parsing helpers ===

fn from_value(value: Value) -> Result<Event, EventError> {
    match value {
        Value::Object(map) => from_map(map),
        other => Err(EventError::NotACloudEvent(format!(
            "expected a JSON object, got {}",
            json_kind(&other)
        ))),
    }
}

fn from_map(attributes: Map<String, Value>) -> Result<Event, EventError> {
    let routing = validate(&attributes)?;
    Ok(Event {
        specversion: routing.specversion,
        id: routing.id,
        source: routing.source,
        event_type: routing.event_type,
        attributes,
    })
}

/// What validation pulls out of an event: its version and routing attributes.
pub(crate) struct Routing {
    pub specversion: SpecVersion,
    pub id: String,
    pub source: String,
    pub event_type: String,
}

/// One attribute as validation sees it: a string, or the kind of another JSON value
/// (as [`json_kind`] names it).
#[derive(Clone, Copy)]
pub(crate) enum Attr<'a> {
    Str(&'a str),
    Other(&'static str),
}

/// Read access to an event's top-level attributes, so that one set of rules validates
/// both a parsed [`Map`] and the borrowed members of the fast path ([`fast`]).
pub(crate) trait Attrs {
    fn attr(&self, name: &str) -> Option<Attr<'_>>;
    fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }
    /// The first attribute name, in order, for which `bad` holds.
    fn find_name(&self, bad: &dyn Fn(&str) -> bool) -> Option<String>;
}

impl Attrs for Map<String, Value> {
    fn attr(&self, name: &str) -> Option<Attr<'_>> {
        self.get(name).map(|v| match v {
            Value::String(s) => Attr::Str(s),
            other => Attr::Other(json_kind(other)),
        })
    }

    fn find_name(&self, bad: &dyn Fn(&str) -> bool) -> Option<String> {
        self.keys().find(|k| bad(k)).cloned()
    }
}

/// The CloudEvents rules of this module (see the module docs), in a fixed order so the
/// first violation reported does not depend on how the event was parsed.
pub(crate) fn validate(attributes: &dyn Attrs) -> Result<Routing, EventError> {
    let specversion = detect_version(attributes)?;
    let names = match specversion {
        SpecVersion::V01 => &NAMES_V01,
        SpecVersion::V02 | SpecVersion::V10 => &NAMES_V02_V10,
    };
    // The version attribute was checked by `detect_version`; this keeps the
    // "non-empty string" rule in one place for all four.
    required_str(attributes, names.version)?;
    let id = required_str(attributes, names.id)?;
    let source = required_str(attributes, names.source)?;
    let event_type = required_str(attributes, names.event_type)?;
    validate_optional(specversion, attributes)?;
    Ok(Routing {
        specversion,
        id,
        source,
        event_type,
    })
}

fn detect_version(attributes: &dyn Attrs) -> Result<SpecVersion, EventError> {
    if let Some(v) = attributes.attr("specversion") {
        let Attr::Str(v) = v else {
            return Err(EventError::InvalidAttribute(
                "specversion".into(),
                "must be a string".into(),
            ));
        };
        return match v {
            "1.0" | "0.3" => Ok(SpecVersion::V10),
            "0.2" => Ok(SpecVersion::V02),
            other => Err(EventError::UnsupportedVersion(other.to_string())),
        };
    }
    if let Some(v) = attributes.attr("cloudEventsVersion") {
        let Attr::Str(v) = v else {
            return Err(EventError::InvalidAttribute(
                "cloudEventsVersion".into(),
                "must be a string".into(),
            ));
        };
        return match v {
            "0.1" => Ok(SpecVersion::V01),
            other => Err(EventError::UnsupportedVersion(other.to_string())),
        };
    }
    Err(EventError::NotACloudEvent(
        "neither `specversion` (0.2, 1.0) nor `cloudEventsVersion` (0.1) is present".into(),
    ))
}

fn required_str(attributes: &dyn Attrs, name: &'static str) -> Result<String, EventError> {
    match attributes.attr(name) {
        None => Err(EventError::MissingAttribute(name)),
        Some(Attr::Str(s)) if !s.is_empty() => Ok(s.to_string()),
        Some(Attr::Str(_)) => Err(EventError::InvalidAttribute(
            name.into(),
            "must not be empty".into(),
        )),
        Some(Attr::Other(kind)) => Err(EventError::InvalidAttribute(
            name.into(),
            format!("must be a string, got {kind}"),
        )),
    }
}

fn optional_str(attributes: &dyn Attrs, name: &str) -> Result<(), EventError> {
    match attributes.attr(name) {
        None | Some(Attr::Str(_)) => Ok(()),
        Some(Attr::Other(kind)) => Err(EventError::InvalidAttribute(
            name.into(),
            format!("must be a string, got {kind}"),
        )),
    }
}

fn validate_optional(version: SpecVersion, attributes: &dyn Attrs) -> Result<(), EventError> {
    match version {
        SpecVersion::V01 => {
            for name in ["eventTime", "eventTypeVersion", "schemaURL", "contentType"] {
                optional_str(attributes, name)?;
            }
            match attributes.attr("extensions") {
                None | Some(Attr::Other("an object")) => {}
                Some(other) => {
                    let kind = match other {
                        Attr::Str(_) => "a string",
                        Attr::Other(kind) => kind,
                    };
                    return Err(EventError::InvalidAttribute(
                        "extensions".into(),
                        format!("must be an object, got {kind}"),
                    ));
                }
            }
        }
        SpecVersion::V02 => {
            for name in ["time", "contenttype", "schemaurl"] {
                optional_str(attributes, name)?;
            }
        }
        SpecVersion::V10 => {
            for name in [
                "time",
                "datacontenttype",
                "dataschema",
                "subject",
                "schemaurl",
                "datacontentencoding",
            ] {
                optional_str(attributes, name)?;
            }
            // `data_base64` is a member of the JSON format, not an attribute, so the
            // naming rule does not apply to it.
            if let Some(bad) =
                attributes.find_name(&|k| k != "data_base64" && !is_v10_attribute_name(k))
            {
                return Err(EventError::InvalidAttribute(
                    bad,
                    "attribute names must consist of lowercase letters a-z and digits 0-9".into(),
                ));
            }
            if let Some(b64) = attributes.attr("data_base64") {
                if attributes.has("data") {
                    return Err(EventError::InvalidAttribute(
                        "data_base64".into(),
                        "`data` and `data_base64` must not both be present".into(),
                    ));
                }
                let b64 = match b64 {
                    Attr::Str(s) => s,
                    Attr::Other(kind) => {
                        return Err(EventError::InvalidAttribute(
                            "data_base64".into(),
                            format!("must be a string, got {kind}"),
                        ))
                    }
                };
                if base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .is_err()
                {
                    return Err(EventError::InvalidAttribute(
                        "data_base64".into(),
                        "is not valid base64".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn is_v10_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// === binary-mode helpers ===

fn strip_prefix_ignore_case<'n>(name: &'n str, prefix: &str) -> Option<&'n str> {
    // `get` rather than slicing: a multi-byte character at the boundary must not panic.
    let head = name.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        name.get(prefix.len()..)
    } else {
        None
    }
}

/// CloudEvents HTTP binding §3.1.3.2: `%XX` sequences decode to the byte `XX`.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            if let Some(&[hi, lo]) = raw.get(i + 1..i + 3) {
                if let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

enum BodyData {
    Json(Value),
    Text(String),
    Binary(Vec<u8>),
}

fn body_data(content_type: Option<&str>, body: &[u8]) -> Result<Option<BodyData>, EventError> {
    if body.is_empty() {
        return Ok(None);
    }
    let media_type = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let data = match media_type.as_deref() {
        Some(mt) if is_json_media_type(mt) => {
            let v = serde_json::from_slice(body).map_err(|e| {
                EventError::InvalidAttribute(
                    "data".into(),
                    format!("content type is JSON but the body is not: {e}"),
                )
            })?;
            BodyData::Json(v)
        }
        // No content type: JSON if it parses, as RIG's publishers mostly send JSON.
        None => match serde_json::from_slice(body) {
            Ok(v) => BodyData::Json(v),
            Err(_) => text_or_binary(body),
        },
        // Declared binary stays binary even when it happens to be valid UTF-8.
        Some("application/octet-stream") => BodyData::Binary(body.to_vec()),
        Some(_) => text_or_binary(body),
    };
    Ok(Some(data))
}

fn text_or_binary(body: &[u8]) -> BodyData {
    match std::str::from_utf8(body) {
        Ok(s) => BodyData::Text(s.to_string()),
        Err(_) => BodyData::Binary(body.to_vec()),
    }
}

fn is_json_media_type(mt: &str) -> bool {
    mt == "application/json" || mt == "text/json" || mt.ends_with("+json")
}

#[cfg(test)]
mod tests;
