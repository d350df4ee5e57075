//! The shared limiter in Redis: every worker books its requests to an IP in the same
//! keys, so N workers together never exceed the IP's rate, burst and in-flight cap, and
//! a refusal of us seen by one worker holds the IP for all (`limit::standing`).
//!
//! Each step is one Lua script (`limit::scripts`, EVALSHA, reloaded on NOSCRIPT by
//! redis-rs) on Redis's own clock: booking drops expired in-flight leases, checks a
//! host's `Retry-After` hold, the cap and the IP's back-off, books the next GCRA slot
//! and takes a short lease that this worker renews while the request waits and runs
//! (`limit::lease`). The keys of an IP carry the same `{hash tag}`, so the scripts work
//! on Redis Cluster too.
//!
//! When Redis fails, requests go through a [`LocalLimiter`] at `fallback_share` of the
//! rates; Redis is tried again after a pause and the shared limit resumes by itself.
//! Through the switch each IP keeps to its limit: the fallback starts an IP a burst
//! after the failure, and callers asleep on Redis slots queue in it instead of sending
//! beside the other workers' fallbacks; requests granted through Redis and still in
//! flight hold slots of the fallback's in-flight cap ([`LocalLimiter::shadow`]), so it
//! adds to them only up to its share; coming back, each booking carries the
//! fallback's own horizon into Redis (a new primary may also have lost the last writes)
//! and, for a while, books only the fallback share, as other workers may still be on
//! theirs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::lease::{Lease, Releaser};
use super::standing::{self, Backoff, Pace, Refusal, Signal};
use super::swept::Swept;
use super::{scripts, Grant, Hold, Limiter, Line, LocalLimiter, Permit, Request, Rules};
use crate::config::{Rate, RateLimitSettings, RedisSettings};
use crate::metric;
use crate::redis_pool::RedisPool;

/// How long Redis is left alone after a failure before one call tries it again. Short:
/// once Redis is back, a worker still resting on its fallback grants its share on top
/// of what the others already book in Redis. One call tries at a time, so a Redis that
/// hangs costs one caller a timeout per try, not every caller.
const RETRY_REDIS_AFTER: Duration = Duration::from_millis(250);

/// How long a worker back on Redis still books at its fallback share. The other workers
/// find Redis back on their own next try (a rest, a call, their client finding the new
/// primary), and until then their fallbacks grant their shares beside it: booking only
/// its own share meanwhile keeps the sum within the limit. A few seconds at half speed
/// after a failover cost little.
const RETURN_WINDOW: Duration = Duration::from_secs(5);

/// How much later than a burst after the switch a fallback starts an IP, beyond
/// `redis.timeout`: the workers find a failure at their own next calls, which may fail
/// at once (a refused connection) or only after the timeout (a cluster client retrying
/// a dead node), and a caller of a worker that has not yet found it still sends on its
/// Redis slot meanwhile. A busy worker calls Redis many times a second.
const FALLBACK_MARGIN: Duration = Duration::from_millis(250);

/// Bounds the pause a fallback adds when it starts an IP (a burst of intervals, which a
/// deep back-off could make huge): past an hour it would only keep an instant sum from
/// overflowing.
const AN_HOUR: Duration = Duration::from_secs(3600);

/// Keys whose local view is kept before old ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// The `REFUSE` script's `by` for a host refusing again after a hold while its IP
/// answers (`standing::again_while_answering`).
const AGAIN: i64 = -2;
/// The `REFUSE` script's `by` for a host known failing: its refusal is its own.
const FAILING: i64 = -3;
/// The `REFUSE` script's `by` for a storm before any answer lately
/// (`standing::describe_unanswered`).
const UNANSWERED: i64 = -4;
/// Hosts remembered as refusing again ([`RedisLimiter::mend`]).
const MAX_REFUSING_AGAIN: usize = 256;

/// What this worker saw of one limit key: its last answer, and the back-off level the
/// last booking reported (so answers know to ask Redis to decay it).
#[derive(Debug, Clone, Copy)]
struct View {
    last_ok: Option<Instant>,
    level: i64,
    decay_asked: Option<Instant>,
    pace: Pace,
    /// The fallback episode this key's fallback was last started for.
    seeded: u64,
    /// When a Redis call for this key last failed, and last answered: on a Redis
    /// Cluster its node may be down while others answer, so a slot booked for it
    /// before is judged by these ([`RedisLimiter::take`]).
    fell: Option<Instant>,
    answered: Option<Instant>,
    /// When the last hold this worker was told of ends: whether the IP answered since
    /// ([`Limiter::quiet_after_hold`]) is read locally, against `last_ok`.
    held_until: Option<Instant>,
    /// When an answer was last told to Redis ([`scripts::ANSWERED`]).
    told: Option<Instant>,
}

/// Answers from an IP not backed off are told to Redis at most this often by one
/// worker: before a storm, every worker's `REFUSE` needs only that the IP answered
/// lately ([`standing::OK_WINDOW`]), and a worker sending many requests to one IP need
/// not write for each. While it is backed off or held, every answer is told.
const TELL_EVERY: Duration = Duration::from_secs(1);

impl View {
    /// Whether a Redis call for this key failed at or after `since` and none has
    /// answered since.
    fn failing_since(&self, since: Instant) -> bool {
        self.fell
            .is_some_and(|f| f >= since && self.answered.is_none_or(|a| a < f))
    }
}

