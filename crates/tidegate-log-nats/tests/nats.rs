//! NatsLog against a real NATS server with JetStream (`TIDEGATE_TEST_NATS_URL`,
//! default 127.0.0.1:4222; skipped when none answers). Every test uses its own
//! prefix and deletes what it created. The outage test runs its own `nats-server`
//! child on a free port.

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_log::testsuite::{brokers, conformance};
use tidegate_log::{AppendRecord, Appended, EventLog, LogError};
use tidegate_log_nats::{NatsConfig, NatsLog};

fn config(url: &str, prefix: &str) -> NatsConfig {
    NatsConfig {
        servers: vec![url.to_owned()],
        prefix: prefix.to_owned(),
        request_timeout: Duration::from_secs(3),
        ..NatsConfig::default()
    }
}

fn prefix() -> String {
    brokers::unique("tgt")
}

fn rec(p: &str) -> AppendRecord {
    AppendRecord {
        dedup_key: None,
        payload: Bytes::copy_from_slice(p.as_bytes()),
    }
}

fn keyed(k: &str, p: &str) -> AppendRecord {
    AppendRecord {
        dedup_key: Some(Bytes::copy_from_slice(k.as_bytes())),
        payload: Bytes::copy_from_slice(p.as_bytes()),
    }
}

/// Deletes every stream and KV bucket of `prefix`.
async fn cleanup(url: &str, prefix: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let upper = format!("{}_", prefix.to_ascii_uppercase());
    let kv = [
        format!("KV_{prefix}_meta"),
        format!("KV_{prefix}_consumers"),
        format!("KV_{prefix}_leases"),
    ];
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in names {
        if name.starts_with(&upper) || kv.contains(&name) {
            js.delete_stream(&name).await.unwrap();
        }
    }
}

/// Opens instances on one prefix (one per "node") and closes them all at the end.
struct Nodes {
    cfg: NatsConfig,
    open: Mutex<Vec<Arc<NatsLog>>>,
}

impl Nodes {
    fn new(cfg: NatsConfig) -> Arc<Self> {
        Arc::new(Nodes {
            cfg,
            open: Mutex::new(Vec::new()),
        })
    }

    async fn open(&self) -> Arc<NatsLog> {
        let log = NatsLog::connect(self.cfg.clone()).await.unwrap();
        self.open.lock().push(log.clone());
        log
    }

    async fn close(&self) {
        let logs: Vec<_> = self.open.lock().drain(..).collect();
        for l in logs {
            l.close().await;
        }
    }
}

