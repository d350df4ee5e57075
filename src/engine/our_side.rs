//! Our side: what tells our own failure from the site's. Every attempt tells the egress
//! bookkeeping ([`EgressHealth`]) and the network watch ([`NetworkWatch`]) what it showed
//! about our way out; a `down` that may be ours (no connection, no answer, no name) is
//! asked about again against the canaries, known-good sites, before it is believed.
//!
//! The mapping from an attempt to what it says about us is pure ([`health_of`],
//! [`signal_of`]); the canary check is the one place here that probes.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ProbeSettings;
use crate::egress::{EgressHealth, Health, HealthSettings, NetworkWatch, Signal, Turn, CUT_SPAN};
use crate::engine::{Attempt, Looked, Prober};
use crate::job::Job;
use crate::metric;
use crate::probe::{FailureKind, Observation, Outcome, Plan};

mod witness;

use witness::{Failed, Failing, Witnesses};

/// What witnesses said between two attempts of a job: asked through its egress after
/// attempt `after` failed, before the next set out ([`OurSide::witness_between`]).
#[derive(Debug, Clone)]
pub(crate) struct Witnessed {
    /// The attempt they were asked about.
    pub after: usize,
    how: Failed,
    blame: Blame,
}

/// How long a canary check answers for all failures that ask.
const CANARY_FRESH: Duration = Duration::from_secs(30);

/// The same while many sites are failing at once.
const CANARY_FRESH_IN_WAVE: Duration = Duration::from_secs(3);

/// Time allowed for a refusal's round trip (through a proxy, under load): what set out
/// that long before a refusal came set out beside it.
const REFUSAL_TRIP: Duration = Duration::from_millis(100);

/// How long a warning that our nameservers answer nothing stands.
const RESOLVER_FRESH: Duration = Duration::from_secs(5);

/// Whose failure a `down` that may be ours is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Blame {
    /// Our side's, and why.
    Ours(String),
    /// The site's: believe the `down`.
    Site,
}

/// The state of our own side: egress health, the network watch and the canaries.
pub(super) struct OurSide {
    health: EgressHealth,
    health_settings: HealthSettings,
    network: NetworkWatch,
    canaries: Canaries,
    /// Sites that answered lately, asked again when there are no canaries.
    witnesses: Option<Witnesses>,
    /// When a failing resolver was last warned of.
    resolver_warned: std::sync::Mutex<Option<Instant>>,
}

/// Known-good sites that tell our own network failing from theirs.
struct Canaries {
    plans: Vec<Plan>,
    /// The last check; the async mutex makes a wave of failures wait for one check
    /// instead of starting one each.
    last: tokio::sync::Mutex<Option<CanaryCheck>>,
}

impl Canaries {
    /// The canaries' host names, for a question to our nameservers that no cache
    /// answers (`dns::Resolver::answers`).
    fn hosts(&self) -> Vec<String> {
        let host = |p: &Plan| p.url.host_str().map(str::to_string);
        self.plans.iter().filter_map(host).collect()
    }
}

/// One check of the canaries.
#[derive(Debug, Clone, Copy)]
struct CanaryCheck {
    /// When it began: it says nothing of failures begun later.
    began: Instant,
    /// When it ended: its answer stays fresh from then.
    ended: Instant,
    /// Whether any canary answered.
    ok: bool,
}

/// What an attempt through an egress says about that egress.
pub(super) fn health_of(outcome: &Outcome) -> Health {
    match outcome {
        Outcome::Answer(_) => Health::Works,
        Outcome::Failure(f) => match f.kind {
            FailureKind::Connect
            | FailureKind::Unreachable
            | FailureKind::Reset
            | FailureKind::Timeout
            | FailureKind::Tls
            | FailureKind::NoTls
            | FailureKind::Protocol
            | FailureKind::Egress => Health::Failed,
            // These came after an answer, or a handshake: the way out worked.
            FailureKind::TooManyRedirects | FailureKind::BadRedirect | FailureKind::LocalClock => {
                Health::Works
            }
            FailureKind::Dns
            | FailureKind::DnsFailed
            | FailureKind::BlockedTarget
            | FailureKind::Throttled
            | FailureKind::Paused
            | FailureKind::LocalResources
            | FailureKind::IssuerUnreached => Health::Silent,
        },
    }
}

