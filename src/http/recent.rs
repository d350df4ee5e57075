//! What a target IP said lately, and what we asked it, so that a reset right after a
//! burst of answers, or the first refusal of a burst of ours, can be told from an outage.

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
    /// When each of our latest requests to the key was sent.
    asked: HashMap<(IpAddr, usize), VecDeque<Instant>>,
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
        keep_latest(&mut seen.answers, (ip, egress), (now, true, stamp), |a| a.0);
        stamp
    }

    /// A request of ours to `ip` through `egress` goes out now.
    pub(super) fn asked(&self, ip: IpAddr, egress: usize) {
        keep_latest(&mut self.lock().asked, (ip, egress), Instant::now(), |t| *t);
    }

    /// How many requests of ours went to `ip` through `egress` lately, the one that
    /// asks included.
    pub(super) fn asked_lately(&self, ip: IpAddr, egress: usize) -> u32 {
        let now = Instant::now();
        self.lock().asked.get(&(ip, egress)).map_or(0, |v| {
            v.iter()
                .filter(|t| now.duration_since(**t) < BURST_WINDOW)
                .count() as u32
        })
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

/// Keeps `item` as the newest of `key`'s latest [`RecentAnswers::PER_KEY`], and at most
/// [`RecentAnswers::MAX_KEYS`] keys (those with nothing recent go first).
fn keep_latest<T>(
    map: &mut HashMap<(IpAddr, usize), VecDeque<T>>,
    key: (IpAddr, usize),
    item: T,
    at: impl Fn(&T) -> Instant,
) {
    let now = at(&item);
    if map.len() >= RecentAnswers::MAX_KEYS {
        map.retain(|_, v| {
            v.back()
                .is_some_and(|t| now.duration_since(at(t)) < BURST_WINDOW)
        });
        if map.len() >= RecentAnswers::MAX_KEYS {
            map.clear();
        }
    }
    let items = map.entry(key).or_default();
    if items.len() >= RecentAnswers::PER_KEY {
        items.pop_front();
    }
    items.push_back(item);
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

    #[tokio::test(start_paused = true)]
    async fn our_requests_are_counted_per_ip_and_egress_and_forgotten() {
        let r = RecentAnswers::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        r.asked(ip, 0);
        r.asked(ip, 0);
        r.asked(ip, 1);
        assert_eq!((r.asked_lately(ip, 0), r.asked_lately(ip, 1)), (2, 1));
        assert_eq!(r.count(ip, 0), 0, "asked is not answered");
        tokio::time::advance(BURST_WINDOW + Duration::from_millis(1)).await;
        assert_eq!(r.asked_lately(ip, 0), 0);
        for _ in 0..20 {
            r.asked(ip, 0);
        }
        assert_eq!(r.asked_lately(ip, 0), RecentAnswers::PER_KEY as u32);
    }
}
