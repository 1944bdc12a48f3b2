//! A circuit breaker per backend.
//!
//! Calls ask [`Breaker::allow`] first. While the breaker is **Closed** every
//! call goes through and its outcome, reported on the [`CallToken`], feeds the
//! failure detector (consecutive failures, or a failure ratio over the last N
//! calls). When the detector trips, the breaker goes **Open**: calls are
//! refused with a `retry_after` until `open_duration` has passed, sparing a
//! failing backend the load and the caller the timeouts. The first call after
//! that finds it **HalfOpen**: up to `half_open_max_calls` probes go through;
//! `success_threshold` successful probes close it, one failed probe opens it
//! again.
//!
//! Each transition starts a new *generation*; a token remembers the
//! generation that admitted it, and outcomes from an older generation are
//! ignored. A slow call admitted while Closed that fails after the breaker
//! already went HalfOpen says nothing about the backend *now*, and must not
//! knock the probes over.
//!
//! Time is a parameter (`now`); the breaker never reads a clock. Transitions
//! are counted ([`Breaker::transitions`]) and can be observed with a listener.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct Open {
    /// When a call could next be admitted. While HalfOpen with every probe
    /// slot taken this is `open_duration`: if the probes fail the breaker is
    /// open that long anyway, so the hint is never early.
    pub retry_after: Duration,
}

/// Invalid breaker configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreakerError {
    /// A threshold of zero consecutive failures would never close.
    #[error("consecutive failure threshold must be at least 1")]
    ZeroConsecutive,
    /// The failure ratio must be in (0, 1].
    #[error("failure ratio must be in (0, 1] (got {0})")]
    Ratio(f64),
    /// `1 <= min_calls <= window` does not hold.
    #[error("ratio window needs 1 <= min_calls ({min_calls}) <= window ({window})")]
    Window {
        /// Configured window.
        window: usize,
        /// Configured minimum number of calls.
        min_calls: usize,
    },
    /// Half-open with no probe slots would never close.
    #[error("half_open_max_calls must be at least 1")]
    ZeroProbes,
    /// A success threshold of zero would close without evidence.
    #[error("success_threshold must be at least 1")]
    ZeroSuccessThreshold,
}

/// When a Closed breaker opens.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureThreshold {
    /// After this many failures in a row.
    Consecutive(u32),
    /// When at least `ratio` of the last `window` calls failed, once at least
    /// `min_calls` calls are in the window (so two failures out of two right
    /// after start-up do not open it).
    Ratio {
        /// Failure share that trips, in (0, 1].
        ratio: f64,
        /// Calls remembered.
        window: usize,
        /// Calls needed before the ratio is trusted.
        min_calls: usize,
    },
}

/// Configuration of a [`Breaker`].
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// When to open.
    pub failure_threshold: FailureThreshold,
    /// How long to stay Open before probing.
    pub open_duration: Duration,
    /// Probe calls allowed at once while HalfOpen.
    pub half_open_max_calls: u32,
    /// Successful probes needed to close.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: FailureThreshold::Consecutive(5),
            open_duration: Duration::from_secs(30),
            half_open_max_calls: 1,
            success_threshold: 1,
        }
    }
}

impl BreakerConfig {
    fn validate(&self) -> Result<(), BreakerError> {
        match self.failure_threshold {
            FailureThreshold::Consecutive(0) => return Err(BreakerError::ZeroConsecutive),
            FailureThreshold::Consecutive(_) => {}
            FailureThreshold::Ratio {
                ratio,
                window,
                min_calls,
            } => {
                if !(ratio > 0.0 && ratio <= 1.0) {
                    return Err(BreakerError::Ratio(ratio));
                }
                if min_calls == 0 || min_calls > window {
                    return Err(BreakerError::Window { window, min_calls });
                }
            }
        }
        if self.half_open_max_calls == 0 {
            return Err(BreakerError::ZeroProbes);
        }
        if self.success_threshold == 0 {
            return Err(BreakerError::ZeroSuccessThreshold);
        }
        Ok(())
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; failures are being counted.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls are allowed.
    HalfOpen,
}

impl State {
    /// A stable lowercase name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// One state change, as given to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State left.
    pub from: State,
    /// State entered.
    pub to: State,
    /// The `now` of the call that caused it.
    pub at: Instant,
}

type Listener = Box<dyn Fn(Transition) + Send + Sync>;

// === impl Breaker ===

/// A thread-safe circuit breaker. Cloning shares the state.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

struct Shared {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    transitions: AtomicU64,
    listener: Option<Listener>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    consecutive_failures: u32,
    /// Outcomes of the last calls, `true` = failure (ratio mode only).
    window: VecDeque<bool>,
    window_failures: usize,
    open_until: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("config", &self.shared.config)
            .field("inner", &*self.shared.inner.lock())
            .field("transitions", &self.transitions())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A Closed breaker.
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerError> {
        Self::build(config, None)
    }

    /// A Closed breaker that calls `listener` on every transition.
    ///
    /// The listener runs on the thread that caused the transition, after the
    /// breaker's lock is released (so it may call back into the breaker); two
    /// racing transitions may therefore be reported out of order.
    pub fn with_listener(
        config: BreakerConfig,
        listener: impl Fn(Transition) + Send + Sync + 'static,
    ) -> Result<Self, BreakerError> {
        Self::build(config, Some(Box::new(listener)))
    }

