//! Per-IP politeness: how often and how many requests may go to one resolved address.
//!
//! [`Limiter`] is the seam the prober asks before every request (first probes, retries,
//! confirmations and each redirect hop). [`Rules`] decides which [`Rate`] applies to an
//! address (default or an override) and what the limit is keyed by. Two limiters:
//! [`RedisLimiter`](redis::RedisLimiter), shared by every worker, and
//! [`LocalLimiter`](local::LocalLimiter), in memory, for `picket check` and as the
//! fallback while Redis is unavailable.
//!
//! Both are GCRA with reservations: a caller books the next free slot for its key at
//! once and then sleeps on its own, so a busy IP never holds back callers for other IPs;
//! a caller whose wait would exceed its `max_wait` books nothing and is told to defer.

mod lease;
pub mod local;
pub mod redis;
mod scripts;
pub(crate) mod standing;
mod swept;

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;

use crate::config::{LimitScope, OverrideMatch, Rate, RateLimitSettings};
pub use crate::probe::Line;

pub(crate) use self::lease::lease_for;
pub(crate) use self::local::LocalLimiter;
pub use self::standing::{Refusal, Signal};

/// One request about to be sent.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The resolved address it will be sent to.
    pub ip: IpAddr,
    /// The host name asked for (for host-suffix overrides).
    pub host: &'a str,
    /// The egress it goes through (for `egress_and_target` scope).
    pub egress: &'a str,
    /// Longest acceptable wait; past it the answer is [`Grant::Defer`].
    pub max_wait: Duration,
    /// Longest pause a host asked for ([`Hold::Asked`]) that is waited out; past it the
    /// answer is [`Grant::Paused`]. A hold of ours is waited for up to `max_wait`.
    pub max_pause: Duration,
    /// Where its job stands in the IP's line of deferred jobs.
    pub line: Line,
    /// Asked alone (a slow answer's confirmation, `Plan::alone`): booked only once no
    /// other request to its IP is out, any worker's, waiting for that at most this
    /// long; then booked beside them like any request. A limiter that sees only this
    /// process's requests leaves it to the prober's own count.
    pub alone: Option<Duration>,
}

impl<'a> Request<'a> {
    /// A request already sent, as the limiter is told how its IP answered: it waits
    /// for nothing and stands in no line.
    pub fn sent(ip: IpAddr, host: &'a str, egress: &'a str) -> Request<'a> {
        Request {
            ip,
            host,
            egress,
            max_wait: Duration::ZERO,
            max_pause: Duration::ZERO,
            line: Line::Outside,
            alone: None,
        }
    }
}

/// A hold on one host: no request goes to it before the pause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The host asked for the pause (`Retry-After`): a request that may not wait it out
    /// ([`Request::max_pause`]) is answered at once, nothing sent.
    Asked(Duration),
    /// Ours: the host refused right after its IP served a burst, and a per-client ban may
    /// have caught only its request. Our own limit, waited for like the rate.
    Ours(Duration),
}

impl Hold {
    /// How long the hold lasts.
    pub fn pause(self) -> Duration {
        match self {
            Hold::Asked(p) | Hold::Ours(p) => p,
        }
    }

    /// The same hold, `left` from now.
    pub(crate) fn with_pause(self, left: Duration) -> Hold {
        match self {
            Hold::Asked(_) => Hold::Asked(left),
            Hold::Ours(_) => Hold::Ours(left),
        }
    }
}

/// A backed-off IP's slot within this of the one before it went out at our pace: rate
/// limits count a client's requests per second (haproxy's `http_req_rate(1s)`, nginx's
/// `limit_req` in r/s), and a request asked alone trips none of them.
pub const PACE_WINDOW: Duration = Duration::from_secs(1);

/// Leave to send one request; the in-flight slot is freed when it is dropped.
pub struct Permit {
    /// Time spent waiting for it.
    pub waited: Duration,
    /// Its IP is backed off and its slot came within [`PACE_WINDOW`] of the one before,
    /// whichever worker had that: a limit counting requests per second that our pace
    /// is over may hold it (`Signal::HeldAtOurPace`).
    pub at_our_pace: bool,
    /// Requests to its IP that were out when it was booked, any worker's (this
    /// process's among them): it may wait behind them in a limit's queue. 0 from a
    /// limiter that sees only this process (the prober counts its own).
    pub beside: u32,
    /// Where its booking left the IP's schedule (µs, the shared limiter's arrival
    /// time): any later booking moves it on ([`Limiter::booked_since`]). `None` from
    /// a limiter that sees only this process.
    pub booked: Option<u64>,
    _slot: Option<Box<dyn Send + Sync>>,
    /// Held with it for the request's life: its egress's connection slot.
    _kept: Option<Box<dyn Send + Sync>>,
}

