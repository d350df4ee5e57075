//! The in-memory limiter: per-key GCRA with reservations plus an in-flight semaphore.
//! Used by `picket check`, and by the worker while Redis is unavailable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::standing::{Backoff, Pace, Refusal, Signal, Standing};
use super::swept::Swept;
use super::{Grant, Hold, Limiter, Line, Permit, Request, Rules};
use crate::config::{Rate, RateLimitSettings};

struct KeyState {
    /// Theoretical arrival time of the next request (GCRA).
    tat: Instant,
    /// The arrival time after this limiter's own last grant (not a seed): how far ahead
    /// its callers are booked.
    granted_until: Instant,
    /// The IP's line of deferred jobs.
    line: Queue,
    inflight: Arc<Semaphore>,
    max_inflight: u32,
    /// Refusals, back-off and host holds.
    standing: Standing,
    /// Smoothed answer latency: the least spacing of requests.
    pace: Pace,
    /// The last slot granted while the IP was backed off (`Permit::at_our_pace`).
    backed_off_slot: Option<Instant>,
}

impl KeyState {
    /// A key first limited at `now`: nothing booked, no job in line.
    fn new(rate: Rate, now: Instant) -> KeyState {
        KeyState {
            tat: now,
            granted_until: now,
            line: Queue {
                last: now,
                start: now,
                seen: now,
            },
            inflight: Arc::new(Semaphore::new(rate.max_inflight as usize)),
            max_inflight: rate.max_inflight,
            standing: Standing::default(),
            pace: Pace::default(),
            backed_off_slot: None,
        }
    }
}

/// An IP's line of deferred jobs, as the `BOOK` script keeps it in `…:queue`.
struct Queue {
    /// The place given to the last job deferred: the next one is told a place one
    /// interval after it.
    last: Instant,
    /// The place of the line's first job.
    start: Instant,
    /// When a job back for its place last booked.
    seen: Instant,
}

impl Queue {
    /// Whether the line still waits for its jobs at `now`: its last place is ahead, and
    /// its jobs came back within `grace` of when they were due.
    fn live(&self, now: Instant, grace: Duration) -> bool {
        self.last > now && now <= self.start.max(self.seen) + grace
    }
}

/// A per-key GCRA plus in-flight cap held in memory, each rate scaled by `share`.
pub struct LocalLimiter {
    rules: Rules,
    share: f64,
    /// How an IP that refuses us is held.
    backoff: Backoff,
    state: Mutex<Swept<KeyState>>,
}

/// Entries kept before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Whether a key's entry is still needed at `now`: a slot booked ahead, a line of
/// deferred jobs, a request in flight, or a hold on the IP or one of its hosts (this
/// limiter is `picket check`'s, and the worker's while Redis is away: nothing else
/// keeps them then).
fn busy(s: &KeyState, now: Instant) -> bool {
    s.tat > now
        || s.line.last > now
        || s.inflight.available_permits() < s.max_inflight as usize
        || s.standing.holds(now)
}

impl LocalLimiter {
    /// A limiter with the full rates of `[rate_limit]`.
    pub fn new(settings: &RateLimitSettings) -> LocalLimiter {
        Self::with_share(settings, 1.0)
    }

    /// A limiter using `share` (0..=1) of every rate, burst and in-flight cap.
    pub(crate) fn with_share(settings: &RateLimitSettings, share: f64) -> LocalLimiter {
        LocalLimiter {
            rules: Rules::new(settings),
            share,
            backoff: Backoff::of(settings),
            state: Mutex::new(Swept::new(SWEEP_ABOVE)),
        }
    }

    /// `r` at this limiter's share (the fallback's rate, burst and in-flight cap).
    pub(crate) fn scaled(&self, r: Rate) -> Rate {
        Rate {
            rate: r.rate * self.share,
            burst: ((f64::from(r.burst) * self.share).floor() as u32).max(1),
            max_inflight: ((f64::from(r.max_inflight) * self.share).ceil() as u32).max(1),
        }
    }

    /// The in-flight semaphore of `key`, and how many of its permits a request takes:
    /// one, or all of them while the IP is backed off, so that it has one request in
    /// flight (any still out from before waited for): a connection limit (haproxy's
    /// `maxconn`, nginx's `limit_conn`) may be what refused us.
    fn slots(&self, key: &str, rate: Rate, now: Instant) -> (Arc<Semaphore>, u32) {
        let mut map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.entry(key, || KeyState::new(rate, now), |s| busy(s, now));
        let weight = if entry.standing.level() > 0 {
            entry.max_inflight
        } else {
            1
        };
        (entry.inflight.clone(), weight)
    }