/// What an attempt says about our own network as a whole.
pub(super) fn signal_of(obs: &Observation) -> Signal {
    match &obs.outcome {
        Outcome::Answer(_) => Signal::Answered,
        Outcome::Failure(f) => match f.kind {
            // A connection that never came up, or no route: nothing came back.
            FailureKind::Timeout if obs.connect.is_none() => Signal::Silent,
            FailureKind::Unreachable | FailureKind::Egress => Signal::Silent,
            // Refused before any connection came up; one closed after it did (a site
            // that takes the connection and drops it) is the site's doing.
            FailureKind::Connect if obs.connect.is_none() => Signal::Refused,
            _ => Signal::Other,
        },
    }
}

/// Whether the attempt `obs` had its connection reset before any answer.
pub(super) fn reset(obs: &Observation) -> bool {
    matches!(&obs.outcome, Outcome::Failure(f) if f.kind == FailureKind::Reset)
}

/// Whether the attempt `obs` had its connection come up and nothing back (no answer's
/// first byte) before its time was over: a hung site, or our way out letting
/// connections up and no page back (a path MTU black hole of ours).
pub(super) fn hung(obs: &Observation) -> bool {
    let timed_out = matches!(&obs.outcome, Outcome::Failure(f) if f.kind == FailureKind::Timeout);
    timed_out && obs.connect.is_some() && obs.first_byte.is_none()
}

/// Whether the attempt `obs` never reached the site: it went silent, or was refused.
pub(super) fn unreached(obs: &Observation) -> bool {
    matches!(signal_of(obs), Signal::Silent | Signal::Refused)
}

/// The moment an unreached attempt that set out at `set_out` tells of: for silence when
/// it set out; for a refusal when it came, from a round trip before it (what set out
/// beside it counts too, and little from before a cut that began just before it).
fn unreached_at(obs: &Observation, set_out: Instant) -> Instant {
    if signal_of(obs) != Signal::Refused {
        return set_out;
    }
    let ended = set_out + obs.total.saturating_sub(obs.queued);
    ended
        .checked_sub(REFUSAL_TRIP)
        .map_or(set_out, |t| t.max(set_out))
}

/// When the last request of the attempt `obs`, which set out at `set_out`, went out:
/// where its silence began ([`Observation::last_asked`], counted from the attempt's
/// start, which its waits for the per-IP limit put before `set_out`). A redirect's
/// next hop or a second address sets out well after the attempt did.
fn asked_last(obs: &Observation, set_out: Instant) -> Instant {
    obs.last_asked
        .map_or(set_out, |t| set_out + t.saturating_sub(obs.queued))
}

/// When the attempt `obs`, ended `now`, sent its request: once its wait for the per-IP
/// limit was over.
fn sent_at(obs: &Observation, now: Instant) -> Instant {
    now.checked_sub(obs.total.saturating_sub(obs.queued))
        .unwrap_or(now)
}

/// The plan of a canary: a plain GET, where any answer at all will do.
fn canary_plan(url: &url::Url, probe: &ProbeSettings) -> Plan {
    let job = Job::plain_get("canary", "canary".into(), url.clone());
    let mut plan = Plan::new(&job, probe);
    plan.min_body_bytes = 0;
    plan
}

impl OurSide {
    /// Our side with `egresses` ways out and the canaries of `probe`.
    pub(super) fn new(probe: &ProbeSettings, egresses: usize) -> OurSide {
        OurSide {
            health: EgressHealth::new(egresses, probe.egress_health),
            health_settings: probe.egress_health,
            network: NetworkWatch::default(),
            canaries: Canaries {
                plans: probe
                    .canaries
                    .iter()
                    .map(|url| canary_plan(url, probe))
                    .collect(),
                last: tokio::sync::Mutex::new(None),
            },
            witnesses: probe.canaries.is_empty().then(|| {
                let url = url::Url::parse("http://witness.invalid/").expect("a fixed URL parses");
                Witnesses::new(egresses, canary_plan(&url, probe))
            }),
            resolver_warned: std::sync::Mutex::new(None),
        }
    }

    /// The egress for the next attempt: `preferred` unless it is rested or `spent`.
    pub(super) fn pick(&self, preferred: usize, spent: &[usize], now: Instant) -> Option<usize> {
        self.health.pick(preferred, spent, now)
    }

    /// Whether an egress other than `egress` may be used now (one is not resting).
    pub(super) fn another_open(&self, egress: usize) -> bool {
        self.health.another_open(egress, Instant::now())
    }

