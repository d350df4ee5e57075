//! The shared limiter against a real Redis: in-flight leases that last as long as their
//! requests and no longer than their workers, unique across workers that share a name;
//! and a refusal of us recognised by one worker holds the IP for every worker.

use std::time::{Duration, Instant};

use picket::config::Settings;
use picket::limit::redis::RedisLimiter;
use picket::limit::{Grant, Hold, Limiter, Line, Permit, Refusal, Request, Signal};

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
        max_pause: max_wait,
        line: picket::limit::Line::Outside,
        alone: None,
    }
}

/// The IP answers `first`, then refuses it (`signal`, one host: not yet us) and
/// `second` (a second host right after the answer: a refusal of us at level 1).
async fn storm(first: &RedisLimiter, second: &RedisLimiter, signal: Signal) -> Refusal {
    let _ = go(first, "one.test").await;
    let now = |host| req(host, Duration::ZERO);
    assert!(first
        .answered(now("one.test"), Signal::Fine)
        .await
        .is_none());
    assert!(first.answered(now("one.test"), signal).await.is_none());
    let r = second
        .answered(now("two.test"), signal)
        .await
        .unwrap_or_else(|| panic!("two hosts {signal:?} right after an answer"));
    assert_eq!(r.level, 1);
    r
}

async fn go(l: &RedisLimiter, host: &str) -> Permit {
    match l.acquire(req(host, Duration::from_secs(30))).await {
        Grant::Go(p) => p,
        Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
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
    a.hold(
        req("busy.test", Duration::ZERO),
        Hold::Asked(Duration::from_secs(2)),
    )
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

/// After a refusal of us (haproxy's `maxconn 1` answering 503 from its queue, a
/// `limit_conn`) the IP gets one request at a time from all workers together: no burst,
/// and one in flight whatever `max_inflight` says; one sent before the refusal counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backed_off_ip_has_one_request_in_flight_across_workers() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let before = go(&a, "zero.test").await;
    let _ = storm(&a, &b, Signal::Refused(503)).await;
    // The hold (backoff 2 s) ends; the request sent before it is still in flight.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        refused(&b, Duration::from_millis(500)).await,
        "a request went while one sent before the refusal was in flight"
    );
    drop(before);
    let first = go(&a, "one.test").await;
    assert!(
        refused(&b, Duration::from_millis(500)).await,
        "a second request went while the first was in flight (max_inflight 10)"
    );
    drop(first);
    let _ = go(&b, "two.test").await;
}

/// A request asked alone (a slow answer's confirmation) waits until no other request
/// to its IP is out, any worker's: another worker's request still in a limit's queue
/// would delay it as much as one of ours. Any request booked beside another worker's
/// is told so (`Permit::beside`), and one asked alone that waited as long as it may
/// goes beside them all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_asked_alone_waits_for_every_workers_requests_to_its_ip() {
    let s = settings(1000.0, 1000, 8);
    let a = limiter(&s, Duration::from_secs(30), "alone-a");
    let b = limiter(&s, Duration::from_secs(30), "alone-b");
    let first = go(&a, "one.test").await;
    assert_eq!(first.beside, 0, "nothing else was out");
    let second = go(&b, "two.test").await;
    assert_eq!(second.beside, 1, "the other worker's request was out");
    let alone = |host, for_| Request {
        alone: Some(for_),
        ..req(host, Duration::from_secs(30))
    };
    let start = Instant::now();
    let back = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(second);
    };
    let (grant, ()) = tokio::join!(
        b.acquire(alone("three.test", Duration::from_secs(20))),
        back
    );
    let waited = start.elapsed();
    let Grant::Go(lone) = grant else {
        panic!("a request asked alone was not let go")
    };
    assert!(
        waited >= Duration::from_millis(600),
        "asked alone after {waited:?}, beside the other worker's request"
    );
    assert_eq!(lone.beside, 0);
    // Another asked alone waits behind it, up to its time, then goes beside it.
    let start = Instant::now();
    let Grant::Go(late) = a
        .acquire(alone("four.test", Duration::from_millis(400)))
        .await
    else {
        panic!("a request asked alone past its time was not let go")
    };
    let waited = start.elapsed();
    // Polled at most every 100 ms, it goes within one poll of its time.
    assert!(
        waited >= Duration::from_millis(300),
        "went after {waited:?} beside one asked alone"
    );
    assert_eq!(late.beside, 1, "it went beside the one asked alone");
}

/// A request booked right after ours by another worker may reach the server first: a
/// slow answer asks whether any was (`Limiter::booked_since`), and a request booked
/// after ours, any worker's, says so; none booked since, or the IP's schedule gone
/// idle, says not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_booked_after_ours_by_another_worker_is_seen_from_ours() {
    let s = settings(1000.0, 1000, 8);
    let a = limiter(&s, Duration::from_secs(30), "since-a");
    let b = limiter(&s, Duration::from_secs(30), "since-b");
    let ours = go(&a, "one.test").await;
    let booked = ours
        .booked
        .expect("the shared limiter tells where it booked");
    let now = |host| req(host, Duration::ZERO);
    assert!(
        !a.booked_since(now("one.test"), booked).await,
        "nothing was booked after ours"
    );
    let _theirs = go(&b, "two.test").await;
    assert!(
        a.booked_since(now("one.test"), booked).await,
        "another worker's request booked after ours was not seen"
    );
    // Idle for longer than the schedule is kept: nothing booked since.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = go(&b, "two.test").await.booked.expect("booked");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!b.booked_since(now("two.test"), later).await);
}

/// A request that may not wait out a site's long pause (`max_pause`: `picket check`'s
/// probe time) is answered at once when the host asked for it, but waits for a hold of
/// ours (after a burst) like for the rate, in every worker that shares the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_pause_the_host_asked_for_is_bounded_by_max_pause() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let now = |host| req(host, Duration::ZERO);
    a.hold(now("asked.test"), Hold::Asked(Duration::from_secs(2)))
        .await;
    a.hold(now("ours.test"), Hold::Ours(Duration::from_secs(2)))
        .await;
    let check = |host| Request {
        max_pause: Duration::from_millis(500),
        ..req(host, Duration::from_secs(30))
    };
    let t0 = Instant::now();
    match b.acquire(check("asked.test")).await {
        Grant::Paused(left) => assert!(left > Duration::from_secs(1), "{left:?}"),
        Grant::Go(_) => panic!("sent to a host that asked for a pause"),
        Grant::Defer(d) => panic!("deferred {d:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let Grant::Go(permit) = b.acquire(check("ours.test")).await else {
        panic!("a hold of ours is waited for");
    };
    assert!(
        t0.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        t0.elapsed()
    );
    drop(permit);
}

/// A slot one worker booked before several hosts of its IP asked another worker for a
/// pause is not used when it comes: the IP's pause stands for requests already waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_paused_while_a_request_waits_for_its_slot_holds_it_too() {
    let s = settings(1.0, 1, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), "wb"));
    drop(go(&b, "c.test").await);
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            let t0 = Instant::now();
            drop(go(&b, "c.test").await);
            t0.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = |host| req(host, Duration::ZERO);
    a.hold(now("a.test"), Hold::Asked(Duration::from_secs(3)))
        .await;
    a.hold(now("b.test"), Hold::Asked(Duration::from_secs(3)))
        .await;
    let waited = waiting.await.expect("the waiting request");
    assert!(waited >= Duration::from_millis(2900), "{waited:?}");
}