    /// Runs `f` on the state of `req`'s key (made when missing).
    fn with_state<T>(
        &self,
        req: &Request<'_>,
        rate: Rate,
        now: Instant,
        f: impl FnOnce(&mut KeyState) -> T,
    ) -> T {
        let key = self.rules.key(req);
        let mut map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(&key, || KeyState::new(rate, now), |s| busy(s, now)))
    }

    /// One of `key`'s in-flight slots for a request the shared limiter granted, when
    /// one is free. While Redis works this limiter grants nothing itself; should Redis
    /// fail, the requests still in flight hold these slots, so the fallback adds to
    /// them only up to its own cap (this worker never has more in flight than it had
    /// at the switch, or than its share, whichever is more).
    pub(crate) fn shadow(&self, req: &Request<'_>, key: &str) -> Option<OwnedSemaphorePermit> {
        self.inflight(req, key).try_acquire_owned().ok()
    }

    /// One of `key`'s in-flight slots, waited for up to `wait`.
    pub(crate) async fn slot(
        &self,
        req: &Request<'_>,
        key: &str,
        wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let sem = self.inflight(req, key);
        tokio::time::timeout(wait, sem.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// The in-flight semaphore of `key` (`req`'s), at this limiter's share.
    fn inflight(&self, req: &Request<'_>, key: &str) -> Arc<Semaphore> {
        let rate = self.scaled(self.rules.rate_for(req));
        self.slots(key, rate, Instant::now()).0
    }

    /// Nothing for `req`'s key is granted before `horizon`: the shared limiter's
    /// fallback starts an IP after what may have gone through Redis just before.
    pub(crate) fn seed(&self, req: &Request<'_>, horizon: Instant) {
        let rate = self.scaled(self.rules.rate_for(req));
        let now = Instant::now();
        self.with_state(req, rate, now, |entry| entry.tat = entry.tat.max(horizon));
    }

    /// How far ahead of now this limiter has granted `req`'s key itself (seeds do not
    /// count): what the shared limiter carries back to Redis when it returns.
    pub(crate) fn booked_ahead(&self, req: &Request<'_>) -> Duration {
        let key = self.rules.key(req);
        let map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&key).map_or(Duration::ZERO, |s| {
            s.granted_until.saturating_duration_since(Instant::now())
        })
    }

    /// The longest hold on `req.host` now, with what is left of it: its own, or its IP's
    /// pause while several hosts are held (a pause they asked for).
    fn host_held(&self, req: &Request<'_>) -> Option<Hold> {
        let key = self.rules.key(req);
        let map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let host = req.host.to_ascii_lowercase();
        let standing = &map.get(&key)?.standing;
        let now = Instant::now();
        let own = standing.host_held(&host, now);
        let ip = standing.ip_pause_left(now).map(Hold::Asked);
        match (own, ip) {
            (Some(a), Some(b)) if b.pause() > a.pause() => Some(b),
            (a, b) => a.or(b),
        }
    }

    /// Books the next slot for `key` unless the wait would exceed `max_wait`, or the
    /// request is a fresh job's and a line of deferred jobs waits for the IP. The slot's
    /// time, and whether it is at our pace (`Permit::at_our_pace`).
    fn book(
        &self,
        key: &str,
        rate: Rate,
        now: Instant,
        max_wait: Duration,
        line: Line,
    ) -> Result<(Instant, bool), Duration> {
        let mut map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = map.get_mut(key) else {
            return Ok((now, false));
        };
        let spacing = super::Spacing::of(rate, entry.standing.level(), entry.pace.interval_ms());
        if spacing.paced {
            crate::metric::paced();
        }
        let (interval, rate) = (
            spacing.interval,
            Rate {
                burst: spacing.burst,
                ..rate
            },
        );
        let tat = entry.tat.max(now);
        let new_tat = tat + interval;
        // `burst` requests may be booked ahead of the steady rate.
        let allowed_at = new_tat
            .checked_sub(interval * rate.burst)
            .unwrap_or(now)
            .max(now);
        let wait = allowed_at - now;
        let grace = super::LINE_GRACE.max(interval * 2);
        let live = entry.line.live(now, grace);
        if wait > max_wait || (line == Line::Fresh && live) {
            let ahead = Ahead {
                wait,
                interval,
                live,
            };
            // A job on its last deferral is answered, not deferred: no place for it.
            let max_defer = if line == Line::Last {
                Duration::ZERO
            } else {
                self.rules.max_defer()
            };
            return Err(line_up(&mut entry.line, now, ahead, max_defer));
        }
        entry.tat = new_tat;
        entry.granted_until = new_tat;
        if matches!(line, Line::Placed | Line::Last) && live {
            entry.line.seen = now;
        }
        let mut at_our_pace = false;
        if entry.standing.level() > 0 {
            at_our_pace = entry.backed_off_slot.is_some_and(|last| {
                allowed_at.saturating_duration_since(last) < super::PACE_WINDOW
            });
            entry.backed_off_slot = Some(allowed_at);
        }
        Ok((allowed_at, at_our_pace))
    }
}

