//! `subs --jitter-period S`: resume under jitter (BENCH.md scenario 5), Tidegate only.
//!
//! Every connection subscribes to one group of bench events (`<event-type>.<g>`, with
//! `g = connection number % --groups`; the publisher's `--type-groups` puts sequence
//! number `s` into group `s % G`) and follows its own random cut schedule: after
//! `--jitter-period ± --period-jitter` seconds it closes its socket abruptly (RST,
//! `SO_LINGER` 0), stays away `--outage ± --outage-jitter` seconds, and reconnects with
//! `Last-Event-ID: <last id seen>` (WebSocket: `?lastEventId=`). The schedule comes from
//! `--seed` and the connection number, so a run is reproducible.
//!
//! Per connection the received sequence numbers are kept as a set of ranges (memory
//! grows with the number of gaps, not with the number of events), so duplicates are
//! seen as they arrive and missing events are counted at the end against the
//! publisher's acknowledged sequence numbers, which the orchestrator writes into the
//! stop file as `{"sent": N, "failed": [seq, …]}`.
//!
//! Replay latency, per reconnect, measured from the moment the client starts the new
//! TCP connect (after the outage):
//! - `replay_first`: until the first *missed* event arrives, i.e. the first bench event
//!   of the new stream if it was published (`bench_ts`) before the reconnect started;
//! - `replay_catchup`: until the first event published after the reconnect started
//!   arrives: everything missed has been replayed and the stream is live again (the
//!   hub delivers in log order: replay first, then the events that arrived meanwhile).
//!
//! `--resume none|first` (default `last`) exists to check the checker: reconnecting
//! without `Last-Event-ID` must show missing events, resuming from the first id ever
//! seen must show duplicates.
//!
//! A connection is cut only once it has an id to resume from (a cut due before its
//! first event is postponed by 500 ms at a time).
//!
//! Cuts stop once `--calm-file` exists (connections that are away still come back), so
//! that the orchestrator can let every connection catch up before it stops the run.
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::subs::SseParser;

/// A set of `u64` kept as sorted, disjoint, non-adjacent half-open ranges.
#[derive(Default, Debug)]
pub struct RangeSet {
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Adds `x`; false if it was already there.
    pub fn insert(&mut self, x: u64) -> bool {
        // Fast path: the next number in order.
        if let Some(last) = self.r.last_mut() {
            if last.1 == x {
                last.1 += 1;
                return true;
            }
        }
        let i = self.r.partition_point(|&(a, _)| a <= x);
        if i > 0 && self.r[i - 1].1 > x {
            return false;
        }
        let joins_left = i > 0 && self.r[i - 1].1 == x;
        let joins_right = i < self.r.len() && self.r[i].0 == x + 1;
        match (joins_left, joins_right) {
            (true, true) => {
                self.r[i - 1].1 = self.r[i].1;
                self.r.remove(i);
            }
            (true, false) => self.r[i - 1].1 += 1,
            (false, true) => self.r[i].0 = x,
            (false, false) => self.r.insert(i, (x, x + 1)),
        }
        true
    }

    pub fn contains(&self, x: u64) -> bool {
        let i = self.r.partition_point(|&(a, _)| a <= x);
        i > 0 && self.r[i - 1].1 > x
    }

    /// How many members are `< n`.
    pub fn count_below(&self, n: u64) -> u64 {
        self.r
            .iter()
            .map(|&(a, b)| b.min(n).saturating_sub(a))
            .sum()
    }

    pub fn ranges(&self) -> usize {
        self.r.len()
    }
}

/// splitmix64: small, good enough for schedules, and reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

struct Cfg {
    ws: bool,
    addr: SocketAddr,
    rotate: bool,
    groups: u64,
    event_type: String,
    period: f64,
    period_jitter: f64,
    outage: f64,
    outage_jitter: f64,
    seed: u64,
    resume: ResumeMode,
    deadline: Instant,
}

#[derive(Clone, Copy, PartialEq)]
enum ResumeMode {
    Last,
    None,
    First,
}

