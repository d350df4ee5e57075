//! Per-IP politeness: how often and how many requests may go to one resolved address.
//!
//! [`Limiter`] is the seam; [`LocalLimiter`] keeps the state in this process (used by
//! `picket check`, and by the worker until the shared Redis limiter lands). The rate is a
//! GCRA with reservations: each caller books the next free slot for its IP at once and
//! then sleeps on its own, so a busy IP never holds back callers for other IPs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::RateLimitSettings;

/// Leave to send one request to an IP; the in-flight slot is freed when it is dropped.
pub struct Permit {
    /// Time spent waiting for it.
    pub waited: Duration,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// A permit that holds nothing (for limiters without an in-flight cap).
    pub fn free(waited: Duration) -> Permit {
        Permit {
            waited,
            _slot: None,
        }
    }
}

/// Grants leave to send a request to an address.
pub trait Limiter: Send + Sync {
    /// Waits until a request to `ip` is allowed and returns the leave.
    fn acquire(&self, ip: IpAddr) -> BoxFuture<'_, Permit>;
}

struct IpState {
    /// Theoretical arrival time of the next request (GCRA).
    tat: Instant,
    inflight: Arc<Semaphore>,
}

/// A per-IP GCRA plus in-flight cap held in memory.
pub struct LocalLimiter {
    interval: Duration,
    burst: u32,
    max_inflight: u32,
    state: Mutex<HashMap<IpAddr, IpState>>,
}

/// Entries kept before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl LocalLimiter {
    /// A limiter with the rates of `[rate_limit.per_ip]`.
    pub fn new(settings: &RateLimitSettings) -> LocalLimiter {
        LocalLimiter {
            interval: Duration::from_secs_f64(1.0 / settings.rate),
            burst: settings.burst,
            max_inflight: settings.max_inflight,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Books the next slot for `ip` and returns (when it may go, its in-flight semaphore).
    fn reserve(&self, ip: IpAddr, now: Instant) -> (Instant, Arc<Semaphore>) {
        let mut map = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > SWEEP_ABOVE {
            // An entry whose next slot is in the past and that nobody holds is idle.
            map.retain(|_, s| {
                s.tat > now || s.inflight.available_permits() < self.max_inflight as usize
            });
        }
        let entry = map.entry(ip).or_insert_with(|| IpState {
            tat: now,
            inflight: Arc::new(Semaphore::new(self.max_inflight as usize)),
        });
        let tat = entry.tat.max(now);
        let new_tat = tat + self.interval;
        // burst requests may be booked ahead of the steady rate
        let allowed_at = new_tat
            .checked_sub(self.interval * self.burst)
            .unwrap_or(now)
            .max(now);
        entry.tat = new_tat;
        (allowed_at, entry.inflight.clone())
    }
}

impl Limiter for LocalLimiter {
    fn acquire(&self, ip: IpAddr) -> BoxFuture<'_, Permit> {
        Box::pin(async move {
            let start = Instant::now();
            // The in-flight slot first: a slot is only booked when it can be used.
            let slot = self.reserve_slot(ip).await;
            let (at, _) = self.reserve(ip, Instant::now());
            tokio::time::sleep_until(at).await;
            Permit {
                waited: start.elapsed(),
                _slot: slot,
            }
        })
    }
}

impl LocalLimiter {
    async fn reserve_slot(&self, ip: IpAddr) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut map = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(ip)
                .or_insert_with(|| IpState {
                    tat: Instant::now(),
                    inflight: Arc::new(Semaphore::new(self.max_inflight as usize)),
                })
                .inflight
                .clone()
        };
        sem.acquire_owned().await.ok()
    }
}

/// A limiter that never waits (for tests of other parts).
pub struct Unlimited;

impl Limiter for Unlimited {
    fn acquire(&self, _ip: IpAddr) -> BoxFuture<'_, Permit> {
        Box::pin(async { Permit::free(Duration::ZERO) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, max_inflight: u32) -> LocalLimiter {
        LocalLimiter::new(&RateLimitSettings {
            rate,
            burst,
            max_inflight,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let l = limiter(2.0, 2, 100);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let t0 = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            let _p = l.acquire(ip).await;
            times.push(t0.elapsed().as_millis());
        }
        // two at once, then one every 500 ms
        assert_eq!(times, vec![0, 0, 500, 1000, 1500, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_ips_are_not_held_back() {
        let l = Arc::new(limiter(1.0, 1, 100));
        let busy: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..5 {
            let _ = l.acquire(busy).await;
        }
        let t0 = Instant::now();
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let p = l.acquire(other).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(p.waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn inflight_is_capped() {
        let l = Arc::new(limiter(1000.0, 1000, 2));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = l.acquire(ip).await;
        let _b = l.acquire(ip).await;
        let l2 = l.clone();
        let third = tokio::spawn(async move { l2.acquire(ip).await.waited });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third request must wait for a slot");
        drop(a);
        let waited = third.await.expect("join");
        assert!(waited >= Duration::from_millis(50));
    }
}
