//! Concurrency limits: how many calls may be in flight to one backend.
//!
//! A [`Limiter`] hands out [`Permit`]s — [`FixedLimiter`] up to a constant
//! cap, [`AdaptiveLimiter`] up to a limit that follows the backend's health
//! with AIMD (additive increase, multiplicative decrease, as TCP does for its
//! congestion window). A delivery worker acquires a permit, makes its call,
//! and reports how it went on the permit (`success(latency)`, `dropped()`,
//! `overloaded()`); dropping the permit releases the slot, and the reported
//! outcome — if any — moves the adaptive limit. A permit dropped without an
//! outcome (a cancelled call) changes nothing.
//!
//! Waiting is a tokio [`Semaphore`]: FIFO-fair and cancel-safe. Lowering the
//! limit below what is currently handed out cannot take permits back, so the
//! shortfall is kept as *debt*: the next released permits are forgotten
//! instead of returned until the debt is paid.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Invalid limiter configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConcurrencyError {
    /// A limit of zero would never let anything run.
    #[error("concurrency limit must be at least 1")]
    ZeroLimit,
    /// Above what a tokio semaphore can count.
    #[error("concurrency limit {0} is above the supported maximum {max}", max = Semaphore::MAX_PERMITS)]
    LimitTooHigh(usize),
    /// `min <= initial <= max` does not hold.
    #[error("adaptive limits must satisfy min ({min}) <= initial ({initial}) <= max ({max})")]
    Bounds {
        /// Configured minimum.
        min: usize,
        /// Configured initial limit.
        initial: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The decrease factor must shrink the limit.
    #[error("backoff_ratio must be in (0, 1) (got {0})")]
    BackoffRatio(f64),
}

/// Configuration of an [`AdaptiveLimiter`].
#[derive(Debug, Clone, PartialEq)]
pub struct AimdConfig {
    /// Limit at start.
    pub initial: usize,
    /// The limit never drops below this (≥ 1).
    pub min: usize,
    /// The limit never grows above this.
    pub max: usize,
    /// A success slower than this counts as a sign of overload.
    pub latency_threshold: Duration,
    /// Added to the limit per fast success while the limit is in use.
    pub increase: usize,
    /// Multiplied into the limit on overload, in (0, 1).
    pub backoff_ratio: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            initial: 16,
            min: 1,
            max: 256,
            latency_threshold: Duration::from_secs(1),
            increase: 1,
            backoff_ratio: 0.9,
        }
    }
}

impl AimdConfig {
    fn validate(&self) -> Result<(), ConcurrencyError> {
        if self.min == 0 {
            return Err(ConcurrencyError::ZeroLimit);
        }
        if self.max > Semaphore::MAX_PERMITS {
            return Err(ConcurrencyError::LimitTooHigh(self.max));
        }
        if !(self.min <= self.initial && self.initial <= self.max) {
            return Err(ConcurrencyError::Bounds {
                min: self.min,
                initial: self.initial,
                max: self.max,
            });
        }
        if !(self.backoff_ratio > 0.0 && self.backoff_ratio < 1.0) {
            return Err(ConcurrencyError::BackoffRatio(self.backoff_ratio));
        }
        Ok(())
    }
}

// === impl Limiter ===

/// Either kind of limiter, for code that is configured with one or the
/// other. Cloning shares the limit.
#[derive(Debug, Clone)]
pub enum Limiter {
    /// A constant cap.
    Fixed(FixedLimiter),
    /// An AIMD limit.
    Adaptive(AdaptiveLimiter),
}

impl Limiter {
    fn shared(&self) -> &Arc<Shared> {
        match self {
            Limiter::Fixed(l) => &l.shared,
            Limiter::Adaptive(l) => &l.shared,
        }
    }

    /// Wait for a slot. Cancel-safe; waiters are served in order.
    pub async fn acquire(&self) -> Permit {
        Shared::acquire(self.shared()).await
    }

