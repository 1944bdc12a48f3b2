//! The Kafka log against a real Kafka-protocol broker (tansu in CI; see
//! `scripts/brokers.sh`). Skipped when none answers, unless brokers are required.

mod common;

use bytes::Bytes;
use common::*;
use std::time::Duration;
use tidegate_log::testsuite::brokers::{kafka_brokers, unique};
use tidegate_log::{Appended, EventLog, LogError};
use tidegate_log_kafka::KafkaLog;

fn prefix() -> String {
    format!("{}.", unique("tgtest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_bounds_and_watch() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let log = connect(&brokers, &prefix).await;
    assert_ne!(log.epoch(), 0);
    assert!(matches!(
        log.append("events", vec![rec(None, "x")]).await,
        Err(LogError::UnknownStream(_))
    ));
    log.ensure_stream("events").await.unwrap();
    log.ensure_stream("events").await.unwrap();
    assert_eq!(
        log.bounds("events").unwrap(),
        tidegate_log::Bounds { first: 0, next: 0 }
    );
    let mut watch = log.watch_next("events").unwrap();

    let out = log
        .append(
            "events",
            vec![rec(None, "a"), rec(None, "b"), rec(None, "c")],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Appended::New(0), Appended::New(1), Appended::New(2)]
    );
    // Read-your-writes: bounds and watch reflect the append as soon as it returns.
    assert_eq!(log.bounds("events").unwrap().next, 3);
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|&n| n >= 3))
        .await
        .unwrap()
        .unwrap();

    let recs = read_all(&log, "events", 0, 3).await;
    let payloads: Vec<&[u8]> = recs.iter().map(|r| r.payload.as_ref()).collect();
    assert_eq!(payloads, vec![&b"a"[..], b"b", b"c"]);
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(recs
        .iter()
        .all(|r| r.timestamp_ms <= now && r.timestamp_ms + 60_000 > now));
    // Limits: max_records, max_bytes (at least one), from in the middle, from past the end.
    assert_eq!(log.read("events", 1, 1, 1 << 20).await.unwrap().len(), 1);
    assert_eq!(log.read("events", 0, 100, 1).await.unwrap().len(), 1);
    assert_eq!(
        log.read("events", 2, 100, 1 << 20).await.unwrap()[0].payload,
        "c"
    );
    assert!(log
        .read("events", 3, 100, 1 << 20)
        .await
        .unwrap()
        .is_empty());
    assert!(log.read("events", 0, 0, 1 << 20).await.unwrap().is_empty());

    // Too large, bad names.
    let big = vec![b'x'; 1024 * 1024 + 1];
    let r = log
        .append(
            "events",
            vec![tidegate_log::AppendRecord {
                dedup_key: None,
                payload: Bytes::from(big),
            }],
        )
        .await;
    assert!(matches!(r, Err(LogError::RecordTooLarge(..))), "{r:?}");
    for bad in ["", "a/b", "..", "_meta", &"x".repeat(201)] {
        assert!(
            matches!(
                log.ensure_stream(bad).await,
                Err(LogError::InvalidStreamName(_))
            ),
            "{bad}"
        );
    }
    assert!(log.health().is_ok());
    let stats = log.stats();
    assert_eq!(stats.appends, 3);
    assert!(stats.tail_records >= 3);
    log.close().await;
    assert!(matches!(log.bounds("events"), Err(LogError::Closed)));
    delete_topics(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_by_key_within_a_batch_across_batches_and_concurrently() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let log = connect(&brokers, &prefix).await;
    log.ensure_stream("s").await.unwrap();
    let out = log
        .append(
            "s",
            vec![
                rec(Some("k1"), "1"),
                rec(Some("k2"), "2"),
                rec(Some("k1"), "1 again"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Appended::New(0), Appended::New(1), Appended::Duplicate(0)]
    );
    let out = log
        .append(
            "s",
            vec![rec(Some("k2"), "2"), rec(Some("k3"), "3"), rec(None, "n")],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Appended::Duplicate(1), Appended::New(2), Appended::New(3)]
    );
    // Concurrent appends of one key on one node store it once.
    let (a, b) = tokio::join!(
        log.append("s", vec![rec(Some("k4"), "4")]),
        log.append("s", vec![rec(Some("k4"), "4")]),
    );
    let (a, b) = (a.unwrap()[0], b.unwrap()[0]);
    assert_eq!(a.offset(), b.offset());
    assert!(matches!(
        (a, b),
        (Appended::New(_), Appended::Duplicate(_)) | (Appended::Duplicate(_), Appended::New(_))
    ));
    assert_eq!(log.bounds("s").unwrap().next, 5);
    assert_eq!(read_all(&log, "s", 0, 5).await.len(), 5);
    assert_eq!(log.stats().duplicates, 3);
    log.close().await;

    // A restarted node rebuilds the index from the last dedup window of the topic.
    let log = connect(&brokers, &prefix).await;
    log.ensure_stream("s").await.unwrap();
    assert_eq!(
        append_one(&log, "s", Some("k3"), "3").await,
        Appended::Duplicate(2)
    );
    assert_eq!(
        append_one(&log, "s", Some("k5"), "5").await,
        Appended::New(5)
    );
    log.close().await;
    delete_topics(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_sees_the_first_nodes_appends_and_keys() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let a = connect(&brokers, &prefix).await;
    let b = connect(&brokers, &prefix).await;
    assert_eq!(a.epoch(), b.epoch(), "all nodes agree on the epoch");
    a.ensure_stream("events").await.unwrap();
    b.ensure_stream("events").await.unwrap();
    let mut watch_b = b.watch_next("events").unwrap();
    let o = append_one(&a, "events", Some("id-1"), "from a").await;
    assert_eq!(o, Appended::New(0));
    tokio::time::timeout(Duration::from_secs(10), watch_b.wait_for(|&n| n >= 1))
        .await
        .expect("node b's tail sees node a's append")
        .unwrap();
    let recs = b.read("events", 0, 10, 1 << 20).await.unwrap();
    assert_eq!(recs[0].payload, "from a");
    // The key came through b's tail: a retry on b is a duplicate.
    assert_eq!(
        append_one(&b, "events", Some("id-1"), "from a").await,
        Appended::Duplicate(0)
    );
    // And the other way round, interleaved.
    for i in 0..20 {
        let (n, p) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        n.append("events", vec![rec(None, p)]).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut wa = a.watch_next("events").unwrap();
        let mut wb = b.watch_next("events").unwrap();
        wa.wait_for(|&n| n >= 21).await.unwrap();
        wb.wait_for(|&n| n >= 21).await.unwrap();
    })
    .await
    .unwrap();
    let ra = read_all(&a, "events", 0, 21).await;
    let rb = read_all(&b, "events", 0, 21).await;
    assert_eq!(ra.len(), 21);
    assert_eq!(ra, rb, "both nodes read the same log");
    a.close().await;
    b.close().await;
    delete_topics(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_tail_cache_go_to_the_broker() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let mut cfg = config(&brokers, &prefix);
    cfg.tail_cache_bytes = 4 * 1024; // a handful of records
    let log = KafkaLog::connect(cfg).await.unwrap();
    log.ensure_stream("s").await.unwrap();
    let batch: Vec<_> = (0..200).map(|i| rec(None, &format!("{i:0>100}"))).collect();
    log.append("s", batch).await.unwrap();
    let mut w = log.watch_next("s").unwrap();
    w.wait_for(|&n| n >= 200).await.unwrap();
    let mut next = 0;
    while next < 200 {
        let recs = log.read("s", next, 37, 1 << 20).await.unwrap();
        assert!(!recs.is_empty());
        for r in &recs {
            assert_eq!(r.offset, next);
            assert_eq!(r.payload, format!("{next:0>100}"));
            next += 1;
        }
    }
    let s = log.stats();
    assert!(s.cache_misses > 0 && s.broker_reads > 0, "{s:?}");
    assert!(s.cache_bytes <= 4 * 1024, "{s:?}");
    log.close().await;
    delete_topics(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_consumers_commit_and_read_back_on_any_node() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let a = connect(&brokers, &prefix).await;
    let b = connect(&brokers, &prefix).await;
    a.ensure_stream("s").await.unwrap();
    b.ensure_stream("s").await.unwrap();
    assert_eq!(a.consumer_position("s", "worker").await.unwrap(), None);
    a.commit_consumer("s", "worker", 7).await.unwrap();
    assert_eq!(a.consumer_position("s", "worker").await.unwrap(), Some(7));
    assert_eq!(b.consumer_position("s", "worker").await.unwrap(), Some(7));
    b.commit_consumer("s", "worker", 9).await.unwrap();
    assert_eq!(a.consumer_position("s", "worker").await.unwrap(), Some(9));
    assert_eq!(a.consumer_position("s", "other").await.unwrap(), None);
    assert!(matches!(
        a.commit_consumer("s", "bad/name", 1).await,
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        a.commit_consumer("nope", "worker", 1).await,
        Err(LogError::UnknownStream(_))
    ));
    a.close().await;
    b.close().await;
    delete_topics(&brokers, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_fast_when_no_broker_answers() {
    init_tracing();
    let mut cfg = config(&format!("127.0.0.1:{}", free_port()), "tgtest.none.");
    cfg.request_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let r = KafkaLog::connect(cfg).await;
    assert!(matches!(r, Err(LogError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Not a pass/fail test: append latency by `linger` and `dedup_sync`
/// (`cargo test -p tidegate-log-kafka --test kafka measure -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_append_latency() {
    init_tracing();
    let _serial = serial().await;
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let prefix = prefix();
    let fetch_wait: u64 = std::env::var("FETCH_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for (linger, sync) in [(0, false), (1, false), (0, true), (1, true)] {
        let mut cfg = config(&brokers, &prefix);
        cfg.fetch_wait = Duration::from_millis(fetch_wait);
        cfg.linger = Duration::from_millis(linger);
        cfg.dedup_sync = sync;
        let log = KafkaLog::connect(cfg).await.unwrap();
        let stream = format!("m{linger}{sync}");
        log.ensure_stream(&stream).await.unwrap();
        let n = 300;
        let t = std::time::Instant::now();
        for i in 0..n {
            append_one(&log, &stream, Some(&format!("s{i}")), "payload").await;
        }
        let seq = t.elapsed() / n;
        let t = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for w in 0..16 {
            let log = log.clone();
            let stream = stream.clone();
            set.spawn(async move {
                for i in 0..50 {
                    append_one(&log, &stream, Some(&format!("c{w}-{i}")), "payload").await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let conc = t.elapsed();
        eprintln!(
            "fetch_wait {fetch_wait} ms, linger {linger} ms, dedup_sync {sync}: sequential {seq:?}/append; 16x50 concurrent {:.0} appends/s",
            800.0 / conc.as_secs_f64()
        );
        log.close().await;
    }
    delete_topics(&brokers, &prefix).await;
}
