//! The hub actor: one task owns the subscription index and the connection table.
//!
//! It reads the log's committed tail in order and, for every record, checks the event
//! type against the index *before* parsing the body (events nobody wants cost one
//! hash lookup), matches, encodes once and pushes the shared frame into each
//! recipient's [`Outbox`] without waiting.
//!
//! Resume is gap-free: when a connection registers with a cursor `c`, the hub notes
//! how far it has dispatched (`next`), marks the connection *catching up* and starts a
//! replay task for `(c, next)`. Live events for that connection meanwhile go to a
//! pending buffer (bounded by the connection's queue limit); when the replay is done,
//! the hub appends the pending events and the connection is live. Every event is thus
//! delivered exactly once, in log order, whatever the publish rate.
use parking_lot::RwLock;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use tidegate_core::cursor::Cursor;
use tidegate_core::event::gateway_event;
use tidegate_core::index::naive_matches;
use tidegate_core::subscription::Subscription;
use tidegate_core::{record, Extractors, SubscriptionIndex};
use tidegate_log::{EventLog, LogError, Record};
use tidegate_telemetry::{Metrics, PolicyLabel, TransportLabel};

use crate::frame::{Encoded, Frame};
use crate::outbox::{CloseReason, Outbox, OverflowPolicy, Pushed};

/// Gateway event telling a resuming client that events it asked for are gone.
pub const EVENTS_LOST: &str = "tidegate.events_lost";

pub type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Sse,
    Ws,
    LongPolling,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::LongPolling => "longpolling",
        }
    }
    pub fn parse(s: &str) -> Option<Transport> {
        match s {
            "sse" => Some(Transport::Sse),
            "ws" => Some(Transport::Ws),
            "longpolling" => Some(Transport::LongPolling),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Log stream holding the events.
    pub stream: String,
    pub heartbeat: Duration,
    pub longpoll_session_timeout: Duration,
    /// Bound of every connection's queue, in bytes.
    pub queue_limit_bytes: usize,
    pub default_policy: OverflowPolicy,
    pub type_policies: HashMap<String, OverflowPolicy>,
    /// Per event type queue bounds, tighter than `queue_limit_bytes`.
    pub type_limits: HashMap<String, usize>,
    /// Bound of the hub's command queue (connects, subscription changes, kills).
    pub command_queue: usize,
    /// Bound of the queue of transient events waiting for fan-out.
    pub transient_queue: usize,
    pub max_connections: usize,
    /// How many closed connection tokens are remembered to answer 410 instead of 400.
    pub closed_token_memory: usize,
}

impl HubConfig {
    /// The overflow policy and queue bound that apply to an event of this type.
    pub fn overflow(&self, event_type: &str) -> (OverflowPolicy, usize) {
        let policy = self
            .type_policies
            .get(event_type)
            .copied()
            .unwrap_or(self.default_policy);
        let limit = self
            .type_limits
            .get(event_type)
            .copied()
            .unwrap_or(self.queue_limit_bytes);
        (policy, limit)
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            stream: "events".into(),
            heartbeat: Duration::from_secs(15),
            longpoll_session_timeout: Duration::from_secs(60),
            queue_limit_bytes: 1 << 20,
            default_policy: OverflowPolicy::Disconnect,
            type_policies: HashMap::new(),
            type_limits: HashMap::new(),
            command_queue: 8192,
            transient_queue: 8192,
            max_connections: 100_000,
            closed_token_memory: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("the gateway is overloaded, retry later")]
    Overloaded,
    #[error("connection limit of this node reached")]
    TooManyConnections,
    #[error("cursor belongs to a different log (epoch mismatch)")]
    ForeignCursor,
    #[error("cursor is not valid for this log")]
    BadCursor,
    #[error("unknown connection token")]
    UnknownToken,
    #[error("connection is gone")]
    Gone,
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("log unavailable: {0}")]
    Log(String),
}

/// A new connection as the edge describes it.
pub struct ConnectRequest {
    pub transport: Transport,
    pub session: Option<String>,
    pub subscriptions: Vec<Subscription>,
    /// Resume: deliver stored matching events first, then live.
    pub resume: Option<Resume>,
}

/// Where a resuming connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Everything after this cursor (`Last-Event-ID`).
    After(Cursor),
    /// Everything still retained (`Last-Event-ID: start`), without a loss signal.
    Start,
}

