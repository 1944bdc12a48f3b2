//! The one way a source stores events: [`LogSink::append`].
//!
//! Events are stored exactly as the HTTP publish path stores them: the event's
//! delivered JSON ([`Event::to_json`]) framed by [`record::try_encode`], keyed by
//! [`record::dedup_key`]`(source, id)`, limited to `max_event_bytes` of JSON, event
//! types without control characters. So an event that arrives by Kafka, NATS and
//! HTTP is one record, and the hub cannot tell the paths apart.
//!
//! An event that cannot be stored *because of what it is* (too large, unframeable
//! type) comes back as [`Stored::Rejected`]: the source acknowledges and skips it, so
//! a poison message never blocks a partition. An error of the log itself
//! ([`SinkError`]) means nothing of the batch may be acknowledged; the source retries.
//!
//! Flow control: with a hub, every append first waits until the hub's fan-out backlog
//! is at most `max_backlog` records, so a flood upstream stays broker lag.
use std::sync::Arc;

use tidegate_core::event::Event;
use tidegate_core::record;
use tidegate_hub::Hub;
use tidegate_log::{AppendRecord, Appended, EventLog, LogError};

/// Where sources append. Cheap to clone (shared log and hub handles).
#[derive(Clone)]
pub struct LogSink {
    pub log: Arc<dyn EventLog>,
    /// The event stream (`events`).
    pub stream: String,
    /// Largest event JSON stored (the HTTP path's limit: 1 MiB by default).
    pub max_event_bytes: usize,
    /// Flow control: wait for the hub before each append.
    pub hub: Option<Hub>,
    /// Fan-out backlog (records) above which appends wait for the hub.
    pub max_backlog: u64,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored at this offset.
    New(u64),
    /// The log already held it (same `source` + `id` within the dedup window).
    Duplicate(u64),
    /// Not stored, and it never will be: acknowledge and skip it.
    Rejected(Rejection),
}

/// Why an event is not storable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("event of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("event type is not usable: {0}")]
    BadType(String),
}

/// The log could not take the batch; nothing of it may be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Log(#[from] LogError),
}

// === impl LogSink ===

impl LogSink {
    /// A sink with the HTTP path's defaults (1 MiB events) and no flow control.
    pub fn new(log: Arc<dyn EventLog>, stream: impl Into<String>) -> Self {
        LogSink {
            log,
            stream: stream.into(),
            max_event_bytes: 1 << 20,
            hub: None,
            max_backlog: 1_000_000,
        }
    }

