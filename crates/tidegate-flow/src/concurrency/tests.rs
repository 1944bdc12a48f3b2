use super::*;
use std::sync::atomic::AtomicUsize;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

fn aimd(initial: usize, min: usize, max: usize) -> AdaptiveLimiter {
    AdaptiveLimiter::new(AimdConfig {
        initial,
        min,
        max,
        latency_threshold: 100 * MS,
        increase: 1,
        backoff_ratio: 0.5,
    })
    .unwrap()
}

#[test]
fn rejects_bad_config() {
    assert_eq!(
        FixedLimiter::new(0).err(),
        Some(ConcurrencyError::ZeroLimit)
    );
    let bad = |f: fn(&mut AimdConfig)| {
        let mut c = AimdConfig::default();
        f(&mut c);
        AdaptiveLimiter::new(c).err()
    };
    assert_eq!(bad(|c| c.min = 0), Some(ConcurrencyError::ZeroLimit));
    assert!(matches!(
        bad(|c| c.initial = 1000),
        Some(ConcurrencyError::Bounds { .. })
    ));
    assert!(matches!(
        bad(|c| c.min = 20),
        Some(ConcurrencyError::Bounds { .. })
    ));
    assert_eq!(
        bad(|c| c.backoff_ratio = 1.0),
        Some(ConcurrencyError::BackoffRatio(1.0))
    );
    assert_eq!(
        bad(|c| c.backoff_ratio = 0.0),
        Some(ConcurrencyError::BackoffRatio(0.0))
    );
    assert!(bad(|c| c.backoff_ratio = f64::NAN).is_some());
    assert!(AdaptiveLimiter::new(AimdConfig::default()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn fixed_limit_holds_under_many_tasks() {
    let limiter: Limiter = FixedLimiter::new(4).unwrap().into();
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..100 {
        let (limiter, current, peak) = (limiter.clone(), current.clone(), peak.clone());
        tasks.spawn(async move {
            let permit = limiter.acquire().await;
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            assert!(limiter.in_flight() <= 4);
            sleep(10 * MS).await;
            current.fetch_sub(1, Ordering::SeqCst);
            permit.success(10 * MS);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    // 100 calls, 4 at a time, 10 ms each.
    assert_eq!(Instant::now() - t0, 250 * MS);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.limit(), 4);
}

#[tokio::test]
async fn try_acquire_respects_the_limit_and_drop_releases() {
    let limiter = FixedLimiter::new(2).unwrap();
    let a = limiter.try_acquire().unwrap();
    let b = limiter.try_acquire().unwrap();
    assert!(limiter.try_acquire().is_none());
    assert_eq!(limiter.in_flight(), 2);
    drop(a);
    assert_eq!(limiter.in_flight(), 1);
    let c = limiter.try_acquire().unwrap();
    b.dropped();
    c.overloaded();
    // Outcomes do not move a fixed limit.
    assert_eq!(limiter.limit(), 2);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_takes_nothing() {
    let limiter = FixedLimiter::new(1).unwrap();
    let held = limiter.acquire().await;
    let waited = tokio::time::timeout(10 * MS, limiter.acquire()).await;
    assert!(waited.is_err());
    drop(held);
    assert!(limiter.try_acquire().is_some());
}

#[tokio::test]
async fn aimd_increases_additively_up_to_max() {
    let limiter = aimd(4, 2, 6);
    for expected in [5, 6, 6, 6] {
        // Keep the limiter busy so successes count as evidence.
        let permits: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
        let mut permits = permits.into_iter();
        permits.next().unwrap().success(10 * MS);
        assert_eq!(limiter.limit(), expected);
    }
    // The new slots are real.
    let held: Vec<_> = (0..6).map(|_| limiter.try_acquire().unwrap()).collect();
    assert!(limiter.try_acquire().is_none());
    drop(held);
}

#[tokio::test]
async fn aimd_does_not_grow_when_underused() {
    let limiter = aimd(10, 1, 100);
    for _ in 0..50 {
        limiter.try_acquire().unwrap().success(MS);
    }
    assert_eq!(limiter.limit(), 10);
}

#[tokio::test]
async fn aimd_decreases_multiplicatively_down_to_min() {
    let limiter = aimd(16, 3, 32);
    for expected in [8, 4, 3, 3] {
        limiter.try_acquire().unwrap().overloaded();
        assert_eq!(limiter.limit(), expected);
    }
    let held: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    assert!(limiter.try_acquire().is_none());
    drop(held);
}

#[tokio::test]
async fn slow_success_and_drops_decrease() {
    let limiter = aimd(16, 1, 32);
    let busy: Vec<_> = (0..15).map(|_| limiter.try_acquire().unwrap()).collect();
    limiter.try_acquire().unwrap().success(101 * MS);
    assert_eq!(limiter.limit(), 8);
    drop(busy);
    limiter.try_acquire().unwrap().dropped();
    assert_eq!(limiter.limit(), 4);
    // A success exactly at the threshold is still fast.
    let busy: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    limiter.try_acquire().unwrap().success(100 * MS);
    assert_eq!(limiter.limit(), 5);
    drop(busy);
}

#[tokio::test]
async fn one_overload_cuts_once_and_in_flight_permits_are_absorbed() {
    let limiter = aimd(8, 1, 8);
    let permits: Vec<_> = (0..8).map(|_| limiter.try_acquire().unwrap()).collect();
    // Every in-flight call fails at once: one cut, not eight.
    for p in permits {
        p.overloaded();
    }
    assert_eq!(limiter.limit(), 4);
    assert_eq!(limiter.in_flight(), 0);
    // The cut took effect on the semaphore even though every permit was out
    // when it happened.
    let held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
    assert!(limiter.try_acquire().is_none());
    drop(held);
    // A call admitted after the cut can cut again.
    limiter.try_acquire().unwrap().overloaded();
    assert_eq!(limiter.limit(), 2);
}

#[tokio::test]
async fn debt_is_repaid_before_growing() {
    let limiter = aimd(4, 1, 8);
    let mut held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
    // Cut while all four are out: limit 2, debt 2.
    held.pop().unwrap().overloaded();
    assert_eq!(limiter.limit(), 2);
    // Busy (3 in flight, limit 2): a fast success grows the limit to 3 and pays
    // one unit of debt instead of adding a permit.
    held.pop().unwrap().success(MS);
    assert_eq!(limiter.limit(), 3);
    drop(held);
    let now: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    assert!(limiter.try_acquire().is_none());
    drop(now);
}

#[tokio::test]
async fn dropping_without_outcome_changes_nothing() {
    let limiter: Limiter = aimd(4, 1, 8).into();
    let busy: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
    drop(busy);
    assert_eq!(limiter.limit(), 4);
    assert_eq!(limiter.in_flight(), 0);
}