    /// Take a slot if one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        Shared::try_acquire(self.shared())
    }

    /// The current limit, for metrics.
    pub fn limit(&self) -> usize {
        self.shared().limit.load(Ordering::Relaxed)
    }

    /// Permits currently handed out, for metrics.
    pub fn in_flight(&self) -> usize {
        self.shared().in_flight.load(Ordering::Relaxed)
    }
}

impl From<FixedLimiter> for Limiter {
    fn from(l: FixedLimiter) -> Self {
        Limiter::Fixed(l)
    }
}

impl From<AdaptiveLimiter> for Limiter {
    fn from(l: AdaptiveLimiter) -> Self {
        Limiter::Adaptive(l)
    }
}

// === impl FixedLimiter ===

/// At most `n` permits at once. Cloning shares the limit.
#[derive(Debug, Clone)]
pub struct FixedLimiter {
    shared: Arc<Shared>,
}

impl FixedLimiter {
    /// A limiter handing out at most `n` permits at once.
    pub fn new(n: usize) -> Result<Self, ConcurrencyError> {
        if n == 0 {
            return Err(ConcurrencyError::ZeroLimit);
        }
        if n > Semaphore::MAX_PERMITS {
            return Err(ConcurrencyError::LimitTooHigh(n));
        }
        Ok(Self {
            shared: Arc::new(Shared::new(n, None)),
        })
    }

    /// Wait for a slot. Cancel-safe; waiters are served in order.
    pub async fn acquire(&self) -> Permit {
        Shared::acquire(&self.shared).await
    }

    /// Take a slot if one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        Shared::try_acquire(&self.shared)
    }

    /// The limit, for metrics.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Permits currently handed out, for metrics.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

// === impl AdaptiveLimiter ===

/// An AIMD concurrency limit between `min` and `max`. Cloning shares the
/// limit.
///
/// - A success no slower than `latency_threshold` adds `increase` — but only
///   while at least half the limit is in use: a lightly loaded limiter has
///   no evidence the backend could take more, and would otherwise ratchet up
///   to `max` and then flood the backend when load arrives.
/// - A drop, a timeout, an overload answer (429/503) or a slow success
///   multiplies the limit by `backoff_ratio` (by at least one). Only calls
///   admitted since the last decrease can trigger the next one: when one
///   overload makes every in-flight call fail together, the limit is cut once
///   per round trip, not once per call.
#[derive(Debug, Clone)]
pub struct AdaptiveLimiter {
    shared: Arc<Shared>,
}

impl AdaptiveLimiter {
    /// An adaptive limiter starting at `config.initial`.
    pub fn new(config: AimdConfig) -> Result<Self, ConcurrencyError> {
        config.validate()?;
        let initial = config.initial;
        let aimd = Aimd {
            config,
            limit: initial,
            debt: 0,
        };
        Ok(Self {
            shared: Arc::new(Shared::new(initial, Some(Mutex::new(aimd)))),
        })
    }

    /// Wait for a slot. Cancel-safe; waiters are served in order.
    pub async fn acquire(&self) -> Permit {
        Shared::acquire(&self.shared).await
    }

    /// Take a slot if one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        Shared::try_acquire(&self.shared)
    }

    /// The current limit, for metrics.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Permits currently handed out, for metrics.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }
}

// === impl Shared ===

#[derive(Debug)]
struct Shared {
    semaphore: Arc<Semaphore>,
    in_flight: AtomicUsize,
    /// Mirror of the limit for lock-free metric reads.
    limit: AtomicUsize,
    /// Bumped on every decrease; see [`AdaptiveLimiter`].
    epoch: AtomicU64,
    /// `None` for a fixed limiter.
    aimd: Option<Mutex<Aimd>>,
}

#[derive(Debug)]
struct Aimd {
    config: AimdConfig,
    limit: usize,
    /// Permits to forget on release instead of returning.
    debt: usize,
}

