//! Witnesses: sites that answered lately through each egress. With no canaries
//! configured, a site that no connection reached is judged on our own traffic alone,
//! and a quiet worker's traffic may hold nothing beside its attempts: its way out
//! refusing everything looked like the site refusing. Before such a `down` is believed,
//! a site that answered through the same egress is asked again: if it is not reached
//! either (or, for a site whose connections were reset or came up to no answer, fails
//! so too), the way out is ours. A witness whose connection comes up (whose answer
//! comes back, for a hang) shows the way out works now; one that fails in another way
//! (a name not found) leaves the `down` standing.
//!
//! Which sites are witnesses, and what an asked witness says, is plain data
//! ([`Witnesses::answered`], [`said`]); [`Witnesses::ask`] is the one place that probes.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use crate::engine::{Attempt, Prober};
use crate::probe::{Observation, Outcome, Plan};

use super::{health_of, hung, signal_of, Blame};
use crate::egress::{Health, Signal};

/// How long an answer makes a site a witness. Sites that all die at once (a quiet
/// worker's few sites, one provider's outage) witness against each other: their own
/// `down`s are `unknown` until the answers that made them witnesses are this old.
const FRESH: Duration = Duration::from_secs(300);

/// A witness asked this lately gives way to one that was not, newest first: a quiet
/// worker's dead sites would each ask the newest witness again.
const REST: Duration = Duration::from_secs(60);

/// Witnesses kept per egress.
const KEPT: usize = 4;

/// Witnesses asked for one failure at most.
const ASKED: usize = 2;

/// A kept witness gives way to a newer site only when its answer is older than this:
/// the healthy path pays a comparison per answer, not an allocation.
const TURNOVER: Duration = Duration::from_secs(1);

/// Checks through one egress begin at least this far apart: an outage of many sites
/// fails a stream of them, each set out after the last check began, and asking the
/// witnesses for each would send them a request per dead site. The failures that wait
/// share the next check.
const SPACING: Duration = Duration::from_secs(1);

/// A site that answered through an egress: the URL and address of its final answer
/// (asked again, it is asked no redirect and no HTTPS upgrade).
#[derive(Debug, Clone)]
struct Witness {
    url: String,
    ip: Option<IpAddr>,
    at: Instant,
    /// When it was last asked as a witness.
    asked: Option<Instant>,
}

/// What one asked witness said about the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Said {
    /// It answered, or a connection to it came up: the way out works.
    Reached,
    /// Nothing came back, or it was refused before any connection came up (or, asked
    /// about a reset or a hang, it failed so too).
    Unreached,
    /// Something else (a name not found, our own limits): no word either way.
    Nothing,
}

/// How the failure a witness is asked about went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failed {
    /// No connection came up: refused, or silent.
    Unreached,
    /// Its connections were reset.
    Reset,
    /// Its connection came up and nothing came back ([`hung`]).
    Hung,
}

impl Failed {
    /// How `obs` failed, if witnesses speak of such a failure.
    pub(super) fn of(obs: &Observation) -> Option<Failed> {
        if super::reset(obs) {
            Some(Failed::Reset)
        } else if hung(obs) {
            Some(Failed::Hung)
        } else {
            super::unreached(obs).then_some(Failed::Unreached)
        }
    }
}

/// What an attempt at a witness says about the way out it went through, asked about a
/// failure that went as `how` says: a witness that fails as the site did, or reaches
/// nothing, says the way out failed. A connection coming up shows the way out works,
/// except to a hang, which came up too: there only an answer does.
pub(super) fn said(obs: &Observation, how: Failed) -> Said {
    let answered = health_of(&obs.outcome) == Health::Works;
    match signal_of(obs) {
        Signal::Silent | Signal::Refused => Said::Unreached,
        _ if how == Failed::Reset && super::reset(obs) => Said::Unreached,
        _ if how == Failed::Hung && hung(obs) => Said::Unreached,
        _ if answered || (how != Failed::Hung && obs.connect.is_some()) => Said::Reached,
        _ => Said::Nothing,
    }
}