    /// Stores `events` in order, in one atomic log append when they are all storable,
    /// and returns one [`Stored`] per event, in the same order. Returns once the log's
    /// durability is satisfied: only then may the source acknowledge.
    pub async fn append(&self, events: &[Event]) -> Result<Vec<Stored>, SinkError> {
        let mut out: Vec<Option<Stored>> = vec![None; events.len()];
        let mut records = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            match frame(ev, self.max_event_bytes) {
                Ok(rec) => {
                    records.push(rec);
                    slots.push(i);
                }
                Err(why) => out[i] = Some(Stored::Rejected(why)),
            }
        }
        if !records.is_empty() {
            if let Some(hub) = &self.hub {
                hub.wait_for_capacity(self.max_backlog).await;
            }
            let stored = self.append_records(records).await?;
            for (slot, s) in slots.into_iter().zip(stored) {
                out[slot] = Some(s);
            }
        }
        Ok(out
            .into_iter()
            .map(|s| {
                // Every slot is filled above: by a rejection, or by the log's answer
                // (one per record, as the trait promises). A short answer is treated
                // as a log failure of the missing events rather than a panic.
                s.unwrap_or(Stored::Rejected(Rejection::BadType(
                    "the log returned no result for this event".into(),
                )))
            })
            .collect())
    }

    async fn append_records(&self, records: Vec<AppendRecord>) -> Result<Vec<Stored>, SinkError> {
        match self.append_once(records.clone()).await {
            Ok(stored) => Ok(stored),
            // Framing overhead can push a record just within `max_event_bytes` past
            // the log's record limit. The batch is atomic, so one such record fails
            // all of them: store them one by one to isolate it.
            Err(LogError::RecordTooLarge(..)) if records.len() > 1 => {
                let mut out = Vec::with_capacity(records.len());
                for rec in records {
                    out.extend(self.append_single(rec).await?);
                }
                Ok(out)
            }
            Err(LogError::RecordTooLarge(size, limit)) => {
                Ok(vec![Stored::Rejected(Rejection::TooLarge { size, limit })])
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn append_single(&self, rec: AppendRecord) -> Result<Vec<Stored>, SinkError> {
        match self.append_once(vec![rec]).await {
            Err(LogError::RecordTooLarge(size, limit)) => {
                Ok(vec![Stored::Rejected(Rejection::TooLarge { size, limit })])
            }
            other => other.map_err(SinkError::from),
        }
    }

    /// One log append; creates the stream once if the log does not know it yet.
    async fn append_once(&self, records: Vec<AppendRecord>) -> Result<Vec<Stored>, LogError> {
        let res = match self.log.append(&self.stream, records.clone()).await {
            Err(LogError::UnknownStream(_)) => {
                self.log.ensure_stream(&self.stream).await?;
                self.log.append(&self.stream, records).await
            }
            other => other,
        };
        Ok(res?
            .into_iter()
            .map(|a| match a {
                Appended::New(o) => Stored::New(o),
                Appended::Duplicate(o) => Stored::Duplicate(o),
            })
            .collect())
    }
}

/// The record of one event, as `publish.rs` builds it.
fn frame(ev: &Event, max_event_bytes: usize) -> Result<AppendRecord, Rejection> {
    if ev.event_type.chars().any(char::is_control) {
        return Err(Rejection::BadType(
            "event type must not contain control characters".into(),
        ));
    }
    let json = ev.to_json();
    if json.len() > max_event_bytes {
        return Err(Rejection::TooLarge {
            size: json.len(),
            limit: max_event_bytes,
        });
    }
    let payload =
        record::try_encode(&ev.event_type, &json).map_err(|e| Rejection::BadType(e.to_string()))?;
    Ok(AppendRecord {
        dedup_key: Some(record::dedup_key(&ev.source, &ev.id)),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_core::event::parse_structured;
    use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};

    fn ev(id: &str, ty: &str, data: &str) -> Event {
        parse_structured(
            serde_json::json!({"specversion":"1.0","id":id,"source":"/t","type":ty,"data":data})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn frames_like_publish_and_rejects_poison() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).unwrap();
        let mut sink = LogSink::new(log.clone(), "events");
        sink.max_event_bytes = 200;
        let events = vec![
            ev("1", "greeting", "hi"),
            ev("2", "greeting", &"x".repeat(300)),
            ev("3", "bad\ntype", "hi"),
            ev("1", "greeting", "hi"),
            ev("4", "greeting", "there"),
        ];
        let stored = sink.append(&events).await.unwrap();
        assert_eq!(stored[0], Stored::New(0));
        assert!(matches!(
            stored[1],
            Stored::Rejected(Rejection::TooLarge { limit: 200, .. })
        ));
        assert!(matches!(stored[2], Stored::Rejected(Rejection::BadType(_))));
        assert_eq!(stored[3], Stored::Duplicate(0));
        assert_eq!(stored[4], Stored::New(1));

        let records = log.read("events", 0, 10, 1 << 20).await.unwrap();
        assert_eq!(records.len(), 2);
        let (ty, json) = record::decode(&records[0].payload).unwrap();
        assert_eq!(ty, "greeting");
        assert_eq!(json, &events[0].to_json()[..]);
    }

    #[tokio::test]
    async fn a_record_over_the_log_limit_is_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path());
        cfg.max_record_bytes = 1024;
        let log = EmbeddedLog::open(cfg).unwrap();
        let sink = LogSink::new(log.clone(), "events");
        let events = vec![
            ev("1", "t", "a"),
            ev("2", "t", &"y".repeat(2000)),
            ev("3", "t", "c"),
        ];
        let stored = sink.append(&events).await.unwrap();
        assert_eq!(stored[0], Stored::New(0));
        assert!(matches!(
            stored[1],
            Stored::Rejected(Rejection::TooLarge { .. })
        ));
        assert_eq!(stored[2], Stored::New(1));
    }
}
