//! The session blacklist: kept in memory for checks, made durable as records of its
//! own log stream (`_blacklist`) so it survives restarts and, in cluster mode, reaches
//! every node the same way events do.
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

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
            for r in &records {
                match serde_json::from_slice::<serde_json::Value>(&r.payload) {
                    Ok(v) => {
                        if let (Some(id), Some(until)) =
                            (v["sessionId"].as_str(), v["untilMs"].as_u64())
                        {
                            entries.push(Entry {
                                session_id: id.to_string(),
                                until_ms: until,
                            });
                        }
                    }
                    Err(e) => {
                        warn!(offset = r.offset, error = %e, "Ignoring unreadable blacklist record")
                    }
                }
            }
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
        })
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
