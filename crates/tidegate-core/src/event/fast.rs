//! The ingest fast path: validate a structured or batch body without building a
//! [`Value`] tree, and keep the producer's bytes (whitespace between tokens removed)
//! as the delivered JSON instead of re-serialising the event.
//!
//! The result means exactly what [`Event::to_json`] of the same input means: same
//! attributes, same order, same values. The bytes may differ where JSON allows two
//! spellings of one value (`"\u00e9"` for `"é"`, `1e2` for `100.0`); they are the
//! producer's spelling, compacted.
//!
//! Only input the slow path ([`parse_structured`], [`parse_batch`]) would accept with
//! the same meaning is taken here. Anything else falls back to the slow path, which
//! then produces the event or the error exactly as before:
//!
//! - a syntax error, a number out of range, a lone surrogate, invalid UTF-8 (the
//!   values are checked by serde_json's own parser, as [`Value`] would check them);
//! - a duplicate key at any depth (a [`Map`] keeps the last value in the first
//!   position; raw bytes would keep both);
//! - an object key written with escapes (rare; it would need decoding to compare);
//! - any CloudEvents rule violated (the same rules, [`validate`], in the same order).
//!
//! So errors are always reported by the slow path, with the same messages.
use super::*;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// One published event ready to store: its routing attributes and its delivered JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestEvent {
    pub specversion: SpecVersion,
    pub id: String,
    pub source: String,
    pub event_type: String,
    /// The compact JSON object, meaning what [`Event::to_json`] would produce. Events
    /// of one batch share one buffer.
    pub json: Bytes,
}

impl From<Event> for IngestEvent {
    fn from(ev: Event) -> Self {
        IngestEvent {
            json: ev.to_json(),
            specversion: ev.specversion,
            id: ev.id,
            source: ev.source,
            event_type: ev.event_type,
        }
    }
}

impl IngestEvent {
    /// One top-level attribute (or `data`), parsed on demand.
    pub fn attribute(&self, name: &str) -> Option<Value> {
        // An attribute's name appears literally in the JSON: keys with escapes never
        // take the fast path, and serde_json escapes no letters or digits. So a name
        // absent from the bytes is absent from the event, which is the common case.
        memchr::memmem::find(&self.json, name.as_bytes())?;
        let mut de = serde_json::Deserializer::from_slice(&self.json);
        (&mut de)
            .deserialize_map(FindAttribute(name))
            .ok()
            .flatten()
    }

    /// All attributes, as [`Event::attributes`] would hold them.
    pub fn attributes(&self) -> Map<String, Value> {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }
}

/// [`parse_structured`] for ingest.
pub fn parse_structured_ingest(body: &[u8]) -> Result<IngestEvent, EventError> {
    if let Some(ev) = fast_structured(body) {
        return Ok(ev);
    }
    parse_structured(body).map(IngestEvent::from)
}

/// [`parse_batch`] for ingest.
pub fn parse_batch_ingest(body: &[u8]) -> Result<Vec<IngestEvent>, EventError> {
    if let Some(evs) = fast_batch(body) {
        return Ok(evs);
    }
    Ok(parse_batch(body)?
        .into_iter()
        .map(IngestEvent::from)
        .collect())
}

fn fast_structured(body: &[u8]) -> Option<IngestEvent> {
    let text = std::str::from_utf8(body).ok()?;
    let mut scratch = Scratch::default();
    let routing = check_event(text, &mut scratch)?;
    let mut out = Vec::with_capacity(text.len());
    compact_into(&mut out, text.as_bytes());
    Some(ingest_event(routing, Bytes::from(out)))
}

fn fast_batch(body: &[u8]) -> Option<Vec<IngestEvent>> {
    let text = std::str::from_utf8(body).ok()?;
    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    if items.is_empty() {
        return None;
    }
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(text.len());
    let mut checked = Vec::with_capacity(items.len());
    for item in &items {
        let routing = check_event(item.get(), &mut scratch)?;
        let start = out.len();
        compact_into(&mut out, item.get().as_bytes());
        checked.push((routing, start, out.len()));
    }
    let buf = Bytes::from(out);
    Some(
        checked
            .into_iter()
            .map(|(routing, start, end)| ingest_event(routing, buf.slice(start..end)))
            .collect(),
    )
}

fn ingest_event(r: Routing, json: Bytes) -> IngestEvent {
    IngestEvent {
        specversion: r.specversion,
        id: r.id,
        source: r.source,
        event_type: r.event_type,
        json,
    }
}

/// Buffers reused across the events of a batch.
#[derive(Default)]
struct Scratch<'de> {
    members: Vec<(&'de str, Member<'de>)>,
    /// Keys of the objects currently open, innermost last (duplicate detection).
    keys: Vec<&'de str>,
}

/// A top-level member as validation needs it.
enum Member<'de> {
    Str(Cow<'de, str>),
    Other(&'static str),
}

struct Members<'a, 'de>(&'a [(&'de str, Member<'de>)]);

impl Attrs for Members<'_, '_> {
    fn attr(&self, name: &str) -> Option<Attr<'_>> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, m)| match m {
                Member::Str(s) => Attr::Str(s),
                Member::Other(kind) => Attr::Other(kind),
            })
    }

    fn find_name(&self, bad: &dyn Fn(&str) -> bool) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| bad(k))
            .map(|(k, _)| k.to_string())
    }
}