impl Limiter for LocalLimiter {
    fn hold<'a>(&'a self, req: Request<'a>, hold: Hold) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let rate = self.scaled(self.rules.rate_for(&req));
            let now = Instant::now();
            self.with_state(&req, rate, now, |entry| {
                let host = req.host.to_ascii_lowercase();
                if let Some(until) = entry.standing.hold_host(&host, hold, now) {
                    hold_ip(entry, rate, until);
                }
            });
        })
    }

    fn latency(&self, req: &Request<'_>, latency: Duration) {
        let rate = self.scaled(self.rules.rate_for(req));
        self.with_state(req, rate, Instant::now(), |entry| {
            entry.pace.observe(latency)
        });
    }

    fn level(&self, req: &Request<'_>) -> u32 {
        let rate = self.scaled(self.rules.rate_for(req));
        self.with_state(req, rate, Instant::now(), |entry| entry.standing.level())
    }

    fn quiet_after_hold(&self, req: &Request<'_>) -> bool {
        let rate = self.scaled(self.rules.rate_for(req));
        let now = Instant::now();
        self.with_state(req, rate, now, |entry| entry.standing.quiet_after_hold(now))
    }

    fn answered<'a>(&'a self, req: Request<'a>, signal: Signal) -> BoxFuture<'a, Option<Refusal>> {
        Box::pin(async move {
            let rate = self.scaled(self.rules.rate_for(&req));
            let now = Instant::now();
            self.with_state(&req, rate, now, |entry| {
                if signal == Signal::Fine {
                    entry.standing.fine(now);
                    entry.standing.answered_by(req.host);
                    return None;
                }
                if !signal.may_refuse(&entry.pace) {
                    return None;
                }
                let host = req.host.to_ascii_lowercase();
                let ip = super::canonical(req.ip).to_string();
                let refusal = entry
                    .standing
                    .refused(&host, signal, &ip, &self.backoff, now)?;
                if !refusal.hold.is_zero() {
                    // Asked again after the hold one at a time (no burst).
                    let one = Rate { burst: 1, ..rate };
                    hold_ip(entry, one, now + refusal.hold);
                }
                Some(refusal)
            })
        })
    }

    fn acquire<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Grant> {
        Box::pin(async move {
            let mut req = req;
            let mut before = Duration::ZERO;
            let mut may_miss = true;
            loop {
                let start = Instant::now();
                match self.take_a_slot(&mut req, may_miss).await {
                    Taken::Grant(Grant::Go(mut permit)) => {
                        permit.waited += before;
                        return Grant::Go(permit);
                    }
                    Taken::Grant(other) => return other,
                    taken @ (Taken::HoldBegan | Taken::Late) => {
                        may_miss &= !matches!(taken, Taken::Late);
                        let spent = start.elapsed();
                        before += spent;
                        req.max_wait = req.max_wait.saturating_sub(spent);
                    }
                }
            }
        })
    }
}

/// What one try for a slot came to.
enum Taken {
    /// The answer.
    Grant(Grant),
    /// A hold began while the request waited for the slot it had booked (the host's
    /// `Retry-After`, the IP's back-off after a refusal of us): the slot, booked before
    /// the hold, is given up and the request books again.
    HoldBegan,
    /// The request woke on its slot too late to send on it ([`super::woke_late`]): the
    /// slot is given up and the request books again.
    Late,
}

impl LocalLimiter {
    /// One try for a slot of `req`'s IP: a held host waits for its hold without taking
    /// its IP's slots (a pause it asked for only up to `max_pause`); then an in-flight
    /// slot, then the rate's, waited for; a hold that began meanwhile stands
    /// ([`Taken::HoldBegan`]), and a slot woken on too late is given up while
    /// `may_miss` ([`Taken::Late`]).
    async fn take_a_slot(&self, req: &mut Request<'_>, may_miss: bool) -> Taken {
        let hold = self.host_held(req);
        let held = hold.map_or(Duration::ZERO, Hold::pause);
        let longest = match hold {
            Some(Hold::Asked(_)) => req.max_pause.min(req.max_wait),
            _ => req.max_wait,
        };
        if held > longest {
            return Taken::Grant(Grant::Paused(held));
        }
        if !held.is_zero() {
            tokio::time::sleep(held).await;
            req.max_wait -= held;
        }
        let start = Instant::now();
        let rate = self.scaled(self.rules.rate_for(req));
        let key = self.rules.key(req);
        // The in-flight slot first: a rate slot is only booked when it can be used.
        let (sem, weight) = self.slots(&key, rate, start);
        let Some((slot, mut waited)) = in_flight_slot(sem, weight, req.max_wait).await else {
            return Taken::Grant(Grant::Defer(req.max_wait));
        };
        let left = req.max_wait.saturating_sub(start.elapsed());
        let booked = Instant::now();
        let (at, at_our_pace) = match self.book(&key, rate, booked, left, req.line) {
            Ok(slot) => slot,
            Err(wait) => return Taken::Grant(Grant::Defer(wait)),
        };
        if at > booked {
            tokio::time::sleep_until(at).await;
            waited += at - booked;
            if self.hold_began(req, &key) {
                return Taken::HoldBegan;
            }
            if may_miss && super::woke_late(at, self.rules.rate_for(req)) {
                return Taken::Late;
            }
        }
        let permit = Permit::holding(held + waited, Box::new(slot));
        Taken::Grant(Grant::Go(permit.paced(at_our_pace)))
    }

    /// Whether `req`'s host or its IP (`key`) is held now.
    fn hold_began(&self, req: &Request<'_>, key: &str) -> bool {
        let map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = map.get(key) else {
            return false;
        };
        let now = Instant::now();
        let host = req.host.to_ascii_lowercase();
        entry.standing.host_held(&host, now).is_some()
            || entry.standing.held(now)
            || entry.standing.ip_paused(now)
    }
}