    /// Tells the egress bookkeeping, the network watch and the witnesses what an
    /// attempt, its job's `turn`, showed.
    pub(super) fn record(&self, egress: usize, obs: &Observation, turn: Turn) {
        let now = Instant::now();
        if let (Some(w), Outcome::Answer(a)) = (&self.witnesses, &obs.outcome) {
            w.answered(egress, &a.final_url, obs.ip, now);
        }
        let set_out = asked_last(obs, sent_at(obs, now));
        self.network
            .record(obs.ip, (signal_of(obs), turn), set_out, now);
        if self
            .health
            .record(egress, obs.ip, health_of(&obs.outcome), now)
        {
            self.rested(&obs.egress);
        }
    }

    /// The site at `ip` turns us away (a ban, a bot wall): what becomes of our requests
    /// to it says nothing of our way out, so it is no witness.
    pub(super) fn turned_away(&self, ip: Option<std::net::IpAddr>) {
        if let Some(w) = &self.witnesses {
            w.forget(ip);
        }
    }

    /// Takes back the answer `obs` had through `egress`: another egress's good answer
    /// in the same job contradicted it ([`crate::egress::EgressHealth::contradict`]).
    pub(super) fn contradicted(&self, egress: usize, obs: &Observation) {
        if self.health.contradict(egress, obs.ip, Instant::now()) {
            self.rested(&obs.egress);
        }
    }

    /// Tells the metrics and the log that `egress` is resting.
    fn rested(&self, egress: &str) {
        metric::egress_rested(egress);
        tracing::warn!(
            egress = %egress,
            rest_s = self.health_settings.rest.as_secs(),
            "egress fails for many sites while others answer: resting it"
        );
    }

    /// Why a site that seems unreachable (a `down` for no connection, no answer or no
    /// name, as `decisive` showed) is more likely our own network failing, if it is: a
    /// name not resolved while our nameservers answer nothing at all, every canary
    /// failing too, or, with no canaries to ask, a wave of silence going on, or the
    /// witnesses failing as it did ([`Blame`]).
    ///
    /// `began` is when the job's first request set out: a wave since then counts. For a
    /// silent failure (nothing came back, or no answer on a connection that came up: a
    /// way out of ours may let them up and no page back) or a failed lookup, a good
    /// canary answer stands only if asked after the decisive attempt began (one from
    /// before may predate our network breaking); a refusal or a TLS failure is answered
    /// by any fresh one.
    pub(super) async fn blames_us(&self, prober: &dyn Prober, looked: &Looked<'_>) -> Blame {
        let (decisive, began) = (looked.decisive, looked.began);
        let lookup_failed = matches!(
            &decisive.outcome,
            Outcome::Failure(f) if f.kind == FailureKind::DnsFailed
        );
        let failed = decisive.unresolved.as_deref().unwrap_or_default();
        if lookup_failed {
            if let Some(why) = self.resolver_failing(prober, failed).await {
                return Blame::Ours(why);
            }
        }
        let now = Instant::now();
        // Silence, hangs and failed lookups are what a broken way out shows (a caching
        // resolver fails every uncached name at once); a refusal or a TLS failure is
        // most often a dead site's, and asking the canaries for each would cost one
        // request per dead site.
        let strict = signal_of(decisive) == Signal::Silent || lookup_failed || hung(decisive);
        let failing_since = strict.then(|| now.checked_sub(decisive.total).unwrap_or(now));
        if !self.network_ok(prober, began, failing_since).await {
            return Blame::Ours(
                "every canary failed too, so this is our network, not the site".to_string(),
            );
        }
        if !self.canaries.plans.is_empty() {
            return Blame::Site;
        }
        // Without canaries to ask, a wave of silence is taken for what it almost always
        // is; so is the moment of a silent or refused attempt when nothing came back from
        // anywhere (a cut).
        let wave = match self.network.wave(Instant::now(), began) {
            Some(wave) => wave,
            None if unreached(decisive) => match self.cut_for(looked, now).await {
                Some(cut) => cut,
                None => return self.witnesses_blame(prober, looked, now).await,
            },
            // A reset is an answer of sorts to the watch, and a middlebox of ours that
            // resets everything it lets open shows only in sites that answered; so does
            // a way out that lets connections up and no page back.
            None if reset(decisive) || hung(decisive) => {
                return self.witnesses_blame(prober, looked, now).await
            }
            None => return Blame::Site,
        };
        Blame::Ours(format!(
            "{wave}: this looks like our network, not the site (configure probe.canaries to be sure)"
        ))
    }