/// An IP paused because several of its hosts asked for long pauses is such a pause for
/// its other hosts too, in every worker: a request that may not wait it out is
/// answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_ip_pause_is_bounded_by_max_pause() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let now = |host| req(host, Duration::ZERO);
    a.hold(now("a.test"), Hold::Asked(Duration::from_secs(120)))
        .await;
    a.hold(now("b.test"), Hold::Asked(Duration::from_secs(120)))
        .await;
    let check = Request {
        max_pause: Duration::from_secs(5),
        ..req("c.test", Duration::from_secs(600))
    };
    let t0 = Instant::now();
    let grant = tokio::time::timeout(Duration::from_secs(10), b.acquire(check))
        .await
        .expect("answered within 10 s, not after the IP's two minutes");
    assert!(matches!(grant, Grant::Paused(_)));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// Refused connections on several hosts right after answers hold the IP for every
/// worker, and refused again after the hold they hold it again while a firewall that
/// counts what it rejects may remember us (iptables' `recent --update … -j REJECT`):
/// until a hold lasted `rate_limit.drop_memory`, as the Lua `REFUSE` script reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_hold_the_ip_for_all_workers_until_a_hold_outwaits_a_ban() {
    let refused = Signal::ConnectionRefused;
    let now = |host| req(host, Duration::ZERO);
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "wa");
    let b = limiter(&s, Duration::from_secs(30), "wb");
    let r = storm(&a, &b, refused).await;
    assert!(r.detail.contains("connections refused"), "{}", r.detail);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = b
        .answered(now("one.test"), refused)
        .await
        .expect("refused still after a 2 s hold, shorter than the ban's memory (60 s)");
    assert_eq!((r.level, r.hold), (2, Duration::from_secs(4)));
    // With a memory of 2 s the first hold outwaits it: refused connections after it are
    // the site's failure (a server that stopped listening), no second step; a 403 storm
    // still is one.
    let mut s = settings(100.0, 10, 10);
    s.rate_limit.drop_memory = Duration::from_secs(2);
    let a = limiter(&s, Duration::from_secs(30), "wc");
    let b = limiter(&s, Duration::from_secs(30), "wd");
    storm(&a, &b, refused).await;
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

