//! Ingestion routes and reliable delivery: "accept, store durably, acknowledge
//! at once", then hand every stored message to a backend at the rate it can
//! take, without losing or silently dropping anything.
//!
//! - [`config`] — `[[routes]]`: the ingestion endpoint and its delivery settings.
//! - [`envelope`] — the stored form of a request, of a dead letter, of a tombstone.
//! - [`worker`] — one delivery worker per route: reads the route's stream from
//!   its named consumer's committed position, delivers with a rate limit, a
//!   concurrency limit, a timeout, retries and a breaker per backend, and
//!   commits only up to the oldest message not yet finished. In cluster mode a
//!   route's worker runs on one node at a time: the one holding the route's
//!   [`tidegate_log::Lease`]; when that node dies the lease, and the work from the
//!   committed position on, moves to another (at-least-once).
//! - this module — [`Delivery`], the owner of every route's runtime state:
//!   counters, breakers, the dead-letter index, and the operations of the
//!   internal API (status, DLQ list / inspect / replay / delete, metrics).
//!
//! Data path: ingest handler → `append(<stream>)` → worker → backend, or
//! `append(<stream>.dlq)`. A DLQ replay appends the original envelope to
//! `<stream>` again (same message id) and a tombstone to the DLQ.
#![forbid(unsafe_code)]

pub mod config;
pub mod envelope;
pub mod worker;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tidegate_flow::breaker::{Breaker, BreakerConfig, FailureThreshold};
use tidegate_log::{AppendRecord, EventLog, LogError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{DeliveryConfig, RouteConfig};
pub use envelope::{DeadLetter, DlqRecord, Envelope, Tombstone};

/// Name of the named consumer every delivery worker commits under.
pub const CONSUMER: &str = "delivery";

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("route `{0}`: {1}")]
    Config(String, String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("no dead letter at offset {0}")]
    NoDeadLetter(u64),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// === Stats ===

/// Counters of one route. The worker and the ingest handler increment; the
/// status endpoint and `/metrics` read.
#[derive(Debug, Default)]
pub struct Stats {
    pub ingested: AtomicU64,
    pub ingest_duplicates: AtomicU64,
    pub ingest_rejected: AtomicU64,
    pub delivered: AtomicU64,
    /// Retries scheduled (an attempt failed and another will follow).
    pub retried: AtomicU64,
    /// Attempts that failed (connect error, timeout, 408/429/5xx, or 4xx).
    pub failed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub replayed: AtomicU64,
    /// Messages read and not yet delivered or dead-lettered.
    pub in_flight: AtomicUsize,
    /// Last position the worker committed.
    pub committed: AtomicU64,
    /// This node holds the route's delivery lease and runs its worker.
    pub delivering: AtomicBool,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

// === Route ===

/// A backend URL and its breaker.
pub struct Backend {
    pub url: String,
    pub breaker: Breaker,
}

/// What the DLQ index remembers of a live dead letter (the body stays in the log).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterInfo {
    /// Offset in `<stream>.dlq`: the handle for inspect / replay / delete.
    pub offset: u64,
    /// Offset of the message in the route's stream.
    pub source_offset: u64,
    pub id: String,
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub received_ms: u64,
    pub dead_ms: u64,
    pub content_type: String,
    pub body_bytes: usize,
}

impl DeadLetterInfo {
    fn new(offset: u64, d: &DeadLetter) -> Self {
        let env = Envelope::decode(d.envelope.clone()).ok();
        DeadLetterInfo {
            offset,
            source_offset: d.source_offset,
            id: env.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
            reason: d.reason.clone(),
            attempts: d.attempts,
            last_status: d.last_status,
            received_ms: env.as_ref().map_or(0, |e| e.received_ms),
            dead_ms: d.dead_ms,
            content_type: env
                .as_ref()
                .map(|e| e.content_type.clone())
                .unwrap_or_default(),
            body_bytes: env.as_ref().map_or(0, |e| e.body.len()),
        }
    }
}

