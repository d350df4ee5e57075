//! What a target IP said lately, and what we asked it, so that a reset right after a
//! burst of answers, or the first refusal of a burst of ours, can be told from an outage.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use crate::limit::standing::REFUSAL_WINDOW;
use crate::limit::Signal;

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
    /// The latest answers that served us, one per host: neighbours to ask. Apart from
    /// `answers`, whose few places a storm of refusals fills.
    served: HashMap<(IpAddr, usize), VecDeque<Served>>,
    stamps: u64,
}

/// An answer that served us, on a host a neighbour may be asked ([`RecentAnswers::neighbour`]).
struct Served {
    at: Instant,
    /// When its request went out.
    sent: Instant,
    stamp: u64,
    /// The URL it answered, without credentials.
    url: Box<str>,
    /// Its host, lowercase.
    host: Arc<str>,
}

/// What an IP said around a refusal ([`RecentAnswers::around`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Around {
    /// Answers that served requests sent before it, within [`BURST_WINDOW`] of it
    /// or after it (its burst's, in whatever order they came back).
    pub(super) burst: u32,
    /// Answers, read, that served requests sent after it came: the IP serves us since.
    /// One sent before may have been let through before the refusal, wherever it came.
    pub(super) served_after: u32,
    /// Refusals of other hosts, read, that came within [`REFUSAL_WINDOW`] of it or after it.
    pub(super) refused_near: u32,
}

/// One answer.
struct OneAnswer {
    /// When it came.
    at: Instant,
    /// When its request went out (the connection was ready).
    sent: Instant,
    /// It served us (no refusal); until it is `settled`, as far as is known yet.
    served: bool,
    /// Its page was read, and what it is told ([`RecentAnswers::refused`],
    /// [`RecentAnswers::served_us`]).
    settled: bool,
    /// Its stamp ([`RecentAnswers::answered`]).
    stamp: u64,
    /// Its host, lowercase.
    host: Arc<str>,
}

impl RecentAnswers {
    const PER_KEY: usize = 8;
    const MAX_KEYS: usize = 8192;

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An answer to `url` from `ip` through `egress`, to a request `sent` then, came
    /// now; its stamp names it to [`Self::refused`] and [`Self::served_us`].
    pub(super) fn answered(&self, ip: IpAddr, egress: usize, url: &Url, sent: Instant) -> u64 {
        let now = Instant::now();
        let host: Arc<str> = url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .into();
        let mut seen = self.lock();
        seen.stamps += 1;
        let stamp = seen.stamps;
        let answer = OneAnswer {
            at: now,
            sent,
            served: true,
            settled: false,
            stamp,
            host: host.clone(),
        };
        keep_latest(&mut seen.answers, (ip, egress), answer, |a| a.at);
        if let Some(hosts) = seen.served.get_mut(&(ip, egress)) {
            hosts.retain(|s| s.host != host);
        }
        let served = Served {
            at: now,
            sent,
            stamp,
            url: without_credentials(url),
            host,
        };
        keep_latest(&mut seen.served, (ip, egress), served, |s| s.at);
        stamp
    }

    /// The URL of the newest answer from `ip` through `egress` that served us, on
    /// another host than `host`: a neighbour that can tell whether the IP serves us.
    pub(super) fn neighbour(&self, ip: IpAddr, egress: usize, host: &str) -> Option<Url> {
        let seen = self.lock();
        let served = seen.served.get(&(ip, egress))?;
        let other = served
            .iter()
            .rev()
            .find(|s| !s.host.eq_ignore_ascii_case(host))?;
        Url::parse(&other.url).ok()
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
        if let Some(it) = answers.and_then(|v| v.iter_mut().find(|a| a.stamp == stamp)) {
            it.served = false;
            it.settled = true;
        }
        if let Some(served) = seen.served.get_mut(&(ip, egress)) {
            served.retain(|s| s.stamp != stamp);
        }
    }