/// A slot of the fallback's in-flight cap held beside a Redis lease, and how long it
/// was waited for.
struct Shadow {
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    waited: Duration,
}

/// What one booking attempt answered ([`scripts::BOOK`]'s codes, read once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Booking {
    /// A slot, usable after `wait`; the IP's back-off level; whether the host refused
    /// again after holds (an answer from it then mends it); whether the slot is at our
    /// pace (`Permit::at_our_pace`); the requests to the IP out beside it, any
    /// worker's (`Permit::beside`); where it left the IP's schedule (`Permit::booked`).
    Booked {
        wait: Duration,
        level: i64,
        again: bool,
        paced: bool,
        beside: u32,
        booked: u64,
    },
    /// Nothing booked: the rate allows no slot within the wait; the job's place in
    /// the IP's line of deferred jobs is this far ahead.
    TooLong(Duration),
    /// Nothing booked: the host's `Retry-After` holds it this much longer, more than
    /// the request may wait.
    Paused(Duration),
    /// Nothing booked: the host's `Retry-After` holds it this much longer; ask again
    /// then.
    HostHeld(Duration),
    /// Nothing booked: the IP's in-flight cap is reached.
    Full,
}

impl Booking {
    /// The script's answer: (code, wait ms, back-off level, refusing again, paced,
    /// out beside, booked µs), the last two only when booked.
    fn of(answer: Vec<i64>) -> Booking {
        let at = |i: usize| answer.get(i).copied().unwrap_or(0);
        let (code, level) = (at(0), at(2));
        let wait = Duration::from_millis(at(1).max(0).unsigned_abs());
        match code {
            1 => Booking::Booked {
                wait,
                level,
                again: at(3) == 1,
                paced: at(4) == 1,
                beside: u32::try_from(at(5)).unwrap_or(0),
                booked: at(6).max(0).unsigned_abs(),
            },
            -1 => Booking::TooLong(wait),
            -2 => Booking::Paused(wait),
            2 => Booking::HostHeld(wait.max(Duration::from_millis(1))),
            _ => Booking::Full,
        }
    }
}

/// When this worker last switched to its fallback and back.
#[derive(Debug, Default, Clone, Copy)]
struct Switches {
    /// Counts the switches to the fallback; each key is started once per episode.
    episode: u64,
    fell: Option<Instant>,
    returned: Option<Instant>,
}

/// What the arrival time's two forms (stored to the µs, told to the caller rounded
/// down) may differ by, µs; any booking moves it on by a whole interval.
const BOOKED_SLACK_US: f64 = 2.0;

/// The per-IP limiter shared by all workers through Redis.
pub struct RedisLimiter {
    pool: RedisPool,
    prefix: String,
    rules: Rules,
    script: redis::Script,
    lease: Duration,
    timeout: Duration,
    /// How an IP that refused us is held (`[rate_limit]`'s `backoff`, `limit_memory`,
    /// `drop_memory` and `ban_reaction`).
    backoff: Backoff,
    fallback: LocalLimiter,
    down_until: Mutex<Option<Instant>>,
    in_fallback: AtomicBool,
    switches: Mutex<Switches>,
    next_lease: AtomicU64,
    lease_prefix: String,
    releaser: Releaser,
    views: Mutex<Swept<View>>,
    /// Hosts this worker saw refusing again after holds, as `(key, host)`, the newest
    /// last: an answer from one mends it in Redis ([`scripts::MENDED`]).
    refusing_again: Mutex<Vec<(String, String)>>,
    /// Told when Redis answers again: callers waiting in the fallback go back to it.
    back: tokio::sync::Notify,
}

