//! Tests of the embedded log against real files in temporary directories.

use super::*;
use crate::{AppendRecord, Appended, Durability, EventLog, LogError};
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

fn rec(payload: impl Into<Vec<u8>>) -> AppendRecord {
    AppendRecord {
        dedup_key: None,
        payload: Bytes::from(payload.into()),
    }
}

fn keyed(key: &str, payload: impl Into<Vec<u8>>) -> AppendRecord {
    AppendRecord {
        dedup_key: Some(Bytes::copy_from_slice(key.as_bytes())),
        payload: Bytes::from(payload.into()),
    }
}

fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        retention_interval: Duration::from_millis(10),
        ..EmbeddedConfig::new(dir)
    }
}

fn test_clock(start: u64) -> (Arc<AtomicU64>, Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let c = now.clone();
    (now, Arc::new(move || c.load(SeqCst)))
}

fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.to_vec()).collect()
}

fn segment_files(dir: &Path, stream: &str) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = fs::read_dir(dir.join(STREAMS_DIR).join(stream))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let base = segment::parse_file_name(e.file_name().to_str()?)?;
            // Retention may delete the file between read_dir and metadata.
            Some((base, e.metadata().ok()?.len()))
        })
        .collect();
    v.sort();
    v
}

async fn read_all(log: &EmbeddedLog, stream: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(stream, from, 1000, usize::MAX).await.unwrap();
        let Some(last) = batch.last() else { return out };
        from = last.offset + 1;
        out.extend(batch);
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in time");
}

#[tokio::test]
async fn append_read_bounds_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert!(matches!(
        log.ensure_stream(".."),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        log.ensure_stream("a/b"),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        log.ensure_stream(&"x".repeat(201)),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        log.append("nope", vec![rec("x")]).await,
        Err(LogError::UnknownStream(_))
    ));
    assert!(matches!(
        log.read("nope", 0, 1, 1).await,
        Err(LogError::UnknownStream(_))
    ));
    log.ensure_stream("orders.v1_x-y").unwrap();
    log.ensure_stream("orders.v1_x-y").unwrap();
    let s = "orders.v1_x-y";
    assert_eq!(log.bounds(s).unwrap(), Bounds { first: 0, next: 0 });
    assert!(log.read(s, 0, 10, 10).await.unwrap().is_empty());
    let mut watch = log.watch_next(s).unwrap();
    let a = log.append(s, vec![rec("a"), rec("bb")]).await.unwrap();
    assert_eq!(a, vec![Appended::New(0), Appended::New(1)]);
    assert_eq!(*watch.borrow_and_update(), 2);
    let b = log.append(s, vec![rec("ccc")]).await.unwrap();
    assert_eq!(b, vec![Appended::New(2)]);
    assert_eq!(log.bounds(s).unwrap(), Bounds { first: 0, next: 3 });
    assert_eq!(
        payloads(&log.read(s, 0, 10, 1000).await.unwrap()),
        vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
    );
    assert_eq!(
        payloads(&log.read(s, 1, 1, 1000).await.unwrap()),
        vec![b"bb".to_vec()]
    );
    // max_bytes smaller than one record still yields one record.
    assert_eq!(log.read(s, 2, 10, 1).await.unwrap().len(), 1);
    assert_eq!(log.read(s, 0, 10, 3).await.unwrap().len(), 2);
    assert!(log.read(s, 3, 10, 1000).await.unwrap().is_empty());
    let too_big = vec![0u8; log.shared.config.max_record_bytes + 1];
    assert!(matches!(
        log.append(s, vec![rec(too_big)]).await,
        Err(LogError::RecordTooLarge(..))
    ));
    assert_eq!(log.streams(), vec![s.to_owned()]);
    let st = log.stats();
    assert_eq!((st.appends, st.append_batches), (3, 2));
    log.close();
    assert!(matches!(
        log.append(s, vec![rec("late")]).await,
        Err(LogError::Closed)
    ));
    drop(log);
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert_eq!(log.bounds(s).unwrap(), Bounds { first: 0, next: 3 });
    assert_eq!(
        log.append(s, vec![rec("d")]).await.unwrap(),
        vec![Appended::New(3)]
    );
}