/// What one connection saw over the whole run (all its sessions).
#[derive(Default)]
struct ConnStats {
    seen: RangeSet,
    received: u64,
    duplicates: u64,
    /// Bench events of another group (a subscription mismatch; should stay 0).
    foreign: u64,
    cuts: u32,
    reconnects: u32,
    reconnect_errors: u32,
    server_closes: u32,
}

struct Shared {
    stats: Vec<RefCell<ConnStats>>,
    replay_first: RefCell<Histogram<u64>>,
    replay_catchup: RefCell<Histogram<u64>>,
    /// Publish→receive of events published while the connection was up.
    live: RefCell<Histogram<u64>>,
    /// Publish→receive of replayed events (includes the time away).
    replayed: RefCell<Histogram<u64>>,
    ready: Cell<usize>,
    failed: Cell<usize>,
    calm: Cell<bool>,
    first_error: RefCell<Option<String>>,
    reconnect_error: RefCell<Option<String>>,
    /// Reconnects whose first event was already live (nothing was missed).
    nothing_missed: Cell<u64>,
    /// `tidegate.events_lost` notices (cursor older than retention).
    lost_notices: Cell<u64>,
    /// `tidegate.disconnect` notices (the gateway closed a stream on purpose).
    disconnect_notices: Cell<u64>,
    /// Resumed sessions that had not caught up when they ended (cut or stop).
    not_caught_up: Cell<u64>,
}

impl Shared {
    fn note_reconnect_error(&self, e: &str) {
        let mut f = self.reconnect_error.borrow_mut();
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(args))
}

