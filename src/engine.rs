//! The probe engine: one job in, one [`Report`] out, the same in the worker and in
//! `picket check`. It asks the key's state (a redelivered job's result, a fresh verdict
//! for `max_age_s`), plans, has a [`Prober`] observe the site once per
//! attempt (rotating the egress), judges each observation and combines them, so that
//! `down` is only said after every attempt failed.
//!
//! The engine knows no broker, no Redis and no HTTP library: those come in as traits.
//! What tells our own failure from the site's (egress health, the network watch, the
//! canaries) is in `our_side`; the result message is built in one place, `report`.

mod our_side;
mod report;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{ProbeSettings, Settings};
use crate::egress::Turn;
use crate::job::{now_rfc3339, Job, Reason, Rejected, Report, Verdict};
use crate::metric;
use crate::probe::combine::{combine, settled};
use crate::probe::judge::{judge, JudgeSettings, Judgement};
use crate::probe::{Line, Observation, Outcome, Plan};
use crate::state::{Delivery, StateStore, Stepped};

use our_side::{Blame, OurSide, Witnessed};
use report::{Attempts, Stamp, Subject, Word};

/// Observes a site once: resolve, connect, ask, read.
pub(crate) trait Prober: Send + Sync {
    /// How many egresses there are to rotate through.
    fn egress_count(&self) -> usize;
    /// One probe through egress number `egress` (taken modulo the count).
    fn observe<'a>(&'a self, plan: &'a Plan, egress: usize) -> BoxFuture<'a, Attempt>;
    /// Whether our nameservers answer at all now, and reach beyond what they hold, after
    /// the lookup of `failed` failed: names no cache holds are asked too (under the
    /// `canaries`' hosts, `failed`'s parent domains, the domains of names found lately).
    /// A prober that resolves nothing itself has none to fail.
    fn nameservers_answer<'a>(
        &'a self,
        failed: &'a str,
        canaries: &'a [String],
    ) -> BoxFuture<'a, bool> {
        let _ = (failed, canaries);
        Box::pin(async { true })
    }
}

/// What came of asking a [`Prober`] to observe a site once.
// Nearly every attempt is observed, and an observation was always returned by value:
// boxing it would cost every probe an allocation to shrink only the rare deferral.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The probe was made (whatever the site did).
    Observed(Observation),
    /// The per-IP limit asked for a wait longer than [`Plan::max_wait`]: no probe was
    /// made, and the job should come back after about this long.
    Deferred(Duration),
}

/// What became of a job.
#[derive(Debug)]
pub(crate) enum Run {
    /// Its result.
    Done(Box<Report>),
    /// Its IP is busy: bring it back after about this long.
    Defer(Duration),
    /// Its result, whose state step the store did not answer: `true` when the store may
    /// have taken it all the same ([`Stepped::Unsure`]), `false` when a redelivery's step
    /// did not run. Handed back as a redelivery, the job recalls the answer its step got
    /// once the store is back, and tells the change it may have made.
    Unsettled(Box<Report>, bool),
}

/// Runs jobs to reports.
pub struct Engine {
    prober: Arc<dyn Prober>,
    state: Arc<dyn StateStore>,
    probe: ProbeSettings,
    judge: JudgeSettings,
    worker: String,
    our_side: OurSide,
}

/// The name a worker writes in its results: `worker.name`, or host name and PID.
pub(crate) fn worker_name(settings: &Settings) -> String {
    if settings.worker.name.is_empty() {
        format!(
            "{}-{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        )
    } else {
        settings.worker.name.clone()
    }
}

/// What a job's `down` is judged ours or the site's by (`OurSide::blames_us`).
pub(super) struct Looked<'a> {
    /// The attempt the verdict comes from.
    pub decisive: &'a Observation,
    /// The job's first attempt.
    pub first: &'a Observation,
    /// When the first attempt's request set out ([`Tried::sent`]).
    pub began: tokio::time::Instant,
    /// How long one connection may take to come up (the plan's).
    pub connect_timeout: std::time::Duration,
    /// The egress of the decisive attempt.
    pub egress: usize,
    /// The site.
    pub url: &'a url::Url,
    /// What witnesses said between an earlier failure and the decisive attempt.
    pub witnessed: Option<&'a Witnessed>,
}

/// The attempts made for one job, in order, each with its judgement.
struct Tried {
    observations: Vec<Observation>,
    judgements: Vec<Judgement>,
    /// The egress of each attempt.
    egresses: Vec<usize>,
    /// When the first attempt's request set out (its wait for the per-IP limit left
    /// out): where a wave of our network failing is looked for from.
    sent: Option<tokio::time::Instant>,
    /// What witnesses said of a failed attempt before the latest retry.
    witnessed: Option<Witnessed>,
}

impl Tried {
    /// What attempt `i` of a job planned as `plan`, begun at `began`, shows our side.
    fn looked<'a>(&'a self, i: usize, began: tokio::time::Instant, plan: &'a Plan) -> Looked<'a> {
        let egress = self.egresses.get(i).copied().unwrap_or_default();
        Looked {
            decisive: &self.observations[i],
            first: self.observations.first().unwrap_or(&self.observations[i]),
            began,
            connect_timeout: plan.connect_timeout,
            egress,
            url: &plan.url,
            witnessed: self.witnessed.as_ref().filter(|w| w.after < i),
        }
    }
}

impl Engine {
    /// An engine over the given prober and state store, probing as `probe` says, judging
    /// with `judge`, and signing its results as `worker`.
    pub(crate) fn new(
        prober: Arc<dyn Prober>,
        state: Arc<dyn StateStore>,
        probe: &ProbeSettings,
        judge: JudgeSettings,
        worker: String,
    ) -> Engine {
        let our_side = OurSide::new(probe, prober.egress_count());
        Engine {
            prober,
            state,
            probe: probe.clone(),
            judge,
            worker,
            our_side,
        }
    }

    /// Answers a job, waiting for per-IP limits as long as its timeout allows.
    pub async fn run(&self, job: &Job) -> Report {
        let delivery = Delivery {
            id: &job.id,
            redelivered: false,
        };
        match self.run_or_defer(job, None, Line::Outside, delivery).await {
            // Nothing to hand back to: the result as it is.
            Run::Done(report) => *report,
            Run::Unsettled(report, _) => {
                without_state(&report);
                *report
            }
            // Without a max_wait the prober never defers; answer honestly if it did.
            Run::Defer(_) => {
                self.too_busy(job, delivery, "the per-IP limit allowed no request in time")
                    .await
            }
        }
    }

    /// The `unknown/rate_limited` answer to a job our own per-IP limit kept from asking
    /// the site (its IP stayed busy): our limit, not the site's failure.
    pub(crate) async fn too_busy(&self, job: &Job, delivery: Delivery<'_>, why: &str) -> Report {
        let mut r = self.unprobed(job, Verdict::Unknown, Reason::RateLimited, why.into());
        let fingerprint = job.fingerprint();
        let stepped = self.settle(&mut r, Some(&fingerprint), delivery).await;
        if stepped.answer().is_none() {
            without_state(&r);
        }
        r
    }

    /// Answers a job, or says to defer it when a per-IP limit would make it wait longer
    /// than `max_wait` (`None`: never defer); `line` is where it stands in its IP's line
    /// of deferred jobs. A message the broker hands out again gets the result its first
    /// delivery produced when the state still keeps it: a repeat, never a different story.
    pub(crate) async fn run_or_defer(
        &self,
        job: &Job,
        max_wait: Option<Duration>,
        line: Line,
        delivery: Delivery<'_>,
    ) -> Run {
        if delivery.redelivered {
            if let Some(report) = self.state.replay(&job.key, delivery.id).await {
                metric::state_replayed();
                return Run::Done(Box::new(report));
            }
        }
        let fingerprint = job.fingerprint();
        // A redelivery may carry a change its first delivery made and never told: it is
        // checked and stepped, never served a later job's verdict.
        let max_age = job.max_age.filter(|_| !delivery.redelivered);
        if let Some(max_age) = max_age {
            // Only a verdict judged as this job would be (same URL, method, headers and
            // expect: jobs sharing a key may differ in any), and one on the site: not
            // our own trouble, not a refused job.
            let served = self
                .state
                .fresh(&job.key, &fingerprint, max_age)
                .await
                .filter(|r| r.verdict.is_about_the_site());
            if let Some(mut cached) = served {
                cached.job_id = job.id.clone();
                cached.meta = job.meta.clone();
                cached.cached = true;
                cached.worker = self.worker.clone();
                // A served verdict is no new observation: it changes nothing.
                cached.previous_verdict = Some(cached.verdict).filter(|v| v.is_about_the_site());
                cached.changed = false;
                return Run::Done(Box::new(cached));
            }
        }
        let mut report = match self.probe(job, max_wait, line).await {
            Ok(r) => r,
            Err(wait) => return Run::Defer(wait),
        };
        let stepped = self.settle(&mut report, Some(&fingerprint), delivery).await;
        let unsettled = match stepped {
            Stepped::Answer(_) => None,
            Stepped::Unsure => Some(true),
            Stepped::Not => (delivery.redelivered && report.key.is_some()).then_some(false),
        };
        match unsettled {
            Some(may_have_run) => Run::Unsettled(Box::new(report), may_have_run),
            None => {
                if stepped.answer().is_none() {
                    without_state(&report);
                }
                Run::Done(Box::new(report))
            }
        }
    }

    /// Takes the key's state step for a report of a job of `fingerprint` (`None`: a
    /// refused job) and fills its state fields.
    async fn settle(
        &self,
        report: &mut Report,
        fingerprint: Option<&str>,
        delivery: Delivery<'_>,
    ) -> Stepped {
        let stepped = self.state.take_step(report, fingerprint, delivery).await;
        crate::state::fill(report, stepped.answer());
        if stepped.answer().is_some_and(|a| a.stale) {
            metric::state_stale();
        }
        if report.changed {
            if let Some(previous) = report.previous_verdict {
                metric::state_changed(previous, report.verdict);
            }
        }
        stepped
    }