#[tokio::test]
async fn rolls_segments_and_reads_across_segments_index_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        tail_cache_bytes: 600,
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg.clone()).unwrap();
    log.ensure_stream("s").unwrap();
    let payload = |i: u64| format!("payload-{i:04}-{}", "x".repeat((i % 17) as usize)).into_bytes();
    // Batches of 1..=3 records; offsets 0..60.
    let mut i = 0u64;
    while i < 60 {
        let n = (1 + i % 3).min(60 - i);
        log.append("s", (i..i + n).map(|o| rec(payload(o))).collect())
            .await
            .unwrap();
        i += n;
    }
    let files = segment_files(dir.path(), "s");
    assert!(files.len() > 4, "expected several segments, got {files:?}");
    assert_eq!(files[0].0, 0);
    assert!(files.iter().all(|&(_, len)| len <= 400 + 100));
    assert_eq!(log.stats().segments, files.len() as u64);
    let cache_first = log.stream("s").unwrap().tail.lock().first_offset().unwrap();
    assert!(
        cache_first > 10 && cache_first < 60,
        "cache holds only the newest records: {cache_first}"
    );
    let check = |recs: &[Record], from: u64| {
        for (j, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, from + j as u64);
            assert_eq!(r.payload.to_vec(), payload(r.offset));
        }
    };
    // Every start offset: index lookups in every segment, plus the cache boundary.
    for from in 0..60 {
        let recs = log.read("s", from, 5, usize::MAX).await.unwrap();
        assert_eq!(recs.len(), 5.min(60 - from as usize), "from {from}");
        check(&recs, from);
    }
    let from = cache_first - 2;
    let recs = log.read("s", from, 100, usize::MAX).await.unwrap();
    check(&recs, from);
    assert_eq!(
        recs.last().unwrap().offset,
        59,
        "a disk read spanning into the cached range returns it too"
    );
    let all = read_all(&log, "s").await;
    assert_eq!(all.len(), 60);
    check(&all, 0);
    drop(log);
    // Indexes rebuilt by the open-time scan serve the same reads.
    let log = EmbeddedLog::open(cfg).unwrap();
    for from in [0, 7, 31, 59] {
        check(&log.read("s", from, 3, usize::MAX).await.unwrap(), from);
    }
    let ix_len: usize = log
        .stream("s")
        .unwrap()
        .view
        .read()
        .segments
        .iter()
        .map(|s| s.index.read().len())
        .sum();
    assert!(ix_len > 0);
}

#[tokio::test]
async fn retention_by_age_deletes_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = test_clock(1_000_000);
    let cfg = EmbeddedConfig {
        segment_bytes: 200,
        retention_age: Some(Duration::from_secs(60)),
        ..config(dir.path())
    };
    let log = EmbeddedLog::open_with_clock(cfg, clock).unwrap();
    log.ensure_stream("s").unwrap();
    for i in 0..20 {
        log.append("s", vec![rec(format!("old-{i}-{}", "y".repeat(40)))])
            .await
            .unwrap();
    }
    let before = segment_files(dir.path(), "s").len();
    assert!(before > 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.bounds("s").unwrap().first, 0, "nothing is old yet");
    now.fetch_add(61_000, SeqCst);
    // Even when every segment is old, the active one stays.
    wait_until(|| segment_files(dir.path(), "s").len() == 1).await;
    let b = log.bounds("s").unwrap();
    assert_eq!(b.next, 20);
    assert!(b.first > 0 && b.first < 20);
    let st = log.stats();
    assert_eq!(st.retention_deletions, before as u64 - 1);
    assert_eq!(st.segments, 1);
    let recs = log.read("s", 0, 100, usize::MAX).await.unwrap();
    assert_eq!(recs[0].offset, b.first, "reads below first start at first");
    assert_eq!(
        log.append("s", vec![rec("new")]).await.unwrap(),
        vec![Appended::New(20)]
    );
}

