//! Ingestion routes and reliable delivery, end to end: a gateway (in-process, or
//! the real binary for the crash test) in front of a real backend HTTP server
//! on `127.0.0.1:0` that records every delivery it gets.
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;
use std::sync::Mutex;

// === backend ===

#[derive(Debug, Clone)]
struct Received {
    key: String,
    content_type: String,
    tenant: String,
    body: String,
    at: Instant,
    status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Answer this status, with `Retry-After: <secs>` when given.
    Fail(u16, Option<u64>),
}

struct Backend {
    mode: Mutex<Mode>,
    /// Bodies containing this are refused with 422.
    reject: Mutex<Option<String>>,
    log: Mutex<Vec<Received>>,
}

impl Backend {
    fn new() -> Arc<Backend> {
        Arc::new(Backend {
            mode: Mutex::new(Mode::Ok),
            reject: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        })
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn ok(&self) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .cloned()
            .collect()
    }
    fn ok_keys(&self) -> HashSet<String> {
        self.ok().into_iter().map(|r| r.key).collect()
    }
}

async fn backend_handler(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let rejected = b
        .reject
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|needle| body.contains(needle.as_str()));
    let mode = *b.mode.lock().unwrap();
    let (status, retry_after) = match (rejected, mode) {
        (true, _) => (422, None),
        (false, Mode::Ok) => (200, None),
        (false, Mode::Fail(s, ra)) => (s, ra),
    };
    b.log.lock().unwrap().push(Received {
        key: h("idempotency-key"),
        content_type: h("content-type"),
        tenant: h("x-tenant"),
        body,
        at: Instant::now(),
        status,
    });
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert("retry-after", s.into());
    }
    resp
}

