//! The extractor config (`EXTRACTORS`): per event type, the fields a subscription may
//! constrain, where each is found in an event (`event.json_pointer`) and in a JWT
//! (`jwt.json_pointer`).
use serde_json::Value;
use std::collections::HashMap;

use crate::subscription::Subscription;

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

impl Extractors {
    pub fn parse(json: &str) -> Result<Extractors, ExtractorError> {
        let _ = json;
        todo!()
    }
    pub fn fields(&self, event_type: &str) -> &[FieldExtractor] {
        self.types.get(event_type).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn field(&self, event_type: &str, field: &str) -> Option<&FieldExtractor> {
        self.fields(event_type).iter().find(|f| f.name == field)
    }
    /// The value of `field` in `event` (the event's JSON object), if declared and present.
    pub fn event_value<'v>(&self, event_type: &str, field: &str, event: &'v Value) -> Option<&'v Value> {
        let _ = (event_type, field, event);
        todo!()
    }
    /// JWT-inferred subscriptions: for each event type, the fields whose `jwt.json_pointer`
    /// resolves in `claims` form one AND-constraint.
    pub fn infer_from_claims(&self, claims: &Value) -> Vec<Subscription> {
        let _ = claims;
        todo!()
    }
}