/// nginx's `limit_req_status 444` closes refused connections without an answer; when the
/// IP answered since the hold ended, the limit is still refusing what is too fast, and
/// it is a refusal of us again (the rate halves once more). Closed still after the hold
/// with no answer, they are a block outlasting it (ModSecurity CRS's DoS protection
/// drops a blocked client's connections for minutes), as the Lua `REFUSE` script reads
/// them for every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_count_again_once_the_ip_answered_after_the_hold() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "ca");
    let b = limiter(&s, Duration::from_secs(30), "cb");
    let closed = Signal::Closed;
    let r = storm(&a, &a, closed).await;
    assert!(
        r.detail.contains("closed without an answer"),
        "{}",
        r.detail
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // No answer since the hold: a block outlasting it (ModSecurity CRS's DoS
    // protection), seen by another worker too, and the hold grows.
    let r = b
        .answered(req("one.test", Duration::ZERO), closed)
        .await
        .expect("closed still after the hold, no answer: the block going on");
    assert_eq!(r.level, 2);
    assert!(r.detail.contains("outlasting our hold"), "{}", r.detail);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    // An answer after the hold, then closed connections again: the limit, once more.
    assert!(a
        .answered(req("two.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    let r = a
        .answered(req("three.test", Duration::ZERO), closed)
        .await
        .expect("closed again after an answer that followed the hold");
    assert_eq!(r.level, 3);
    assert!(!r.detail.contains("outlasting"), "{}", r.detail);
}

/// The worker that was told of a hold knows, with no I/O, when it is over with nothing
/// answered since: a close then is asked about before the limiter reads it as a block
/// outlasting the hold. Not during the hold, nor once an answer came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_knows_an_ip_is_quiet_after_its_hold_until_an_answer_comes() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "qa");
    let on = |host| req(host, Duration::ZERO);
    assert!(!a.quiet_after_hold(&on("one.test")), "no hold");
    storm(&a, &a, Signal::Closed).await;
    assert!(!a.quiet_after_hold(&on("one.test")), "during the hold");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(a.quiet_after_hold(&on("one.test")), "over, nothing since");
    assert!(a.answered(on("two.test"), Signal::Fine).await.is_none());
    assert!(!a.quiet_after_hold(&on("one.test")), "answered after it");
}

/// A 503 after the hold with nothing answered since is the site's (a backend that
/// died), unless a neighbour of the IP is refused alike right then: a limit remembering
/// longer than our hold (haproxy's `http_req_rate(10s)`), held again for every worker,
/// until the holds add up to `rate_limit.limit_memory` (5 s here: 2 s, then 4 s), as
/// the Lua `REFUSE` script reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_refused_alike_holds_again_for_every_worker_while_a_limit_remembers() {
    let text = format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\n[rate_limit]\nbackoff = \"2s\"\n\
         limit_memory = \"5s\"\n",
        servers().redis_url,
        unique("lim")
    );
    let s = Settings::from_toml(&text).expect("settings");
    let a = limiter(&s, Duration::from_secs(30), "na");
    let b = limiter(&s, Duration::from_secs(30), "nb");
    let (refused, alike) = (Signal::Refused(503), Signal::NeighbourToo(503));
    let _ = storm(&a, &a, refused).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let now = |host| req(host, Duration::ZERO);
    assert!(b.answered(now("one.test"), refused).await.is_none());
    let r = b
        .answered(now("one.test"), alike)
        .await
        .expect("a neighbour refused alike after the hold: a refusal of us");
    assert_eq!((r.level, r.hold), (2, Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    // 2 s and 4 s held, more than the limit remembers: the site's, for either worker.
    assert!(a.answered(now("one.test"), alike).await.is_none());
    assert!(b.answered(now("two.test"), refused).await.is_none());
}

/// Connections timing out on several hosts right after answers, and again after each
/// hold: a firewall dropping us that every knock lengthens (iptables' `recent
/// --update`), held a step longer each time for every worker, until a hold lasted
/// `rate_limit.drop_memory` (4 s here: 2 s, then 4 s); then the machine is gone, the
/// site's, as the Lua `REFUSE` script reads it. One host timing out alone once the IP
/// answered after a hold is the site's at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_timing_out_after_holds_hold_every_worker_until_a_hold_outwaits_the_drop() {
    let dropping = || {
        let text = format!(
            "[redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\n[rate_limit]\nbackoff = \"2s\"\n\
             drop_memory = \"4s\"\n",
            servers().redis_url,
            unique("lim")
        );
        Settings::from_toml(&text).expect("settings")
    };
    let s = dropping();
    let a = limiter(&s, Duration::from_secs(30), "da");
    let b = limiter(&s, Duration::from_secs(30), "db");
    let dropped = Signal::TimedOut(Duration::from_millis(500));
    let r = storm(&a, &a, dropped).await;
    assert!(r.detail.contains("timing out"), "{}", r.detail);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let now = |host| req(host, Duration::ZERO);
    let r = b
        .answered(now("one.test"), dropped)
        .await
        .expect("dropped still after a 2 s hold: the drop outlasts it");
    assert_eq!((r.level, r.hold), (2, Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(
        a.answered(now("two.test"), dropped).await,
        None,
        "silent after a 4 s hold: the site's"
    );
    // The door open again: one host timing out alone is its own failure.
    let c = limiter(&dropping(), Duration::from_secs(30), "dc");
    let _ = storm(&c, &c, dropped).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(c.answered(now("three.test"), Signal::Fine).await.is_none());
    assert_eq!(c.answered(now("four.test"), dropped).await, None);
}

/// Requests held open without an answer on several hosts right after answers hold the
/// IP once (haproxy's tarpit holding what came too fast); held open still after the
/// hold, while the IP answers its other hosts, they are the site's failure for every
/// worker (a backend hanging behind those hosts, hunt Z3), where requests merely left
/// unanswered are the limit refusing what is still too fast, as the Lua `REFUSE`
/// script reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_open_after_the_hold_are_the_sites_while_its_neighbours_answer() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "held-a");
    let b = limiter(&s, Duration::from_secs(30), "held-b");
    let held = Signal::HeldOpen(Duration::from_secs(6));
    let r = storm(&a, &a, held).await;
    assert!(r.detail.contains("held open"), "{}", r.detail);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b
        .answered(req("three.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    assert_eq!(
        b.answered(req("one.test", Duration::ZERO), held).await,
        None,
        "held open again after the hold while the IP answers: the site's"
    );
    let r = b
        .answered(
            req("two.test", Duration::ZERO),
            Signal::Unanswered(Duration::from_secs(2)),
        )
        .await
        .expect("left unanswered after an answer that followed the hold: still us");
    assert!(r.detail.contains("without an answer"), "{}", r.detail);
}

/// haproxy's tarpit flagging us (real_servers::haproxy_flagging_us_as_an_abuser_is_never_down),
/// as the Lua `REFUSE` script reads it: held open after the hold with nothing answered,
/// after a storm of requests held open alone, is the site's (a server hanging on every
/// host); after the tarpit's 500 refused us in its page, it is more of the flag on us,
/// for every worker, until the IP answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_open_after_a_tarpits_500_are_its_flag_on_us_for_every_worker() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "flag-a");
    let b = limiter(&s, Duration::from_secs(30), "flag-b");
    let held = Signal::HeldOpen(Duration::from_secs(6));
    storm(&a, &a, held).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        b.answered(req("one.test", Duration::ZERO), held).await,
        None,
        "held open again, after a storm of requests held open alone: the site's"
    );
    let r = a
        .answered(req("two.test", Duration::ZERO), Signal::Refused(500))
        .await
        .expect("the tarpit's 500 after the hold");
    assert_eq!(r.level, 2);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let r = b
        .answered(req("three.test", Duration::ZERO), held)
        .await
        .expect("held open after the tarpit's 500 refused us, for another worker too");
    assert!(r.detail.contains("flagged"), "{}", r.detail);
    assert_eq!(r.level, 3);
    // The hold over, and the IP answered since: what is held open then is the site's.
    let (mut conn, key) = standing_of(&s).await;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("until")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("hset");
    assert!(a
        .answered(req("four.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    assert_eq!(
        a.answered(req("one.test", Duration::ZERO), held).await,
        None,
        "held open after the IP answered since the hold: the site's"
    );
}

/// A request held open right behind others of ours after the hold (haproxy's tarpit
/// past 3 a second, our 10 halved to 5) is our pace held: the hold steps up for every
/// worker, even from a host of the storm, where one held open alone is the site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_open_at_our_pace_after_the_hold_step_it_up_for_every_worker() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "pace-a");
    let b = limiter(&s, Duration::from_secs(30), "pace-b");
    storm(&a, &a, Signal::HeldOpen(Duration::from_secs(6))).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The first slot after the hold goes alone; the next, another worker's, comes
    // right behind it (at 50 a second, one in flight).
    let first = go(&a, "three.test").await;
    assert!(!first.at_our_pace, "the first after the hold");
    drop(first);
    let next = go(&b, "four.test").await;
    assert!(next.at_our_pace, "right behind another worker's slot");
    drop(next);
    assert!(b
        .answered(req("three.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    let r = b
        .answered(
            req("one.test", Duration::ZERO),
            Signal::HeldAtOurPace(Duration::from_secs(6)),
        )
        .await
        .expect("held at our pace after the hold: a refusal of us");
    assert_eq!(r.level, 2, "{}", r.detail);
    assert!(r.detail.contains("held open"), "{}", r.detail);
}

/// haproxy before saturated backends answers its 503 to the requests that waited out
/// `timeout queue` and holds the rest: held open after the hold, nothing answered, it
/// is the site failing for every worker, not a ban following a refusal of us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_open_after_503s_and_a_hold_are_a_saturated_servers() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "queue-a");
    let b = limiter(&s, Duration::from_secs(30), "queue-b");
    storm(&a, &a, Signal::Refused(503)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let held = Signal::HeldOpen(Duration::from_secs(6));
    assert_eq!(
        b.answered(req("three.test", Duration::ZERO), held).await,
        None
    );
}

/// The IP's `standing` hash in Redis, and a connection to change it as time would.
async fn standing_of(s: &Settings) -> (redis::aio::MultiplexedConnection, String) {
    let conn = redis::Client::open(s.redis.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{}limit:{{192.0.2.77}}:standing", s.redis.key_prefix);
    (conn, key)
}

/// Two workers' limiters (`name`-a, `name`-b) after one.test and two.test answered
/// 403 right after an answer (a storm) and the 2 s hold ended, and the IP's `standing`
/// hash to change as time would.
async fn held_once_by_403s(
    name: &str,
) -> (
    RedisLimiter,
    RedisLimiter,
    redis::aio::MultiplexedConnection,
    String,
) {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), &format!("{name}-a"));
    let b = limiter(&s, Duration::from_secs(30), &format!("{name}-b"));
    let _ = storm(&a, &a, Signal::Refused(403)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (conn, standing) = standing_of(&s).await;
    (a, b, conn, standing)
}

/// `host` first refused again an hour and a second ago, by Redis's clock
/// (`standing::AGAIN_OVER`): what checks over an hour leave in field `f:<host>`.
async fn first_again_an_hour_ago(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    host: &str,
) {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.expect("time");
    let ms = (secs * 1000 + micros / 1000) as f64 - 3_601_000.0;
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg(format!("f:{host}"))
        .arg(format!("{ms:.3}"))
        .query_async(conn)
        .await
        .expect("an hour of checks");
}

/// Hunt Z4: a host refusing again after the hold while the IP answers its other hosts
/// is not held again, and after `AGAIN_TIMES` checks (each at least the refusal window
/// apart; a check's confirming attempt counts none) over an hour its refusals are the
/// site's, for every worker, as the Lua `REFUSE` script reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refusing_again_check_after_check_is_the_sites_at_last_for_every_worker() {
    let (a, b, mut conn, standing) = held_once_by_403s("again").await;
    let refused = Signal::Refused(403);
    let now = |host| req(host, Duration::ZERO);
    for check in 1..=4 {
        // Three checks within a minute may be a ban of us on this site alone (review
        // AB); the same over an hour is the site failing.
        if check == 4 {
            first_again_an_hour_ago(&mut conn, &standing, "one.test").await;
        }
        let w = if check % 2 == 1 { &a } else { &b };
        assert!(w.answered(now("three.test"), Signal::Fine).await.is_none());
        let said = w.answered(now("one.test"), refused).await;
        let confirming = w.answered(now("one.test"), refused).await;
        if check < 4 {
            let r = said.unwrap_or_else(|| panic!("check {check}: still unknown"));
            assert!(r.hold.is_zero(), "check {check}: {}", r.detail);
            assert!(
                confirming.is_some(),
                "check {check}: the confirming attempt"
            );
            tokio::time::sleep(Duration::from_millis(10_100)).await;
        } else {
            assert_eq!(said, None, "check {check}: the site's at last");
        }
    }
}

/// Workers share an IP's checks: the neighbours' answers after the hold may all have
/// gone to another worker than the one a broken host's refusal comes back to. That
/// worker had no answer since the hold, and stepped the hold up as for a block going
/// on; the answers another worker had since the hold count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_another_worker_had_after_the_hold_counts_for_every_worker() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "shared-a");
    let b = limiter(&s, Duration::from_secs(30), "shared-b");
    let refused = Signal::Refused(403);
    let _ = storm(&b, &b, refused).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let now = |host| req(host, Duration::ZERO);
    assert!(b.answered(now("three.test"), Signal::Fine).await.is_none());
    let again = a
        .answered(now("one.test"), refused)
        .await
        .expect("still unknown");
    assert!(
        again.hold.is_zero() && again.level == 1,
        "stepped up: {}",
        again.detail
    );
}

/// Sites are checked a minute or more apart, and by then the neighbours' answers have
/// stepped the IP's level back down (`DECAY`, set here at once). The same broken pair
/// refusing then is no fresh storm: `unknown` and not held, the site's in the third
/// check once the first refusal again is an hour old (set here), for every worker; and
/// a site known failing, asked first after a later hold, steps nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pair_checked_minutes_apart_is_the_sites_after_the_hour_for_every_worker() {
    let (a, b, mut conn, standing) = held_once_by_403s("pair").await;
    let refused = Signal::Refused(403);
    let now = |host| req(host, Duration::ZERO);
    for check in 1..=3 {
        if check == 3 {
            for host in ["one.test", "two.test"] {
                first_again_an_hour_ago(&mut conn, &standing, host).await;
            }
        }
        let _: () = redis::cmd("HSET")
            .arg(&standing)
            .arg("level")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("a minute of answers");
        let w = if check % 2 == 1 { &a } else { &b };
        assert!(w.answered(now("three.test"), Signal::Fine).await.is_none());
        for host in ["one.test", "two.test"] {
            let said = w.answered(now(host), refused).await;
            if check < 3 {
                let r = said.unwrap_or_else(|| panic!("check {check}, {host}: still unknown"));
                assert!(r.hold.is_zero(), "check {check}, {host}: {}", r.detail);
            } else {
                assert_eq!(said, None, "check {check}, {host}: the site's at last");
            }
        }
        if check < 3 {
            tokio::time::sleep(Duration::from_millis(10_100)).await;
        }
    }
    // A limit trips for real on two other hosts; after its hold, a site known failing
    // is asked first: its own refusal, and the hold is not stepped up for it.
    assert!(a.answered(now("three.test"), Signal::Fine).await.is_none());
    assert!(a.answered(now("four.test"), refused).await.is_none());
    let r = b
        .answered(now("five.test"), refused)
        .await
        .expect("a storm");
    tokio::time::sleep(r.hold + Duration::from_millis(100)).await;
    assert_eq!(b.answered(now("one.test"), refused).await, None);
    let still = a
        .answered(now("four.test"), refused)
        .await
        .expect("the block goes on");
    assert_eq!(still.level, r.level + 1);
    // Mended: one.test answers again. A limit tripping later refuses it beside another
    // host: a storm, for every worker, not that site's failure.
    assert!(b.answered(now("one.test"), Signal::Fine).await.is_none());
    // Past the hold and the refusal window of four.test's refusal.
    let window = Duration::from_millis(10_100);
    tokio::time::sleep(still.hold.max(window) + Duration::from_millis(100)).await;
    let _: () = redis::cmd("HSET")
        .arg(&standing)
        .arg("level")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("minutes of answers");
    assert!(a.answered(now("three.test"), Signal::Fine).await.is_none());
    assert!(a.answered(now("six.test"), refused).await.is_none());
    let storm = a.answered(now("one.test"), refused).await;
    assert!(
        storm.as_ref().is_some_and(|r| !r.hold.is_zero()),
        "a mended site refusing beside another: {storm:?}"
    );
}

/// A site known failing (it refused again after holds for an hour) is mended when it
/// answers, whichever worker its answer comes to: a worker that never saw it refusing
/// learns it when booking a request for it (`BOOK` reads field `a:<host>`). Before, a
/// mended site whose answers all went to other workers stayed known failing for the
/// hour after its last refusal, and a limit tripping meanwhile had its refusal taken
/// for the site's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_known_failing_is_mended_by_any_workers_answer() {
    let (_a, b, mut conn, standing) = held_once_by_403s("mend").await;
    let (secs, _): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("time");
    let now_ms = secs as f64 * 1000.0;
    let _: () = redis::cmd("HSET")
        .arg(&standing)
        .arg("a:one.test")
        .arg(format!("{now_ms:.3}:3"))
        .arg("f:one.test")
        .arg(format!("{:.3}", now_ms - 3_601_000.0))
        .arg("level")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("known failing");
    // Known failing by the checks of workers gone since (set here): none of these two
    // saw it refusing.
    drop(go(&b, "one.test").await);
    assert!(b
        .answered(req("one.test", Duration::ZERO), Signal::Fine)
        .await
        .is_none());
    let known: bool = redis::cmd("HEXISTS")
        .arg(&standing)
        .arg("a:one.test")
        .query_async(&mut conn)
        .await
        .expect("hexists");
    assert!(
        !known,
        "answered through another worker: still known failing"
    );
}

/// fail2ban bans the address whose requests nginx refused, mod_evasive runs its
/// `DOSSystemCommand`: after a server's own refusal of us, connections it refuses or
/// drops are that ban, for every worker, until the IP answers after a hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_following_the_servers_refusal_holds_the_ip_until_it_answers() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "ban-a");
    let b = limiter(&s, Duration::from_secs(30), "ban-b");
    storm(&a, &a, Signal::Refused(503)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // After the hold, refused connections: the ban, seen by another worker too.
    let r = b
        .answered(req("one.test", Duration::ZERO), Signal::ConnectionRefused)
        .await
        .expect("a ban following the 503s");
    assert_eq!(r.level, 2);
    assert!(
        r.detail.contains("ban following") && r.detail.contains("503 Service Unavailable"),
        "{}",
        r.detail
    );
    let r = a
        .answered(
            req("three.test", Duration::ZERO),
            Signal::TimedOut(Duration::from_secs(1)),
        )
        .await
        .expect("dropped connections during the hold: the same ban");
    assert!(r.detail.contains("timing out"), "{}", r.detail);
    // An answer after that hold, and longer than a ban takes to come after the 503s
    // (`standing::BAN_REACTION`): the ban is over, and a refused connection is the site's.
    tokio::time::sleep(Duration::from_millis(8100)).await;
    a.answered(req("two.test", Duration::ZERO), Signal::Fine)
        .await;
    assert!(a
        .answered(req("one.test", Duration::ZERO), Signal::ConnectionRefused)
        .await
        .is_none());
}

/// A hold shorter than fail2ban's reaction: the first request after it is answered, and
/// the ban comes after. A refused connection then is that ban for every worker; once the
/// IP answered well after the server's refusal, no ban followed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_may_follow_an_answer_that_came_right_after_the_servers_refusal() {
    let s = settings(100.0, 10, 10);
    let r = refused_after_an_answer_after_the_hold(&s, "slowban")
        .await
        .expect("the ban that came after the answer");
    assert!(r.detail.contains("ban following"), "{}", r.detail);
}