    fn build(config: BreakerConfig, listener: Option<Listener>) -> Result<Self, BreakerError> {
        config.validate()?;
        let window = match config.failure_threshold {
            FailureThreshold::Ratio { window, .. } => VecDeque::with_capacity(window),
            FailureThreshold::Consecutive(_) => VecDeque::new(),
        };
        let inner = Inner {
            state: State::Closed,
            generation: 0,
            consecutive_failures: 0,
            window,
            window_failures: 0,
            open_until: Instant::now(),
            probes_in_flight: 0,
            probe_successes: 0,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                inner: Mutex::new(inner),
                transitions: AtomicU64::new(0),
                listener,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state, for metrics. An Open breaker whose `open_duration`
    /// has passed still reports Open until the next [`Breaker::allow`].
    pub fn state(&self) -> State {
        self.shared.inner.lock().state
    }

    /// Transitions so far, for metrics.
    pub fn transitions(&self) -> u64 {
        self.shared.transitions.load(Ordering::Relaxed)
    }

    /// Ask to make a call at `now`. Report its outcome on the token.
    pub fn allow(&self, now: Instant) -> Result<CallToken, Open> {
        let config = &self.shared.config;
        let mut transition = None;
        let result = {
            let mut inner = self.shared.inner.lock();
            if inner.state == State::Open {
                if now < inner.open_until {
                    return Err(Open {
                        retry_after: inner.open_until - now,
                    });
                }
                transition = Some(inner.enter(State::HalfOpen, now, config));
            }
            match inner.state {
                State::Closed => Ok(self.token(inner.generation, false)),
                State::HalfOpen if inner.probes_in_flight < config.half_open_max_calls => {
                    inner.probes_in_flight += 1;
                    Ok(self.token(inner.generation, true))
                }
                _ => Err(Open {
                    retry_after: config.open_duration,
                }),
            }
        };
        self.shared.announce(transition);
        result
    }

    fn token(&self, generation: u64, probe: bool) -> CallToken {
        CallToken {
            shared: self.shared.clone(),
            generation,
            probe,
            reported: false,
        }
    }
}

impl Shared {
    fn announce(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            if let Some(listener) = &self.listener {
                listener(t);
            }
        }
    }

    fn report(&self, token: &CallToken, failed: bool, now: Instant) {
        let transition = {
            let mut inner = self.inner.lock();
            if inner.generation != token.generation {
                return;
            }
            inner.record(&self.config, token.probe, failed, now)
        };
        self.announce(transition);
    }
}

impl Inner {
    fn enter(&mut self, to: State, now: Instant, config: &BreakerConfig) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.consecutive_failures = 0;
        self.window.clear();
        self.window_failures = 0;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        if to == State::Open {
            self.open_until = now + config.open_duration;
        }
        Transition { from, to, at: now }
    }

    /// An outcome from the current generation.
    fn record(
        &mut self,
        config: &BreakerConfig,
        probe: bool,
        failed: bool,
        now: Instant,
    ) -> Option<Transition> {
        match self.state {
            State::Closed => {
                if self.tripped(config, failed) {
                    Some(self.enter(State::Open, now, config))
                } else {
                    None
                }
            }
            State::HalfOpen if probe => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if failed {
                    return Some(self.enter(State::Open, now, config));
                }
                self.probe_successes += 1;
                if self.probe_successes >= config.success_threshold {
                    Some(self.enter(State::Closed, now, config))
                } else {
                    None
                }
            }
            // Every transition bumps the generation, so a current token is
            // never seen while Open, nor a non-probe one while HalfOpen.
            State::HalfOpen | State::Open => None,
        }
    }

    /// Feed the failure detector; whether it trips.
    fn tripped(&mut self, config: &BreakerConfig, failed: bool) -> bool {
        match config.failure_threshold {
            FailureThreshold::Consecutive(threshold) => {
                if failed {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                } else {
                    self.consecutive_failures = 0;
                }
                self.consecutive_failures >= threshold
            }
            FailureThreshold::Ratio {
                ratio,
                window,
                min_calls,
            } => {
                if self.window.len() >= window && self.window.pop_front() == Some(true) {
                    self.window_failures -= 1;
                }
                self.window.push_back(failed);
                if failed {
                    self.window_failures += 1;
                }
                let calls = self.window.len();
                failed && calls >= min_calls && self.window_failures as f64 >= ratio * calls as f64
            }
        }
    }
}

// === impl CallToken ===

/// Permission for one call. Report the outcome with
/// [`CallToken::on_success`] or [`CallToken::on_failure`]; dropping it
/// unreported (a cancelled call) frees a probe slot without counting.
#[must_use = "report the call's outcome on the token"]
pub struct CallToken {
    shared: Arc<Shared>,
    generation: u64,
    probe: bool,
    reported: bool,
}

impl fmt::Debug for CallToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallToken")
            .field("generation", &self.generation)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl CallToken {
    /// The call succeeded.
    pub fn on_success(mut self, now: Instant) {
        self.reported = true;
        self.shared.report(&self, false, now);
    }

    /// The call failed in a way that speaks about the backend's health
    /// (see [`crate::retry::Outcome::is_backend_failure`]).
    pub fn on_failure(mut self, now: Instant) {
        self.reported = true;
        self.shared.report(&self, true, now);
    }
}

impl Drop for CallToken {
    fn drop(&mut self) {
        if self.reported || !self.probe {
            return;
        }
        let mut inner = self.shared.inner.lock();
        if inner.generation == self.generation && inner.state == State::HalfOpen {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests;