    /// Why an unreached site that neither a wave nor a cut explains, or one whose
    /// connections were reset or came up to no answer, is our way out's failure, if
    /// sites that answered through the same egress lately fail so too ([`witness`]). A
    /// site believed `down` is no witness any more.
    async fn witnesses_blame(
        &self,
        prober: &dyn Prober,
        looked: &Looked<'_>,
        now: Instant,
    ) -> Blame {
        let Some(witnesses) = self.witnesses.as_ref() else {
            return Blame::Site;
        };
        let how = Failed::of(looked.decisive).unwrap_or(Failed::Unreached);
        let between = looked.witnessed.filter(|w| w.how == how);
        let blame = match between {
            // A witness answering between two failures of its kind: no one cut made both.
            Some(w) => w.blame.clone(),
            None => {
                let failing = Failing {
                    egress: looked.egress,
                    url: looked.url,
                    ip: looked.decisive.ip,
                    since: sent_at(looked.decisive, now),
                    how,
                };
                witnesses.ask(prober, &failing).await.unwrap_or(Blame::Site)
            }
        };
        if blame == Blame::Site {
            self.believed_down(looked, now);
        }
        blame
    }

    /// Asks the witnesses about attempt `after` of a job of `url` (`failed`, through
    /// `egress`), before its next attempt sets out: a witness answering between two
    /// failures shows that no one cut of our way out made both, where one asked after
    /// the last may only show a cut that ended since. `None` when none are kept
    /// (canaries are set) or none could be asked, or the failure is none they speak of.
    pub(super) async fn witness_between(
        &self,
        prober: &dyn Prober,
        (failed, egress, after): (&Observation, usize, usize),
        url: &url::Url,
    ) -> Option<Witnessed> {
        let witnesses = self.witnesses.as_ref()?;
        let how = Failed::of(failed)?;
        let failing = Failing {
            egress,
            url,
            ip: failed.ip,
            since: sent_at(failed, Instant::now()),
            how,
        };
        let blame = witnesses.ask(prober, &failing).await?;
        Some(Witnessed { after, how, blame })
    }

    /// An unreached site (`looked`, whose decisive attempt ended `now`) is believed
    /// `down`: it is no witness any more.
    fn believed_down(&self, looked: &Looked<'_>, now: Instant) {
        if let Some(w) = &self.witnesses {
            w.forget(looked.decisive.ip);
        }
        self.believed(looked, now);
    }

    /// Writes at debug level what the network watch saw around the moments of an
    /// unreached site believed `down` with no canaries to ask: a cut the watch did not
    /// tell shows its edge there (`log.level = "info,picket::engine::our_side=debug"`;
    /// the farm's fault runs print these lines for a result judged otherwise).
    fn believed(&self, looked: &Looked<'_>, now: Instant) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let retried = asked_last(looked.decisive, sent_at(looked.decisive, now));
        tracing::debug!(
            first = ?signal_of(looked.first),
            decisive = ?signal_of(looked.decisive),
            first_asked_last_ms = looked.first.last_asked.map(|t| t.as_millis() as u64),
            retried_after_ms = retried.saturating_duration_since(looked.began).as_millis() as u64,
            watch_first = %self.network.around(asked_last(looked.first, looked.began)),
            watch_decisive = %self.network.around(unreached_at(looked.decisive, retried)),
            "an unreached site believed down: the network watch around its attempts"
        );
    }

    /// The cut of our way out that a silent or refused `down` (`looked`, judged `now`)
    /// met, if it met one. The attempt that tells: the first, if it failed as the
    /// decisive one did (a site silent while the way out worked is silent, though its
    /// confirmation may go silent beside other dead sites' alone), else the decisive
    /// one (a site that refused, then went silent in a cut, is judged by the cut).
    /// Its moments: silence tells from when the attempt set out, and from when its last
    /// request went out (a redirect's next hop, another address, the page asked again
    /// after an intermediate's fetch: [`Observation::last_asked`]; where the prober
    /// did not say, a connect time before the attempt ended), for a site that answered
    /// one request and went silent at the next as a cut began is no silent site;
    /// a refusal tells when it came, the attempt's end (one that reached the site, or
    /// another address, first may be refused long after it set out), from a round trip
    /// before it (what set out beside it answers for that moment too).
    ///
    /// A proxy opens its own connection a while after ours set out, later when busy:
    /// the decisive attempt of a site that answered moments before may have met a cut
    /// begun after it set out, so the moment half a second on tells too. Not for a
    /// first attempt: a batch sets out at once, and half a second on only its dead
    /// sites are still waiting.
    ///
    /// A site unreached alike on every attempt may have met the cut late in its first
    /// one (its last connection set out after a handshake, an intermediate's fetch or
    /// another address, as the cut began), with the batch beside it answering at its
    /// moment: the decisive attempt's moment tells then, if sites that had answered a
    /// moment before fell unreached in it ([`NetworkWatch::fallen_cut`]).
    async fn cut_for(&self, looked: &Looked<'_>, now: Instant) -> Option<String> {
        let alike = signal_of(looked.first) == signal_of(looked.decisive);
        if let Some(cut) = self.cut_of(looked, alike, now).await {
            return Some(cut);
        }
        if !alike || std::ptr::eq(looked.first, looked.decisive) {
            return None;
        }
        let retried = asked_last(looked.decisive, sent_at(looked.decisive, now));
        let moment = unreached_at(looked.decisive, retried);
        self.waited_for(moment, NetworkWatch::fallen_cut).await
    }