impl Permit {
    /// A permit that releases `slot` when dropped.
    pub(crate) fn holding(waited: Duration, slot: Box<dyn Send + Sync>) -> Permit {
        Permit {
            waited,
            at_our_pace: false,
            beside: 0,
            booked: None,
            _slot: Some(slot),
            _kept: None,
        }
    }

    /// Leave for a request sent on a slot another request of the same probe still
    /// holds: the question to a neighbour, asked while the refused request's answer is
    /// in and its body unread. Waiting behind that slot for one of its own would wait
    /// for itself.
    pub(crate) fn on_a_held_slot() -> Permit {
        Permit {
            waited: Duration::ZERO,
            at_our_pace: false,
            beside: 0,
            booked: None,
            _slot: None,
            _kept: None,
        }
    }

    /// The same, its slot at our pace or not ([`Permit::at_our_pace`]).
    pub(crate) fn paced(self, at_our_pace: bool) -> Permit {
        Permit {
            at_our_pace,
            ..self
        }
    }

    /// Frees its slot now, before the permit itself goes: a request that is followed by
    /// another to the same IP hands its slot back before the next one asks for its own.
    pub(crate) fn release(&mut self) {
        self._slot = None;
        self._kept = None;
    }

    /// Holds `kept` (a slot of another limit the request is sent under) until the
    /// permit goes or is released.
    pub(crate) fn keep(&mut self, kept: impl Send + Sync + 'static) {
        self._kept = Some(Box::new(kept));
    }
}

/// The limiter's answer.
pub enum Grant {
    /// Go now.
    Go(Permit),
    /// Waiting would take about this long, more than allowed: try again later.
    Defer(Duration),
    /// The host asked (`Retry-After`, a 429's) to be sent nothing for this long more,
    /// longer than the request may wait: nothing is to be sent, and coming back later
    /// would only be told the same by the next check; the job is answered at once.
    Paused(Duration),
}

/// Grants leave to send a request to an address.
pub trait Limiter: Send + Sync {
    /// Waits (up to `req.max_wait`) until the request is allowed.
    fn acquire<'a>(&'a self, req: Request<'a>) -> BoxFuture<'a, Grant>;

    /// `req.host` is held (it said `Retry-After`, or we hold it): no request goes to that
    /// host before the pause ends, and none to the whole IP when several of its hosts are
    /// held at once.
    fn hold<'a>(&'a self, req: Request<'a>, hold: Hold) -> BoxFuture<'a, ()> {
        let _ = (req, hold);
        Box::pin(async {})
    }

    /// `req`'s IP took `latency` to answer (connection ready to response headers):
    /// requests to it are spaced at least a smoothed latency apart, so a server slowing
    /// down under our load gets fewer of them (AutoThrottle-style, target concurrency 1).
    fn latency(&self, req: &Request<'_>, latency: Duration) {
        let _ = (req, latency);
    }

    /// The back-off level of `req`'s IP as this limiter last saw it (0: none, as when
    /// it never refused us): no I/O.
    fn level(&self, req: &Request<'_>) -> u32 {
        let _ = req;
        0
    }

    /// Whether `req`'s IP was held and the hold is over, with no answer from it since,
    /// as this limiter last saw it (no I/O). A close then is asked about before the
    /// limiter reads it (`http::neighbour`). Not during the hold, when the burst's
    /// requests still come back, nor once the IP answered: a limit refusing what is
    /// still too fast lets a request through now and then, a neighbour's too.
    fn quiet_after_hold(&self, req: &Request<'_>) -> bool {
        let _ = req;
        false
    }

    /// Whether another request to `req`'s IP was booked after the permit that left
    /// its schedule at `booked` ([`Permit::booked`]), any worker's: one booked right
    /// after ours may reach the server first, and ours waits behind it in a limit's
    /// queue. Asked about a slow answer only; `true` when it cannot be told.
    fn booked_since<'a>(&'a self, req: Request<'a>, booked: u64) -> BoxFuture<'a, bool> {
        let _ = (req, booked);
        Box::pin(async { true })
    }

