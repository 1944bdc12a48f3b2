//! Broker message → events, shared by the Kafka and NATS sources.
//!
//! - Binary mode when a `<prefix>specversion` header is present (`ce_` for Kafka as
//!   the Kafka protocol binding says, `ce-` for NATS like HTTP; case-insensitive):
//!   attributes from the headers, `content-type` header as the data content type,
//!   the body as data ([`event::parse_binary`]).
//! - Batch mode when `content-type` is `application/cloudevents-batch+json`: a JSON
//!   array of structured events (a Tidegate addition; RIG took single events).
//! - Otherwise structured mode: the body is one CloudEvent JSON object, whatever the
//!   content type says (RIG parsed every body as JSON; backends often send none).
use tidegate_core::event::{self, Event, EventError};

/// The events of one message, or why it holds none.
pub(crate) fn decode<'a, I>(prefix: &str, headers: I, body: &[u8]) -> Result<Vec<Event>, EventError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
{
    let mut binary = false;
    let mut content_type = None;
    for (name, value) in headers.clone() {
        if name.eq_ignore_ascii_case("content-type") {
            content_type = std::str::from_utf8(value).ok();
        } else if name.len() == prefix.len() + "specversion".len()
            && name
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            && name
                .get(prefix.len()..)
                .is_some_and(|a| a.eq_ignore_ascii_case("specversion"))
        {
            binary = true;
        }
    }
    if binary {
        return event::parse_binary(prefix, headers, content_type, body).map(|e| vec![e]);
    }
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|e| e.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/cloudevents-batch+json") {
        return event::parse_batch(body);
    }
    event::parse_structured(body).map(|e| vec![e])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [(&str, &[u8]); 0] = [];

    #[test]
    fn structured_binary_batch() {
        let body =
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"greeting","data":{"a":1}}"#;
        let evs = decode("ce_", NONE, body).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event_type, "greeting");

        let headers: [(&str, &[u8]); 5] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"2"),
            ("ce_source", b"/s"),
            ("ce_type", b"greeting"),
            ("content-type", b"application/json"),
        ];
        let evs = decode("ce_", headers, br#"{"b":2}"#).unwrap();
        assert_eq!(evs[0].id, "2");
        assert_eq!(evs[0].data(), Some(&serde_json::json!({"b":2})));

        let headers: [(&str, &[u8]); 4] = [
            ("Ce-Specversion", b"1.0"),
            ("Ce-Id", b"3"),
            ("Ce-Source", b"/s"),
            ("Ce-Type", b"greeting"),
        ];
        assert_eq!(decode("ce-", headers, b"hello").unwrap()[0].id, "3");

        let batch = format!("[{}]", std::str::from_utf8(body).unwrap());
        let headers: [(&str, &[u8]); 1] = [(
            "Content-Type",
            b"application/cloudevents-batch+json; charset=utf-8",
        )];
        assert_eq!(decode("ce_", headers, batch.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn poison() {
        assert!(matches!(
            decode("ce_", NONE, b"not json"),
            Err(EventError::InvalidJson(_))
        ));
        assert!(decode("ce_", NONE, br#"{"id":"1","source":"/s","type":"t"}"#).is_err());
        // `ce-` headers on a Kafka message are not Kafka's binary mode: structured.
        let headers: [(&str, &[u8]); 1] = [("ce-specversion", b"1.0")];
        assert!(decode("ce_", headers, b"").is_err());
    }
}