#[tokio::test]
async fn retention_by_size_keeps_newest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 300,
        retention_bytes: Some(1000),
        tail_cache_bytes: 0,
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg).unwrap();
    log.ensure_stream("s").unwrap();
    for i in 0..100 {
        log.append("s", vec![rec(format!("r{i:03}-{}", "z".repeat(50)))])
            .await
            .unwrap();
    }
    wait_until(|| {
        segment_files(dir.path(), "s")
            .iter()
            .map(|s| s.1)
            .sum::<u64>()
            <= 1000
    })
    .await;
    let b = log.bounds("s").unwrap();
    assert!(b.first > 50, "{b:?}");
    let recs = read_all(&log, "s").await;
    assert_eq!(recs.first().unwrap().offset, b.first);
    assert_eq!(recs.last().unwrap().offset, 99);
    assert_eq!(
        recs.first().unwrap().payload.to_vec(),
        format!("r{:03}-{}", b.first, "z".repeat(50)).into_bytes()
    );
}

#[tokio::test]
async fn consumer_positions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    log.ensure_stream("s").unwrap();
    assert_eq!(log.consumer_position("s", "worker").unwrap(), None);
    log.commit_consumer("s", "worker", 5).await.unwrap();
    log.commit_consumer("s", "worker", 9).await.unwrap();
    log.commit_consumer("s", "other", 1).await.unwrap();
    assert!(matches!(
        log.commit_consumer("s", "../x", 1).await,
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        log.commit_consumer("zz", "w", 1).await,
        Err(LogError::UnknownStream(_))
    ));
    assert_eq!(log.consumer_position("s", "worker").unwrap(), Some(9));
    drop(log);
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert_eq!(log.consumer_position("s", "worker").unwrap(), Some(9));
    assert_eq!(log.consumer_position("s", "other").unwrap(), Some(1));
    assert_eq!(log.consumer_position("s", "none").unwrap(), None);
}

#[test]
fn epoch_is_stable_and_changes_after_wipe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let e1 = EmbeddedLog::open(EmbeddedConfig::new(&path))
        .unwrap()
        .epoch();
    let e2 = EmbeddedLog::open(EmbeddedConfig::new(&path))
        .unwrap()
        .epoch();
    assert_ne!(e1, 0);
    assert_eq!(e1, e2);
    fs::remove_dir_all(&path).unwrap();
    let e3 = EmbeddedLog::open(EmbeddedConfig::new(&path))
        .unwrap()
        .epoch();
    assert_ne!(e3, e1);
    fs::write(path.join(EPOCH_FILE), b"bad").unwrap();
    assert!(matches!(
        EmbeddedLog::open(EmbeddedConfig::new(&path)),
        Err(LogError::Corrupt(_))
    ));
    assert!(
        EmbeddedLog::open(EmbeddedConfig::default()).is_err(),
        "dir must be given"
    );
}

#[tokio::test]
async fn dedup_within_batch_across_batches_reopen_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = test_clock(5_000_000);
    let cfg = EmbeddedConfig {
        dedup_window: Duration::from_secs(10),
        ..config(dir.path())
    };
    let log = EmbeddedLog::open_with_clock(cfg.clone(), clock.clone()).unwrap();
    log.ensure_stream("s").unwrap();
    let r = log
        .append(
            "s",
            vec![keyed("a", "1"), keyed("b", "2"), keyed("a", "3"), rec("4")],
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            Appended::New(0),
            Appended::New(1),
            Appended::Duplicate(0),
            Appended::New(2)
        ]
    );
    let r = log
        .append("s", vec![keyed("b", "5"), keyed("c", "6")])
        .await
        .unwrap();
    assert_eq!(r, vec![Appended::Duplicate(1), Appended::New(3)]);
    assert_eq!(log.stats().duplicates, 2);
    // A batch made only of duplicates stores nothing.
    assert_eq!(
        log.append("s", vec![keyed("c", "x")]).await.unwrap(),
        vec![Appended::Duplicate(3)]
    );
    assert_eq!(log.bounds("s").unwrap().next, 4);
    drop(log);
    now.fetch_add(5_000, SeqCst);
    let log = EmbeddedLog::open_with_clock(cfg.clone(), clock.clone()).unwrap();
    assert_eq!(
        log.append("s", vec![keyed("a", "again")]).await.unwrap(),
        vec![Appended::Duplicate(0)]
    );
    now.fetch_add(5_001, SeqCst);
    // 10.001 s after the original: expired.
    assert_eq!(
        log.append("s", vec![keyed("a", "later")]).await.unwrap(),
        vec![Appended::New(4)]
    );
    drop(log);
    // After reopen, only keys younger than the window come back.
    now.fetch_add(1, SeqCst);
    let log = EmbeddedLog::open_with_clock(cfg, clock).unwrap();
    assert_eq!(
        log.append("s", vec![keyed("b", "b2"), keyed("a", "a3")])
            .await
            .unwrap(),
        vec![Appended::New(5), Appended::Duplicate(4)]
    );
    assert_eq!(payloads(&read_all(&log, "s").await).len(), 6);
}

