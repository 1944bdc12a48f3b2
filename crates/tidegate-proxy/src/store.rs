//! The API definitions and the routing table built from them, made durable as records
//! of the log stream `_apis` (RIG kept runtime changes in memory only).
//!
//! Data path: every change (create, update, deactivate) is appended as one record
//! holding the whole resulting definition; nothing is changed in memory before the log
//! accepted it. State is only ever changed by applying records in log order
//! ([`ApiStore::catch_up`]) — after a local write, and by the [`ApiStore::follow`] task
//! for records appended by other nodes sharing the log — so every node converges to the
//! same definitions. On open, the `PROXY_CONFIG_FILE` definitions come first, then the
//! stream is replayed over them (runtime changes win). After each applied batch a new
//! immutable [`Table`] is swapped in; the request path takes one short read lock to
//! clone the `Arc`.
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use tidegate_log::{AppendRecord, EventLog, LogError, Record};

use crate::config::{ApiDefinition, ValidationErrors};
use crate::router::Table;

pub const STREAM: &str = "_apis";

/// One change: the definition as it is after the change (`active: false` = deactivated).
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    id: String,
    api: ApiDefinition,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid API definition: {0}")]
    Invalid(ValidationErrors),
    #[error("API with id={0} already exists.")]
    Exists(String),
    #[error("API with id={0} doesn't exists.")]
    NotFound(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

pub struct ApiStore {
    log: Arc<dyn EventLog>,
    /// Definitions in definition order (file order, then creation order).
    defs: Mutex<Vec<ApiDefinition>>,
    table: RwLock<Arc<Table>>,
    /// The offset after the last applied record; held across a write so local writes
    /// are checked against, and applied in, log order.
    applied: tokio::sync::Mutex<u64>,
}

fn now_rfc3339() -> Option<String> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

impl ApiStore {
    /// File definitions first, then every change in the stream.
    pub async fn open(
        log: Arc<dyn EventLog>,
        file_defs: Vec<ApiDefinition>,
    ) -> Result<ApiStore, LogError> {
        log.ensure_stream(STREAM).await?;
        let store = ApiStore {
            log,
            defs: Mutex::new(
                file_defs
                    .into_iter()
                    .map(|mut d| {
                        if d.timestamp.is_none() {
                            d.timestamp = now_rfc3339();
                        }
                        d
                    })
                    .collect(),
            ),
            table: RwLock::new(Arc::new(Table::default())),
            applied: tokio::sync::Mutex::new(0),
        };
        let mut applied = store.applied.lock().await;
        store.catch_up_locked(&mut applied).await?;
        store.rebuild();
        let routed = store.table().len();
        info!(
            apis = store.defs.lock().len(),
            routed,
            replayed = *applied,
            "Reverse proxy definitions loaded"
        );
        drop(applied);
        Ok(store)
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().clone()
    }

    /// Active definitions, in order (RIG's `GET /v3/apis`).
    pub fn list_active(&self) -> Vec<ApiDefinition> {
        self.defs
            .lock()
            .iter()
            .filter(|d| d.active)
            .cloned()
            .collect()
    }

    pub fn get_active(&self, id: &str) -> Option<ApiDefinition> {
        self.defs
            .lock()
            .iter()
            .find(|d| d.id == id && d.active)
            .cloned()
    }

    /// RIG's create: 409 when an active API has the id; an inactive one is replaced.
    pub async fn create(&self, body: Value) -> Result<(), StoreError> {
        let mut def = ApiDefinition::from_value(body).map_err(StoreError::Invalid)?;
        self.write(&def.id.clone(), move |current| {
            match current {
                Some(c) if c.active => return Err(StoreError::Exists(c.id.clone())),
                Some(c) => def.ref_number = c.ref_number + 1,
                None => def.ref_number = 0,
            }
            def.active = true;
            def.timestamp = now_rfc3339();
            Ok(def)
        })
        .await
    }

    /// RIG's update: the body's fields are merged over the stored definition (top
    /// level), the result validated; 404 unless an active API has the id.
    pub async fn update(&self, id: &str, body: Value) -> Result<(), StoreError> {
        let Value::Object(patch) = body else {
            let mut e = ValidationErrors::default();
            e.push("api", "definition", "must be a JSON object");
            return Err(StoreError::Invalid(e));
        };
        self.write(id, |current| {
            let current = current
                .filter(|c| c.active)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            let Value::Object(mut merged) = current.to_json() else {
                return Err(StoreError::NotFound(id.to_owned()));
            };
            for (k, v) in patch {
                merged.insert(k, v);
            }
            merged.insert("id".to_owned(), Value::String(id.to_owned()));
            merged.insert("active".to_owned(), Value::Bool(true));
            let mut def =
                ApiDefinition::from_value(Value::Object(merged)).map_err(StoreError::Invalid)?;
            def.ref_number = current.ref_number + 1;
            def.timestamp = now_rfc3339();
            Ok(def)
        })
        .await
    }

    /// RIG's delete: the definition stays stored, inactive; 404 unless active.
    pub async fn deactivate(&self, id: &str) -> Result<(), StoreError> {
        self.write(id, |current| {
            let mut def = current
                .filter(|c| c.active)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            def.active = false;
            def.ref_number += 1;
            def.timestamp = now_rfc3339();
            Ok(def)
        })
        .await
    }

    async fn write(
        &self,
        id: &str,
        change: impl FnOnce(Option<&ApiDefinition>) -> Result<ApiDefinition, StoreError>,
    ) -> Result<(), StoreError> {
        let mut applied = self.applied.lock().await;
        // See every other node's change first, so the check below is against the log.
        self.catch_up_locked(&mut applied).await?;
        let next = {
            let defs = self.defs.lock();
            change(defs.iter().find(|d| d.id == id))?
        };
        let payload = serde_json::to_vec(&Change {
            id: id.to_owned(),
            api: next,
        })
        .map_err(|e| LogError::Corrupt(format!("encoding an API change: {e}")))?;
        self.log
            .append(
                STREAM,
                vec![AppendRecord {
                    dedup_key: None,
                    payload: Bytes::from(payload),
                }],
            )
            .await?;
        self.catch_up_locked(&mut applied).await?;
        Ok(())
    }

    /// Applies every record not applied yet (by any node), then swaps the table.
    pub async fn catch_up(&self) -> Result<usize, LogError> {
        let mut applied = self.applied.lock().await;
        self.catch_up_locked(&mut applied).await
    }

    async fn catch_up_locked(&self, applied: &mut u64) -> Result<usize, LogError> {
        let mut count = 0;
        loop {
            let records = self.log.read(STREAM, *applied, 1024, 4 << 20).await?;
            let Some(last) = records.last() else { break };
            *applied = last.offset + 1;
            count += records.len();
            self.apply(&records);
        }
        if count > 0 {
            self.rebuild();
        }
        Ok(count)
    }

    fn apply(&self, records: &[Record]) {
        let mut defs = self.defs.lock();
        for r in records {
            let change: Change = match serde_json::from_slice(&r.payload) {
                Ok(c) => c,
                Err(e) => {
                    warn!(offset = r.offset, error = %e, "Ignoring unreadable API definition record");
                    continue;
                }
            };
            if change.id != change.api.id {
                warn!(
                    offset = r.offset,
                    "Ignoring API definition record with mismatching ids"
                );
                continue;
            }
            debug!(offset = r.offset, api = %change.id, active = change.api.active, "API definition change applied");
            match defs.iter_mut().find(|d| d.id == change.id) {
                Some(slot) => *slot = change.api,
                None => defs.push(change.api),
            }
        }
    }

    fn rebuild(&self) {
        let defs = self.defs.lock().clone();
        let (table, skipped) = Table::build(defs.iter());
        for (id, errors) in skipped {
            warn!(api = %id, errors = %errors, "API definition not routed: it does not compile");
        }
        *self.table.write() = Arc::new(table);
    }

    /// Tails `_apis` until `shutdown`, applying changes appended by any node. Read
    /// errors (a broker outage) are retried every second.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_rx = match self.log.watch_next(STREAM) {
            Ok(rx) => rx,
            Err(e) => {
                warn!(error = %e, "Cannot follow the API definitions stream");
                return;
            }
        };
        loop {
            let next = *next_rx.borrow_and_update();
            let behind = { *self.applied.lock().await < next };
            if behind {
                let pause = match self.catch_up().await {
                    // Committed but not readable yet: look again shortly.
                    Ok(_) if *self.applied.lock().await < next => Duration::from_millis(100),
                    Ok(_) => continue,
                    Err(e) => {
                        warn!(error = %e, "Reading the API definitions stream failed; retrying");
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = next_rx.changed() => if changed.is_err() { return },
            }
        }
    }
}
