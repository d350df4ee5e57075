//! The shared limiter in Redis: every worker books its requests to an IP in the same
//! keys, so N workers together never exceed the IP's rate, burst and in-flight cap.
//!
//! One Lua script does it atomically (EVALSHA, reloaded on NOSCRIPT by redis-rs): it
//! drops expired in-flight leases, checks the cap, books the next GCRA slot on Redis's
//! own clock (so worker clocks do not matter) and takes a lease that expires by itself
//! if its worker dies. Both keys of an IP carry the same `{hash tag}`, so the script works
//! on Redis Cluster too.
//!
//! When Redis fails, requests go through a [`LocalLimiter`] at `fallback_share` of the
//! rates; Redis is tried again after a pause and the shared limit resumes by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{Grant, Limiter, LocalLimiter, Permit, Request, Rules};
use crate::config::{RateLimitSettings, RedisSettings};
use crate::metric;
use crate::redis_pool::RedisPool;

/// KEYS[1]: the GCRA "theoretical arrival time" in ms; KEYS[2]: the lease sorted set
/// (member = lease id, score = expiry ms). Times are fractional milliseconds, so rates
/// above 1000/s and intervals that are not whole milliseconds are kept exactly.
/// ARGV: interval_ms, burst, max_inflight, max_wait_ms, lease_ms, lease_id.
/// Returns {1, wait_ms} booked; {-1, wait_ms} would wait too long (nothing booked);
/// {0, 0} in-flight cap reached (nothing booked; the rate alone would have allowed it).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - interval * tonumber(ARGV[2]) - now
if wait < 0 then wait = 0 end
-- The rate decides first: a job that would wait too long anyway is told so at once,
-- instead of polling for an in-flight slot until its max_wait runs out.
if wait > tonumber(ARGV[4]) then
  return {-1, math.ceil(wait)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {0, 0}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
local lease = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + wait + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[2], math.ceil(wait) + lease + 1000)
return {1, math.ceil(wait)}
";

/// KEYS[1]: the GCRA arrival time. ARGV: pause_ms, interval_ms, burst. Moves the next
/// slot to `pause` from now (Redis's clock), never earlier than it already is.
const HOLD_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local held = now + tonumber(ARGV[1]) + tonumber(ARGV[2]) * (tonumber(ARGV[3]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if held > tat then
  redis.call('SET', KEYS[1], string.format('%.3f', held), 'PX', math.ceil(held - now) + 1000)
end
return 1
";

/// How long Redis is left alone after a failure before it is tried again.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(1);

/// The per-IP limiter shared by all workers through Redis.
pub struct RedisLimiter {
    pool: RedisPool,
    prefix: String,
    rules: Rules,
    script: redis::Script,
    lease: Duration,
    timeout: Duration,
    fallback: LocalLimiter,
    down_until: Mutex<Option<Instant>>,
    in_fallback: AtomicBool,
    next_lease: AtomicU64,
    lease_prefix: String,
    releaser: Releaser,
}

/// Frees an in-flight lease when the request is done.
struct Lease {
    releaser: Releaser,
    key: String,
    id: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // If the release is lost the lease still expires on its own.
        self.releaser
            .release(std::mem::take(&mut self.key), std::mem::take(&mut self.id));
    }
}

/// Frees leases in batches: a finished request hands its lease to one background task,
/// which removes whatever has gathered meanwhile in one round trip (a task and a Redis
/// write per request were a noticeable share of the worker's time under load).
///
/// A release that fails (Redis away, or failing over) is tried again, once a second,
/// until the lease would have expired anyway: after a failover the replica that took
/// over holds the leases of requests that finished while Redis was away, and each one
/// left there would keep an in-flight slot of its IP booked for the whole lease.
#[derive(Clone)]
struct Releaser(Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>);

/// A lease to free and when it expires by itself (then it need not be freed).
type Pending = (String, String, Instant);

impl Releaser {
    /// Starts the releasing task on the current Tokio runtime; without one, leases are
    /// left to expire.
    fn start(pool: RedisPool, timeout: Duration, lease: Duration) -> Releaser {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Releaser(None);
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        runtime.spawn(async move {
            let mut fresh = Vec::new();
            let mut pending: Vec<Pending> = Vec::new();
            loop {
                // With releases to retry, wait at most RETRY_REDIS_AFTER for new ones.
                let got = if pending.is_empty() {
                    rx.recv_many(&mut fresh, 512).await
                } else {
                    tokio::time::timeout(RETRY_REDIS_AFTER, rx.recv_many(&mut fresh, 512))
                        .await
                        .unwrap_or(1)
                };
                if got == 0 {
                    // The limiter and every lease are gone.
                    break;
                }
                let now = Instant::now();
                pending.retain(|(_, _, expires)| *expires > now);
                pending.extend(fresh.drain(..).map(|(k, id)| (k, id, now + lease)));
                if pending.is_empty() {
                    continue;
                }
                match tokio::time::timeout(timeout, release_all(&pool, &pending)).await {
                    Ok(Ok(())) => pending.clear(),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, leases = pending.len(), "lease release failed; trying again");
                    }
                    Err(_) => {
                        tracing::debug!(leases = pending.len(), "lease release timed out; trying again");
                    }
                }
                if !pending.is_empty() {
                    tokio::time::sleep(RETRY_REDIS_AFTER).await;
                }
            }
        });
        Releaser(Some(tx))
    }

    fn release(&self, key: String, id: String) {
        if let Some(tx) = &self.0 {
            let _ = tx.send((key, id));
        }
    }
}

