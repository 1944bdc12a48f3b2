use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x71de)
}

#[test]
fn rejects_bad_config() {
    assert_eq!(
        Backoff::new(Duration::ZERO, S).err(),
        Some(BackoffError::ZeroBase)
    );
    assert!(matches!(
        Backoff::new(2 * S, S),
        Err(BackoffError::CapBelowBase { .. })
    ));
    assert_eq!(
        Backoff::new(MS, S).unwrap().with_max_attempts(0).err(),
        Some(BackoffError::ZeroAttempts)
    );
}

#[test]
fn every_delay_is_within_the_exponential_ceiling_and_cap() {
    let backoff = Backoff::new(100 * MS, 5 * S).unwrap();
    let mut rng = rng();
    for attempt in 0..200u32 {
        let ceiling = (100 * MS)
            .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .min(5 * S);
        for _ in 0..50 {
            let d = backoff.next_delay(attempt, None, &mut rng).unwrap();
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            assert!(d <= 5 * S);
        }
    }
}

#[test]
fn jitter_spreads_over_the_whole_interval() {
    // Full jitter, not equal jitter: small and large values both occur.
    let backoff = Backoff::new(S, 60 * S).unwrap();
    let mut rng = rng();
    let delays: Vec<_> = (0..1000)
        .map(|_| backoff.next_delay(3, None, &mut rng).unwrap())
        .collect();
    assert!(delays.iter().any(|d| *d < S));
    assert!(delays.iter().any(|d| *d > 7 * S));
    assert!(delays.iter().all(|d| *d <= 8 * S));
}

#[test]
fn seeded_rng_gives_a_reproducible_schedule() {
    let backoff = Backoff::new(100 * MS, 10 * S).unwrap();
    let schedule = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..8)
            .map(|a| backoff.next_delay(a, None, &mut rng).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(schedule(1), schedule(1));
    assert_ne!(schedule(1), schedule(2));
}

#[test]
fn retry_after_is_a_floor_capped_by_the_maximum() {
    let backoff = Backoff::new(10 * MS, 100 * MS)
        .unwrap()
        .with_max_retry_after(30 * S);
    let mut rng = rng();
    for attempt in 0..20 {
        let d = backoff.next_delay(attempt, Some(5 * S), &mut rng).unwrap();
        assert_eq!(d, 5 * S, "jitter is far below the server's hint");
        let d = backoff
            .next_delay(attempt, Some(3600 * S), &mut rng)
            .unwrap();
        assert_eq!(d, 30 * S, "an hour is capped");
    }
    // A tiny Retry-After does not shorten the backoff below its jitter range;
    // the result is never below the hint.
    let backoff = Backoff::new(S, 10 * S).unwrap();
    for _ in 0..100 {
        let d = backoff.next_delay(4, Some(MS), &mut rng).unwrap();
        assert!((MS..=10 * S).contains(&d));
    }
}

#[test]
fn gives_up_after_max_attempts() {
    let backoff = Backoff::new(MS, S).unwrap().with_max_attempts(3).unwrap();
    let mut rng = rng();
    assert!(backoff.next_delay(0, None, &mut rng).is_some());
    assert!(backoff.next_delay(1, None, &mut rng).is_some());
    assert_eq!(backoff.next_delay(2, None, &mut rng), None);
    assert_eq!(backoff.next_delay(2, Some(S), &mut rng), None);

    // One attempt in total means no retries at all.
    let once = Backoff::new(MS, S).unwrap().with_max_attempts(1).unwrap();
    assert_eq!(once.next_delay(0, None, &mut rng), None);

    // Without a limit it goes on (at the cap).
    let forever = Backoff::new(MS, S).unwrap();
    assert!(forever.next_delay(u32::MAX, None, &mut rng).unwrap() <= S);
}