/// Distinguishes limiters of one process (tests run several).
static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A lease id prefix no other worker uses, even one with the same name: the name, the
/// process, this limiter and the time it was made.
fn lease_prefix(worker: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{worker}-{}-{}-{nanos:x}",
        std::process::id(),
        INSTANCE.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisLimiter {
    /// A limiter over `pool`. `lease` is how long an in-flight slot lasts without
    /// renewal (this worker renews its leases every third of it while they are in use).
    pub fn new(
        pool: RedisPool,
        redis: &RedisSettings,
        settings: &RateLimitSettings,
        lease: Duration,
        worker: &str,
    ) -> RedisLimiter {
        RedisLimiter {
            pool: pool.clone(),
            prefix: redis.key_prefix.clone(),
            rules: Rules::new(settings),
            script: redis::Script::new(scripts::BOOK),
            lease,
            timeout: redis.timeout,
            backoff: Backoff::of(settings),
            fallback: LocalLimiter::with_share(settings, settings.fallback_share),
            down_until: Mutex::new(None),
            in_fallback: AtomicBool::new(false),
            switches: Mutex::new(Switches::default()),
            next_lease: AtomicU64::new(0),
            lease_prefix: lease_prefix(worker),
            releaser: Releaser::start(pool.clone(), redis.timeout, lease),
            views: Mutex::new(Swept::new(SWEEP_ABOVE)),
            refusing_again: Mutex::new(Vec::new()),
            back: tokio::sync::Notify::new(),
        }
    }

    /// The two keys of a limit key, sharing one hash slot.
    pub fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}limit:{{{key}}}:tat", self.prefix),
            format!("{}limit:{{{key}}}:inflight", self.prefix),
        )
    }

    /// The standing hash of a limit key (same hash slot as its other keys).
    fn standing_key(&self, key: &str) -> String {
        format!("{}limit:{{{key}}}:standing", self.prefix)
    }

    fn view(&self, key: &str, f: impl FnOnce(&mut View)) -> View {
        let mut views = self
            .views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) < standing::OK_WINDOW);
        let v = views.entry(
            key,
            || View {
                last_ok: None,
                level: 0,
                decay_asked: None,
                pace: Pace::default(),
                seeded: 0,
                fell: None,
                answered: None,
                held_until: None,
                told: None,
            },
            |v| v.level > 0 || recent(v.last_ok) || recent(v.fell),
        );
        f(v);
        *v
    }

    /// Whether Redis rests after a failure (limit locally). When the rest is over, the
    /// caller that finds it so tries Redis and the rest is pushed on for the others
    /// until that try answers (or, were it abandoned, until the next one).
    fn redis_resting(&self) -> bool {
        let mut guard = self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match *guard {
            Some(until) if now < until => true,
            Some(_) => {
                *guard = Some(now + self.timeout.max(RETRY_REDIS_AFTER));
                false
            }
            None => false,
        }
    }

    fn redis_failed(&self, error: &str) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + RETRY_REDIS_AFTER);
        if !self.in_fallback.swap(true, Ordering::SeqCst) {
            self.switched(|s| {
                s.episode += 1;
                s.fell = Some(Instant::now());
            });
            tracing::warn!(
                error,
                "shared rate limiter unavailable; limiting locally at the fallback share"
            );
            metric::limiter_fallback(true);
        }
    }

    /// A Redis call for `key` failed: Redis rests, and `key`'s slots booked before
    /// are not sent on while it fails ([`RedisLimiter::take`]).
    fn key_failed(&self, key: &str, error: &str) {
        self.view(key, |v| v.fell = Some(Instant::now()));
        self.redis_failed(error);
    }

    /// A Redis call for `key` that wrote first what could grow Redis's memory answered:
    /// Redis takes writes, and the fallback ends.
    fn key_worked(&self, key: &str) {
        self.key_answered(key);
        self.redis_worked();
    }

    /// A Redis call for `key` answered, one that may only have read or pruned: at its
    /// `maxmemory` Redis answers those and refuses what the fallback waits for (a
    /// script is refused only by its first write, and BOOK prunes the leases first), so
    /// such an answer does not end the fallback.
    fn key_answered(&self, key: &str) {
        self.view(key, |v| v.answered = Some(Instant::now()));
    }

    fn redis_worked(&self) {
        if self.in_fallback.swap(false, Ordering::SeqCst) {
            *self
                .down_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            self.switched(|s| s.returned = Some(Instant::now()));
            tracing::info!("shared rate limiter is back");
            metric::limiter_fallback(false);
            self.back.notify_waiters();
        }
    }

    /// Resolves once Redis answers again for `key`: after another call found it back,
    /// or after the rest following a failure, asked by this caller itself (a worker
    /// whose every caller waits in its fallback makes no other call). Each caller asks
    /// for its own key: on a Redis Cluster one node may answer while the one holding
    /// this key still fails over.
    async fn back_on_redis(&self, key: &str) {
        let (tat, _) = self.keys(key);
        loop {
            let told = self.back.notified();
            tokio::pin!(told);
            // Registered before the check, so a return between the two is not missed.
            told.as_mut().enable();
            let elected = if self.in_fallback.load(Ordering::SeqCst) {
                tokio::select! {
                    () = &mut told => false,
                    () = tokio::time::sleep(RETRY_REDIS_AFTER) => {
                        if self.redis_resting() {
                            continue;
                        }
                        true
                    }
                }
            } else {
                false
            };
            match self.reach(&tat).await {
                Ok(()) => {
                    self.key_worked(key);
                    return;
                }
                Err(e) if elected => self.key_failed(key, &e),
                Err(_) => {
                    self.view(key, |v| v.fell = Some(Instant::now()));
                    tokio::time::sleep(RETRY_REDIS_AFTER).await;
                }
            }
        }
    }

    /// Whether Redis takes a script that writes for the limit key whose arrival time is
    /// `tat` (on its node: `…:alive`, in the same hash slot, kept for a second), within
    /// `redis.timeout`: the kind of call booking is ([`scripts::ALIVE`]). A Redis at
    /// its `maxmemory` answers reads and refuses writes, one under an ACL may refuse
    /// scripts alone: a plainer call would send callers back to it in a loop.
    async fn reach(&self, tat: &str) -> Result<(), CallError> {
        let alive = format!("{}alive", tat.trim_end_matches("tat"));
        let script = redis::Script::new(scripts::ALIVE);
        self.call::<i64>(script.key(alive)).await.map(drop)
    }

    fn switched(&self, f: impl FnOnce(&mut Switches)) -> Switches {
        let mut switches = self
            .switches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut switches);
        *switches
    }

    /// The rate this worker books `req` at in Redis: its fallback share for a while
    /// after it came back, the whole rate otherwise.
    fn booking_rate(&self, req: &Request<'_>) -> Rate {
        let rate = self.rules.rate_for(req);
        let back = self.switched(|_| {}).returned;
        match back {
            Some(t) if t.elapsed() < RETURN_WINDOW => self.fallback.scaled(rate),
            _ => rate,
        }
    }

    /// The spacing of requests to `key`'s IP now: the rate's, or longer when the IP
    /// is backed off or answers slowly.
    fn interval(&self, req: &Request<'_>, key: &str) -> Duration {
        let view = self.view(key, |_| {});
        let level = u32::try_from(view.level).unwrap_or(0);
        super::Spacing::of(self.rules.rate_for(req), level, view.pace.interval_ms()).interval
    }

    /// Keeps this worker's fallback behind a slot Redis just booked `wait` from now:
    /// a caller of this worker still in the fallback (Redis failing for some keys and
    /// not others, or back a moment ago) books its next slot at least one fallback
    /// interval after it, not at the same moment. The fallback's own slots are carried
    /// into Redis the other way ([`LocalLimiter::booked_ahead`]).
    fn behind_redis(&self, req: &Request<'_>, wait: Duration) {
        let share = self.fallback.scaled(self.rules.rate_for(req));
        let interval = Duration::from_secs_f64(1.0 / share.rate.max(f64::MIN_POSITIVE));
        let after = wait.saturating_add(interval.min(AN_HOUR));
        self.fallback.seed(req, Instant::now() + after);
    }

    /// Limits `req` locally. The first time a key is limited so after a switch, its
    /// IP starts a burst (and `redis.timeout` + [`FALLBACK_MARGIN`]) after the switch: requests sent
    /// through Redis just before it may have used the burst, and the callers of every
    /// worker still asleep on a Redis slot queue in their own fallbacks instead (each
    /// worker finds the failure on its own next call, a little apart).
    ///
    /// Once Redis is back, a caller still waiting here books there instead
    /// ([`Way::ToRedis`]): the fallback's schedule knows nothing of what Redis grants
    /// from then on, and granting on both put a second stream of requests beside the
    /// first. What it had booked here stays booked, and is carried into Redis by the
    /// next booking. Unless Redis refused its booking (`may_return` false, see
    /// [`CallError::refused`]): a Redis that takes the check for back and then refuses
    /// every booking (an ACL allowing some keys only) would send it round for ever, each
    /// trip starting its fallback later. Failures that are no answer (a failover, a
    /// stall) send it back as soon as Redis takes the check: staying would let the
    /// fallback grant beside Redis.
    async fn through_fallback(&self, req: Request<'_>, key: &str, may_return: bool) -> Way {
        let switches = self.switched(|_| {});
        let mut first = false;
        self.view(key, |v| {
            first = v.seeded != switches.episode;
            v.seeded = switches.episode;
        });
        if let (true, Some(fell)) = (first, switches.fell) {
            let burst = self.rules.rate_for(&req).burst;
            let a_burst = self.interval(&req, key).saturating_mul(burst);
            self.fallback.seed(
                &req,
                fell + a_burst.min(AN_HOUR) + self.timeout + FALLBACK_MARGIN,
            );
        }
        if !may_return {
            return Way::Granted(self.fallback.acquire(req).await);
        }
        let start = Instant::now();
        tokio::select! {
            grant = self.fallback.acquire(req) => Way::Granted(grant),
            () = self.back_on_redis(key) => Way::ToRedis(start.elapsed()),
        }
    }

    /// The fallback's in-flight slot for a request Redis granted: one if free; for the
    /// return window, one waited for (up to `left`; `None` when none came), because
    /// what the fallback granted holds no lease in Redis and may still be in flight.
    async fn shadow(&self, req: &Request<'_>, key: &str, left: Duration) -> Option<Shadow> {
        let free = self.fallback.shadow(req, key);
        // The switches' lock only when no slot was free: most grants find one.
        let returning = || {
            self.switched(|_| {})
                .returned
                .is_some_and(|t| t.elapsed() < RETURN_WINDOW)
        };
        if free.is_some() || !returning() {
            return Some(Shadow {
                slot: free,
                waited: Duration::ZERO,
            });
        }
        let start = Instant::now();
        let slot = self.fallback.slot(req, key, left).await?;
        Some(Shadow {
            slot: Some(slot),
            waited: start.elapsed(),
        })
    }

    /// A fresh lease id: one per booking.
    fn lease_id(&self) -> String {
        format!(
            "{}-{}",
            self.lease_prefix,
            self.next_lease.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A slot booked in Redis (`id`, usable after `wait`), taken: its lease is renewed
    /// from now on (it outlives the wait and the request, and no longer than this
    /// worker), and beside it the fallback's in-flight slot. `since` is when the
    /// request began to wait and how long it has waited so far. `None` when a hold
    /// began on the host or its IP while it waited, or it woke too late on its slot
    /// ([`super::woke_late`], while `may_miss`, which it then clears): the slot is
    /// given up. A caller
    /// whose check for a hold fails on waking (or, booked for now, whose key's calls
    /// failed since and none answered) gives it up too ([`Way::ToFallback`]): the
    /// other workers' fallbacks may grant that moment, so it queues in this worker's
    /// fallback instead, which starts where theirs do. Its key's calls, not the
    /// worker's: on a Redis Cluster other nodes answering says nothing of its node,
    /// and its node failing a moment while it slept, then answering, leaves the slot
    /// good (the fallbacks start `redis.timeout` + a burst after a failure).
    async fn take(
        &self,
        req: Request<'_>,
        key: &str,
        id: String,
        wait: Duration,
        (start, mut waited): (Instant, Duration),
        may_miss: &mut bool,
    ) -> Option<Way> {
        let booked = Instant::now();
        let (_, inflight) = self.keys(key);
        let lease = Lease::new(&self.releaser, inflight, id);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            waited += wait;
            if *may_miss && super::woke_late(booked + wait, self.rules.rate_for(&req)) {
                *may_miss = false;
                return None;
            }
            match self.hold_began(&req, key).await {
                Ok(true) => return None,
                Ok(false) => self.key_answered(key),
                Err(e) => self.key_failed(key, &e),
            }
        }
        let left = req.max_wait.saturating_sub(start.elapsed());
        if self.view(key, |_| {}).failing_since(booked) {
            drop(lease);
            return Some(Way::ToFallback(waited, false));
        }
        let Some(shadow) = self.shadow(&req, key, left).await else {
            drop(lease);
            return Some(Way::Granted(Grant::Defer(left)));
        };
        waited += shadow.waited;
        let slot = (lease, shadow.slot);
        Some(Way::Granted(Grant::Go(Permit::holding(
            waited,
            Box::new(slot),
        ))))
    }

    /// Whether a hold runs now on `req`'s host or its IP (see [`scripts::HELD`]).
    async fn hold_began(&self, req: &Request<'_>, key: &str) -> Result<bool, CallError> {
        let script = redis::Script::new(scripts::HELD);
        let mut inv = script.key(self.standing_key(key));
        inv.arg(req.host.to_ascii_lowercase());
        self.call::<i64>(inv).await.map(|held| held == 1)
    }

    /// Runs a script call within `redis.timeout`, again once on a new connection when
    /// the shared one was found closed at once: Redis's `timeout` (or a proxy's between)
    /// closed it while it sat idle, and the call never ran there (hunt T: the limiter
    /// fell back to its local share after every quiet spell). Were it to have run, the
    /// second run books one request more: the limit errs on the polite side.
    async fn call<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let asked = Instant::now();
        match self.call_once(&inv).await {
            Err(e) if e.dropped && asked.elapsed() < self.timeout / 4 => self.call_once(&inv).await,
            answered => answered,
        }
    }

    /// One run of a script call within `redis.timeout`.
    async fn call_once<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(CallError::away)?;
            inv.invoke_async::<T>(&mut conn)
                .await
                .map_err(|e| CallError::of(&e))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::away(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// One booking attempt (see [`scripts::BOOK`]). Carries the fallback's own
    /// bookings of the IP into Redis.
    async fn book(
        &self,
        req: &Request<'_>,
        key: &str,
        left: Duration,
        id: &str,
    ) -> Result<Booking, CallError> {
        let rate = self.booking_rate(req);
        let pace_ms = self.view(key, |_| {}).pace.interval_ms();
        if pace_ms > 1000.0 / rate.rate {
            metric::paced();
        }
        let (tat, inflight) = self.keys(key);
        let mut inv = self.script.key(&tat);
        inv.key(&inflight)
            .key(self.standing_key(key))
            .key(format!("{}limit:{{{key}}}:queue", self.prefix))
            .arg(format!("{:.6}", 1000.0 / rate.rate))
            .arg(rate.burst)
            .arg(rate.max_inflight)
            .arg(left.as_millis() as u64)
            .arg(self.lease.as_millis() as u64)
            .arg(id)
            .arg(req.host.to_ascii_lowercase())
            .arg(format!("{pace_ms:.3}"))
            .arg(self.fallback.booked_ahead(req).as_millis() as u64)
            .arg(self.rules.max_defer().as_millis() as u64)
            .arg(match req.line {
                Line::Outside => 0,
                Line::Fresh => 1,
                Line::Placed => 2,
                Line::Last => 3,
            })
            .arg(super::LINE_GRACE.as_millis() as u64)
            .arg(req.max_pause.min(left).as_millis() as u64)
            .arg(super::PACE_WINDOW.as_millis() as u64)
            .arg(u8::from(req.alone.is_some()));
        self.call(inv).await.map(Booking::of)
    }

    /// A refusal from `req.host` (see [`scripts::REFUSE`]).
    async fn refuse(
        &self,
        req: &Request<'_>,
        key: &str,
        signal: Signal,
    ) -> Result<Option<Refusal>, String> {
        let now = Instant::now();
        let last_ok = self.view(key, |_| {}).last_ok;
        // Right after an answer counts from when the request was sent.
        let asked = now.checked_sub(signal.waited()).unwrap_or(now);
        let recent_ok =
            last_ok.is_some_and(|t| asked.saturating_duration_since(t) < standing::OK_WINDOW);
        // An age, not a time: the script compares it on Redis's clock.
        let ok_age_ms = last_ok.map_or(-1, |t| {
            now.duration_since(t).as_millis().min(i64::MAX as u128) as i64
        });
        let (tat, _) = self.keys(key);
        let script = redis::Script::new(scripts::REFUSE);
        let mut inv = script.key(&tat);
        inv.key(self.standing_key(key))
            .arg(req.host.to_ascii_lowercase())
            .arg(u8::from(recent_ok))
            .arg(standing::REFUSAL_WINDOW.as_millis() as u64)
            .arg(standing::OK_WINDOW.as_millis() as u64)
            .arg(standing::STORM_HOSTS)
            .arg(self.backoff.base.as_millis() as u64)
            .arg(standing::MAX_HOLD.as_millis() as u64)
            .arg(standing::MAX_LEVEL)
            .arg(standing::AfterHold::of(signal).code())
            .arg(ok_age_ms)
            .arg(standing::BAN_MEMORY.as_millis() as u64)
            .arg(if signal.is_the_servers() {
                i64::from(signal.code())
            } else {
                -1
            })
            .arg(standing::AGAIN_TIMES)
            .arg(standing::AGAIN_OVER.as_millis() as u64)
            .arg(u8::from(signal.refuses_like_a_limit()))
            .arg(self.backoff.memory.as_millis() as u64)
            .arg(self.backoff.ban_reaction.as_millis() as u64)
            .arg(self.backoff.drop_memory.as_millis() as u64);
        let (storm, hold_ms, level, hosts, by): (i64, u64, i64, i64, i64) = self.call(inv).await?;
        if by == AGAIN || by == FAILING {
            self.refusing_again(key, req.host);
        }
        if storm == 0 {
            return Ok(None);
        }
        let hold = Duration::from_millis(hold_ms);
        self.view(key, |v| {
            v.level = level;
            if !hold.is_zero() {
                v.held_until = v.held_until.max(Some(now + hold));
            }
        });
        let level = u32::try_from(level).unwrap_or(0);
        let ip = super::canonical(req.ip).to_string();
        let hosts = usize::try_from(hosts).unwrap_or(0);
        let refusal = match u16::try_from(by) {
            _ if by == AGAIN => standing::again_while_answering(
                signal.code(),
                &req.host.to_ascii_lowercase(),
                &ip,
                level,
            ),
            _ if by == UNANSWERED => {
                standing::describe_unanswered(signal.code(), hosts, &ip, hold, level)
            }
            Ok(by) => standing::describe_ban(signal.code(), by, &ip, hold, level),
            Err(_) => standing::describe(signal.code(), hosts, &ip, hold, level),
        };
        if !hold.is_zero() {
            metric::ip_backoff();
        }
        Ok(Some(refusal))
    }

    /// `host` of `key` refused again after a hold, or is known failing: remembered, the
    /// oldest of [`MAX_REFUSING_AGAIN`] forgotten.
    fn refusing_again(&self, key: &str, host: &str) {
        let mut seen = self
            .refusing_again
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|(k, h)| !(k == key && h.eq_ignore_ascii_case(host)));
        if seen.len() >= MAX_REFUSING_AGAIN {
            seen.remove(0);
        }
        seen.push((key.to_string(), host.to_ascii_lowercase()));
    }

    /// `host` of `key` answered: if this worker saw it refusing again after holds, it
    /// is mended in Redis, and its next refusal read afresh by every worker.
    async fn mend(&self, key: &str, host: &str) {
        let seen = {
            let mut seen = self
                .refusing_again
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = seen
                .iter()
                .position(|(k, h)| k == key && h.eq_ignore_ascii_case(host));
            at.map(|i| seen.remove(i))
        };
        let Some((_, host)) = seen else { return };
        let script = redis::Script::new(scripts::MENDED);
        let mut inv = script.key(self.standing_key(key));
        inv.arg(host);
        if let Err(e) = self.call::<i64>(inv).await {
            self.key_failed(key, &e);
        }
    }

    /// An answer from `key`'s IP: remembered, told to Redis in the background
    /// ([`scripts::ANSWERED`]), and when the IP is backed off, Redis is asked (at most
    /// once a decay period) to step it down.
    async fn fine(&self, key: &str) {
        let now = Instant::now();
        let mut due = false;
        let mut tell = false;
        self.view(key, |v| {
            v.last_ok = Some(now);
            let backed_off = v.level > 0 || v.held_until.is_some_and(|u| now < u);
            tell = backed_off || v.told.is_none_or(|t| now.duration_since(t) >= TELL_EVERY);
            if tell {
                v.told = Some(now);
            }
            due = v.level > 0
                && v.decay_asked
                    .is_none_or(|t| now.duration_since(t) >= standing::DECAY_AFTER);
            if due {
                v.decay_asked = Some(now);
            }
        });
        if tell {
            self.releaser.answered(self.standing_key(key));
        }
        if !due {
            return;
        }
        let script = redis::Script::new(scripts::DECAY);
        let mut inv = script.key(self.standing_key(key));
        inv.arg(standing::DECAY_AFTER.as_millis() as u64);
        match self.call::<i64>(inv).await {
            Ok(level) => {
                self.view(key, |v| v.level = level);
            }
            Err(e) => self.key_failed(key, &e),
        }
    }
}