    /// The cut at the moments of the attempt that tells (see [`OurSide::cut_for`]).
    async fn cut_of(&self, looked: &Looked<'_>, alike: bool, now: Instant) -> Option<String> {
        let (attempt, set_out) = match alike {
            true => (looked.first, looked.began),
            false => (looked.decisive, sent_at(looked.decisive, now)),
        };
        let ended = set_out + attempt.total.saturating_sub(attempt.queued);
        if signal_of(attempt) == Signal::Refused {
            return self.cut_at(unreached_at(attempt, set_out)).await;
        }
        // Its last request went out then; where the prober did not say, a connect
        // time before it ended.
        let last = match attempt.last_asked {
            Some(_) => asked_last(attempt, set_out),
            None => (ended.checked_sub(looked.connect_timeout)).map_or(set_out, |t| t.max(set_out)),
        };
        if let Some(cut) = self.cut_at(set_out).await {
            return Some(cut);
        }
        let lagged = last + CUT_SPAN / 2;
        if !alike && lagged < ended {
            if let Some(cut) = self.cut_at(lagged).await {
                return Some(cut);
            }
        }
        if last > set_out {
            self.cut_at(last).await
        } else {
            None
        }
    }

    /// The cut of our way out at `moment`, if there was one. With no answer yet from
    /// what set out then (the decisive attempt just ended: those set out right after
    /// it have not all ended yet), those are waited for ([`CUT_SPAN`]), as a cut that
    /// began then shows only in them.
    async fn cut_at(&self, moment: Instant) -> Option<String> {
        self.waited_for(moment, NetworkWatch::cut).await
    }

    /// What `cut` says of `moment`, waiting for what set out then first when nothing
    /// of it has answered yet (see [`OurSide::cut_at`]).
    async fn waited_for(
        &self,
        moment: Instant,
        cut: impl Fn(&NetworkWatch, Instant) -> Option<String>,
    ) -> Option<String> {
        if let Some(found) = cut(&self.network, moment) {
            return Some(found);
        }
        if self.network.answered_at(moment) {
            return None;
        }
        tokio::time::sleep(CUT_SPAN).await;
        cut(&self.network, moment)
    }

    /// Why our resolver is the failure, after the lookup of `failed` failed or found no
    /// slot in time: when our nameservers answer no question beyond their cache.
    pub(super) async fn resolver_failing(
        &self,
        prober: &dyn Prober,
        failed: &str,
    ) -> Option<String> {
        (!self.resolver_ok(prober, failed).await).then(|| {
            "our nameservers answer no question beyond their cache (the root zone, and a \
             fresh name under the failed name's parent domains and those of names found \
             lately): our resolver is failing or cut off, not the site's name"
                .to_string()
        })
    }

    /// Whether our nameservers answer, and beyond their cache, after the lookup of
    /// `failed` failed. The prober keeps each zone's answer a while and asks each zone
    /// once at a time (`dns::Resolver::answers`), so a wave of failed lookups under many
    /// domains waits for no other domain's question (review Z); the warning is said
    /// once per [`RESOLVER_FRESH`].
    async fn resolver_ok(&self, prober: &dyn Prober, failed: &str) -> bool {
        let ok = prober
            .nameservers_answer(failed, &self.canaries.hosts())
            .await;
        if !ok {
            let mut warned = self
                .resolver_warned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if warned.is_none_or(|at| at.elapsed() >= RESOLVER_FRESH) {
                *warned = Some(Instant::now());
                tracing::warn!("our nameservers answer nothing beyond their cache: lookups that fail now are our resolver's failure, not the sites'");
            }
        }
        ok
    }