/// What the edge knows about a live connection, looked up by token.
#[derive(Clone)]
pub struct ConnInfo {
    pub id: ConnId,
    pub transport: Transport,
    pub outbox: Arc<Outbox>,
    pub session: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum ResumePoint {
    After(u64),
    Start,
}

enum Command {
    Register {
        info: ConnInfo,
        token: Box<str>,
        subs: Vec<Subscription>,
        resume_after: Option<ResumePoint>,
        reply: oneshot::Sender<()>,
    },
    SetSubscriptions {
        id: ConnId,
        subs: Vec<Subscription>,
        reply: oneshot::Sender<Result<(), HubError>>,
    },
    Unregister {
        id: ConnId,
    },
    ReplayDone {
        id: ConnId,
        /// `false`: the replay could not read the log; the connection is closed
        /// (resumable) instead of going live with a gap.
        ok: bool,
    },
    KillSession {
        session: String,
        reply: oneshot::Sender<usize>,
    },
}

struct Registry {
    by_token: HashMap<Box<str>, ConnInfo>,
    /// Ring of recently closed tokens (bounded) so a late request gets 410 Gone.
    closed: std::collections::VecDeque<Box<str>>,
    closed_set: std::collections::HashSet<Box<str>>,
}

struct Shared {
    cmd: mpsc::Sender<Command>,
    transient: mpsc::Sender<Arc<Encoded>>,
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    open: AtomicUsize,
    config: HubConfig,
    epoch: u64,
    metrics: Arc<Metrics>,
    /// Next offset the hub will dispatch (everything before it reached the outboxes).
    dispatched: watch::Sender<u64>,
    log: Arc<dyn EventLog>,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// A registered connection, owned by its transport task. Dropping it unregisters.
pub struct Connection {
    pub id: ConnId,
    pub token: String,
    pub outbox: Arc<Outbox>,
    hub: Hub,
    /// Long-poll sessions outlive requests; the hub expires them instead.
    detached_lifetime: bool,
}

impl Connection {
    /// For long-polling: the session lives in the hub until it expires or closes.
    pub fn into_session(mut self) {
        self.detached_lifetime = true;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.detached_lifetime {
            return;
        }
        self.outbox.detach();
        // If the command queue is full, the heartbeat sweep removes detached outboxes.
        let _ = self
            .hub
            .shared
            .cmd
            .try_send(Command::Unregister { id: self.id });
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A gateway event (`rig.*`, `tidegate.*`): not stored, no cursor.
pub fn gateway_frame(event_type: &str, data: Value) -> Arc<Encoded> {
    let id = uuid::Uuid::new_v4().to_string();
    Encoded::gateway(&gateway_event(event_type, &id, &now_rfc3339(), data))
}

fn subscriptions_set_frame(subs: &[Subscription]) -> Frame {
    let data = Value::Array(subs.iter().map(Subscription::to_json).collect());
    Frame::Event(gateway_frame("rig.subscriptions_set", data))
}

impl Hub {
    /// Starts the hub task, positioned at the current end of the log (live from now).
    pub async fn start(
        config: HubConfig,
        log: Arc<dyn EventLog>,
        extractors: Arc<Extractors>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Hub, LogError> {
        log.ensure_stream(&config.stream).await?;
        let next_rx = log.watch_next(&config.stream)?;
        let start = log.bounds(&config.stream)?.next;
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(16));
        let (tr_tx, tr_rx) = mpsc::channel(config.transient_queue.max(16));
        let shared = Arc::new(Shared {
            cmd: cmd_tx,
            transient: tr_tx,
            registry: RwLock::new(Registry {
                by_token: HashMap::new(),
                closed: Default::default(),
                closed_set: Default::default(),
            }),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            epoch: log.epoch(),
            config: config.clone(),
            metrics: metrics.clone(),
            dispatched: watch::Sender::new(start),
            log: log.clone(),
        });
        let hub = Hub { shared };
        let actor = Actor {
            hub: hub.clone(),
            log,
            extractors,
            metrics,
            index: SubscriptionIndex::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            next: start,
            scratch: Vec::new(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(actor.run(cmd_rx, tr_rx, next_rx));
        Ok(hub)
    }

    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Registers a connection: queues `rig.connection.create`, then (from the hub task)
    /// `rig.subscriptions_set`, then the replay if resuming, then live events.
    pub async fn connect(&self, req: ConnectRequest) -> Result<Connection, HubError> {
        let s = &self.shared;
        let resume_after = match &req.resume {
            None => None,
            Some(Resume::Start) => Some(ResumePoint::Start),
            Some(Resume::After(c)) if c.epoch != s.epoch => return Err(HubError::ForeignCursor),
            Some(Resume::After(c)) if c.offsets.len() != 1 => return Err(HubError::BadCursor),
            Some(Resume::After(c)) => Some(ResumePoint::After(c.offsets[0])),
        };
        if s.open.fetch_add(1, Ordering::AcqRel) >= s.config.max_connections {
            s.open.fetch_sub(1, Ordering::AcqRel);
            return Err(HubError::TooManyConnections);
        }
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let outbox = Outbox::new(s.config.queue_limit_bytes);
        let create = gateway_frame(
            "rig.connection.create",
            json!({ "connection_token": token }),
        );
        outbox.push(Frame::Event(create), OverflowPolicy::Disconnect);
        let info = ConnInfo {
            id,
            transport: req.transport,
            outbox: outbox.clone(),
            session: req.session,
        };
        let (reply, done) = oneshot::channel();
        let boxed: Box<str> = token.clone().into_boxed_str();
        s.registry
            .write()
            .by_token
            .insert(boxed.clone(), info.clone());
        let cmd = Command::Register {
            info,
            token: boxed.clone(),
            subs: req.subscriptions,
            resume_after,
            reply,
        };
        if let Err(e) = s.cmd.try_send(cmd) {
            s.registry.write().by_token.remove(&boxed);
            s.open.fetch_sub(1, Ordering::AcqRel);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => HubError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => HubError::ShuttingDown,
            });
        }
        let conn = Connection {
            id,
            token,
            outbox,
            hub: self.clone(),
            detached_lifetime: false,
        };
        done.await.map_err(|_| HubError::ShuttingDown)?;
        s.metrics
            .connections_opened
            .get_or_create(&TransportLabel {
                transport: req.transport.as_str(),
            })
            .inc();
        Ok(conn)
    }

    /// Committed log records the hub has not dispatched yet: the fan-out backlog.
    pub fn backlog(&self) -> u64 {
        let s = &self.shared;
        let head = s.log.bounds(&s.config.stream).map(|b| b.next).unwrap_or(0);
        head.saturating_sub(*s.dispatched.borrow())
    }

    /// Source flow control: a source (Kafka, NATS, an HTTP ingest path) calls this
    /// before taking more input. It returns at once while the fan-out backlog is at
    /// most `max_backlog` records, otherwise it waits until the hub has caught up —
    /// so a flood upstream becomes broker lag, not gateway memory.
    pub async fn wait_for_capacity(&self, max_backlog: u64) {
        let mut rx = self.shared.dispatched.subscribe();
        while self.backlog() > max_backlog {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Looks up a live connection by token: `UnknownToken` (400) or `Gone` (410).
    pub fn lookup(&self, token: &str) -> Result<ConnInfo, HubError> {
        let reg = self.shared.registry.read();
        if let Some(info) = reg.by_token.get(token) {
            return Ok(info.clone());
        }
        if reg.closed_set.contains(token) {
            Err(HubError::Gone)
        } else {
            Err(HubError::UnknownToken)
        }
    }

    /// Replaces the connection's whole subscription set; it then gets `rig.subscriptions_set`.
    pub async fn set_subscriptions(
        &self,
        token: &str,
        subs: Vec<Subscription>,
    ) -> Result<(), HubError> {
        let info = self.lookup(token)?;
        let (reply, done) = oneshot::channel();
        self.shared
            .cmd
            .try_send(Command::SetSubscriptions {
                id: info.id,
                subs,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => HubError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => HubError::ShuttingDown,
            })?;
        done.await.map_err(|_| HubError::ShuttingDown)?
    }

    /// Sends `rig.session_killed` to every connection of the session and closes them.
    /// Returns how many were closed.
    pub async fn kill_session(&self, session: &str) -> Result<usize, HubError> {
        let (reply, done) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::KillSession {
                session: session.to_string(),
                reply,
            })
            .await
            .map_err(|_| HubError::ShuttingDown)?;
        done.await.map_err(|_| HubError::ShuttingDown)
    }

    /// Live-only delivery of a transient event (never stored, no cursor).
    pub fn publish_transient(&self, event_type: &str, json: &[u8]) -> Result<(), HubError> {
        let enc = Encoded::new(event_type, None, json);
        self.shared.transient.try_send(enc).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HubError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => HubError::ShuttingDown,
        })
    }

    /// Ends a long-poll session at the client's request or on error.
    pub fn close(&self, id: ConnId) {
        let _ = self.shared.cmd.try_send(Command::Unregister { id });
    }
}

struct Conn {
    info: ConnInfo,
    token: Box<str>,
    subs: Arc<Vec<Subscription>>,
    /// Live events that arrived while the connection was replaying, and their bytes.
    pending: Option<(Vec<Arc<Encoded>>, usize)>,
    /// Events at or before this offset were already delivered by a replay.
    skip_through: Option<u64>,
}

struct Actor {
    hub: Hub,
    log: Arc<dyn EventLog>,
    extractors: Arc<Extractors>,
    metrics: Arc<Metrics>,
    index: SubscriptionIndex<ConnId>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<String, Vec<ConnId>>,
    /// Next log offset to dispatch: everything before it has been dispatched.
    next: u64,
    scratch: Vec<ConnId>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Records per tail read; commands are served between reads so a flood of events
/// cannot starve connects.
const READ_BATCH: usize = 512;
const READ_BYTES: usize = 1 << 20;

impl Actor {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut tr_rx: mpsc::Receiver<Arc<Encoded>>,
        mut next_rx: watch::Receiver<u64>,
    ) {
        let mut heartbeat = tokio::time::interval(self.hub.shared.config.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let stream = self.hub.shared.config.stream.clone();
        let mut failed_reads = 0u32;
        loop {
            let head = *next_rx.borrow_and_update();
            self.metrics
                .hub_lag_records
                .set(head.saturating_sub(self.next) as i64);
            if self.next < head {
                while let Ok(cmd) = cmd_rx.try_recv() {
                    self.handle(cmd);
                }
                while let Ok(ev) = tr_rx.try_recv() {
                    self.dispatch_transient(ev);
                }
                match self
                    .log
                    .read(&stream, self.next, READ_BATCH, READ_BYTES)
                    .await
                {
                    Ok(records) if !records.is_empty() => {
                        failed_reads = 0;
                        for r in &records {
                            self.dispatch(r);
                        }
                        self.hub.shared.dispatched.send_replace(self.next);
                    }
                    Ok(_) => {
                        // Retention removed what we had not read yet; skip ahead.
                        if let Ok(b) = self.log.bounds(&stream) {
                            warn!(
                                from = self.next,
                                to = b.first,
                                "Hub fell behind retention; skipping"
                            );
                            self.next = self.next.max(b.first);
                        }
                    }
                    Err(e) => {
                        failed_reads += 1;
                        warn!(error = %e, "Hub could not read the log tail");
                        let backoff = Duration::from_millis(10 * u64::from(failed_reads.min(100)));
                        tokio::select! {
                            _ = self.shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                cmd = cmd_rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                Some(ev) = tr_rx.recv() => self.dispatch_transient(ev),
                changed = next_rx.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => self.sweep(),
            }
        }
        for (_, c) in self.conns.drain() {
            c.info.outbox.close(CloseReason::Shutdown);
        }
        info!("Hub stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register {
                info,
                token,
                subs,
                resume_after,
                reply,
            } => {
                self.register(info, token, subs, resume_after);
                let _ = reply.send(());
            }
            Command::SetSubscriptions { id, subs, reply } => {
                let res = match self.conns.get_mut(&id) {
                    None => Err(HubError::Gone),
                    Some(conn) => {
                        self.index.set(id, &subs);
                        conn.info
                            .outbox
                            .push(subscriptions_set_frame(&subs), OverflowPolicy::Disconnect);
                        conn.subs = Arc::new(subs);
                        Ok(())
                    }
                };
                self.metrics
                    .subscriptions
                    .set(self.index.subscription_count() as i64);
                let _ = reply.send(res);
            }
            Command::Unregister { id } => self.remove(id),
            Command::ReplayDone { id, ok: false } => {
                if let Some(conn) = self.conns.get(&id) {
                    conn.info.outbox.close(CloseReason::ReplayFailed);
                }
                self.remove(id);
            }
            Command::ReplayDone { id, ok: true } => {
                let cfg = &self.hub.shared.config;
                if let Some(conn) = self.conns.get_mut(&id) {
                    if let Some((pending, _)) = conn.pending.take() {
                        let mut overflowed = false;
                        for enc in pending {
                            let (p, limit) = cfg.overflow(&enc.event_type);
                            if push_counted(
                                &conn.info.outbox,
                                Frame::Event(enc),
                                p,
                                limit,
                                &self.metrics,
                            ) {
                                overflowed = true;
                                break;
                            }
                        }
                        if overflowed {
                            self.remove(id);
                        }
                    }
                }
            }
            Command::KillSession { session, reply } => {
                let ids = self.sessions.get(&session).cloned().unwrap_or_default();
                let frame = gateway_frame("rig.session_killed", json!({}));
                for id in &ids {
                    if let Some(conn) = self.conns.get(id) {
                        conn.info
                            .outbox
                            .close(CloseReason::SessionKilled(frame.clone()));
                        self.metrics.sessions_killed.inc();
                    }
                    self.remove(*id);
                }
                let _ = reply.send(ids.len());
            }
        }
    }

    fn register(
        &mut self,
        info: ConnInfo,
        token: Box<str>,
        subs: Vec<Subscription>,
        resume: Option<ResumePoint>,
    ) {
        let id = info.id;
        let outbox = info.outbox.clone();
        self.index.set(id, &subs);
        outbox.push(subscriptions_set_frame(&subs), OverflowPolicy::Disconnect);
        let subs = Arc::new(subs);
        let mut conn = Conn {
            token,
            subs: subs.clone(),
            pending: None,
            skip_through: None,
            info: info.clone(),
        };
        if let Some(session) = &info.session {
            self.sessions.entry(session.clone()).or_default().push(id);
        }
        self.metrics
            .connections
            .get_or_create(&TransportLabel {
                transport: info.transport.as_str(),
            })
            .inc();
        self.metrics
            .subscriptions
            .set(self.index.subscription_count() as i64);

        if let Some(point) = resume {
            let stream = &self.hub.shared.config.stream;
            let bounds = self.log.bounds(stream).ok();
            let (after, mut from) = match point {
                ResumePoint::After(after) => (Some(after), after.saturating_add(1)),
                ResumePoint::Start => (None, bounds.map_or(0, |b| b.first)),
            };
            if let (Some(bounds), Some(after)) = (bounds, after) {
                if from < bounds.first {
                    let epoch = self.hub.shared.epoch;
                    let data = json!({
                        "reason": "cursor is older than the log's retention",
                        "requested": Cursor::single(epoch, after).encode(),
                        "first_available": Cursor::single(epoch, bounds.first).encode(),
                        "lost_from_offset": from,
                        "lost_to_offset": bounds.first - 1,
                        "subscriptions_restored": true,
                    });
                    outbox.push(
                        Frame::Event(gateway_frame(EVENTS_LOST, data)),
                        OverflowPolicy::Disconnect,
                    );
                    self.metrics.loss_events.inc();
                    from = bounds.first;
                }
            }
            if from < self.next {
                conn.pending = Some((Vec::new(), 0));
                self.metrics.replays.inc();
                let replay = Replay {
                    log: self.log.clone(),
                    stream: stream.clone(),
                    from,
                    to: self.next,
                    subs,
                    extractors: self.extractors.clone(),
                    outbox,
                    epoch: self.hub.shared.epoch,
                    metrics: self.metrics.clone(),
                };
                let cmd = self.hub.shared.cmd.clone();
                let shutdown = self.shutdown.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        res = replay.run() => {
                            if let Err(e) = &res {
                                warn!(error = %e, "Replay failed; closing the connection so it resumes again");
                            }
                            // Sent on failure too: the connection must not go live with a gap.
                            let _ = cmd.send(Command::ReplayDone { id, ok: res.is_ok() }).await;
                        }
                    }
                });
            } else if let Some(after) = after.filter(|a| *a >= self.next) {
                // The client has seen events the hub has not dispatched yet.
                conn.skip_through = Some(after);
            }
        }
        self.conns.insert(id, conn);
    }

