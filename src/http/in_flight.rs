//! Our requests to each IP in flight now. An answer that came slowly while other
//! requests of ours to its IP were out may have waited behind them in a limit's queue
//! (nginx's `limit_req` with a `burst` and no `nodelay` holds what came too fast and
//! answers it later), so its confirmation is asked alone: once none of ours to the IP
//! is out, and with no other request asked alone beside it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often a request to be asked alone looks whether ours to its IP came back.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// Requests in flight per (target IP, egress index). Bounded by the requests in flight:
/// a key goes when its last request comes back.
#[derive(Default)]
pub(super) struct InFlight {
    counts: Mutex<HashMap<(IpAddr, usize), Out>>,
}

/// Ours out to one key: how many, and how many went out since the first of them.
#[derive(Default)]
struct Out {
    now: u32,
    sent: u64,
}

/// One request in flight; counted until dropped.
pub(super) struct Sending<'a> {
    owner: &'a InFlight,
    key: (IpAddr, usize),
    /// Its number among the key's sends.
    nth: u64,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, usize), Out>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request to `ip` through `egress` goes out now: its guard, and how many others
    /// of ours to it were out.
    pub(super) fn send(&self, ip: IpAddr, egress: usize) -> (Sending<'_>, u32) {
        let key = (ip, egress);
        let mut counts = self.lock();
        let out = counts.entry(key).or_default();
        let others = out.now;
        (self.one_more(key, out), others)
    }

    fn one_more(&self, key: (IpAddr, usize), out: &mut Out) -> Sending<'_> {
        out.now += 1;
        out.sent += 1;
        Sending {
            owner: self,
            key,
            nth: out.sent,
        }
    }

    /// The same, once none of ours to `ip` is out: a request asked alone, and no other
    /// is sent beside it the same way. Past `until` it goes all the same (a busy IP may
    /// never be free of ours); the wait is ours, not the site's.
    pub(super) async fn send_alone(
        &self,
        ip: IpAddr,
        egress: usize,
        until: Instant,
    ) -> Sending<'_> {
        loop {
            {
                let mut counts = self.lock();
                let out = counts.entry((ip, egress)).or_default();
                if out.now == 0 || Instant::now() >= until {
                    return self.one_more((ip, egress), out);
                }
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}

impl Sending<'_> {
    /// Its answer came: whether another request of ours to the key went out while it
    /// was out. Counted before it is not enough: a request counted first may reach the
    /// server after others counted later (they connect and write in tasks of their own).
    pub(super) fn came_back(self) -> bool {
        self.owner
            .lock()
            .get(&self.key)
            .is_some_and(|out| out.sent > self.nth)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.lock();
        if let Some(out) = counts.get_mut(&self.key) {
            out.now = out.now.saturating_sub(1);
            if out.now == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_asked_alone_waits_for_ours_to_come_back_and_sends_no_other_beside_it() {
        let f = InFlight::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let (first, others) = f.send(ip, 0);
        assert_eq!(others, 0);
        let (second, others) = f.send(ip, 0);
        assert_eq!(others, 1);
        let (third, _) = f.send(ip, 0);
        assert!(!third.came_back(), "nothing went out after the third");
        assert_eq!(f.send(ip, 1).1, 0, "another egress is another key");
        let far = Instant::now() + Duration::from_secs(60);
        let start = Instant::now();
        let alone = async {
            let s = f.send_alone(ip, 0, far).await;
            (s, start.elapsed())
        };
        let back = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(first);
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(second);
        };
        let ((alone, waited), ()) = tokio::join!(alone, back);
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        // A second request to be asked alone waits for the first.
        let next = tokio::time::timeout(Duration::from_secs(1), f.send_alone(ip, 0, far)).await;
        assert!(next.is_err(), "asked beside another asked alone");
        drop(alone);
        assert_eq!(f.send(ip, 0).1, 0, "nothing left in flight");
        assert!(f.lock().len() <= 1, "keys go when their requests come back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_asked_alone_goes_at_its_deadline_all_the_same() {
        let f = InFlight::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let (_busy, _) = f.send(ip, 0);
        let start = Instant::now();
        let _s = f.send_alone(ip, 0, start + Duration::from_secs(3)).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3100),
            "{waited:?}"
        );
    }
}