impl Limiter for RedisLimiter {
    fn hold<'a>(&'a self, req: Request<'a>, hold: Hold) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The local fallback remembers too, in case Redis is the problem.
            self.fallback.hold(req, hold).await;
            let rate = self.rules.rate_for(&req);
            let key = self.rules.key(&req);
            let (tat, _) = self.keys(&key);
            let script = redis::Script::new(scripts::HOLD);
            let mut inv = script.key(&tat);
            inv.key(self.standing_key(&key))
                .arg(hold.pause().as_millis() as u64)
                .arg(format!("{:.6}", 1000.0 / rate.rate))
                .arg(rate.burst)
                .arg(req.host.to_ascii_lowercase())
                .arg(standing::STORM_HOSTS)
                .arg(match hold {
                    Hold::Asked(_) => "hold",
                    Hold::Ours(_) => "ours",
                });
            if let Err(e) = self.call::<i64>(inv).await {
                self.key_failed(&key, &e);
            }
        })
    }

    fn latency(&self, req: &Request<'_>, latency: Duration) {
        self.fallback.latency(req, latency);
        self.view(&self.rules.key(req), |v| v.pace.observe(latency));
    }

    fn level(&self, req: &Request<'_>) -> u32 {
        if self.redis_resting() {
            return self.fallback.level(req);
        }
        let level = self.view(&self.rules.key(req), |_| {}).level;
        u32::try_from(level).unwrap_or(0)
    }

    fn quiet_after_hold(&self, req: &Request<'_>) -> bool {
        if self.redis_resting() {
            return self.fallback.quiet_after_hold(req);
        }
        let v = self.view(&self.rules.key(req), |_| {});
        standing::quiet_after(v.held_until, v.last_ok, Instant::now())
    }

    fn answered<'a>(&'a self, req: Request<'a>, signal: Signal) -> BoxFuture<'a, Option<Refusal>> {
        Box::pin(async move {
            let key = self.rules.key(&req);
            if signal == Signal::Fine {
                self.fallback.answered(req, signal).await;
                self.fine(&key).await;
                self.mend(&key, req.host).await;
                return None;
            }
            if !signal.may_refuse(&self.view(&key, |_| {}).pace) {
                return None;
            }
            if self.redis_resting() {
                return self.fallback.answered(req, signal).await;
            }
            match self.refuse(&req, &key, signal).await {
                Ok(r) => {
                    self.key_worked(&key);
                    r
                }
                Err(e) => {
                    self.key_failed(&key, &e);
                    self.fallback.answered(req, signal).await
                }
            }
        })
    }

    fn booked_since<'a>(&'a self, req: Request<'a>, booked: u64) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let (tat, _) = self.keys(&self.rules.key(&req));
            let read = async {
                let mut conn = self.pool.get().await.ok()?;
                redis::cmd("GET")
                    .arg(&tat)
                    .query_async::<Option<String>>(&mut conn)
                    .await
                    .ok()
            };
            match tokio::time::timeout(self.timeout, read).await {
                // Gone: nothing was booked since (a booking sets it again, later).
                Ok(Some(None)) => false,
                Ok(Some(Some(now))) => now
                    .parse::<f64>()
                    .map_or(true, |ms| ms * 1000.0 > booked as f64 + BOOKED_SLACK_US),
                // Unknown: as if booked, so a slow answer is asked again alone.
                _ => true,
            }
        })
    }

    fn acquire<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Grant> {
        Box::pin(async move {
            let key = self.rules.key(&req);
            let start = Instant::now();
            // What the request waited before it changed ways: its permit says so, and
            // the prober moves the probe's deadline on by it.
            let mut waited = Duration::ZERO;
            let mut on_redis = !self.redis_resting();
            let mut may_return = true;
            loop {
                let rest = Request {
                    max_wait: req.max_wait.saturating_sub(start.elapsed()),
                    ..req
                };
                let way = if on_redis {
                    self.through_redis(rest, &key, waited).await
                } else {
                    self.through_fallback(rest, &key, may_return).await
                };
                match way {
                    Way::Granted(Grant::Go(mut permit)) if !on_redis => {
                        permit.waited += waited;
                        return Grant::Go(permit);
                    }
                    Way::Granted(grant) => return grant,
                    Way::ToFallback(w, refused) => {
                        waited = w;
                        on_redis = false;
                        may_return &= !refused;
                    }
                    Way::ToRedis(w) => {
                        waited += w;
                        on_redis = true;
                    }
                }
            }
        })
    }
}