/// 503s from two hosts held the IP (2 s); one worker had an answer right after the
/// hold, and how another worker reads a refused connection then.
async fn refused_after_an_answer_after_the_hold(s: &Settings, name: &str) -> Option<Refusal> {
    let a = limiter(s, Duration::from_secs(30), &format!("{name}-a"));
    let b = limiter(s, Duration::from_secs(30), &format!("{name}-b"));
    storm(&a, &a, Signal::Refused(503)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let now = |host| req(host, Duration::ZERO);
    a.answered(now("two.test"), Signal::Fine).await;
    b.answered(now("one.test"), Signal::ConnectionRefused).await
}

/// 503s from two.test on `first` and three.test on `second`, neither having had an
/// answer of its own: the IP is held (level 1).
async fn refused_by_two_hosts(first: &RedisLimiter, second: &RedisLimiter) -> Refusal {
    let now = |host| req(host, Duration::ZERO);
    assert!(first
        .answered(now("two.test"), Signal::Refused(503))
        .await
        .is_none());
    let r = second
        .answered(now("three.test"), Signal::Refused(503))
        .await
        .expect("two hosts' 503s hold the IP");
    assert_eq!(r.level, 1);
    r
}

/// One burst's 503s reached a worker before the answers to what nginx let through: read
/// as if the answers had come first, the server refused us right among them, and a
/// dropped connection after the hold is the ban that followed, for every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_follows_a_burst_whose_answers_came_after_its_refusals() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "late-a");
    let b = limiter(&s, Duration::from_secs(30), "late-b");
    let now = |host| req(host, Duration::ZERO);
    let _ = go(&a, "one.test").await;
    refused_by_two_hosts(&a, &a).await;
    a.answered(now("one.test"), Signal::Fine).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = b
        .answered(now("four.test"), Signal::TimedOut(Duration::from_secs(1)))
        .await
        .map(|r| r.detail)
        .unwrap_or_default();
    assert!(r.contains("ban following"), "{r:?}");
}

