//! Retrying deliveries: how long to wait, when to give up, and which answers
//! are worth retrying at all.
//!
//! A delivery attempt ends in a status (or none, if the connection failed);
//! [`classify`] turns that into an [`Outcome`]. For `Retry` and `SlowDown`
//! the worker asks its [`Retries`] (one per message, made by
//! [`Backoff::start`]) for the next delay, passing the server's `Retry-After`
//! as read by [`parse_retry_after`]; `None` means give up (dead-letter the
//! message).
//!
//! Delays are exponential backoff with *full jitter*, as described in the
//! AWS Architecture Blog's "Exponential Backoff and Jitter":
//!
//! ```text
//! delay(attempt) = random(0, min(cap, base · 2^attempt))
//! ```
//!
//! Spreading each wait over the whole interval, rather than adding a little
//! noise to a fixed schedule, is what keeps many workers that failed together
//! from retrying together. A server's `Retry-After` is a floor: the delay is
//! at least that long (capped at `max_retry_after`, so one bad header cannot
//! park a worker for a day).

use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::Instant;

/// Invalid backoff configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// A zero base would retry in a tight loop.
    #[error("backoff base must be greater than zero")]
    ZeroBase,
    /// The cap must not be below the base.
    #[error("backoff cap ({cap:?}) is below the base ({base:?})")]
    CapBelowBase {
        /// Configured base.
        base: Duration,
        /// Configured cap.
        cap: Duration,
    },
    /// Zero attempts would never try at all.
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
}

// === impl Backoff ===

/// A retry policy: exponential backoff with full jitter, bounded by a number
/// of attempts and/or an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
}

impl Default for Backoff {
    /// 100 ms base, 30 s cap, 10 attempts, no age limit, `Retry-After` honoured
    /// up to 5 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            max_attempts: Some(10),
            max_elapsed: None,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// A policy with the given base and cap, no attempt or age limit, and
    /// `Retry-After` honoured up to 5 minutes.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if cap < base {
            return Err(BackoffError::CapBelowBase { base, cap });
        }
        Ok(Self {
            base,
            cap,
            max_attempts: None,
            max_elapsed: None,
            max_retry_after: Duration::from_secs(300),
        })
    }

    /// Give up after this many attempts in total, the first one included.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Result<Self, BackoffError> {
        if max_attempts == 0 {
            return Err(BackoffError::ZeroAttempts);
        }
        self.max_attempts = Some(max_attempts);
        Ok(self)
    }

    /// Give up rather than wait past this age (measured from the first
    /// attempt; enforced by [`Retries`]).
    pub fn with_max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// Honour a server's `Retry-After` up to this long.
    pub fn with_max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }

    /// Start tracking one message whose first attempt is at `now`.
    pub fn start(&self, now: Instant) -> Retries {
        Retries {
            backoff: *self,
            started: now,
            attempts: 0,
        }
    }

    /// The wait before retrying, after the attempt with zero-based index
    /// `attempt` (0 = the original call) failed; `None` to give up.
    ///
    /// | attempt that failed | ceiling                     |
    /// |---------------------|-----------------------------|
    /// | 0 (the original)    | `min(cap, base)`            |
    /// | 1 (first retry)     | `min(cap, 2 · base)`        |
    /// | n                   | `min(cap, 2^n · base)`      |
    ///
    /// Without `retry_after` the delay is uniform in `[0, ceiling]`, so
    /// always within `[0, cap]`. With it, the delay is at least
    /// `min(retry_after, max_retry_after)`. The attempt limit is checked
    /// here; the age limit needs a clock and lives in [`Retries`].
    pub fn next_delay<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        if let Some(max) = self.max_attempts {
            if attempt.saturating_add(1) >= max {
                return None;
            }
        }
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = Duration::from_nanos(rng.random_range(0..=ceiling_nanos));
        Some(match retry_after {
            Some(floor) => jittered.max(floor.min(self.max_retry_after)),
            None => jittered,
        })
    }
}

// === impl Retries ===

/// Retry state of one message: attempts made and when the first was.
#[derive(Debug, Clone)]
pub struct Retries {
    backoff: Backoff,
    started: Instant,
    attempts: u32,
}

impl Retries {
    /// Attempts that have failed so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the first attempt was made.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Record a failed attempt at `now` and get the wait before the next one,
    /// or `None` to give up: out of attempts, or the wait would carry the
    /// message past `max_elapsed` (no point sleeping only to give up after).
    pub fn next_delay<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        let attempt = self.attempts;
        self.attempts = self.attempts.saturating_add(1);
        let delay = self.backoff.next_delay(attempt, retry_after, rng)?;
        if let Some(max) = self.backoff.max_elapsed {
            let age = now.saturating_duration_since(self.started);
            if age.saturating_add(delay) > max {
                return None;
            }
        }
        Some(delay)
    }
}

// === Retry-After ===

/// Read an HTTP `Retry-After` value received at `now`: either delta-seconds
/// (`"120"`) or an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the
/// obsolete RFC 850 and asctime forms RFC 9110 asks recipients to accept).
///
/// A date in the past means "now" (`Duration::ZERO`). Anything else —
/// negative or fractional numbers, numbers beyond `u64`, garbage — is `None`.
/// The result is unbounded: cap it before sleeping ([`Backoff`] does).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches(|c: char| c == ' ' || c == '\t');
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

// === impl Outcome ===

/// What a delivery attempt's result means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Delivered (2xx).
    Success,
    /// A transient failure: connection error, timeout, 408, 5xx. Back off and
    /// retry.
    Retry,
    /// The backend is shedding load (429, 503): back off, honour its
    /// `Retry-After`, and tell the adaptive limiter.
    SlowDown,
    /// The backend will never accept this message as sent (other 4xx,
    /// unexpected statuses): dead-letter it now.
    Fatal,
}

impl Outcome {
    /// Whether another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Retry | Outcome::SlowDown)
    }

    /// Whether this counts against the backend's health (circuit breaker).
    /// A `Fatal` answer is a bad message, not a sick backend.
    pub fn is_backend_failure(self) -> bool {
        self.is_retryable()
    }
}

/// Classify one delivery attempt. `status` is the HTTP status if a response
/// arrived.
///
/// A timeout or connection error wins over any status: the delivery was not
/// confirmed, and for at-least-once delivery an unconfirmed send is retried.
/// Redirects are not followed by delivery workers, so a 3xx (like any status
/// outside 2xx/4xx/5xx) is `Fatal`: retrying gets the same answer.
pub fn classify(status: Option<u16>, is_timeout: bool, is_connect_error: bool) -> Outcome {
    if is_timeout || is_connect_error {
        return Outcome::Retry;
    }
    match status {
        None => Outcome::Retry,
        Some(200..=299) => Outcome::Success,
        Some(429 | 503) => Outcome::SlowDown,
        Some(408 | 500..=599) => Outcome::Retry,
        Some(_) => Outcome::Fatal,
    }
}

#[cfg(test)]
mod tests;