/// Why a Redis call failed, and whether Redis itself said no.
#[derive(Debug)]
struct CallError {
    text: String,
    /// Redis answered a refusal that asking again will not change: an ACL (`NOPERM`),
    /// its `maxmemory` (`OOM`), a script or type error (`ERR`, `WRONGTYPE`). Not a
    /// failover's answers (`READONLY`, `MOVED`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`,
    /// `BUSY`, `MASTERDOWN`), which pass.
    refused: bool,
    /// The connection was found closed (broken pipe, reset, end of stream).
    dropped: bool,
}

impl CallError {
    /// No answer: Redis away, slow, or its connection lost.
    fn away(text: String) -> CallError {
        CallError {
            text,
            refused: false,
            dropped: false,
        }
    }

    fn of(e: &redis::RedisError) -> CallError {
        CallError {
            text: e.to_string(),
            refused: matches!(e.code(), Some("NOPERM" | "OOM" | "ERR" | "WRONGTYPE")),
            dropped: e.is_connection_dropped(),
        }
    }
}

impl std::ops::Deref for CallError {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.text
    }
}

/// Where a request's way through the limiter led.
enum Way {
    /// The limiter's answer.
    Granted(Grant),
    /// Redis failed (or failed while it slept on its slot): on to the fallback, having
    /// waited this long in all; to stay there when Redis refused the booking
    /// ([`CallError::refused`]).
    ToFallback(Duration, bool),
    /// Redis answers again: on to Redis, having waited this much longer in the fallback.
    ToRedis(Duration),
}

