use super::*;
use std::sync::Mutex as StdMutex;

const S: Duration = Duration::from_secs(1);

fn consecutive(n: u32, probes: u32, successes: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: FailureThreshold::Consecutive(n),
        open_duration: 10 * S,
        half_open_max_calls: probes,
        success_threshold: successes,
    }
}

fn fail(b: &Breaker, now: Instant) {
    b.allow(now).unwrap().on_failure(now);
}

fn succeed(b: &Breaker, now: Instant) {
    b.allow(now).unwrap().on_success(now);
}

#[test]
fn rejects_bad_config() {
    let with = |f: fn(&mut BreakerConfig)| {
        let mut c = BreakerConfig::default();
        f(&mut c);
        Breaker::new(c).err()
    };
    assert_eq!(
        with(|c| c.failure_threshold = FailureThreshold::Consecutive(0)),
        Some(BreakerError::ZeroConsecutive)
    );
    assert_eq!(
        with(|c| c.failure_threshold = FailureThreshold::Ratio {
            ratio: 1.5,
            window: 10,
            min_calls: 5
        }),
        Some(BreakerError::Ratio(1.5))
    );
    assert!(matches!(
        with(|c| c.failure_threshold = FailureThreshold::Ratio {
            ratio: 0.5,
            window: 10,
            min_calls: 11
        }),
        Some(BreakerError::Window { .. })
    ));
    assert_eq!(
        with(|c| c.half_open_max_calls = 0),
        Some(BreakerError::ZeroProbes)
    );
    assert_eq!(
        with(|c| c.success_threshold = 0),
        Some(BreakerError::ZeroSuccessThreshold)
    );
}

#[tokio::test(start_paused = true)]
async fn full_state_machine() {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    let b = Breaker::with_listener(consecutive(3, 2, 2), move |t| {
        log.lock().unwrap().push((t.from, t.to))
    })
    .unwrap();
    let t0 = Instant::now();

    // Closed: failures below the threshold, interrupted by a success, keep it
    // closed.
    fail(&b, t0);
    fail(&b, t0);
    succeed(&b, t0);
    fail(&b, t0);
    fail(&b, t0);
    assert_eq!(b.state(), State::Closed);

    // The third in a row opens it.
    fail(&b, t0);
    assert_eq!(b.state(), State::Open);

    // Open: refused with the remaining time.
    assert_eq!(
        b.allow(t0).unwrap_err(),
        Open {
            retry_after: 10 * S
        }
    );
    assert_eq!(
        b.allow(t0 + 4 * S).unwrap_err(),
        Open { retry_after: 6 * S }
    );

    // After open_duration: half-open, two probes at most.
    let t1 = t0 + 10 * S;
    let p1 = b.allow(t1).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    let p2 = b.allow(t1).unwrap();
    assert_eq!(
        b.allow(t1).unwrap_err(),
        Open {
            retry_after: 10 * S
        }
    );

    // A failed probe reopens it for another open_duration.
    p1.on_failure(t1);
    assert_eq!(b.state(), State::Open);
    // The other probe's late success belongs to the old generation.
    p2.on_success(t1);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.allow(t1 + S).unwrap_err(), Open { retry_after: 9 * S });

    // Half-open again; two successful probes close it.
    let t2 = t1 + 10 * S;
    let p1 = b.allow(t2).unwrap();
    p1.on_success(t2);
    assert_eq!(b.state(), State::HalfOpen);
    // The slot freed by the first probe can be reused.
    let p2 = b.allow(t2).unwrap();
    let p3 = b.allow(t2).unwrap();
    p2.on_success(t2);
    assert_eq!(b.state(), State::Closed);
    // A probe still out when it closed does not count in the new Closed.
    p3.on_failure(t2);

    // Closed with a fresh count.
    fail(&b, t2);
    fail(&b, t2);
    assert_eq!(b.state(), State::Closed);

    let (c, o, h) = (State::Closed, State::Open, State::HalfOpen);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(c, o), (o, h), (h, o), (o, h), (h, c)]
    );
    assert_eq!(b.transitions(), 5);
}

#[tokio::test(start_paused = true)]
async fn stale_closed_outcomes_do_not_disturb_probes() {
    let b = Breaker::new(consecutive(1, 1, 1)).unwrap();
    let t0 = Instant::now();
    let slow = b.allow(t0).unwrap();
    fail(&b, t0);
    assert_eq!(b.state(), State::Open);
    let t1 = t0 + 10 * S;
    let probe = b.allow(t1).unwrap();
    // The slow call from before the breaker opened fails now: ignored.
    slow.on_failure(t1);
    assert_eq!(b.state(), State::HalfOpen);
    probe.on_success(t1);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_frees_its_slot() {
    let b = Breaker::new(consecutive(1, 1, 1)).unwrap();
    let t0 = Instant::now();
    fail(&b, t0);
    let t1 = t0 + 10 * S;
    let probe = b.allow(t1).unwrap();
    assert!(b.allow(t1).is_err());
    drop(probe);
    assert_eq!(b.state(), State::HalfOpen);
    succeed(&b, t1);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ratio_trips_only_with_enough_calls() {
    let b = Breaker::new(BreakerConfig {
        failure_threshold: FailureThreshold::Ratio {
            ratio: 0.5,
            window: 4,
            min_calls: 4,
        },
        ..consecutive(1, 1, 1)
    })
    .unwrap();
    let now = Instant::now();
    // Three failures out of three: not enough calls yet.
    fail(&b, now);
    fail(&b, now);
    fail(&b, now);
    assert_eq!(b.state(), State::Closed);
    // Four calls, 3/4 failed — but the fourth is a success, and only a
    // failure trips.
    succeed(&b, now);
    assert_eq!(b.state(), State::Closed);
    // Window [F, F, S, F] after the oldest F slides out: 3/4 ≥ 0.5.
    fail(&b, now);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn ratio_window_slides() {
    let b = Breaker::new(BreakerConfig {
        failure_threshold: FailureThreshold::Ratio {
            ratio: 0.5,
            window: 4,
            min_calls: 2,
        },
        ..consecutive(1, 1, 1)
    })
    .unwrap();
    let now = Instant::now();
    // S S S F S S F: the window holds one failure in four until the last.
    for _ in 0..3 {
        succeed(&b, now);
    }
    fail(&b, now); // [S S S F] 1/4
    succeed(&b, now); // [S S F S]
    succeed(&b, now); // [S F S S]
    assert_eq!(b.state(), State::Closed);
    fail(&b, now); // [F S S F] 2/4 → open
    assert_eq!(b.state(), State::Open);
}

#[test]
fn probe_limit_holds_across_threads() {
    let b = Breaker::new(BreakerConfig {
        open_duration: Duration::ZERO,
        ..consecutive(1, 3, 1)
    })
    .unwrap();
    let now = Instant::now();
    fail(&b, now);
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let b = b.clone();
                s.spawn(move || b.allow(now).ok())
            })
            .collect();
        let tokens: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        tokens.iter().filter(|t| t.is_some()).count()
    });
    assert_eq!(admitted, 3);
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn state_names() {
    assert_eq!(State::Closed.as_str(), "closed");
    assert_eq!(State::Open.as_str(), "open");
    assert_eq!(State::HalfOpen.as_str(), "half_open");
}
