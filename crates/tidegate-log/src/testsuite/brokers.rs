//! Broker discovery for tests. `scripts/test.sh` starts the brokers, exports their
//! addresses and sets `TIDEGATE_TEST_BROKERS=required`, so in CI a missing broker fails
//! the test. A developer running `cargo test` without brokers sees the broker tests
//! skipped, each with a line saying so.
//!
//! - `TIDEGATE_TEST_NATS_URL` (default `nats://127.0.0.1:4222`): NATS with JetStream.
//! - `TIDEGATE_TEST_KAFKA_BROKERS` (default `127.0.0.1:9092`): a Kafka-protocol broker.
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn required() -> bool {
    std::env::var("TIDEGATE_TEST_BROKERS").is_ok_and(|v| v == "required")
}

fn reachable(hostport: &str) -> bool {
    let addrs: Vec<SocketAddr> = match hostport.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
}

fn found(kind: &str, var: &str, value: String, hostport: &str) -> Option<String> {
    if reachable(hostport) {
        return Some(value);
    }
    assert!(
        !required(),
        "{kind} is required (TIDEGATE_TEST_BROKERS=required) but nothing answers at {hostport} ({var})"
    );
    eprintln!("SKIPPED: no {kind} at {hostport} (set {var}, or run scripts/test.sh)");
    None
}

/// The NATS URL, or `None` (test skipped) when no server answers and brokers are not required.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("TIDEGATE_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let hostport = url
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("nats://")
        .to_owned();
    found(
        "NATS server",
        "TIDEGATE_TEST_NATS_URL",
        url.clone(),
        &hostport,
    )
}

/// The Kafka bootstrap servers, or `None` (test skipped) as for [`nats_url`].
pub fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("TIDEGATE_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let first = brokers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    found(
        "Kafka-protocol broker",
        "TIDEGATE_TEST_KAFKA_BROKERS",
        brokers.clone(),
        &first,
    )
}

/// A name no other test run uses: `prefix` plus a random suffix (letters and digits).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}
