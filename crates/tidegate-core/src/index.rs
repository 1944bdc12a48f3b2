//! The subscription index: event type → (field, value) → subscribers, so matching an
//! event costs a few hash lookups, not a scan over every subscription.
//!
//! Per event type the index keeps the subscribers that want every event of the type,
//! and, for constrained subscriptions, a map keyed by one *anchor* pair of each
//! constraint: `field → value key → subscriber → remaining pairs`. Matching resolves
//! each declared field of the type once, looks up the anchor buckets those values hit,
//! and verifies the remaining pairs of the few candidates found. The anchor is the
//! smallest `(field, value)` pair of the constraint — the first one, as constraints are
//! sorted by field name. Any pair would be correct; the first is stable and free.
//!
//! A reverse map (subscriber → what it put where) makes `set` and `remove` cost the
//! subscriber's own subscriptions, not the index size, and lets empty maps be dropped
//! so a long-running hub does not accumulate dead entries. [`naive_matches`] states the
//! semantics directly; the index is property-tested against it.
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use crate::extractor::Extractors;
use crate::subscription::{value_key, Constraint, Subscription};

/// Field name and value key.
type Pair = (String, String);

/// anchor value key → subscriber → the remaining pairs of each of its constraints with
/// that anchor (an empty list: the anchor alone decides).
type ByValue<K> = HashMap<String, HashMap<K, Vec<Vec<Pair>>>>;

pub struct SubscriptionIndex<K> {
    types: HashMap<String, TypeIndex<K>>,
    keys: HashMap<K, KeyEntry>,
    /// Sum of [`KeyEntry::subscriptions`].
    subscriptions: usize,
}

struct TypeIndex<K> {
    /// Subscribers that want every event of the type.
    unconstrained: HashSet<K>,
    /// anchor field → [`ByValue`].
    constrained: HashMap<String, ByValue<K>>,
}

/// What one subscriber put into the index, so it can be taken out again.
struct KeyEntry {
    /// Distinct subscriptions given to [`SubscriptionIndex::set`].
    subscriptions: usize,
    types: Vec<(String, KeyType)>,
}

enum KeyType {
    Unconstrained,
    /// The distinct anchors under which the subscriber has buckets.
    Constrained(Vec<Pair>),
}

// === impl TypeIndex ===

impl<K> TypeIndex<K> {
    fn new() -> Self {
        TypeIndex {
            unconstrained: HashSet::new(),
            constrained: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.unconstrained.is_empty() && self.constrained.is_empty()
    }
}

// === impl SubscriptionIndex ===

impl<K: Copy + Eq + Hash + Ord> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash + Ord> SubscriptionIndex<K> {
    pub fn new() -> Self {
        SubscriptionIndex {
            types: HashMap::new(),
            keys: HashMap::new(),
            subscriptions: 0,
        }
    }

    /// Replaces the whole subscription set of `key`.
    ///
    /// Exact duplicate subscriptions count once. Per event type the subscriber's
    /// subscriptions are merged: one without constraints (or with an empty constraint,
    /// which matches everything) makes the others redundant, so only that is indexed.
    pub fn set(&mut self, key: K, subs: &[Subscription]) {
        self.remove(key);
        let mut seen = HashSet::with_capacity(subs.len());
        // event type → None (every event) or the constraints to index.
        let mut by_type: BTreeMap<&str, Option<Vec<&Constraint>>> = BTreeMap::new();
        for sub in subs {
            if !seen.insert(sub) {
                continue;
            }
            let group = by_type
                .entry(sub.event_type.as_str())
                .or_insert_with(|| Some(Vec::new()));
            if sub.one_of.is_empty() || sub.one_of.iter().any(|c| c.0.is_empty()) {
                *group = None;
            } else if let Some(constraints) = group {
                constraints.extend(&sub.one_of);
            }
        }
        if seen.is_empty() {
            return;
        }

        let mut types = Vec::with_capacity(by_type.len());
        for (event_type, group) in by_type {
            let index = self
                .types
                .entry(event_type.to_string())
                .or_insert_with(TypeIndex::new);
            let Some(constraints) = group else {
                index.unconstrained.insert(key);
                types.push((event_type.to_string(), KeyType::Unconstrained));
                continue;
            };
            let mut anchors: Vec<Pair> = Vec::new();
            for constraint in constraints {
                let Some((anchor, rest)) = split_anchor(constraint) else {
                    continue; // empty constraints were routed to `unconstrained` above
                };
                let bucket = index
                    .constrained
                    .entry(anchor.0.clone())
                    .or_default()
                    .entry(anchor.1.clone())
                    .or_default()
                    .entry(key)
                    .or_default();
                if !bucket.contains(&rest) {
                    bucket.push(rest);
                }
                if !anchors.contains(anchor) {
                    anchors.push(anchor.clone());
                }
            }
            types.push((event_type.to_string(), KeyType::Constrained(anchors)));
        }
        self.subscriptions += seen.len();
        self.keys.insert(
            key,
            KeyEntry {
                subscriptions: seen.len(),
                types,
            },
        );
    }