    /// Whether our own network works: true when no canaries are configured or any
    /// canary answers (any HTTP answer below 500) through any egress. A fresh check
    /// answers for the failures that ask, but a good one, for a silent failure, only if
    /// it began after the failure did (`failing_since`): the network may have broken
    /// since.
    async fn network_ok(
        &self,
        prober: &dyn Prober,
        began: Instant,
        failing_since: Option<Instant>,
    ) -> bool {
        if self.canaries.plans.is_empty() {
            return true;
        }
        // In a wave of failures an answer from before it is stale: check again.
        let fresh = if self.network.wave(Instant::now(), began).is_some() {
            CANARY_FRESH_IN_WAVE
        } else {
            CANARY_FRESH
        };
        let mut last = self.canaries.last.lock().await;
        if let Some(check) = *last {
            // A failed check stands for any failure while fresh (a wave waits for one
            // check, not one each); a good one only for silent failures begun before it.
            let speaks = !check.ok || failing_since.is_none_or(|since| check.began >= since);
            if speaks && check.ended.elapsed() < fresh {
                return check.ok;
            }
        }
        let check_began = Instant::now();
        let mut ok = false;
        'all: for egress in 0..prober.egress_count().max(1) {
            for plan in &self.canaries.plans {
                // A canary's plan has no max_wait, so it is never deferred; were it,
                // that would be no answer.
                let answered = matches!(
                    prober.observe(plan, egress).await,
                    Attempt::Observed(obs) if matches!(&obs.outcome, Outcome::Answer(a) if a.status < 500)
                );
                if answered {
                    ok = true;
                    break 'all;
                }
            }
        }
        if !ok {
            tracing::warn!("every canary failed through every egress: our own network looks down");
        }
        *last = Some(CanaryCheck {
            began: check_began,
            ended: Instant::now(),
            ok,
        });
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Answer, Failure};

    fn failed(kind: FailureKind) -> Observation {
        let mut o = Observation::new("e");
        o.outcome = Outcome::Failure(Failure {
            kind,
            detail: "x".into(),
        });
        o
    }

    #[test]
    fn what_an_attempt_says_about_the_egress() {
        let answer = Outcome::Answer(Answer::default());
        assert_eq!(health_of(&answer), Health::Works);
        let table = [
            (FailureKind::Connect, Health::Failed),
            (FailureKind::Unreachable, Health::Failed),
            (FailureKind::Reset, Health::Failed),
            (FailureKind::Timeout, Health::Failed),
            (FailureKind::Tls, Health::Failed),
            (FailureKind::Protocol, Health::Failed),
            (FailureKind::Egress, Health::Failed),
            (FailureKind::TooManyRedirects, Health::Works),
            (FailureKind::BadRedirect, Health::Works),
            (FailureKind::Dns, Health::Silent),
            (FailureKind::DnsFailed, Health::Silent),
            (FailureKind::BlockedTarget, Health::Silent),
            (FailureKind::Throttled, Health::Silent),
            (FailureKind::Paused, Health::Silent),
            (FailureKind::LocalResources, Health::Silent),
        ];
        for (kind, health) in table {
            assert_eq!(health_of(&failed(kind).outcome), health, "{kind:?}");
        }
    }

    #[test]
    fn only_silence_counts_towards_a_wave() {
        let mut answered = Observation::new("e");
        answered.outcome = Outcome::Answer(Answer::default());
        assert_eq!(signal_of(&answered), Signal::Answered);
        assert_eq!(signal_of(&failed(FailureKind::Timeout)), Signal::Silent);
        assert_eq!(signal_of(&failed(FailureKind::Unreachable)), Signal::Silent);
        assert_eq!(signal_of(&failed(FailureKind::Egress)), Signal::Silent);
        // A timeout after the connection came up is a slow server, not silence.
        let mut late = failed(FailureKind::Timeout);
        late.connect = Some(Duration::from_millis(5));
        assert_eq!(signal_of(&late), Signal::Other);
        // A refusal is counted apart (a cut may refuse everything); a reset is an answer
        // of sorts.
        assert_eq!(signal_of(&failed(FailureKind::Connect)), Signal::Refused);
        let mut closed = failed(FailureKind::Connect);
        closed.connect = Some(Duration::from_millis(5));
        assert_eq!(signal_of(&closed), Signal::Other);
        assert_eq!(signal_of(&failed(FailureKind::Reset)), Signal::Other);
        assert_eq!(signal_of(&failed(FailureKind::Dns)), Signal::Other);
    }
}