    fn remove(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.index.remove(id);
        if let Some(session) = &conn.info.session {
            if let Some(ids) = self.sessions.get_mut(session) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.sessions.remove(session);
                }
            }
        }
        conn.info.outbox.detach();
        let shared = &self.hub.shared;
        shared.open.fetch_sub(1, Ordering::AcqRel);
        {
            let mut reg = shared.registry.write();
            reg.by_token.remove(&conn.token);
            if shared.config.closed_token_memory > 0 {
                if reg.closed.len() >= shared.config.closed_token_memory {
                    if let Some(old) = reg.closed.pop_front() {
                        reg.closed_set.remove(&old);
                    }
                }
                reg.closed.push_back(conn.token.clone());
                reg.closed_set.insert(conn.token.clone());
            }
        }
        self.metrics
            .connections
            .get_or_create(&TransportLabel {
                transport: conn.info.transport.as_str(),
            })
            .dec();
        self.metrics
            .subscriptions
            .set(self.index.subscription_count() as i64);
        debug!(id, "Connection removed");
    }

    fn dispatch(&mut self, rec: &Record) {
        self.next = rec.offset + 1;
        self.metrics.events_dispatched.inc();
        let (event_type, json) = match record::decode(&rec.payload) {
            Ok(v) => v,
            Err(e) => {
                warn!(offset = rec.offset, error = %e, "Skipping undecodable log record");
                return;
            }
        };
        if !self.index.has_type(event_type) {
            self.metrics.events_dropped_unsubscribed.inc();
            return;
        }
        let value: Value = match serde_json::from_slice(json) {
            Ok(v) => v,
            Err(e) => {
                warn!(offset = rec.offset, error = %e, "Skipping log record with invalid JSON");
                return;
            }
        };
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        self.index
            .matching(event_type, &value, &self.extractors, &mut targets);
        if targets.is_empty() {
            self.metrics.events_dropped_unsubscribed.inc();
        } else {
            let cursor = Cursor::single(self.hub.shared.epoch, rec.offset).encode();
            let enc = Encoded::new(event_type, Some(cursor), json);
            self.fan_out(&enc, Some(rec.offset), &targets);
        }
        self.scratch = targets;
    }