impl RedisLimiter {
    /// While on the fallback, whether Redis takes writes again: the check for it
    /// ([`Self::reach`]) answers, and the fallback ends, before a booking. A booking that
    /// answers shows no more than that Redis answers (see [`Self::key_answered`]).
    async fn back_from_the_fallback(&self, key: &str) -> Result<(), CallError> {
        if !self.in_fallback.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (tat, _) = self.keys(key);
        match self.reach(&tat).await {
            Ok(()) => {
                self.key_worked(key);
                Ok(())
            }
            Err(e) => {
                self.key_failed(key, &e);
                Err(e)
            }
        }
    }

    /// Books `req` in Redis, polling while the IP's in-flight cap is full; `waited` is
    /// what it waited before. Should Redis fail, the way goes on to the fallback with
    /// the wait so far.
    async fn through_redis(&self, mut req: Request<'_>, key: &str, mut waited: Duration) -> Way {
        let start = Instant::now();
        let mut id = self.lease_id();
        let mut pause = Duration::from_millis(10);
        // A slot woken on too late is given up once (see `super::woke_late`).
        let mut may_miss = true;
        if let Err(e) = self.back_from_the_fallback(key).await {
            return Way::ToFallback(waited, e.refused);
        }
        loop {
            let left = req.max_wait.saturating_sub(start.elapsed());
            let booking = match self.book(&req, key, left, &id).await {
                Ok(booking) => booking,
                Err(e) => {
                    self.key_failed(key, &e);
                    return Way::ToFallback(waited, e.refused);
                }
            };
            self.key_answered(key);
            match booking {
                Booking::Booked {
                    wait,
                    level,
                    again,
                    paced,
                    beside,
                    booked: schedule,
                } => {
                    self.view(key, |v| {
                        v.level = level;
                        v.answered = Some(Instant::now());
                    });
                    if again {
                        // Another worker saw it refusing: its answer mends it here too.
                        self.refusing_again(key, req.host);
                    }
                    self.behind_redis(&req, wait);
                    let booked = std::mem::replace(&mut id, self.lease_id());
                    let since = (start, waited);
                    let taken = self.take(req, key, booked, wait, since, &mut may_miss);
                    match taken.await {
                        Some(Way::Granted(Grant::Go(permit))) => {
                            let permit = Permit {
                                beside,
                                booked: Some(schedule),
                                ..permit.paced(paced)
                            };
                            return Way::Granted(Grant::Go(permit));
                        }
                        Some(way) => return way,
                        // A hold began while it waited (book again, and meet it), or
                        // it woke too late on its slot.
                        None => waited += wait,
                    }
                }
                Booking::TooLong(wait) => return Way::Granted(Grant::Defer(wait)),
                Booking::Paused(left) => return Way::Granted(Grant::Paused(left)),
                Booking::HostHeld(held) => {
                    // The host asked for a pause: wait it out, then book.
                    tokio::time::sleep(held).await;
                    waited += held;
                }
                Booking::Full => {
                    // In-flight cap reached: poll, backing off a little, until a
                    // lease frees or the wait is no longer acceptable. A request
                    // asked alone that waited as long as it may goes beside the
                    // others all the same (a busy IP may never be free of requests).
                    if req
                        .alone
                        .is_some_and(|alone| start.elapsed() + pause > alone)
                    {
                        req.alone = None;
                        continue;
                    }
                    if start.elapsed() + pause > req.max_wait {
                        return Way::Granted(Grant::Defer(req.max_wait));
                    }
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    pause = (pause * 3 / 2).min(Duration::from_millis(100));
                }
            }
        }
    }
}