    /// How `req`'s IP answered. `Some` when the answer is taken for a refusal of *us*
    /// (see [`standing`]): the IP is then held and backed off, and a request for it
    /// waits for the hold.
    fn answered<'a>(&'a self, req: Request<'a>, signal: Signal) -> BoxFuture<'a, Option<Refusal>> {
        let _ = (req, signal);
        Box::pin(async { None })
    }
}

/// How long after its jobs were due a line of deferred jobs stays live with none of them
/// back (at least two intervals): a line whose jobs were purged from a delay queue, or
/// that nobody came back to, is not waited behind.
pub(crate) const LINE_GRACE: Duration = Duration::from_secs(5);

/// The least lateness on a slot that gives it up: a timer's and a busy scheduler's
/// usual lateness stays well below it.
const LATE_FLOOR: Duration = Duration::from_millis(50);

/// Whether a caller that slept until `due`, its booked slot, woke too late to send on
/// it: more than half of `rate`'s interval (and [`LATE_FLOOR`]) after it. A process
/// stopped meanwhile (a paused VM, a CPU quota used up, a host swapping) wakes every
/// caller whose slot passed at once, and sending them all put a burst beside the slots
/// that came next, one the IP's limit never allowed (8 requests in 1 s at 4/s, burst 2,
/// after a 1.5 s stop). Such a slot went by unused: the caller books again, and no two
/// requests come closer than half an interval through our lateness. Once per request:
/// one late on its second slot too is sent, so that a worker starved of CPU all the
/// time (a container throttled by its CPU quota every 100 ms) slows to half its rate
/// at worst rather than missing every slot.
pub(crate) fn woke_late(due: Instant, rate: Rate) -> bool {
    let half = Duration::try_from_secs_f64(0.5 / rate.rate).unwrap_or(Duration::MAX);
    let late = Instant::now().saturating_duration_since(due) > half.max(LATE_FLOOR);
    if late {
        crate::metric::slot_missed();
    }
    late
}

/// How requests to one IP are spaced now (the Lua `BOOK` script does the same in Redis).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spacing {
    /// Between two requests.
    pub(crate) interval: Duration,
    /// Requests that may go ahead of the steady rate.
    pub(crate) burst: u32,
    /// Whether the IP's answer time, not the rate, sets the interval.
    pub(crate) paced: bool,
}

impl Spacing {
    /// `rate`, halved per back-off `level` of an IP that refused us, and no faster than
    /// the IP answers (`pace_ms`, its smoothed latency); no burst once either applies.
    pub(crate) fn of(rate: Rate, level: u32, pace_ms: f64) -> Spacing {
        let per_second = rate.rate / f64::from(1u32 << level.min(16));
        let steady = 1.0 / per_second;
        let pace = pace_ms / 1000.0;
        let paced = pace > steady;
        Spacing {
            interval: Duration::from_secs_f64(steady.max(pace)),
            burst: if level > 0 || paced { 1 } else { rate.burst },
            paced,
        }
    }
}

/// Which limits apply to a request, and the key they are kept under.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    settings: RateLimitSettings,
}

impl Rules {
    /// Rules from `[rate_limit]`.
    pub(crate) fn new(settings: &RateLimitSettings) -> Rules {
        Rules {
            settings: settings.clone(),
        }
    }

    /// The limits for a request: the first matching CIDR override, else the first
    /// matching host-suffix override, else the default.
    pub(crate) fn rate_for(&self, req: &Request<'_>) -> Rate {
        let overrides = &self.settings.overrides;
        let by_cidr = overrides.iter().find(|o| match &o.matches {
            OverrideMatch::Cidr(net) => net.contains(&canonical(req.ip)),
            OverrideMatch::HostSuffix(_) => false,
        });
        // Lower-cased only when a host rule is looked at: asked several times a request.
        let by_host = || {
            let mut host = None;
            overrides.iter().find(|o| match &o.matches {
                OverrideMatch::HostSuffix(suffix) => {
                    let host = host
                        .get_or_insert_with(|| req.host.trim_end_matches('.').to_ascii_lowercase());
                    host == suffix.trim_start_matches('.') || host.ends_with(suffix.as_str())
                }
                OverrideMatch::Cidr(_) => false,
            })
        };
        by_cidr
            .or_else(by_host)
            .map_or(self.settings.per_ip, |o| o.rate)
    }

    /// How far ahead a deferred job may be given a place in its IP's line.
    pub(crate) fn max_defer(&self) -> Duration {
        self.settings.max_defer
    }