/// Which dead letters a list or a bulk replay applies to: every field that is set must
/// match, and an empty filter matches all.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DlqFilter {
    /// The backend's last HTTP status was this.
    pub status: Option<u16>,
    /// The reason contains this text (`422`, `breaker open`, `timed out`, …).
    pub reason: Option<String>,
    /// The message id is this.
    pub id: Option<String>,
    /// Dead-lettered at or after this time (ms since the epoch).
    pub dead_after_ms: Option<u64>,
    /// Dead-lettered before this time (ms since the epoch).
    pub dead_before_ms: Option<u64>,
}

impl DlqFilter {
    pub fn is_empty(&self) -> bool {
        *self == DlqFilter::default()
    }

    pub fn matches(&self, d: &DeadLetterInfo) -> bool {
        self.status.is_none_or(|s| d.last_status == Some(s))
            && self.reason.as_deref().is_none_or(|r| d.reason.contains(r))
            && self.id.as_deref().is_none_or(|id| d.id == id)
            && self.dead_after_ms.is_none_or(|t| d.dead_ms >= t)
            && self.dead_before_ms.is_none_or(|t| d.dead_ms < t)
    }
}

/// One route's runtime state, shared by its ingest handler, worker and the API.
pub struct Route {
    pub config: RouteConfig,
    pub stream: String,
    pub dlq_stream: String,
    pub stats: Stats,
    pub backends: Vec<Backend>,
    /// The compiled `json_schema`, if the route has one (compiled once in
    /// [`Delivery::open`]; validation takes no lock).
    schema: Option<jsonschema::Validator>,
    /// Live dead letters by DLQ offset.
    dlq: Mutex<BTreeMap<u64, DeadLetterInfo>>,
    /// Serializes replay / delete so a dead letter is replayed once.
    dlq_ops: tokio::sync::Mutex<()>,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the route validates bodies against a JSON Schema.
    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }

    /// Checks a JSON body against the route's schema (always `Ok` without
    /// one). The error holds at most [`MAX_VIOLATIONS`] violations, each
    /// message cut to [`MAX_VIOLATION_MESSAGE`] bytes, and whether there were
    /// more.
    pub fn check_schema(&self, body: &serde_json::Value) -> Result<(), SchemaViolations> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        if schema.is_valid(body) {
            return Ok(());
        }
        let mut violations: Vec<Violation> = schema
            .iter_errors(body)
            .take(MAX_VIOLATIONS + 1)
            .map(|e| Violation {
                path: e.instance_path().to_string(),
                message: truncate(e.to_string(), MAX_VIOLATION_MESSAGE),
            })
            .collect();
        let more = violations.len() > MAX_VIOLATIONS;
        violations.truncate(MAX_VIOLATIONS);
        Err(SchemaViolations { violations, more })
    }
}

/// Violations reported for one body at most.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest violation message, in bytes (longer ones end with `…`).
pub const MAX_VIOLATION_MESSAGE: usize = 200;

/// One reason a body does not match its route's JSON Schema.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// JSON Pointer into the body (`""` = the whole body).
    pub path: String,
    pub message: String,
}

/// Why a body does not match its route's JSON Schema.
#[derive(Debug, Clone)]
pub struct SchemaViolations {
    pub violations: Vec<Violation>,
    /// More violations than [`MAX_VIOLATIONS`] were found.
    pub more: bool,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Status of a route, as `GET /v3/routes/{name}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub method: String,
    pub path: String,
    pub stream: String,
    /// Offset the next ingested message gets.
    pub next: u64,
    /// The worker's committed position (next offset to deliver).
    pub committed: u64,
    /// `next − committed`: stored and not yet known delivered.
    pub backlog: u64,
    pub in_flight: usize,
    /// Whether this node delivers the route now (holds its lease; in a cluster one node
    /// at a time).
    pub delivering: bool,
    pub ingested: u64,
    pub ingest_duplicates: u64,
    pub ingest_rejected: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub replayed: u64,
    /// Live dead letters (not replayed or deleted).
    pub dlq_size: usize,
    /// Age of the oldest message not yet delivered, if any.
    pub oldest_undelivered_age_ms: Option<u64>,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub url: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    pub breaker_transitions: u64,
}

/// A dead letter in full, for `GET /v3/routes/{name}/dlq/{offset}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub info: DeadLetterInfo,
    pub method: String,
    pub path: String,
    pub query: String,
    pub client: String,
    pub headers: Vec<(String, String)>,
    /// The body when it is UTF-8 text.
    pub body: Option<String>,
}