/// Jobs of one IP spread over workers: the one that had the answers is often not the one
/// refused. Its answers count for every worker all the same: 503s from other hosts on
/// other workers right after it are a storm of us, and once it is answered after the
/// hold, a 503 on another worker is a limit refusing what is still too fast, not the
/// site failing (a worker knowing of no hold told nobody of its answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_on_one_worker_counts_for_every_workers_reading() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "spread-a");
    let b = limiter(&s, Duration::from_secs(30), "spread-b");
    let c = limiter(&s, Duration::from_secs(30), "spread-c");
    let now = |host| req(host, Duration::ZERO);
    // The answer reaches Redis from a background task, within a round trip.
    let told = Duration::from_millis(300);
    let _ = go(&c, "one.test").await;
    c.answered(now("one.test"), Signal::Fine).await;
    tokio::time::sleep(told).await;
    let r = refused_by_two_hosts(&a, &b).await;
    assert!(
        r.detail.contains("right after it answered us"),
        "{}",
        r.detail
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    c.answered(now("one.test"), Signal::Fine).await;
    tokio::time::sleep(told).await;
    let r = a.answered(now("two.test"), Signal::Refused(503)).await;
    assert!(
        r.is_some(),
        "a 503 after the hold while another worker had an answer: the limit's"
    );
}

/// With `rate_limit.ban_reaction = "0s"`, any answer since the hold rules a ban out, as
/// the `REFUSE` script reads it for every worker: a refused connection after it is the
/// site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_ban_reaction_an_answer_since_the_hold_rules_a_ban_out() {
    let mut s = settings(100.0, 10, 10);
    s.rate_limit.ban_reaction = Duration::ZERO;
    let r = refused_after_an_answer_after_the_hold(&s, "noreact").await;
    assert_eq!(r, None, "answered since the hold: no ban");
}

/// A shared server's backend dies: 503 on every host right after answers, held once.
/// After the hold it answers 503 still, and no worker has had an answer since: the
/// sites failing, for every worker, and no ban is taken to follow those 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_going_on_after_the_hold_is_the_sites_and_no_ban_follows_it() {
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "dead-a");
    let b = limiter(&s, Duration::from_secs(30), "dead-b");
    storm(&a, &b, Signal::Refused(503)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let now = |host| req(host, Duration::ZERO);
    assert!(
        b.answered(now("three.test"), Signal::Refused(503))
            .await
            .is_none(),
        "a 503 after the hold with no answer since is the site's"
    );
    // With no firewall's memory to outwait (`drop_memory` zero): the site's at once.
    let mut s = settings(100.0, 10, 10);
    s.rate_limit.drop_memory = Duration::ZERO;
    let a = limiter(&s, Duration::from_secs(30), "dead-c");
    let b = limiter(&s, Duration::from_secs(30), "dead-d");
    storm(&a, &b, Signal::Refused(503)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b
        .answered(now("three.test"), Signal::Refused(503))
        .await
        .is_none());
    assert!(
        a.answered(now("one.test"), Signal::ConnectionRefused)
            .await
            .is_none(),
        "the server restarting is no ban following the outage's 503s"
    );
}

