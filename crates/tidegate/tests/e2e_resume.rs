//! Resume from the durable log: clients cut at random moments during a continuous
//! publish stream come back with their last cursor and end with exactly the
//! published sequence; history-then-live switches without a gap; a restarted gateway
//! on the same log directory serves old cursors.
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tidegate_testkit::frontend::Opts;
use tidegate_testkit::{ce, eventually, Frontend, Gateway, GatewayBuilder, Kind, Rng, WAIT};

fn tick(i: usize) -> Value {
    ce("tick", &format!("tick-{i}"), json!({"n": i}))
}

fn subs() -> Value {
    json!([{"eventType": "tick"}])
}

/// Publishes `range` one by one, pausing `pause` between events; returns the acks.
fn publisher(
    gw: Arc<Gateway>,
    range: std::ops::Range<usize>,
    pause: Duration,
) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in range {
            let p = gw.publish(&tick(i)).await;
            assert_eq!(p.status, 202, "{}", p.body);
            acks.push(p.json());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        acks
    })
}

fn n_of(v: &Value) -> usize {
    assert_eq!(v["type"], "tick", "unexpected event {v}");
    v["data"]["n"].as_u64().unwrap() as usize
}

/// Waits until the gateway expired the long-poll session (PUT answers 410).
async fn wait_expired(gw: &Gateway, token: &str) {
    let body = json!({"subscriptions": subs()});
    eventually(WAIT, "the long-poll session to expire", || async {
        (gw.put_subscriptions("longpolling", token, &body)
            .await
            .status
            == 410)
            .then_some(())
    })
    .await;
}

async fn random_disconnects(kind: Kind) {
    const N: usize = 400;
    let gw = Arc::new(
        GatewayBuilder::new()
            .heartbeat_secs(1)
            .longpoll_session_timeout_secs(1)
            .start()
            .await,
    );
    let mut rng = Rng::from_env(kind.as_str());
    let mut f = Frontend::connect(&gw, kind, &Opts::subs(subs()))
        .await
        .unwrap();
    let publishing = publisher(gw.clone(), 0..N, Duration::from_millis(2));

    let mut got: Vec<usize> = Vec::with_capacity(N);
    let mut reconnects = 0;
    let mut expired_once = false;
    while got.len() < N {
        let k = rng.range(1, 40);
        let mut taken = 0;
        // Long-poll cookies advance per batch: only leave at a batch boundary.
        while got.len() < N && (taken < k || f.pending_len() > 0) {
            let v = f
                .next_event(WAIT)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} after {} events: {e}", got.len()));
            got.push(n_of(&v));
            taken += 1;
        }
        if got.len() == N {
            break;
        }
        let cursor = f.last_cursor.clone().expect("a cursor");
        reconnects += 1;
        f = match kind {
            Kind::LongPolling if !expired_once && got.len() > N / 3 => {
                // Walk away until the gateway expires the session, then come back with
                // both cookies: a new session resumes from `last_event_id`.
                expired_once = true;
                let token = f.token.clone();
                let lp = f.into_longpoll();
                wait_expired(&gw, &token).await;
                Frontend::reopen_longpoll(&gw, lp, &Opts::subs(subs()))
                    .await
                    .unwrap()
            }
            Kind::Ws if rng.range(0, 1) == 0 => {
                f.close().await;
                Frontend::connect(&gw, kind, &Opts::subs(subs()).resume(cursor))
                    .await
                    .unwrap()
            }
            // SSE and WebSocket: the socket just goes away; long-poll: the client
            // forgets its session and keeps only the last_event_id cookie.
            _ => {
                drop(f);
                Frontend::connect(&gw, kind, &Opts::subs(subs()).resume(cursor))
                    .await
                    .unwrap()
            }
        };
        if rng.range(0, 3) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.range(1, 30))).await;
        }
    }
    publishing.await.unwrap();
    let expected: Vec<usize> = (0..N).collect();
    assert_eq!(
        got, expected,
        "{kind:?}: loss or duplicates after {reconnects} reconnects"
    );
    assert!(reconnects >= 5, "only {reconnects} reconnects");
    if kind == Kind::LongPolling {
        assert!(expired_once);
    }
    // Nothing after the sequence but what is published next.
    let barrier = gw.publish(&tick(N)).await.json();
    assert_eq!(f.take(1).await, vec![barrier]);
}