/// The failure a witness is asked about.
pub(super) struct Failing<'a> {
    /// The egress its decisive attempt went through.
    pub egress: usize,
    /// Its site.
    pub url: &'a Url,
    /// The address that was not reached.
    pub ip: Option<IpAddr>,
    /// When its decisive attempt set out: only witnesses asked after it speak for it.
    pub since: Instant,
    /// How it failed.
    pub how: Failed,
}

/// One asking of witnesses through an egress.
#[derive(Debug, Clone)]
struct Check {
    began: Instant,
    /// The addresses asked: a check that asked the failing site itself says nothing of it.
    asked: Vec<Option<IpAddr>>,
    /// How the failure it was asked about went.
    how: Failed,
    /// What it made of the failures it speaks for.
    blame: Blame,
}

/// Each egress's witnesses, and its last check.
pub(super) struct Witnesses {
    kept: std::sync::Mutex<Vec<Kept>>,
    checks: Vec<tokio::sync::Mutex<Option<Check>>>,
    /// A plain GET that follows no redirect: any answer will do.
    plan: Plan,
}

/// One egress's witnesses.
#[derive(Debug, Default)]
struct Kept {
    witnesses: Vec<Witness>,
}

impl Witnesses {
    /// No witnesses yet for `egresses` ways out; `plan` is asked of each (its URL
    /// replaced).
    pub(super) fn new(egresses: usize, mut plan: Plan) -> Witnesses {
        plan.max_redirects = 0;
        // A connection coming up is all a witness need show: one that then hangs must
        // not hold the failures waiting for the check for a whole probe's time.
        plan.timeout = plan.timeout.min(plan.connect_timeout * 2);
        let egresses = egresses.max(1);
        Witnesses {
            kept: std::sync::Mutex::new((0..egresses).map(|_| Kept::default()).collect()),
            checks: (0..egresses)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            plan,
        }
    }

