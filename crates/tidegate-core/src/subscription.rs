//! Subscriptions: an event type and `oneOf` constraints (OR of AND-objects, exact match).
//!
//! Frontends send subscriptions as JSON (query parameter or `PUT …/subscriptions`);
//! [`parse`] validates them against the extractor config and the limits and turns each
//! constraint value into its [`value_key`], the form the index and the matcher compare.
//! [`Subscription::to_json`] renders them back for `rig.subscriptions_set`.
//!
//! Parsing is strict where RIG was lenient in a way that widened matches: undeclared
//! fields, empty `oneOf` objects and unknown keys (a misspelt `oneof` would otherwise
//! mean "every event of the type") are rejected.
use serde_json::{Map, Value};
use std::collections::HashSet;

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

impl Default for Limits {
    /// Generous bounds that no real frontend reaches but that keep one request from
    /// occupying the index with millions of entries.
    fn default() -> Self {
        Limits {
            max_subscriptions: 1000,
            max_constraints: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubscriptionError {
    #[error("subscriptions are not valid JSON: {0}")]
    InvalidJson(String),
    #[error("subscriptions must be a JSON array or an object with a `subscriptions` array")]
    NotAList,
    #[error("subscription {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("subscription {index}: field `{field}` is not declared for event type `{event_type}` in the extractor config")]
    UndeclaredField {
        index: usize,
        event_type: String,
        field: String,
    },
    #[error("too many subscriptions ({0}, limit {1})")]
    TooMany(usize, usize),
    #[error("subscription {0}: too many constraints ({1}, limit {2})")]
    TooManyConstraints(usize, usize, usize),
}

// === impl Subscription ===

impl Subscription {
    /// `{"eventType":…,"oneOf":[{…}]}` as RIG sends it in `rig.subscriptions_set`.
    pub fn to_json(&self) -> Value {
        let one_of: Vec<Value> = self
            .one_of
            .iter()
            .map(|c| {
                Value::Object(
                    c.0.iter()
                        .map(|(field, key)| (field.clone(), key_value(key)))
                        .collect(),
                )
            })
            .collect();
        let mut obj = Map::new();
        obj.insert("eventType".into(), Value::String(self.event_type.clone()));
        obj.insert("oneOf".into(), Value::Array(one_of));
        Value::Object(obj)
    }

    /// Every event of `event_type`.
    pub fn all(event_type: impl Into<String>) -> Self {
        Subscription {
            event_type: event_type.into(),
            one_of: Vec::new(),
        }
    }
}

/// The JSON value behind a [`value_key`]. Keys built by hand may not be JSON; they are
/// shown as strings rather than dropped.
fn key_value(key: &str) -> Value {
    serde_json::from_str(key).unwrap_or_else(|_| Value::String(key.to_string()))
}

/// Parses a JSON array of subscriptions, or an object `{"subscriptions":[…]}`; accepts
/// `eventType`/`event_type` and `oneOf`/`one_of`. Validates every constraint field
/// against `extractors` and the limits.
///
/// Exact duplicates (subscriptions, and constraints within one) are dropped, keeping
/// the first occurrence, so the result renders as what was meant.
pub fn parse(
    json: &[u8],
    extractors: &Extractors,
    limits: Limits,
) -> Result<Vec<Subscription>, SubscriptionError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| SubscriptionError::InvalidJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut obj) => match obj.remove("subscriptions") {
            Some(Value::Array(items)) => items,
            _ => return Err(SubscriptionError::NotAList),
        },
        _ => return Err(SubscriptionError::NotAList),
    };
    if items.len() > limits.max_subscriptions {
        return Err(SubscriptionError::TooMany(
            items.len(),
            limits.max_subscriptions,
        ));
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut subs = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let sub = parse_one(index, item, extractors, limits)?;
        if seen.insert(sub.clone()) {
            subs.push(sub);
        }
    }
    Ok(subs)
}

fn parse_one(
    index: usize,
    item: Value,
    extractors: &Extractors,
    limits: Limits,
) -> Result<Subscription, SubscriptionError> {
    let invalid = |reason: String| SubscriptionError::Invalid { index, reason };
    let Value::Object(obj) = item else {
        return Err(invalid("must be an object".into()));
    };
    if let Some(other) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "eventType" | "event_type" | "oneOf" | "one_of"))
    {
        return Err(invalid(format!("unknown key `{other}`")));
    }
    let event_type = match one_key(&obj, "eventType", "event_type").map_err(&invalid)? {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(invalid("`eventType` must not be empty".into())),
        Some(_) => return Err(invalid("`eventType` must be a string".into())),
        None => return Err(invalid("`eventType` is missing".into())),
    };
    let constraints: &[Value] = match one_key(&obj, "oneOf", "one_of").map_err(&invalid)? {
        // `null` reads as "no constraints", as an absent `oneOf` does.
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("`oneOf` must be an array of objects".into())),
    };
    if constraints.len() > limits.max_constraints {
        return Err(SubscriptionError::TooManyConstraints(
            index,
            constraints.len(),
            limits.max_constraints,
        ));
    }
    let mut one_of: Vec<Constraint> = Vec::with_capacity(constraints.len());
    for (i, constraint) in constraints.iter().enumerate() {
        let Value::Object(fields) = constraint else {
            return Err(invalid(format!("`oneOf[{i}]` must be an object")));
        };
        if fields.is_empty() {
            return Err(invalid(format!(
                "`oneOf[{i}]` is empty; it would match every event (omit `oneOf` for that)"
            )));
        }
        let mut pairs = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            if extractors.field(&event_type, field).is_none() {
                return Err(SubscriptionError::UndeclaredField {
                    index,
                    event_type,
                    field: field.clone(),
                });
            }
            pairs.push((field.clone(), value_key(value)));
        }
        pairs.sort();
        let constraint = Constraint(pairs);
        if !one_of.contains(&constraint) {
            one_of.push(constraint);
        }
    }
    Ok(Subscription { event_type, one_of })
}

/// The value under `camel` or `snake`; both at once is ambiguous and rejected.
fn one_key<'m>(
    obj: &'m Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<Option<&'m Value>, String> {
    match (obj.get(camel), obj.get(snake)) {
        (Some(_), Some(_)) => Err(format!("both `{camel}` and `{snake}` are given")),
        (a, b) => Ok(a.or(b)),
    }
}

/// Canonical string form of a constraint value, shared by the index and the matcher.
/// Compact JSON, so `"1"` and `1` stay different values (exact match).
///
/// Object keys are sorted (recursively), because key order is not part of a JSON
/// object's value and serde_json here preserves it. Numbers are compared as written
/// after parsing: `1` and `1.0` differ.
pub fn value_key(v: &Value) -> String {
    if contains_object(v) {
        canonical(v).to_string()
    } else {
        v.to_string()
    }
}

fn contains_object(v: &Value) -> bool {
    match v {
        Value::Object(_) => true,
        Value::Array(items) => items.iter().any(contains_object),
        _ => false,
    }
}

fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(obj) => {
            let mut entries: Vec<(&String, &Value)> = obj.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
