//! The delivery worker of one route.
//!
//! The worker reads the route's stream from the named consumer's committed
//! position and starts one task per message, keeping at most `window`
//! messages in flight. A message task loops until the message is finished —
//! delivered (2xx) or dead-lettered — waiting in turn for the route-wide
//! slow-down pause (set by `429`/`503` with `Retry-After`), the GCRA rate
//! limiter, a concurrency permit and a backend whose breaker admits the call.
//!
//! The committed position only moves up to the lowest offset still in flight,
//! so a crash or kill redelivers what was unfinished (at-least-once) and never
//! skips. Retries: exponential backoff with full jitter on connect errors,
//! timeouts, 408, 429 and 5xx; a `Retry-After` on 429/503 is honoured (capped)
//! and does not use up an attempt — it means "slow down", not "failed". Other
//! 4xx go to the DLQ at once; the rest after `max_attempts` or `max_age_secs`.
//!
//! Ordering: without `delivery.order_by` messages are delivered concurrently in
//! any order. With it, each message's key is taken from a kept header or a JSON
//! pointer into the body, and a message's task is only started once every
//! earlier message with the same key is finished (delivered or dead-lettered),
//! so one key has at most one message in flight — retries included — and its
//! messages reach the backend in log order. Messages waiting for their key are
//! held by the dispatcher and count against the window, so a hot key cannot
//! make the worker read ahead unboundedly. Messages without a key, and
//! messages with different keys, run concurrently.
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tidegate_flow::concurrency::{AdaptiveLimiter, AimdConfig, FixedLimiter, Limiter};
use tidegate_flow::rate::Gcra;
use tidegate_flow::retry::{classify, parse_retry_after, Backoff, Outcome};
use tidegate_log::{EventLog, Record};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::OrderBy;
use crate::envelope::{DeadLetter, Envelope};
use crate::{now_ms, store_dead_letter, DeliveryError, Route, CONSUMER};

/// Headers never copied from the stored request to the backend call.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];

/// How often the committed position is written at most.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// What every message task of a route shares.
struct Ctx {
    log: Arc<dyn EventLog>,
    route: Arc<Route>,
    client: reqwest::Client,
    method: reqwest::Method,
    rate: Option<Gcra>,
    /// Deliveries wait for the rate limit one at a time, first come first served
    /// (tokio's mutex is FIFO). Without it every waiter re-polls the limiter after its
    /// own sleep and an unlucky message can lose the race indefinitely — which also
    /// pins the committed position, so a crash would redeliver everything after it.
    rate_turn: tokio::sync::Mutex<()>,
    limiter: Limiter,
    backoff: Backoff,
    max_retry_after: Duration,
    max_age: Option<Duration>,
    /// Route-wide "slow down until" set by `Retry-After`.
    pause: Mutex<Instant>,
    /// Round-robin start over the backends.
    next_backend: std::sync::atomic::AtomicUsize,
    /// Where the per-key ordering key comes from, if the route orders.
    order_by: Option<OrderBy>,
}

/// The ordering key of a stored message, or `None` when it has none (the
/// header is absent, the body is not JSON, the pointer is missing or `null`)
/// and is delivered unordered. A JSON key is the value's compact JSON text, so
/// `"1"` and `1` are different keys.
fn order_key(order_by: &OrderBy, env: &Envelope) -> Option<Vec<u8>> {
    match order_by {
        OrderBy::Header(name) => env
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_vec()),
        OrderBy::Json(pointer) => {
            let body: serde_json::Value = serde_json::from_slice(&env.body).ok()?;
            match body.pointer(pointer)? {
                serde_json::Value::Null => None,
                v => serde_json::to_vec(v).ok(),
            }
        }
    }
}

/// Messages waiting for their key: a key has an entry while one of its
/// messages is running, holding the later ones in log order. Every message
/// here is also in the window, so this is bounded by it; empty entries are removed.
struct KeyQueues<T> {
    busy: HashMap<Vec<u8>, VecDeque<T>>,
}

impl<T> KeyQueues<T> {
    fn new() -> Self {
        KeyQueues {
            busy: HashMap::new(),
        }
    }