#[tokio::test]
async fn sse_random_disconnects_lose_nothing() {
    random_disconnects(Kind::Sse).await;
}

#[tokio::test]
async fn ws_random_disconnects_lose_nothing() {
    random_disconnects(Kind::Ws).await;
}

#[tokio::test]
async fn longpoll_random_disconnects_lose_nothing() {
    random_disconnects(Kind::LongPolling).await;
}

/// Connecting with an old cursor while publishing continues: the stored history,
/// then live, without a gap or a duplicate at the switch.
#[tokio::test]
async fn history_then_live_is_gap_free() {
    const HISTORY: usize = 150;
    const LIVE: usize = 150;
    let gw = Arc::new(GatewayBuilder::new().start().await);
    let history = publisher(gw.clone(), 0..HISTORY, Duration::ZERO)
        .await
        .unwrap();
    let cursor = history[19]["tidegatecursor"].as_str().unwrap().to_string();
    let live = publisher(
        gw.clone(),
        HISTORY..HISTORY + LIVE,
        Duration::from_micros(500),
    );
    let mut fronts = Vec::new();
    for kind in Kind::ALL {
        fronts.push(
            Frontend::connect(&gw, kind, &Opts::subs(subs()).resume(cursor.clone()))
                .await
                .unwrap(),
        );
    }
    let live = live.await.unwrap();
    let expected: Vec<Value> = history[20..].iter().chain(&live).cloned().collect();
    for f in &mut fronts {
        let got = f.take(expected.len()).await;
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{:?}", f.kind);
        }
    }
    let barrier = gw.publish(&tick(HISTORY + LIVE)).await.json();
    for f in &mut fronts {
        assert_eq!(f.take(1).await, vec![barrier.clone()], "{:?}", f.kind);
    }
    // Resuming from the newest cursor replays nothing.
    let newest = barrier["tidegatecursor"].as_str().unwrap().to_string();
    for kind in Kind::ALL {
        let mut f = Frontend::connect(&gw, kind, &Opts::subs(subs()).resume(newest.clone()))
            .await
            .unwrap();
        let next = gw.publish(&tick(10_000)).await.json();
        assert_eq!(f.take(1).await, vec![next], "{kind:?}");
    }
}

/// Publish, shut down, start a new gateway on the same log directory, resume from an
/// old cursor: exactly the rest.
#[tokio::test]
async fn restart_keeps_the_log_and_its_cursors() {
    const N: usize = 40;
    let gw = Arc::new(GatewayBuilder::new().durability("fsync").start().await);
    let acks = publisher(gw.clone(), 0..N, Duration::ZERO).await.unwrap();
    let gw = Arc::into_inner(gw).expect("the publisher is done");
    let gw = gw.restart().await;
    gw.assert_healthy().await;

    let cursor = acks[9]["tidegatecursor"].as_str().unwrap().to_string();
    // Each transport's barrier is stored too, so the next transport replays it.
    let mut expected = acks[10..].to_vec();
    for kind in Kind::ALL {
        let mut f = Frontend::connect(&gw, kind, &Opts::subs(subs()).resume(cursor.clone()))
            .await
            .unwrap();
        assert_eq!(f.take(expected.len()).await, expected, "{kind:?}");
        let barrier = gw.publish(&tick(N + kind as usize)).await.json();
        assert_eq!(f.take(1).await, vec![barrier.clone()], "{kind:?}");
        expected.push(barrier);
    }
    // Publishing a stored event again after the restart is still a duplicate.
    let again = gw.publish(&tick(3)).await;
    assert_eq!(again.cursor(), acks[3]["tidegatecursor"].as_str().unwrap());
    gw.shutdown().await;
}