/// Removes the leases in `batch` from their in-flight sets.
async fn release_all(pool: &RedisPool, batch: &[Pending]) -> Result<(), String> {
    let mut conn = pool.get().await?;
    if pool.is_cluster() {
        // Leases of different IPs live in different slots: one command each, all in
        // flight at once on the multiplexed connection.
        let calls = batch.iter().map(|(key, id, _)| {
            let pool = pool.clone();
            async move {
                let mut c = pool.get().await?;
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(id)
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    } else {
        let mut pipe = redis::pipe();
        for (key, id, _) in batch {
            pipe.cmd("ZREM").arg(key).arg(id).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

impl RedisLimiter {
    /// A limiter over `pool`. `lease` is how long an in-flight slot is held at most
    /// (longer than any request: the probe timeout plus a margin).
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
            script: redis::Script::new(SCRIPT),
            lease,
            timeout: redis.timeout,
            fallback: LocalLimiter::with_share(settings, settings.fallback_share),
            down_until: Mutex::new(None),
            in_fallback: AtomicBool::new(false),
            next_lease: AtomicU64::new(0),
            lease_prefix: worker.to_string(),
            releaser: Releaser::start(pool.clone(), redis.timeout, lease),
        }
    }

    /// The two keys of a limit key, sharing one hash slot.
    pub fn keys(&self, key: &str) -> (String, String) {
        (
            format!("{}limit:{{{key}}}:tat", self.prefix),
            format!("{}limit:{{{key}}}:inflight", self.prefix),
        )
    }

    fn redis_resting(&self) -> bool {
        let guard = self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.is_some_and(|until| Instant::now() < until)
    }

    fn redis_failed(&self, error: &str) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + RETRY_REDIS_AFTER);
        if !self.in_fallback.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                error,
                "shared rate limiter unavailable; limiting locally at the fallback share"
            );
            metric::limiter_fallback(true);
        }
    }

    fn redis_worked(&self) {
        if self.in_fallback.swap(false, Ordering::SeqCst) {
            tracing::info!("shared rate limiter is back");
            metric::limiter_fallback(false);
        }
    }

    async fn book(
        &self,
        tat: &str,
        inflight: &str,
        interval_ms: f64,
        args: [u64; 4],
        id: &str,
    ) -> Result<(i64, u64), String> {
        let call = async {
            let mut conn = self.pool.get().await?;
            let mut inv = self.script.key(tat);
            inv.key(inflight);
            inv.arg(format!("{interval_ms:.6}"));
            for a in args {
                inv.arg(a);
            }
            inv.arg(id);
            inv.invoke_async::<(i64, u64)>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

impl Limiter for RedisLimiter {
    fn hold<'a>(&'a self, req: Request<'a>, pause: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The local fallback remembers too, in case Redis is the problem.
            self.fallback.hold(req, pause).await;
            let rate = self.rules.rate_for(&req);
            let (tat, _) = self.keys(&self.rules.key(&req));
            let interval_ms = 1000.0 / rate.rate;
            let call = async {
                let mut conn = self.pool.get().await?;
                redis::Script::new(HOLD_SCRIPT)
                    .key(&tat)
                    .arg(pause.as_millis() as u64)
                    .arg(format!("{interval_ms:.6}"))
                    .arg(rate.burst)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Ok(Err(e)) | Err(e) = tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| "timed out".to_string())
            {
                self.redis_failed(&e);
            }
        })
    }

    fn acquire<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Grant> {
        Box::pin(async move {
            if self.redis_resting() {
                return self.fallback.acquire(req).await;
            }
            let start = Instant::now();
            let rate = self.rules.rate_for(&req);
            let (tat, inflight) = self.keys(&self.rules.key(&req));
            let id = format!(
                "{}-{}",
                self.lease_prefix,
                self.next_lease.fetch_add(1, Ordering::Relaxed)
            );
            let interval_ms = 1000.0 / rate.rate;
            let mut pause = Duration::from_millis(10);
            // Time spent waiting for the limit (not the script's round trips), for the
            // metrics and the result's queue time.
            let mut waited = Duration::ZERO;
            loop {
                let left = req.max_wait.saturating_sub(start.elapsed());
                let args = [
                    u64::from(rate.burst),
                    u64::from(rate.max_inflight),
                    left.as_millis() as u64,
                    self.lease.as_millis() as u64,
                ];
                match self.book(&tat, &inflight, interval_ms, args, &id).await {
                    Err(e) => {
                        self.redis_failed(&e);
                        let rest = Request {
                            max_wait: left,
                            ..req
                        };
                        return self.fallback.acquire(rest).await;
                    }
                    Ok((1, wait_ms)) => {
                        self.redis_worked();
                        if wait_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                            waited += Duration::from_millis(wait_ms);
                        }
                        let lease = Lease {
                            releaser: self.releaser.clone(),
                            key: inflight,
                            id,
                        };
                        return Grant::Go(Permit::holding(waited, Box::new(lease)));
                    }
                    Ok((-1, wait_ms)) => {
                        self.redis_worked();
                        return Grant::Defer(Duration::from_millis(wait_ms));
                    }
                    Ok(_) => {
                        // In-flight cap reached: poll, backing off a little, until a lease
                        // frees or the wait is no longer acceptable.
                        self.redis_worked();
                        if start.elapsed() + pause > req.max_wait {
                            return Grant::Defer(req.max_wait);
                        }
                        tokio::time::sleep(pause).await;
                        waited += pause;
                        pause = (pause * 3 / 2).min(Duration::from_millis(100));
                    }
                }
            }
        })
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
        };
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..3 {
            match limiter.acquire(req).await {
                Grant::Go(p) => waits.push(p.waited),
                Grant::Defer(d) => panic!("deferred {d:?}"),
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
