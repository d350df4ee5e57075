//! The shared limiter against a real Redis: in-flight leases that last as long as their
//! requests and no longer than their workers, unique across workers that share a name;
//! and a refusal of us recognised by one worker holds the IP for every worker.

use std::time::{Duration, Instant};

use picket::config::Settings;
use picket::limit::redis::RedisLimiter;
use picket::limit::{Grant, Limiter, Permit, Request, Signal};

use crate::support::{servers, unique};

fn settings(rate: f64, burst: u32, max_inflight: u32) -> Settings {
    let text = format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\n[rate_limit]\nbackoff = \"2s\"\n\
         [rate_limit.per_ip]\nrate = {rate}\nburst = {burst}\nmax_inflight = {max_inflight}\n",
        servers().redis_url,
        unique("lim")
    );
    Settings::from_toml(&text).expect("settings")
}

fn limiter(s: &Settings, lease: Duration, worker: &str) -> RedisLimiter {
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    RedisLimiter::new(pool, &s.redis, &s.rate_limit, lease, worker)
}

fn req(host: &str, max_wait: Duration) -> Request<'_> {
    Request {
        ip: "192.0.2.77".parse().expect("ip"),
        host,
        egress: "direct",
        max_wait,
    }
}

async fn go(l: &RedisLimiter, host: &str) -> Permit {
    match l.acquire(req(host, Duration::from_secs(30))).await {
        Grant::Go(p) => p,
        Grant::Defer(d) => panic!("deferred {d:?}"),
    }
}

async fn refused(l: &RedisLimiter, wait: Duration) -> bool {
    matches!(l.acquire(req("h.test", wait)).await, Grant::Defer(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ids_are_unique_across_workers_that_share_a_name() {
    let s = settings(1000.0, 1000, 2);
    let (a, b, c) = (
        limiter(&s, Duration::from_secs(30), "same-name"),
        limiter(&s, Duration::from_secs(30), "same-name"),
        limiter(&s, Duration::from_secs(30), "same-name"),
    );
    let _pa = go(&a, "h.test").await;
    let _pb = go(&b, "h.test").await;
    assert!(
        refused(&c, Duration::from_millis(300)).await,
        "a third request went while two were in flight (cap 2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_its_lease_keeps_it_and_a_dead_worker_frees_it_soon() {
    let s = settings(1000.0, 1000, 1);
    let lease = Duration::from_secs(1);
    let a = limiter(&s, lease, "long");
    let b = limiter(&s, lease, "other");
    let held = go(&a, "h.test").await;
    // The request runs three leases long: nobody may take its slot meanwhile.
    assert!(
        refused(&b, Duration::from_secs(3)).await,
        "the slot was taken during the request"
    );
    drop(held);
    let _ = go(&b, "h.test").await;

    // A worker that dies (its runtime gone: no release, no renewal) frees its slot
    // within about one lease.
    let s2 = s.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dead = limiter(&s2, Duration::from_secs(1), "dead");
            let p = go(&dead, "h.test").await;
            std::mem::forget(p);
        });
        drop(rt);
    })
    .join()
    .expect("dead worker thread");
    let t0 = Instant::now();
    let _ = go(&b, "h.test").await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_us_seen_by_one_worker_holds_the_ip_for_all() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let _ = go(&a, "one.test").await;
    assert!(a
        .answered(req("one.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    assert!(a
        .answered(req("one.test", Duration::ZERO), Signal::Refused(403))
        .await
        .is_none());
    let r = a
        .answered(req("two.test", Duration::ZERO), Signal::Refused(403))
        .await
        .expect("two hosts refusing right after an answer");
    assert_eq!(r.level, 1);
    assert!(r.detail.contains("403"), "{}", r.detail);
    // The other worker waits for the hold (backoff 2 s).
    let t0 = Instant::now();
    let _ = go(&b, "three.test").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
    // A Retry-After from one host holds that host only, for every worker.
    a.hold(req("busy.test", Duration::ZERO), Duration::from_secs(2))
        .await;
    let t0 = Instant::now();
    let _ = go(&b, "quiet.test").await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let _ = go(&b, "busy.test").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_hold_the_ip_once_for_all_workers() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let refused = Signal::ConnectionRefused;
    let _ = go(&a, "one.test").await;
    assert!(a
        .answered(req("one.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    assert!(a
        .answered(req("one.test", Duration::ZERO), refused)
        .await
        .is_none());
    let r = b
        .answered(req("two.test", Duration::ZERO), refused)
        .await
        .expect("two hosts refusing connections right after an answer");
    assert_eq!(r.level, 1);
    assert!(r.detail.contains("connections refused"), "{}", r.detail);
    // After the hold (backoff 2 s) refused connections are the site's failure: no
    // second step; a 403 storm still is one.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(a
        .answered(req("one.test", Duration::ZERO), refused)
        .await
        .is_none());
    let r = a
        .answered(req("three.test", Duration::ZERO), Signal::Refused(403))
        .await
        .expect("a refusal while backed off");
    assert_eq!(r.level, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_space_requests_to_that_ip_further() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "pace");
    for _ in 0..12 {
        a.latency(
            &req("slow.test", Duration::ZERO),
            Duration::from_millis(2500),
        );
    }
    let t0 = Instant::now();
    for _ in 0..3 {
        let _ = go(&a, "slow.test").await;
    }
    // 100/s with a burst of 10 would send all three at once; the IP answers in ~2.5 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(4500),
        "{:?}",
        t0.elapsed()
    );
}