    /// The answer `stamp` from `ip` through `egress` was read and refused nothing.
    pub(super) fn served_us(&self, ip: IpAddr, egress: usize, stamp: u64) {
        let mut seen = self.lock();
        let answers = seen.answers.get_mut(&(ip, egress));
        if let Some(it) = answers.and_then(|v| v.iter_mut().find(|a| a.stamp == stamp)) {
            it.settled = true;
        }
    }

    /// When the answer `stamp` from `ip` through `egress` came, if it is still known.
    pub(super) fn came(&self, ip: IpAddr, egress: usize, stamp: u64) -> Option<Instant> {
        let seen = self.lock();
        let answers = seen.answers.get(&(ip, egress))?;
        answers.iter().find(|a| a.stamp == stamp).map(|a| a.at)
    }

    /// What `ip` said through `egress` around the refusal of `host` that came at `t`
    /// ([`Around`]).
    pub(super) fn around(&self, ip: IpAddr, egress: usize, (t, host): (Instant, &str)) -> Around {
        let seen = self.lock();
        let key = (ip, egress);
        let burst = seen.served.get(&key).map_or(0, |v| {
            v.iter()
                .filter(|s| s.sent <= t && (s.at > t || t.duration_since(s.at) < BURST_WINDOW))
                .count() as u32
        });
        let (served_after, refused_near) = seen.answers.get(&key).map_or((0, 0), |v| {
            let served = v.iter().filter(|a| a.settled && a.served && a.sent > t);
            let near = |a: &&OneAnswer| a.at > t || t.duration_since(a.at) < REFUSAL_WINDOW;
            let other = |a: &&OneAnswer| !a.host.eq_ignore_ascii_case(host);
            let refused = v
                .iter()
                .filter(|a| a.settled && !a.served)
                .filter(other)
                .filter(near);
            (served.count() as u32, refused.count() as u32)
        });
        Around {
            burst,
            served_after,
            refused_near,
        }
    }

    pub(super) fn count(&self, ip: IpAddr, egress: usize) -> u32 {
        self.count_where(ip, egress, |_| true)
    }