    /// A message of `key` was read: returns it when it may start now, or holds
    /// it behind the key's running message.
    fn admit(&mut self, key: Vec<u8>, msg: T) -> Option<T> {
        match self.busy.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.get_mut().push_back(msg);
                None
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(VecDeque::new());
                Some(msg)
            }
        }
    }

    /// The running message of `key` finished: returns the next one to start,
    /// or frees the key.
    fn finish(&mut self, key: &[u8]) -> Option<T> {
        let queue = self.busy.get_mut(key)?;
        let next = queue.pop_front();
        if next.is_none() {
            self.busy.remove(key);
        }
        next
    }

    /// Messages held back (not running).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.busy.values().map(VecDeque::len).sum()
    }
}

pub struct Worker {
    ctx: Arc<Ctx>,
}

fn config_error(route: &Route, e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Config(route.name().to_string(), e.to_string())
}

impl Worker {
    pub fn new(log: Arc<dyn EventLog>, route: Arc<Route>) -> Result<Worker, DeliveryError> {
        let d = &route.config.delivery;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(d.timeout_ms))
            .pool_max_idle_per_host(d.concurrency)
            .build()
            .map_err(|e| config_error(&route, e))?;
        let method = crate::config::http_method(&d.method)
            .ok_or_else(|| config_error(&route, "delivery.method"))?;
        let rate = if d.rate_per_second > 0.0 {
            Some(
                Gcra::new(d.rate_per_second, d.burst.max(1))
                    .map_err(|e| config_error(&route, e))?,
            )
        } else {
            None
        };
        let limiter: Limiter = if d.adaptive_concurrency {
            AdaptiveLimiter::new(AimdConfig {
                initial: d.concurrency.clamp(1, 4),
                min: 1,
                max: d.concurrency,
                latency_threshold: Duration::from_millis(d.timeout_ms / 2),
                ..AimdConfig::default()
            })
            .map_err(|e| config_error(&route, e))?
            .into()
        } else {
            FixedLimiter::new(d.concurrency)
                .map_err(|e| config_error(&route, e))?
                .into()
        };
        let max_retry_after = Duration::from_secs(d.max_retry_after_secs);
        let backoff = Backoff::new(
            Duration::from_millis(d.backoff_base_ms),
            Duration::from_millis(d.backoff_cap_ms),
        )
        .and_then(|b| b.with_max_attempts(d.max_attempts))
        .map_err(|e| config_error(&route, e))?
        .with_max_retry_after(max_retry_after);
        let max_age = Some(Duration::from_secs(d.max_age_secs)).filter(|a| !a.is_zero());
        let order_by = match &d.order_by {
            Some(o) => Some(OrderBy::parse(o).map_err(|e| config_error(&route, e))?),
            None => None,
        };
        Ok(Worker {
            ctx: Arc::new(Ctx {
                log,
                route,
                client,
                method,
                rate,
                rate_turn: tokio::sync::Mutex::new(()),
                limiter,
                backoff,
                max_retry_after,
                max_age,
                pause: Mutex::new(Instant::now()),
                next_backend: Default::default(),
                order_by,
            }),
        })
    }

    /// Runs until `shutdown`; then aborts unfinished deliveries and commits
    /// what is finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let ctx = self.ctx;
        let route = ctx.route.clone();
        let stream = route.stream.clone();
        let name = route.name().to_string();
        let window = route.config.delivery.window;
        let mut next_rx = match ctx.log.watch_next(&stream) {
            Ok(rx) => rx,
            Err(e) => {
                warn!(route = %name, error = %e, "Delivery worker cannot watch its stream");
                return;
            }
        };
        let first = ctx.log.bounds(&stream).map_or(0, |b| b.first);
        let start = match ctx.log.consumer_position(&stream, CONSUMER).await {
            Ok(Some(p)) if p < first => {
                warn!(route = %name, committed = p, first, "Undelivered messages were removed by retention");
                first
            }
            Ok(Some(p)) => p,
            Ok(None) => first,
            Err(e) => {
                warn!(route = %name, error = %e, "Delivery worker cannot read its position");
                return;
            }
        };
        info!(route = %name, from = start, "Delivery worker started");
        let mut next_read = start;
        let mut committed = start;
        let mut pending: BTreeSet<u64> = BTreeSet::new();
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Running tasks: their message and its ordering key.
        let mut records: HashMap<tokio::task::Id, (Record, Option<Vec<u8>>)> = HashMap::new();
        let mut keys: KeyQueues<Record> = KeyQueues::new();
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut read_error_wait = Duration::from_millis(50);

        loop {
            // Fill the window from the log.
            let available = *next_rx.borrow_and_update();
            if pending.len() < window && next_read < available {
                match ctx
                    .log
                    .read(&stream, next_read, window - pending.len(), 4 << 20)
                    .await
                {
                    Ok(batch) => {
                        read_error_wait = Duration::from_millis(50);
                        for rec in batch {
                            next_read = rec.offset + 1;
                            pending.insert(rec.offset);
                            // An unreadable envelope has no key: its task dead-letters it.
                            let key = ctx.order_by.as_ref().and_then(|o| {
                                let env = Envelope::decode(rec.payload.clone()).ok()?;
                                order_key(o, &env)
                            });
                            let start = match &key {
                                Some(k) => keys.admit(k.clone(), rec),
                                None => Some(rec),
                            };
                            if let Some(rec) = start {
                                let h = tasks.spawn(deliver(ctx.clone(), rec.clone()));
                                records.insert(h.id(), (rec, key));
                            }
                        }
                        route
                            .stats
                            .in_flight
                            .store(pending.len(), Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => {
                        warn!(route = %name, error = %e, "Delivery worker read failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(read_error_wait) => {}
                        }
                        read_error_wait = (read_error_wait * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, ())) => (id, Ok(())),
                        Err(e) => (e.id(), Err(e)),
                    };
                    let Some((rec, key)) = records.remove(&id) else { continue };
                    match outcome {
                        Ok(()) => {
                            pending.remove(&rec.offset);
                            route.stats.in_flight.store(pending.len(), Ordering::Relaxed);
                            // Delivered or dead-lettered: the key's next message may go.
                            if let Some(k) = key {
                                if let Some(next) = keys.finish(&k) {
                                    let h = tasks.spawn(deliver(ctx.clone(), next.clone()));
                                    records.insert(h.id(), (next, Some(k)));
                                }
                            }
                        }
                        Err(e) => {
                            // A bug, not a backend problem: try the message again rather
                            // than blocking the committed position forever. Its key stays
                            // busy, so the order holds.
                            warn!(route = %name, offset = rec.offset, error = %e, "Delivery task failed; restarting it");
                            let h = tasks.spawn(deliver(ctx.clone(), rec.clone()));
                            records.insert(h.id(), (rec, key));
                        }
                    }
                }
                changed = next_rx.changed(), if pending.len() < window => {
                    if changed.is_err() {
                        break; // log closed
                    }
                }
                _ = tick.tick() => {
                    committed = commit(&ctx, &pending, next_read, committed).await;
                }
            }
        }
        tasks.abort_all();
        while tasks.join_next_with_id().await.is_some() {}
        // Finished tasks that were not yet reaped were aborted after completing:
        // they stay pending and are redelivered (at-least-once), as do the messages
        // held back for their key.
        commit(&ctx, &pending, next_read, committed).await;
        route.stats.in_flight.store(0, Ordering::Relaxed);
        info!(route = %name, "Delivery worker stopped");
    }
}

