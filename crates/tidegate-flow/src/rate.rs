//! Rate limiting with the Generic Cell Rate Algorithm (GCRA).
//!
//! A limiter owns one number per key: the *theoretical arrival time* (TAT),
//! the instant at which the key's bucket would be empty again if every
//! accepted request had arrived exactly on schedule. Requests come in through
//! [`Gcra::check`] / [`KeyedGcra::check`] (non-blocking: the answer is either
//! "go" or a [`RetryAfter`] hint for a 429) or [`Gcra::until_ready`] (waits).
//!
//! # The math
//!
//! With a rate of `r` requests per second and a burst of `b`:
//!
//! - emission interval `T = 1 / r` — the spacing of a perfectly smooth stream;
//! - window `W = b · T` — how far ahead of `now` the TAT may run, i.e. the
//!   delay variation tolerance `τ = (b - 1) · T` plus one interval.
//!
//! For a request at `now`:
//!
//! ```text
//! new_tat  = max(tat, now) + T
//! allow_at = new_tat - W
//! now >= allow_at  →  accept, tat = new_tat
//! now <  allow_at  →  reject, retry after (allow_at - now); tat unchanged
//! ```
//!
//! So a fresh key accepts exactly `b` requests at one instant (the TAT climbs
//! to `now + b·T`), then one every `T`. A rejected request does not move the
//! TAT, so hammering a limiter does not push the caller's next slot further
//! out. A TAT in the past is the same as no TAT at all — that is what lets
//! [`KeyedGcra`] drop idle keys without changing any answer.
//!
//! Time is kept as whole nanoseconds since the limiter was created; `T` is
//! rounded to the nearest nanosecond.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A request was refused; it would conform after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The hint as whole seconds for an HTTP `Retry-After` header: rounded
    /// up (a client retrying early is refused again) and at least 1 (`0`
    /// invites an immediate retry storm).
    pub fn as_header_secs(&self) -> u64 {
        let secs = self.0.as_secs();
        let rounded = if self.0.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        rounded.max(1)
    }
}

/// Invalid limiter configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// The rate was zero, negative, NaN or infinite.
    #[error("rate must be a positive, finite number of requests per second (got {0})")]
    InvalidRate(f64),
    /// The rate is above one request per nanosecond, the clock's resolution.
    #[error("rate {0}/s is above the supported maximum of 1e9/s")]
    RateTooHigh(f64),
    /// A burst of zero would refuse everything.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// `burst / rate` does not fit in the nanosecond clock (~584 years).
    #[error("burst {burst} at {rate}/s spans more time than the limiter can represent")]
    WindowTooLarge {
        /// Requests per second.
        rate: f64,
        /// Burst size.
        burst: u32,
    },
    /// A keyed limiter with room for no keys would refuse everything.
    #[error("max_keys must be at least 1")]
    ZeroKeys,
}

// === impl Params ===

/// The configuration shared by the single and keyed limiters, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Emission interval `T`.
    interval: u64,
    /// `W = burst · T`.
    window: u64,
    rate: f64,
    burst: u32,
}

impl Params {
    fn new(rate_per_second: f64, burst: u32) -> Result<Self, RateError> {
        if !rate_per_second.is_finite() || rate_per_second <= 0.0 {
            return Err(RateError::InvalidRate(rate_per_second));
        }
        if burst == 0 {
            return Err(RateError::ZeroBurst);
        }
        if rate_per_second > 1e9 {
            return Err(RateError::RateTooHigh(rate_per_second));
        }
        let interval = (1e9 / rate_per_second).round();
        // The largest f64 below 2^64; anything at or above it would saturate
        // silently in the cast.
        if interval >= 18_446_744_073_709_549_568.0 {
            return Err(RateError::WindowTooLarge {
                rate: rate_per_second,
                burst,
            });
        }
        let interval = interval as u64;
        let window = interval
            .checked_mul(u64::from(burst))
            .ok_or(RateError::WindowTooLarge {
                rate: rate_per_second,
                burst,
            })?;
        Ok(Self {
            interval,
            window,
            rate: rate_per_second,
            burst,
        })
    }

    /// One GCRA decision: the new TAT on accept, the wait in nanoseconds on
    /// reject.
    fn decide(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let new_tat = tat.max(now).saturating_add(self.interval);
        let allow_at = new_tat.saturating_sub(self.window);
        if now < allow_at {
            Err(allow_at - now)
        } else {
            Ok(new_tat)
        }
    }
}

/// Nanoseconds since `base`; instants before `base` count as `base`.
fn nanos_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

// === impl Gcra ===

/// A single GCRA limiter (one shared budget). Lock-free: the TAT is one
/// atomic, updated by compare-and-swap.
#[derive(Debug)]
pub struct Gcra {
    params: Params,
    base: Instant,
    /// Nanoseconds since `base`; 0 (the past) means "idle".
    tat: AtomicU64,
}