/// A limit still counting an earlier burst from our address refuses every host before
/// any answer (review AE: a second run right after the first): such a storm of 503s,
/// closes or resets is held once for every worker; still failing after the hold, with
/// no answer ever, it is the sites' own (haproxy with a dead backend), and no ban is
/// taken to follow it. What a server gone gives (refused connections) is the sites' at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_before_any_answer_is_held_once_for_every_worker_then_the_sites() {
    let now = |host| req(host, Duration::ZERO);
    for signal in [Signal::Refused(503), Signal::Closed, Signal::Reset] {
        let s = settings(100.0, 10, 10);
        let a = limiter(&s, Duration::from_secs(30), "fresh-a");
        let b = limiter(&s, Duration::from_secs(30), "fresh-b");
        assert!(a.answered(now("one.test"), signal).await.is_none());
        let r = b
            .answered(now("two.test"), signal)
            .await
            .unwrap_or_else(|| panic!("{signal:?} from two hosts before any answer"));
        assert_eq!(r.level, 1, "{signal:?}");
        assert!(
            r.detail.contains("at once, before it answered us"),
            "{}",
            r.detail
        );
        assert!(
            refused(&a, Duration::from_millis(500)).await,
            "the IP is held"
        );
        // More of the same during the hold: the same storm (review AF: nginx's 444 on
        // every host, whose closes then read as a ban after the hold).
        let during = a.answered(now("four.test"), signal).await;
        assert_eq!(
            during.map(|r| r.level),
            Some(1),
            "{signal:?} during the hold"
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        for (host, next) in [("three.test", signal), ("one.test", Signal::Closed)] {
            assert!(
                b.answered(now(host), next).await.is_none(),
                "{signal:?}, then {next:?} after the hold with no answer ever: the sites'"
            );
        }
    }
    let s = settings(100.0, 10, 10);
    let a = limiter(&s, Duration::from_secs(30), "gone-a");
    for host in ["one.test", "two.test", "three.test"] {
        assert!(a
            .answered(now(host), Signal::ConnectionRefused)
            .await
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_jobs_line_up_one_interval_apart_across_workers() {
    let mut s = settings(1.0, 1, 100);
    s.rate_limit.max_defer = Duration::from_millis(3500);
    let (a, b) = (
        limiter(&s, Duration::from_secs(30), "line-a"),
        limiter(&s, Duration::from_secs(30), "line-b"),
    );
    let _ = go(&a, "line.test").await; // the next slot is 1 s away
    let mut waits = Vec::new();
    for l in [&a, &b, &a, &b, &a] {
        match l
            .acquire(req("line.test", Duration::from_millis(500)))
            .await
        {
            Grant::Defer(d) => waits.push((d.as_millis() + 500) / 1000),
            Grant::Go(_) | Grant::Paused(_) => panic!("should defer"),
        }
    }
    // Whichever worker defers it, each job is told a place of its own in the IP's line
    // (in seconds, rounded: Redis's clock runs on between the calls); one past
    // max_defer keeps none, and the next is told the same.
    assert_eq!(waits, [1, 2, 3, 4, 4]);
}

/// A job on its last deferral, told its IP is still busy, is answered, not deferred: it
/// takes no place, or the jobs after it would wait an interval for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_its_last_deferral_takes_no_place_in_the_line() {
    let s = settings(1.0, 1, 100);
    let a = limiter(&s, Duration::from_secs(30), "last");
    let _ = go(&a, "line.test").await; // the next slot is 1 s away
    let mut places = Vec::new();
    for line in [Line::Outside, Line::Last, Line::Outside] {
        let mut r = req("line.test", Duration::from_millis(500));
        r.line = line;
        match a.acquire(r).await {
            Grant::Defer(d) => places.push((d.as_millis() + 500) / 1000),
            Grant::Go(_) | Grant::Paused(_) => panic!("should defer"),
        }
    }
    // In seconds, rounded: the last-chance job is told the second place, which stays
    // free for the next job.
    assert_eq!(places, [1, 2, 2]);
}

/// A fresh job joins the IP's line whichever worker holds it, rather than take a slot
/// a place was given for; a line nobody comes back to (its jobs purged from a delay
/// queue, say) lapses after `LINE_GRACE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_job_joins_the_line_across_workers_until_the_line_lapses() {
    let mut s = settings(1.0, 1, 100);
    s.rate_limit.max_defer = Duration::from_secs(60);
    let (a, b) = (
        limiter(&s, Duration::from_secs(30), "join-a"),
        limiter(&s, Duration::from_secs(30), "join-b"),
    );
    let t0 = Instant::now();
    let _ = go(&a, "line.test").await; // the next slot is 1 s away
    for _ in 0..10 {
        let deferred = a
            .acquire(req("line.test", Duration::from_millis(500)))
            .await;
        assert!(matches!(deferred, Grant::Defer(_)));
    }
    let turn = |line: Line| {
        let mut r = req("line.test", Duration::from_millis(800));
        r.line = line;
        r
    };
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed())).await;
    // The IP's next slot is 0.4 s away, within the 0.8 s this job may wait, but ten
    // places wait before it: it is told the eleventh.
    match b.acquire(turn(Line::Fresh)).await {
        // (About 10 s ahead; at least 8 s however slow the calls before it were.)
        Grant::Defer(d) => assert!(d >= Duration::from_secs(8), "{d:?}"),
        Grant::Go(_) | Grant::Paused(_) => panic!("a fresh job went ahead of the line"),
    }
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(t0.elapsed())).await;
    // The first job back for its place goes.
    assert!(matches!(a.acquire(turn(Line::Placed)).await, Grant::Go(_)));
    // Nobody comes back for the other places: after LINE_GRACE (5 s) the line lapses,
    // and a fresh job goes.
    tokio::time::sleep(Duration::from_millis(7500).saturating_sub(t0.elapsed())).await;
    assert!(matches!(b.acquire(turn(Line::Fresh)).await, Grant::Go(_)));
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

// ---------------------------------------------------------------------------------------
// Through a Redis failure and back (issue 13): the fallback never adds to what Redis
// booked, and a worker back on Redis never adds to what another's fallback grants.
// ---------------------------------------------------------------------------------------

const FAILOVER_RATE: f64 = 4.0;
const FAILOVER_BURST: u32 = 2;

/// Rate 4/s, burst 2, fallback share 0.5 (two workers), on the Redis at `url`.
fn failover_settings(url: &str, prefix: &str) -> Settings {
    let text = format!(
        "[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}:\"\ntimeout = \"300ms\"\n\
         [rate_limit]\nfallback_share = 0.5\n[rate_limit.per_ip]\nrate = {FAILOVER_RATE}\n\
         burst = {FAILOVER_BURST}\nmax_inflight = 100\n"
    );
    Settings::from_toml(&text).expect("settings")
}

type Sends = std::sync::Arc<std::sync::Mutex<Vec<Instant>>>;

/// `n` requests through `l` at once; each records when it was let go.
fn send(
    l: &std::sync::Arc<RedisLimiter>,
    n: usize,
    sends: &Sends,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (l, sends) = (l.clone(), sends.clone());
            tokio::spawn(async move {
                let _permit = go(&l, "h.test").await;
                sends.lock().expect("sends").push(Instant::now());
            })
        })
        .collect()
}