/// Commits the lowest unfinished offset if it moved; returns the committed position.
async fn commit(ctx: &Ctx, pending: &BTreeSet<u64>, next_read: u64, committed: u64) -> u64 {
    let watermark = pending.first().copied().unwrap_or(next_read);
    if watermark <= committed {
        return committed;
    }
    match ctx
        .log
        .commit_consumer(&ctx.route.stream, CONSUMER, watermark)
        .await
    {
        Ok(()) => {
            ctx.route
                .stats
                .committed
                .store(watermark, Ordering::Relaxed);
            watermark
        }
        Err(e) => {
            warn!(route = ctx.route.name(), error = %e, "Committing the delivery position failed");
            committed
        }
    }
}

/// How one attempt went.
struct Attempt {
    outcome: Outcome,
    status: Option<u16>,
    retry_after: Option<Duration>,
    error: String,
}

async fn attempt(ctx: &Ctx, url: &str, env: &Envelope) -> Attempt {
    let d = &ctx.route.config.delivery;
    let mut req = ctx
        .client
        .request(ctx.method.clone(), url)
        .timeout(Duration::from_millis(d.timeout_ms))
        .header("idempotency-key", env.id.as_str())
        .body(env.body.clone());
    if !env.content_type.is_empty() {
        req = req.header(reqwest::header::CONTENT_TYPE, env.content_type.as_str());
    }
    if d.forward_headers {
        for (k, v) in &env.headers {
            if !NOT_FORWARDED.contains(&k.as_str()) {
                req = req.header(k.as_str(), v.as_ref());
            }
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Read the (small) answer so the connection goes back to the pool.
            let _ = resp.bytes().await;
            Attempt {
                outcome: classify(Some(status), false, false),
                status: Some(status),
                retry_after,
                error: format!("backend answered {status}"),
            }
        }
        Err(e) => Attempt {
            outcome: classify(None, e.is_timeout(), e.is_connect()),
            status: None,
            retry_after: None,
            error: if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connect error".to_string()
            } else {
                format!("request failed: {e}")
            },
        },
    }
}