#[tokio::test(start_paused = true)]
async fn retries_track_attempts_and_age() {
    let backoff = Backoff::new(100 * MS, S)
        .unwrap()
        .with_max_attempts(100)
        .unwrap()
        .with_max_elapsed(10 * S);
    let mut rng = rng();
    let mut retries = backoff.start(Instant::now());
    let mut slept = Duration::ZERO;
    while let Some(d) = retries.next_delay(Instant::now(), None, &mut rng) {
        assert!(d <= S);
        tokio::time::sleep(d).await;
        slept += d;
    }
    // It stopped because the next wait would pass 10 s, not for attempts.
    assert!(retries.attempts() < 100);
    assert!(slept <= 10 * S);
    assert!(Instant::now() - retries.started() <= 10 * S);

    // A Retry-After that would carry the message past its age gives up now.
    let mut retries = backoff.start(Instant::now());
    tokio::time::advance(8 * S).await;
    assert_eq!(
        retries.next_delay(Instant::now(), Some(5 * S), &mut rng),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_attempts() {
    let backoff = Backoff::new(MS, S).unwrap().with_max_attempts(4).unwrap();
    let mut rng = rng();
    let mut retries = backoff.start(Instant::now());
    let delays: Vec<_> =
        std::iter::from_fn(|| retries.next_delay(Instant::now(), None, &mut rng)).collect();
    // Four attempts in total: three waits between them.
    assert_eq!(delays.len(), 3);
    assert_eq!(retries.attempts(), 4);
}

#[test]
fn parses_delta_seconds() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
    assert_eq!(parse_retry_after("120", now), Some(120 * S));
    assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("  7 ", now), Some(7 * S));
    assert_eq!(
        parse_retry_after("18446744073709551615", now),
        Some(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn parses_http_dates() {
    // Wed, 21 Oct 2015 07:28:00 GMT = 1445412480.
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
    let before = date - 90 * S;
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", before),
        Some(90 * S)
    );
    // Obsolete forms recipients must still accept.
    assert_eq!(
        parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", before),
        Some(90 * S)
    );
    assert_eq!(
        parse_retry_after("Wed Oct 21 07:28:00 2015", before),
        Some(90 * S)
    );
    // A date already past means "now", not "never".
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", date + 60 * S),
        Some(Duration::ZERO)
    );
    // A sub-second `now` keeps its precision in the wait.
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", before + 500 * MS),
        Some(89 * S + 500 * MS)
    );
}

#[test]
fn rejects_garbage() {
    let now = SystemTime::UNIX_EPOCH;
    for bad in [
        "",
        "   ",
        "-5",
        "+5",
        "1.5",
        "5s",
        "soon",
        "99999999999999999999999",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00",
        "2015-10-21T07:28:00Z",
    ] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
    }
}

#[test]
fn classifies_delivery_outcomes() {
    use Outcome::*;
    let status = |s| classify(Some(s), false, false);
    for s in [200, 201, 202, 204, 299] {
        assert_eq!(status(s), Success, "{s}");
    }
    for s in [408, 500, 502, 504, 599] {
        assert_eq!(status(s), Retry, "{s}");
    }
    for s in [429, 503] {
        assert_eq!(status(s), SlowDown, "{s}");
    }
    for s in [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 499] {
        assert_eq!(status(s), Fatal, "{s}");
    }
    for s in [100, 301, 302, 304, 600, 999] {
        assert_eq!(status(s), Fatal, "{s}");
    }
    assert_eq!(classify(None, false, false), Retry);
    assert_eq!(classify(None, true, false), Retry);
    assert_eq!(classify(None, false, true), Retry);
    // An unconfirmed send is retried whatever status was seen.
    assert_eq!(classify(Some(200), true, false), Retry);
    assert_eq!(classify(Some(400), true, false), Retry);

    assert!(SlowDown.is_backend_failure() && Retry.is_backend_failure());
    assert!(!Fatal.is_backend_failure() && !Success.is_backend_failure());
    assert!(!Fatal.is_retryable());
}
