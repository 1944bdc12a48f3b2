//! The session blacklist: kept in memory for checks, made durable as records of its
//! own log stream (`_blacklist`) so it survives restarts and, in cluster mode, reaches
//! every node the same way events do.
//!
//! Data path: `add` appends a record, inserts it locally and closes this node's
//! connections of the session; the [`BlacklistStore::follow`] task tails the stream and
//! does the same for records appended by any node (its own included — inserting and
//! killing twice is harmless), so a blacklisting on node 1 closes the session on node 3
//! as soon as node 3's tail sees the record.
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use tidegate_auth::session::Entry;
use tidegate_auth::{Blacklist, BlacklistError};
use tidegate_hub::Hub;
use tidegate_log::{AppendRecord, EventLog, LogError};

pub const STREAM: &str = "_blacklist";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Full(#[from] BlacklistError),
    #[error(transparent)]
    Log(#[from] LogError),
}

pub struct BlacklistStore {
    list: Mutex<Blacklist>,
    log: Arc<dyn EventLog>,
    /// The offset after the last record applied (by `open`, then by `follow`).
    applied: Mutex<u64>,
}

fn parse_entry(r: &tidegate_log::Record) -> Option<Entry> {
    match serde_json::from_slice::<serde_json::Value>(&r.payload) {
        Ok(v) => match (v["sessionId"].as_str(), v["untilMs"].as_u64()) {
            (Some(id), Some(until)) => Some(Entry {
                session_id: id.to_string(),
                until_ms: until,
            }),
            _ => {
                warn!(
                    offset = r.offset,
                    "Ignoring a blacklist record without sessionId/untilMs"
                );
                None
            }
        },
        Err(e) => {
            warn!(offset = r.offset, error = %e, "Ignoring unreadable blacklist record");
            None
        }
    }
}

impl BlacklistStore {
    /// Loads every entry still valid from the log.
    pub async fn open(
        log: Arc<dyn EventLog>,
        max_entries: usize,
    ) -> Result<BlacklistStore, LogError> {
        log.ensure_stream(STREAM).await?;
        let now = now_ms();
        let mut entries = Vec::new();
        let mut pos = 0;
        loop {
            let records = log.read(STREAM, pos, 4096, 4 << 20).await?;
            let Some(last) = records.last() else { break };
            pos = last.offset + 1;
            entries.extend(records.iter().filter_map(parse_entry));
        }
        let (list, refused) = Blacklist::restore(max_entries, entries, now);
        if refused > 0 {
            warn!(
                refused,
                "Blacklist entries beyond the configured bound were not restored"
            );
        }
        info!(entries = list.len(), "Session blacklist restored");
        Ok(BlacklistStore {
            list: Mutex::new(list),
            log,
            applied: Mutex::new(pos),
        })
    }

    /// Tails the stream until `shutdown`: every record appended after `open` (by any
    /// node sharing the log) is inserted and its session's connections on this node
    /// are closed. Read errors (a broker outage) are retried every second.
    pub async fn follow(self: Arc<Self>, hub: Hub, shutdown: CancellationToken) {
        let mut next_rx = match self.log.watch_next(STREAM) {
            Ok(rx) => rx,
            Err(e) => {
                warn!(error = %e, "Cannot follow the session blacklist stream");
                return;
            }
        };
        loop {
            let pos = *self.applied.lock();
            if *next_rx.borrow_and_update() > pos {
                match self.log.read(STREAM, pos, 1024, 1 << 20).await {
                    Ok(records) => {
                        self.apply(&hub, &records).await;
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "Reading the session blacklist stream failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = next_rx.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn apply(&self, hub: &Hub, records: &[tidegate_log::Record]) {
        let Some(last) = records.last() else { return };
        let now = now_ms();
        for entry in records.iter().filter_map(parse_entry) {
            if entry.until_ms <= now {
                continue;
            }
            if let Err(e) = self
                .list
                .lock()
                .insert(&entry.session_id, entry.until_ms, now)
            {
                warn!(session = %entry.session_id, error = %e, "Blacklist entry from the log not applied");
                continue;
            }
            let killed = hub.kill_session(&entry.session_id).await.unwrap_or(0);
            debug!(session = %entry.session_id, killed, "Blacklist entry applied from the log");
        }
        let mut applied = self.applied.lock();
        *applied = (*applied).max(last.offset + 1);
    }

    pub fn contains(&self, session: &str) -> bool {
        self.list.lock().contains(session, now_ms())
    }

    /// Durably blacklists `session` for `validity_secs`, then closes its connections.
    pub async fn add(
        &self,
        hub: &Hub,
        session: &str,
        validity_secs: u64,
    ) -> Result<usize, AddError> {
        let now = now_ms();
        let until = now.saturating_add(validity_secs.saturating_mul(1000));
        {
            // Check the bound before writing, so a refused entry is not stored.
            let mut probe = self.list.lock();
            probe.purge(now);
            if probe.len() >= probe.max_entries() && !probe.contains(session, now) {
                return Err(AddError::Full(BlacklistError::Full {
                    max: probe.max_entries(),
                }));
            }
        }
        let payload = json!({ "sessionId": session, "untilMs": until }).to_string();
        self.log
            .append(
                STREAM,
                vec![AppendRecord {
                    dedup_key: None,
                    payload: Bytes::from(payload),
                }],
            )
            .await?;
        self.list.lock().insert(session, until, now)?;
        let killed = hub.kill_session(session).await.unwrap_or(0);
        Ok(killed)
    }
}