async fn serve_backend(listener: tokio::net::TcpListener, b: Arc<Backend>) {
    let app = axum::Router::new()
        .route("/ingest", axum::routing::any(backend_handler))
        .with_state(b);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

async fn start_backend() -> (Arc<Backend>, String) {
    let b = Backend::new();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", l.local_addr().unwrap());
    serve_backend(l, b.clone()).await;
    (b, url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === gateway ===

struct Gw {
    running: Option<tidegate::Running>,
    inbound: String,
    internal: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn start(routes_toml: &str) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tidegate::config::Config::from_toml(routes_toml).unwrap();
        cfg.inbound.host = "127.0.0.1".into();
        cfg.inbound.port = 0;
        cfg.internal.port = 0;
        cfg.internal.token = Some("t".into());
        cfg.log.dir = dir.path().to_path_buf();
        cfg.connections.max_connections_per_minute = 0;
        cfg.validate().unwrap();
        let running = tidegate::start(cfg, None).await.unwrap();
        Gw {
            inbound: format!("http://{}", running.inbound),
            internal: format!("http://{}", running.internal),
            running: Some(running),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(
        &self,
        path: &str,
        ct: &str,
        body: &str,
        key: Option<&str>,
    ) -> (u16, HeaderMap, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.inbound))
            .header("content-type", ct)
            .header("x-tenant", "acme")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn api(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.internal))
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn status(&self, route: &str) -> Value {
        let (s, v) = self
            .api(reqwest::Method::GET, &format!("/v3/routes/{route}"))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn id_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("ack body {body:?}"));
    v["id"].as_str().unwrap().to_string()
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route_toml(backend: &str, extra_delivery: &str) -> String {
    format!(
        r#"
[[routes]]
name = "leads"
path = "/leads"
max_body_bytes = 1024
content_types = ["application/json"]
validate_json = true
keep_headers = ["X-Tenant"]

[routes.delivery]
backends = ["{backend}"]
backoff_base_ms = 20
backoff_cap_ms = 200
{extra_delivery}
"#
    )
}

// === tests ===

#[tokio::test]
async fn delivers_with_idempotency_key_and_rejects_bad_input() {
    let (backend, url) = start_backend().await;
    let gw = Gw::start(&route_toml(&url, "")).await;

    let (status, headers, body) = gw
        .post("/leads", "application/json", r#"{"name":"ada"}"#, None)
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    assert_eq!(headers["x-message-id"], id.as_str());
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    wait_for("the delivery", Duration::from_secs(10), || {
        backend.ok().len() == 1
    })
    .await;
    let got = backend.ok().remove(0);
    assert_eq!(got.key, id);
    assert_eq!(got.content_type, "application/json");
    assert_eq!(got.tenant, "acme");
    assert_eq!(got.body, r#"{"name":"ada"}"#);

    // Bad input: reasons, nothing stored.
    let (s, _, b) = gw.post("/leads", "text/plain", "hi", None).await;
    assert_eq!(s, 415, "{b}");
    assert!(b.contains("application/json"), "{b}");
    let (s, _, b) = gw
        .post("/leads", "application/json", &"x".repeat(2000), None)
        .await;
    assert_eq!(s, 413, "{b}");
    let (s, _, b) = gw
        .post("/leads", "application/json", "{not json", None)
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("not valid JSON"), "{b}");
    let (s, _, _) = gw
        .post("/leads", "application/json", "{}", Some(&"k".repeat(300)))
        .await;
    assert_eq!(s, 400);

    // Status: committed catches up, counters add up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = gw.status("leads").await;
        if st["backlog"] == 0 || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st["backlog"], 0, "{st}");
    assert_eq!(st["delivered"], 1, "{st}");
    assert_eq!(st["ingested"], 1, "{st}");
    assert_eq!(st["ingest_rejected"], 4, "{st}");
    assert_eq!(st["backends"][0]["breaker"], "closed", "{st}");
    let (s, list) = gw.api(reqwest::Method::GET, "/v3/routes").await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(gw.api(reqwest::Method::GET, "/v3/routes/nope").await.0, 404);
    // Behind the bearer token.
    let unauth = reqwest::get(format!("{}/v3/routes", gw.internal))
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    // Counters are in /metrics too.
    let (_, m) = gw.api(reqwest::Method::GET, "/metrics").await;
    let m = m.as_str().unwrap_or_default().to_string();
    assert!(
        m.contains("tidegate_route_delivered_total{route=\"leads\"} 1"),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_original_ack_and_stores_nothing() {
    let (backend, url) = start_backend().await;
    let gw = Gw::start(&route_toml(&url, "")).await;
    let (s1, h1, b1) = gw
        .post("/leads", "application/json", r#"{"n":1}"#, Some("lead-1"))
        .await;
    let (s2, h2, b2) = gw
        .post("/leads", "application/json", r#"{"n":1}"#, Some("lead-1"))
        .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1, b2, "same acknowledgement, same message id");
    assert!(h1.get("idempotency-replayed").is_none());
    assert_eq!(h2["idempotency-replayed"], "true");
    let (_, _, b3) = gw
        .post("/leads", "application/json", r#"{"n":1}"#, Some("lead-2"))
        .await;
    assert_ne!(id_of(&b3), id_of(&b1));
    wait_for("two deliveries", Duration::from_secs(10), || {
        backend.ok().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.ok().len(), 2);
    let st = gw.status("leads").await;
    assert_eq!(
        (st["ingested"].as_u64(), st["ingest_duplicates"].as_u64()),
        (Some(2), Some(1)),
        "{st}"
    );
    assert_eq!(st["next"], 2, "{st}");
    gw.shutdown().await;
}

#[tokio::test]
async fn outage_then_slow_down_then_recovery_delivers_all_at_the_configured_rate() {
    // Backend down: nothing listens on the port yet (connection refused).
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/ingest");
    let rate = 20.0;
    let burst = 5;
    let gw = Gw::start(&route_toml(
        &url,
        &format!(
            "rate_per_second = {rate}\nburst = {burst}\nconcurrency = 4\nmax_attempts = 1000\nbreaker_failures = 3\nbreaker_open_ms = 300\ntimeout_ms = 2000"
        ),
    ))
    .await;
    let n = 60;
    let mut ids = HashSet::new();
    for i in 0..n {
        let (s, _, b) = gw
            .post(
                "/leads",
                "application/json",
                &format!(r#"{{"i":{i}}}"#),
                None,
            )
            .await;
        assert_eq!(s, 202);
        ids.insert(id_of(&b));
    }
    // The breaker opens while the backend refuses connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_open = false;
    while Instant::now() < deadline && !saw_open {
        saw_open = gw.status("leads").await["backends"][0]["breaker"] == "open";
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_open, "breaker never opened");
    let st = gw.status("leads").await;
    assert_eq!(st["delivered"], 0, "{st}");
    assert!(st["backlog"].as_u64().unwrap() >= n, "{st}");
    assert!(st["oldest_undelivered_age_ms"].as_u64().is_some(), "{st}");

    // Backend up but overloaded: 503 + Retry-After: 1.
    let backend = Backend::new();
    backend.set(Mode::Fail(503, Some(1)));
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    serve_backend(l, backend.clone()).await;
    wait_for("503s", Duration::from_secs(5), || {
        backend.log.lock().unwrap().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during_503 = backend.log.lock().unwrap().len();
    backend.set(Mode::Ok);
    wait_for("every message", Duration::from_secs(30), || {
        backend.ok_keys() == ids
    })
    .await;

    // At no more than the configured rate: every attempt passed the GCRA, so any
    // span of the backend's log holds at most burst + rate · span requests.
    let all: Vec<Instant> = backend.log.lock().unwrap().iter().map(|r| r.at).collect();
    let mut worst = 0.0f64;
    for i in 0..all.len() {
        for j in i..all.len() {
            let span = all[j].duration_since(all[i]).as_secs_f64();
            let allowed = f64::from(burst) + rate * span + 1.0;
            worst = worst.max((j - i + 1) as f64 - allowed);
        }
    }
    let ok = backend.ok();
    let span = ok.last().unwrap().at.duration_since(ok[0].at).as_secs_f64();
    println!(
        "outage test: {} requests at the backend ({during_503} during the 503 phase), {} OK in {span:.2}s = {:.1}/s (limit {rate}/s, burst {burst}); worst excess over the GCRA bound {worst:.2}",
        all.len(),
        ok.len(),
        (ok.len() as f64 - f64::from(burst)) / span.max(0.001)
    );
    assert!(worst <= 0.0, "rate exceeded by {worst}");
    // Retry-After: 1 was honoured: the 503 phase did not hammer the backend.
    assert!(
        during_503 <= 3 * (burst as usize + 4),
        "{during_503} requests during the 503 phase"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = gw.status("leads").await;
        if st["backlog"] == 0 || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st["backlog"], 0, "{st}");
    assert_eq!(st["delivered"], n, "{st}");
    assert_eq!(st["dead_lettered"], 0, "{st}");
    assert_eq!(st["backends"][0]["breaker"], "closed", "{st}");
    // closed → open → half_open → (open → half_open)* → closed
    assert!(
        st["backends"][0]["breaker_transitions"].as_u64().unwrap() >= 3,
        "{st}"
    );
    assert!(st["retried"].as_u64().unwrap() > 0, "{st}");
    gw.shutdown().await;
}

#[tokio::test]
async fn rejected_messages_go_to_the_dlq_and_replay_after_the_fix() {
    let (backend, url) = start_backend().await;
    *backend.reject.lock().unwrap() = Some("bad".into());
    let gw = Gw::start(&route_toml(&url, "")).await;
    let mut bad = Vec::new();
    for i in 0..3 {
        let (_, _, b) = gw
            .post(
                "/leads",
                "application/json",
                &format!(r#"{{"bad":{i}}}"#),
                None,
            )
            .await;
        bad.push(id_of(&b));
    }
    let (_, _, good) = gw
        .post("/leads", "application/json", r#"{"fine":1}"#, None)
        .await;
    wait_for("the good delivery", Duration::from_secs(10), || {
        backend.ok().len() == 1
    })
    .await;
    assert_eq!(backend.ok()[0].key, id_of(&good));

    // Dead-lettered at once (one attempt each): a 422 is not retried.
    let mut list = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        list = gw.api(reqwest::Method::GET, "/v3/routes/leads/dlq").await.1;
        if list["dead_letters"].as_array().map_or(0, |a| a.len()) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters = list["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 3, "{list}");
    for d in &letters {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], 422, "{d}");
        assert!(d["reason"].as_str().unwrap().contains("422"), "{d}");
        assert!(bad.contains(&d["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        backend
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 422)
            .count(),
        3
    );
    let first = letters[0]["offset"].as_u64().unwrap();
    let (s, detail) = gw
        .api(
            reqwest::Method::GET,
            &format!("/v3/routes/leads/dlq/{first}"),
        )
        .await;
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["body"], r#"{"bad":0}"#, "{detail}");
    assert_eq!(detail["path"], "/leads");

    // Filters select by status, reason, id and time; a parameter that is not a filter
    // is refused, so a misspelt filter never replays everything.
    let count = |v: &Value| v["dead_letters"].as_array().map_or(usize::MAX, |a| a.len());
    let by_id = format!("id={}", bad[1]);
    for (query, want) in [
        ("status=422", 3),
        ("status=500", 0),
        ("reason=422", 3),
        ("reason=timed%20out", 0),
        (by_id.as_str(), 1),
        ("dead_after=0&status=422", 3),
        ("dead_before=1", 0),
    ] {
        let (s, v) = gw
            .api(
                reqwest::Method::GET,
                &format!("/v3/routes/leads/dlq?{query}"),
            )
            .await;
        assert_eq!((s, count(&v)), (200, want), "{query}: {v}");
    }
    for query in [
        "stauts=422".to_string(),
        "status=abc".to_string(),
        format!("offset={first}&status=422"),
    ] {
        let (s, v) = gw
            .api(
                reqwest::Method::POST,
                &format!("/v3/routes/leads/dlq/replay?{query}"),
            )
            .await;
        assert_eq!(s, 400, "{query}: {v}");
    }
    let (s, r) = gw
        .api(
            reqwest::Method::POST,
            "/v3/routes/leads/dlq/replay?status=500",
        )
        .await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(0)), "{r}");

    // Delete one (tombstone), replay one by offset, then the rest after the fix.
    let third = letters[2]["offset"].as_u64().unwrap();
    let (s, _) = gw
        .api(
            reqwest::Method::DELETE,
            &format!("/v3/routes/leads/dlq/{third}"),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = gw
        .api(
            reqwest::Method::DELETE,
            &format!("/v3/routes/leads/dlq/{third}"),
        )
        .await;
    assert_eq!(s, 404);

    *backend.reject.lock().unwrap() = None; // the backend is fixed
    let (s, r) = gw
        .api(
            reqwest::Method::POST,
            &format!("/v3/routes/leads/dlq/replay?offset={first}"),
        )
        .await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(1)), "{r}");
    wait_for("the replayed delivery", Duration::from_secs(10), || {
        backend.ok_keys().contains(&bad[0])
    })
    .await;
    let (s, r) = gw
        .api(
            reqwest::Method::POST,
            &format!("/v3/routes/leads/dlq/replay?status=422&{by_id}"),
        )
        .await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(1)), "{r}");
    wait_for("the filtered replay", Duration::from_secs(10), || {
        backend.ok_keys().contains(&bad[1])
    })
    .await;
    let (s, r) = gw
        .api(reqwest::Method::POST, "/v3/routes/leads/dlq/replay")
        .await;
    assert_eq!(
        (s, r["replayed"].as_u64()),
        (200, Some(0)),
        "nothing left: {r}"
    );
    assert!(
        !backend.ok_keys().contains(&bad[2]),
        "the deleted one stays deleted"
    );
    let list = gw.api(reqwest::Method::GET, "/v3/routes/leads/dlq").await.1;
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 0, "{list}");
    let st = gw.status("leads").await;
    assert_eq!(
        (
            st["dead_lettered"].as_u64(),
            st["replayed"].as_u64(),
            st["dlq_size"].as_u64()
        ),
        (Some(3), Some(2), Some(0)),
        "{st}"
    );
    gw.shutdown().await;
}

// === no loss under crash (real binary) ===

fn bin() -> String {
    std::env::var("TIDEGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tidegate").to_string())
}

fn spawn_gateway(config: &std::path::Path) -> Child {
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    assert!(
        line.starts_with("tidegate listening"),
        "unexpected first line: {line:?}"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_message_is_lost_when_the_gateway_is_killed() {
    const TOTAL: u64 = 2000;
    const CLIENTS: u64 = 16;
    let (backend, url) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let inbound: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let internal: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("tidegate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[inbound]
host = "127.0.0.1"
port = {}
[internal]
port = {}
token = "t"
[log]
dir = "{}"
[connections]
max_connections_per_minute = 0

[[routes]]
name = "leads"
path = "/leads"
[routes.delivery]
backends = ["{url}"]
rate_per_second = 400
burst = 50
concurrency = 8
backoff_base_ms = 20
backoff_cap_ms = 500
"#,
            inbound.port(),
            internal.port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();

    let gateway = Arc::new(Mutex::new(Some(spawn_gateway(&config))));
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, acked, next) = (http.clone(), acked.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= TOTAL {
                    return;
                }
                // Retry until acknowledged; the Idempotency-Key makes a retry after a
                // lost acknowledgement safe.
                loop {
                    let r = http
                        .post(format!("http://{inbound}/leads"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("lead-{n}"))
                        .body(format!(r#"{{"n":{n}}}"#))
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if r.status() == 202 {
                            if let Ok(body) = r.text().await {
                                acked.lock().unwrap().insert(n, id_of(&body));
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // Kill and restart a few times while requests and deliveries are flowing.
    let kills = 4;
    for k in 0..kills {
        let target = TOTAL * (k + 1) / (kills + 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        while (acked.lock().unwrap().len() as u64) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut child = gateway.lock().unwrap().take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        *gateway.lock().unwrap() = Some(
            tokio::task::spawn_blocking({
                let config = config.clone();
                move || spawn_gateway(&config)
            })
            .await
            .unwrap(),
        );
    }
    for c in clients {
        c.await.unwrap();
    }
    let acked: HashMap<u64, String> = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, TOTAL);
    let want: HashSet<String> = acked.values().cloned().collect();
    assert_eq!(
        want.len() as u64,
        TOTAL,
        "one message id per acknowledged request"
    );
    wait_for(
        "every acknowledged message at the backend",
        Duration::from_secs(90),
        || want.is_subset(&backend.ok_keys()),
    )
    .await;
    let ok = backend.ok();
    let distinct: HashSet<&str> = ok.iter().map(|r| r.key.as_str()).collect();
    let unknown = distinct.iter().filter(|k| !want.contains(**k)).count();
    println!(
        "crash test: {TOTAL} acknowledged, {kills} SIGKILLs, {} deliveries, {} distinct ids, {} duplicates, {unknown} ids never acknowledged",
        ok.len(),
        distinct.len(),
        ok.len() - distinct.len()
    );
    assert_eq!(
        unknown, 0,
        "the client retried every request until acknowledged"
    );
    assert_eq!(distinct.len() as u64, TOTAL);
    let last = gateway.lock().unwrap().take();
    if let Some(mut child) = last {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn json_schema_refuses_invalid_bodies_with_422_and_stores_nothing() {
    let (backend, url) = start_backend().await;
    let schemas = tempfile::tempdir().unwrap();
    let schema = schemas.path().join("lead.schema.json");
    std::fs::write(
        &schema,
        r#"{
  "type": "object",
  "required": ["email"],
  "properties": {
    "email": {"type": "string", "minLength": 3},
    "age": {"type": "integer", "minimum": 0}
  }
}"#,
    )
    .unwrap();
    // No `validate_json`: the schema implies JSON.
    let gw = Gw::start(&format!(
        r#"
[[routes]]
name = "leads"
path = "/leads"
json_schema = "{}"

[routes.delivery]
backends = ["{url}"]
backoff_base_ms = 20
backoff_cap_ms = 200
"#,
        schema.display()
    ))
    .await;

    let (s, headers, b) = gw
        .post(
            "/leads",
            "application/json",
            r#"{"email": 5, "age": "x"}"#,
            None,
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    let v: Value = serde_json::from_str(&b).unwrap();
    assert!(v["error"].as_str().unwrap().contains("JSON Schema"), "{v}");
    let mut paths: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/age", "/email"], "{v}");
    assert!(v["violations"][0]["message"].as_str().is_some(), "{v}");

    let (s, _, b) = gw
        .post("/leads", "application/json", r#"{"age": 3}"#, Some("k-1"))
        .await;
    assert_eq!(s, 422, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["violations"][0]["path"], "", "{v}");
    assert!(
        v["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("email"),
        "{v}"
    );
    // Not JSON at all: the usual 400.
    let (s, _, b) = gw.post("/leads", "application/json", "{nope", None).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("not valid JSON"), "{b}");

    // A valid body is stored, acknowledged and delivered; only it.
    let valid = r#"{"email": "ada@example.com", "age": 36}"#;
    let (s, _, b) = gw
        .post("/leads", "application/json", valid, Some("k-1"))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = id_of(&b);
    wait_for("the delivery", Duration::from_secs(10), || {
        backend.ok().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = backend.log.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body, valid);
    assert_eq!(got[0].key, id);
    let st = gw.status("leads").await;
    assert_eq!(st["next"], 1, "only the valid body is stored: {st}");
    assert_eq!(st["ingested"], 1, "{st}");
    assert_eq!(st["ingest_rejected"], 3, "{st}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_invalid_json_schema_fails_start_up_naming_the_setting() {
    for schema in [
        r#"'{"type": "no-such-type"}'"#,
        r#"'{"$ref": "https://example.com/lead.schema.json"}'"#,
        r#""/nonexistent/lead.schema.json""#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = tidegate::config::Config::from_toml(&format!(
            "[[routes]]\nname = \"leads\"\npath = \"/leads\"\njson_schema = {schema}\n"
        ))
        .unwrap();
        cfg.inbound.host = "127.0.0.1".into();
        cfg.inbound.port = 0;
        cfg.internal.port = 0;
        cfg.internal.token = Some("t".into());
        cfg.log.dir = dir.path().to_path_buf();
        cfg.validate().unwrap();
        let err = match tidegate::start(cfg, None).await {
            Ok(running) => {
                running.shutdown().await;
                panic!("{schema}: started");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("routes.leads.json_schema"), "{schema}: {err}");
    }
}