#[tokio::test]
async fn dedup_entries_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        dedup_max_entries: 2,
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg).unwrap();
    log.ensure_stream("s").unwrap();
    log.append("s", vec![keyed("a", "1"), keyed("b", "2"), keyed("c", "3")])
        .await
        .unwrap();
    let r = log
        .append("s", vec![keyed("a", "1"), keyed("c", "3")])
        .await
        .unwrap();
    assert_eq!(r, vec![Appended::New(3), Appended::Duplicate(2)]);
}

#[tokio::test]
async fn torn_batch_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    log.ensure_stream("s").unwrap();
    log.append("s", vec![rec("a"), rec("b")]).await.unwrap();
    drop(log);
    let path = dir
        .path()
        .join(STREAMS_DIR)
        .join("s")
        .join(segment::file_name(0));
    let good_len = fs::metadata(&path).unwrap().len();
    // A crash mid-batch: two valid records of a three-record batch, no end marker.
    let mut torn = Vec::new();
    record::encode(&mut torn, 2, 1, false, None, b"c");
    record::encode(&mut torn, 3, 1, false, Some(b"k"), b"d");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&torn, good_len)
        .unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert_eq!(log.bounds("s").unwrap().next, 2);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        good_len,
        "torn batch truncated"
    );
    // The dedup key of the dropped batch was not remembered.
    assert_eq!(
        log.append("s", vec![keyed("k", "e")]).await.unwrap(),
        vec![Appended::New(2)]
    );
    assert_eq!(
        payloads(&read_all(&log, "s").await),
        vec![b"a".to_vec(), b"b".to_vec(), b"e".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_when_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        append_queue: 2,
        append_wait: Duration::from_millis(50),
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg).unwrap();
    log.ensure_stream("s").unwrap();
    let release = log.stall_writer();
    let mut queued = Vec::new();
    for i in 0..2 {
        let log = log.clone();
        queued.push(tokio::spawn(async move {
            log.append("s", vec![rec(format!("q{i}"))]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert!(matches!(
        log.append("s", vec![rec("x")]).await,
        Err(LogError::Overloaded)
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(45),
        "waited append_wait first"
    );
    assert_eq!(log.stats().overloaded_rejections, 1);
    drop(release);
    for q in queued {
        assert!(matches!(q.await.unwrap().unwrap()[0], Appended::New(_)));
    }
    assert_eq!(
        log.append("s", vec![rec("y")]).await.unwrap(),
        vec![Appended::New(2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    log.ensure_stream("s").unwrap();
    let tasks = 64;
    let per_task = 30;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..per_task {
                let payload = format!("t{t}-{i}");
                let off = log.append("s", vec![rec(payload.clone())]).await.unwrap()[0].offset();
                got.push((off, payload));
            }
            got
        }));
    }
    let mut acked = BTreeMap::new();
    for h in handles {
        for (off, p) in h.await.unwrap() {
            assert!(acked.insert(off, p).is_none(), "offset handed out twice");
        }
    }
    let n = (tasks * per_task) as u64;
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    let all = read_all(&log, "s").await;
    for r in &all {
        assert_eq!(r.payload.to_vec(), acked[&r.offset].clone().into_bytes());
    }
    let st = log.stats();
    assert_eq!(st.appends, n);
    assert!(
        st.fsyncs < n,
        "group commit must share fsyncs: {} fsyncs for {n} appends",
        st.fsyncs
    );
    assert_eq!(st.commit_records_sum, n);
    assert!(st.fsync_latency_buckets.last().unwrap().1 <= st.fsyncs);
    eprintln!(
        "group commit: {n} appends, {} fsyncs, {:.1} records/commit",
        st.fsyncs,
        st.commit_records_sum as f64 / st.commits as f64
    );
}

#[tokio::test]
async fn group_commit_window_and_buffered_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        durability: Durability::Buffered,
        group_commit_window: Duration::from_millis(2),
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg).unwrap();
    log.ensure_stream("s").unwrap();
    let futs: Vec<_> = (0..20)
        .map(|i| log.append("s", vec![rec(format!("{i}"))]))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    assert_eq!(log.bounds("s").unwrap().next, 20);
    assert_eq!(log.stats().fsyncs, 0, "buffered mode never syncs");
}

/// Payload of offset `o` with `size` bytes, recognisable after recovery.
fn prop_payload(o: u64, size: usize) -> Vec<u8> {
    (0..size).map(|i| (o as usize * 31 + i) as u8).collect()
}

fn recovery_case(
    batches: &[Vec<usize>],
    segment_bytes: u64,
    cut: prop::sample::Index,
    garbage: &[u8],
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        durability: Durability::Buffered,
        segment_bytes,
        index_interval_bytes: 128,
        ..config(dir.path())
    };
    let sizes: Vec<usize> = batches.iter().flatten().copied().collect();
    rt.block_on(async {
        let log = EmbeddedLog::open(cfg.clone()).unwrap();
        log.ensure_stream("s").unwrap();
        let mut o = 0u64;
        for b in batches {
            let recs = b.iter().map(|&s| {
                o += 1;
                rec(prop_payload(o - 1, s))
            });
            log.append("s", recs.collect()).await.unwrap();
        }
    });
    // Damage the tail of the last segment: cut at a random byte, then add garbage.
    let (base, len) = *segment_files(dir.path(), "s").last().unwrap();
    let cut = cut.index(len as usize + 1) as u64;
    let path = dir
        .path()
        .join(STREAMS_DIR)
        .join("s")
        .join(segment::file_name(base));
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
    f.write_all_at(garbage, cut).unwrap();
    // Expected: all batches before the last segment, plus its batches that end by `cut`.
    let mut expected = 0u64;
    let mut first = 0u64;
    let mut pos = 0u64;
    for b in batches {
        let end = first + b.len() as u64;
        if first >= base {
            pos += b
                .iter()
                .map(|&s| record::encoded_len(0, s) as u64)
                .sum::<u64>();
            if pos > cut {
                break;
            }
        }
        expected = end;
        first = end;
    }
    rt.block_on(async {
        let log = EmbeddedLog::open(cfg).unwrap();
        prop_assert_eq!(log.bounds("s").unwrap().next, expected);
        let all = read_all(&log, "s").await;
        prop_assert_eq!(all.len() as u64, expected);
        for (i, r) in all.iter().enumerate() {
            prop_assert_eq!(r.offset, i as u64);
            prop_assert_eq!(r.payload.to_vec(), prop_payload(r.offset, sizes[i]));
        }
        let next = log.append("s", vec![rec("after")]).await.unwrap();
        prop_assert_eq!(next, vec![Appended::New(expected)]);
        let tail = log.read("s", expected, 10, usize::MAX).await.unwrap();
        prop_assert_eq!(payloads(&tail), vec![b"after".to_vec()]);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn recovery_keeps_exactly_the_complete_batches(
        batches in proptest::collection::vec(proptest::collection::vec(0usize..300, 1..5), 1..25),
        segment_bytes in 200u64..4000,
        cut in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        recovery_case(&batches, segment_bytes, cut, &garbage)?;
    }
}

const CRASH_CHILD_ENV: &str = "TIDEGATE_LOG_CRASH_CHILD_DIR";
const CRASH_CHILD_TEST: &str = "embedded::tests::crash_child";

/// Child half of the crash test: does nothing unless started by the parent.
/// Appends forever with fsync and prints every acknowledged record.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = EmbeddedConfig {
            segment_bytes: 16 * 1024,
            ..EmbeddedConfig::new(dir)
        };
        let log = EmbeddedLog::open(cfg).unwrap();
        log.ensure_stream("s").unwrap();
        let pid = std::process::id();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0u64.. {
                    let n = 1 + (seq % 4) as usize;
                    let pads = (seq * 7 + t) % 200;
                    let names: Vec<String> = (0..n)
                        .map(|i| format!("p{pid}-{t}-{seq}-{i}-{}", "x".repeat(pads as usize)))
                        .collect();
                    let recs = names.iter().map(|p| keyed(p, p.clone())).collect();
                    let res = log.append("s", recs).await.unwrap();
                    let mut out = String::new();
                    for (a, p) in res.iter().zip(&names) {
                        out.push_str(&format!("ack {} {p}\n", a.offset()));
                    }
                    // One write per batch keeps lines whole; a torn last line is ignored.
                    use std::io::Write;
                    let mut so = std::io::stdout().lock();
                    let _ = so.write_all(out.as_bytes());
                    let _ = so.flush();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn crash_recovery_with_sigkill() {
    use rand::Rng;
    use std::io::Read;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut rng = rand::rng();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for run in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                CRASH_CHILD_TEST,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(100..500)));
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let out = reader.join().unwrap();
        let mut this_run = Vec::new();
        for line in out.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let Some(rest) = line.trim_end().strip_prefix("ack ") else {
                continue;
            };
            let (off, payload) = rest.split_once(' ').unwrap();
            let off: u64 = off.parse().unwrap();
            if let Some(prev) = acked.insert(off, payload.to_owned()) {
                panic!("offset {off} acknowledged twice: {prev} and {payload}");
            }
            this_run.push((off, payload.to_owned()));
        }
        rt.block_on(async {
            let log = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).unwrap();
            let all = read_all(&log, "s").await;
            let mut seen = HashSet::new();
            for (i, r) in all.iter().enumerate() {
                assert_eq!(r.offset, i as u64, "offsets consecutive");
                assert!(seen.insert(r.payload.clone()), "payload stored twice");
            }
            for (off, p) in &acked {
                let r = all
                    .get(*off as usize)
                    .unwrap_or_else(|| panic!("run {run}: acknowledged offset {off} lost"));
                assert_eq!(r.payload.to_vec(), p.as_bytes().to_vec(), "payload intact");
            }
            // The dedup window came back from the records: resending is a duplicate.
            for (off, p) in this_run.iter().rev().take(3) {
                let res = log.append("s", vec![keyed(p, p.clone())]).await.unwrap();
                assert_eq!(res, vec![Appended::Duplicate(*off)]);
            }
        });
    }
    assert!(
        acked.len() > 100,
        "the child should get appends acknowledged: {}",
        acked.len()
    );
    eprintln!(
        "crash test: {} acknowledged records survived 20 SIGKILLs",
        acked.len()
    );
}