/// `weight` permits of `sem`, waited for up to `max_wait`, with the time waited; `None`
/// when they did not come. Only real waiting is reported (metrics, the result's queue
/// time): a free slot costs nothing.
async fn in_flight_slot(
    sem: Arc<Semaphore>,
    weight: u32,
    max_wait: Duration,
) -> Option<(OwnedSemaphorePermit, Duration)> {
    if let Ok(slot) = sem.clone().try_acquire_many_owned(weight) {
        return Some((slot, Duration::ZERO));
    }
    let start = Instant::now();
    let slot = tokio::time::timeout(max_wait, sem.acquire_many_owned(weight))
        .await
        .ok()?
        .ok()?;
    Some((slot, start.elapsed()))
}

/// Where a deferred job's IP stands: its own next slot `wait` away, requests
/// `interval` apart, and whether a line of deferred jobs is live.
struct Ahead {
    wait: Duration,
    interval: Duration,
    live: bool,
}

/// The wait of a job deferred for an IP: a place in its `line` one interval after the
/// last deferred job's (or at the IP's next slot, if later or when no line is live, which
/// then starts one), kept only when it is no further than `max_defer` (a job told more is
/// answered, not deferred).
fn line_up(line: &mut Queue, now: Instant, ahead: Ahead, max_defer: Duration) -> Duration {
    let mut place = now + ahead.wait;
    if ahead.live {
        place = place.max(line.last + ahead.interval);
    }
    let wait = place.saturating_duration_since(now);
    if wait <= max_defer {
        if !ahead.live {
            line.start = place;
        }
        line.last = place;
    }
    wait
}

