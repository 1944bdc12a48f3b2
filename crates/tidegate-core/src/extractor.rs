//! The extractor config (`EXTRACTORS`): per event type, the fields a subscription may
//! constrain, where each is found in an event (`event.json_pointer`) and in a JWT
//! (`jwt.json_pointer`).
//!
//! Parsed once at startup and shared read-only: subscriptions are validated against it
//! ([`crate::subscription::parse`]), the index resolves event fields through it
//! ([`Extractors::event_value`]), and JWT claims turn into implicit subscriptions
//! through it ([`Extractors::infer_from_claims`]). Parsing is strict — unknown keys and
//! malformed pointers are rejected — because a typo here silently changes who receives
//! which events.
use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::subscription::{value_key, Constraint, Subscription};

#[derive(Debug, Clone, PartialEq)]
pub struct FieldExtractor {
    pub name: String,
    pub stable_field_index: u32,
    pub event_pointer: Option<String>,
    pub jwt_pointer: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extractors {
    /// event type → fields sorted by `stable_field_index`.
    types: HashMap<String, Vec<FieldExtractor>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtractorError {
    #[error("extractor config is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("extractor config: {0}")]
    Invalid(String),
}

// === impl Extractors ===

impl Extractors {
    pub fn parse(json: &str) -> Result<Extractors, ExtractorError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| ExtractorError::InvalidJson(e.to_string()))?;
        let Value::Object(types) = value else {
            return Err(invalid(
                "the top level must be an object mapping event types to fields".into(),
            ));
        };
        let mut parsed = HashMap::with_capacity(types.len());
        for (event_type, fields) in types {
            if event_type.is_empty() {
                return Err(invalid("an event type name is empty".into()));
            }
            let Value::Object(fields) = fields else {
                return Err(invalid(format!(
                    "event type `{event_type}`: must be an object mapping field names to extractors"
                )));
            };
            let mut list = Vec::with_capacity(fields.len());
            for (name, spec) in fields {
                list.push(parse_field(&event_type, name, spec)?);
            }
            list.sort_by_key(|f| f.stable_field_index);
            if let Some(pair) = list
                .windows(2)
                .find(|w| w[0].stable_field_index == w[1].stable_field_index)
            {
                return Err(invalid(format!(
                    "event type `{event_type}`: fields `{}` and `{}` share stable_field_index {}",
                    pair[0].name, pair[1].name, pair[0].stable_field_index
                )));
            }
            parsed.insert(event_type, list);
        }
        Ok(Extractors { types: parsed })
    }

    pub fn fields(&self, event_type: &str) -> &[FieldExtractor] {
        self.types.get(event_type).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn field(&self, event_type: &str, field: &str) -> Option<&FieldExtractor> {
        self.fields(event_type).iter().find(|f| f.name == field)
    }

    /// Whether the config declares `event_type` at all.
    pub fn has_type(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// Declared event types, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.types.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// The value of `field` in `event` (the event's JSON object), if declared and present.
    pub fn event_value<'v>(
        &self,
        event_type: &str,
        field: &str,
        event: &'v Value,
    ) -> Option<&'v Value> {
        let pointer = self.field(event_type, field)?.event_pointer.as_deref()?;
        event.pointer(pointer)
    }

    /// JWT-inferred subscriptions: for each event type, the fields whose `jwt.json_pointer`
    /// resolves in `claims` form one AND-constraint.
    ///
    /// Types come out sorted by name and constraint pairs by field name, so the same
    /// token always yields the same subscriptions.
    pub fn infer_from_claims(&self, claims: &Value) -> Vec<Subscription> {
        self.event_types()
            .into_iter()
            .filter_map(|event_type| {
                let mut pairs: Vec<(String, String)> = self
                    .fields(event_type)
                    .iter()
                    .filter_map(|f| {
                        let value = claims.pointer(f.jwt_pointer.as_deref()?)?;
                        Some((f.name.clone(), value_key(value)))
                    })
                    .collect();
                if pairs.is_empty() {
                    return None;
                }
                pairs.sort();
                Some(Subscription {
                    event_type: event_type.to_string(),
                    one_of: vec![Constraint(pairs)],
                })
            })
            .collect()
    }
}

fn invalid(reason: String) -> ExtractorError {
    ExtractorError::Invalid(reason)
}