    pub fn remove(&mut self, key: K) {
        let Some(entry) = self.keys.remove(&key) else {
            return;
        };
        self.subscriptions -= entry.subscriptions;
        for (event_type, kind) in entry.types {
            let Some(index) = self.types.get_mut(&event_type) else {
                continue;
            };
            match kind {
                KeyType::Unconstrained => {
                    index.unconstrained.remove(&key);
                }
                KeyType::Constrained(anchors) => {
                    for (field, value) in anchors {
                        let Some(by_value) = index.constrained.get_mut(&field) else {
                            continue;
                        };
                        if let Some(bucket) = by_value.get_mut(&value) {
                            bucket.remove(&key);
                            if bucket.is_empty() {
                                by_value.remove(&value);
                            }
                        }
                        if by_value.is_empty() {
                            index.constrained.remove(&field);
                        }
                    }
                }
            }
            if index.is_empty() {
                self.types.remove(&event_type);
            }
        }
    }

    /// Whether any subscriber wants this type (checked before an event body is parsed).
    pub fn has_type(&self, event_type: &str) -> bool {
        self.types.contains_key(event_type)
    }

    /// Appends to `out` every key with a subscription matching the event, each once, sorted.
    ///
    /// Only the appended part is sorted; what `out` held before is left alone.
    pub fn matching(
        &self,
        event_type: &str,
        event: &Value,
        extractors: &Extractors,
        out: &mut Vec<K>,
    ) {
        let Some(index) = self.types.get(event_type) else {
            return;
        };
        let start = out.len();
        out.extend(index.unconstrained.iter().copied());
        if !index.constrained.is_empty() {
            // Each declared field resolved and canonicalised once per event.
            let values: Vec<(&str, String)> = extractors
                .fields(event_type)
                .iter()
                .filter_map(|f| {
                    let v = event.pointer(f.event_pointer.as_deref()?)?;
                    Some((f.name.as_str(), value_key(v)))
                })
                .collect();
            let holds = |(field, value): &Pair| {
                values
                    .iter()
                    .any(|(f, v)| *f == field.as_str() && v == value)
            };
            for (field, value) in &values {
                let Some(bucket) = index.constrained.get(*field).and_then(|m| m.get(value)) else {
                    continue;
                };
                for (key, rests) in bucket {
                    if rests.iter().any(|rest| rest.iter().all(holds)) {
                        out.push(*key);
                    }
                }
            }
        }
        sort_dedup_from(out, start);
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// Number of keys with at least one subscription.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn contains_key(&self, key: K) -> bool {
        self.keys.contains_key(&key)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Structural invariants the property tests check after every operation.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(
            self.subscriptions,
            self.keys.values().map(|e| e.subscriptions).sum::<usize>()
        );
        assert!(self.keys.values().all(|e| e.subscriptions > 0));
        for index in self.types.values() {
            assert!(!index.is_empty(), "empty type index leaked");
            for by_value in index.constrained.values() {
                assert!(!by_value.is_empty(), "empty field map leaked");
                for bucket in by_value.values() {
                    assert!(!bucket.is_empty(), "empty bucket leaked");
                    assert!(bucket.keys().all(|k| self.keys.contains_key(k)));
                }
            }
            assert!(index
                .unconstrained
                .iter()
                .all(|k| self.keys.contains_key(k)));
        }
    }
}

/// The anchor pair of a constraint and the pairs left to verify.
fn split_anchor(constraint: &Constraint) -> Option<(&Pair, Vec<Pair>)> {
    let (at, anchor) = constraint
        .0
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.cmp(b.1))?;
    let rest = constraint
        .0
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, p)| p.clone())
        .collect();
    Some((anchor, rest))
}

/// Sorts `out[start..]` and removes duplicates within it.
fn sort_dedup_from<K: Copy + Ord>(out: &mut Vec<K>, start: usize) {
    let tail = &mut out[start..];
    tail.sort_unstable();
    let mut write = start;
    for read in start..out.len() {
        if write == start || out[read] != out[write - 1] {
            out[write] = out[read];
            write += 1;
        }
    }
    out.truncate(write);
}

/// Reference semantics: does any of `subs` match the event?
pub fn naive_matches(
    subs: &[Subscription],
    event_type: &str,
    event: &Value,
    extractors: &Extractors,
) -> bool {
    subs.iter().any(|sub| {
        sub.event_type == event_type
            && (sub.one_of.is_empty()
                || sub.one_of.iter().any(|constraint| {
                    constraint.0.iter().all(|(field, value)| {
                        extractors
                            .event_value(event_type, field, event)
                            .is_some_and(|v| value_key(v) == *value)
                    })
                }))
    })
}

#[cfg(test)]
mod tests;
