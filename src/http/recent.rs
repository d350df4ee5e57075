//! What a target IP said lately, so that a reset right after a burst of answers can be
//! told from an outage.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long answers from one IP are remembered to recognise a reset after a burst.
const BURST_WINDOW: Duration = Duration::from_secs(10);

/// Recent answers per (target IP, egress), so a reset right after a burst of answers
/// can be told from an outage. Bounded: a few instants per key, and keys whose answers
/// are all old are dropped when the map grows.
#[derive(Default)]
pub(super) struct RecentAnswers {
    seen: Mutex<Seen>,
}

/// Per (target IP, egress index): when each answer came, whether it served us (not a
/// refusal), and its stamp ([`RecentAnswers::answered`]); and the last stamp given.
#[derive(Default)]
struct Seen {
    answers: HashMap<(IpAddr, usize), VecDeque<OneAnswer>>,
    stamps: u64,
}

/// One answer: when it came, whether it served us, its stamp.
type OneAnswer = (Instant, bool, u64);

impl RecentAnswers {
    const PER_KEY: usize = 8;
    const MAX_KEYS: usize = 8192;

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An answer from `ip` through `egress` came now; its stamp names it to
    /// [`Self::refused`].
    pub(super) fn answered(&self, ip: IpAddr, egress: usize) -> u64 {
        let now = Instant::now();
        let mut seen = self.lock();
        seen.stamps += 1;
        let stamp = seen.stamps;
        let answers = &mut seen.answers;
        if answers.len() >= Self::MAX_KEYS {
            answers.retain(|_, v| {
                v.back()
                    .is_some_and(|(t, _, _)| now.duration_since(*t) < BURST_WINDOW)
            });
            if answers.len() >= Self::MAX_KEYS {
                answers.clear();
            }
        }
        let times = answers.entry((ip, egress)).or_default();
        if times.len() >= Self::PER_KEY {
            times.pop_front();
        }
        times.push_back((now, true, stamp));
        stamp
    }

    /// The answer `stamp` from `ip` through `egress` was a refusal (403, 429, 503, 999):
    /// it does not count among the answers that served us. Told once its page was read,
    /// when other answers of the IP may have come since.
    pub(super) fn refused(&self, ip: IpAddr, egress: usize, stamp: u64) {
        let mut seen = self.lock();
        let answers = seen.answers.get_mut(&(ip, egress));
        if let Some(it) = answers.and_then(|v| v.iter_mut().find(|a| a.2 == stamp)) {
            it.1 = false;
        }
    }

    pub(super) fn count(&self, ip: IpAddr, egress: usize) -> u32 {
        self.count_where(ip, egress, |_| true)
    }

    /// How many of the recent answers served us (refusals left out).
    pub(super) fn served(&self, ip: IpAddr, egress: usize) -> u32 {
        self.count_where(ip, egress, |fine| fine)
    }

    /// How many answers from `ip` through `egress` came after `t`: those that served us,
    /// and the refusals.
    pub(super) fn since(&self, ip: IpAddr, egress: usize, t: Instant) -> (u32, u32) {
        self.lock().answers.get(&(ip, egress)).map_or((0, 0), |v| {
            v.iter()
                .filter(|(at, _, _)| *at > t)
                .fold((0, 0), |(served, refused), (_, fine, _)| {
                    if *fine {
                        (served + 1, refused)
                    } else {
                        (served, refused + 1)
                    }
                })
        })
    }

    fn count_where(&self, ip: IpAddr, egress: usize, keep: impl Fn(bool) -> bool) -> u32 {
        let now = Instant::now();
        self.lock().answers.get(&(ip, egress)).map_or(0, |v| {
            v.iter()
                .filter(|(t, fine, _)| now.duration_since(*t) < BURST_WINDOW && keep(*fine))
                .count() as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review J (c). A refusal is told after its answer's body was read (`heed` comes
    /// after `read_if_error`): another request to the IP may have answered meanwhile, and
    /// marking the newest answer as the refusal marked that one, so a served answer
    /// counted as a refusal and the refusal as served.
    #[tokio::test(start_paused = true)]
    async fn the_refused_answer_is_the_one_marked_not_the_newest() {
        let r = RecentAnswers::default();
        let ip: IpAddr = "192.0.2.9".parse().expect("ip");
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        let a = r.answered(ip, 0); // A: its 403 page is still being read
        tokio::time::advance(Duration::from_secs(5)).await;
        let between = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        r.answered(ip, 0); // B: served
        r.refused(ip, 0, a); // A's refusal, told now
        assert_eq!(r.since(ip, 0, before), (1, 1));
        assert_eq!(r.since(ip, 0, between), (1, 0), "B served us, A refused");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_counted_per_ip_and_egress_and_forgotten() {
        let r = RecentAnswers::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut last = 0;
        for _ in 0..3 {
            last = r.answered(ip, 0);
        }
        r.answered(ip, 1);
        assert_eq!((r.count(ip, 0), r.count(ip, 1)), (3, 1));
        // A refusal is an answer, but not one that served us.
        r.refused(ip, 0, last);
        assert_eq!((r.count(ip, 0), r.served(ip, 0)), (3, 2));
        assert_eq!(r.count("192.0.2.2".parse().expect("ip"), 0), 0);
        tokio::time::advance(BURST_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(r.count(ip, 0), 0);
        // What came after an instant, served and refused apart.
        let t = Instant::now();
        assert_eq!(r.since(ip, 0, t), (0, 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        r.answered(ip, 0);
        let refused = r.answered(ip, 0);
        r.refused(ip, 0, refused);
        assert_eq!(r.since(ip, 0, t), (1, 1));
        // At most PER_KEY instants are kept for one key.
        for _ in 0..20 {
            r.answered(ip, 0);
        }
        assert_eq!(r.count(ip, 0), RecentAnswers::PER_KEY as u32);
    }
}
