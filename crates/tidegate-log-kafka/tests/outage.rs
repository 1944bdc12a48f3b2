//! A broker outage: our own tansu child on a free port with a temporary sqlite file
//! is killed and restarted; health, appends and both nodes' tails must follow, with
//! nothing lost or duplicated.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tidegate_log::{EventLog, LogError};
use tidegate_log_kafka::KafkaLog;

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_tails_survive_a_broker_restart() {
    init_tracing();
    let Some(bin) = tansu_bin() else {
        assert!(
            std::env::var("TIDEGATE_TEST_BROKERS").as_deref() != Ok("required"),
            "tansu is required (TIDEGATE_TEST_BROKERS=required) but not installed"
        );
        eprintln!("SKIPPED: tansu not installed (cargo install tansu --version 0.6.0 --locked --features dynostore,libsql)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Tansu::start(&bin, dir.path(), port);
    let timeout = Duration::from_secs(2);
    let mut cfg = config(&broker.brokers(), "tgout.");
    cfg.request_timeout = timeout;
    let a = KafkaLog::connect(cfg.clone()).await.unwrap();
    let b = KafkaLog::connect(cfg).await.unwrap();
    a.ensure_stream("events").await.unwrap();
    b.ensure_stream("events").await.unwrap();
    for i in 0..5 {
        append_one(&a, "events", Some(&format!("k{i}")), &format!("p{i}")).await;
    }
    let mut wb = b.watch_next("events").unwrap();
    tokio::time::timeout(Duration::from_secs(10), wb.wait_for(|&n| n >= 5))
        .await
        .unwrap()
        .unwrap();

    // Down: health errs, appends fail with Unavailable within the request timeout.
    broker.kill();
    wait_until("health errs", Duration::from_secs(8), || {
        a.health().is_err()
    })
    .await;
    eprintln!("health while down: {:?}", a.health());
    let started = Instant::now();
    let r = a
        .append("events", vec![rec(Some("k-down"), "p-down")])
        .await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() <= timeout + Duration::from_secs(2),
        "append failed after {:?}",
        started.elapsed()
    );

    // Up again on the same port and file.
    let _broker = Tansu::start(&bin, dir.path(), port);
    wait_until("health recovers", Duration::from_secs(30), || {
        a.health().is_ok()
    })
    .await;
    // The failed append is retried with the same key (it may or may not have been
    // stored before the broker died): never stored twice.
    let mut retried = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while retried.is_none() {
        match a
            .append("events", vec![rec(Some("k-down"), "p-down")])
            .await
        {
            Ok(v) => retried = Some(v[0]),
            Err(e) if Instant::now() < deadline => {
                eprintln!("retry after restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    }
    for i in 5..10 {
        append_one(&a, "events", Some(&format!("k{i}")), &format!("p{i}")).await;
    }
    let next = a.bounds("events").unwrap().next;
    assert_eq!(next, 11, "5 before, the retried one, 5 after");
    // Both tails resumed.
    for (name, log) in [("a", &a), ("b", &b)] {
        let mut w = log.watch_next("events").unwrap();
        tokio::time::timeout(Duration::from_secs(20), w.wait_for(|&n| n >= next))
            .await
            .unwrap_or_else(|_| panic!("tail of node {name} did not resume"))
            .unwrap();
        let recs = read_all(log, "events", 0, next).await;
        let payloads: Vec<String> = recs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        let unique: BTreeSet<&String> = payloads.iter().collect();
        assert_eq!(
            unique.len(),
            payloads.len(),
            "node {name}: duplicates in {payloads:?}"
        );
        assert_eq!(payloads.len(), 11, "node {name}: {payloads:?}");
        assert_eq!(
            recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..11).collect::<Vec<_>>()
        );
    }
    let s = a.stats();
    assert!(s.append_errors >= 1, "{s:?}");
    a.close().await;
    b.close().await;
}
