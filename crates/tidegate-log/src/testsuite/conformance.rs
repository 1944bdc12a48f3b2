//! The [`EventLog`] contract as executable checks, shared by every backend's tests.
//!
//! Call [`run_all`] with a factory that opens a log instance on the backend under
//! test and a stream name no other test uses; every check works on its own stream
//! `{stream}-{check}` (see [`stream_names`], to clean them up afterwards). Each check is
//! also a `pub async fn` of its own, for backends that must skip one.
//!
//! The factory is called more than once: the cluster check opens a SECOND instance
//! on the same backend (another node) and expects it to see the first one's appends
//! and consumer positions. A backend with a single instance per process (the embedded
//! log) may return the same instance each time.
//!
//! ```ignore
//! let log: Arc<dyn EventLog> = ...;
//! conformance::run_all(|| { let l = log.clone(); async move { l } }, &unique("conf")).await;
//! ```
//!
//! Checks panic (assert) on a violation. Waiting checks give up after [`WAIT`].
use crate::{AppendRecord, Appended, EventLog, LogError, Record};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a check waits for something asynchronous (a watch, another instance).
pub const WAIT: Duration = Duration::from_secs(10);

/// The checks of [`run_all`], by name; the stream of check `c` is `{stream}-{c}`.
pub const CHECKS: &[&str] = &[
    "ensure",
    "offsets",
    "read",
    "bounds",
    "dedup",
    "watch",
    "cluster",
    "consumers",
    "unknown",
];

/// Every stream name [`run_all`] may create for `stream`.
pub fn stream_names(stream: &str) -> Vec<String> {
    CHECKS.iter().map(|c| format!("{stream}-{c}")).collect()
}

/// Runs every check, each on its own stream.
pub async fn run_all<F, Fut>(open: F, stream: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let s = |c: &str| format!("{stream}-{c}");
    let log = open().await;
    ensure_stream_is_idempotent(log.as_ref(), &s("ensure")).await;
    append_returns_consecutive_offsets(log.as_ref(), &s("offsets")).await;
    read_respects_from_and_limits(log.as_ref(), &s("read")).await;
    bounds_follow_appends(log.as_ref(), &s("bounds")).await;
    dedup_returns_original_offset(log.as_ref(), &s("dedup")).await;
    watch_next_advances_after_append(log.as_ref(), &s("watch")).await;
    second_instance_sees_appends(&open, &s("cluster")).await;
    consumer_positions_round_trip(&open, &s("consumers")).await;
    unknown_stream_is_an_error(log.as_ref(), &s("unknown")).await;
}