    fn dispatch_transient(&mut self, enc: Arc<Encoded>) {
        self.metrics.events_transient.inc();
        if !self.index.has_type(&enc.event_type) {
            self.metrics.events_dropped_unsubscribed.inc();
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&enc.json) else {
            return;
        };
        let mut targets = std::mem::take(&mut self.scratch);
        targets.clear();
        self.index
            .matching(&enc.event_type, &value, &self.extractors, &mut targets);
        self.fan_out(&enc, None, &targets);
        self.scratch = targets;
    }

    fn fan_out(&mut self, enc: &Arc<Encoded>, offset: Option<u64>, targets: &[ConnId]) {
        let (policy, limit) = self.hub.shared.config.overflow(&enc.event_type);
        let mut cut: Vec<ConnId> = Vec::new();
        let mut delivered = 0u64;
        for id in targets {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            if let (Some(skip), Some(off)) = (conn.skip_through, offset) {
                if off <= skip {
                    continue;
                }
                conn.skip_through = None;
            }
            if let Some((pending, bytes)) = &mut conn.pending {
                *bytes += enc.cost();
                if *bytes > conn.info.outbox.limit_bytes() {
                    conn.info.outbox.close(CloseReason::ReplayLagging);
                    cut.push(*id);
                } else {
                    pending.push(enc.clone());
                }
                continue;
            }
            delivered += 1;
            if push_counted(
                &conn.info.outbox,
                Frame::Event(enc.clone()),
                policy,
                limit,
                &self.metrics,
            ) {
                cut.push(*id);
            }
        }
        self.metrics.events_delivered.inc_by(delivered);
        for id in cut {
            self.remove(id);
        }
    }