    /// The key a request's budget is kept under (an IP, or egress and IP).
    pub(crate) fn key(&self, req: &Request<'_>) -> String {
        let ip = canonical(req.ip);
        match self.settings.scope {
            LimitScope::Target => ip.to_string(),
            LimitScope::EgressAndTarget => format!("{}|{ip}", req.egress),
        }
    }
}

/// IPv4-mapped IPv6 addresses share their IPv4 address's budget.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn req<'a>(ip: &str, host: &'a str, egress: &'a str) -> Request<'a> {
        Request {
            ip: ip.parse().expect("ip"),
            host,
            egress,
            max_wait: Duration::from_secs(1),
            max_pause: Duration::from_secs(1),
            line: crate::limit::Line::Outside,
            alone: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_missed_past_half_an_interval_and_never_within_50_ms() {
        let at = |rate: f64| Rate {
            rate,
            burst: 1,
            max_inflight: 1,
        };
        let due = Instant::now();
        let after = |ms: u64| due - Duration::from_millis(ms);
        // 4/s: half an interval is 125 ms.
        assert!(!woke_late(after(120), at(4.0)));
        assert!(woke_late(after(130), at(4.0)));
        // 100/s: half an interval (5 ms) is within a busy scheduler's lateness.
        assert!(!woke_late(after(45), at(100.0)));
        assert!(woke_late(after(55), at(100.0)));
        // A slot still ahead is not late.
        assert!(!woke_late(due + Duration::from_secs(1), at(0.1)));
    }

    #[test]
    fn spacing_halves_per_back_off_level_and_waits_for_a_slow_ip_without_burst() {
        let rate = Rate {
            rate: 4.0,
            burst: 3,
            max_inflight: 2,
        };
        let ms = |s: Spacing| s.interval.as_millis();
        let plain = Spacing::of(rate, 0, 0.0);
        assert_eq!((ms(plain), plain.burst, plain.paced), (250, 3, false));
        let backed_off = Spacing::of(rate, 2, 0.0);
        assert_eq!((ms(backed_off), backed_off.burst), (1000, 1));
        let slow = Spacing::of(rate, 0, 2500.0);
        assert_eq!((ms(slow), slow.burst, slow.paced), (2500, 1, true));
        // A pace under the interval changes nothing.
        assert_eq!(Spacing::of(rate, 0, 100.0), plain);
    }

    #[test]
    fn overrides_match_by_cidr_first_then_host_suffix() {
        let s = Settings::from_toml(
            "[[rate_limit.override]]\nhost_suffix = \".gov.example\"\nrate = 1.5\nburst = 1\nmax_inflight = 2\n\
             [[rate_limit.override]]\ncidr = \"198.51.100.0/24\"\nrate = 0.5\nburst = 1\nmax_inflight = 1\n",
        )
        .expect("settings");
        let rules = Rules::new(&s.rate_limit);
        assert_eq!(
            rules
                .rate_for(&req("198.51.100.7", "a.gov.example", "d"))
                .rate,
            0.5
        );
        assert_eq!(
            rules
                .rate_for(&req("::ffff:198.51.100.7", "x.test", "d"))
                .rate,
            0.5
        );
        assert_eq!(
            rules.rate_for(&req("192.0.2.1", "a.gov.example", "d")).rate,
            1.5
        );
        assert_eq!(
            rules.rate_for(&req("192.0.2.1", "gov.example", "d")).rate,
            1.5
        );
        assert_eq!(
            rules
                .rate_for(&req("192.0.2.1", "notgov.example", "d"))
                .rate,
            s.rate_limit.per_ip.rate,
            "no rule: the default"
        );
    }

    #[test]
    fn keys_follow_the_scope() {
        let mut s = Settings::from_toml("").expect("settings");
        let rules = Rules::new(&s.rate_limit);
        assert_eq!(rules.key(&req("192.0.2.1", "h", "proxy-a")), "192.0.2.1");
        assert_eq!(
            rules.key(&req("::ffff:192.0.2.1", "h", "proxy-a")),
            "192.0.2.1"
        );
        s.rate_limit.scope = LimitScope::EgressAndTarget;
        let rules = Rules::new(&s.rate_limit);
        assert_eq!(
            rules.key(&req("192.0.2.1", "h", "proxy-a")),
            "proxy-a|192.0.2.1"
        );
    }
}