/// A record with payload `payload` and no dedup key.
pub fn rec(payload: &str) -> AppendRecord {
    AppendRecord {
        dedup_key: None,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// A record with a dedup key.
pub fn keyed(key: &str, payload: &str) -> AppendRecord {
    AppendRecord {
        dedup_key: Some(Bytes::copy_from_slice(key.as_bytes())),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn append_ok(log: &dyn EventLog, stream: &str, records: Vec<AppendRecord>) -> Vec<Appended> {
    let n = records.len();
    let out = log
        .append(stream, records)
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e}"));
    assert_eq!(out.len(), n, "one result per record");
    out
}

/// Waits up to [`WAIT`] until `rx` holds a value passing `pred`.
async fn reaches(
    rx: &mut tokio::sync::watch::Receiver<u64>,
    pred: impl FnMut(&u64) -> bool,
) -> bool {
    // The `Ref` returned by `wait_for` holds the watch's lock: drop it right here.
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Waits until the watch of `stream` reaches `next`.
pub async fn wait_next(log: &dyn EventLog, stream: &str, next: u64) {
    let mut rx = log.watch_next(stream).expect("watch_next");
    let reached = reaches(&mut rx, |n| *n >= next).await;
    assert!(
        reached,
        "{stream}: watch_next did not reach {next} within {WAIT:?} (at {})",
        *rx.borrow()
    );
}

/// Reads everything in `[from, next)` in batches of `batch`.
pub async fn read_all(
    log: &dyn EventLog,
    stream: &str,
    from: u64,
    next: u64,
    batch: usize,
) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut pos = from;
    while pos < next {
        let got = log
            .read(stream, pos, batch, usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("read {stream} from {pos}: {e}"));
        let Some(last) = got.last() else {
            panic!("{stream}: read from {pos} returned nothing below next {next}");
        };
        assert!(last.offset >= pos);
        pos = last.offset + 1;
        out.extend(got);
    }
    out
}

/// `ensure_stream` twice is fine, and a fresh stream is empty.
pub async fn ensure_stream_is_idempotent(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    log.ensure_stream(stream)
        .await
        .expect("ensure_stream again");
    let b = log.bounds(stream).expect("bounds");
    assert_eq!((b.first, b.next), (0, 0), "a fresh stream is empty");
    assert!(log
        .read(stream, 0, 10, 1 << 20)
        .await
        .expect("read")
        .is_empty());
    append_ok(log, stream, vec![rec("x")]).await;
    log.ensure_stream(stream)
        .await
        .expect("ensure_stream on a non-empty stream");
    assert_eq!(
        log.bounds(stream).expect("bounds").next,
        1,
        "ensure keeps records"
    );
}

/// New records get consecutive offsets, across batches too; an empty batch is fine.
pub async fn append_returns_consecutive_offsets(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    assert!(append_ok(log, stream, Vec::new()).await.is_empty());
    let a = append_ok(log, stream, vec![rec("a0"), rec("a1"), rec("a2")]).await;
    assert_eq!(
        a,
        vec![Appended::New(0), Appended::New(1), Appended::New(2)]
    );
    let b = append_ok(log, stream, vec![rec("b0")]).await;
    assert_eq!(b, vec![Appended::New(3)]);
    let c = append_ok(
        log,
        stream,
        (0..20).map(|i| rec(&format!("c{i}"))).collect(),
    )
    .await;
    let offsets: Vec<u64> = c.iter().map(|a| a.offset()).collect();
    assert_eq!(offsets, (4..24).collect::<Vec<_>>());
    assert!(c.iter().all(|a| matches!(a, Appended::New(_))));
}

/// Reads from 0, from the middle, capped by `max_records` and by `max_bytes` (at
/// least one record), past the end; offsets, payloads and timestamps as appended.
pub async fn read_respects_from_and_limits(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    let before = now_ms();
    let expected: Vec<String> = (0..10).map(|i| format!("payload-{i:02}")).collect();
    append_ok(log, stream, expected.iter().map(|p| rec(p)).collect()).await;
    let after = now_ms();
    wait_next(log, stream, 10).await;

    let all = log
        .read(stream, 0, 100, usize::MAX)
        .await
        .expect("read from 0");
    assert_eq!(
        payloads(&all),
        expected,
        "read from 0 returns everything in order"
    );
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert!(
            r.timestamp_ms + 5_000 >= before && r.timestamp_ms <= after + 5_000,
            "timestamp {} not within [{before}, {after}] (5 s slack)",
            r.timestamp_ms
        );
    }
    let mid = log
        .read(stream, 4, 100, usize::MAX)
        .await
        .expect("read from 4");
    assert_eq!(payloads(&mid), expected[4..].to_vec());
    assert_eq!(mid[0].offset, 4);

    let three = log
        .read(stream, 2, 3, usize::MAX)
        .await
        .expect("max_records");
    assert_eq!(
        three.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );

    // Each payload is 10 bytes: 25 bytes allow two (about max_bytes, never more than one over).
    let by_bytes = log.read(stream, 0, 100, 25).await.expect("max_bytes");
    assert!(
        (1..=3).contains(&by_bytes.len()) && by_bytes[0].offset == 0,
        "max_bytes 25 over 10-byte records returned {} records",
        by_bytes.len()
    );
    let one = log.read(stream, 5, 100, 1).await.expect("tiny max_bytes");
    assert_eq!(
        one.len(),
        1,
        "at least one record even if it exceeds max_bytes"
    );
    assert_eq!(one[0].offset, 5);

    assert!(log
        .read(stream, 3, 0, usize::MAX)
        .await
        .expect("max_records 0")
        .is_empty());
    assert!(log
        .read(stream, 10, 10, usize::MAX)
        .await
        .expect("at next")
        .is_empty());
    assert!(log
        .read(stream, 1_000, 10, usize::MAX)
        .await
        .expect("past next")
        .is_empty());

    // Batched sequential reads see every record once (backends with read-ahead).
    let batched = read_all(log, stream, 0, 10, 3).await;
    assert_eq!(payloads(&batched), expected);
}

/// `bounds` follows appends: `first` stays 0 (no retention here), `next` grows.
pub async fn bounds_follow_appends(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    assert_eq!(log.bounds(stream).expect("bounds").next, 0);
    append_ok(log, stream, vec![rec("1"), rec("2")]).await;
    wait_next(log, stream, 2).await;
    let b = log.bounds(stream).expect("bounds");
    assert_eq!((b.first, b.next), (0, 2));
    append_ok(log, stream, vec![rec("3")]).await;
    wait_next(log, stream, 3).await;
    assert_eq!(log.bounds(stream).expect("bounds").next, 3);
}

/// A dedup key seen before returns `Duplicate(original)` and stores nothing, across
/// batches and within one.
pub async fn dedup_returns_original_offset(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    let first = append_ok(log, stream, vec![keyed("k1", "one"), rec("plain")]).await;
    assert_eq!(first, vec![Appended::New(0), Appended::New(1)]);
    let again = append_ok(
        log,
        stream,
        vec![keyed("k1", "one-again"), keyed("k2", "two")],
    )
    .await;
    assert_eq!(again, vec![Appended::Duplicate(0), Appended::New(2)]);
    let within = append_ok(
        log,
        stream,
        vec![keyed("k3", "three"), keyed("k3", "three-again")],
    )
    .await;
    assert_eq!(within, vec![Appended::New(3), Appended::Duplicate(3)]);
    wait_next(log, stream, 4).await;
    assert_eq!(
        log.bounds(stream).expect("bounds").next,
        4,
        "duplicates store nothing"
    );
    let all = read_all(log, stream, 0, 4, 100).await;
    assert_eq!(payloads(&all), vec!["one", "plain", "two", "three"]);
}

/// `watch_next` taken before an append moves past it.
pub async fn watch_next_advances_after_append(log: &dyn EventLog, stream: &str) {
    log.ensure_stream(stream).await.expect("ensure_stream");
    let mut rx = log.watch_next(stream).expect("watch_next");
    assert_eq!(*rx.borrow_and_update(), 0);
    let a = append_ok(log, stream, vec![rec("w")]).await;
    let reached = reaches(&mut rx, |n| *n > a[0].offset()).await;
    assert!(reached, "watch did not pass offset {}", a[0].offset());
    let rx2 = log.watch_next(stream).expect("watch_next");
    let a = append_ok(log, stream, vec![rec("w2")]).await;
    let mut rx2 = rx2;
    let reached = reaches(&mut rx2, |n| *n > a[0].offset()).await;
    assert!(reached, "second watch did not pass {}", a[0].offset());
}

/// Two instances on one backend (two nodes): appends through either are seen by
/// the other's watch and reads, with the same offsets; both report the same epoch.
pub async fn second_instance_sees_appends<F, Fut>(open: &F, stream: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let a = open().await;
    let b = open().await;
    assert_eq!(a.epoch(), b.epoch(), "nodes sharing a log share its epoch");
    a.ensure_stream(stream).await.expect("ensure_stream on a");
    b.ensure_stream(stream).await.expect("ensure_stream on b");
    let mut watch_b = b.watch_next(stream).expect("watch_next on b");

    let from_a = append_ok(a.as_ref(), stream, vec![rec("a0"), rec("a1"), rec("a2")]).await;
    assert_eq!(
        from_a.iter().map(|x| x.offset()).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let reached = reaches(&mut watch_b, |n| *n >= 3).await;
    assert!(reached, "b's watch did not see a's appends");
    let on_b = read_all(b.as_ref(), stream, 0, 3, 100).await;
    assert_eq!(payloads(&on_b), vec!["a0", "a1", "a2"]);
    assert_eq!(
        on_b.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );

    let from_b = append_ok(b.as_ref(), stream, vec![rec("b3")]).await;
    assert_eq!(from_b, vec![Appended::New(3)]);
    wait_next(a.as_ref(), stream, 4).await;
    let on_a = read_all(a.as_ref(), stream, 2, 4, 100).await;
    assert_eq!(payloads(&on_a), vec!["a2", "b3"]);
    assert_eq!(
        a.bounds(stream).expect("bounds a").next,
        b.bounds(stream).expect("bounds b").next
    );

    // Dedup is shared too: a key stored through a is a duplicate through b.
    let k = append_ok(a.as_ref(), stream, vec![keyed("shared", "s")]).await;
    let dup = append_ok(b.as_ref(), stream, vec![keyed("shared", "s-again")]).await;
    assert_eq!(dup, vec![Appended::Duplicate(k[0].offset())]);
}

/// Named consumer positions: absent at first, then the last committed value,
/// independent per consumer name, visible to a second instance.
pub async fn consumer_positions_round_trip<F, Fut>(open: &F, stream: &str)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = open().await;
    log.ensure_stream(stream).await.expect("ensure_stream");
    assert_eq!(
        log.consumer_position(stream, "worker")
            .await
            .expect("position"),
        None
    );
    log.commit_consumer(stream, "worker", 5)
        .await
        .expect("commit");
    assert_eq!(
        log.consumer_position(stream, "worker")
            .await
            .expect("position"),
        Some(5)
    );
    log.commit_consumer(stream, "worker", 7)
        .await
        .expect("commit again");
    assert_eq!(
        log.consumer_position(stream, "worker")
            .await
            .expect("position"),
        Some(7)
    );
    assert_eq!(
        log.consumer_position(stream, "other")
            .await
            .expect("position"),
        None
    );
    log.commit_consumer(stream, "other.v2_x", 1)
        .await
        .expect("commit with . and _");
    assert_eq!(
        log.consumer_position(stream, "other.v2_x")
            .await
            .expect("position"),
        Some(1)
    );
    assert_eq!(
        log.consumer_position(stream, "worker")
            .await
            .expect("position"),
        Some(7)
    );

    let other = open().await;
    other
        .ensure_stream(stream)
        .await
        .expect("ensure_stream on the second instance");
    assert_eq!(
        other
            .consumer_position(stream, "worker")
            .await
            .expect("position on the second instance"),
        Some(7)
    );
}

/// Operations on a stream never created fail with `UnknownStream`; invalid names
/// with `InvalidStreamName`.
pub async fn unknown_stream_is_an_error(log: &dyn EventLog, stream: &str) {
    let unknown = |r: Result<(), LogError>, what: &str| match r {
        Err(LogError::UnknownStream(_)) => {}
        other => panic!("{what} on an unknown stream: expected UnknownStream, got {other:?}"),
    };
    unknown(log.bounds(stream).map(|_| ()), "bounds");
    unknown(log.watch_next(stream).map(|_| ()), "watch_next");
    unknown(
        log.append(stream, vec![rec("x")]).await.map(|_| ()),
        "append",
    );
    unknown(log.read(stream, 0, 10, 1 << 20).await.map(|_| ()), "read");
    unknown(log.commit_consumer(stream, "c", 1).await, "commit_consumer");
    unknown(
        log.consumer_position(stream, "c").await.map(|_| ()),
        "consumer_position",
    );
    for bad in ["", "a/b", "a b", "..", "a*"] {
        match log.ensure_stream(bad).await {
            Err(LogError::InvalidStreamName(_)) => {}
            other => panic!("ensure_stream({bad:?}): expected InvalidStreamName, got {other:?}"),
        }
    }
}