    /// Heartbeats, long-poll expiry, and removal of connections whose task is gone.
    fn sweep(&mut self) {
        let timeout = self.hub.shared.config.longpoll_session_timeout;
        let mut gone = Vec::new();
        let mut total = 0usize;
        for (id, conn) in &self.conns {
            let outbox = &conn.info.outbox;
            let queued = outbox.queued_bytes();
            total += queued;
            self.metrics.connection_queue_bytes.observe(queued as f64);
            if outbox.is_detached() || outbox.is_closed() {
                gone.push(*id);
            } else if conn.info.transport == Transport::LongPolling {
                if outbox.last_taken().elapsed() > timeout {
                    outbox.close(CloseReason::Expired);
                    gone.push(*id);
                }
            } else if outbox.is_empty() {
                outbox.push(Frame::Heartbeat, OverflowPolicy::DropNewest);
            }
        }
        self.metrics.queued_bytes.set(total as i64);
        for id in gone {
            self.remove(id);
        }
    }
}

/// Pushes and counts; returns true when the connection must be removed.
fn push_counted(
    outbox: &Outbox,
    frame: Frame,
    policy: OverflowPolicy,
    limit: usize,
    metrics: &Metrics,
) -> bool {
    match outbox.push_within(frame, policy, limit) {
        Pushed::Queued => false,
        Pushed::Dropped(n) => {
            let label = PolicyLabel {
                policy: policy.as_str(),
            };
            metrics.queue_overflows.get_or_create(&label).inc();
            metrics.queue_dropped_events.get_or_create(&label).inc_by(n);
            false
        }
        Pushed::Overflowed => {
            metrics
                .queue_overflows
                .get_or_create(&PolicyLabel {
                    policy: policy.as_str(),
                })
                .inc();
            metrics.slow_client_disconnects.inc();
            true
        }
        Pushed::Closed => true,
    }
}

/// Replays `[from, to)` of the log to one connection, filtered by its subscriptions,
/// waiting for room in its queue (the client's pace is the replay's pace).
struct Replay {
    log: Arc<dyn EventLog>,
    stream: String,
    from: u64,
    to: u64,
    subs: Arc<Vec<Subscription>>,
    extractors: Arc<Extractors>,
    outbox: Arc<Outbox>,
    epoch: u64,
    metrics: Arc<Metrics>,
}

impl Replay {
    async fn run(self) -> Result<(), LogError> {
        let mut pos = self.from;
        let types: std::collections::HashSet<&str> =
            self.subs.iter().map(|s| s.event_type.as_str()).collect();
        let mut empty_reads = 0;
        while pos < self.to {
            let records = self
                .log
                .read(&self.stream, pos, READ_BATCH, READ_BYTES)
                .await?;
            let Some(last) = records.last() else {
                // The log said these records exist. A networked log's tail may be a
                // moment behind; give it a few tries, then fail rather than leave a gap.
                empty_reads += 1;
                if empty_reads > 5 {
                    return Err(LogError::Unavailable(format!(
                        "replay read nothing at offset {pos} before {}",
                        self.to
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            empty_reads = 0;
            pos = last.offset + 1;
            for r in records.iter().filter(|r| r.offset < self.to) {
                let Ok((event_type, json)) = record::decode(&r.payload) else {
                    continue;
                };
                if !types.contains(event_type) {
                    continue;
                }
                let Ok(value) = serde_json::from_slice::<Value>(json) else {
                    continue;
                };
                if !naive_matches(&self.subs, event_type, &value, &self.extractors) {
                    continue;
                }
                let enc = Encoded::new(
                    event_type,
                    Some(Cursor::single(self.epoch, r.offset).encode()),
                    json,
                );
                if !self.outbox.push_wait(Frame::Event(enc)).await {
                    return Ok(());
                }
                self.metrics.replayed_events.inc();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
    use tidegate_log::{AppendRecord, Durability};

    /// The embedded log, except that `read` fails while `fail` is set (a broker outage
    /// as a resuming connection sees it).
    struct FlakyLog {
        inner: Arc<EmbeddedLog>,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl EventLog for FlakyLog {
        fn epoch(&self) -> u64 {
            self.inner.epoch()
        }
        async fn ensure_stream(&self, s: &str) -> Result<(), LogError> {
            EventLog::ensure_stream(self.inner.as_ref(), s).await
        }
        async fn append(
            &self,
            s: &str,
            r: Vec<tidegate_log::AppendRecord>,
        ) -> Result<Vec<tidegate_log::Appended>, LogError> {
            self.inner.append(s, r).await
        }
        fn bounds(&self, s: &str) -> Result<tidegate_log::Bounds, LogError> {
            self.inner.bounds(s)
        }
        fn watch_next(&self, s: &str) -> Result<tokio::sync::watch::Receiver<u64>, LogError> {
            self.inner.watch_next(s)
        }
        async fn read(
            &self,
            s: &str,
            from: u64,
            n: usize,
            b: usize,
        ) -> Result<Vec<tidegate_log::Record>, LogError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(LogError::Unavailable("broker down".into()));
            }
            self.inner.read(s, from, n, b).await
        }
        async fn commit_consumer(&self, s: &str, c: &str, n: u64) -> Result<(), LogError> {
            self.inner.commit_consumer(s, c, n).await
        }
        async fn consumer_position(&self, s: &str, c: &str) -> Result<Option<u64>, LogError> {
            EventLog::consumer_position(self.inner.as_ref(), s, c).await
        }
    }

    /// A resume that cannot read the log closes the connection (resumable) rather than
    /// going live with a gap after the cursor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_that_cannot_read_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = EmbeddedConfig::new(dir.path());
        lc.durability = Durability::Buffered;
        let flaky = Arc::new(FlakyLog {
            inner: EmbeddedLog::open(lc).unwrap(),
            fail: false.into(),
        });
        let log: Arc<dyn EventLog> = flaky.clone();
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let hub = Hub::start(
            HubConfig::default(),
            log.clone(),
            Arc::new(Extractors::default()),
            Arc::new(Metrics::new()),
            shutdown.clone(),
            &tasks,
        )
        .await
        .unwrap();
        let batch = (0..10)
            .map(|i| AppendRecord {
                dedup_key: None,
                payload: record::encode("t", format!("{{\"n\":{i}}}").as_bytes()),
            })
            .collect();
        log.append("events", batch).await.unwrap();
        hub.wait_for_capacity(0).await;
        flaky.fail.store(true, Ordering::SeqCst);
        let subs = tidegate_core::subscription::parse(
            br#"[{"eventType":"t"}]"#,
            &Extractors::default(),
            Default::default(),
        )
        .unwrap();
        let conn = hub
            .connect(ConnectRequest {
                transport: Transport::Sse,
                session: None,
                subscriptions: subs,
                resume: Some(Resume::After(Cursor::single(log.epoch(), 2))),
            })
            .await
            .unwrap();
        let mut frames = Vec::new();
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            let mut batch = Vec::new();
            loop {
                if let Some(r) = conn.outbox.take(&mut batch, 1 << 20).await {
                    return r;
                }
                frames.append(&mut batch);
            }
        })
        .await
        .expect("the connection is closed");
        assert_eq!(reason, CloseReason::ReplayFailed);
        assert!(reason.resumable());
        assert!(
            !frames
                .iter()
                .any(|f| matches!(f, Frame::Event(e) if &*e.event_type == "t")),
            "no event delivered past the gap"
        );
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_for_capacity_returns_once_the_backlog_is_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = EmbeddedConfig::new(dir.path());
        lc.durability = Durability::Buffered;
        let log: Arc<dyn EventLog> = EmbeddedLog::open(lc).unwrap();
        let metrics = Arc::new(Metrics::new());
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let hub = Hub::start(
            HubConfig::default(),
            log.clone(),
            Arc::new(Extractors::default()),
            metrics.clone(),
            shutdown.clone(),
            &tasks,
        )
        .await
        .unwrap();
        let total = 20_000u64;
        for chunk in 0..(total / 1000) {
            let batch = (0..1000)
                .map(|i| AppendRecord {
                    dedup_key: None,
                    payload: record::encode(
                        "t",
                        format!("{{\"n\":{}}}", chunk * 1000 + i).as_bytes(),
                    ),
                })
                .collect();
            log.append("events", batch).await.unwrap();
        }
        // A source asking for room with at most 100 records of backlog...
        tokio::time::timeout(Duration::from_secs(10), hub.wait_for_capacity(100))
            .await
            .unwrap();
        assert!(hub.backlog() <= 100, "backlog {}", hub.backlog());
        // ...and with none: it returns once everything was dispatched.
        tokio::time::timeout(Duration::from_secs(10), hub.wait_for_capacity(0))
            .await
            .unwrap();
        assert_eq!(hub.backlog(), 0);
        assert_eq!(metrics.events_dispatched.get(), total);
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