    /// Probes with confirmation; `Err(wait)` when the job should be deferred.
    async fn probe(
        &self,
        job: &Job,
        max_wait: Option<Duration>,
        line: Line,
    ) -> Result<Report, Duration> {
        // When this check looked at the site: checks of one key overlap (a hang takes
        // `attempts` timeouts), and the state steps the key in this order, not in the
        // order they end (`state::step`).
        let looked_ms = crate::state::now_ms();
        let mut plan = Plan::new(job, &self.probe);
        plan.max_wait = max_wait;
        plan.line = line;
        let tried = self.attempts(&mut plan, job).await?;
        let began = tried.sent.unwrap_or_else(tokio::time::Instant::now);
        let Some((i, decisive)) = combine(&tried.judgements, self.required(&tried)) else {
            return Ok(self.unprobed(
                job,
                Verdict::Unknown,
                Reason::EgressUnavailable,
                "no attempt was made".into(),
            ));
        };
        let word = Word {
            verdict: decisive.verdict,
            reason: decisive.reason,
            detail: decisive.detail.clone(),
        };
        let word = self.unless_ours(word, tried.looked(i, began, &plan)).await;
        let (mut word, i) = in_the_sites_own_word(word, i, &tried);
        let attempts = Attempts {
            observations: &tried.observations,
            judgements: &tried.judgements,
            decisive: i,
        };
        word.detail = report::detail(word.detail, word.verdict, &attempts);
        let report = report::build(self.subject(job), word, Some(attempts), self.stamp());
        Ok(Report {
            looked_ms: Some(looked_ms),
            ..report
        })
    }

    /// A site we cannot reach while known-good sites are unreachable too says nothing
    /// about the site: our network is failing, and the `down` is ours (`unknown`). So is
    /// a TLS failure they share (a middlebox of ours answering port 443 with its own page
    /// or certificate).
    async fn unless_ours(&self, word: Word, looked: Looked<'_>) -> Word {
        let obs = looked.decisive;
        if word.reason == Reason::LocalResources {
            return self.unless_our_resolver(word, obs).await;
        }
        if !unreachable(word.verdict, word.reason) {
            return word;
        }
        match self.our_side.blames_us(self.prober.as_ref(), &looked).await {
            Blame::Ours(why) => Word {
                verdict: Verdict::Unknown,
                reason: Reason::EgressUnavailable,
                detail: format!("{}; {why}", word.detail),
            },
            Blame::Site => word,
        }
    }

    /// A lookup that waited for one of picket's DNS slots until its time was over: the
    /// lookups holding them may hang on a resolver that answers nothing, which is then
    /// the failure (not `dns.max_concurrent`).
    async fn unless_our_resolver(&self, word: Word, obs: &Observation) -> Word {
        let Some(host) = obs.unresolved.as_deref() else {
            return word;
        };
        match self
            .our_side
            .resolver_failing(self.prober.as_ref(), host)
            .await
        {
            Some(why) => Word {
                verdict: Verdict::Unknown,
                reason: Reason::EgressUnavailable,
                detail: format!("{host}: not looked up in time; {why}"),
            },
            None => word,
        }
    }

    /// Tells the metrics and our side what an attempt, its job's `turn`, showed.
    fn observed(&self, egress: usize, obs: &Observation, turn: Turn) {
        metric::probe_observed(obs);
        metric::egress_attempt(&obs.egress, matches!(obs.outcome, Outcome::Answer(_)));
        self.our_side.record(egress, obs, turn);
    }

    /// Browsers ask a plain-HTTP address over HTTPS first (Chrome's HTTPS-Upgrades,
    /// Firefox's HTTPS-First) and fall back only when HTTPS fails: where port 80 answers
    /// with no site (a default server's page or error, the site's plain-HTTP virtual host
    /// gone) and HTTPS serves it, people see the site. So a plain-HTTP answer that is not
    /// up, from the job's own URL, is asked once more over HTTPS, and that answer stands
    /// when it is up. (A connection that failed is asked so by the prober itself.)
    async fn as_browsers_upgrade(
        &self,
        plan: &Plan,
        egress: usize,
        obs: Observation,
        j: Judgement,
    ) -> (Observation, Judgement) {
        // Not an answer the prober already took over HTTPS, after port 80 failed.
        let answered_here = matches!(&obs.outcome,
            Outcome::Answer(a) if a.redirects == 0 && !a.final_url.starts_with("https:"));
        let about_the_site = matches!(j.verdict, Verdict::Down | Verdict::Degraded);
        let Some(https) = crate::probe::over_https(&plan.url) else {
            return (obs, j);
        };
        if !answered_here || !about_the_site {
            return (obs, j);
        }
        let upgraded = Plan {
            url: https,
            line: Line::Outside,
            ..plan.clone()
        };
        let Attempt::Observed(mut second) = self.prober.observe(&upgraded, egress).await else {
            return (obs, j);
        };
        self.observed(egress, &second, Turn::Again);
        let j2 = judge(&upgraded, &second, &self.judge);
        metric::https_upgrade(j2.verdict == Verdict::Up);
        if j2.verdict != Verdict::Up {
            return (obs, j);
        }
        second.notes.insert(
            0,
            format!(
                "{} answered: {}; asked {} instead, as browsers ask a plain-HTTP address \
                 over HTTPS first",
                plan.url, j.detail, upgraded.url
            ),
        );
        (second, j2)
    }

    /// How many failures confirm a `down`: `probe.attempts`, but two at least when the
    /// first attempt's `down` came amid other requests of ours to its IP, as a defence
    /// refusing them answers (`Observation::amid_our_requests`). With one attempt, the
    /// first host a defence refuses was judged before a second made it a storm of us.
    /// A slow answer asked beside other requests of ours to its IP is asked again
    /// alone ([`asks_alone`]), whatever `probe.attempts`.
    fn required(&self, tried: &Tried) -> usize {
        let attempts = self.probe.attempts as usize;
        let first = tried.observations.first().zip(tried.judgements.first());
        match first {
            Some((obs, j)) if obs.amid_our_requests && j.verdict == Verdict::Down => {
                attempts.max(2)
            }
            _ if asks_alone(tried) => attempts.max(2),
            _ => attempts,
        }
    }

    /// Makes attempts until they settle the verdict (a good one, or the failures
    /// [`Self::required`]) or the budget is spent; `Err(wait)` when the job should be
    /// deferred.
    async fn attempts(&self, plan: &mut Plan, job: &Job) -> Result<Tried, Duration> {
        let egresses = self.prober.egress_count().max(1);
        // Failed egresses and bot walls cost attempts without telling anything about the
        // site, so with other egresses to try there is room for a few more.
        let budget = |required: usize| if egresses > 1 { 2 * required } else { required };
        // Spread first attempts over the egresses; a retry moves on to the next one.
        let mut next = (fxhash(job.url.as_str()) as usize) % egresses;
        // Egresses that have told all they can about this site.
        let mut spent: Vec<usize> = Vec::new();
        let mut tried = Tried {
            observations: Vec::new(),
            judgements: Vec::new(),
            egresses: Vec::new(),
            sent: None,
            witnessed: None,
        };
        while tried.judgements.len() < budget(self.required(&tried)) {
            let now = tokio::time::Instant::now();
            let Some(egress) = self.our_side.pick(next, &spent, now) else {
                break;
            };
            if !tried.judgements.is_empty() {
                let between = self.witness_between(&tried, &plan.url);
                let pause = tokio::time::sleep(self.probe.retry_delay);
                let (witnessed, ()) = tokio::join!(between, pause);
                tried.witnessed = witnessed.or(tried.witnessed.take());
            }
            let (obs, j) = self.attempt(plan, egress, &mut tried).await?;
            // Asking again through an egress the site refused as a bot tells nothing, and
            // a failed egress says nothing about the site; with one egress only, a failed
            // egress may still recover for the next attempt.
            if j.reason == Reason::Blocked
                || (j.reason == Reason::EgressUnavailable && egresses > 1)
            {
                spent.push(egress);
            }
            if j.verdict == Verdict::Up {
                self.contradicts(&tried, egress);
            }
            tried.observations.push(obs);
            tried.judgements.push(j);
            tried.egresses.push(egress);
            let ask_elsewhere =
                slow_on_one_way_out(&tried, egresses) && self.our_side.another_open(egress);
            let alone = asks_alone(&tried);
            if settled(&tried.judgements, self.required(&tried)) && !ask_elsewhere && !alone {
                break;
            }
            plan.alone = alone;
            next = egress + 1;
        }
        Ok(tried)
    }

    /// What witnesses say of the last attempt of `tried`, a `down` for no connection, a
    /// reset or a hang, through its egress, before the next attempt sets out (through
    /// any egress: a retry moves on to the next, which may keep no witnesses, and one
    /// cut of everything would have failed them too) ([`OurSide::witness_between`]);
    /// `None` for any other.
    async fn witness_between(&self, tried: &Tried, url: &url::Url) -> Option<Witnessed> {
        let last = tried.judgements.len().checked_sub(1)?;
        let j = &tried.judgements[last];
        if !unreachable(j.verdict, j.reason) {
            return None;
        }
        let egress = tried.egresses.get(last).copied().unwrap_or_default();
        let failed = (&tried.observations[last], egress, last);
        self.our_side
            .witness_between(self.prober.as_ref(), failed, url)
            .await
    }