/// Runs the shared suite; returns (cache hits, cache misses) summed over the nodes.
async fn run_conformance(cfg: NatsConfig) -> (u64, u64) {
    let url = cfg.servers[0].clone();
    let prefix = cfg.prefix.clone();
    let nodes = Nodes::new(cfg);
    conformance::run_all(
        || {
            let nodes = nodes.clone();
            async move { nodes.open().await as Arc<dyn EventLog> }
        },
        "conf",
    )
    .await;
    let (hits, misses) = nodes
        .open
        .lock()
        .iter()
        .map(|l| l.stats())
        .fold((0, 0), |(h, m), s| (h + s.cache_hits, m + s.cache_misses));
    nodes.close().await;
    cleanup(&url, &prefix).await;
    (hits, misses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let (hits, _) = run_conformance(config(&url, &prefix())).await;
    assert!(hits > 0, "reads of new records come from the tail cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_without_tail_cache() {
    // Every read goes to the server (pull consumers, reader reuse, leftovers).
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let cfg = NatsConfig {
        tail_cache_bytes: 0,
        ..config(&url, &prefix())
    };
    let (hits, misses) = run_conformance(cfg).await;
    assert_eq!(hits, 0);
    assert!(misses > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_is_shared_and_new_per_prefix() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let (p1, p2) = (prefix(), prefix());
    let a = NatsLog::connect(config(&url, &p1)).await.unwrap();
    let b = NatsLog::connect(config(&url, &p1)).await.unwrap();
    let c = NatsLog::connect(config(&url, &p2)).await.unwrap();
    assert_ne!(a.epoch(), 0);
    assert_eq!(a.epoch(), b.epoch());
    assert_ne!(a.epoch(), c.epoch());
    assert!(a.health().is_ok());
    for l in [a, b, c] {
        l.close().await;
    }
    cleanup(&url, &p1).await;
    cleanup(&url, &p2).await;
}

/// One holder at a time; a dropped lease passes to the node still competing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_has_one_holder_and_moves_when_released() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let p = prefix();
    let a = NatsLog::connect(config(&url, &p)).await.unwrap();
    let b = NatsLog::connect(config(&url, &p)).await.unwrap();
    let la = a.lease("delivery.leads").await.unwrap();
    let mut la_held = la.held.clone();
    tokio::time::timeout(Duration::from_secs(10), la_held.wait_for(|h| *h))
        .await
        .expect("first node acquires")
        .unwrap();
    let lb = b.lease("delivery.leads").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await; // more than a renewal period
    assert!(*la.held.borrow(), "holder keeps the lease while renewing");
    assert!(!*lb.held.borrow(), "only one node holds a lease");
    let other = b.lease("delivery.other").await.unwrap();
    let mut other_held = other.held.clone();
    tokio::time::timeout(Duration::from_secs(10), other_held.wait_for(|h| *h))
        .await
        .expect("leases are independent")
        .unwrap();
    drop(la);
    let mut lb_held = lb.held.clone();
    tokio::time::timeout(Duration::from_secs(10), lb_held.wait_for(|h| *h))
        .await
        .expect("the lease moves to the second node once released")
        .unwrap();
    drop((lb, other));
    for l in [a, b] {
        l.close().await;
    }
    cleanup(&url, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_escaped_and_limits_enforced() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let p = prefix();
    let log = NatsLog::connect(NatsConfig {
        max_record_bytes: 1000,
        ..config(&url, &p)
    })
    .await
    .unwrap();
    // `a.b` and `a_db` must not share a JetStream stream.
    for s in ["a.b", "a_db", ".x_", "A-b"] {
        log.ensure_stream(s).await.unwrap();
    }
    assert_eq!(
        log.append("a.b", vec![rec("1")]).await.unwrap(),
        vec![Appended::New(0)]
    );
    assert_eq!(
        log.append("a_db", vec![rec("2")]).await.unwrap(),
        vec![Appended::New(0)]
    );
    let (js, subject) = log.jetstream_names("a.b").unwrap();
    assert_eq!(js, format!("{}_a_db", p.to_ascii_uppercase()));
    assert_eq!(subject, format!("{p}.a_db"));
    match log.append("a.b", vec![rec(&"x".repeat(1001))]).await {
        Err(LogError::RecordTooLarge(1001, 1000)) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // A key counts twice (hex in the header).
    match log
        .append("a.b", vec![keyed(&"k".repeat(10), &"x".repeat(990))])
        .await
    {
        Err(LogError::RecordTooLarge(1010, 1000)) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(matches!(
        log.ensure_stream(&".".repeat(200)).await,
        Err(LogError::InvalidStreamName(_))
    ));
    log.close().await;
    assert!(matches!(
        log.append("a.b", vec![rec("late")]).await,
        Err(LogError::Closed)
    ));
    cleanup(&url, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_append_concurrently_and_each_sees_everything() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let p = prefix();
    let nodes = Nodes::new(NatsConfig {
        tail_cache_bytes: 64 * 1024,
        ..config(&url, &p)
    });
    let logs = [nodes.open().await, nodes.open().await, nodes.open().await];
    for l in &logs {
        l.ensure_stream("shared").await.unwrap();
    }
    const PER_NODE: usize = 600;
    let mut writers = tokio::task::JoinSet::new();
    for (n, l) in logs.iter().enumerate() {
        let l = l.clone();
        writers.spawn(async move {
            let mut offsets = Vec::new();
            for batch in 0..(PER_NODE / 20) {
                let recs = (0..20)
                    .map(|i| {
                        keyed(
                            &format!("n{n}-{batch}-{i}"),
                            &format!("n{n}-{:04}", batch * 20 + i),
                        )
                    })
                    .collect();
                let out = l.append("shared", recs).await.unwrap();
                let o: Vec<u64> = out.iter().map(|a| a.offset()).collect();
                assert!(
                    o.windows(2).all(|w| w[0] < w[1]),
                    "a batch's offsets increase"
                );
                offsets.extend(o);
            }
            offsets
        });
    }
    let mut all_offsets = Vec::new();
    while let Some(r) = writers.join_next().await {
        all_offsets.extend(r.unwrap());
    }
    all_offsets.sort_unstable();
    let total = (3 * PER_NODE) as u64;
    assert_eq!(all_offsets, (0..total).collect::<Vec<_>>());
    for l in &logs {
        conformance::wait_next(l.as_ref(), "shared", total).await;
        let recs = conformance::read_all(l.as_ref(), "shared", 0, total, 128).await;
        assert_eq!(recs.len() as u64, total);
        assert!(recs.iter().enumerate().all(|(i, r)| r.offset == i as u64));
        // Each node's records in its own order.
        for n in 0..3 {
            let mine: Vec<String> = recs
                .iter()
                .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
                .filter(|s| s.starts_with(&format!("n{n}-")))
                .collect();
            let want: Vec<String> = (0..PER_NODE).map(|i| format!("n{n}-{i:04}")).collect();
            assert_eq!(mine, want);
        }
        let s = l.stats();
        assert_eq!(s.tail_lag, 0);
        assert!(s.cache_bytes <= 64 * 1024, "{s:?}");
    }
    // Retrying a whole batch is idempotent.
    let again = logs[0]
        .append("shared", vec![keyed("n1-0-0", "dup")])
        .await
        .unwrap();
    assert!(matches!(again[0], Appended::Duplicate(_)));
    assert_eq!(logs[0].stats().duplicates, 1);
    nodes.close().await;
    cleanup(&url, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_moves_first_forward() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let p = prefix();
    let log = NatsLog::connect(NatsConfig {
        max_age: Some(Duration::from_secs(1)),
        duplicate_window: Duration::from_secs(1),
        ..config(&url, &p)
    })
    .await
    .unwrap();
    log.ensure_stream("old").await.unwrap();
    log.append("old", vec![rec("a"), rec("b")]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.bounds("old").unwrap().first < 2 {
        assert!(Instant::now() < deadline, "retention never advanced first");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    log.append("old", vec![rec("c")]).await.unwrap();
    let recs = log.read("old", 0, 10, usize::MAX).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].offset, 2);
    assert_eq!(
        log.bounds("old").unwrap(),
        tidegate_log::Bounds { first: 2, next: 3 }
    );
    log.close().await;
    cleanup(&url, &p).await;
}

// === outage: our own nats-server ===

struct Server {
    child: Option<tokio::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(port: u16, dir: tempfile::TempDir) -> Server {
        let child = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server {
            child: Some(child),
            port,
            dir,
        }
    }

    async fn stop(mut self) -> (u16, tempfile::TempDir) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
            c.wait().await.unwrap();
        }
        (self.port, self.dir)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_appends_survive_a_server_restart() {
    if std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no nats-server on PATH");
        return;
    }
    let port = free_port();
    let server = Server::start(port, tempfile::tempdir().unwrap()).await;
    let url = format!("nats://127.0.0.1:{port}");
    let cfg = NatsConfig {
        request_timeout: Duration::from_secs(1),
        ..config(&url, "outage")
    };
    let writer = NatsLog::connect(cfg.clone()).await.unwrap();
    let reader = NatsLog::connect(cfg).await.unwrap();
    let epoch = writer.epoch();
    writer.ensure_stream("s").await.unwrap();
    reader.ensure_stream("s").await.unwrap();
    let batch = |from: usize| -> Vec<AppendRecord> {
        (from..from + 10)
            .map(|i| keyed(&format!("k{i}"), &format!("r{i}")))
            .collect()
    };
    writer.append("s", batch(0)).await.unwrap();
    conformance::wait_next(reader.as_ref(), "s", 10).await;

    let (port, dir) = server.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.health().is_ok() {
        assert!(
            Instant::now() < deadline,
            "health stayed Ok with the server down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("health while down: {:?}", writer.health());
    let t = Instant::now();
    match writer.append("s", batch(10)).await {
        Err(e @ LogError::Unavailable(_)) => assert!(e.is_unavailable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "append took {:?}",
        t.elapsed()
    );

    let server = Server::start(port, dir).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    // Retry like a client would, with the same dedup keys.
    loop {
        match writer.append("s", batch(10)).await {
            Ok(out) => {
                assert!(
                    out.iter().all(|a| (10..20).contains(&a.offset())),
                    "{out:?}"
                );
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(Instant::now() < deadline, "append never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    writer.append("s", batch(20)).await.unwrap();
    conformance::wait_next(reader.as_ref(), "s", 30).await;
    let recs = conformance::read_all(reader.as_ref(), "s", 0, 30, 100).await;
    let got: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(got, (0..30).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(reader.bounds("s").unwrap().next, 30, "nothing duplicated");
    // The reader's tail delivered the new records into its cache after the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.stats().tail_lag > 0 {
        assert!(
            Instant::now() < deadline,
            "tail did not catch up: {:?}",
            reader.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while writer.health().is_err() || reader.health().is_err() {
        assert!(
            Instant::now() < deadline,
            "health did not recover: {:?}",
            writer.health()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = reader.stats();
    assert!(
        stats.reconnects >= 1 && stats.tail_restarts >= 1,
        "{stats:?}"
    );
    assert_eq!(writer.epoch(), epoch);
    writer.close().await;
    reader.close().await;
    server.stop().await;
}
