//! Flow control for Tidegate: the bounds that keep one hop from drowning the
//! next (see "Back pressure, hop by hop" in the architecture notes).
//!
//! - [`rate`] — GCRA rate limiting, single ([`rate::Gcra`]) and per key
//!   ([`rate::KeyedGcra`], bounded key count). Ingestion uses `check` to
//!   answer 429 + `Retry-After`; delivery workers use `until_ready` to wait.
//! - [`concurrency`] — how many calls may be in flight to a backend: a fixed
//!   cap or an AIMD limit that follows the backend's health. Permits release
//!   on drop and carry the call's outcome back to the limiter.
//! - [`breaker`] — a per-backend circuit breaker (Closed → Open → HalfOpen)
//!   that stops hammering a backend that is failing.
//! - [`retry`] — exponential backoff with full jitter, `Retry-After` parsing
//!   and the classification of HTTP delivery outcomes into retry decisions.
//!
//! Nothing here reads a clock by itself except the explicitly async waiting
//! helpers: every decision takes `now` (a `tokio::time::Instant`) so tests run
//! on tokio's paused time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod concurrency;
pub mod rate;
pub mod retry;