    /// `url`, at `ip`, answered through `egress` at `now`.
    pub(super) fn answered(&self, egress: usize, url: &str, ip: Option<IpAddr>, now: Instant) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kept) = kept.get_mut(egress) else {
            return;
        };
        let list = &mut kept.witnesses;
        if let Some(w) = list.iter_mut().find(|w| w.url == url) {
            (w.ip, w.at) = (ip, now);
            return;
        }
        let fresh = Witness {
            url: url.to_string(),
            ip,
            at: now,
            asked: None,
        };
        if list.len() < KEPT {
            list.push(fresh);
        } else if let Some(oldest) = list.iter_mut().min_by_key(|w| w.at) {
            if now.saturating_duration_since(oldest.at) >= TURNOVER {
                *oldest = fresh;
            }
        }
    }

    /// The site at `ip` is no witness any more: believed `down` for no connection, or
    /// turning us away.
    pub(super) fn forget(&self, ip: Option<IpAddr>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for k in kept.iter_mut() {
            k.witnesses.retain(|w| ip.is_none() || w.ip != ip);
        }
    }

    /// The witnesses to ask about `failing`, newest first: other sites, at other
    /// addresses of the same family, that answered through its egress lately.
    fn chosen(&self, failing: &Failing<'_>, now: Instant) -> Vec<Witness> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kept) = kept.get(failing.egress) else {
            return Vec::new();
        };
        let mut chosen: Vec<Witness> = kept
            .witnesses
            .iter()
            .filter(|w| now.saturating_duration_since(w.at) < FRESH)
            .filter(|w| Url::parse(&w.url).is_ok_and(|u| u.host() != failing.url.host()))
            .filter(|w| failing.ip.is_none() || w.ip != failing.ip)
            // A way out may fail for one family alone (IPv6 lost upstream): an IPv4
            // site's answer says nothing of an IPv6 address.
            .filter(|w| match (w.ip, failing.ip) {
                (Some(a), Some(b)) => a.is_ipv4() == b.is_ipv4(),
                _ => true,
            })
            .cloned()
            .collect();
        let rested = |w: &Witness| {
            w.asked
                .is_none_or(|t| now.saturating_duration_since(t) >= REST)
        };
        chosen.sort_by_key(|w| (!rested(w), std::cmp::Reverse(w.at)));
        chosen.truncate(ASKED);
        chosen
    }

    /// `chosen` were asked through `egress` at `now`.
    fn mark_asked(&self, egress: usize, chosen: &[Witness], now: Instant) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kept) = kept.get_mut(egress) else {
            return;
        };
        for w in kept.witnesses.iter_mut() {
            if chosen.iter().any(|c| c.url == w.url) {
                w.asked = Some(now);
            }
        }
    }

    /// Whose `failing` is, as witnesses say: ours when every one asked was unreached
    /// too, else the site's. `None`: there was none to ask.
    pub(super) async fn ask(&self, prober: &dyn Prober, failing: &Failing<'_>) -> Option<Blame> {
        let slot = self.checks.get(failing.egress)?;
        // One check at a time per egress: a batch of dead sites waits for one.
        let mut last = slot.lock().await;
        if let Some(check) = last.as_ref().filter(|c| Witnesses::speaks(c, failing)) {
            return Some(check.blame.clone());
        }
        if let Some(check) = last.as_ref() {
            tokio::time::sleep_until(check.began + SPACING).await;
        }
        let now = Instant::now();
        let chosen = self.chosen(failing, now);
        if chosen.is_empty() {
            return None;
        }
        self.mark_asked(failing.egress, &chosen, now);
        let (said, ours) = self.asked(prober, failing, &chosen, now).await;
        told(said, &ours);
        let blame = match (said, ours) {
            (Said::Unreached, Some(why)) => Blame::Ours(why),
            _ => Blame::Site,
        };
        *last = Some(Check {
            began: now,
            asked: chosen.iter().map(|w| w.ip).collect(),
            how: failing.how,
            blame: blame.clone(),
        });
        Some(blame)
    }

    /// Whether the last `check` through the failing site's egress speaks for it: asked
    /// after it set out, about a failure of its kind, and not of the failing site
    /// itself. A way out found ours speaks for no later failure: it may be mended.
    fn speaks(check: &Check, failing: &Failing<'_>) -> bool {
        let of_itself = failing.ip.is_some() && check.asked.contains(&failing.ip);
        !of_itself && check.how == failing.how && check.began >= failing.since
    }

    /// Asks `chosen` in turn through the failing site's egress: what they said, and why
    /// the way out is ours when every one was unreached (one that said nothing, a
    /// site failing its own way, leaves the `down` standing).
    async fn asked(
        &self,
        prober: &dyn Prober,
        failing: &Failing<'_>,
        chosen: &[Witness],
        now: Instant,
    ) -> (Said, Option<String>) {
        let mut first_unreached = None;
        for w in chosen {
            let mut plan = self.plan.clone();
            let Ok(url) = Url::parse(&w.url) else {
                return (Said::Nothing, None);
            };
            plan.url = url;
            let Attempt::Observed(obs) = prober.observe(&plan, failing.egress).await else {
                return (Said::Nothing, None);
            };
            match said(&obs, failing.how) {
                Said::Unreached => {
                    first_unreached.get_or_insert((w, obs));
                }
                other => return (other, None),
            }
        }
        let Some((w, obs)) = first_unreached else {
            return (Said::Nothing, None);
        };
        let ago = now.saturating_duration_since(w.at).as_secs();
        let why = match &obs.outcome {
            Outcome::Failure(f) => f.detail.clone(),
            Outcome::Answer(_) => String::new(),
        };
        let fails = match failing.how {
            Failed::Hung => "does not answer",
            Failed::Unreached | Failed::Reset => "is not reached",
        };
        let why = format!(
            "{} answered through the same way out {ago} s before and {fails} now either \
             ({why}): our way out, not the site",
            w.url
        );
        (Said::Unreached, Some(why))
    }
}