/// The first backend (round-robin) whose breaker admits a call, or how long
/// until one might.
fn pick(ctx: &Ctx) -> Result<(usize, tidegate_flow::breaker::CallToken), Duration> {
    let backends = &ctx.route.backends;
    let start = ctx.next_backend.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut wait = Duration::MAX;
    for i in 0..backends.len() {
        let idx = (start + i) % backends.len();
        match backends[idx].breaker.allow(now) {
            Ok(token) => return Ok((idx, token)),
            Err(open) => wait = wait.min(open.retry_after),
        }
    }
    Err(wait)
}

/// Delivers one message until it is delivered or dead-lettered.
async fn deliver(ctx: Arc<Ctx>, rec: Record) {
    let route = &ctx.route;
    let env = match Envelope::decode(rec.payload.clone()) {
        Ok(e) => e,
        Err(e) => {
            dead_letter(&ctx, &rec, 0, None, format!("unreadable record: {e}")).await;
            return;
        }
    };
    let mut retries = ctx.backoff.start(Instant::now());
    let mut attempts = 0u32;
    loop {
        let until = *ctx.pause.lock();
        tokio::time::sleep_until(until).await;
        if let Some(rate) = &ctx.rate {
            let _turn = ctx.rate_turn.lock().await;
            rate.until_ready().await;
        }
        let permit = ctx.limiter.acquire().await;
        let (idx, token) = match pick(&ctx) {
            Ok(p) => p,
            Err(wait) => {
                drop(permit);
                if expired(&ctx, &rec, Duration::ZERO) {
                    let reason = format!("expired after {attempts} attempts (breaker open)");
                    dead_letter(&ctx, &rec, attempts, None, reason).await;
                    return;
                }
                let wait = wait.clamp(Duration::from_millis(5), Duration::from_secs(1));
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let started = Instant::now();
        let a = attempt(&ctx, &route.backends[idx].url, &env).await;
        let now = Instant::now();
        attempts += 1;
        match a.outcome {
            Outcome::Success => {
                permit.success(now - started);
                token.on_success(now);
                route.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Fatal => {
                // The backend is healthy and refuses this message: no retry helps.
                permit.success(now - started);
                token.on_success(now);
                route.stats.failed.fetch_add(1, Ordering::Relaxed);
                dead_letter(&ctx, &rec, attempts, a.status, a.error).await;
                return;
            }
            Outcome::Retry | Outcome::SlowDown => {
                token.on_failure(now);
                match a.outcome {
                    Outcome::SlowDown => permit.overloaded(),
                    _ if a.status.is_none() => permit.dropped(),
                    _ => drop(permit),
                }
                route.stats.failed.fetch_add(1, Ordering::Relaxed);
                let delay = match (a.outcome, a.retry_after) {
                    (Outcome::SlowDown, Some(ra)) => {
                        // "Slow down": the whole route waits, this message keeps its attempts.
                        attempts -= 1;
                        let ra = ra.min(ctx.max_retry_after);
                        let mut pause = ctx.pause.lock();
                        *pause = (*pause).max(now + ra);
                        Some(ra)
                    }
                    _ => retries.next_delay(now, None, &mut rand::rng()),
                };
                let Some(delay) = delay else {
                    let reason = format!("gave up after {attempts} attempts: {}", a.error);
                    dead_letter(&ctx, &rec, attempts, a.status, reason).await;
                    return;
                };
                if expired(&ctx, &rec, delay) {
                    let reason = format!("expired after {attempts} attempts: {}", a.error);
                    dead_letter(&ctx, &rec, attempts, a.status, reason).await;
                    return;
                }
                debug!(route = route.name(), offset = rec.offset, ?delay, error = %a.error, "Delivery failed; retrying");
                route.stats.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Whether the message would be older than `max_age` after waiting `delay`.
fn expired(ctx: &Ctx, rec: &Record, delay: Duration) -> bool {
    let Some(max) = ctx.max_age else { return false };
    let age = Duration::from_millis(now_ms().saturating_sub(rec.timestamp_ms));
    age.saturating_add(delay) > max
}

async fn dead_letter(
    ctx: &Ctx,
    rec: &Record,
    attempts: u32,
    last_status: Option<u16>,
    reason: String,
) {
    warn!(route = ctx.route.name(), offset = rec.offset, attempts, reason = %reason, "Message dead-lettered");
    let d = DeadLetter {
        source_offset: rec.offset,
        attempts,
        last_status,
        dead_ms: now_ms(),
        reason,
        envelope: rec.payload.clone(),
    };
    store_dead_letter(ctx.log.as_ref(), &ctx.route, d).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn env(headers: &[(&str, &str)], body: &str) -> Envelope {
        Envelope {
            id: "m".into(),
            received_ms: 0,
            method: "POST".into(),
            path: "/x".into(),
            query: String::new(),
            client: String::new(),
            content_type: "application/json".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn header_keys() {
        let o = OrderBy::parse("header:X-Customer").unwrap();
        let e = env(&[("x-tenant", "t"), ("x-customer", "c1")], "");
        assert_eq!(order_key(&o, &e), Some(b"c1".to_vec()));
        assert_eq!(order_key(&o, &env(&[("x-tenant", "t")], "{}")), None);
        assert_eq!(
            order_key(&o, &env(&[("x-customer", "")], "")),
            Some(Vec::new())
        );
    }

    #[test]
    fn json_keys() {
        let o = OrderBy::parse("json:/customer/id").unwrap();
        let k = |body: &str| order_key(&o, &env(&[], body));
        assert_eq!(k(r#"{"customer":{"id":"c1"}}"#), Some(br#""c1""#.to_vec()));
        assert_eq!(k(r#"{"customer":{"id":7}}"#), Some(b"7".to_vec()));
        assert_ne!(
            k(r#"{"customer":{"id":"7"}}"#),
            k(r#"{"customer":{"id":7}}"#)
        );
        assert_eq!(k(r#"{"customer":{"id":null}}"#), None);
        assert_eq!(k(r#"{"customer":{}}"#), None);
        assert_eq!(k(r#"{"customer":"c1"}"#), None);
        assert_eq!(k("not json"), None);
        assert_eq!(k(""), None);
        let o = OrderBy::parse("json:/a~1b").unwrap();
        assert_eq!(
            order_key(&o, &env(&[], r#"{"a/b":"x"}"#)),
            Some(br#""x""#.to_vec())
        );
    }

    #[test]
    fn key_queues_run_one_per_key_in_order() {
        let mut q = KeyQueues::new();
        assert_eq!(q.admit(b"a".to_vec(), 0), Some(0));
        assert_eq!(q.admit(b"b".to_vec(), 1), Some(1));
        assert_eq!(q.admit(b"a".to_vec(), 2), None);
        assert_eq!(q.admit(b"a".to_vec(), 3), None);
        assert_eq!(q.waiting(), 2);
        assert_eq!(q.finish(b"b"), None);
        assert!(!q.busy.contains_key(b"b".as_slice()));
        assert_eq!(q.finish(b"a"), Some(2));
        assert_eq!(q.admit(b"b".to_vec(), 4), Some(4));
        assert_eq!(q.finish(b"a"), Some(3));
        assert_eq!(q.finish(b"a"), None);
        assert_eq!(q.finish(b"b"), None);
        assert!(q.busy.is_empty());
        assert_eq!(q.finish(b"never"), None);
    }
}
