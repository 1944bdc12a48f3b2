//! How a Durable Stream lives in the log: one log stream per stream path, holding
//! data records and control records, and the replay that rebuilds a stream's state
//! from them.
//!
//! Every record's payload starts with a tag byte: [`DATA`] (the rest is message bytes:
//! one appended body, or one JSON message in JSON mode) or [`CONTROL`] (the rest is a
//! JSON [`Control`]). An append is one log batch — its data records followed by a
//! control record carrying the producer tuple, `Stream-Seq` and the close flag — so the
//! log's all-or-nothing batches make producer state and data commit together: after a
//! crash either both are there or neither is.
//!
//! Positions: a stream offset is a *virtual position* `v`. Own records of an
//! incarnation map to `v = log_offset + delta`; a fork inherits its source's records
//! with `v < fork point` through a [`Piece`] list (resolved at fork creation and stored
//! in its `Create` record, so replay never needs the source).
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tidegate_log::{EventLog, LogError};

pub const DATA: u8 = 0;
pub const CONTROL: u8 = 1;

/// A contiguous range of virtual positions served by one log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub log: String,
    pub from_v: u64,
    /// Exclusive end; `None`: open (the stream's own, growing part).
    pub to_v: Option<u64>,
    /// `v = log_offset + delta`.
    pub delta: i64,
}