    /// A refusal (`signal`) from `ip` now may be a limit's that our own requests
    /// tripped: others of ours went out to it in the last [`BURST_WINDOW`], or it is
    /// what a limit answers and none of the IP's answers served us then (a limit still
    /// counting an earlier burst, another process's or our last run's, refuses our
    /// first request; the requests that would show it a storm may not have gone out).
    pub(super) fn amid_or_unserved(&self, ip: IpAddr, egress: usize, signal: Signal) -> bool {
        self.asked_lately(ip, egress) > 1
            || (signal.refuses_like_a_limit() && self.served(ip, egress) == 0)
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
                .filter(|a| a.at > t)
                .fold((0, 0), |(served, refused), a| {
                    if a.served {
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
                .filter(|a| now.duration_since(a.at) < BURST_WINDOW && keep(a.served))
                .count() as u32
        })
    }
}

/// `url` as a neighbour may be asked it: a job's user and password are the job's own.
fn without_credentials(url: &Url) -> Box<str> {
    if url.username().is_empty() && url.password().is_none() {
        return url.as_str().into();
    }
    let mut bare = url.clone();
    // Only URLs that cannot have credentials refuse these, and those have none.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare.as_str().into()
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

    fn a_url() -> Url {
        Url::parse("http://a.test/").unwrap()
    }

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
        let a = r.answered(ip, 0, &a_url(), Instant::now()); // A: its 403 page is still being read
        tokio::time::advance(Duration::from_secs(5)).await;
        let between = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        r.answered(ip, 0, &a_url(), Instant::now()); // B: served
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
            last = r.answered(ip, 0, &a_url(), Instant::now());
        }
        r.answered(ip, 1, &a_url(), Instant::now());
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
        r.answered(ip, 0, &a_url(), Instant::now());
        let refused = r.answered(ip, 0, &a_url(), Instant::now());
        r.refused(ip, 0, refused);
        assert_eq!(r.since(ip, 0, t), (1, 1));
        // At most PER_KEY instants are kept for one key.
        for _ in 0..20 {
            r.answered(ip, 0, &a_url(), Instant::now());
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

    /// A limit lets a burst's first requests through and refuses the next, whose 503 can
    /// come back before the answers let through (review AF: a 503 asking 120 s judged
    /// the site in maintenance). An answer to a request sent before the refusal is the
    /// burst it followed, wherever it came back; only one sent after it, and read, shows
    /// the IP serving us since. Refusals are counted once read, and not the one asked
    /// about.
    #[tokio::test(start_paused = true)]
    async fn answers_sent_before_a_refusal_are_its_burst_whenever_they_come_back() {
        let r = RecentAnswers::default();
        let ip: IpAddr = "192.0.2.8".parse().expect("ip");
        let url = |h: &str| Url::parse(&format!("http://{h}/")).unwrap();
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        for h in ["a.test", "b.test"] {
            let s = r.answered(ip, 0, &url(h), sent);
            r.served_us(ip, 0, s);
        }
        let earlier = r.answered(ip, 0, &url("e.test"), sent);
        r.refused(ip, 0, earlier);
        tokio::time::advance(Duration::from_millis(5)).await;
        let ours = r.answered(ip, 0, &url("x.test"), sent);
        r.refused(ip, 0, ours);
        let came = r.came(ip, 0, ours).expect("known");
        tokio::time::advance(Duration::from_millis(30)).await;
        // The burst's third answer comes back after the refusal.
        let late = r.answered(ip, 0, &url("c.test"), sent);
        r.served_us(ip, 0, late);
        let around = r.around(ip, 0, (came, "x.test"));
        assert_eq!(
            around,
            Around {
                burst: 3,
                served_after: 0,
                refused_near: 1
            }
        );
        // A refusal whose page is still being read, and an answer sent after ours but
        // not yet read, tell nothing yet.
        let now = Instant::now();
        let unread_refusal = r.answered(ip, 0, &url("f.test"), now);
        let unread = r.answered(ip, 0, &url("d.test"), now);
        assert_eq!(r.around(ip, 0, (came, "x.test")), around);
        r.refused(ip, 0, unread_refusal);
        r.served_us(ip, 0, unread);
        let after = r.around(ip, 0, (came, "x.test"));
        assert_eq!((after.served_after, after.refused_near), (1, 2));
        // Refusals from long before are no part of it.
        tokio::time::advance(REFUSAL_WINDOW * 3).await;
        let t = Instant::now();
        let alone = r.answered(ip, 0, &url("y.test"), t);
        r.refused(ip, 0, alone);
        let around = r.around(ip, 0, (t, "y.test"));
        assert_eq!((around.burst, around.refused_near), (0, 0));
    }

    /// A neighbour is a host that served us, the newest first, never the host asked
    /// about, and it outlives a storm of refusals that fills the answers' places.
    #[tokio::test(start_paused = true)]
    async fn a_neighbour_is_the_newest_other_host_that_served_us() {
        let r = RecentAnswers::default();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let url = |h: &str| Url::parse(&format!("http://user:pw@{h}:8080/x")).unwrap();
        assert_eq!(r.neighbour(ip, 0, "a.test"), None);
        r.answered(ip, 0, &url("a.test"), Instant::now());
        tokio::time::advance(Duration::from_millis(1)).await;
        r.answered(ip, 0, &url("b.test"), Instant::now());
        for i in 0..20 {
            let refused = r.answered(ip, 0, &url(&format!("r{i}.test")), Instant::now());
            r.refused(ip, 0, refused);
        }
        let of_a = r.neighbour(ip, 0, "A.test").map(String::from);
        assert_eq!(
            of_a.as_deref(),
            Some("http://b.test:8080/x"),
            "no credentials"
        );
        let of_b = r.neighbour(ip, 0, "b.test").map(String::from);
        assert_eq!(of_b.as_deref(), Some("http://a.test:8080/x"));
        assert_eq!(r.neighbour(ip, 1, "c.test"), None, "per egress");
    }
}