/// No request to `entry`'s IP before `until` (the next slot opens then, burst or not).
fn hold_ip(entry: &mut KeyState, rate: Rate, until: Instant) {
    let interval = Duration::from_secs_f64(1.0 / rate.rate);
    let tat = until + interval * rate.burst.saturating_sub(1);
    entry.tat = entry.tat.max(tat);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LimitScope, Rate};
    use std::net::IpAddr;

    fn settings(rate: f64, burst: u32, max_inflight: u32) -> RateLimitSettings {
        RateLimitSettings {
            per_ip: Rate {
                rate,
                burst,
                max_inflight,
            },
            scope: LimitScope::Target,
            max_wait: Duration::from_secs(30),
            max_defer: Duration::from_secs(600),
            fallback_share: 0.5,
            backoff: Duration::from_secs(15),
            limit_memory: Duration::from_secs(30),
            drop_memory: Duration::from_secs(60),
            ban_reaction: Duration::from_secs(10),
            overrides: vec![],
        }
    }

    fn req(ip: &str, max_wait: Duration) -> Request<'static> {
        Request {
            ip: ip.parse::<IpAddr>().expect("ip"),
            host: "h.test",
            egress: "direct",
            max_wait,
            max_pause: max_wait,
            line: crate::limit::Line::Outside,
            alone: None,
        }
    }

    async fn go(l: &LocalLimiter, ip: &str) -> Permit {
        match l.acquire(req(ip, Duration::from_secs(60))).await {
            Grant::Go(p) => p,
            Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
        }
    }

    /// A measurement, not a check (docs/BENCHMARKS.md, "Many IPs"): grants to 30 000
    /// IPs, each booked ahead (so none is idle), first grants of a fleet's worth of
    /// sites. Run with `cargo test --release --lib many_busy_ips -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    async fn measure_grants_to_many_busy_ips() {
        let l = LocalLimiter::new(&settings(0.01, 1, 4));
        let ips: Vec<String> = (0..30_000u32)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let start = std::time::Instant::now();
        for ip in &ips {
            drop(go(&l, ip).await);
        }
        let took = start.elapsed();
        println!(
            "30000 first grants, each IP booked ahead: {took:?}, {:?} a grant",
            took / 30_000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let l = LocalLimiter::new(&settings(2.0, 2, 100));
        let t0 = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            let _p = go(&l, "192.0.2.1").await;
            times.push(t0.elapsed().as_millis());
        }
        // two at once, then one every 500 ms
        assert_eq!(times, vec![0, 0, 500, 1000, 1500, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_real_waiting_is_reported() {
        let l = LocalLimiter::new(&settings(2.0, 1, 100));
        assert_eq!(go(&l, "192.0.2.1").await.waited, Duration::ZERO);
        assert_eq!(go(&l, "192.0.2.1").await.waited, Duration::from_millis(500));
        assert_eq!(go(&l, "192.0.2.2").await.waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn other_ips_are_not_held_back() {
        let l = LocalLimiter::new(&settings(1.0, 1, 100));
        for _ in 0..5 {
            let _ = go(&l, "192.0.2.1").await;
        }
        let t0 = Instant::now();
        let p = go(&l, "192.0.2.2").await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(p.waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn inflight_is_capped() {
        let l = Arc::new(LocalLimiter::new(&settings(1000.0, 1000, 2)));
        let a = go(&l, "192.0.2.1").await;
        let _b = go(&l, "192.0.2.1").await;
        let l2 = l.clone();
        let third = tokio::spawn(async move { go(&l2, "192.0.2.1").await.waited });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third request must wait for a slot");
        drop(a);
        let waited = third.await.expect("join");
        assert!(waited >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn long_waits_are_deferred_without_booking() {
        let l = LocalLimiter::new(&settings(1.0, 1, 100));
        let _ = go(&l, "192.0.2.1").await;
        let _ = go(&l, "192.0.2.1").await; // booked 1 s ahead
        match l
            .acquire(req("192.0.2.1", Duration::from_millis(500)))
            .await
        {
            Grant::Defer(d) => assert!(d > Duration::from_millis(500), "{d:?}"),
            Grant::Go(_) | Grant::Paused(_) => panic!("should defer"),
        }
        // the deferred request booked nothing: the next slot is still 2 s from start
        let t0 = Instant::now();
        let _ = go(&l, "192.0.2.1").await;
        assert!(t0.elapsed() <= Duration::from_millis(2000));
    }

    /// The deferral waits `max_wait` 500 ms gets from an IP at 1/s with one slot used.
    async fn deferrals(l: &LocalLimiter, n: usize) -> Vec<u128> {
        let mut waits = Vec::new();
        for _ in 0..n {
            match l
                .acquire(req("192.0.2.1", Duration::from_millis(500)))
                .await
            {
                Grant::Defer(d) => waits.push(d.as_millis()),
                Grant::Go(_) | Grant::Paused(_) => panic!("should defer"),
            }
        }
        waits
    }

    #[tokio::test(start_paused = true)]
    async fn deferred_requests_line_up_one_interval_apart() {
        let mut s = settings(1.0, 1, 100);
        s.max_defer = Duration::from_millis(3500);
        let l = LocalLimiter::new(&s);
        let _ = go(&l, "192.0.2.1").await; // the next slot is 1 s away
                                           // Each deferred job is told a slot of its own, so they come back spread at the
                                           // IP's rate instead of all at once (to be deferred again, and again). One that
                                           // would come back later than max_defer keeps no place: it is answered, not
                                           // deferred, and the next is told the same.
        assert_eq!(deferrals(&l, 5).await, [1000, 2000, 3000, 4000, 4000]);
        // The line holds no slot of the IP: 1.5 s later, before any deferred job is
        // back, a request that finds the IP free goes at once; the next one is deferred
        // behind the line, which is 1.5 s shorter now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let t0 = Instant::now();
        let _ = go(&l, "192.0.2.1").await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(deferrals(&l, 1).await, [2500]);
    }

    /// What `line`'s request for 192.0.2.1, allowed 500 ms of waiting, is granted: the
    /// wait it went after, or `Err` with the deferral's.
    async fn turn(l: &LocalLimiter, line: Line) -> Result<u128, u128> {
        let mut r = req("192.0.2.1", Duration::from_millis(500));
        r.line = line;
        let t0 = Instant::now();
        match l.acquire(r).await {
            Grant::Go(_) => Ok(t0.elapsed().as_millis()),
            Grant::Defer(d) | Grant::Paused(d) => Err(d.as_millis()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_job_joins_a_live_line_and_a_line_nobody_comes_back_to_lapses() {
        let mut s = settings(1.0, 1, 100);
        s.max_defer = Duration::from_secs(60);
        let l = LocalLimiter::new(&s);
        let _ = go(&l, "192.0.2.1").await; // the next slot is 1 s away
        assert_eq!(deferrals(&l, 20).await.last(), Some(&20_000));
        // 0.6 s later the IP's next slot is 0.4 s away, within max_wait: a request
        // outside the line would take it, but a fresh job joins the line's end.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(turn(&l, Line::Fresh).await, Err(20_400));
        // The first job back for its place goes, and keeps the line live.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(turn(&l, Line::Placed).await, Ok(0));
        tokio::time::sleep(Duration::from_millis(4900)).await;
        assert!(turn(&l, Line::Fresh).await.is_err(), "still live");
        // Nobody came back for the places since: 5 s (LINE_GRACE) after the last one
        // did, the line lapses (its jobs were purged, say), and a fresh job goes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(turn(&l, Line::Fresh).await, Ok(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_on_its_last_deferral_takes_no_place_in_the_line() {
        let l = LocalLimiter::new(&settings(1.0, 1, 100));
        let _ = go(&l, "192.0.2.1").await; // the next slot is 1 s away
        assert_eq!(deferrals(&l, 2).await, [1000, 2000]);
        // Told the IP is busy, it is answered, not deferred: a place given to it would
        // stay empty, and every job after it would wait an interval for nothing.
        assert!(turn(&l, Line::Last).await.is_err());
        assert_eq!(deferrals(&l, 1).await, [3000]);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_pauses_only_that_ip() {
        let l = LocalLimiter::new(&settings(10.0, 5, 100));
        l.hold(
            req("192.0.2.1", Duration::from_secs(60)),
            Hold::Asked(Duration::from_secs(3)),
        )
        .await;
        let t0 = Instant::now();
        let _ = go(&l, "192.0.2.2").await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "other IPs go on");
        let _ = go(&l, "192.0.2.1").await;
        assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_seeded_horizon_is_not_granted_twice() {
        // Redis had booked the IP 1 s ahead when it went away: the fallback (2/s, burst
        // 1 at share 0.5) grants its first slot then, not at once.
        let l = LocalLimiter::with_share(&settings(4.0, 2, 100), 0.5);
        let r = req("192.0.2.1", Duration::from_secs(60));
        let t0 = Instant::now();
        l.seed(&r, t0 + Duration::from_secs(1));
        assert_eq!(
            l.booked_ahead(&r),
            Duration::ZERO,
            "a seed is not ours to carry"
        );
        let _ = go(&l, "192.0.2.1").await;
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(l.booked_ahead(&r), Duration::from_millis(500));
        let _ = go(&l, "192.0.2.1").await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1500));
        // A horizon behind the local one changes nothing; other IPs are not held.
        l.seed(&r, t0);
        assert_eq!(l.booked_ahead(&r), Duration::from_millis(500));
        let _ = go(&l, "192.0.2.2").await;
        assert_eq!(t0.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn share_scales_the_rate() {
        let l = LocalLimiter::with_share(&settings(4.0, 4, 100), 0.5);
        let t0 = Instant::now();
        for _ in 0..4 {
            let _ = go(&l, "192.0.2.1").await;
        }
        // burst 2 at once, then 2/s
        assert_eq!(t0.elapsed().as_millis(), 1000);
    }
}

/// The default limits against the defences' own arithmetic (docs/POLITENESS.md): the
/// schedule the limiter grants, with every arrival moved by up to `JITTER` either way
/// (network, scheduler), must never give mod_evasive's defaults three requests for one
/// path within one calendar second, nor an nginx `limit_req rate=2r/s` (no burst) two
/// requests less than 500 ms apart.
#[cfg(test)]
mod defaults_against_defences {
    use super::*;
    use crate::config::Settings;
    use std::net::IpAddr;

    /// How far the network and the scheduler may move one arrival, either way.
    const JITTER: Duration = Duration::from_millis(200);

    /// Grant times of `n` requests to one IP under the default limits, from `t0`.
    async fn schedule(l: &LocalLimiter, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            let req = Request {
                ip: "192.0.2.1".parse::<IpAddr>().expect("ip"),
                host: "county.test",
                egress: "direct",
                max_wait: Duration::from_secs(600),
                max_pause: Duration::from_secs(600),
                line: crate::limit::Line::Outside,
                alone: None,
            };
            match l.acquire(req).await {
                Grant::Go(_) => times.push(t0.elapsed()),
                Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
            }
        }
        times
    }

    fn assert_safe(times: &[Duration], what: &str) {
        for w in times.windows(2) {
            // nginx limit_req 2r/s, no burst: 500 ms between accepted requests.
            let gap = (w[1] - w[0]).saturating_sub(JITTER * 2);
            assert!(
                gap >= Duration::from_millis(500),
                "{what}: {:?} then {:?} can reach nginx < 500 ms apart",
                w[0],
                w[1]
            );
        }
        for w in times.windows(3) {
            // mod_evasive DOSPageCount 2: a third hit within one calendar second is
            // refused, whatever the phase of the second.
            let span = (w[2] - w[0]).saturating_sub(JITTER * 2);
            assert!(
                span >= Duration::from_secs(1),
                "{what}: {:?}, {:?}, {:?} can fall into one calendar second",
                w[0],
                w[1],
                w[2]
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_schedule_trips_mod_evasive_or_nginx_2rs() {
        let s = Settings::from_toml("").expect("defaults");
        let l = LocalLimiter::new(&s.rate_limit);
        // A round with a full bucket, then another right away (empty bucket), then one
        // after a pause long enough to refill it.
        let first = schedule(&l, 6).await;
        assert_safe(&first, "full bucket");
        let second = schedule(&l, 6).await;
        assert_safe(&second, "empty bucket");
        tokio::time::sleep(Duration::from_secs(30)).await;
        let third = schedule(&l, 6).await;
        assert_safe(&third, "after a pause");
    }
}

/// Issue 11 item 12: a `Retry-After` from one host holds that host, not its neighbours.
#[cfg(test)]
mod retry_after_per_host {
    use super::*;
    use crate::config::Settings;

    fn on(host: &'static str) -> Request<'static> {
        Request {
            ip: "192.0.2.1".parse().expect("ip"),
            host,
            egress: "direct",
            max_wait: Duration::from_secs(60),
            max_pause: Duration::from_secs(60),
            line: crate::limit::Line::Outside,
            alone: None,
        }
    }

    fn limiter() -> LocalLimiter {
        let mut s = Settings::from_toml("").expect("defaults");
        s.rate_limit.per_ip.rate = 10.0;
        s.rate_limit.per_ip.burst = 5;
        LocalLimiter::new(&s.rate_limit)
    }

    async fn go(l: &LocalLimiter, host: &'static str) {
        assert!(matches!(l.acquire(on(host)).await, Grant::Go(_)));
    }

    /// `grant` is a grant that came `secs` after `t0` or later, and says it waited so.
    fn granted_after_waiting(grant: Grant, t0: Instant, secs: u64) {
        let Grant::Go(permit) = grant else {
            panic!("a grant after waiting");
        };
        let least = Duration::from_secs(secs);
        assert!(t0.elapsed() >= least, "{:?}", t0.elapsed());
        assert!(permit.waited >= least, "{:?}", permit.waited);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_host_not_its_neighbours() {
        let l = limiter();
        l.hold(on("busy.test"), Hold::Asked(Duration::from_secs(3)))
            .await;
        let t0 = Instant::now();
        go(&l, "quiet.test").await;
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "a neighbour on the IP goes on"
        );
        // Waiting out the host's pause is not the site's time: it is told as waited,
        // so the probe's deadline moves with it.
        granted_after_waiting(l.acquire(on("busy.test")).await, t0, 3);
    }

    /// A host's `Retry-After` kept by this limiter (`picket check`, and the worker's
    /// fallback while Redis is away, where nothing else keeps it) holds however many
    /// other IPs are asked meanwhile: the sweep of idle keys took an entry holding
    /// only a host's hold for idle, and the host was asked again at once.
    #[tokio::test(start_paused = true)]
    async fn a_host_hold_outlives_a_sweep_of_idle_keys() {
        let l = limiter();
        l.hold(on("throttling.test"), Hold::Asked(Duration::from_secs(120)))
            .await;
        for i in 0..=SWEEP_ABOVE as u32 {
            let other = Request {
                ip: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)
                    .parse()
                    .expect("ip"),
                ..on("other.test")
            };
            assert!(matches!(l.acquire(other).await, Grant::Go(_)));
        }
        let short = Request {
            max_wait: Duration::from_secs(30),
            ..on("throttling.test")
        };
        match l.acquire(short).await {
            Grant::Paused(left) => assert!(left > Duration::from_secs(119), "{left:?}"),
            Grant::Go(_) => panic!("sent to a host that asked for a pause (its hold was swept)"),
            Grant::Defer(d) => panic!("deferred {d:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_wait_answers_at_once_without_booking() {
        let l = limiter();
        l.hold(on("throttling.test"), Hold::Asked(Duration::from_secs(120)))
            .await;
        let t0 = Instant::now();
        let short = Request {
            max_wait: Duration::from_secs(30),
            ..on("throttling.test")
        };
        match l.acquire(short).await {
            Grant::Paused(left) => assert!(left > Duration::from_secs(119), "{left:?}"),
            Grant::Go(_) => panic!("sent to a host that asked for a pause"),
            Grant::Defer(d) => panic!("deferred {d:?}: the site asked, not our rate"),
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "answered at once");
        go(&l, "neighbour.test").await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "nothing of the IP was booked");
    }

    /// `picket check` may not wait out a site's long pause (`max_pause`, the probe's
    /// time), but waits for a hold of ours like for the rate: a check of a host held
    /// after a burst is still asked once the hold ends.
    #[tokio::test(start_paused = true)]
    async fn only_a_pause_the_host_asked_for_is_bounded_by_max_pause() {
        let l = limiter();
        let check = |host| Request {
            max_pause: Duration::from_secs(1),
            ..on(host)
        };
        l.hold(on("asked.test"), Hold::Asked(Duration::from_secs(3)))
            .await;
        l.hold(on("ours.test"), Hold::Ours(Duration::from_secs(3)))
            .await;
        let t0 = Instant::now();
        assert!(matches!(
            l.acquire(check("asked.test")).await,
            Grant::Paused(_)
        ));
        assert_eq!(t0.elapsed(), Duration::ZERO, "answered at once");
        granted_after_waiting(l.acquire(check("ours.test")).await, t0, 3);
    }

    /// A slot booked before several hosts of its IP asked for a pause is not used
    /// when it comes: the IP's pause stands for a request that was already waiting.
    #[tokio::test(start_paused = true)]
    async fn an_ip_paused_while_a_request_waits_for_its_slot_holds_it_too() {
        let mut s = Settings::from_toml("").expect("defaults");
        s.rate_limit.per_ip.rate = 1.0;
        s.rate_limit.per_ip.burst = 1;
        let l = std::sync::Arc::new(LocalLimiter::new(&s.rate_limit));
        go(&l, "c.test").await;
        let waiting = tokio::spawn({
            let l = l.clone();
            async move {
                let t0 = Instant::now();
                let Grant::Go(_) = l.acquire(on("c.test")).await else {
                    panic!("a grant within max_wait");
                };
                t0.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        l.hold(on("a.test"), Hold::Asked(Duration::from_secs(3)))
            .await;
        l.hold(on("b.test"), Hold::Asked(Duration::from_secs(3)))
            .await;
        let waited = waiting.await.expect("the waiting request");
        assert!(waited >= Duration::from_millis(3200), "{waited:?}");
    }

    /// An IP paused because several of its hosts asked for long pauses is such a pause
    /// for its other hosts too: `picket check` answers at once rather than wait it out.
    #[tokio::test(start_paused = true)]
    async fn a_long_ip_pause_is_bounded_by_max_pause() {
        let l = limiter();
        l.hold(on("a.test"), Hold::Asked(Duration::from_secs(120)))
            .await;
        l.hold(on("b.test"), Hold::Asked(Duration::from_secs(120)))
            .await;
        let t0 = Instant::now();
        let check = Request {
            max_wait: Duration::from_secs(600),
            max_pause: Duration::from_secs(5),
            ..on("c.test")
        };
        assert!(matches!(l.acquire(check).await, Grant::Paused(_)));
        assert_eq!(t0.elapsed(), Duration::ZERO, "answered at once");
    }

    #[tokio::test(start_paused = true)]
    async fn several_hosts_saying_retry_after_hold_the_ip() {
        let l = limiter();
        l.hold(on("a.test"), Hold::Asked(Duration::from_secs(3)))
            .await;
        l.hold(on("b.test"), Hold::Asked(Duration::from_secs(5)))
            .await;
        let t0 = Instant::now();
        go(&l, "c.test").await;
        assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_storm_holds_the_ip_then_halves_its_rate() {
        let l = limiter();
        l.answered(on("a.test"), Signal::Fine).await;
        assert!(l
            .answered(on("a.test"), Signal::Refused(403))
            .await
            .is_none());
        let r = l
            .answered(on("b.test"), Signal::Refused(403))
            .await
            .expect("two hosts refusing right after an answer");
        assert_eq!((r.hold, r.level), (Duration::from_secs(15), 1));
        let t0 = Instant::now();
        let first = permit(&l, "c.test").await;
        assert_eq!(t0.elapsed(), Duration::from_secs(15));
        assert!(!first.at_our_pace, "the first after the hold goes alone");
        drop(first);
        // Then 5/s instead of 10/s, one at a time: each right behind the one before.
        let second = permit(&l, "c.test").await;
        assert_eq!(t0.elapsed(), Duration::from_millis(15_200));
        assert!(second.at_our_pace);
        drop(second);
        tokio::time::sleep(crate::limit::PACE_WINDOW).await;
        assert!(
            !permit(&l, "c.test").await.at_our_pace,
            "a second later: alone"
        );
    }

    /// Whether the IP's hold is over with nothing answered since, which the question
    /// to a neighbour asks before the limiter reads a close: not with no hold, nor
    /// during it (the burst's requests still coming back), nor once an answer came.
    #[tokio::test(start_paused = true)]
    async fn an_ip_is_quiet_after_its_hold_until_an_answer_comes() {
        let l = limiter();
        assert!(!l.quiet_after_hold(&on("a.test")), "no hold");
        l.answered(on("a.test"), Signal::Fine).await;
        let _ = l.answered(on("a.test"), Signal::Refused(403)).await;
        let storm = l.answered(on("b.test"), Signal::Refused(403)).await;
        assert!(storm.is_some(), "two hosts refusing right after an answer");
        assert!(!l.quiet_after_hold(&on("c.test")), "during the hold");
        drop(permit(&l, "c.test").await);
        assert!(l.quiet_after_hold(&on("c.test")), "no answer since");
        l.answered(on("c.test"), Signal::Fine).await;
        assert!(
            !l.quiet_after_hold(&on("d.test")),
            "answered after the hold"
        );
    }

    /// A grant for `host`, kept.
    async fn permit(l: &LocalLimiter, host: &'static str) -> Permit {
        match l.acquire(on(host)).await {
            Grant::Go(p) => p,
            Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
        }
    }

    /// After a refusal of us (haproxy's `maxconn 1` answering 503 from its queue, a
    /// `limit_conn`) the IP gets one request at a time: no burst, and one in flight,
    /// whatever `max_inflight` says; one sent before the refusal counts too.
    #[tokio::test(start_paused = true)]
    async fn a_backed_off_ip_has_one_request_in_flight() {
        let l = Arc::new(limiter());
        let before = permit(&l, "a.test").await;
        l.answered(on("a.test"), Signal::Fine).await;
        let _ = l.answered(on("a.test"), Signal::Refused(503)).await;
        let r = l
            .answered(on("b.test"), Signal::Refused(503))
            .await
            .expect("two hosts refusing right after an answer");
        assert_eq!(r.level, 1);
        let l2 = l.clone();
        let first = tokio::spawn(async move { permit(&l2, "c.test").await });
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert!(
            !first.is_finished(),
            "a request went while one sent before the refusal was in flight"
        );
        drop(before);
        let first = first.await.expect("join");
        let l2 = l.clone();
        let second = tokio::spawn(async move { permit(&l2, "d.test").await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !second.is_finished(),
            "a second request went while the first was in flight (max_inflight {})",
            l.rules.rate_for(&on("d.test")).max_inflight
        );
        drop(first);
        let _second = second.await.expect("join");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_left_unanswered_are_a_refusal_only_where_answers_were_quick() {
        let dropped = Signal::Unanswered(Duration::from_secs(30));
        // haproxy's silent-drop: the IP answered at once, then leaves two hosts hanging.
        let l = limiter();
        l.answered(on("a.test"), Signal::Fine).await;
        assert!(l.answered(on("a.test"), dropped).await.is_none());
        assert!(l.answered(on("b.test"), dropped).await.is_some());
        // An overloaded server: its answers took 5 s, then two hosts time out.
        let l = limiter();
        for _ in 0..10 {
            l.latency(&on("a.test"), Duration::from_secs(5));
        }
        l.answered(on("a.test"), Signal::Fine).await;
        assert!(l.answered(on("a.test"), dropped).await.is_none());
        assert!(l.answered(on("b.test"), dropped).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_space_requests_further() {
        let l = limiter();
        for _ in 0..10 {
            l.latency(&on("slow.test"), Duration::from_secs(3));
        }
        go(&l, "a.test").await;
        let t0 = Instant::now();
        go(&l, "b.test").await;
        go(&l, "c.test").await;
        // 10/s with a burst of 5 would let both go at once; the IP answers in ~3 s.
        assert!(
            t0.elapsed() >= Duration::from_millis(5600),
            "{:?}",
            t0.elapsed()
        );
    }
}