/// What a `PUT` asked for, kept to answer a repeated `PUT` (idempotent or 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Requested {
    pub content_type: Option<String>,
    pub ttl: Option<u64>,
    pub expires_at_ms: Option<i64>,
    pub fork_from: Option<String>,
    pub fork_offset: Option<u64>,
    pub sub_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTuple {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Control {
    Create {
        content_type: String,
        ttl: Option<u64>,
        expires_at: Option<String>,
        expires_at_ms: Option<i64>,
        closed: bool,
        requested: Requested,
        /// Inherited pieces (forks); the own piece starts at `base_v`.
        inherited: Vec<Piece>,
        base_v: Option<u64>,
    },
    /// Trails the data records of an append (same batch), or stands alone for a close.
    Append {
        producer: Option<ProducerTuple>,
        stream_seq: Option<String>,
        close: bool,
    },
    Delete,
    /// A fork of this stream was created (`add`) or went away.
    ForkRef {
        fork: String,
        add: bool,
    },
}

pub fn data_payload(bytes: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(DATA);
    v.extend_from_slice(bytes);
    Bytes::from(v)
}

pub fn control_payload(c: &Control) -> Bytes {
    let mut v = vec![CONTROL];
    // Serializing a plain enum of strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut v, c);
    Bytes::from(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Missing,
    Live,
    /// Deleted while forks still read its data: 410 for direct access.
    SoftDeleted,
}

/// What readers need, published after every committed change.
#[derive(Debug, Clone)]
pub struct Meta {
    pub status: Status,
    pub content_type: String,
    pub ttl: Option<u64>,
    pub expires_at: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub closed: bool,
    /// Virtual position after the last data record.
    pub tail: u64,
    /// First virtual position of the incarnation (offset `-1`).
    pub start: u64,
    pub pieces: Arc<Vec<Piece>>,
    pub requested: Requested,
    /// Paths of live forks reading this stream's data.
    pub forks: BTreeSet<String>,
    /// Log offset of the `Create` record: distinguishes incarnations (ETags).
    pub incarnation: u64,
}

impl Meta {
    pub fn missing() -> Meta {
        Meta {
            status: Status::Missing,
            content_type: String::new(),
            ttl: None,
            expires_at: None,
            expires_at_ms: None,
            closed: false,
            tail: 0,
            start: 0,
            pieces: Arc::new(Vec::new()),
            requested: Requested::default(),
            forks: BTreeSet::new(),
            incarnation: 0,
        }
    }

    pub fn is_json(&self) -> bool {
        is_json(&self.content_type)
    }

    /// `delta` of the own (last, open) piece.
    pub fn own_delta(&self) -> i64 {
        self.pieces.last().map_or(0, |p| p.delta)
    }
}

pub fn is_json(ct: &str) -> bool {
    media_type(ct) == "application/json"
}

/// The media type without parameters, lowercased: what content types are compared by.
pub fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
}

/// What only writers need (behind the entry's write lock).
#[derive(Debug, Default, Clone)]
pub struct WriterState {
    pub producers: HashMap<String, ProducerState>,
    pub last_stream_seq: Option<String>,
    /// The producer tuple whose append closed the stream.
    pub closed_by: Option<ProducerTuple>,
}

/// Applies one record at `offset` to the state (replay and live updates share this).
pub fn apply(meta: &mut Meta, w: &mut WriterState, log: &str, offset: u64, payload: &[u8]) {
    let Some((&tag, rest)) = payload.split_first() else {
        return;
    };
    if tag == DATA {
        if meta.status != Status::Missing {
            meta.tail = v_of(offset, meta.own_delta()) + 1;
        }
        return;
    }
    let Ok(c) = serde_json::from_slice::<Control>(rest) else {
        tracing::warn!(
            stream = log,
            offset,
            "Skipping an unreadable stream control record."
        );
        return;
    };
    match c {
        Control::Create {
            content_type,
            ttl,
            expires_at,
            expires_at_ms,
            closed,
            requested,
            inherited,
            base_v,
        } => {
            let (delta, start_v) = match base_v {
                // Own records after the create record start at the fork point.
                Some(base) => (base as i64 - offset as i64 - 1, base),
                None => (0, offset + 1),
            };
            let start = inherited.first().map_or(start_v, |p| p.from_v.min(start_v));
            let mut pieces = inherited;
            pieces.push(Piece {
                log: log.to_owned(),
                from_v: start_v,
                to_v: None,
                delta,
            });
            let forks = std::mem::take(&mut meta.forks);
            *meta = Meta {
                status: Status::Live,
                content_type,
                ttl,
                expires_at,
                expires_at_ms,
                closed,
                tail: start_v,
                start,
                pieces: Arc::new(pieces),
                requested,
                forks,
                incarnation: offset,
            };
            *w = WriterState::default();
        }
        Control::Append {
            producer,
            stream_seq,
            close,
        } => {
            if let Some(p) = &producer {
                w.producers.insert(
                    p.id.clone(),
                    ProducerState {
                        epoch: p.epoch,
                        last_seq: p.seq,
                    },
                );
            }
            if stream_seq.is_some() {
                w.last_stream_seq = stream_seq;
            }
            if close && !meta.closed {
                meta.closed = true;
                w.closed_by = producer;
            }
        }
        Control::Delete => {
            meta.status = if meta.forks.is_empty() {
                Status::Missing
            } else {
                Status::SoftDeleted
            };
        }
        Control::ForkRef { fork, add } => {
            if add {
                meta.forks.insert(fork);
            } else {
                meta.forks.remove(&fork);
                if meta.status == Status::SoftDeleted && meta.forks.is_empty() {
                    meta.status = Status::Missing;
                }
            }
        }
    }
}

pub fn v_of(offset: u64, delta: i64) -> u64 {
    (offset as i64 + delta).max(0) as u64
}

/// Rebuilds a stream's state by reading its whole log stream.
pub async fn replay(log: &dyn EventLog, name: &str) -> Result<(Meta, WriterState), LogError> {
    let mut meta = Meta::missing();
    let mut w = WriterState::default();
    let bounds = match log.bounds(name) {
        Ok(b) => b,
        Err(LogError::UnknownStream(_)) => return Ok((meta, w)),
        Err(e) => return Err(e),
    };
    let mut from = bounds.first;
    while from < bounds.next {
        let recs = log.read(name, from, 1024, 4 << 20).await?;
        let Some(last) = recs.last() else { break };
        from = last.offset + 1;
        for r in &recs {
            apply(&mut meta, &mut w, name, r.offset, &r.payload);
        }
    }
    Ok((meta, w))
}
