//! Per-key ordering (`delivery.order_by`): one message per key in flight, in
//! log order, retries included; different keys overlap; a dead letter frees
//! its key; the window bounds a hot key's backlog.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tidegate_delivery::{Delivery, Envelope, RouteConfig, CONSUMER};
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::{AppendRecord, EventLog};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Default)]
struct Backend {
    /// Per key, the `seq` of every request that got a 2xx, in arrival order.
    delivered: Mutex<HashMap<String, Vec<u64>>>,
    /// Per key, the `seq` of every request, in arrival order.
    arrivals: Mutex<HashMap<String, Vec<u64>>>,
    /// Keys with a request in progress (a second one is a violation).
    busy: Mutex<HashSet<String>>,
    violations: AtomicUsize,
    /// (key, seq) that were already refused once with 503.
    failed_once: Mutex<HashSet<(String, u64)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests whose body is not JSON (unkeyed messages).
    unkeyed: AtomicUsize,
    max_delay_ms: u64,
}

/// Body: `{"customerId": key, "seq": n, "fail": "503-once" | "400" | null}`;
/// a body that is not JSON is an unkeyed message.
async fn handler(
    axum::extract::State(b): axum::extract::State<Arc<Backend>>,
    body: String,
) -> StatusCode {
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => {
            b.unkeyed.fetch_add(1, Ordering::SeqCst);
            return StatusCode::OK;
        }
    };
    let key = v["customerId"].as_str().unwrap_or_default().to_string();
    let seq = v["seq"].as_u64().unwrap();
    let fail = v["fail"].as_str().unwrap_or_default().to_string();
    if !b.busy.lock().insert(key.clone()) {
        b.violations.fetch_add(1, Ordering::SeqCst);
    }
    let now = b.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    b.max_in_flight.fetch_max(now, Ordering::SeqCst);
    b.arrivals.lock().entry(key.clone()).or_default().push(seq);
    let status = match fail.as_str() {
        "400" => StatusCode::BAD_REQUEST,
        "503-once" if b.failed_once.lock().insert((key.clone(), seq)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => {
            b.delivered.lock().entry(key.clone()).or_default().push(seq);
            StatusCode::OK
        }
    };
    let delay = rand::rng().random_range(0..=b.max_delay_ms);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    b.in_flight.fetch_sub(1, Ordering::SeqCst);
    b.busy.lock().remove(&key);
    status
}

fn message(i: usize, body: String) -> AppendRecord {
    let env = Envelope {
        id: format!("m{i}"),
        received_ms: 0,
        method: "POST".into(),
        path: "/x".into(),
        query: String::new(),
        client: String::new(),
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: Bytes::from(body),
    };
    AppendRecord {
        dedup_key: None,
        payload: env.encode(),
    }
}