    /// One attempt through `egress`, judged; `Err(wait)` when the job should be deferred.
    async fn attempt(
        &self,
        plan: &mut Plan,
        egress: usize,
        tried: &mut Tried,
    ) -> Result<(Observation, Judgement), Duration> {
        let obs = match self.prober.observe(plan, egress).await {
            Attempt::Observed(obs) => obs,
            Attempt::Deferred(wait) => return Err(wait),
        };
        let on_the_way = obs.total.saturating_sub(obs.queued);
        tried.sent = tried.sent.or_else(|| {
            let now = tokio::time::Instant::now();
            Some(now.checked_sub(on_the_way).unwrap_or(now))
        });
        // The job has had its turn at the IP: a confirmation is no newcomer.
        plan.line = Line::Outside;
        let turn = match tried.judgements.is_empty() {
            true => Turn::First,
            false => Turn::Again,
        };
        self.observed(egress, &obs, turn);
        let j = judge(plan, &obs, &self.judge);
        let (obs, j) = self.as_browsers_upgrade(plan, egress, obs, j).await;
        if j.reason == Reason::Blocked {
            self.our_side.turned_away(obs.ip);
        }
        tracing::debug!(attempt = tried.judgements.len(), egress = %obs.egress, verdict = j.verdict.as_str(), reason = j.reason.as_str(), detail = %j.detail, "attempt");
        Ok((obs, j))
    }

    /// A good answer through `egress` takes back the bad answers other egresses gave
    /// this job before it: a site that answers one way out is not failing, so an egress
    /// whose answers keep being contradicted is failing itself (a forward proxy that
    /// answers its own bare 503 for every site) and is rested like one that answers
    /// nothing.
    fn contradicts(&self, tried: &Tried, egress: usize) {
        let bad_answers = tried
            .judgements
            .iter()
            .zip(&tried.observations)
            .zip(&tried.egresses)
            .filter(|((j, obs), &e)| {
                e != egress
                    && j.verdict == Verdict::Down
                    && matches!(obs.outcome, Outcome::Answer(_))
            });
        for ((_, obs), &e) in bad_answers {
            self.our_side.contradicted(e, obs);
        }
    }

    fn subject<'a>(&self, job: &'a Job) -> Subject<'a> {
        Subject {
            id: &job.id,
            key: Some(&job.key),
            url: job.url.as_str(),
            meta: job.meta.clone(),
        }
    }

    fn stamp(&self) -> Stamp<'_> {
        Stamp {
            worker: &self.worker,
            checked_at: now_rfc3339(),
        }
    }

    /// A report on a job with no probe behind it (no attempt possible, or none allowed).
    fn unprobed(&self, job: &Job, verdict: Verdict, reason: Reason, detail: String) -> Report {
        let word = Word {
            verdict,
            reason,
            detail,
        };
        report::build(self.subject(job), word, None, self.stamp())
    }

    /// The `invalid` answer to a job that was refused before probing, with its key's
    /// state when it has a key.
    pub(crate) async fn rejected(&self, r: &Rejected, delivery: Delivery<'_>) -> Report {
        let subject = Subject {
            id: &r.id,
            key: r.key.as_deref(),
            url: &r.url,
            meta: r.meta.clone(),
        };
        let word = Word {
            verdict: Verdict::Invalid,
            reason: Reason::InvalidJob,
            detail: r.detail.clone(),
        };
        let mut report = report::build(subject, word, None, self.stamp());
        let stepped = self.settle(&mut report, None, delivery).await;
        if stepped.answer().is_none() {
            without_state(&report);
        }
        report
    }
}

/// Whether a verdict says the site seems unreachable (a `down` for no connection, no
/// answer, no name or no TLS): what our own network failing shows too.
fn unreachable(verdict: Verdict, reason: Reason) -> bool {
    let reaching = matches!(
        reason,
        Reason::Connect | Reason::Timeout | Reason::Dns | Reason::Tls
    );
    verdict == Verdict::Down && reaching
}

/// Whether the only attempt so far was slow (`degraded/slow`) and asked beside other
/// requests of ours to its IP (`Observation::beside_ours`): a limit queueing what came
/// too fast (nginx's `limit_req` with a `burst` and no `nodelay`) answers it late, so it
/// is asked again alone before the site is called slow.
fn asks_alone(tried: &Tried) -> bool {
    let beside = tried.observations.first().is_some_and(|o| o.beside_ours);
    beside && only_slow(tried)
}

/// Whether the first attempt's answer came slowly while other egresses are there: a
/// proxy throttled or far away makes a fast site slow, so one more attempt is made,
/// through the next egress (its fast answer wins, `combine`). With one egress a slow
/// answer stands at once: a page that took the whole timeout would take it again.
fn slow_on_one_way_out(tried: &Tried, egresses: usize) -> bool {
    egresses > 1 && only_slow(tried)
}

/// Whether one attempt was made so far, and it was slow (`degraded/slow`).
fn only_slow(tried: &Tried) -> bool {
    matches!(tried.judgements.as_slice(), [j] if j.verdict == Verdict::Degraded && j.reason == Reason::Slow)
}

/// Counts a result that goes out without its key's state (the store gave no answer):
/// once per result, where it is answered, not per hand-back of an unsettled step.
pub(crate) fn without_state(report: &Report) {
    if report.key.is_some() {
        metric::state_unavailable();
    }
}