async fn main(args: &Args) -> Result<()> {
    if args.str("target", "tidegate") != "tidegate" {
        bail!("jitter mode needs Tidegate's resume (Last-Event-ID / lastEventId)");
    }
    let ws = match args.str("transport", "sse").as_str() {
        "sse" => false,
        "ws" => true,
        t => bail!("unknown --transport {t}"),
    };
    let n: usize = args.num("n", 100)?;
    let user_offset: usize = args.num("user-offset", 0)?;
    let secret = args.str("secret", "bench-secret");
    let duration = secs(args.num("duration", 60.0)?);
    let conc: usize = args.num("connect-concurrency", 256)?;
    let ready_file = args.opt("ready-file");
    let stop_file = args.opt("stop-file");
    let calm_file = args.opt("calm-file");
    let out = args.opt("out");
    let connect_timeout = secs(args.num("connect-timeout", 90.0)?);
    let cfg = Rc::new(Cfg {
        ws,
        addr: args.str("addr", "127.0.0.1:4000").parse()?,
        rotate: args.str("rotate", "1") == "1",
        groups: args.num::<u64>("groups", 1)?.max(1),
        event_type: args.str("event-type", "bench.jitter"),
        period: args.num("jitter-period", 15.0)?,
        period_jitter: args.num("period-jitter", 3.0)?,
        outage: args.num("outage", 2.0)?,
        outage_jitter: args.num("outage-jitter", 0.5)?,
        seed: args.num("seed", 1)?,
        resume: match args.str("resume", "last").as_str() {
            "last" => ResumeMode::Last,
            "none" => ResumeMode::None,
            "first" => ResumeMode::First,
            m => bail!("unknown --resume {m}"),
        },
        deadline: Instant::now() + duration,
    });
    let shared = Rc::new(Shared {
        stats: (0..n).map(|_| RefCell::new(ConnStats::default())).collect(),
        replay_first: RefCell::new(new_hist()),
        replay_catchup: RefCell::new(new_hist()),
        live: RefCell::new(new_hist()),
        replayed: RefCell::new(new_hist()),
        ready: Cell::new(0),
        failed: Cell::new(0),
        calm: Cell::new(false),
        first_error: RefCell::new(None),
        reconnect_error: RefCell::new(None),
        nothing_missed: Cell::new(0),
        lost_notices: Cell::new(0),
        disconnect_notices: Cell::new(0),
        not_caught_up: Cell::new(0),
    });
    let sem = std::sync::Arc::new(Semaphore::new(conc));
    let t0 = Instant::now();
    for i in 0..n {
        let j = user_offset + i;
        let user = format!("user-{j}");
        let token = jwt(&secret, &user)?;
        let group = j as u64 % cfg.groups;
        let subs = format!(r#"[{{"eventType":"{}.{group}"}}]"#, cfg.event_type);
        let path = if ws {
            "/_rig/v1/connection/ws"
        } else {
            "/_rig/v1/connection/sse"
        };
        let uri = format!("{path}?jwt={token}&subscriptions={}", urlencode(&subs));
        let (cfg, shared, sem) = (cfg.clone(), shared.clone(), sem.clone());
        tokio::task::spawn_local(async move {
            let permit = sem.acquire_owned().await.ok();
            if let Err(e) = conn(&cfg, &shared, i, j, group, &uri, permit).await {
                shared.failed.set(shared.failed.get() + 1);
                let mut f = shared.first_error.borrow_mut();
                if f.is_none() {
                    *f = Some(format!("{e:#}"));
                }
            }
        });
    }
    let mut announced = false;
    let mut connect_secs = 0.0;
    let mut stop_text = None;
    loop {
        let done = shared.ready.get() + shared.failed.get() >= n || t0.elapsed() >= connect_timeout;
        if done && !announced {
            announced = true;
            connect_secs = t0.elapsed().as_secs_f64();
            if let Some(f) = &ready_file {
                let j = serde_json::json!({
                    "ready": shared.ready.get(), "failed": shared.failed.get(),
                    "connect_secs": connect_secs,
                    "first_error": shared.first_error.borrow().clone(),
                });
                std::fs::write(f, j.to_string())?;
            }
        }
        if !shared.calm.get() {
            if let Some(f) = &calm_file {
                shared.calm.set(std::path::Path::new(f).exists());
            }
        }
        if Instant::now() >= cfg.deadline {
            break;
        }
        if let Some(f) = &stop_file {
            if let Ok(t) = std::fs::read_to_string(f) {
                stop_text = Some(t);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = summarize(
        &cfg,
        &shared,
        n,
        user_offset,
        connect_secs,
        stop_text.as_deref(),
    );
    match out {
        Some(f) => std::fs::write(f, report.to_string())?,
        None => println!("{report}"),
    }
    std::process::exit(0);
}

/// Totals over every connection, checked against the acknowledged sequence numbers
/// from the stop file when it has them.
fn summarize(
    cfg: &Cfg,
    shared: &Shared,
    n: usize,
    user_offset: usize,
    connect_secs: f64,
    stop: Option<&str>,
) -> serde_json::Value {
    let acked: Option<(u64, Vec<u64>)> = stop
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| {
            let sent = v.get("sent")?.as_u64()?;
            let failed = v
                .get("failed")
                .and_then(|f| f.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default();
            Some((sent, failed))
        });
    let g = cfg.groups;
    let (mut received, mut distinct, mut dups, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    let (mut cuts, mut reconnects, mut rerrs, mut closes) = (0u64, 0u64, 0u64, 0u64);
    let (mut expected, mut missing, mut unacked_received) = (0u64, 0u64, 0u64);
    let (mut conns_missing, mut conns_dup, mut max_ranges) = (0u64, 0u64, 0usize);
    let mut worst_missing = 0u64;
    let mut examples = Vec::new();
    for (i, st) in shared.stats.iter().enumerate() {
        let st = st.borrow();
        let group = (user_offset + i) as u64 % g;
        received += st.received;
        dups += st.duplicates;
        foreign += st.foreign;
        cuts += st.cuts as u64;
        reconnects += st.reconnects as u64;
        rerrs += st.reconnect_errors as u64;
        closes += st.server_closes as u64;
        max_ranges = max_ranges.max(st.seen.ranges());
        if st.duplicates > 0 {
            conns_dup += 1;
        }
        distinct += st.seen.count_below(u64::MAX);
        if let Some((sent, failed)) = &acked {
            // Members of this group in 0..sent: s = group + k·G, k in 0..k_end.
            let k_end = if *sent > group {
                (sent - group).div_ceil(g)
            } else {
                0
            };
            let mut not_acked = 0u64;
            for &s in failed.iter().filter(|&&s| s % g == group && s < *sent) {
                not_acked += 1;
                if st.seen.contains(s / g) {
                    unacked_received += 1;
                }
            }
            let got = st.seen.count_below(k_end);
            let failed_got = failed
                .iter()
                .filter(|&&s| s % g == group && s < *sent && st.seen.contains(s / g))
                .count() as u64;
            let exp = k_end - not_acked;
            let miss = exp.saturating_sub(got - failed_got);
            expected += exp;
            missing += miss;
            worst_missing = worst_missing.max(miss);
            if miss > 0 {
                conns_missing += 1;
                if examples.len() < 8 {
                    // Ranges in sequence numbers (k·G + group), for diagnosis.
                    let r: Vec<[u64; 2]> = st
                        .seen
                        .r
                        .iter()
                        .take(6)
                        .map(|&(a, b)| [a * g + group, (b - 1) * g + group])
                        .collect();
                    examples.push(serde_json::json!({
                        "conn": user_offset + i, "group": group, "missing": miss,
                        "expected_last_seq": (k_end.max(1) - 1) * g + group,
                        "received_ranges": r, "cuts": st.cuts, "reconnects": st.reconnects,
                    }));
                }
            }
        }
    }
    let delivered_pct =
        (expected > 0).then(|| (expected - missing) as f64 * 100.0 / expected as f64);
    serde_json::json!({
        "target": "tidegate",
        "transport": if cfg.ws { "ws" } else { "sse" },
        "n": n,
        "ready": shared.ready.get(),
        "failed": shared.failed.get(),
        "first_error": shared.first_error.borrow().clone(),
        "connect_secs": connect_secs,
        "groups": g,
        "seed": cfg.seed,
        "period_s": cfg.period, "period_jitter_s": cfg.period_jitter,
        "outage_s": cfg.outage, "outage_jitter_s": cfg.outage_jitter,
        "acked_known": acked.is_some(),
        "received": received,
        "distinct": distinct,
        "duplicates": dups,
        "foreign": foreign,
        "expected": expected,
        "missing": missing,
        "delivered_pct": delivered_pct,
        "unacked_received": unacked_received,
        "conns_with_missing": conns_missing,
        "conns_with_duplicates": conns_dup,
        "worst_conn_missing": worst_missing,
        "missing_examples": examples,
        "max_ranges_per_conn": max_ranges,
        "cuts": cuts,
        "reconnects": reconnects,
        "reconnect_errors": rerrs,
        "reconnect_first_error": shared.reconnect_error.borrow().clone(),
        "server_closes": closes,
        "nothing_missed": shared.nothing_missed.get(),
        "not_caught_up": shared.not_caught_up.get(),
        "lost_notices": shared.lost_notices.get(),
        "disconnect_notices": shared.disconnect_notices.get(),
        "replay_first": hist_json(&shared.replay_first.borrow()),
        "replay_catchup": hist_json(&shared.replay_catchup.borrow()),
        "live_latency": hist_json(&shared.live.borrow()),
        "replayed_latency": hist_json(&shared.replayed.borrow()),
    })
}

/// How a session (one TCP connection) ended.
enum End {
    /// We cut it on schedule.
    Cut,
    /// The server closed it (or it broke).
    Closed(String),
}

/// Per-session replay bookkeeping.
struct Session {
    resumed: bool,
    /// When the client started reconnecting (after the outage).
    t_start: Instant,
    wall_start_ns: u64,
    got_first: bool,
    caught_up: bool,
}

/// One connection's life: connect, stream, cut, stay away, resume; until the deadline
/// (or process exit on the stop file). The first connection must succeed (else the
/// connection counts as failed); later failures are retried every 250 ms.
async fn conn(
    cfg: &Cfg,
    shared: &Shared,
    i: usize,
    j: usize,
    group: u64,
    uri: &str,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<()> {
    const RETRY: f64 = 0.25;
    let mut rng = Rng::new(cfg.seed ^ (j as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut last_id: Option<String> = None;
    let mut first_id: Option<String> = None;
    let mut first = true;
    let mut sess = Session {
        resumed: false,
        t_start: Instant::now(),
        wall_start_ns: now_ns(),
        got_first: false,
        caught_up: false,
    };
    while Instant::now() < cfg.deadline {
        let cut_after = if first {
            // Spread the first cuts over a whole period.
            rng.uniform(0.3, cfg.period + cfg.period_jitter)
        } else {
            rng.uniform(
                cfg.period - cfg.period_jitter,
                cfg.period + cfg.period_jitter,
            )
        };
        let res = if cfg.ws {
            let f = ws_session(
                cfg,
                shared,
                i,
                group,
                uri,
                &mut last_id,
                &mut sess,
                &mut permit,
                cut_after,
            );
            f.await
        } else {
            let f = sse_session(
                cfg,
                shared,
                i,
                group,
                uri,
                &mut last_id,
                &mut sess,
                &mut permit,
                cut_after,
            );
            f.await
        };
        if permit.is_some() {
            // Never got ready: the initial connection failed.
            let why = match res {
                Ok(End::Cut) => "cut before ready".to_string(),
                Ok(End::Closed(w)) | Err(Reconnect(w)) => w,
            };
            bail!("{why}");
        }
        first = false;
        let (away, fresh_start) = match res {
            Ok(end) => {
                if sess.resumed && !sess.caught_up {
                    shared.not_caught_up.set(shared.not_caught_up.get() + 1);
                }
                let mut st = shared.stats[i].borrow_mut();
                match end {
                    End::Cut => {
                        st.cuts += 1;
                        let o = cfg.outage;
                        (
                            rng.uniform(o - cfg.outage_jitter, o + cfg.outage_jitter),
                            true,
                        )
                    }
                    End::Closed(_) => {
                        st.server_closes += 1;
                        (RETRY, true)
                    }
                }
            }
            Err(Reconnect(why)) => {
                // The reconnect itself failed: retry; the replay clock keeps running.
                shared.stats[i].borrow_mut().reconnect_errors += 1;
                shared.note_reconnect_error(&why);
                (RETRY, false)
            }
        };
        tokio::time::sleep(secs(away)).await;
        match cfg.resume {
            ResumeMode::Last => {}
            ResumeMode::None => last_id = None,
            ResumeMode::First => {
                if first_id.is_none() {
                    first_id = last_id.clone();
                }
                last_id = first_id.clone();
            }
        }
        if fresh_start {
            sess.t_start = Instant::now();
            sess.wall_start_ns = now_ns();
            shared.stats[i].borrow_mut().reconnects += 1;
        }
        sess.resumed = last_id.is_some() || cfg.resume == ResumeMode::None;
        sess.got_first = false;
        sess.caught_up = false;
    }
    Ok(())
}

/// A session failure before streaming (connect, handshake, status).
struct Reconnect(String);

impl<E: std::fmt::Display> From<E> for Reconnect {
    fn from(e: E) -> Self {
        Reconnect(format!("{e:#}"))
    }
}

/// Records one bench event (or gateway notice) of a session.
fn on_event(shared: &Shared, i: usize, group: u64, g: u64, sess: &mut Session, payload: &[u8]) {
    let (Some(ts), Some(seq)) = (find_ts(payload), find_seq(payload)) else {
        return;
    };
    let now = now_ns();
    let lat_us = (now.saturating_sub(ts) / 1000).max(1);
    let mut st = shared.stats[i].borrow_mut();
    st.received += 1;
    if seq % g != group {
        st.foreign += 1;
        return;
    }
    if !st.seen.insert(seq / g) {
        st.duplicates += 1;
    }
    drop(st);
    let live = !sess.resumed || ts >= sess.wall_start_ns;
    if live {
        let _ = shared.live.borrow_mut().record(lat_us);
    } else {
        let _ = shared.replayed.borrow_mut().record(lat_us);
    }
    if sess.resumed {
        let since = (sess.t_start.elapsed().as_micros() as u64).max(1);
        if !sess.got_first {
            sess.got_first = true;
            if live {
                shared.nothing_missed.set(shared.nothing_missed.get() + 1);
            } else {
                let _ = shared.replay_first.borrow_mut().record(since);
            }
        }
        if live && !sess.caught_up {
            sess.caught_up = true;
            let _ = shared.replay_catchup.borrow_mut().record(since);
        }
    }
}

fn on_notice(shared: &Shared, name: &[u8]) {
    if name == b"tidegate.events_lost" {
        shared.lost_notices.set(shared.lost_notices.get() + 1);
    } else if name == b"tidegate.disconnect" {
        shared
            .disconnect_notices
            .set(shared.disconnect_notices.get() + 1);
    }
}

fn mark_ready(shared: &Shared, permit: &mut Option<tokio::sync::OwnedSemaphorePermit>) {
    if permit.take().is_some() {
        shared.ready.set(shared.ready.get() + 1);
    }
}

/// Closes with RST instead of FIN: the server learns of it only when it next writes,
/// as with a dropped network path.
fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn cut_timer(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn sse_session(
    cfg: &Cfg,
    shared: &Shared,
    i: usize,
    group: u64,
    uri: &str,
    last_id: &mut Option<String>,
    sess: &mut Session,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    cut_after: f64,
) -> Result<End, Reconnect> {
    let mut stream = connect_rotating(cfg.addr, i, cfg.rotate).await?;
    let resume = match last_id {
        Some(id) => format!("Last-Event-ID: {id}\r\n"),
        None => String::new(),
    };
    let req = format!(
        "GET {uri} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}\r\n",
        cfg.addr
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let (head, rest) = read_head(&mut stream, &mut buf).await?;
    if head.status != 200 {
        return Err(Reconnect(format!("SSE status {}", head.status)));
    }
    let mut dechunk = head.chunked.then(Dechunk::default);
    let mut parser = SseParser::default();
    let mut cut_at = Some(tokio::time::Instant::now() + secs(cut_after));
    let mut body = Vec::with_capacity(512);
    let mut tmp = vec![0u8; 8192];
    let mut input: Vec<u8> = rest;
    loop {
        if !input.is_empty() {
            let data: &[u8] = match &mut dechunk {
                Some(d) => {
                    body.clear();
                    d.feed(&input, &mut body)?;
                    &body
                }
                None => &input,
            };
            parser.feed(data, |ev, payload, id| {
                if ev == b"rig.subscriptions_set" {
                    mark_ready(shared, permit);
                } else if ev.starts_with(b"rig.") {
                } else if ev.starts_with(b"tidegate.") {
                    on_notice(shared, ev);
                } else {
                    on_event(shared, i, group, cfg.groups, sess, payload);
                }
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    *last_id = Some(String::from_utf8_lossy(id).into_owned());
                }
            });
            input.clear();
            if dechunk.as_ref().is_some_and(|d| d.done) {
                return Ok(End::Closed("closed: stream ended".into()));
            }
        }
        tokio::select! {
            biased;
            _ = cut_timer(cut_at) => {
                if shared.calm.get() {
                    cut_at = None;
                    continue;
                }
                if last_id.is_none() {
                    // Nothing to resume from yet (no event seen): a cut now would
                    // measure a client without a cursor, not resume. Cut a bit later.
                    cut_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    continue;
                }
                abort(&stream);
                return Ok(End::Cut);
            }
            r = stream.read(&mut tmp) => match r {
                Ok(0) => return Ok(End::Closed("closed: EOF".into())),
                Ok(n) => input.extend_from_slice(&tmp[..n]),
                Err(e) => return Ok(End::Closed(format!("closed: {e}"))),
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ws_session(
    cfg: &Cfg,
    shared: &Shared,
    i: usize,
    group: u64,
    uri: &str,
    last_id: &mut Option<String>,
    sess: &mut Session,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    cut_after: f64,
) -> Result<End, Reconnect> {
    let stream = connect_rotating(cfg.addr, i, cfg.rotate).await?;
    let mut url = format!("ws://{}{uri}", cfg.addr);
    if let Some(id) = last_id {
        url.push_str(&format!("&lastEventId={}", urlencode(id)));
    }
    let wcfg = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .max_message_size(Some(1 << 20));
    let (mut ws, _resp) = tokio_tungstenite::client_async_with_config(url, stream, Some(wcfg))
        .await
        .map_err(|e| anyhow!("ws handshake: {e}"))?;
    let mut cut_at = Some(tokio::time::Instant::now() + secs(cut_after));
    loop {
        tokio::select! {
            biased;
            _ = cut_timer(cut_at) => {
                if shared.calm.get() {
                    cut_at = None;
                    continue;
                }
                if last_id.is_none() {
                    cut_at = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    continue;
                }
                abort(ws.get_ref());
                return Ok(End::Cut);
            }
            m = ws.next() => match m {
                None => return Ok(End::Closed("closed: EOF".into())),
                Some(Err(e)) => return Ok(End::Closed(format!("closed: {e}"))),
                Some(Ok(Message::Close(_))) => return Ok(End::Closed("closed: close frame".into())),
                Some(Ok(Message::Text(t))) => {
                    let b = t.as_bytes();
                    let ty = json_str_field(b, b"\"type\":\"").unwrap_or(b"");
                    if ty == b"rig.subscriptions_set" {
                        mark_ready(shared, permit);
                    } else if ty.starts_with(b"rig.") {
                    } else if ty.starts_with(b"tidegate.") {
                        on_notice(shared, ty);
                    } else {
                        on_event(shared, i, group, cfg.groups, sess, b);
                    }
                    if let Some(c) = json_str_field(b, b"\"tidegatecursor\":\"") {
                        *last_id = Some(String::from_utf8_lossy(c).into_owned());
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The string value after `key` (which ends in the opening quote); no escapes expected
/// (event types and cursors are plain).
fn json_str_field<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let p = memfind(b, key)? + key.len();
    let end = b[p..].iter().position(|&c| c == b'"')?;
    Some(&b[p..p + end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_counts_and_detects_duplicates() {
        let mut s = RangeSet::default();
        for x in [0, 1, 2, 5, 4, 3, 10, 8, 9] {
            assert!(s.insert(x));
        }
        assert_eq!(s.ranges(), 2);
        assert!(!s.insert(4));
        assert!(!s.insert(10));
        assert!(s.contains(9) && !s.contains(6) && !s.contains(11));
        assert_eq!(s.count_below(7), 6);
        assert_eq!(s.count_below(u64::MAX), 9);
        assert!(s.insert(7) && s.insert(6));
        assert_eq!(s.ranges(), 1);
    }

    #[test]
    fn schedules_are_reproducible() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            let x = a.uniform(13.0, 17.0);
            assert_eq!(x, b.uniform(13.0, 17.0));
            assert!((13.0..17.0).contains(&x));
        }
    }

    #[test]
    fn json_fields() {
        let b = br#"{"type":"bench.jitter.3","data":{"seq":7},"tidegatecursor":"AQEBBw"}"#;
        assert_eq!(
            json_str_field(b, b"\"type\":\""),
            Some(&b"bench.jitter.3"[..])
        );
        assert_eq!(
            json_str_field(b, b"\"tidegatecursor\":\""),
            Some(&b"AQEBBw"[..])
        );
        assert_eq!(find_seq(b), Some(7));
    }
}
