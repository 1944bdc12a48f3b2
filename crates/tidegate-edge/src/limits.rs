//! Soft limits at the door, checked before a connection reaches the hub: new
//! connections per minute per client address, live connections per session (the
//! claim at `JWT_SESSION_FIELD`), and live long-poll sessions per node. The node-wide
//! connection rate (`MAX_CONNECTIONS_PER_MINUTE`) and the node-wide connection cap
//! live beside them (`AppState::connection_rate`, the hub). Every refusal is counted
//! in `connections_rejected{reason=…}`.
//!
//! Live connections are tracked as weak references to their outboxes: a connection
//! whose outbox is gone, closed or detached no longer counts, so nothing has to be
//! released on the way out — long-poll sessions that the hub expires included. The
//! tables are pruned lazily, when a bound is reached, so the common path is O(1).
use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use tidegate_flow::rate::{KeyedGcra, RateError};
use tidegate_hub::{Outbox, Transport};
use tidegate_telemetry::{Metrics, ReasonLabel};

use crate::error::ApiError;
use crate::state::SharedState;

/// The limits; `0` disables one.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Live connections (all transports) per session id.
    pub max_connections_per_session: usize,
    /// New connections per minute per client IP address (bursts of the same size).
    pub max_connections_per_minute_per_client: u32,
    /// Client addresses tracked at once by the per-client limiter.
    pub max_tracked_clients: usize,
    /// Live long-poll sessions on this node.
    pub max_longpoll_sessions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_session: 100,
            max_connections_per_minute_per_client: 600,
            max_tracked_clients: 100_000,
            max_longpoll_sessions: 10_000,
        }
    }
}

#[derive(Default)]
struct Tables {
    by_session: HashMap<String, Vec<Weak<Outbox>>>,
    /// Sweep the whole session table when it grows past this.
    sweep_at: usize,
    longpoll: Vec<Weak<Outbox>>,
}

pub struct ConnectionLimits {
    cfg: LimitsConfig,
    client_rate: Option<KeyedGcra<IpAddr>>,
    tables: Mutex<Tables>,
}

fn live(w: &Weak<Outbox>) -> bool {
    w.upgrade()
        .is_some_and(|o| !o.is_closed() && !o.is_detached())
}

fn rejected(metrics: &Metrics, reason: &'static str) {
    metrics
        .connections_rejected
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

// === impl ConnectionLimits ===

impl ConnectionLimits {
    pub fn new(cfg: LimitsConfig) -> Result<Self, RateError> {
        let client_rate = match cfg.max_connections_per_minute_per_client {
            0 => None,
            n => Some(KeyedGcra::new(
                f64::from(n) / 60.0,
                n,
                cfg.max_tracked_clients.max(1),
            )?),
        };
        Ok(ConnectionLimits {
            cfg,
            client_rate,
            tables: Mutex::new(Tables {
                sweep_at: 1024,
                ..Tables::default()
            }),
        })
    }

    /// No limits at all (tests, embedding).
    pub fn unlimited() -> Self {
        ConnectionLimits {
            cfg: LimitsConfig {
                max_connections_per_session: 0,
                max_connections_per_minute_per_client: 0,
                max_tracked_clients: 1,
                max_longpoll_sessions: 0,
            },
            client_rate: None,
            tables: Mutex::new(Tables::default()),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// One new connection from `ip`: 429 + `Retry-After` beyond the client's rate.
    pub fn admit_client(&self, ip: IpAddr, metrics: &Metrics) -> Result<(), ApiError> {
        let Some(rate) = &self.client_rate else {
            return Ok(());
        };
        rate.check(&ip.to_canonical(), tokio::time::Instant::now())
            .map_err(|retry| {
                rejected(metrics, "client_rate_limited");
                ApiError::too_many(
                    "Reached maximum number of connections per minute for this client",
                    retry.as_header_secs(),
                )
            })
    }

    /// Before registering: refuses a session already at its bound (429) and a new
    /// long-poll session beyond the node's bound (503 + `Retry-After`).
    pub fn admit(
        &self,
        transport: Transport,
        session: Option<&str>,
        metrics: &Metrics,
    ) -> Result<(), ApiError> {
        let mut t = self.tables.lock();
        let max = self.cfg.max_connections_per_session;
        if let (Some(s), true) = (session, max > 0) {
            if let Some(conns) = t.by_session.get_mut(s) {
                if conns.len() >= max {
                    conns.retain(live);
                }
                if conns.len() >= max {
                    drop(t);
                    rejected(metrics, "session_limit");
                    return Err(ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        format!("too many connections for this session (limit {max})"),
                    ));
                }
            }
        }
        let max = self.cfg.max_longpoll_sessions;
        if transport == Transport::LongPolling && max > 0 {
            if t.longpoll.len() >= max {
                t.longpoll.retain(live);
            }
            if t.longpoll.len() >= max {
                drop(t);
                rejected(metrics, "longpoll_limit");
                return Err(ApiError::unavailable(
                    format!("too many long-polling sessions on this node (limit {max})"),
                    5,
                ));
            }
        }
        Ok(())
    }

    /// After registering: counts the connection until its outbox closes or goes away.
    pub fn register(&self, transport: Transport, session: Option<&str>, outbox: &Arc<Outbox>) {
        let mut t = self.tables.lock();
        if let (Some(s), true) = (session, self.cfg.max_connections_per_session > 0) {
            t.by_session
                .entry(s.to_string())
                .or_default()
                .push(Arc::downgrade(outbox));
            if t.by_session.len() >= t.sweep_at {
                t.by_session.retain(|_, conns| {
                    conns.retain(live);
                    !conns.is_empty()
                });
                t.sweep_at = (t.by_session.len() * 2).max(1024);
            }
        }
        if transport == Transport::LongPolling && self.cfg.max_longpoll_sessions > 0 {
            t.longpoll.push(Arc::downgrade(outbox));
        }
    }

    /// Sessions currently tracked (idle entries included until swept).
    pub fn tracked_sessions(&self) -> usize {
        self.tables.lock().by_session.len()
    }
}

/// Middleware: new connections on the three connection endpoints count against the
/// client's per-minute budget. A long-poll request carrying a live session's cookie
/// is a poll, not a new connection. Without `ConnectInfo` (a router served without
/// it) the limit does not apply.
pub async fn client_rate(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET {
        let transport = match req.uri().path() {
            "/_rig/v1/connection/sse" => Some(Transport::Sse),
            "/_rig/v1/connection/ws" => Some(Transport::Ws),
            "/_rig/v1/connection/longpolling" => Some(Transport::LongPolling),
            _ => None,
        };
        let addr = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let (Some(transport), Some(ip)) = (transport, addr) {
            let polling = transport == Transport::LongPolling
                && crate::longpoll::cookie(req.headers(), "connection_token")
                    .is_some_and(|t| state.hub.lookup(t).is_ok());
            if !polling {
                if let Err(e) = state.limits.admit_client(ip, &state.metrics) {
                    return e.into_response();
                }
            }
        }
    }
    next.run(req).await
}
