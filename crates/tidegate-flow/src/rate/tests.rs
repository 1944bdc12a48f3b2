use super::*;
use std::sync::Arc;
use tokio::time::advance;

const MS: Duration = Duration::from_millis(1);

#[test]
fn rejects_bad_config() {
    assert_eq!(Gcra::new(0.0, 1).err(), Some(RateError::InvalidRate(0.0)));
    assert!(matches!(
        Gcra::new(f64::NAN, 1),
        Err(RateError::InvalidRate(_))
    ));
    assert!(matches!(
        Gcra::new(f64::INFINITY, 1),
        Err(RateError::InvalidRate(_))
    ));
    assert_eq!(Gcra::new(-1.0, 1).err(), Some(RateError::InvalidRate(-1.0)));
    assert_eq!(Gcra::new(10.0, 0).err(), Some(RateError::ZeroBurst));
    assert_eq!(Gcra::new(2e9, 1).err(), Some(RateError::RateTooHigh(2e9)));
    assert!(matches!(
        Gcra::new(1e-12, u32::MAX),
        Err(RateError::WindowTooLarge { .. })
    ));
    assert_eq!(
        KeyedGcra::<String>::new(1.0, 1, 0).err(),
        Some(RateError::ZeroKeys)
    );
}

#[tokio::test(start_paused = true)]
async fn burst_then_exactly_spaced() {
    // 10/s → T = 100 ms; burst 3 → W = 300 ms.
    let gcra = Gcra::new(10.0, 3).unwrap();
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(gcra.check(t0), Ok(()));
    }
    assert_eq!(gcra.check(t0), Err(RetryAfter(100 * MS)));

    // One nanosecond early is still too early; on time conforms.
    assert_eq!(
        gcra.check(t0 + 100 * MS - Duration::from_nanos(1)),
        Err(RetryAfter(Duration::from_nanos(1)))
    );
    assert_eq!(gcra.check(t0 + 100 * MS), Ok(()));
    assert_eq!(gcra.check(t0 + 100 * MS), Err(RetryAfter(100 * MS)));

    // Spaced exactly at T, every request conforms and the next at the same
    // instant does not.
    for i in 2..10u32 {
        let now = t0 + 100 * MS * i;
        assert_eq!(gcra.check(now), Ok(()), "slot {i}");
        assert_eq!(gcra.check(now), Err(RetryAfter(100 * MS)), "slot {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_do_not_push_the_next_slot_out() {
    let gcra = Gcra::new(1.0, 1).unwrap();
    let t0 = Instant::now();
    assert_eq!(gcra.check(t0), Ok(()));
    for _ in 0..100 {
        assert_eq!(gcra.check(t0 + 250 * MS), Err(RetryAfter(750 * MS)));
    }
    assert_eq!(gcra.check(t0 + 1000 * MS), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn idle_refills_only_up_to_burst() {
    let gcra = Gcra::new(10.0, 2).unwrap();
    let t0 = Instant::now();
    assert!(gcra.check(t0).is_ok());
    assert!(gcra.check(t0).is_ok());
    assert!(gcra.check(t0).is_err());
    // A long idle spell earns no more than one burst.
    let later = t0 + Duration::from_secs(60);
    assert!(gcra.check(later).is_ok());
    assert!(gcra.check(later).is_ok());
    assert_eq!(gcra.check(later), Err(RetryAfter(100 * MS)));
}

#[test]
fn header_seconds_round_up_and_never_zero() {
    assert_eq!(RetryAfter(Duration::ZERO).as_header_secs(), 1);
    assert_eq!(RetryAfter(100 * MS).as_header_secs(), 1);
    assert_eq!(RetryAfter(Duration::from_secs(2)).as_header_secs(), 2);
    assert_eq!(RetryAfter(Duration::from_millis(2001)).as_header_secs(), 3);
}

#[tokio::test(start_paused = true)]
async fn until_ready_waits_for_the_next_slot() {
    let gcra = Gcra::new(4.0, 1).unwrap();
    let t0 = Instant::now();
    gcra.until_ready().await;
    assert_eq!(Instant::now(), t0);
    gcra.until_ready().await;
    assert_eq!(Instant::now() - t0, 250 * MS);
    gcra.until_ready().await;
    assert_eq!(Instant::now() - t0, 500 * MS);
}

#[tokio::test(start_paused = true)]
async fn many_waiters_share_the_rate() {
    // Many waiters on one limiter: the aggregate is still the rate.
    let gcra = Arc::new(Gcra::new(10.0, 1).unwrap());
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let gcra = gcra.clone();
        tasks.spawn(async move { gcra.until_ready().await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // 20 requests at 10/s with burst 1: the last at 1.9 s.
    assert_eq!(Instant::now() - t0, 1900 * MS);
}

#[tokio::test(start_paused = true)]
async fn keyed_budgets_are_independent() {
    let keyed = KeyedGcra::<String>::new(1.0, 2, 100).unwrap();
    let now = Instant::now();
    assert!(keyed.check("a", now).is_ok());
    assert!(keyed.check("a", now).is_ok());
    assert_eq!(
        keyed.check("a", now),
        Err(RetryAfter(Duration::from_secs(1)))
    );
    assert!(keyed.check("b", now).is_ok());
    assert!(keyed.check("b", now).is_ok());
    assert!(keyed.check("b", now).is_err());
    assert_eq!(keyed.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keyed_table_never_exceeds_its_bound() {
    // 1/s, burst 2 → a fresh key goes idle 1 s after its first request and
    // the longest hint is 2 s.
    let keyed = KeyedGcra::<u32>::new(1.0, 2, 3).unwrap();
    let t0 = Instant::now();
    for k in 0..3 {
        assert!(keyed.check(&k, t0).is_ok());
    }
    // Full of active keys: a newcomer is refused with the longest hint, and
    // the table does not grow.
    assert_eq!(
        keyed.check(&99, t0),
        Err(RetryAfter(Duration::from_secs(2)))
    );
    assert_eq!(keyed.len(), 3);
    // Known keys keep working while the table is full.
    assert!(keyed.check(&0, t0).is_ok());

    // Keys 1 and 2 are idle at t0 + 1 s (key 0 used its burst, TAT t0 + 2 s).
    advance(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    assert!(keyed.check(&10, t1).is_ok());
    assert!(keyed.check(&11, t1).is_ok());
    assert_eq!(keyed.len(), 3);
    assert_eq!(
        keyed.check(&12, t1),
        Err(RetryAfter(Duration::from_secs(2)))
    );
    assert_eq!(keyed.len(), 3);

    // Key 0 was still active, so it kept its state: one slot refilled in the
    // second, not a whole fresh burst.
    assert!(keyed.check(&0, t1).is_ok());
    assert_eq!(keyed.check(&0, t1), Err(RetryAfter(Duration::from_secs(1))));
}

#[tokio::test(start_paused = true)]
async fn keyed_eviction_never_forgets_an_active_key() {
    let keyed = KeyedGcra::<u32>::new(1.0, 1, 2).unwrap();
    let t0 = Instant::now();
    assert!(keyed.check(&1, t0).is_ok());
    advance(500 * MS).await;
    let t1 = Instant::now();
    assert!(keyed.check(&2, t1).is_ok());
    advance(600 * MS).await;
    let t2 = Instant::now();
    // Key 1 is idle (TAT t0+1s), key 2 is not (TAT t0+1.5s): 3 evicts 1.
    assert!(keyed.check(&3, t2).is_ok());
    assert_eq!(keyed.len(), 2);
    assert_eq!(keyed.check(&2, t2), Err(RetryAfter(400 * MS)));
}

#[tokio::test(start_paused = true)]
async fn keyed_sweep_drops_idle_keys() {
    let keyed = KeyedGcra::<u32>::new(10.0, 1, 1000).unwrap();
    let t0 = Instant::now();
    for k in 0..500 {
        assert!(keyed.check(&k, t0).is_ok());
    }
    keyed.sweep(t0);
    assert_eq!(keyed.len(), 500);
    keyed.sweep(t0 + 100 * MS);
    assert!(keyed.is_empty());
}

#[test]
fn concurrent_checks_admit_exactly_the_burst() {
    let gcra = Gcra::new(1.0, 50).unwrap();
    let keyed = KeyedGcra::<String>::new(1.0, 50, 4).unwrap();
    let now = Instant::now();
    let (single, per_key) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let single = (0..100).filter(|_| gcra.check(now).is_ok()).count();
                    let per_key = (0..100).filter(|_| keyed.check("k", now).is_ok()).count();
                    (single, per_key)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
    });
    assert_eq!(single, 50);
    assert_eq!(per_key, 50);
}