fn keyed(i: usize, key: &str, seq: u64, fail: Option<&str>) -> AppendRecord {
    let body = serde_json::json!({ "customerId": key, "seq": seq, "fail": fail });
    message(i, body.to_string())
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Setup {
    backend: Arc<Backend>,
    embedded: Arc<EmbeddedLog>,
    log: Arc<dyn EventLog>,
    route: RouteConfig,
    _dir: tempfile::TempDir,
}

async fn setup(max_delay_ms: u64) -> Setup {
    let backend = Arc::new(Backend {
        max_delay_ms,
        ..Default::default()
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/", axum::routing::post(handler))
        .with_state(backend.clone());
    tokio::spawn(async move { axum::serve(l, app).await });
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedLog::open(EmbeddedConfig::new(dir.path())).unwrap();
    let log: Arc<dyn EventLog> = embedded.clone();
    let mut route = RouteConfig {
        name: "r".into(),
        path: "/x".into(),
        ..Default::default()
    };
    route.delivery.backends = vec![url];
    route.delivery.max_age_secs = 0;
    route.delivery.order_by = Some("json:/customerId".into());
    route.delivery.concurrency = 8;
    route.delivery.backoff_base_ms = 5;
    route.delivery.backoff_cap_ms = 40;
    route.delivery.breaker_failures = 1000; // the 503s are not the point
    Setup {
        backend,
        embedded,
        log,
        route,
        _dir: dir,
    }
}

async fn run_until_committed(s: &Setup, records: Vec<AppendRecord>) -> Arc<Delivery> {
    let n = records.len() as u64;
    let delivery = Delivery::open(s.log.clone(), vec![s.route.clone()])
        .await
        .unwrap();
    s.log.append("r", records).await.unwrap();
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    delivery.spawn(&tasks, stop.clone()).unwrap();
    let embedded = s.embedded.clone();
    wait("everything committed", || {
        embedded.consumer_position("r", CONSUMER).unwrap() == Some(n)
    })
    .await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    delivery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_in_log_order_different_keys_concurrently() {
    let s = setup(20).await;
    let keys = ["alice", "bob", "carol"];
    // Interleaved in the log; every 4th message of a key fails once with 503.
    let mut records = Vec::new();
    for seq in 0..20u64 {
        for k in keys {
            let fail = (seq % 4 == 1).then_some("503-once");
            records.push(keyed(records.len(), k, seq, fail));
        }
    }
    let delivery = run_until_committed(&s, records).await;

    let b = &s.backend;
    assert_eq!(
        b.violations.load(Ordering::SeqCst),
        0,
        "a key ran twice at once"
    );
    let delivered = b.delivered.lock().clone();
    for k in keys {
        assert_eq!(
            delivered.get(k).cloned().unwrap_or_default(),
            (0..20).collect::<Vec<u64>>(),
            "key {k}: delivered out of log order"
        );
    }
    // The failed attempt of a message is followed by its own retry, never by a
    // later message of the key.
    for (k, arrivals) in b.arrivals.lock().iter() {
        let mut sorted = arrivals.clone();
        sorted.sort_unstable();
        assert_eq!(arrivals, &sorted, "key {k}: arrivals {arrivals:?}");
        assert_eq!(arrivals.len(), 25, "key {k}: 20 messages + 5 retries");
    }
    assert!(
        b.max_in_flight.load(Ordering::SeqCst) > 1,
        "different keys must overlap"
    );
    let st = delivery.status("r").await.unwrap();
    assert_eq!((st.delivered, st.dead_lettered, st.retried), (60, 0, 15));
    assert_eq!(st.in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_does_not_block_its_key() {
    let s = setup(5).await;
    let records = vec![
        keyed(0, "a", 0, Some("400")),
        keyed(1, "a", 1, None),
        keyed(2, "b", 0, None),
        keyed(3, "a", 2, Some("400")),
        keyed(4, "a", 3, None),
    ];
    let delivery = run_until_committed(&s, records).await;
    let b = &s.backend;
    assert_eq!(b.violations.load(Ordering::SeqCst), 0);
    assert_eq!(b.arrivals.lock()["a"], vec![0, 1, 2, 3]);
    assert_eq!(b.delivered.lock()["a"], vec![1, 3]);
    assert_eq!(b.delivered.lock()["b"], vec![0]);
    let st = delivery.status("r").await.unwrap();
    assert_eq!((st.delivered, st.dead_lettered, st.dlq_size), (3, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_stays_within_the_window_and_unkeyed_messages_are_unordered() {
    let mut s = setup(10).await;
    s.route.delivery.window = 6;
    // 30 messages of one key, then unkeyed ones (body not JSON, or no customerId).
    let mut records: Vec<AppendRecord> = (0..30).map(|i| keyed(i, "hot", i as u64, None)).collect();
    for i in 30..40 {
        records.push(message(i, format!("plain text {i}")));
    }
    let n = records.len() as u64;
    let delivery = Delivery::open(s.log.clone(), vec![s.route.clone()])
        .await
        .unwrap();
    s.log.append("r", records).await.unwrap();
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    delivery.spawn(&tasks, stop.clone()).unwrap();
    let mut max_window = 0;
    loop {
        let st = delivery.status("r").await.unwrap();
        max_window = max_window.max(st.in_flight);
        if st.committed == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    assert!(max_window <= 6, "window exceeded: {max_window}");
    let b = &s.backend;
    assert_eq!(b.violations.load(Ordering::SeqCst), 0);
    assert_eq!(b.delivered.lock()["hot"], (0..30).collect::<Vec<u64>>());
    assert_eq!(b.unkeyed.load(Ordering::SeqCst), 10);
}