impl Gcra {
    /// A limiter admitting `rate_per_second` on average with bursts of up to
    /// `burst` requests at once.
    pub fn new(rate_per_second: f64, burst: u32) -> Result<Self, RateError> {
        Ok(Self {
            params: Params::new(rate_per_second, burst)?,
            base: Instant::now(),
            tat: AtomicU64::new(0),
        })
    }

    /// Configured requests per second.
    pub fn rate(&self) -> f64 {
        self.params.rate
    }

    /// Configured burst.
    pub fn burst(&self) -> u32 {
        self.params.burst
    }

    /// Admit one request arriving at `now`, or say how long until one would
    /// be admitted. Never waits.
    pub fn check(&self, now: Instant) -> Result<(), RetryAfter> {
        let now = nanos_since(self.base, now);
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = self
                .params
                .decide(current, now)
                .map_err(|wait| RetryAfter(Duration::from_nanos(wait)))?;
            match self.tat.compare_exchange_weak(
                current,
                new_tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(observed) => current = observed,
            }
        }
    }

    /// Wait until a request is admitted, then return (the request has been
    /// counted).
    ///
    /// This re-checks after each sleep instead of reserving a future slot, so
    /// dropping the future (shutdown, a `select!` losing) consumes nothing:
    /// it is cancel-safe. The price is that waiters are not served strictly
    /// in arrival order.
    pub async fn until_ready(&self) {
        loop {
            match self.check(Instant::now()) {
                Ok(()) => return,
                Err(RetryAfter(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}

// === impl KeyedGcra ===

/// One GCRA budget per key (client address, principal, …) with a bounded
/// number of tracked keys.
///
/// Keys whose TAT has passed carry no state and are swept out when the table
/// is full. If the table is full of keys that are all still active, a new key
/// is refused with the longest hint the limiter ever gives (`burst / rate`):
/// by then every key present now has gone idle, so a slot is guaranteed. The
/// table never grows past `max_keys` — a flood of distinct keys costs memory
/// only up to the bound.
#[derive(Debug)]
pub struct KeyedGcra<K> {
    params: Params,
    base: Instant,
    max_keys: usize,
    table: Mutex<Table<K>>,
}

#[derive(Debug)]
struct Table<K> {
    tats: HashMap<K, u64>,
    /// A lower bound on the smallest TAT in `tats`. While `now` is below it
    /// no key can be idle, so a full table rejects in O(1) instead of
    /// sweeping on every request of a flood.
    earliest_tat: u64,
}

impl<K: Hash + Eq> KeyedGcra<K> {
    /// A per-key limiter: each key gets `rate_per_second` with bursts of
    /// `burst`; at most `max_keys` keys are tracked at once.
    pub fn new(rate_per_second: f64, burst: u32, max_keys: usize) -> Result<Self, RateError> {
        if max_keys == 0 {
            return Err(RateError::ZeroKeys);
        }
        Ok(Self {
            params: Params::new(rate_per_second, burst)?,
            base: Instant::now(),
            max_keys,
            table: Mutex::new(Table {
                tats: HashMap::new(),
                earliest_tat: u64::MAX,
            }),
        })
    }

    /// Configured requests per second per key.
    pub fn rate(&self) -> f64 {
        self.params.rate
    }

    /// Configured burst per key.
    pub fn burst(&self) -> u32 {
        self.params.burst
    }

    /// Configured key bound.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys currently tracked (idle ones included until swept), for metrics.
    pub fn len(&self) -> usize {
        self.table.lock().tats.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admit one request for `key` arriving at `now`, or say how long until
    /// one would be admitted. Never waits. The key is only cloned when it is
    /// new.
    pub fn check<Q>(&self, key: &Q, now: Instant) -> Result<(), RetryAfter>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = nanos_since(self.base, now);
        let reject = |wait: u64| RetryAfter(Duration::from_nanos(wait));
        let mut table = self.table.lock();

        if let Some(tat) = table.tats.get_mut(key) {
            *tat = self.params.decide(*tat, now).map_err(reject)?;
            return Ok(());
        }

        // A new key starts idle, and an idle key always conforms (burst ≥ 1).
        let new_tat = self.params.decide(0, now).map_err(reject)?;
        if table.tats.len() >= self.max_keys {
            table.sweep(now);
            if table.tats.len() >= self.max_keys {
                return Err(reject(self.params.window));
            }
        }
        table.earliest_tat = table.earliest_tat.min(new_tat);
        table.tats.insert(key.to_owned(), new_tat);
        Ok(())
    }

    /// Drop every key that is idle at `now`. `check` does this by itself when
    /// the table is full; call it from a janitor to give memory back sooner.
    pub fn sweep(&self, now: Instant) {
        let now = nanos_since(self.base, now);
        let mut table = self.table.lock();
        table.sweep(now);
        // Only here, not in `check`'s sweep: a full table would shrink and
        // regrow on every flood otherwise.
        let len = table.tats.len();
        table.tats.shrink_to(len);
    }
}

impl<K> Table<K> {
    fn sweep(&mut self, now: u64) {
        if now < self.earliest_tat {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        self.earliest_tat = self.tats.values().copied().min().unwrap_or(u64::MAX);
    }
}

#[cfg(test)]
mod tests;