#[tokio::test]
async fn fsync_failure_fails_the_stream_but_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    log.ensure_stream("s").unwrap();
    log.ensure_stream("other").unwrap();
    log.append("s", vec![rec("ok")]).await.unwrap();
    log.append("other", vec![rec("o1")]).await.unwrap();
    log.shared.fail_syncs.store(true, SeqCst);
    assert!(matches!(
        log.append("s", vec![rec("lost")]).await,
        Err(LogError::Io(_))
    ));
    log.shared.fail_syncs.store(false, SeqCst);
    // fsyncgate: no retry on a file whose dirty pages may be gone.
    assert!(matches!(
        log.append("s", vec![rec("after")]).await,
        Err(LogError::Io(_))
    ));
    assert_eq!(log.stats().failed_streams, 1);
    assert_eq!(
        log.bounds("s").unwrap().next,
        1,
        "the failed batch was never committed"
    );
    assert_eq!(payloads(&read_all(&log, "s").await), vec![b"ok".to_vec()]);
    assert_eq!(
        log.append("other", vec![rec("o2")]).await.unwrap(),
        vec![Appended::New(1)]
    );
    drop(log);
    // Reopen trusts what is on disk: the unacknowledged batch may be there; offsets continue after it.
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let next = log.bounds("s").unwrap().next;
    assert!(next == 1 || next == 2);
    assert_eq!(
        log.append("s", vec![rec("again")]).await.unwrap(),
        vec![Appended::New(next)]
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let err = EmbeddedLog::open(config(dir.path())).unwrap_err();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    log.close();
    drop(log);
    EmbeddedLog::open(config(dir.path())).unwrap();
}