/// The most sends in any window `[t, t + window)` starting at a send.
fn most_in(sends: &Sends, window: Duration) -> usize {
    let mut s = sends.lock().expect("sends").clone();
    s.sort();
    (0..s.len())
        .map(|i| {
            s[i..]
                .iter()
                .take_while(|x| x.duration_since(s[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn assert_within_the_limit(sends: &Sends, what: &str) {
    let mut all = sends.lock().expect("sends").clone();
    all.sort();
    let first = all[0];
    let ms: Vec<u128> = all
        .iter()
        .map(|t| t.duration_since(first).as_millis())
        .collect();
    eprintln!("{what}: sends at {ms:?} ms");
    for t in [0.5, 1.0, 2.0] {
        let limit = (f64::from(FAILOVER_BURST) + FAILOVER_RATE * t).floor() as usize;
        let most = most_in(sends, Duration::from_secs_f64(t));
        assert!(
            most <= limit,
            "{what}: {most} sends in {t} s (burst + rate*T = {limit})"
        );
    }
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.expect("a sender");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_dying_under_booked_slots_never_lets_a_fallback_add_to_them() {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    let s = failover_settings(redis.url(), &unique("fo"));
    let a = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), "fa"));
    let b = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), "fb"));
    let sends: Sends = Default::default();
    // b's last answer from Redis is old by the time Redis dies; a books six slots, the
    // last ones still ahead (their callers asleep) when it dies.
    join(send(&b, 1, &sends)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let booked = send(&a, 6, &sends);
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.stop();
    let mut fallback = send(&b, 3, &sends);
    fallback.extend(send(&a, 2, &sends));
    join(booked).await;
    join(fallback).await;
    assert_within_the_limit(&sends, "into the fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_on_redis_never_adds_to_another_still_on_its_fallback() {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    let prefix = unique("fo");
    let a = std::sync::Arc::new(limiter(
        &failover_settings(redis.url(), &prefix),
        Duration::from_secs(30),
        "ra",
    ));
    // b's Redis stays away (nothing listens on port 9): it limits on its fallback all
    // along, as a worker does whose client has not found the new primary yet.
    let b = std::sync::Arc::new(limiter(
        &failover_settings("redis://127.0.0.1:9/0", &prefix),
        Duration::from_secs(30),
        "rb",
    ));
    redis.stop();
    let sends: Sends = Default::default();
    join(send(&a, 1, &sends)).await;
    let restarted = tokio::task::spawn_blocking(move || {
        redis.start();
        redis
    });
    let redis = restarted.await.expect("restart");
    // a books again in Redis (its first try may meet the connection the restart broke).
    let tat = format!("{prefix}:limit:{{192.0.2.77}}:tat");
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the restarted Redis");
    let t = Instant::now();
    while redis::cmd("GET")
        .arg(&tat)
        .query_async::<Option<String>>(&mut conn)
        .await
        .expect("GET")
        .is_none()
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a never booked in Redis again"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        join(send(&a, 1, &sends)).await;
    }
    let mut both = send(&a, 5, &sends);
    both.extend(send(&b, 5, &sends));
    join(both).await;
    assert_within_the_limit(&sends, "back from the fallback");
    drop(redis);
}

/// A limiter on a Redis of its own: rates high enough never to wait, 4 in flight, and a
/// fallback share of 0.5 (2 in flight); named `worker`.
async fn in_flight_on_a_private_redis(
    worker: &str,
) -> (
    crate::support::RedisServer,
    Settings,
    std::sync::Arc<RedisLimiter>,
) {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    let text = format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\ntimeout = \"300ms\"\n\
         [rate_limit]\nfallback_share = 0.5\n[rate_limit.per_ip]\nrate = 1000.0\n\
         burst = 1000\nmax_inflight = 4\n",
        redis.url(),
        unique(worker)
    );
    let s = Settings::from_toml(&text).expect("settings");
    let a = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), worker));
    (redis, s, a)
}

/// Requests granted through Redis are still in flight when it dies: the fallback's
/// in-flight cap counts them, so this worker never has more in flight than it had, or
/// than its share, whichever is more (issue 13 left this open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_dying_under_requests_in_flight_never_lets_the_fallback_add_to_them() {
    let (redis, _, a) = in_flight_on_a_private_redis("fi").await;
    let mut old: Vec<Permit> = Vec::new();
    for _ in 0..4 {
        old.push(go(&a, "h.test").await);
    }
    redis.stop();
    // Three more, each in flight for as long as the test runs.
    let granted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let more: Vec<_> = (0..3)
        .map(|_| {
            let (a, granted) = (a.clone(), granted.clone());
            tokio::spawn(async move {
                if let Grant::Go(p) = a.acquire(req("h.test", Duration::from_secs(5))).await {
                    granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    drop(p);
                }
            })
        })
        .collect();
    let in_flight =
        |old: &Vec<Permit>| old.len() + granted.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(in_flight(&old), 4, "nothing added to the 4 in flight");
    // As the old requests end, the fallback lets new ones go up to the cap, never past.
    while let Some(p) = old.pop() {
        drop(p);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(in_flight(&old) <= 4, "{} in flight", in_flight(&old));
    }
    assert_eq!(
        granted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the fallback's share of 4 in flight, once the old requests ended"
    );
    for t in more {
        t.abort();
    }
}

/// Back on Redis after an outage, the requests the fallback granted hold no lease in
/// Redis: for the return window new requests also wait for a slot of the fallback's
/// cap, so this worker stays within its share while the others may still be on theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_back_on_redis_never_adds_to_what_its_fallback_has_in_flight() {
    let (redis, s, a) = in_flight_on_a_private_redis("ri").await;
    redis.stop();
    // The fallback's share of 4 in flight: 2, both held.
    let held = vec![go(&a, "h.test").await, go(&a, "h.test").await];
    let redis = tokio::task::spawn_blocking(move || {
        redis.start();
        redis
    })
    .await
    .expect("restart");
    // Back on Redis (through another IP: the first try may meet the broken connection).
    let elsewhere = |max_wait| Request {
        ip: "192.0.2.78".parse().expect("ip"),
        host: "other.test",
        egress: "direct",
        max_wait,
        max_pause: max_wait,
        line: picket::limit::Line::Outside,
        alone: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let booked = format!("{}limit:{{192.0.2.78}}:tat", s.redis.key_prefix);
        let _ = a.acquire(elsewhere(Duration::from_secs(1))).await;
        let mut conn = redis::Client::open(redis.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection");
        let in_redis: bool = redis::cmd("EXISTS")
            .arg(&booked)
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        if in_redis {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limiter never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let more = a.acquire(req("h.test", Duration::from_secs(1))).await;
    assert!(
        matches!(more, Grant::Defer(_)),
        "a third request in flight beside the fallback's two, at a share of 2"
    );
    drop(held);
    assert!(
        matches!(
            a.acquire(req("h.test", Duration::from_secs(1))).await,
            Grant::Go(_)
        ),
        "granted once the fallback's requests ended"
    );
}

/// `redis.timeout` is how long a call waits: a Redis that stalls for less (a fork for
/// BGSAVE on a big dataset, a slow script) is waited for, not given up on at the
/// client library's own 500 ms, which took the connection down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_call_waits_out_a_stall_shorter_than_redis_timeout() {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    let s = Settings::from_toml(&format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"3s\"\n",
        redis.url()
    ))
    .expect("settings");
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let mut conn = pool.get().await.expect("a connection");
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    // Another client keeps Redis busy for 1.2 s with a script (Redis runs one at a time).
    let url = redis.url().to_string();
    let stall = tokio::spawn(async move {
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut c = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .expect("stalling client");
        let busy = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                    repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - s > 1200000 \
                    return 1";
        let _: i64 = redis::cmd("EVAL")
            .arg(busy)
            .arg(0)
            .query_async(&mut c)
            .await
            .expect("busy");
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    let mut conn = pool.get().await.expect("the shared connection");
    let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    eprintln!(
        "PING during a 1.2 s stall: {pong:?} after {:?}",
        t.elapsed()
    );
    assert_eq!(
        pong.ok().as_deref(),
        Some("PONG"),
        "after {:?}",
        t.elapsed()
    );
    stall.await.expect("stall");
}

/// A request that waited for the IP's in-flight cap in Redis keeps that wait when Redis
/// fails under it and the fallback grants it: the prober moves the probe's deadline on
/// by the permit's wait, and a wait dropped here left the probe no time for the site
/// (`down/timeout`, "no time left", for a site never asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_before_redis_failed_is_kept_in_the_fallbacks_permit() {
    let (redis, _, a) = in_flight_on_a_private_redis("kw").await;
    // The cap of 4 in Redis, all held: the fifth polls.
    let held: Vec<Permit> = vec![
        go(&a, "h.test").await,
        go(&a, "h.test").await,
        go(&a, "h.test").await,
        go(&a, "h.test").await,
    ];
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.acquire(req("h.test", Duration::from_secs(10))).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    let permit = match waiter.await.expect("the waiter") {
        Grant::Go(p) => p,
        Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
    };
    assert!(
        permit.waited >= Duration::from_millis(1400),
        "waited {:?}, of which 1.5 s for the cap in Redis",
        permit.waited
    );
}