/// Tells the metrics, and the log when the way out is ours, what a check said.
fn told(said: Said, ours: &Option<String>) {
    let name = match said {
        Said::Reached => "reached",
        Said::Unreached => "unreached",
        Said::Nothing => "nothing",
    };
    crate::metric::witness_check(name);
    if let Some(why) = ours {
        // At most once per check, and a check that found the way out ours stands 30 s.
        tracing::warn!(witness = %why, "a site that answered lately through this way out is not reached either: unreached sites are our side's failure, not down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Answer, Failure, FailureKind};
    use futures_util::future::BoxFuture;

    fn plan() -> Plan {
        let url = Url::parse("http://witness.invalid/").expect("url");
        let job = crate::job::Job::plain_get("w", "w".into(), url);
        let s = crate::config::Settings::from_toml("").expect("defaults");
        Plan::new(&job, &s.probe)
    }

    fn url(n: u8) -> Url {
        Url::parse(&format!("http://site{n}.test/")).expect("url")
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    /// A failure of `url` at `ip` through egress 0, set out `since`, that reached nothing.
    fn failing(url: &Url, ip: Option<IpAddr>, since: Instant) -> Failing<'_> {
        Failing {
            egress: 0,
            url,
            ip,
            since,
            how: Failed::Unreached,
        }
    }

    #[test]
    fn the_newest_other_sites_that_answered_through_the_egress_are_asked() {
        let w = Witnesses::new(2, plan());
        let t = Instant::now();
        for n in 1..=6 {
            w.answered(
                0,
                url(n).as_str(),
                ip(n),
                t + Duration::from_secs(u64::from(n)),
            );
        }
        w.answered(1, url(9).as_str(), ip(9), t);
        let u = url(6);
        let f = failing(&u, ip(6), t + Duration::from_secs(10));
        let chosen = w.chosen(&f, t + Duration::from_secs(10));
        let hosts: Vec<_> = chosen.iter().map(|w| w.url.clone()).collect();
        // Four kept (5 and 6 took the two oldest places); the failing site is no
        // witness of itself; the other egress's is not asked.
        assert_eq!(hosts, ["http://site5.test/", "http://site4.test/"]);
        // An answer older than FRESH is no witness; a site believed down is forgotten.
        assert!(w.chosen(&f, t + FRESH + Duration::from_secs(7)).is_empty());
        w.forget(ip(5));
        let hosts: Vec<_> = w
            .chosen(&f, t + Duration::from_secs(10))
            .iter()
            .map(|w| w.url.clone())
            .collect();
        assert_eq!(hosts, ["http://site4.test/", "http://site3.test/"]);
    }

    #[test]
    fn an_ipv4_sites_answer_is_no_witness_for_an_ipv6_address() {
        let w = Witnesses::new(1, plan());
        let t = Instant::now();
        w.answered(0, url(1).as_str(), ip(1), t);
        let v6 = Some(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 2]));
        w.answered(
            0,
            url(3).as_str(),
            Some(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 3])),
            t,
        );
        let u = url(2);
        let f = failing(&u, v6, t);
        let chosen: Vec<_> = w.chosen(&f, t).into_iter().map(|w| w.url).collect();
        assert_eq!(chosen, [url(3).as_str()]);
    }

    #[test]
    fn a_kept_witness_gives_way_only_once_its_answer_is_a_second_old() {
        let w = Witnesses::new(1, plan());
        let t = Instant::now();
        for n in 1..=4 {
            w.answered(0, url(n).as_str(), ip(n), t);
        }
        w.answered(0, url(5).as_str(), ip(5), t + Duration::from_millis(500));
        let u = url(9);
        let f = failing(&u, ip(9), t);
        let at = t + Duration::from_secs(2);
        assert!(w.chosen(&f, at).iter().all(|w| w.url != url(5).as_str()));
        w.answered(0, url(5).as_str(), ip(5), t + TURNOVER);
        assert_eq!(w.chosen(&f, at)[0].url, url(5).as_str());
    }

    /// Answers every witness after 10 ms, counting them.
    struct Answering(std::sync::atomic::AtomicUsize);

    impl Prober for Answering {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, _plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                let mut o = Observation::new("e");
                o.outcome = Outcome::Answer(Answer::default());
                Attempt::Observed(o)
            })
        }
    }

    /// A stream of dead sites' failures, one every 10 ms for 3 s (an outage of many
    /// sites), asks the witnesses about once a second, not once per failure; each is
    /// believed (the witness answers).
    #[tokio::test(start_paused = true)]
    async fn a_stream_of_failures_shares_a_check_a_second() {
        let w = std::sync::Arc::new(Witnesses::new(1, plan()));
        let prober = std::sync::Arc::new(Answering(std::sync::atomic::AtomicUsize::new(0)));
        w.answered(0, url(1).as_str(), ip(1), Instant::now());
        let mut tasks = Vec::new();
        for n in 0..300u32 {
            let (w, prober) = (w.clone(), prober.clone());
            tasks.push(tokio::spawn(async move {
                let failing_url = url(2);
                let f = Failing {
                    egress: 0,
                    url: &failing_url,
                    ip: Some(IpAddr::from([127, 0, 1, (n % 250) as u8])),
                    since: Instant::now(),
                    how: Failed::Unreached,
                };
                w.ask(prober.as_ref(), &f).await
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for t in tasks {
            assert_eq!(t.await.expect("a check"), Some(Blame::Site));
        }
        let asked = prober.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (3..=5).contains(&asked),
            "{asked} witness requests for 300 failures"
        );
    }

    #[test]
    fn a_witness_asked_lately_gives_way_to_one_that_was_not() {
        let w = Witnesses::new(1, plan());
        let t = Instant::now();
        for n in 1..=3 {
            w.answered(
                0,
                url(n).as_str(),
                ip(n),
                t + Duration::from_secs(u64::from(n)),
            );
        }
        let u = url(9);
        let f = failing(&u, ip(9), t);
        let at = t + Duration::from_secs(10);
        let first = w.chosen(&f, at);
        w.mark_asked(0, &first, at);
        let urls = |c: Vec<Witness>| c.into_iter().map(|w| w.url).collect::<Vec<_>>();
        assert_eq!(urls(first), [url(3).as_str(), url(2).as_str()]);
        // The one not asked comes first, then the newest of those asked.
        assert_eq!(urls(w.chosen(&f, at)), [url(1).as_str(), url(3).as_str()]);
        // Rested, the newest first again.
        assert_eq!(
            urls(w.chosen(&f, at + REST)),
            [url(3).as_str(), url(2).as_str()]
        );
    }

    #[test]
    fn a_check_speaks_only_for_failures_of_its_kind_set_out_before_it() {
        let t = Instant::now();
        let check = Check {
            began: t,
            asked: vec![ip(1)],
            how: Failed::Unreached,
            blame: Blame::Ours("ours".into()),
        };
        let u = url(2);
        let failing = |ip, since, reset: bool| Failing {
            egress: 0,
            url: &u,
            ip,
            since,
            how: if reset {
                Failed::Reset
            } else {
                Failed::Unreached
            },
        };
        assert!(Witnesses::speaks(&check, &failing(ip(2), t, false)));
        // Set out after it: the way out may be mended since.
        let later = t + Duration::from_millis(1);
        assert!(!Witnesses::speaks(&check, &failing(ip(2), later, false)));
        // A reset, or the witness itself failing, asks anew.
        assert!(!Witnesses::speaks(&check, &failing(ip(2), t, true)));
        assert!(!Witnesses::speaks(&check, &failing(ip(1), t, false)));
    }

    /// Answers each witness with the next of its outcomes.
    struct Scripted(std::sync::Mutex<Vec<Outcome>>);

    impl Prober for Scripted {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, _plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let mut o = Observation::new("e");
                o.outcome = self.0.lock().expect("lock").remove(0);
                Attempt::Observed(o)
            })
        }
    }

    /// Two witnesses: the way out is ours only when both are unreached. One failing in
    /// a way that says nothing of the way out (its name gone) leaves the `down` standing,
    /// whatever the other did (helper-93's hunt: one witness hung, the other dead, and a
    /// dead site was `unknown`).
    #[tokio::test]
    async fn the_way_out_is_ours_only_when_every_witness_asked_is_unreached() {
        let refused = || {
            Outcome::Failure(crate::probe::Failure {
                kind: FailureKind::Connect,
                detail: "refused".into(),
            })
        };
        let gone = Outcome::Failure(crate::probe::Failure {
            kind: FailureKind::Dns,
            detail: "no such name".into(),
        });
        let t = Instant::now();
        let u = url(9);
        let f = failing(&u, ip(9), t);
        for (outcomes, ours) in [
            (vec![refused(), refused()], true),
            (vec![gone.clone(), refused()], false),
            (vec![refused(), gone.clone()], false),
        ] {
            let w = Witnesses::new(1, plan());
            w.answered(0, url(1).as_str(), ip(1), t);
            w.answered(0, url(2).as_str(), ip(2), t);
            let prober = Scripted(std::sync::Mutex::new(outcomes));
            assert_eq!(
                matches!(w.ask(&prober, &f).await, Some(Blame::Ours(_))),
                ours
            );
        }
    }

    #[test]
    fn only_no_connection_says_the_way_out_failed() {
        let mut answered = Observation::new("e");
        answered.outcome = Outcome::Answer(Answer::default());
        assert_eq!(said(&answered, Failed::Unreached), Said::Reached);
        let failed = |kind| {
            let mut o = Observation::new("e");
            o.outcome = Outcome::Failure(Failure {
                kind,
                detail: "x".into(),
            });
            o
        };
        assert_eq!(
            said(&failed(FailureKind::Connect), Failed::Unreached),
            Said::Unreached
        );
        assert_eq!(
            said(&failed(FailureKind::Egress), Failed::Unreached),
            Said::Unreached
        );
        assert_eq!(
            said(&failed(FailureKind::TooManyRedirects), Failed::Unreached),
            Said::Reached
        );
        assert_eq!(
            said(&failed(FailureKind::Reset), Failed::Unreached),
            Said::Nothing
        );
        // Asked about a site whose connections were reset, a witness reset too fails
        // as it did; one that answered or was refused says so as before.
        assert_eq!(
            said(&failed(FailureKind::Reset), Failed::Reset),
            Said::Unreached
        );
        assert_eq!(said(&answered, Failed::Reset), Said::Reached);
        assert_eq!(
            said(&failed(FailureKind::Connect), Failed::Reset),
            Said::Unreached
        );
        assert_eq!(
            said(&failed(FailureKind::Dns), Failed::Reset),
            Said::Nothing
        );
        // A connection that came up shows the way out works, whatever came after it.
        let mut hung = failed(FailureKind::Timeout);
        hung.connect = Some(Duration::from_millis(1));
        assert_eq!(said(&hung, Failed::Unreached), Said::Reached);
        let mut reset = failed(FailureKind::Reset);
        reset.connect = Some(Duration::from_millis(1));
        assert_eq!(said(&reset, Failed::Unreached), Said::Reached);
        assert_eq!(said(&reset, Failed::Reset), Said::Unreached);
        assert_eq!(
            said(&failed(FailureKind::Dns), Failed::Unreached),
            Said::Nothing
        );
        // Asked about a hang, a witness hung too fails as the site did, and only an
        // answer shows the way out works: a connection came up for the site as well.
        assert_eq!(said(&hung, Failed::Hung), Said::Unreached);
        assert_eq!(said(&answered, Failed::Hung), Said::Reached);
        assert_eq!(said(&reset, Failed::Hung), Said::Nothing);
        assert_eq!(
            said(&failed(FailureKind::Timeout), Failed::Hung),
            Said::Unreached
        );
        let mut headers = hung.clone();
        headers.first_byte = Some(Duration::from_millis(1));
        assert_eq!(said(&headers, Failed::Hung), Said::Nothing);
    }
}
