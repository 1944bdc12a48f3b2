//! The committed position never passes an unfinished message, and a restart
//! resumes from it.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidegate_delivery::{Delivery, Envelope, RouteConfig, CONSUMER};
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::{AppendRecord, EventLog};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Backend {
    release: AtomicBool,
    fast: AtomicUsize,
    slow_done: AtomicUsize,
}

async fn handler(
    axum::extract::State(b): axum::extract::State<Arc<Backend>>,
    body: String,
) -> &'static str {
    if body == "slow" {
        while !b.release.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        b.slow_done.fetch_add(1, Ordering::SeqCst);
    } else {
        b.fast.fetch_add(1, Ordering::SeqCst);
    }
    "ok"
}

fn envelope(i: usize, body: &'static str) -> AppendRecord {
    let env = Envelope {
        id: format!("m{i}"),
        received_ms: 0,
        method: "POST".into(),
        path: "/x".into(),
        query: String::new(),
        client: String::new(),
        content_type: "text/plain".into(),
        headers: Vec::new(),
        body: Bytes::from_static(body.as_bytes()),
    };
    AppendRecord {
        dedup_key: None,
        payload: env.encode(),
    }
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn commit_stops_at_the_oldest_unfinished_message() {
    let b = Arc::new(Backend {
        release: AtomicBool::new(false),
        fast: AtomicUsize::new(0),
        slow_done: AtomicUsize::new(0),
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/", axum::routing::post(handler))
        .with_state(b.clone());
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
    route.delivery.max_age_secs = 0; // received_ms/timestamps are not the point here

    let delivery = Delivery::open(log.clone(), vec![route.clone()])
        .await
        .unwrap();
    let mut batch = vec![envelope(0, "slow")];
    batch.extend((1..10).map(|i| envelope(i, "fast")));
    log.append("r", batch).await.unwrap();
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    delivery.spawn(&tasks, stop.clone()).unwrap();

    wait("the fast ones", || b.fast.load(Ordering::SeqCst) == 9).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // several commit ticks
    assert_eq!(
        embedded
            .consumer_position("r", CONSUMER)
            .unwrap()
            .unwrap_or(0),
        0
    );
    let st = delivery.status("r").await.unwrap();
    assert_eq!((st.backlog, st.in_flight, st.delivered), (10, 1, 9));

    // Stop with the slow one unfinished: nothing is committed, so a restart
    // delivers from offset 0 again — the slow one and, at-least-once, the
    // nine fast ones that were behind it in the window.
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    assert_eq!(embedded.consumer_position("r", CONSUMER).unwrap(), None);
    b.release.store(true, Ordering::SeqCst);

    let delivery = Delivery::open(log.clone(), vec![route]).await.unwrap();
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    delivery.spawn(&tasks, stop.clone()).unwrap();
    wait("everything committed", || {
        embedded.consumer_position("r", CONSUMER).unwrap() == Some(10)
    })
    .await;
    assert!(b.slow_done.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        b.fast.load(Ordering::SeqCst),
        18,
        "redelivered after the restart"
    );
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}
