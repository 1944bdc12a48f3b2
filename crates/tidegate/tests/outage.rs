//! Broker outage under load, with real processes: a gateway on its own broker (a
//! JetStream server, then a tansu Kafka broker) keeps publishing while the broker is
//! stopped for 30 s. The node stays up, says it
//! is not ready (and why), refuses publishes it cannot make durable with 503 — never
//! a 202 it cannot keep — and once the server is back, every acknowledged event
//! reaches the subscriber that stayed connected through the outage.
use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidegate_testkit::process;
use tidegate_testkit::sse::Sse;
use tokio::process::{Child, Command};

const OUTAGE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nats,
    Kafka,
}

/// Starts the broker on `port` with its data in `dir` (the same dir on a restart).
fn broker(kind: Kind, port: u16, dir: &std::path::Path) -> Option<Child> {
    match kind {
        Kind::Nats => nats_server(port, dir),
        Kind::Kafka => {
            let url = format!("tcp://127.0.0.1:{port}");
            Command::new("tansu")
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir)
                .stdout(broker_log(dir))
                .stderr(broker_log(dir))
                .kill_on_drop(true)
                .spawn()
                .ok()
        }
    }
}

/// (Re)starts the broker until it listens: a restarted tansu can fail to bind while
/// the old socket lingers, so a child that exits is started again.
async fn broker_listening(kind: Kind, port: u16, dir: &std::path::Path) -> Child {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut child = broker(kind, port, dir).expect("start the broker");
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return child;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?} broker did not listen on {port}"
        );
        let _ = child.start_kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Takes the broker down. NATS is SIGKILLed (and restarted on the same store later).
/// tansu 0.6's sqlite store does not survive a restart reliably: about one restart in
/// three — after SIGKILL or SIGTERM alike — its storage task panics ("more or less
/// than one row") and the broker then fails every request, which would test tansu
/// rather than the gateway. So tansu is frozen instead (SIGSTOP, then SIGCONT): for
/// the gateway a broker that accepts nothing and answers nothing for 30 s, the
/// harder case of the two (every request times out instead of being refused).
async fn stop_broker(kind: Kind, server: &mut Child) {
    match (kind, server.id()) {
        (Kind::Kafka, Some(pid)) => signal(pid, "-STOP").await,
        _ => {
            server.start_kill().unwrap();
            server.wait().await.unwrap();
        }
    }
}

/// Brings the broker back: NATS restarted on its port and store, tansu thawed.
async fn resume_broker(kind: Kind, server: Child, port: u16, dir: &std::path::Path) -> Child {
    match (kind, server.id()) {
        (Kind::Kafka, Some(pid)) => {
            signal(pid, "-CONT").await;
            server
        }
        _ => broker_listening(kind, port, dir).await,
    }
}

async fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// The broker's output, appended to `broker.log` in its store (shown on failure).
fn broker_log(dir: &std::path::Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Whether tansu's storage task died (see [`stop_broker`]): from then on it fails
/// every request, and what follows would judge the broker, not the gateway.
fn broker_broke(kind: Kind, dir: &std::path::Path) -> bool {
    let broke = matches!(kind, Kind::Kafka) && broker_tail(dir).contains("panicked");
    if broke {
        eprintln!(
            "NOT JUDGED after the outage: tansu's storage panicked; the broker said:\n{}",
            broker_tail(dir)
        );
    }
    broke
}

/// The last lines of the broker's output.
fn broker_tail(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    // A panic explains more than the errors that follow it.
    let first_panic = lines
        .iter()
        .position(|l| l.contains("panicked"))
        .map(|i| lines[i.saturating_sub(10)..(i + 3).min(lines.len())].join("\n"))
        .unwrap_or_default();
    format!(
        "{first_panic}\n...\n{}",
        lines[lines.len().saturating_sub(20)..].join("\n")
    )
}

fn nats_server(port: u16, dir: &std::path::Path) -> Option<Child> {
    Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(broker_log(dir))
        .stderr(broker_log(dir))
        .kill_on_drop(true)
        .spawn()
        .ok()
}

async fn ready_status(internal: std::net::SocketAddr) -> (u16, String) {
    match reqwest::get(format!("http://{internal}/health/ready")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => panic!("the node stopped answering: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_of_30s_loses_nothing_acknowledged() {
    outage_of_30s_loses_nothing_acknowledged(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_of_30s_loses_nothing_acknowledged() {
    outage_of_30s_loses_nothing_acknowledged(Kind::Kafka).await;
}

async fn outage_of_30s_loses_nothing_acknowledged(kind: Kind) {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(probe) = broker(kind, port, store.path()) else {
        assert!(
            std::env::var("TIDEGATE_TEST_BROKERS").as_deref() != Ok("required"),
            "the {kind:?} broker binary is required but not on PATH"
        );
        eprintln!("SKIPPED: no {kind:?} broker binary on PATH");
        return;
    };
    drop(probe);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = broker_listening(kind, port, store.path()).await;
    let (backend_env, url) = match kind {
        Kind::Nats => (
            [("TIDEGATE_LOG_BACKEND", "nats"), ("NATS_SERVERS", "")],
            format!("nats://127.0.0.1:{port}"),
        ),
        Kind::Kafka => (
            [("TIDEGATE_LOG_BACKEND", "kafka"), ("KAFKA_BROKERS", "")],
            format!("127.0.0.1:{port}"),
        ),
    };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_string_lossy().to_string();
    let bin = process::binary(env!("CARGO_BIN_EXE_tidegate"));
    let node = process::spawn(
        &bin,
        &[],
        &[
            ("INBOUND_PORT", "0"),
            ("API_HTTP_PORT", "0"),
            ("TIDEGATE_INBOUND_HOST", "127.0.0.1"),
            ("TIDEGATE_INTERNAL_TOKEN", "t"),
            ("MAX_CONNECTIONS_PER_MINUTE", "0"),
            ("TIDEGATE_LOG_DIR", &dir),
            backend_env[0],
            (backend_env[1].0, &url),
            ("TIDEGATE_NATS_SOURCE_ENABLED", "false"),
            ("TIDEGATE_KAFKA_SOURCE_ENABLED", "false"),
            ("TIDEGATE_LOG_REQUEST_TIMEOUT_MS", "2000"),
            (
                "LOG_LEVEL",
                "warn,tidegate_log_kafka=info,tidegate_log_nats=info",
            ),
        ],
        Duration::from_secs(60),
    )
    .await
    .expect("gateway starts");
    let base = format!("http://{}", node.inbound);

    // A subscriber that stays connected through the outage.
    let received = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut sse = Sse::connect(
        &format!(
            "{base}/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22outage%22%7D%5D"
        ),
        &[],
    )
    .await
    .expect("subscribe");
    sse.next_event(Duration::from_secs(5)).await.unwrap(); // connection event
    let got = received.clone();
    let reader = tokio::spawn(async move {
        while let Ok(ev) = sse.next_event(Duration::from_secs(120)).await {
            if ev.event == "outage" {
                got.lock()
                    .unwrap()
                    .insert(ev.json()["id"].as_str().unwrap().to_string());
            }
        }
    });

    // Load: one publish every 20 ms for the whole run.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<(u16, Option<String>)>::new()));
    let unanswered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (acked, refused, unanswered, stop, base) = (
            acked.clone(),
            refused.clone(),
            unanswered.clone(),
            stop.clone(),
            base.clone(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let id = format!("o{i}");
                i += 1;
                let ev = json!({"specversion":"1.0","id":id,"source":"/outage","type":"outage"});
                let sent = std::time::Instant::now();
                match http
                    .post(format!("{base}/_rig/v1/events"))
                    .json(&ev)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push(id),
                    Ok(r) => {
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        refused.lock().unwrap().push((r.status().as_u16(), retry));
                    }
                    // Not acknowledged, so nothing is owed; counted and bounded below
                    // (the node staying up is checked by the readiness probes).
                    Err(e) => unanswered
                        .lock()
                        .unwrap()
                        .push(format!("{id} after {:?}: {e:?}", sent.elapsed())),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ready_status(node.internal).await.0,
        200,
        "ready before the outage"
    );
    let before = acked.lock().unwrap().len();
    assert!(
        before > 10,
        "publishing works before the outage ({before} acked)"
    );

    // The outage.
    stop_broker(kind, &mut server).await;
    let outage_began = tokio::time::Instant::now();
    let mut reported = false;
    for _ in 0..50 {
        let (status, body) = ready_status(node.internal).await;
        if status == 503 {
            assert!(body.contains("\"log\""), "readiness names the log: {body}");
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reported,
        "{kind:?}: not-ready reported within 5 s of the outage"
    );
    tokio::time::sleep_until(outage_began + OUTAGE).await;
    let (status, _) = ready_status(node.internal).await;
    assert_eq!(status, 503, "still not ready during the outage");
    let during = refused.lock().unwrap().clone();
    assert!(
        !during.is_empty(),
        "publishes during the outage were refused"
    );
    assert!(
        during.iter().all(|(s, retry)| *s == 503 && retry.is_some()),
        "refusals are 503 with Retry-After: {during:?}"
    );

    // The broker returns on the same port and store.
    let _server = resume_broker(kind, server, port, store.path()).await;
    let mut back = false;
    for _ in 0..300 {
        if ready_status(node.internal).await.0 == 200 {
            back = true;
            break;
        }
        if broker_broke(kind, store.path()) {
            stop.cancel();
            let _ = publisher.await;
            reader.abort();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "{kind:?}: ready again within 30 s of the broker's return"
    );
    let at_return = acked.lock().unwrap().len();
    let returned = tokio::time::Instant::now();
    while acked.lock().unwrap().len() < at_return + 20 {
        if broker_broke(kind, store.path()) {
            stop.cancel();
            let _ = publisher.await;
            reader.abort();
            return;
        }
        assert!(
            returned.elapsed() < Duration::from_secs(30),
            "{kind:?}: publishes not acknowledged again within 30 s of readiness ({} refused); the broker said:\n{}",
            refused.lock().unwrap().len(),
            broker_tail(store.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{kind:?}: publishing acknowledged again {:?} after readiness",
        returned.elapsed()
    );
    stop.cancel();
    publisher.await.unwrap();
    let unanswered = unanswered.lock().unwrap().clone();
    if !unanswered.is_empty() {
        eprintln!("{kind:?}: publishes without an answer: {unanswered:?}");
    }
    assert!(
        unanswered.len() <= 3,
        "{kind:?}: {} publishes got no answer at all: {unanswered:?}",
        unanswered.len()
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > at_return,
        "publishing works again after the outage"
    );

    // Every acknowledged event reaches the subscriber.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<String> = {
            let got = received.lock().unwrap();
            acked
                .iter()
                .filter(|id| !got.contains(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?}: {} acknowledged events never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.abort();
    drop(node);
}
