//! Session identity and the session blacklist.
//!
//! A session is named by one claim of its JWT, found with a JSON pointer
//! (RIG's `JWT_SESSION_FIELD`, default `/jti`). The internal API blacklists a
//! session id until some instant (`POST /v3/session-blacklist`); the edge asks
//! [`Blacklist::contains`] when a token arrives and kills live connections of
//! that session. RIG only ever compared against `jti` when rejecting tokens;
//! here the same pointer is used for both sides.
//!
//! Everything here is pure: the current time (unix milliseconds) is a
//! parameter, and the owner (the edge or control plane) wraps the blacklist in
//! its lock, runs [`Blacklist::purge`] periodically, and persists
//! [`Blacklist::snapshot`] if it wants the blacklist to survive restarts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// RIG's default `JWT_SESSION_FIELD`.
pub const DEFAULT_SESSION_POINTER: &str = "/jti";

/// The session id in `claims` at `pointer` (RFC 6901, e.g. `/jti` or
/// `/user/session`). Strings are taken as-is, numbers as their decimal text;
/// anything else, an empty string, or a missing claim is no session.
///
/// Why empty is none: an empty id would let one blacklist entry for `""` kill
/// every token that merely lacks the claim's content.
pub fn session_id(claims: &Value, pointer: &str) -> Option<String> {
    match claims.pointer(pointer)? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One blacklisted session, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The session id.
    pub session_id: String,
    /// Blacklisted until this instant, unix milliseconds (exclusive).
    pub until_ms: u64,
}

/// Why a session could not be blacklisted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlacklistError {
    /// The blacklist holds its maximum number of live entries.
    #[error("the session blacklist is full ({max} live entries)")]
    Full {
        /// The configured bound.
        max: usize,
    },
    /// An empty session id, which would match tokens without a session.
    #[error("the session id is empty")]
    EmptyId,
}

/// Killed sessions and when they may come back, bounded in size.
///
/// When full, [`insert`](Blacklist::insert) refuses instead of evicting. Why:
/// evicting would silently un-kill a session someone deliberately killed — a
/// security control failing open, invisibly. Refusing fails loudly: the
/// operator's API call gets an error and they can raise the bound or wait for
/// entries to expire.
#[derive(Debug, Clone)]
pub struct Blacklist {
    entries: HashMap<String, u64>,
    max_entries: usize,
}