/// A small stable hash (FNV-1a) to spread URLs over egresses.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A confirmed `down` whose decisive attempt did not reach the site (no connection:
/// silent or refused) after an earlier one the site answered badly, told in that
/// answer's words (`combine::sites_own_word`), with the later failure beside it. One
/// that connected and got no answer is the site's own failure: it stands. Returns the
/// word and the attempt it comes from.
fn in_the_sites_own_word(word: Word, decisive: usize, tried: &Tried) -> (Word, usize) {
    let judgements = &tried.judgements;
    if !tried
        .observations
        .get(decisive)
        .is_some_and(our_side::unreached)
    {
        return (word, decisive);
    }
    match crate::probe::combine::sites_own_word(judgements, decisive) {
        Some(own) if word.verdict == Verdict::Down => {
            let theirs = &judgements[own];
            let detail = format!(
                "{}; asked again, it was not reached: {}",
                theirs.detail, word.detail
            );
            let word = Word {
                verdict: Verdict::Down,
                reason: theirs.reason,
                detail,
            };
            (word, own)
        }
        _ => (word, decisive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{job_for_url, RawJson};
    use crate::probe::{Answer, Failure, FailureKind};
    use crate::state::MemoryState;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Plays back a script of outcomes, one per call.
    struct Scripted {
        outcomes: Mutex<Vec<Outcome>>,
        calls: AtomicUsize,
        egresses: Mutex<Vec<usize>>,
        egress_count: usize,
        /// The first this many observations came amid other requests of ours to their IP.
        amid_our_requests: usize,
    }

    impl Scripted {
        fn new(outcomes: Vec<Outcome>) -> Arc<Scripted> {
            Arc::new(Scripted {
                outcomes: Mutex::new(outcomes),
                calls: AtomicUsize::new(0),
                egresses: Mutex::new(vec![]),
                egress_count: 2,
                amid_our_requests: 0,
            })
        }
    }

    impl Prober for Scripted {
        fn egress_count(&self) -> usize {
            self.egress_count
        }
        fn observe<'a>(&'a self, _plan: &'a Plan, egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::SeqCst);
                self.egresses.lock().expect("lock").push(egress % 2);
                let outcome = self.outcomes.lock().expect("lock").remove(0);
                let mut o = Observation::new(&format!("e{}", egress % 2));
                o.amid_our_requests = call < self.amid_our_requests;
                o.ip = Some("192.0.2.1".parse().expect("ip"));
                o.outcome = outcome;
                o.total = Duration::from_millis(3);
                Attempt::Observed(o)
            })
        }
    }

    /// The text of the pages answered here: a page that shows something.
    const PAGE_TEXT: &str = "<html><body><h1>County office</h1></body></html>";

    fn ok() -> Outcome {
        Outcome::Answer(Answer {
            status: 200,
            body_bytes: 500,
            text: PAGE_TEXT.into(),
            final_url: "https://a.example/".into(),
            ..Answer::default()
        })
    }

    fn refused() -> Outcome {
        Outcome::Failure(Failure {
            kind: FailureKind::Connect,
            detail: "connection refused".into(),
        })
    }

    fn engine(p: Arc<Scripted>) -> Engine {
        engine_of(p, "[probe]\nretry_delay = \"1ms\"\nattempts = 3\n")
    }

    /// An engine over `p` with the settings of `toml`, in memory.
    fn engine_of(p: Arc<dyn Prober>, toml: &str) -> Engine {
        let mut s = Settings::from_toml(toml).expect("cfg");
        s.worker.name = "w".into();
        let judge = JudgeSettings::new(&s.probe, &s.tls);
        Engine::new(
            p,
            Arc::new(MemoryState::default()),
            &s.probe,
            judge,
            "w".into(),
        )
    }

    /// A store that is away: the first step may have run (its answer lost), the
    /// hand-backs' steps do not run.
    struct Away {
        steps: AtomicUsize,
    }

    impl StateStore for Away {
        fn fresh<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, Option<Report>> {
            Box::pin(async { None })
        }
        fn replay<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Option<Report>> {
            Box::pin(async { None })
        }
        fn take_step<'a>(
            &'a self,
            _: &'a Report,
            _: Option<&'a str>,
            _: Delivery<'a>,
        ) -> BoxFuture<'a, Stepped> {
            Box::pin(async move {
                if self.steps.fetch_add(1, Ordering::SeqCst) == 0 {
                    Stepped::Unsure
                } else {
                    Stepped::Not
                }
            })
        }
    }

    /// Review K. `picket_state_unavailable_total` counts "results sent without state
    /// because Redis was away" (OPERATIONS, metric.rs). A job whose step is unsettled
    /// is handed back five times and then answered once without state: one such result,
    /// but `Engine::settle` counts every hand-back too (6 for 1), and a job handed back
    /// once whose return finds Redis up is counted though its result has its state.
    #[test]
    fn review_k_state_unavailable_counts_each_result_once_not_each_hand_back() {
        use metrics_exporter_prometheus::PrometheusBuilder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let mut s =
            Settings::from_toml("[probe]\nretry_delay = \"1ms\"\nattempts = 1\n").expect("cfg");
        s.worker.name = "w".into();
        let judge = JudgeSettings::new(&s.probe, &s.tls);
        let e = Engine::new(
            Scripted::new(vec![ok(); 20]),
            Arc::new(Away {
                steps: AtomicUsize::new(0),
            }),
            &s.probe,
            judge,
            "w".into(),
        );
        let body = br#"{"url":"https://a.example/","key":"k"}"#;
        let mut answered = 0;
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                for handed_back in 0..=5 {
                    let message = crate::worker::Message {
                        body,
                        fallback_id: "j",
                        delivery: Delivery {
                            id: "m|j",
                            redelivered: handed_back > 0,
                        },
                        last_deferral: false,
                        not_before: None,
                        unsettled: handed_back,
                    };
                    match crate::worker::handle(&e, message, 1 << 20, None).await {
                        crate::worker::Disposition::Answer(_) => answered += 1,
                        crate::worker::Disposition::Again(_) => {}
                        other => panic!("{other:?}"),
                    }
                }
            })
        });
        assert_eq!(answered, 1, "handed back five times, then answered once");
        let text = handle.render();
        let count = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!(
            count("picket_state_unavailable_total"),
            1.0,
            "one result went out without state; the metric says:\n{text}"
        );
    }

    fn status(code: u16) -> Outcome {
        Outcome::Answer(Answer {
            status: code,
            body_bytes: 500,
            text: PAGE_TEXT.into(),
            ..Answer::default()
        })
    }

    /// Plays back one page per call, each taking its time (ms) and asked beside other
    /// requests of ours to its IP or not; records whether each call was asked alone.
    struct Timed {
        script: Mutex<Vec<(u64, bool)>>,
        alone: Mutex<Vec<bool>>,
    }

    impl Prober for Timed {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                self.alone.lock().expect("lock").push(plan.alone);
                let (ms, beside_ours) = self.script.lock().expect("lock").remove(0);
                let mut o = Observation::new("e0");
                o.ip = Some("192.0.2.1".parse().expect("ip"));
                o.outcome = ok();
                o.total = Duration::from_millis(ms);
                o.beside_ours = beside_ours;
                Attempt::Observed(o)
            })
        }
    }

    /// A slow answer asked beside other requests of ours to its IP may have waited in a
    /// limit's queue behind them (nginx's `limit_req` with a `burst` and no `nodelay`):
    /// it is asked again alone, with one attempt or two, and a site slow alone too is
    /// `degraded/slow`; one asked alone the first time is judged at once.
    #[tokio::test]
    async fn a_slow_answer_asked_beside_ours_is_asked_again_alone() {
        let job = job_for_url("https://a.example/", "j").expect("job");
        let run = |script: Vec<(u64, bool)>, attempts: u32| {
            let p = Arc::new(Timed {
                script: Mutex::new(script),
                alone: Mutex::new(vec![]),
            });
            let toml = format!(
                "[probe]\nretry_delay = \"1ms\"\nmax_latency = \"1s\"\nattempts = {attempts}\n"
            );
            (engine_of(p.clone(), &toml), p)
        };
        for attempts in [1, 2] {
            let (e, p) = run(vec![(3000, true), (5, false)], attempts);
            let r = e.run(&job).await;
            assert_eq!((r.verdict, r.attempts), (Verdict::Up, 2), "{}", r.detail);
            assert_eq!(*p.alone.lock().expect("lock"), vec![false, true]);
            assert!(r.detail.contains("attempt 1 was slower"), "{}", r.detail);
            let (e, _) = run(vec![(3000, true), (3000, false)], attempts);
            let r = e.run(&job).await;
            assert_eq!(
                (r.verdict, r.reason.as_str(), r.attempts),
                (Verdict::Degraded, "slow", 2),
                "{}",
                r.detail
            );
            let (e, p) = run(vec![(3000, false)], attempts);
            let r = e.run(&job).await;
            assert_eq!(
                (r.verdict, r.attempts),
                (Verdict::Degraded, 1),
                "{}",
                r.detail
            );
            assert_eq!(*p.alone.lock().expect("lock"), vec![false]);
        }
    }

    /// One attempt (`probe.attempts = 1`, one egress): a refusal amid other requests of
    /// ours to its IP may be the first host of a defence's storm, and is confirmed once;
    /// any other failure is `down` at once.
    #[tokio::test]
    async fn with_one_attempt_a_refusal_amid_our_requests_is_confirmed_once() {
        let one = |outcomes: Vec<Outcome>, amid_our_requests: usize| {
            let p = Arc::new(Scripted {
                egress_count: 1,
                amid_our_requests,
                ..Arc::into_inner(Scripted::new(outcomes)).expect("one owner")
            });
            let e = engine_of(p.clone(), "[probe]\nretry_delay = \"1ms\"\nattempts = 1\n");
            (e, p)
        };
        let job = job_for_url("https://a.example/", "j").expect("job");
        let (e, p) = one(vec![status(403), ok()], 1);
        let r = e.run(&job).await;
        assert_eq!((r.verdict, r.attempts), (Verdict::Up, 2), "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
        // Refused again: the site's, confirmed by the two.
        let (e, p) = one(vec![status(403), status(403)], 1);
        let r = e.run(&job).await;
        assert_eq!((r.verdict, r.attempts), (Verdict::Down, 2), "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
        // Nothing else of ours went to the IP: one attempt, as asked.
        let (e, p) = one(vec![status(403)], 0);
        let r = e.run(&job).await;
        assert_eq!((r.verdict, r.attempts), (Verdict::Down, 1), "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_plain_http_answer_that_is_not_up_is_asked_over_https_as_browsers_do() {
        // Port 80 answers 403, HTTPS the page: up at once, on the HTTPS answer.
        let p = Scripted::new(vec![status(403), ok()]);
        let r = engine(p.clone())
            .run(&job_for_url("http://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
        assert!(
            r.detail.contains("asked https://a.example/ instead"),
            "{}",
            r.detail
        );
        // HTTPS no better: the plain-HTTP answer stands, confirmed as before (each of
        // the three attempts asked both ways).
        let p = Scripted::new(vec![status(500); 6]);
        let r = engine(p.clone())
            .run(&job_for_url("http://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 6);
        // An address browsers do not upgrade is asked as given.
        let p = Scripted::new(vec![status(403), status(403), status(403)]);
        let r = engine(p.clone())
            .run(&job_for_url("http://a.example:8080/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 3);
    }

    /// Review S. When port 80 failed the prober asked HTTPS itself, so an answer that came
    /// over HTTPS is that upgrade's: asking it again cost a whole timeout more per
    /// attempt (three or four in all) and told nothing new.
    #[tokio::test]
    async fn an_answer_the_prober_already_took_over_https_is_not_asked_again() {
        let upgraded = || {
            Outcome::Answer(Answer {
                status: 500,
                body_bytes: 500,
                text: PAGE_TEXT.into(),
                final_url: "https://a.example/".into(),
                ..Answer::default()
            })
        };
        let p = Scripted::new(vec![upgraded(); 6]);
        let r = engine(p.clone())
            .run(&job_for_url("http://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 3, "one request per attempt");
    }

    /// Hunt M: a page through a proxy throttled to 20 KB/s came slowly, and one attempt
    /// said `degraded/slow` while the direct egress, never asked, got it in 3 ms. With
    /// another egress to ask, a slow answer is asked again through it; a fast answer
    /// there wins. With one egress, a slow answer stands at once, as before.
    #[tokio::test]
    async fn a_slow_answer_through_one_egress_is_asked_again_through_another() {
        let slow = || {
            Outcome::Answer(Answer {
                status: 200,
                body_bytes: 500,
                text: PAGE_TEXT.into(),
                late: Some(Duration::ZERO),
                final_url: "https://a.example/".into(),
                ..Answer::default()
            })
        };
        let p = Scripted::new(vec![slow(), ok()]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
        let used = p.egresses.lock().expect("lock").clone();
        assert!(
            used.len() == 2 && used[0] != used[1],
            "another egress: {used:?}"
        );
        // Slow through both: degraded/slow, after one attempt each.
        let p = Scripted::new(vec![slow(), slow()]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Degraded, Reason::Slow),
            "{}",
            r.detail
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    }

    /// Runs `job` as the worker does, as a first delivery or a redelivery.
    async fn deliver(e: &Engine, job: &Job, redelivered: bool) -> Report {
        let delivery = Delivery {
            id: &job.id,
            redelivered,
        };
        match e.run_or_defer(job, None, Line::Outside, delivery).await {
            Run::Done(r) => *r,
            Run::Unsettled(..) => panic!("unsettled: the memory store always answers"),
            Run::Defer(_) => panic!("deferred"),
        }
    }

    /// A job whose step took `up → down` and whose worker died before publishing it can
    /// tell that change only on its redelivery: with `max_age_s` it was served the kept
    /// verdict of a later job instead (`changed: false`), and the outage never reached
    /// the changes exchange.
    #[tokio::test]
    async fn a_redelivered_job_is_checked_not_served_a_cached_verdict() {
        let p = Scripted::new(vec![ok(), refused(), refused(), refused()]);
        p.outcomes.lock().expect("lock").extend(vec![refused(); 6]);
        let e = engine(p.clone());
        let job = |id: &str| job_for_url("https://a.example/", id).expect("job");
        deliver(&e, &job("j1"), false).await;
        let died = deliver(&e, &job("j2"), false).await;
        assert!(died.changed, "{died:?}");
        let later = deliver(&e, &job("j3"), false).await;
        assert!(!later.changed);
        let mut again = job("j2");
        again.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &again, true).await;
        assert!(!r.cached, "a redelivery is not served the cache");
        assert_eq!((r.previous_verdict, r.changed), (Some(Verdict::Up), true));
    }

    /// `max_age_s` serves a verdict on the site of the same URL: an `unknown` (our own
    /// trouble) or `invalid` result, or the verdict of another URL given the same
    /// `key`, was served as this job's answer.
    #[tokio::test]
    async fn max_age_serves_only_a_verdict_on_the_same_site() {
        let p = Scripted::new(vec![ok(), ok(), ok()]);
        let e = engine(p.clone());
        let mut busy = job_for_url("https://a.example/", "j1").expect("job");
        busy.key = "k".into();
        let delivery = Delivery {
            id: "j1",
            redelivered: false,
        };
        let r = e.too_busy(&busy, delivery, "busy").await;
        assert_eq!(r.verdict, Verdict::Unknown);
        let mut cached = job_for_url("https://a.example/", "j2").expect("job");
        cached.key = "k".into();
        cached.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &cached, false).await;
        assert_eq!(
            (r.cached, r.verdict),
            (false, Verdict::Up),
            "not the unknown"
        );
        let mut other = job_for_url("https://b.example/", "j3").expect("job");
        other.key = "k".into();
        other.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &other, false).await;
        assert!(!r.cached, "another URL's verdict");
        assert_eq!(r.url, "https://b.example/");
        let r = deliver(&e, &other, false).await;
        assert!(r.cached, "its own verdict is served");
    }

    /// Hunt P: monitors of one URL sharing a `key` but not their `expect` were served
    /// each other's verdict under `max_age_s`: an `up` judged by a lenient job for a job
    /// whose own expectations the page fails (CONTRACT: "never one judged under another
    /// job's `expect`"). So was a job whose `key` is another check's derived key.
    #[tokio::test]
    async fn max_age_serves_no_verdict_judged_under_another_expect() {
        let p = Scripted::new(vec![ok(); 40]);
        let e = engine(p.clone());
        let strict = crate::job::Expect {
            body_contains: Some("Closed for the season".into()),
            ..crate::job::Expect::default()
        };
        let mut lenient = job_for_url("https://a.example/", "j1").expect("job");
        lenient.key = "k".into();
        assert_eq!(deliver(&e, &lenient, false).await.verdict, Verdict::Up);
        let mut picky = job_for_url("https://a.example/", "j2").expect("job");
        picky.key = "k".into();
        picky.expect = strict.clone();
        picky.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &picky, false).await;
        assert_eq!(
            (r.cached, r.verdict),
            (false, Verdict::Down),
            "the page lacks its text: {r:?}"
        );

        // A key given that is another check's derived key.
        let derived = job_for_url("https://a.example/", "j3").expect("job");
        assert_eq!(deliver(&e, &derived, false).await.verdict, Verdict::Up);
        let mut squatter = job_for_url("https://a.example/", "j4").expect("job");
        squatter.key = derived.key.clone();
        squatter.expect = strict;
        squatter.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &squatter, false).await;
        assert_eq!((r.cached, r.verdict), (false, Verdict::Down), "{r:?}");

        // The same check under its key is still served.
        let mut again = job_for_url("https://a.example/", "j5").expect("job");
        again.key = "k".into();
        again.expect = picky.expect.clone();
        again.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &again, false).await;
        assert_eq!((r.cached, r.verdict), (true, Verdict::Down), "{r:?}");
    }

    /// A `down` must be the site's fault. An answer to the handshake that is no TLS may
    /// come from our own way out (a captive portal, an intercepting proxy or firewall
    /// answering port 443 with its plain-HTTP page): when the canaries fail the same
    /// way, it is ours, as a refused connection is.
    #[tokio::test]
    async fn no_tls_from_the_canaries_too_is_our_network_not_the_site() {
        let no_tls = Outcome::Failure(Failure {
            kind: FailureKind::NoTls,
            detail: "a.example (192.0.2.1:443): TLS failed: the server does not speak TLS \
                     on this port (received corrupt message of type InvalidContentType)"
                .into(),
        });
        let p = Scripted::new(vec![no_tls; 20]);
        let e = engine_of(
            p.clone(),
            "[probe]\nretry_delay = \"1ms\"\nattempts = 3\ncanaries = [\"https://canary.example/\"]\n",
        );
        let r = e
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Unknown, Reason::EgressUnavailable),
            "{}",
            r.detail
        );
    }

    /// A network of many sites (hunt J, review R): `siteN.example` is 192.0.2.N, the
    /// canary `canary.example` (each request to it counted); `dead.example` never
    /// answers, `gone.example` (192.0.2.251) is refused at once, and `lined.example`
    /// (192.0.2.250) first waits `line` in its IP's line (the per-IP limiter waits
    /// inside `observe`). Once `broken`, nothing answers. A silent failure comes after
    /// `silence` (a connection that never came), an answer at once.
    struct Net {
        broken: std::sync::atomic::AtomicBool,
        /// Our way out refuses every connection.
        refusing: std::sync::atomic::AtomicBool,
        /// Our way out refuses this many connections more, then works (a brief cut).
        cut_for: AtomicUsize,
        silence: Duration,
        line: Duration,
        lined: std::sync::atomic::AtomicBool,
        canary_asked: AtomicUsize,
        /// How often `lagged.example` was asked.
        lagged: AtomicUsize,
        /// How often `late.example` was asked.
        late: AtomicUsize,
        /// How often `falling.example` was asked.
        falling: AtomicUsize,
        /// How often `hopped.example` was asked.
        hopped: AtomicUsize,
    }

    impl Net {
        fn new(broken: bool, silence: Duration, line: Duration) -> Arc<Net> {
            Arc::new(Net {
                broken: std::sync::atomic::AtomicBool::new(broken),
                refusing: std::sync::atomic::AtomicBool::new(false),
                cut_for: AtomicUsize::new(0),
                silence,
                line,
                lined: std::sync::atomic::AtomicBool::new(false),
                canary_asked: AtomicUsize::new(0),
                lagged: AtomicUsize::new(0),
                late: AtomicUsize::new(0),
                falling: AtomicUsize::new(0),
                hopped: AtomicUsize::new(0),
            })
        }
    }

    impl Prober for Net {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let host = plan.url.host_str().unwrap_or_default().to_string();
                if host == "lined.example" && !self.lined.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(self.line).await;
                }
                if host == "canary.example" {
                    self.canary_asked.fetch_add(1, Ordering::SeqCst);
                }
                let asked = tokio::time::Instant::now();
                if host == "lagged.example" && self.lagged.fetch_add(1, Ordering::SeqCst) == 1 {
                    // Its proxy, busy, opens the connection a while after it was asked.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if host == "late.example" && self.late.fetch_add(1, Ordering::SeqCst) == 0 {
                    // A handshake and an intermediate's fetch before its last connection.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                // Its first attempt follows a redirect first: its last request
                // goes out 600 ms after the attempt set out.
                let hop = (host == "hopped.example"
                    && self.hopped.fetch_add(1, Ordering::SeqCst) == 0)
                    .then_some(Duration::from_millis(600));
                if let Some(hop) = hop {
                    tokio::time::sleep(hop).await;
                }
                let n: u8 = match host.as_str() {
                    "hopped.example" => 246,
                    "lined.example" => 250,
                    "late.example" => 248,
                    "falling.example" => 247,
                    "lagged.example" => 249,
                    "gone.example" => 251,
                    h if h.starts_with("dead") && h != "dead.example" => h
                        .trim_start_matches("dead")
                        .trim_end_matches(".example")
                        .parse::<u8>()
                        .map_or(200, |k| 150 + k),
                    h if h.starts_with("closed") => h
                        .trim_start_matches("closed")
                        .trim_end_matches(".example")
                        .parse::<u8>()
                        .map_or(200, |k| 120 + k),
                    h => h
                        .trim_start_matches("site")
                        .trim_end_matches(".example")
                        .parse()
                        .unwrap_or(200),
                };
                let mut o = Observation::new("direct");
                o.ip = Some(std::net::IpAddr::from([192, 0, 2, n]));
                if host == "gone.example" {
                    o.outcome = Outcome::Failure(Failure {
                        kind: FailureKind::Connect,
                        detail: "connection refused".into(),
                    });
                    o.total = Duration::from_millis(2);
                } else if host.starts_with("closed")
                    || self.refusing.load(Ordering::SeqCst)
                    || self
                        .cut_for
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    // A refusal takes a round trip: it comes after answers set out beside it.
                    let trip = Duration::from_millis(5);
                    tokio::time::sleep(trip).await;
                    o.outcome = Outcome::Failure(Failure {
                        kind: FailureKind::Connect,
                        detail: "connection refused".into(),
                    });
                    o.total = trip;
                } else if self.broken.load(Ordering::SeqCst)
                    || host.starts_with("dead")
                    || (host == "falling.example"
                        && self.falling.fetch_add(1, Ordering::SeqCst) > 0)
                {
                    tokio::time::sleep(self.silence).await;
                    o.outcome = Outcome::Failure(Failure {
                        kind: FailureKind::Timeout,
                        detail: "no connection".into(),
                    });
                    o.total = self.silence;
                } else if host == "lagged.example" || host == "falling.example" {
                    o.outcome = Outcome::Answer(Answer {
                        status: 503,
                        ..Answer::default()
                    });
                } else {
                    o.outcome = ok();
                }
                if host == "lagged.example" || host == "late.example" || hop.is_some() {
                    o.total = asked.elapsed();
                }
                o.last_asked = hop;
                Attempt::Observed(o)
            })
        }
    }

    fn engine_on(net: Arc<dyn Prober>, probe: &str) -> Arc<Engine> {
        Arc::new(engine_of(net, &format!("[probe]\n{probe}")))
    }

    async fn run_all(e: &Arc<Engine>, urls: impl Iterator<Item = String>) -> Vec<Report> {
        let jobs: Vec<Job> = urls
            .enumerate()
            .map(|(i, u)| job_for_url(&u, &format!("j{i}")).expect("job"))
            .collect();
        futures_util::future::join_all(jobs.iter().map(|j| e.run(j))).await
    }

    /// Hunt J: our egress dropped every packet, 25 sites at once, no canaries, default
    /// timings (a silent connect takes 10 s, the confirmation 2 s later another 10 s):
    /// 19 of 25 were `down`. The wave looks back 10 s from when each job is judged, and
    /// by then the first attempts of the wave had ended more than 10 s before; only the
    /// jobs judged last saw 20 silent sites.
    #[tokio::test(start_paused = true)]
    async fn a_wave_of_attempts_longer_than_the_wave_window_is_still_our_network() {
        let net = Net::new(true, Duration::from_secs(10), Duration::ZERO);
        let e = engine_on(net, "retry_delay = \"2s\"\nattempts = 2\n");
        let urls = (1..=25).map(|n| format!("https://site{n}.example/"));
        let down: Vec<String> = run_all(&e, urls)
            .await
            .into_iter()
            .filter(|r| r.verdict != Verdict::Unknown)
            .map(|r| format!("{} {:?}: {}", r.url, r.verdict, r.detail))
            .collect();
        assert!(down.is_empty(), "{} not unknown: {down:#?}", down.len());
    }

    /// A batch of sites, six of them blackholed (distinct IPs), no canaries: their
    /// first attempts went silent while the others answered, so they are `down`,
    /// though their confirmations go silent together when nothing else is asked.
    #[tokio::test(start_paused = true)]
    async fn dead_sites_whose_confirmations_alone_go_silent_together_are_down() {
        let net = Net::new(false, Duration::from_secs(10), Duration::ZERO);
        let e = engine_on(net, "retry_delay = \"2s\"\nattempts = 2\n");
        let live = (1..=20).map(|n| format!("https://site{n}.example/"));
        let dead = (1..=6).map(|n| format!("https://dead{n}.example/"));
        for r in run_all(&e, live.chain(dead)).await {
            let want = match r.url.as_str().starts_with("https://dead") {
                true => Verdict::Down,
                false => Verdict::Up,
            };
            assert_eq!(r.verdict, want, "{}: {}", r.url, r.detail);
        }
    }

    /// A site answered 503, and its retry set out just before our way out was cut; its
    /// proxy, busy, opened the connection only after the cut began, so the retry went
    /// silent while what set out beside it before the cut still answered. The second
    /// after it set out held a few answers; the cut shows half a second on.
    #[tokio::test(start_paused = true)]
    async fn a_retry_whose_proxy_lagged_into_a_cut_is_ours() {
        let net = Net::new(false, Duration::from_secs(2), Duration::ZERO);
        let e = engine_on(net.clone(), "retry_delay = \"1s\"\nattempts = 2\n");
        let lagged = job_for_url("https://lagged.example/", "lagged").expect("job");
        let traffic = async {
            let mut runs = Vec::new();
            for k in 0..40u8 {
                let job =
                    job_for_url(&format!("https://site{}.example/", 100 + k), "t").expect("job");
                let e = e.clone();
                runs.push(tokio::spawn(async move { e.run(&job).await }));
                tokio::time::sleep(Duration::from_millis(50)).await;
                if k == 13 {
                    // 1.2 s after the lagged site's first attempt, 0.2 s after its retry.
                    net.broken.store(true, Ordering::SeqCst);
                }
            }
            futures_util::future::join_all(runs).await
        };
        let late = async {
            tokio::time::sleep(Duration::from_millis(550)).await;
            traffic.await
        };
        let (report, _) = tokio::join!(e.run(&lagged), late);
        assert_ne!(report.verdict, Verdict::Down, "{}", report.detail);
    }

    /// A site's first attempt went silent late: its last connection set out after the
    /// batch beside it had answered (a handshake and an intermediate's fetch came
    /// first), as our way out was cut. Its retry went silent beside sites that had
    /// answered us a moment before. The first attempt's moment holds the batch's
    /// answers; the retry's shows the cut. Seen through squid, whose own connect
    /// timeout (1 s) ends a silent connection before ours would.
    #[tokio::test(start_paused = true)]
    async fn a_site_gone_silent_late_in_its_first_attempt_as_a_cut_began_is_ours() {
        let net = Net::new(false, Duration::from_secs(1), Duration::ZERO);
        let e = engine_on(net.clone(), "retry_delay = \"200ms\"\nattempts = 2\n");
        let late = job_for_url("https://late.example/", "late").expect("job");
        let sites = || (1..=20).map(|n| format!("https://site{n}.example/"));
        let traffic = async {
            let before = run_all(&e, sites()).await;
            assert!(before.iter().all(|r| r.verdict == Verdict::Up));
            tokio::time::sleep(Duration::from_millis(500)).await;
            net.broken.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1400)).await;
            run_all(&e, sites()).await
        };
        let (report, after) = tokio::join!(e.run(&late), traffic);
        for r in after {
            assert_eq!(r.verdict, Verdict::Unknown, "{}: {}", r.url, r.detail);
        }
        assert_ne!(report.verdict, Verdict::Down, "{}", report.detail);
    }

    /// A site whose first attempt followed a redirect, and whose next hop set out as our
    /// way out was cut, went silent there; its retry went silent beside the cut's other
    /// victims, sites asked for the first time. The batch set out with its first
    /// attempt answered; the moment its silence began is the cut's. Seen through squid
    /// (redirect chains, cookie and meta-refresh hops): `down/timeout`, "confirmed".
    #[tokio::test(start_paused = true)]
    async fn a_site_gone_silent_at_a_later_hop_as_a_cut_began_is_ours() {
        let net = Net::new(false, Duration::from_secs(1), Duration::ZERO);
        let e = engine_on(net.clone(), "retry_delay = \"200ms\"\nattempts = 2\n");
        let hopped = job_for_url("https://hopped.example/", "hopped").expect("job");
        let traffic = async {
            let before = run_all(&e, (1..=20).map(|n| format!("https://site{n}.example/")));
            let before = before.await;
            assert!(before.iter().all(|r| r.verdict == Verdict::Up));
            tokio::time::sleep(Duration::from_millis(500)).await;
            net.broken.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            run_all(&e, (21..=40).map(|n| format!("https://site{n}.example/"))).await
        };
        let (report, after) = tokio::join!(e.run(&hopped), traffic);
        for r in after {
            assert_eq!(r.verdict, Verdict::Unknown, "{}: {}", r.url, r.detail);
        }
        assert_ne!(report.verdict, Verdict::Down, "{}", report.detail);
    }

    /// A site answered 503, and its retry found no connection, with nothing else asked
    /// beside it (a quiet worker): no cut can be told, and the site is down either way.
    /// Its own answer is the reason, not a silence our way out may have caused; the
    /// retry's failure is told beside it. Seen through squid with its way out cut: a
    /// page that lacked the job's words, `down/timeout`.
    #[tokio::test(start_paused = true)]
    async fn a_down_the_site_answered_keeps_its_reason_when_its_retry_finds_no_connection() {
        let net = Net::new(false, Duration::from_secs(1), Duration::ZERO);
        let e = engine_on(net, "retry_delay = \"200ms\"\nattempts = 2\n");
        let job = job_for_url("https://falling.example/", "f").expect("job");
        let r = e.run(&job).await;
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Down, Reason::HttpStatus),
            "{}",
            r.detail
        );
        assert!(r.detail.contains("no connection"), "{}", r.detail);
    }

    /// The same for six closed sites (distinct IPs, refusing at once): their refusals
    /// came while the batch's others answered, so they are `down`, though nothing set
    /// out after them answered.
    #[tokio::test(start_paused = true)]
    async fn dead_sites_refusing_beside_answers_are_down() {
        let net = Net::new(false, Duration::from_secs(10), Duration::ZERO);
        let e = engine_on(net, "retry_delay = \"2s\"\nattempts = 2\n");
        let live = (1..=20).map(|n| format!("https://site{n}.example/"));
        let closed = (1..=6).map(|n| format!("https://closed{n}.example/"));
        for r in run_all(&e, live.chain(closed)).await {
            let want = match r.url.as_str().starts_with("https://closed") {
                true => Verdict::Down,
                false => Verdict::Up,
            };
            assert_eq!(r.verdict, want, "{}: {}", r.url, r.detail);
        }
    }

    /// Our way out refuses every connection (a firewall's reset), no canaries: a
    /// refusal from 20 unrelated sites at once, nothing answering, is ours.
    #[tokio::test(start_paused = true)]
    async fn a_way_out_that_refuses_every_connection_is_ours() {
        let net = Net::new(false, Duration::from_secs(10), Duration::ZERO);
        let e = engine_on(net.clone(), "retry_delay = \"2s\"\nattempts = 2\n");
        let up = run_all(&e, (1..=20).map(|n| format!("https://site{n}.example/"))).await;
        assert!(up.iter().all(|r| r.verdict == Verdict::Up));
        tokio::time::sleep(Duration::from_secs(3)).await;
        net.refusing.store(true, Ordering::SeqCst);
        for r in run_all(&e, (21..=40).map(|n| format!("https://site{n}.example/"))).await {
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Unknown, Reason::EgressUnavailable),
                "{}: {}",
                r.url,
                r.detail
            );
        }
    }

    /// A quiet worker's way out refused it for a moment, no canaries: a healthy site's
    /// two attempts met the cut, which ended before the witness (a site that answered
    /// through it lately) was asked after them. The witness answering showed the way out
    /// works now, not that it worked when the site failed. Asked between the attempts,
    /// the witness meets the cut, and the retry, after it, answers.
    #[tokio::test(start_paused = true)]
    async fn a_cut_that_ends_before_the_witness_is_asked_is_no_sites_down() {
        let net = Net::new(false, Duration::from_secs(2), Duration::ZERO);
        let e = engine_on(net.clone(), "retry_delay = \"1s\"\nattempts = 2\n");
        let one = |url: &str| run_all(&e, std::iter::once(url.to_string()));
        assert_eq!(one("https://site1.example/").await[0].verdict, Verdict::Up);
        tokio::time::sleep(Duration::from_secs(3)).await;
        net.cut_for.store(2, Ordering::SeqCst);
        let r = &one("https://site2.example/").await[0];
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
        // A site refused before and after the witness answered is down, confirmed by
        // its two attempts: the witness was asked between them.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let r = &one("https://closed1.example/").await[0];
        assert_eq!(
            (r.verdict, r.reason, r.attempts),
            (Verdict::Down, Reason::Connect, 2),
            "{}",
            r.detail
        );
    }

    /// Two ways out, egress 0 and 1, where `site{n}.example` is at 192.0.2.n: every
    /// site answers, until `cut` makes both refuse every connection.
    struct TwoWays {
        cut: std::sync::atomic::AtomicBool,
    }

    impl Prober for TwoWays {
        fn egress_count(&self) -> usize {
            2
        }
        fn observe<'a>(&'a self, plan: &'a Plan, egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let host = plan.url.host_str().unwrap_or_default();
                let n = host
                    .trim_start_matches("site")
                    .trim_end_matches(".example")
                    .parse()
                    .unwrap_or(200);
                let mut o = Observation::new(["zero", "one"][egress % 2]);
                o.ip = Some(std::net::IpAddr::from([192, 0, 2, n]));
                tokio::time::sleep(Duration::from_millis(5)).await;
                o.total = Duration::from_millis(5);
                o.outcome = match self.cut.load(Ordering::SeqCst) {
                    true => Outcome::Failure(Failure {
                        kind: FailureKind::Connect,
                        detail: "connection refused".into(),
                    }),
                    false => ok(),
                };
                Attempt::Observed(o)
            })
        }
    }

    /// Helper-94's hunt: two ways out, the sites that answered lately all through one
    /// of them; both cut a few seconds as a healthy site's attempts went out, the first
    /// through the way out with witnesses, the retry through the other. Asked after
    /// the last attempt, the other way out had no witness to ask, and the site was a
    /// confirmed `down`. The witnesses of the first failure's way out are asked before
    /// the retry: refused too, ours.
    #[tokio::test(start_paused = true)]
    async fn a_cut_of_both_ways_out_asks_the_witnesses_of_the_first_failures() {
        let net = Arc::new(TwoWays {
            cut: std::sync::atomic::AtomicBool::new(false),
        });
        let e = engine_on(net.clone(), "retry_delay = \"1s\"\nattempts = 2\n");
        // Sites whose first attempt goes through egress 0.
        let mut through_zero = (1..=100u8)
            .map(|n| format!("https://site{n}.example/"))
            .filter(|u| fxhash(u).is_multiple_of(2));
        for url in through_zero.by_ref().take(3) {
            let r = &run_all(&e, std::iter::once(url)).await[0];
            assert_eq!(
                (r.verdict, r.egress.as_deref()),
                (Verdict::Up, Some("zero")),
                "{}",
                r.detail
            );
        }
        net.cut.store(true, Ordering::SeqCst);
        let url = through_zero.next().expect("a site");
        let r = &run_all(&e, std::iter::once(url)).await[0];
        assert_eq!(
            (r.verdict, r.reason),
            (Verdict::Unknown, Reason::EgressUnavailable),
            "{}",
            r.detail
        );
    }

    /// Hunt J: a canary answer up to 30 s old stood for our network after it broke.
    /// A dead site's failure asked the canaries (they answered); a moment later our
    /// network broke, and the healthy sites' failures, all begun after that, were
    /// `down` "confirmed", the canaries not asked again.
    #[tokio::test(start_paused = true)]
    async fn a_canary_answer_from_before_a_failure_began_does_not_stand_for_the_network() {
        let net = Net::new(false, Duration::from_secs(5), Duration::ZERO);
        let e = engine_on(
            net.clone(),
            "retry_delay = \"1s\"\nattempts = 2\ncanaries = [\"https://canary.example/\"]\n",
        );
        let dead = run_all(&e, std::iter::once("https://dead.example/".to_string())).await;
        assert_eq!(dead[0].verdict, Verdict::Down, "{}", dead[0].detail);
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.broken.store(true, Ordering::SeqCst);
        let urls = (1..=3).map(|n| format!("https://site{n}.example/"));
        for r in run_all(&e, urls).await {
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Unknown, Reason::EgressUnavailable),
                "{}",
                r.detail
            );
        }
    }

    /// Review R: `began` is taken before `attempts`, so it counts the time a job waits
    /// in its IP's line (the limiter waits inside `observe`), and the wave then looks
    /// back over the healthy traffic from before our network broke. With no canaries,
    /// our egress dropping every packet, and 25 sites in the wave called `unknown`, the
    /// one site that had waited 25 s for its IP's line is `down` "confirmed": 60 answers
    /// from before the break, all older than its first attempt, outweigh the wave
    /// (`answered * 10 < total` fails). Before 5260247 the 10 s window saw the wave.
    #[tokio::test(start_paused = true)]
    async fn review_r_a_job_that_waited_in_its_ips_line_sees_the_wave() {
        let net = Net::new(false, Duration::from_secs(10), Duration::from_secs(25));
        let e = engine_on(net.clone(), "retry_delay = \"2s\"\nattempts = 2\n");
        let lined = job_for_url("https://lined.example/", "lined").expect("job");
        let lined_run = e.run(&lined);
        let traffic = async {
            // 20 s of ordinary traffic: 3 healthy sites a second.
            for round in 0..20u8 {
                let urls =
                    (0..3u8).map(|k| format!("https://site{}.example/", 100 + 3 * round + k));
                for r in run_all(&e, urls).await {
                    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Our network breaks; 25 sites are probed into it.
            net.broken.store(true, Ordering::SeqCst);
            run_all(&e, (1..=25).map(|n| format!("https://site{n}.example/"))).await
        };
        let (lined_report, wave) = tokio::join!(lined_run, traffic);
        let unknown = wave
            .iter()
            .filter(|r| r.verdict == Verdict::Unknown)
            .count();
        assert_eq!(unknown, 25, "the wave itself is ours");
        assert_eq!(
            (lined_report.verdict, lined_report.reason),
            (Verdict::Unknown, Reason::EgressUnavailable),
            "{}",
            lined_report.detail
        );
    }

    /// Review R: a good canary answer stands only for failures begun before the check,
    /// so an ordinary stream of dead sites failing fast (refused, a name gone) asks the
    /// canaries once per failing job: 10 dead sites 2 s apart made 10 canary requests,
    /// where one answer stood for 30 s (`CANARY_FRESH`) before 5260247. Every failing
    /// job waits for a canary round trip, queued on one mutex, and the canary sites
    /// get a request per dead site of the fleet.
    #[tokio::test(start_paused = true)]
    async fn review_r_canaries_are_not_asked_once_per_failing_job() {
        let net = Net::new(false, Duration::from_secs(10), Duration::ZERO);
        let e = engine_on(
            net.clone(),
            "retry_delay = \"1s\"\nattempts = 2\ncanaries = [\"https://canary.example/\"]\n",
        );
        for k in 0..10 {
            let job = job_for_url("https://gone.example/", &format!("g{k}")).expect("job");
            let r = e.run(&job).await;
            assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let asked = net.canary_asked.load(Ordering::SeqCst);
        assert!(
            asked <= 2,
            "the canaries were asked {asked} times for 10 failures within 30 s"
        );
    }

    /// Behind a local caching resolver (the system's, `dns.nameservers = []`): once our
    /// way out breaks, every name not in its cache fails at once (SERVFAIL), while the
    /// root zone, in its cache, is still answered (`nameservers_answer`). Before the
    /// break `dead.example` is silent, which asks the canaries (they answer).
    struct CachingStub {
        broken: std::sync::atomic::AtomicBool,
    }

    impl Prober for CachingStub {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let host = plan.url.host_str().unwrap_or_default().to_string();
                let mut o = Observation::new("direct");
                if self.broken.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    o.outcome = Outcome::Failure(Failure {
                        kind: FailureKind::DnsFailed,
                        detail: format!("{host}: SERVFAIL"),
                    });
                    o.total = Duration::from_millis(800);
                } else if host == "dead.example" {
                    o.ip = Some(std::net::IpAddr::from([192, 0, 2, 99]));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    o.outcome = Outcome::Failure(Failure {
                        kind: FailureKind::Timeout,
                        detail: "no connection".into(),
                    });
                    o.total = Duration::from_secs(5);
                } else {
                    o.ip = Some(std::net::IpAddr::from([192, 0, 2, 1]));
                    o.outcome = ok();
                }
                Attempt::Observed(o)
            })
        }
        fn nameservers_answer<'a>(&'a self, _: &'a str, _: &'a [String]) -> BoxFuture<'a, bool> {
            Box::pin(async { true })
        }
    }

    /// Review S (c107271): a good canary answer now stands for any failure that is not
    /// "silent", and a lookup that failed (DnsFailed: SERVFAIL, a lookup timed out) is
    /// not silent. Our way out breaks a second after a canary check found it working;
    /// behind a caching resolver every healthy site's lookup then fails at once, the
    /// root zone still answered from the cache, and the 12 s old canary answer stands
    /// for the network: healthy sites are `down/dns` "confirmed". Before c107271 the
    /// check had to postdate the failure, the canaries were asked again, and failed.
    #[tokio::test(start_paused = true)]
    async fn review_s_a_lookup_failing_after_our_network_broke_is_not_vouched_for_by_an_older_canary(
    ) {
        let net = Arc::new(CachingStub {
            broken: std::sync::atomic::AtomicBool::new(false),
        });
        let e = engine_on(
            net.clone(),
            "retry_delay = \"1s\"\nattempts = 2\ncanaries = [\"https://canary.example/\"]\n",
        );
        let dead = run_all(&e, std::iter::once("https://dead.example/".to_string())).await;
        assert_eq!(dead[0].verdict, Verdict::Down, "{}", dead[0].detail);
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.broken.store(true, Ordering::SeqCst);
        let urls = (1..=3).map(|n| format!("https://site{n}.example/"));
        let wrong: Vec<String> = run_all(&e, urls)
            .await
            .into_iter()
            .filter(|r| r.verdict != Verdict::Unknown)
            .map(|r| {
                format!(
                    "{} {}/{}: {}",
                    r.url,
                    r.verdict.as_str(),
                    r.reason.as_str(),
                    r.detail
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "healthy sites judged after our network broke: {wrong:#?}"
        );
    }

    #[tokio::test]
    async fn a_blip_is_not_down_and_retries_change_egress() {
        let p = Scripted::new(vec![refused(), ok()]);
        let e = engine(p.clone());
        let r = e
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Up);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.attempt_log.len(), 2);
        assert_eq!(r.attempt_log[0].reason, "connect");
        let eg = p.egresses.lock().expect("lock").clone();
        assert_ne!(eg[0], eg[1], "the retry must use the other egress");
    }

    fn throttled() -> Outcome {
        Outcome::Answer(Answer {
            status: 429,
            body_bytes: 500,
            retry_after: Some("120".into()),
            ..Answer::default()
        })
    }

    fn maintenance(pause_s: u64) -> Outcome {
        Outcome::Answer(Answer {
            status: 503,
            body_bytes: 500,
            retry_after: Some(pause_s.to_string().into()),
            pause_asked: Some(Duration::from_secs(pause_s)),
            ..Answer::default()
        })
    }

    #[tokio::test]
    async fn a_503_asking_a_pause_longer_than_a_confirmation_may_wait_confirms_itself() {
        // WordPress's maintenance mode, and maintenance pages generally: 503 with
        // Retry-After 600. Asking again before then would disregard it, and waiting for
        // it would hold the job for ten minutes, only to be told the same.
        let job = job_for_url("https://a.example/", "j").expect("job");
        let p = Scripted::new(vec![maintenance(600), ok()]);
        let r = engine(p.clone()).run(&job).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "http_status")
        );
        assert_eq!(p.calls.load(Ordering::SeqCst), 1, "not asked again");
        assert!(
            r.detail.contains("Retry-After") && r.detail.contains("600 s"),
            "{}",
            r.detail
        );
        // A pause a confirmation can wait for is waited for, and the site asked again.
        let p = Scripted::new(vec![maintenance(5), ok()]);
        let r = engine(p.clone()).run(&job).await;
        assert_eq!(r.verdict, Verdict::Up);
        assert_eq!(p.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn blocked_is_confirmed_only_through_another_egress() {
        let job = job_for_url("https://a.example/", "j").expect("job");
        let mut one = Scripted::new(vec![throttled(), ok()]);
        if let Some(p) = Arc::get_mut(&mut one) {
            p.egress_count = 1;
        }
        let r = engine(one.clone()).run(&job).await;
        assert_eq!(
            (r.verdict, r.reason.as_str(), r.attempts),
            (Verdict::Unknown, "blocked", 1)
        );
        let two = Scripted::new(vec![throttled(), ok()]);
        let r = engine(two.clone()).run(&job).await;
        assert_eq!(
            (r.verdict, r.attempts),
            (Verdict::Up, 2),
            "the other egress got through"
        );
    }

    #[tokio::test]
    async fn down_only_after_every_attempt_failed() {
        let p = Scripted::new(vec![refused(), refused(), refused()]);
        let e = engine(p.clone());
        let r = e
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.reason, "connect");
        assert_eq!(r.attempts, 3);
        assert!(r.detail.contains("confirmed by 3 attempts"), "{}", r.detail);
    }

    #[tokio::test]
    async fn up_needs_one_attempt_and_previous_verdict_is_tracked() {
        let p = Scripted::new(vec![ok(), refused(), refused(), refused(), ok()]);
        let e = engine(p.clone());
        let job = job_for_url("https://a.example/", "j").expect("job");
        let r1 = e.run(&job).await;
        assert_eq!(
            (r1.verdict, r1.attempts, r1.previous_verdict, r1.changed),
            (Verdict::Up, 1, None, false)
        );
        let r2 = e.run(&job).await;
        assert_eq!(
            (r2.verdict, r2.previous_verdict, r2.changed),
            (Verdict::Down, Some(Verdict::Up), true)
        );
        let r3 = e.run(&job).await;
        assert_eq!(
            (r3.verdict, r3.previous_verdict, r3.changed),
            (Verdict::Up, Some(Verdict::Down), true)
        );
    }

    #[tokio::test]
    async fn max_age_serves_from_cache_without_probing() {
        let p = Scripted::new(vec![ok()]);
        let e = engine(p.clone());
        let mut job = job_for_url("https://a.example/", "first").expect("job");
        let _ = e.run(&job).await;
        job.id = "second".into();
        job.max_age = Some(Duration::from_secs(60));
        job.meta = Some(RawJson::from_text(r#"{"k": 2}"#).expect("json"));
        let r = e.run(&job).await;
        assert!(r.cached);
        assert_eq!(r.job_id, "second");
        assert_eq!(r.meta.as_ref().map(RawJson::get), Some(r#"{"k": 2}"#));
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    }

    fn proxy_failed() -> Outcome {
        Outcome::Failure(Failure {
            kind: FailureKind::Egress,
            detail: "egress p failed".into(),
        })
    }

    fn server_error() -> Outcome {
        Outcome::Answer(Answer {
            status: 500,
            body_bytes: 500,
            ..Answer::default()
        })
    }

    #[tokio::test]
    async fn a_failed_egress_is_left_and_the_failure_confirmed_through_another() {
        let p = Scripted::new(vec![proxy_failed(), refused(), refused(), refused()]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!((r.verdict, r.reason.as_str()), (Verdict::Down, "connect"));
        assert_eq!(
            r.attempts, 4,
            "the egress failure does not count as a confirmation"
        );
        let eg = p.egresses.lock().expect("lock").clone();
        assert!(
            eg[1..].iter().all(|e| *e != eg[0]),
            "the failed egress is not asked again: {eg:?}"
        );
    }

    #[tokio::test]
    async fn every_egress_failing_is_unknown_not_down() {
        let p = Scripted::new(vec![proxy_failed(), proxy_failed()]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason.as_str(), r.attempts),
            (Verdict::Unknown, "egress_unavailable", 2)
        );
    }

    #[tokio::test]
    async fn a_bot_wall_is_down_only_when_another_egress_sees_the_site_fail() {
        let p = Scripted::new(vec![
            throttled(),
            server_error(),
            server_error(),
            server_error(),
        ]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "http_status")
        );
        let p = Scripted::new(vec![throttled(), refused(), refused(), refused()]);
        let r = engine(p.clone())
            .run(&job_for_url("https://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "blocked")
        );
    }

    /// A site that answers `up` while `slow.example`'s gate is shut (held until the
    /// test opens it), and `503` to every other host: one site seen before and after
    /// it went down.
    struct Gated {
        gate: tokio::sync::Notify,
    }

    impl Prober for Gated {
        fn egress_count(&self) -> usize {
            1
        }
        fn observe<'a>(&'a self, plan: &'a Plan, _egress: usize) -> BoxFuture<'a, Attempt> {
            Box::pin(async move {
                let slow = plan.url.host_str() == Some("slow.example");
                if slow {
                    self.gate.notified().await;
                }
                let mut o = Observation::new("direct");
                o.ip = Some(std::net::IpAddr::from([192, 0, 2, 9]));
                o.outcome = if slow { ok() } else { status(503) };
                Attempt::Observed(o)
            })
        }
    }

    /// Hunt P. Two checks of one key overlap: j2 began first and saw the site up, j3
    /// began after the site went down and ended first, `up → down`. j2 ended last and
    /// stepped the key back, a false `down.up` while the site was down, and the next
    /// check told `up.down` again. The instant a check began probing orders it.
    #[tokio::test]
    async fn a_check_that_began_before_a_newer_one_does_not_step_the_key_back() {
        let gated = Arc::new(Gated {
            gate: tokio::sync::Notify::new(),
        });
        let e = engine_on(gated.clone(), "retry_delay = \"1ms\"\nattempts = 2\n");
        let job = |url: &str, id: &str| {
            let mut j = job_for_url(url, id).expect("job");
            j.key = "shop".into();
            j
        };
        gated.gate.notify_one();
        let j1 = e.run(&job("https://slow.example/", "j1")).await;
        assert_eq!(j1.verdict, Verdict::Up);
        let j2 = tokio::spawn({
            let e = e.clone();
            async move { e.run(&job("https://slow.example/", "j2")).await }
        });
        // j2 is probing (held at the gate); j3 begins later, on the clock too.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let j3 = e.run(&job("https://down.example/", "j3")).await;
        assert_eq!((j3.verdict, j3.changed), (Verdict::Down, true));
        gated.gate.notify_one();
        let j2 = j2.await.expect("j2");
        assert_eq!(
            (j2.verdict, j2.previous_verdict, j2.changed),
            (Verdict::Up, Some(Verdict::Down), false),
            "j2 looked before j3: told, but no change"
        );
        let j4 = e.run(&job("https://down.example/", "j4")).await;
        assert_eq!(
            (j4.previous_verdict, j4.changed, j4.streak),
            (Some(Verdict::Down), false, 2),
            "the outage was told once"
        );
    }

    /// reviewV: `Job::fingerprint` (81bc788) leaves out the job's `timeout_ms`, which
    /// judges as much as its `expect` does: a page that answered in 12 s is `up` for a
    /// job allowing 30 s and `down/timeout` for one allowing 2 s. Two monitors of a URL
    /// with different timeouts get the same derived key and fingerprint, and the
    /// strict one is served the lenient one's `up` under `max_age_s`.
    #[tokio::test]
    async fn review_v_max_age_serves_no_verdict_judged_under_another_timeout() {
        let timed_out = || {
            Outcome::Failure(Failure {
                kind: FailureKind::Timeout,
                detail: "no answer within 2000 ms".into(),
            })
        };
        let p = Scripted::new(vec![ok(), timed_out(), timed_out(), timed_out()]);
        let e = engine(p.clone());
        let lenient = job_for_url("https://a.example/", "j1").expect("job");
        assert_eq!(deliver(&e, &lenient, false).await.verdict, Verdict::Up);
        let mut strict = job_for_url("https://a.example/", "j2").expect("job");
        strict.timeout = Some(Duration::from_secs(2));
        strict.max_age = Some(Duration::from_secs(600));
        let r = deliver(&e, &strict, false).await;
        assert!(
            !r.cached,
            "a job with a 2 s timeout was served the verdict judged with 30 s: {:?} {} (cached)",
            r.verdict, r.detail
        );
    }
}
