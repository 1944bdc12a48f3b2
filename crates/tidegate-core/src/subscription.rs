//! Subscriptions: an event type and `oneOf` constraints (OR of AND-objects, exact match).
use serde_json::Value;

use crate::extractor::Extractors;

/// One AND-object of a `oneOf`: field → required value, sorted by field name, unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Constraint(pub Vec<(String, String)>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    pub event_type: String,
    /// Empty: every event of the type.
    pub one_of: Vec<Constraint>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_subscriptions: usize,
    pub max_constraints: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubscriptionError {
    #[error("subscriptions are not valid JSON: {0}")]
    InvalidJson(String),
    #[error("subscription {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("subscription {index}: field `{field}` is not declared for event type `{event_type}` in the extractor config")]
    UndeclaredField { index: usize, event_type: String, field: String },
    #[error("too many subscriptions ({0}, limit {1})")]
    TooMany(usize, usize),
    #[error("subscription {0}: too many constraints ({1}, limit {2})")]
    TooManyConstraints(usize, usize, usize),
}

impl Subscription {
    /// `{"eventType":…,"oneOf":[{…}]}` as RIG sends it in `rig.subscriptions_set`.
    pub fn to_json(&self) -> Value {
        todo!()
    }
}

/// Parses a JSON array of subscriptions, or an object `{"subscriptions":[…]}`; accepts
/// `eventType`/`event_type` and `oneOf`/`one_of`. Validates every constraint field
/// against `extractors` and the limits.
pub fn parse(json: &[u8], extractors: &Extractors, limits: Limits) -> Result<Vec<Subscription>, SubscriptionError> {
    let _ = (json, extractors, limits);
    todo!()
}

/// Canonical string form of a constraint value, shared by the index and the matcher.
/// Compact JSON, so `"1"` and `1` stay different values (exact match).
pub fn value_key(v: &Value) -> String {
    v.to_string()
}
