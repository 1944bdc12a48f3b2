//! Fixtures for Tidegate's end-to-end tests: everything speaks to a real gateway over
//! real sockets.
//!
//! - [`gateway`]: an in-process gateway on `127.0.0.1:0` with a temporary log
//!   directory ([`GatewayBuilder`] → [`Gateway`]), publish helpers and CloudEvent
//!   builders; restart on the same log directory.
//! - [`sse`]: an SSE client over a streaming HTTP response that parses
//!   `event:`/`id:`/`data:` blocks and `:` comments, keeping each block's raw bytes.
//! - [`ws`]: a WebSocket client (tokio-tungstenite) that surfaces pings and closes.
//! - [`longpoll`]: a long-poll client with its own cookie jar (RIG's cookie protocol).
//! - [`frontend`]: one interface over the three transports, so a scenario can run on each.
//! - [`jwt`]: HS256 token minting with the gateway's test secret.
//! - [`process`]: spawning the `tidegate` binary and reading its listening line.
#![forbid(unsafe_code)]

pub mod frontend;
pub mod gateway;
pub mod jwt;
pub mod longpoll;
pub mod process;
pub mod sse;
pub mod ws;

pub use frontend::{Frontend, Kind};
pub use gateway::{ce, greeting, Gateway, GatewayBuilder, Published};

use std::time::Duration;

/// A request the gateway refused: its status and its text body.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

impl std::error::Error for Rejected {}

/// Default bound on any single wait in a test: generous for a loaded CI box, but a
/// hung test fails instead of stalling the suite.
pub const WAIT: Duration = Duration::from_secs(10);

/// A plain HTTP client that ignores proxy variables of the environment (a sandbox
/// proxy must never see loopback test traffic).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("building a reqwest client")
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tiny deterministic PRNG (xorshift64*): random test moments, reproducible from the
/// printed seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `TIDEGATE_TEST_SEED` or the clock; prints the seed.
    pub fn from_env(label: &str) -> Rng {
        let seed = std::env::var("TIDEGATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        eprintln!("{label}: TIDEGATE_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