fn parse_field(
    event_type: &str,
    name: String,
    spec: Value,
) -> Result<FieldExtractor, ExtractorError> {
    let at = |what: &str| invalid(format!("event type `{event_type}`, field `{name}`: {what}"));
    if name.is_empty() {
        return Err(invalid(format!(
            "event type `{event_type}`: a field name is empty"
        )));
    }
    let Value::Object(spec) = spec else {
        return Err(at("must be an object"));
    };
    let mut index = None;
    let mut event_pointer = None;
    let mut jwt_pointer = None;
    for (key, value) in spec {
        match key.as_str() {
            "stable_field_index" => {
                let n = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| at("`stable_field_index` must be a non-negative integer"))?;
                index = Some(n);
            }
            "event" => {
                event_pointer =
                    parse_source(&value).map_err(|why| at(&format!("`event`: {why}")))?
            }
            "jwt" => {
                jwt_pointer = parse_source(&value).map_err(|why| at(&format!("`jwt`: {why}")))?
            }
            other => return Err(at(&format!("unknown key `{other}`"))),
        }
    }
    let stable_field_index = index.ok_or_else(|| at("`stable_field_index` is missing"))?;
    Ok(FieldExtractor {
        name,
        stable_field_index,
        event_pointer,
        jwt_pointer,
    })
}

