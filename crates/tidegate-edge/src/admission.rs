//! Admission control for publishing: a bound on requests in flight, a GCRA rate per
//! principal (JWT `sub`, else client address), and load shedding when the hub's
//! fan-out backlog passes its high-water mark. Refusals are `429`/`503` with
//! `Retry-After`, counted in `tidegate_http_overload_total{reason}` — never an
//! unbounded queue.
use axum::http::HeaderMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tidegate_flow::rate::KeyedGcra;
use tidegate_telemetry::ReasonLabel;

use crate::connect::bearer;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub struct Admission {
    inflight: Arc<Semaphore>,
    rate: Option<KeyedGcra<String>>,
    max_backlog: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    pub max_inflight: usize,
    /// Publishes per second per principal; 0 disables.
    pub rate_per_second: f64,
    pub burst: u32,
    /// Principals tracked at most (bounded memory).
    pub max_principals: usize,
    /// Fan-out backlog (records) beyond which publishes are shed.
    pub max_backlog: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_inflight: 4096,
            rate_per_second: 0.0,
            burst: 100,
            max_principals: 100_000,
            max_backlog: 1_000_000,
        }
    }
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Result<Admission, String> {
        let rate = if cfg.rate_per_second > 0.0 {
            Some(
                KeyedGcra::new(cfg.rate_per_second, cfg.burst.max(1), cfg.max_principals)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        Ok(Admission {
            inflight: Arc::new(Semaphore::new(cfg.max_inflight.max(1))),
            rate,
            max_backlog: cfg.max_backlog,
        })
    }

    /// Admits one publish request or says why not. Hold the permit until the answer.
    /// `peer: None` skips the per-principal rate (trusted backends on the internal port).
    pub fn admit(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> ApiResult<OwnedSemaphorePermit> {
        let shed = |reason: &'static str| {
            state
                .metrics
                .http_overload
                .get_or_create(&ReasonLabel { reason })
                .inc()
        };
        let permit = self.inflight.clone().try_acquire_owned().map_err(|_| {
            shed("inflight");
            ApiError::unavailable("too many publish requests in flight", 1)
        })?;
        if state.hub.backlog() > self.max_backlog {
            shed("backlog");
            return Err(ApiError::unavailable(
                "fan-out backlog is above its high-water mark",
                1,
            ));
        }
        if let (Some(rate), Some(peer)) = (&self.rate, peer) {
            let key = principal(state, headers, peer);
            if let Err(retry) = rate.check(&key, tokio::time::Instant::now()) {
                shed("rate");
                return Err(ApiError::too_many(
                    "publish rate limit exceeded",
                    retry.as_header_secs(),
                ));
            }
        }
        Ok(permit)
    }
}

/// The JWT subject when a valid bearer token is given, else the client address.
fn principal(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if let Some(token) = bearer(headers) {
        if let Ok(claims) = state.verifier.verify(token) {
            if let Some(sub) = claims.get("sub").and_then(|s| s.as_str()) {
                return format!("sub:{sub}");
            }
        }
    }
    format!("ip:{}", peer.ip())
}