/// A shared limiter as the trait object the prober takes.
pub fn shared(
    pool: RedisPool,
    redis: &RedisSettings,
    settings: &RateLimitSettings,
    lease: Duration,
    worker: &str,
) -> Arc<dyn Limiter> {
    Arc::new(RedisLimiter::new(pool, redis, settings, lease, worker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_the_local_share_and_keeps_granting() {
        // Port 9 on loopback: nothing listens, so every Redis call fails at once.
        let mut s =
            Settings::from_toml("[redis]\nurl = \"redis://127.0.0.1:9/0\"\ntimeout = \"500ms\"\n")
                .expect("settings");
        s.rate_limit.per_ip.rate = 4.0;
        s.rate_limit.per_ip.burst = 4;
        let pool = crate::redis_pool::redis_pool(&s.redis).expect("pool");
        let limiter =
            RedisLimiter::new(pool, &s.redis, &s.rate_limit, Duration::from_secs(30), "t");
        let req = Request {
            ip: "192.0.2.1".parse().expect("ip"),
            host: "h.test",
            egress: "direct",
            max_wait: Duration::from_secs(10),
            max_pause: Duration::from_secs(10),
            line: crate::limit::Line::Outside,
            alone: None,
        };
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..3 {
            match limiter.acquire(req).await {
                Grant::Go(p) => waits.push(p.waited),
                Grant::Defer(d) | Grant::Paused(d) => panic!("deferred {d:?}"),
            }
        }
        assert!(limiter.in_fallback.load(Ordering::SeqCst));
        // Half the rate and burst: 2 at once, then one every 500 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );
        assert!(waits[2] >= Duration::from_millis(400), "{waits:?}");
    }

    #[test]
    fn both_keys_of_an_ip_share_one_hash_slot() {
        let s = Settings::from_toml("").expect("settings");
        let pool = crate::redis_pool::redis_pool(&s.redis).expect("pool");
        let l = RedisLimiter::new(pool, &s.redis, &s.rate_limit, Duration::from_secs(30), "t");
        let (a, b) = l.keys("2001:db8::1");
        let tag = |k: &str| k[k.find('{').expect("{")..=k.find('}').expect("}")].to_string();
        assert_eq!(tag(&a), "{2001:db8::1}");
        assert_eq!(tag(&a), tag(&b));
        assert!(a.starts_with("picket:limit:"));
    }
}