/// `n` requests through `l` at once; each records when it was let go and is in flight
/// for `held`, as a request to a site is, or is deferred.
fn send_held(
    l: &std::sync::Arc<RedisLimiter>,
    n: usize,
    sends: &Sends,
    held: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (l, sends) = (l.clone(), sends.clone());
            tokio::spawn(async move {
                // A request that would wait past its 30 s is deferred (sent nothing).
                if let Grant::Go(permit) = l.acquire(req("h.test", Duration::from_secs(30))).await {
                    sends.lock().expect("sends").push(Instant::now());
                    tokio::time::sleep(held).await;
                    drop(permit);
                }
            })
        })
        .collect()
}

/// Callers queued in a worker's fallback (for its in-flight cap) when Redis comes back
/// are not let go on the fallback's own schedule beside what Redis grants meanwhile:
/// two workers each granted their share locally and their bookings in Redis, and the
/// IP saw 8–9 requests in a second against a limit of 6 (an adversarial run with two
/// workers and `CLIENT PAUSE`; the Redis Cluster failover test's rare 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_in_the_fallback_when_redis_returns_keep_to_the_limit() {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    // The failover settings with an in-flight cap of 4 (2 on each fallback).
    let mut s = failover_settings(redis.url(), &unique("fq"));
    s.rate_limit.per_ip.max_inflight = 4;
    let a = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), "qa"));
    let b = std::sync::Arc::new(limiter(&s, Duration::from_secs(30), "qb"));
    let sends: Sends = Default::default();
    let held = Duration::from_millis(900);
    redis.stop();
    // A queue of about twelve seconds in each fallback (2 in flight, 2/s): it outlasts
    // the return window, in which Redis's grants wait behind it for a fallback slot.
    let mut queued = send_held(&a, 24, &sends, held);
    queued.extend(send_held(&b, 24, &sends, held));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let redis = tokio::task::spawn_blocking(move || {
        redis.start();
        redis
    })
    .await
    .expect("restart");
    // New requests book in Redis while the queues are still long.
    let mut fresh = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fresh.extend(send_held(&a, 1, &sends, held));
        fresh.extend(send_held(&b, 1, &sends, held));
    }
    join(queued).await;
    join(fresh).await;
    assert_within_the_limit(&sends, "queued in the fallback as Redis returned");
    drop(redis);
}

/// A Redis that loses its keys under requests in flight (restarted without
/// persistence, FLUSHALL, an eviction policy taking the in-flight set) forgot their
/// leases, and the IP's in-flight cap let as many again go beside them. The worker
/// still renewing them puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_a_redis_lost_under_requests_in_flight_are_put_back() {
    let (redis, s, _) = in_flight_on_a_private_redis("lost").await;
    // Short leases: renewed every 300 ms.
    let a = limiter(&s, Duration::from_millis(900), "lost");
    let held: Vec<Permit> = vec![
        go(&a, "h.test").await,
        go(&a, "h.test").await,
        go(&a, "h.test").await,
        go(&a, "h.test").await,
    ];
    flushall(redis.url()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        refused(&a, Duration::from_millis(500)).await,
        "a fifth request in flight beside four whose leases Redis lost"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !refused(&a, Duration::from_secs(2)).await,
        "the put-back leases are released with their requests"
    );
}

/// Empties the Redis at `url`, as an operator's `FLUSHALL` does.
async fn flushall(url: &str) {
    let mut admin = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .expect("FLUSHALL");
}

/// A booking made after Redis lost the in-flight set (an operator's FLUSHALL) makes the
/// set again before the renewal comes: the leases still running must be put back beside
/// it, or the IP gets its whole cap again on top of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lost_are_put_back_beside_a_booking_made_after_the_loss() {
    let (redis, s, _) = in_flight_on_a_private_redis("lostb").await;
    // Short leases: renewed every 300 ms.
    let a = limiter(&s, Duration::from_millis(900), "lostb");
    let b = limiter(&s, Duration::from_millis(900), "lostb-other");
    let mut held: Vec<Permit> = Vec::new();
    for _ in 0..4 {
        held.push(go(&a, "h.test").await);
    }
    flushall(redis.url()).await;
    // Before the renewal nobody knows of the loss: one more goes, into a new set.
    let _late = go(&b, "h.test").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        refused(&b, Duration::from_millis(500)).await,
        "a sixth request in flight beside five, four of whose leases Redis lost"
    );
    // Five in flight: one ending leaves the cap (4) still full.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refused(&b, Duration::from_millis(500)).await,
        "a fifth request in flight beside four"
    );
}

/// A Redis that takes the limiter's check for back but fails every booking (here an
/// ACL that lets its user write the `…:alive` keys and no other) must not send a
/// request round between the fallback and Redis until it is deferred: each trip
/// started its fallback later, and the fallback never granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_taking_the_check_for_back_but_no_booking_still_lets_the_fallback_grant() {
    let redis = tokio::task::spawn_blocking(crate::support::RedisServer::launch)
        .await
        .expect("launch")
        .expect("a private Redis");
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "half", "on", ">pw", "~*:alive", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = redis.url().replacen("redis://", "redis://half:pw@", 1);
    let s = failover_settings(&url, &unique("half"));
    let l = limiter(&s, Duration::from_secs(30), "half");
    let start = Instant::now();
    for i in 0..3 {
        match l.acquire(req("half.test", Duration::from_secs(10))).await {
            Grant::Go(_) => {}
            Grant::Defer(d) | Grant::Paused(d) => {
                panic!("request {i} deferred ({d:?}) after {:?}", start.elapsed())
            }
        }
    }
    println!("3 grants through the fallback in {:?}", start.elapsed());
}