/// Validates one event object; `None` sends the body to the slow path.
fn check_event<'de>(text: &'de str, scratch: &mut Scratch<'de>) -> Option<Routing> {
    scratch.members.clear();
    scratch.keys.clear();
    let mut de = serde_json::Deserializer::from_str(text);
    (&mut de)
        .deserialize_map(EventVisitor {
            members: &mut scratch.members,
            keys: &mut scratch.keys,
        })
        .ok()?;
    de.end().ok()?;
    validate(&Members(&scratch.members)).ok()
}

/// Removes the whitespace between tokens of valid JSON (none is significant there).
fn compact_into(out: &mut Vec<u8>, json: &[u8]) {
    let mut start = 0;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string: up to the closing quote, stepping over escapes.
                i += 1;
                while let Some(j) = json.get(i..).and_then(|s| memchr::memchr2(b'"', b'\\', s)) {
                    i += j;
                    if json[i] == b'\\' {
                        i += 2;
                    } else {
                        break;
                    }
                }
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                out.extend_from_slice(&json[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&json[start..json.len().min(i)]);
}

// === serde visitors ===

/// Any error: the slow path decides.
fn fallback<E: de::Error>() -> E {
    E::custom("not for the fast path")
}

/// Object keys on the fast path: unescaped only (borrowed from the input).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = &'de str;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<&'de str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = &'de str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an unescaped object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<&'de str, E> {
        Ok(v)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<&'de str, E> {
        Err(fallback())
    }
}

/// Duplicate detection for the object whose keys start at `base` in `keys`.
struct Seen<'de> {
    base: usize,
    /// Large objects switch from a linear scan to a set.
    set: Option<HashSet<&'de str>>,
}

/// Keys an object may have before its duplicate check switches to a set.
const LINEAR_KEYS: usize = 16;

impl<'de> Seen<'de> {
    fn new(keys: &[&'de str]) -> Self {
        Seen {
            base: keys.len(),
            set: None,
        }
    }

    /// Whether `key` is new in this object.
    fn insert(&mut self, keys: &mut Vec<&'de str>, key: &'de str) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(key);
        }
        let current = &keys[self.base..];
        if current.contains(&key) {
            return false;
        }
        if current.len() >= LINEAR_KEYS {
            let mut set: HashSet<&'de str> = current.iter().copied().collect();
            set.insert(key);
            keys.truncate(self.base);
            self.set = Some(set);
        } else {
            keys.push(key);
        }
        true
    }

    fn close(self, keys: &mut Vec<&'de str>) {
        keys.truncate(self.base);
    }
}

struct EventVisitor<'a, 'de> {
    members: &'a mut Vec<(&'de str, Member<'de>)>,
    keys: &'a mut Vec<&'de str>,
}

impl<'de> Visitor<'de> for EventVisitor<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::new(self.keys);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !seen.insert(self.keys, key) {
                return Err(fallback());
            }
            let member = map.next_value_seed(MemberSeed(Check {
                keys: self.keys,
                depth: 2,
            }))?;
            self.members.push((key, member));
        }
        seen.close(self.keys);
        Ok(())
    }
}

/// A top-level value: strings kept (validation reads them), the rest checked and
/// reduced to its kind.
struct MemberSeed<'a, 'de>(Check<'a, 'de>);

impl<'de> DeserializeSeed<'de> for MemberSeed<'_, 'de> {
    type Value = Member<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Member<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_, 'de> {
    type Value = Member<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Member<'de>, E> {
        Ok(Member::Other("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Member<'de>, E> {
        Ok(Member::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Member<'de>, E> {
        Ok(Member::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Member<'de>, E> {
        Ok(Member::Other("a number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Member<'de>, E> {
        Ok(Member::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member<'de>, A::Error> {
        self.0.visit_seq(seq)?;
        Ok(Member::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member<'de>, A::Error> {
        self.0.visit_map(map)?;
        Ok(Member::Other("an object"))
    }
}

/// Any nested value, checked by serde_json's parser exactly as a [`Value`] would be
/// (numbers in range, escapes valid) and for duplicate keys, then dropped.
struct Check<'a, 'de> {
    keys: &'a mut Vec<&'de str>,
    /// Nesting level of a container here (the event object is 1).
    depth: u32,
}

/// Deeper events take the slow path. Far below serde_json's own limit (127 levels,
/// one of them the batch array): an item checked on its own must not get one more
/// level than the slow path, which parses the batch as one document.
const MAX_DEPTH: u32 = 64;

impl<'a, 'de> Check<'a, 'de> {
    fn enter<E: de::Error>(&mut self) -> Result<Check<'_, 'de>, E> {
        if self.depth >= MAX_DEPTH {
            return Err(fallback());
        }
        Ok(Check {
            keys: &mut *self.keys,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // Not `deserialize_ignored_any`: serde_json skips those values without
        // checking numbers and escapes.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.enter()?)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::new(self.keys);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !seen.insert(self.keys, key) {
                return Err(fallback());
            }
            map.next_value_seed(self.enter()?)?;
        }
        seen.close(self.keys);
        Ok(())
    }
}

/// The value of one top-level key (the first occurrence: the JSON has no duplicates).
struct FindAttribute<'n>(&'n str);

impl<'de> Visitor<'de> for FindAttribute<'_> {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit && found.is_none() {
                found = Some(map.next_value()?);
            } else {
                // serde_json insists on reading the object to its end.
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests;