impl Shared {
    fn new(limit: usize, aimd: Option<Mutex<Aimd>>) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            epoch: AtomicU64::new(0),
            aimd,
        }
    }

    async fn acquire(this: &Arc<Self>) -> Permit {
        match this.semaphore.clone().acquire_owned().await {
            Ok(permit) => Self::wrap(this, permit),
            // Proven invariant: the semaphore is private to this module and
            // nothing here ever calls `close` on it.
            Err(_closed) => unreachable!("the limiter's semaphore is never closed"),
        }
    }

    fn try_acquire(this: &Arc<Self>) -> Option<Permit> {
        let permit = this.semaphore.clone().try_acquire_owned().ok()?;
        Some(Self::wrap(this, permit))
    }

    fn wrap(this: &Arc<Self>, permit: OwnedSemaphorePermit) -> Permit {
        let in_flight = this.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        Permit {
            shared: this.clone(),
            permit: Some(permit),
            outcome: Outcome::Ignore,
            epoch: this.epoch.load(Ordering::Acquire),
            in_flight_at_acquire: in_flight,
        }
    }
}

impl Aimd {
    fn record(&mut self, shared: &Shared, permit: &Permit, in_flight: usize) {
        let overloaded = match permit.outcome {
            Outcome::Ignore => return,
            Outcome::Success(latency) => latency > self.config.latency_threshold,
            Outcome::Overloaded => true,
        };
        if overloaded {
            if permit.epoch == shared.epoch.load(Ordering::Acquire) {
                self.decrease(shared);
            }
        } else if in_flight.saturating_mul(2) >= self.limit {
            self.increase(shared);
        }
    }

    fn increase(&mut self, shared: &Shared) {
        let target = self
            .limit
            .saturating_add(self.config.increase)
            .min(self.config.max);
        let grow = target - self.limit;
        let repaid = grow.min(self.debt);
        self.debt -= repaid;
        shared.semaphore.add_permits(grow - repaid);
        self.set_limit(shared, target);
    }

    fn decrease(&mut self, shared: &Shared) {
        // Flooring always loses at least one (limit · ratio < limit).
        let scaled = (self.limit as f64 * self.config.backoff_ratio).floor() as usize;
        let target = scaled.max(self.config.min);
        let mut shrink = self.limit - target;
        while shrink > 0 {
            match shared.semaphore.try_acquire() {
                Ok(idle) => {
                    idle.forget();
                    shrink -= 1;
                }
                Err(_) => break,
            }
        }
        self.debt += shrink;
        shared.epoch.fetch_add(1, Ordering::AcqRel);
        self.set_limit(shared, target);
    }

    fn set_limit(&mut self, shared: &Shared, limit: usize) {
        self.limit = limit;
        shared.limit.store(limit, Ordering::Relaxed);
    }
}

// === impl Permit ===

/// How a call went, as far as the limiter cares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ignore,
    Success(Duration),
    Overloaded,
}

/// One slot. Dropping it releases the slot; report how the call went first
/// with [`Permit::success`], [`Permit::dropped`] or [`Permit::overloaded`].
#[must_use = "dropping a permit releases its slot immediately"]
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    /// `Some` until dropped.
    permit: Option<OwnedSemaphorePermit>,
    outcome: Outcome,
    epoch: u64,
    in_flight_at_acquire: usize,
}

impl Permit {
    /// The call succeeded after `latency`.
    pub fn success(mut self, latency: Duration) {
        self.outcome = Outcome::Success(latency);
    }

    /// The call was lost: timeout, connection reset, no answer.
    pub fn dropped(mut self) {
        self.outcome = Outcome::Overloaded;
    }

    /// The backend said it is overloaded (429, 503).
    pub fn overloaded(mut self) {
        self.outcome = Outcome::Overloaded;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let in_flight_at_release = self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(aimd) = &self.shared.aimd else {
            drop(permit);
            return;
        };
        // The busiest the limiter was at either end of this call: the first
        // call of a burst saw an empty limiter when it started.
        let in_flight = self.in_flight_at_acquire.max(in_flight_at_release);
        let mut aimd = aimd.lock();
        aimd.record(&self.shared, self, in_flight);
        if aimd.debt > 0 {
            aimd.debt -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests;