/// `{"json_pointer": "/a/b"}`; `null` is treated as absent.
fn parse_source(value: &Value) -> Result<Option<String>, String> {
    let spec: &Map<String, Value> = match value {
        Value::Null => return Ok(None),
        Value::Object(spec) => spec,
        _ => return Err("must be an object with a `json_pointer`".into()),
    };
    if let Some(other) = spec.keys().find(|k| k.as_str() != "json_pointer") {
        return Err(format!("unknown key `{other}`"));
    }
    match spec.get("json_pointer") {
        Some(Value::String(p)) if p.is_empty() || p.starts_with('/') => Ok(Some(p.clone())),
        Some(Value::String(p)) => Err(format!("json_pointer `{p}` must start with `/`")),
        Some(_) => Err("json_pointer must be a string".into()),
        None => Err("`json_pointer` is missing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RIG_EXAMPLE: &str = r#"{
        "greeting": {
            "name": {
                "stable_field_index": 1,
                "event": {"json_pointer": "/data/name"},
                "jwt": {"json_pointer": "/username"}
            },
            "lang": {
                "stable_field_index": 0,
                "event": {"json_pointer": "/data/lang"}
            }
        },
        "order": {
            "customer": {"stable_field_index": 0, "jwt": {"json_pointer": "/sub"}, "event": {"json_pointer": "/data/customer/id"}}
        },
        "empty": {}
    }"#;

    fn invalid_reason(json: Value) -> String {
        match Extractors::parse(&json.to_string()) {
            Err(ExtractorError::Invalid(r)) => r,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn parses_rig_example_sorted_by_index() {
        let ex = Extractors::parse(RIG_EXAMPLE).unwrap();
        let names: Vec<_> = ex
            .fields("greeting")
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["lang", "name"]);
        assert_eq!(
            ex.field("greeting", "name").unwrap(),
            &FieldExtractor {
                name: "name".into(),
                stable_field_index: 1,
                event_pointer: Some("/data/name".into()),
                jwt_pointer: Some("/username".into()),
            }
        );
        assert!(ex.field("greeting", "lang").unwrap().jwt_pointer.is_none());
        assert!(ex.fields("empty").is_empty());
        assert!(ex.has_type("empty"));
        assert!(ex.fields("unknown").is_empty());
        assert_eq!(ex.event_types(), ["empty", "greeting", "order"]);
    }

    #[test]
    fn event_value_resolves_pointer() {
        let ex = Extractors::parse(RIG_EXAMPLE).unwrap();
        let ev = json!({"type":"order","data":{"customer":{"id":7}}});
        assert_eq!(ex.event_value("order", "customer", &ev), Some(&json!(7)));
        assert_eq!(ex.event_value("order", "other", &ev), None);
        assert_eq!(ex.event_value("greeting", "name", &ev), None);
        assert_eq!(ex.event_value("nope", "customer", &ev), None);
    }

    #[test]
    fn event_value_without_event_pointer_is_none() {
        let ex = Extractors::parse(
            r#"{"t":{"f":{"stable_field_index":0,"jwt":{"json_pointer":"/sub"}}}}"#,
        )
        .unwrap();
        assert_eq!(ex.event_value("t", "f", &json!({"sub": 1})), None);
    }

    #[test]
    fn empty_pointer_is_the_whole_document() {
        let ex = Extractors::parse(
            r#"{"t":{"f":{"stable_field_index":0,"event":{"json_pointer":""}}}}"#,
        )
        .unwrap();
        assert_eq!(ex.event_value("t", "f", &json!(3)), Some(&json!(3)));
    }

    #[test]
    fn infer_from_claims_builds_and_constraints() {
        let ex = Extractors::parse(RIG_EXAMPLE).unwrap();
        let subs = ex.infer_from_claims(&json!({"username":"john","sub":"u1"}));
        assert_eq!(
            subs,
            vec![
                Subscription {
                    event_type: "greeting".into(),
                    one_of: vec![Constraint(vec![("name".into(), "\"john\"".into())])],
                },
                Subscription {
                    event_type: "order".into(),
                    one_of: vec![Constraint(vec![("customer".into(), "\"u1\"".into())])],
                },
            ]
        );
        assert!(ex.infer_from_claims(&json!({"other": 1})).is_empty());
    }

    #[test]
    fn infer_from_claims_sorts_pairs_by_field_name() {
        let ex = Extractors::parse(
            r#"{"t":{
                "zeta":{"stable_field_index":0,"jwt":{"json_pointer":"/z"}},
                "alpha":{"stable_field_index":1,"jwt":{"json_pointer":"/a"}},
                "mid":{"stable_field_index":2,"jwt":{"json_pointer":"/missing"}}}}"#,
        )
        .unwrap();
        let subs = ex.infer_from_claims(&json!({"z": 1, "a": [true]}));
        assert_eq!(
            subs[0].one_of,
            vec![Constraint(vec![
                ("alpha".into(), "[true]".into()),
                ("zeta".into(), "1".into())
            ])]
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Extractors::parse("{"),
            Err(ExtractorError::InvalidJson(_))
        ));
        assert!(invalid_reason(json!([])).contains("top level"));
        assert!(invalid_reason(json!({"": {}})).contains("empty"));
        assert!(invalid_reason(json!({"t": 1})).contains("event type `t`"));
        let cases = [
            (json!(1), "must be an object"),
            (json!({}), "`stable_field_index` is missing"),
            (json!({"stable_field_index": -1}), "non-negative integer"),
            (json!({"stable_field_index": 1.5}), "non-negative integer"),
            (json!({"stable_field_index": "1"}), "non-negative integer"),
            (
                json!({"stable_field_index": 5_000_000_000u64}),
                "non-negative integer",
            ),
            (
                json!({"stable_field_index": 0, "extra": 1}),
                "unknown key `extra`",
            ),
            (
                json!({"stable_field_index": 0, "event": "/data"}),
                "`event`: must be an object",
            ),
            (
                json!({"stable_field_index": 0, "event": {}}),
                "`json_pointer` is missing",
            ),
            (
                json!({"stable_field_index": 0, "event": {"json_pointer": 1}}),
                "must be a string",
            ),
            (
                json!({"stable_field_index": 0, "jwt": {"json_pointer": "sub"}}),
                "`jwt`: json_pointer `sub` must start with `/`",
            ),
            (
                json!({"stable_field_index": 0, "jwt": {"json_pointer": "/sub", "x": 1}}),
                "unknown key `x`",
            ),
        ];
        for (spec, expected) in cases {
            let reason = invalid_reason(json!({"t": {"f": spec}}));
            assert!(reason.contains("event type `t`, field `f`"), "{reason}");
            assert!(reason.contains(expected), "{reason} !~ {expected}");
        }
        assert!(
            invalid_reason(json!({"t": {"": {"stable_field_index": 0}}}))
                .contains("field name is empty")
        );
        let reason = invalid_reason(
            json!({"t": {"a": {"stable_field_index": 3}, "b": {"stable_field_index": 3}}}),
        );
        assert!(reason.contains("share stable_field_index 3"), "{reason}");
    }

    #[test]
    fn null_sources_are_absent() {
        let ex =
            Extractors::parse(r#"{"t":{"f":{"stable_field_index":0,"event":null,"jwt":null}}}"#)
                .unwrap();
        assert_eq!(ex.field("t", "f").unwrap().event_pointer, None);
    }
}
