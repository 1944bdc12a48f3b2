//! The subscription index: event type → (field, value) → subscribers, so matching an
//! event costs a few hash lookups, not a scan over every subscription.
use serde_json::Value;
use std::hash::Hash;

use crate::extractor::Extractors;
use crate::subscription::Subscription;

pub struct SubscriptionIndex<K> {
    _k: std::marker::PhantomData<K>,
}

impl<K: Copy + Eq + Hash + Ord> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash + Ord> SubscriptionIndex<K> {
    pub fn new() -> Self {
        todo!()
    }
    /// Replaces the whole subscription set of `key`.
    pub fn set(&mut self, key: K, subs: &[Subscription]) {
        let _ = (key, subs);
        todo!()
    }
    pub fn remove(&mut self, key: K) {
        let _ = key;
        todo!()
    }
    /// Whether any subscriber wants this type (checked before an event body is parsed).
    pub fn has_type(&self, event_type: &str) -> bool {
        let _ = event_type;
        todo!()
    }
    /// Appends to `out` every key with a subscription matching the event, each once, sorted.
    pub fn matching(&self, event_type: &str, event: &Value, extractors: &Extractors, out: &mut Vec<K>) {
        let _ = (event_type, event, extractors, out);
        todo!()
    }
    pub fn subscription_count(&self) -> usize {
        todo!()
    }
}

/// Reference semantics: does any of `subs` match the event?
pub fn naive_matches(subs: &[Subscription], event_type: &str, event: &Value, extractors: &Extractors) -> bool {
    let _ = (subs, event_type, event, extractors);
    todo!()
}