// === Delivery ===

/// Every route, their workers, and the internal API's operations.
pub struct Delivery {
    log: Arc<dyn EventLog>,
    routes: Vec<Arc<Route>>,
}

impl Delivery {
    /// Creates the routes' streams and loads their DLQ indexes.
    pub async fn open(
        log: Arc<dyn EventLog>,
        configs: Vec<RouteConfig>,
    ) -> Result<Arc<Delivery>, DeliveryError> {
        config::validate_routes(&configs).map_err(|(k, m)| DeliveryError::Config(k, m))?;
        // Every schema compiles before any stream is created.
        let schemas = configs
            .iter()
            .map(RouteConfig::compile_schema)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(k, m)| DeliveryError::Config(k, m))?;
        let mut routes = Vec::with_capacity(configs.len());
        for (config, schema) in configs.into_iter().zip(schemas) {
            let stream = config.stream().to_string();
            let dlq_stream = config.dlq_stream();
            log.ensure_stream(&stream).await?;
            log.ensure_stream(&dlq_stream).await?;
            let breaker_cfg = BreakerConfig {
                failure_threshold: FailureThreshold::Consecutive(config.delivery.breaker_failures),
                open_duration: Duration::from_millis(config.delivery.breaker_open_ms),
                half_open_max_calls: 1,
                success_threshold: 1,
            };
            let mut backends = Vec::new();
            for url in &config.delivery.backends {
                let breaker = Breaker::new(breaker_cfg.clone())
                    .map_err(|e| DeliveryError::Config(config.name.clone(), e.to_string()))?;
                backends.push(Backend {
                    url: url.clone(),
                    breaker,
                });
            }
            let committed = log
                .consumer_position(&stream, CONSUMER)
                .await?
                .unwrap_or_else(|| log.bounds(&stream).map_or(0, |b| b.first));
            let route = Route {
                stats: Stats::default(),
                backends,
                schema,
                dlq: Mutex::new(load_dlq(log.as_ref(), &dlq_stream).await?),
                dlq_ops: tokio::sync::Mutex::new(()),
                config,
                stream,
                dlq_stream,
            };
            route.stats.committed.store(committed, Ordering::Relaxed);
            routes.push(Arc::new(route));
        }
        Ok(Arc::new(Delivery { log, routes }))
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn route(&self, name: &str) -> Result<&Arc<Route>, DeliveryError> {
        self.routes
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| DeliveryError::UnknownRoute(name.to_string()))
    }

    /// Spawns one worker per route that has backends; they stop on `shutdown`
    /// after committing what is finished.
    pub fn spawn(
        &self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), DeliveryError> {
        for route in &self.routes {
            if route.backends.is_empty() {
                continue;
            }
            // Validate now, so a bad route fails start-up rather than its supervisor.
            worker::Worker::new(self.log.clone(), route.clone())?;
            tasks.spawn(supervise(self.log.clone(), route.clone(), shutdown.clone()));
        }
        Ok(())
    }

    pub async fn status(&self, name: &str) -> Result<RouteStatus, DeliveryError> {
        let route = self.route(name)?;
        let s = &route.stats;
        let bounds = self.log.bounds(&route.stream)?;
        let committed = get(&s.committed).max(bounds.first);
        let oldest_undelivered_age_ms = if committed < bounds.next {
            let recs = self.log.read(&route.stream, committed, 1, 1).await?;
            recs.first()
                .map(|r| now_ms().saturating_sub(r.timestamp_ms))
        } else {
            None
        };
        Ok(RouteStatus {
            name: route.config.name.clone(),
            method: route.config.method.to_ascii_uppercase(),
            path: route.config.path.clone(),
            stream: route.stream.clone(),
            next: bounds.next,
            committed,
            backlog: bounds.next.saturating_sub(committed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            delivering: s.delivering.load(Ordering::Relaxed),
            ingested: get(&s.ingested),
            ingest_duplicates: get(&s.ingest_duplicates),
            ingest_rejected: get(&s.ingest_rejected),
            delivered: get(&s.delivered),
            retried: get(&s.retried),
            failed: get(&s.failed),
            dead_lettered: get(&s.dead_lettered),
            replayed: get(&s.replayed),
            dlq_size: route.dlq.lock().len(),
            oldest_undelivered_age_ms,
            backends: route
                .backends
                .iter()
                .map(|b| BackendStatus {
                    url: b.url.clone(),
                    breaker: b.breaker.state().as_str(),
                    breaker_transitions: b.breaker.transitions(),
                })
                .collect(),
        })
    }

    pub async fn statuses(&self) -> Result<Vec<RouteStatus>, DeliveryError> {
        let mut out = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            out.push(self.status(r.name()).await?);
        }
        Ok(out)
    }

    /// Live dead letters with DLQ offset `>= from`, oldest first.
    pub fn dlq_list(
        &self,
        name: &str,
        from: u64,
        limit: usize,
        filter: &DlqFilter,
    ) -> Result<Vec<DeadLetterInfo>, DeliveryError> {
        let route = self.route(name)?;
        let dlq = route.dlq.lock();
        Ok(dlq
            .range(from..)
            .filter(|(_, d)| filter.matches(d))
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn read_dead_letter(
        &self,
        route: &Route,
        offset: u64,
    ) -> Result<DeadLetter, DeliveryError> {
        if !route.dlq.lock().contains_key(&offset) {
            return Err(DeliveryError::NoDeadLetter(offset));
        }
        let recs = self.log.read(&route.dlq_stream, offset, 1, 1).await?;
        match recs.into_iter().next() {
            Some(r) if r.offset == offset => match DlqRecord::decode(r.payload) {
                Ok(DlqRecord::DeadLetter(d)) => Ok(d),
                _ => Err(DeliveryError::NoDeadLetter(offset)),
            },
            // Gone by retention.
            _ => {
                route.dlq.lock().remove(&offset);
                Err(DeliveryError::NoDeadLetter(offset))
            }
        }
    }

    pub async fn dlq_get(
        &self,
        name: &str,
        offset: u64,
    ) -> Result<DeadLetterDetail, DeliveryError> {
        let route = self.route(name)?;
        let d = self.read_dead_letter(route, offset).await?;
        let info = DeadLetterInfo::new(offset, &d);
        let env = Envelope::decode(d.envelope).ok();
        Ok(DeadLetterDetail {
            info,
            method: env.as_ref().map(|e| e.method.clone()).unwrap_or_default(),
            path: env.as_ref().map(|e| e.path.clone()).unwrap_or_default(),
            query: env.as_ref().map(|e| e.query.clone()).unwrap_or_default(),
            client: env.as_ref().map(|e| e.client.clone()).unwrap_or_default(),
            headers: env
                .as_ref()
                .map(|e| {
                    e.headers
                        .iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            body: env.and_then(|e| String::from_utf8(e.body.to_vec()).ok()),
        })
    }

    /// Replays one dead letter (`Some(offset)`) or all of them: the original
    /// envelope (same message id) is appended to the route's stream again and
    /// a tombstone to the DLQ. Returns the DLQ offsets replayed.
    ///
    /// A crash between the two appends replays the message again later: the
    /// backend sees the same `Idempotency-Key` twice (at-least-once).
    pub async fn dlq_replay(
        &self,
        name: &str,
        offset: Option<u64>,
        filter: &DlqFilter,
    ) -> Result<Vec<u64>, DeliveryError> {
        let route = self.route(name)?;
        let _serial = route.dlq_ops.lock().await;
        let offsets: Vec<u64> = match offset {
            Some(o) => vec![o],
            None => route
                .dlq
                .lock()
                .iter()
                .filter(|(_, d)| filter.matches(d))
                .map(|(o, _)| *o)
                .collect(),
        };
        let mut done = Vec::with_capacity(offsets.len());
        for chunk in offsets.chunks(100) {
            let mut letters = Vec::with_capacity(chunk.len());
            for &o in chunk {
                match self.read_dead_letter(route, o).await {
                    Ok(d) => letters.push((o, d)),
                    Err(DeliveryError::NoDeadLetter(_)) if offset.is_none() => {}
                    Err(e) => return Err(e),
                }
            }
            if letters.is_empty() {
                continue;
            }
            let records = letters
                .iter()
                .map(|(_, d)| AppendRecord {
                    dedup_key: None,
                    payload: d.envelope.clone(),
                })
                .collect();
            self.log.append(&route.stream, records).await?;
            let tombstones = letters
                .iter()
                .map(|(o, _)| AppendRecord {
                    dedup_key: None,
                    payload: Tombstone::Replayed(*o).encode(),
                })
                .collect();
            self.log.append(&route.dlq_stream, tombstones).await?;
            let mut dlq = route.dlq.lock();
            for (o, _) in &letters {
                dlq.remove(o);
                done.push(*o);
            }
            route
                .stats
                .replayed
                .fetch_add(letters.len() as u64, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// Deletes a dead letter: a tombstone is appended (the log is append-only;
    /// retention removes the bytes later) and it leaves the index.
    pub async fn dlq_delete(&self, name: &str, offset: u64) -> Result<(), DeliveryError> {
        let route = self.route(name)?;
        let _serial = route.dlq_ops.lock().await;
        if !route.dlq.lock().contains_key(&offset) {
            return Err(DeliveryError::NoDeadLetter(offset));
        }
        self.log
            .append(
                &route.dlq_stream,
                vec![AppendRecord {
                    dedup_key: None,
                    payload: Tombstone::Deleted(offset).encode(),
                }],
            )
            .await?;
        route.dlq.lock().remove(&offset);
        Ok(())
    }

    /// Prometheus exposition of every route's counters, labelled by route.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        if self.routes.is_empty() {
            return out;
        }
        type Read = fn(&Route) -> u64;
        let counters: [(&str, &str, Read); 8] = [
            ("ingested", "Messages accepted on ingestion routes", |r| {
                get(&r.stats.ingested)
            }),
            (
                "ingest_duplicates",
                "Ingestion requests answered from the Idempotency-Key dedup",
                |r| get(&r.stats.ingest_duplicates),
            ),
            (
                "ingest_rejected",
                "Ingestion requests refused (4xx/5xx)",
                |r| get(&r.stats.ingest_rejected),
            ),
            ("delivered", "Messages delivered to a backend (2xx)", |r| {
                get(&r.stats.delivered)
            }),
            ("retried", "Delivery retries scheduled", |r| {
                get(&r.stats.retried)
            }),
            ("failed_attempts", "Delivery attempts that failed", |r| {
                get(&r.stats.failed)
            }),
            (
                "dead_lettered",
                "Messages moved to the dead-letter queue",
                |r| get(&r.stats.dead_lettered),
            ),
            ("replayed", "Dead letters replayed", |r| {
                get(&r.stats.replayed)
            }),
        ];
        for (name, help, read) in counters {
            let _ = writeln!(
                out,
                "# HELP tidegate_route_{name} {help}\n# TYPE tidegate_route_{name} counter"
            );
            for r in &self.routes {
                let _ = writeln!(
                    out,
                    "tidegate_route_{name}_total{{route=\"{}\"}} {}",
                    r.name(),
                    read(r)
                );
            }
        }
        let gauges: [(&str, &str, Read); 4] = [
            (
                "in_flight",
                "Messages being delivered (the in-flight window)",
                |r| r.stats.in_flight.load(Ordering::Relaxed) as u64,
            ),
            ("committed", "Committed delivery position", |r| {
                get(&r.stats.committed)
            }),
            ("dlq_size", "Live dead letters", |r| {
                r.dlq.lock().len() as u64
            }),
            (
                "breakers_open",
                "Backends whose breaker is not closed",
                |r| {
                    r.backends
                        .iter()
                        .filter(|b| b.breaker.state() != tidegate_flow::breaker::State::Closed)
                        .count() as u64
                },
            ),
        ];
        for (name, help, read) in gauges {
            let _ = writeln!(
                out,
                "# HELP tidegate_route_{name} {help}\n# TYPE tidegate_route_{name} gauge"
            );
            for r in &self.routes {
                let _ = writeln!(
                    out,
                    "tidegate_route_{name}{{route=\"{}\"}} {}",
                    r.name(),
                    read(r)
                );
            }
        }
        let _ = writeln!(out, "# HELP tidegate_route_backlog Stored messages not yet known delivered\n# TYPE tidegate_route_backlog gauge");
        for r in &self.routes {
            let next = self.log.bounds(&r.stream).map_or(0, |b| b.next);
            let _ = writeln!(
                out,
                "tidegate_route_backlog{{route=\"{}\"}} {}",
                r.name(),
                next.saturating_sub(get(&r.stats.committed))
            );
        }
        out
    }
}

/// Rebuilds the live dead letters of a DLQ stream: dead letters minus tombstones.
async fn load_dlq(
    log: &dyn EventLog,
    stream: &str,
) -> Result<BTreeMap<u64, DeadLetterInfo>, DeliveryError> {
    let mut live = BTreeMap::new();
    let mut from = 0;
    loop {
        let recs = log.read(stream, from, 1000, 4 << 20).await?;
        let Some(last) = recs.last() else { break };
        from = last.offset + 1;
        for r in recs {
            match DlqRecord::decode(r.payload) {
                Ok(DlqRecord::DeadLetter(d)) => {
                    live.insert(r.offset, DeadLetterInfo::new(r.offset, &d));
                }
                Ok(DlqRecord::Tombstone(Tombstone::Replayed(o) | Tombstone::Deleted(o))) => {
                    live.remove(&o);
                }
                Err(e) => {
                    tracing::warn!(stream, offset = r.offset, error = %e, "Skipping an unreadable DLQ record")
                }
            }
        }
    }
    Ok(live)
}

impl Route {
    /// Records a dead letter appended at `offset` (called by the worker).
    pub(crate) fn add_dead_letter(&self, offset: u64, d: &DeadLetter) {
        self.dlq
            .lock()
            .insert(offset, DeadLetterInfo::new(offset, d));
    }
}

/// Appends a dead letter to the route's DLQ, retrying until it is stored or
/// `shutdown` fires (then the message stays uncommitted and is retried after
/// the restart).
pub(crate) async fn store_dead_letter(
    log: &dyn EventLog,
    route: &Route,
    d: DeadLetter,
) -> Option<u64> {
    let payload: Bytes = d.encode();
    let mut wait = Duration::from_millis(50);
    loop {
        let rec = AppendRecord {
            dedup_key: None,
            payload: payload.clone(),
        };
        match log.append(&route.dlq_stream, vec![rec]).await {
            Ok(a) => {
                let offset = a.first().map(|a| a.offset())?;
                route.add_dead_letter(offset, &d);
                route.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                return Some(offset);
            }
            Err(e) => {
                tracing::warn!(route = route.name(), error = %e, "Dead letter could not be stored; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the route's worker while this node holds the route's lease; stops it when the
/// lease is lost (another node took over) and competes again.
async fn supervise(log: Arc<dyn EventLog>, route: Arc<Route>, shutdown: CancellationToken) {
    let name = format!("delivery.{}", route.name());
    let mut wait = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let mut lease = match log.lease(&name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(route = route.name(), error = %e, "Cannot compete for the delivery lease; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        wait = Duration::from_millis(200);
        // Wait until held.
        loop {
            if *lease.held.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = lease.held.changed() => if changed.is_err() { break },
            }
        }
        if !*lease.held.borrow() {
            continue; // the lease ended without being won: compete again
        }
        let worker = match worker::Worker::new(log.clone(), route.clone()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(route = route.name(), error = %e, "Delivery worker cannot start");
                return;
            }
        };
        tracing::info!(
            route = route.name(),
            "Delivery lease held: this node delivers the route"
        );
        route.stats.delivering.store(true, Ordering::Relaxed);
        let stop = shutdown.child_token();
        let run = worker.run(stop.clone());
        tokio::pin!(run);
        let lost = loop {
            tokio::select! {
                () = &mut run => break false,
                changed = lease.held.changed() => {
                    if changed.is_err() || !*lease.held.borrow() {
                        break true;
                    }
                }
            }
        };
        if lost {
            tracing::warn!(
                route = route.name(),
                "Delivery lease lost: stopping this node's worker"
            );
            stop.cancel();
            run.await;
            route.stats.delivering.store(false, Ordering::Relaxed);
        } else {
            route.stats.delivering.store(false, Ordering::Relaxed);
            // The worker stopped by itself (the log closed, or shutdown): don't spin.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_with_schema(schema: &str) -> Route {
        let config = RouteConfig {
            name: "leads".into(),
            path: "/leads".into(),
            json_schema: Some(schema.into()),
            ..Default::default()
        };
        Route {
            schema: config.compile_schema().unwrap(),
            stream: config.stream().into(),
            dlq_stream: config.dlq_stream(),
            config,
            stats: Stats::default(),
            backends: Vec::new(),
            dlq: Mutex::new(BTreeMap::new()),
            dlq_ops: tokio::sync::Mutex::new(()),
        }
    }

    #[test]
    fn schema_violations_are_pointed_and_bounded() {
        let r = route_with_schema(
            r#"{"type": "object", "required": ["email"],
                "properties": {"email": {"type": "string"}},
                "additionalProperties": {"type": "integer"}}"#,
        );
        assert!(r.has_schema());
        r.check_schema(&serde_json::json!({"email": "a@b.c", "n": 1}))
            .unwrap();
        let e = r
            .check_schema(&serde_json::json!({"email": 5}))
            .unwrap_err();
        assert_eq!(e.violations.len(), 1, "{e:?}");
        assert_eq!(e.violations[0].path, "/email");
        assert!(!e.more);

        let mut body = serde_json::Map::new();
        body.insert("email".into(), "a@b.c".into());
        for i in 0..50 {
            body.insert(format!("k{i}"), "é".repeat(500).into());
        }
        let e = r.check_schema(&body.into()).unwrap_err();
        assert_eq!(e.violations.len(), MAX_VIOLATIONS);
        assert!(e.more);
        for v in &e.violations {
            assert!(v.message.len() <= MAX_VIOLATION_MESSAGE + '…'.len_utf8());
            assert!(v.message.ends_with('…'), "{v:?}");
        }

        let none = RouteConfig::default();
        assert!(none.compile_schema().unwrap().is_none());
    }

    #[test]
    fn dlq_filter_needs_every_given_field_to_match() {
        let d = DeadLetterInfo {
            offset: 7,
            source_offset: 3,
            id: "m-1".into(),
            reason: "gave up after 5 attempts: backend answered 503".into(),
            attempts: 5,
            last_status: Some(503),
            received_ms: 1_000,
            dead_ms: 2_000,
            content_type: "application/json".into(),
            body_bytes: 2,
        };
        let all = DlqFilter::default();
        assert!(all.is_empty() && all.matches(&d));
        let f = |f: DlqFilter| f.matches(&d);
        assert!(f(DlqFilter {
            status: Some(503),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            status: Some(422),
            ..Default::default()
        }));
        assert!(f(DlqFilter {
            reason: Some("answered 503".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            reason: Some("timed out".into()),
            ..Default::default()
        }));
        assert!(f(DlqFilter {
            id: Some("m-1".into()),
            ..Default::default()
        }));
        assert!(
            !f(DlqFilter {
                id: Some("m".into()),
                ..Default::default()
            }),
            "ids match whole"
        );
        assert!(f(DlqFilter {
            dead_after_ms: Some(2_000),
            dead_before_ms: Some(2_001),
            ..Default::default()
        }));
        assert!(
            !f(DlqFilter {
                dead_before_ms: Some(2_000),
                ..Default::default()
            }),
            "before is exclusive"
        );
        assert!(!f(DlqFilter {
            status: Some(503),
            id: Some("m-2".into()),
            ..Default::default()
        }));
        let breaker = DeadLetterInfo {
            last_status: None,
            ..d.clone()
        };
        assert!(!DlqFilter {
            status: Some(503),
            ..Default::default()
        }
        .matches(&breaker));
    }
}