impl Blacklist {
    /// An empty blacklist holding at most `max_entries` live sessions.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries,
        }
    }

    /// Rebuilds a blacklist from a [`snapshot`](Blacklist::snapshot), dropping
    /// entries already expired at `now_ms`. Entries past the bound are
    /// refused the same way [`insert`](Blacklist::insert) refuses them; the
    /// number of such entries is returned alongside.
    pub fn restore(
        max_entries: usize,
        entries: impl IntoIterator<Item = Entry>,
        now_ms: u64,
    ) -> (Self, usize) {
        let mut blacklist = Self::new(max_entries);
        let mut refused = 0;
        for entry in entries {
            if blacklist
                .insert(&entry.session_id, entry.until_ms, now_ms)
                .is_err()
            {
                refused += 1;
            }
        }
        (blacklist, refused)
    }

    /// Blacklists `id` until `until_ms`. Blacklisting an id again keeps the
    /// later of the two instants, so a short second call cannot shorten a
    /// longer ban. An `until_ms` already past at `now_ms` is a no-op.
    ///
    /// When the bound is reached, entries expired at `now_ms` are purged
    /// first; only if the blacklist is still full does this fail.
    pub fn insert(&mut self, id: &str, until_ms: u64, now_ms: u64) -> Result<(), BlacklistError> {
        if id.is_empty() {
            return Err(BlacklistError::EmptyId);
        }
        if until_ms <= now_ms {
            return Ok(());
        }
        if let Some(current) = self.entries.get_mut(id) {
            *current = (*current).max(until_ms);
            return Ok(());
        }
        if self.entries.len() >= self.max_entries {
            self.purge(now_ms);
            if self.entries.len() >= self.max_entries {
                return Err(BlacklistError::Full {
                    max: self.max_entries,
                });
            }
        }
        self.entries.insert(id.to_owned(), until_ms);
        Ok(())
    }

    /// Whether `id` is blacklisted at `now_ms`.
    pub fn contains(&self, id: &str, now_ms: u64) -> bool {
        self.entries.get(id).is_some_and(|until| now_ms < *until)
    }

    /// Until when `id` is blacklisted, if it is at `now_ms`.
    pub fn until(&self, id: &str, now_ms: u64) -> Option<u64> {
        self.entries
            .get(id)
            .copied()
            .filter(|until| now_ms < *until)
    }

    /// Drops entries expired at `now_ms`; returns how many.
    pub fn purge(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, until| now_ms < *until);
        before - self.entries.len()
    }

    /// All entries (expired ones included until purged), sorted by session
    /// id so persisted snapshots are stable.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|(id, until)| Entry {
                session_id: id.clone(),
                until_ms: *until,
            })
            .collect();
        entries.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        entries
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The configured bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_id_default_pointer() {
        let claims = json!({"jti": "abc", "sub": "u"});
        assert_eq!(
            session_id(&claims, DEFAULT_SESSION_POINTER).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn session_id_custom_pointers() {
        let claims = json!({
            "sid": 42,
            "ctx": {"session": "s-1", "list": ["a", "b"], "f": 1.5},
            "empty": "",
            "obj": {},
            "a/b": "escaped"
        });
        assert_eq!(session_id(&claims, "/sid").as_deref(), Some("42"));
        assert_eq!(session_id(&claims, "/ctx/session").as_deref(), Some("s-1"));
        assert_eq!(session_id(&claims, "/ctx/list/1").as_deref(), Some("b"));
        assert_eq!(session_id(&claims, "/ctx/f").as_deref(), Some("1.5"));
        assert_eq!(session_id(&claims, "/a~1b").as_deref(), Some("escaped"));
        assert_eq!(session_id(&claims, "/empty"), None);
        assert_eq!(session_id(&claims, "/obj"), None);
        assert_eq!(session_id(&claims, "/missing"), None);
        assert_eq!(session_id(&claims, "jti"), None);
    }

    #[test]
    fn entries_expire() {
        let mut blacklist = Blacklist::new(10);
        blacklist.insert("s1", 2_000, 1_000).unwrap();
        assert!(blacklist.contains("s1", 1_999));
        assert_eq!(blacklist.until("s1", 1_500), Some(2_000));
        assert!(!blacklist.contains("s1", 2_000));
        assert!(!blacklist.contains("other", 1_000));
        assert_eq!(blacklist.purge(1_999), 0);
        assert_eq!(blacklist.purge(2_000), 1);
        assert!(blacklist.is_empty());
    }

    #[test]
    fn reinsert_keeps_the_later_expiry() {
        let mut blacklist = Blacklist::new(10);
        blacklist.insert("s", 5_000, 0).unwrap();
        blacklist.insert("s", 3_000, 0).unwrap();
        assert!(blacklist.contains("s", 4_000));
        blacklist.insert("s", 9_000, 0).unwrap();
        assert_eq!(blacklist.until("s", 0), Some(9_000));
        assert_eq!(blacklist.len(), 1);
    }

    #[test]
    fn past_expiry_and_empty_id() {
        let mut blacklist = Blacklist::new(10);
        blacklist.insert("s", 100, 100).unwrap();
        assert!(blacklist.is_empty());
        assert_eq!(blacklist.insert("", 200, 100), Err(BlacklistError::EmptyId));
    }

    #[test]
    fn bound_refuses_instead_of_evicting() {
        let mut blacklist = Blacklist::new(2);
        blacklist.insert("a", 1_000, 0).unwrap();
        blacklist.insert("b", 5_000, 0).unwrap();
        assert_eq!(
            blacklist.insert("c", 5_000, 0),
            Err(BlacklistError::Full { max: 2 })
        );
        // The killed sessions are still killed.
        assert!(blacklist.contains("a", 10) && blacklist.contains("b", 10));
        // Updating an existing entry is not growth.
        blacklist.insert("a", 2_000, 0).unwrap();
        // Once "a" has expired, its slot is reclaimed on demand.
        blacklist.insert("c", 5_000, 2_000).unwrap();
        assert!(!blacklist.contains("a", 2_000));
        assert!(blacklist.contains("c", 2_000));
    }

    #[test]
    fn snapshot_and_restore() {
        let mut blacklist = Blacklist::new(10);
        blacklist.insert("b", 5_000, 0).unwrap();
        blacklist.insert("a", 1_000, 0).unwrap();
        let snapshot = blacklist.snapshot();
        assert_eq!(
            snapshot,
            vec![
                Entry {
                    session_id: "a".into(),
                    until_ms: 1_000
                },
                Entry {
                    session_id: "b".into(),
                    until_ms: 5_000
                },
            ]
        );
        let json = serde_json::to_string(&snapshot).unwrap();
        let back: Vec<Entry> = serde_json::from_str(&json).unwrap();
        let (restored, refused) = Blacklist::restore(1, back, 2_000);
        assert_eq!(refused, 0);
        assert_eq!(restored.len(), 1);
        assert!(restored.contains("b", 2_000));
    }
}
