//! The probe engine: one job in, one [`Report`] out, the same in the worker and in
//! `picket check`. It asks the key's state (a redelivered job's result, a fresh verdict
//! for `max_age_s`), plans, has a [`Prober`] observe the site once per
//! attempt (rotating the egress), judges each observation and combines them, so that
//! `down` is only said after every attempt failed.
//!
//! The engine knows no broker, no Redis and no HTTP library: those come in as traits.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::{ProbeSettings, Settings};
use crate::egress::{EgressHealth, Health, NetworkWatch, Signal};
use crate::job::{
    now_rfc3339, AttemptRecord, HttpFacts, Job, RawJson, Reason, Rejected, Report, SchemaVersion,
    Timing, Verdict,
};
use crate::metric;
use crate::probe::judge::{combine, judge, settled, JudgeSettings, Judgement};
use crate::probe::FailureKind;
use crate::probe::{Observation, Outcome, Plan};
use crate::state::{Delivery, StateStore};

/// Observes a site once: resolve, connect, ask, read.
pub trait Prober: Send + Sync {
    /// How many egresses there are to rotate through.
    fn egress_count(&self) -> usize;
    /// One probe through egress number `egress` (taken modulo the count).
    fn observe<'a>(&'a self, plan: &'a Plan, egress: usize) -> BoxFuture<'a, Observation>;
}

/// What became of a job.
#[derive(Debug)]
pub enum Run {
    /// Its result.
    Done(Box<Report>),
    /// Its IP is busy: bring it back after about this long.
    Defer(Duration),
}

/// Runs jobs to reports.
pub struct Engine {
    prober: Arc<dyn Prober>,
    state: Arc<dyn StateStore>,
    probe: ProbeSettings,
    judge: JudgeSettings,
    worker: String,
    canaries: Canaries,
    health: EgressHealth,
    network: NetworkWatch,
}

/// How long a canary check answers for all failures that ask.
const CANARY_FRESH: Duration = Duration::from_secs(30);

/// The same while many sites are failing at once.
const CANARY_FRESH_IN_WAVE: Duration = Duration::from_secs(3);

/// Known-good sites that tell our own network failing from theirs.
struct Canaries {
    plans: Vec<Plan>,
    /// When the last check ran and whether any canary answered; the async mutex makes
    /// a wave of failures wait for one check instead of starting one each.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

/// The name a worker writes in its results: `worker.name`, or host name and PID.
pub fn worker_name(settings: &Settings) -> String {
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Engine {
    /// An engine over the given prober and state store.
    pub fn new(
        prober: Arc<dyn Prober>,
        state: Arc<dyn StateStore>,
        settings: &Settings,
        worker: String,
    ) -> Engine {
        let prober_egresses = prober.egress_count();
        Engine {
            prober,
            state,
            probe: settings.probe.clone(),
            judge: JudgeSettings {
                tls_on_error: settings.tls.on_error,
                expiry_warn_days: settings.tls.expiry_warn_days,
                soft_failures: settings.probe.soft_failures,
            },
            worker,
            canaries: Canaries {
                plans: settings
                    .probe
                    .canaries
                    .iter()
                    .map(|url| {
                        let job = Job {
                            id: "canary".into(),
                            key: "canary".into(),
                            url: url.clone(),
                            method: crate::job::Method::Get,
                            headers: Vec::new(),
                            timeout: None,
                            expect: crate::job::Expect::default(),
                            max_age: None,
                            meta: None,
                        };
                        let mut plan = Plan::new(&job, &settings.probe);
                        plan.min_body_bytes = 0;
                        plan
                    })
                    .collect(),
                last: tokio::sync::Mutex::new(None),
            },
            health: EgressHealth::new(prober_egresses, settings.probe.egress_health),
            network: NetworkWatch::default(),
        }
    }

    /// Tells the egress bookkeeping what an attempt showed about its egress.
    fn note_health(&self, egress: usize, obs: &Observation) {
        let health = match &obs.outcome {
            Outcome::Answer(_) => Health::Works,
            Outcome::Failure(f) => match f.kind {
                FailureKind::Connect
                | FailureKind::Unreachable
                | FailureKind::Reset
                | FailureKind::Timeout
                | FailureKind::Tls
                | FailureKind::Protocol
                | FailureKind::Egress => Health::Failed,
                // These came after an answer: the way out worked.
                FailureKind::TooManyRedirects | FailureKind::BadRedirect => Health::Works,
                FailureKind::Dns
                | FailureKind::BlockedTarget
                | FailureKind::Throttled
                | FailureKind::LocalResources => Health::Silent,
            },
        };
        let now = tokio::time::Instant::now();
        let signal = match &obs.outcome {
            Outcome::Answer(_) => Signal::Answered,
            Outcome::Failure(f) => match f.kind {
                // A connection that never came up, or no route: nothing came back.
                FailureKind::Timeout if obs.connect.is_none() => Signal::Silent,
                FailureKind::Unreachable | FailureKind::Egress => Signal::Silent,
                _ => Signal::Other,
            },
        };
        self.network.record(obs.ip, signal, now);
        if self.health.record(egress, obs.ip, health, now) {
            metric::egress_rested(&obs.egress);
            tracing::warn!(
                egress = %obs.egress,
                rest_s = self.probe.egress_health.rest.as_secs(),
                "egress fails for many sites while others answer: resting it"
            );
        }
    }

    /// Whether our own network works: true when no canaries are configured or any
    /// canary answers (any HTTP answer below 500) through any egress.
    async fn network_ok(&self) -> bool {
        if self.canaries.plans.is_empty() {
            return true;
        }
        // In a wave of failures an answer from before it is stale: check again.
        let fresh = if self.network.wave(tokio::time::Instant::now()).is_some() {
            CANARY_FRESH_IN_WAVE
        } else {
            CANARY_FRESH
        };
        let mut last = self.canaries.last.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < fresh {
                return ok;
            }
        }
        let mut ok = false;
        'all: for egress in 0..self.prober.egress_count().max(1) {
            for plan in &self.canaries.plans {
                let obs = self.prober.observe(plan, egress).await;
                if matches!(&obs.outcome, Outcome::Answer(a) if a.status < 500) {
                    ok = true;
                    break 'all;
                }
            }
        }
        if !ok {
            tracing::warn!("every canary failed through every egress: our own network looks down");
        }
        *last = Some((tokio::time::Instant::now(), ok));
        ok
    }

    /// Answers a job, waiting for per-IP limits as long as its timeout allows.
    pub async fn run(&self, job: &Job) -> Report {
        let delivery = Delivery {
            id: &job.id,
            redelivered: false,
        };
        match self.run_or_defer(job, None, delivery).await {
            Run::Done(report) => *report,
            // Without a max_wait the prober never defers; answer honestly if it did.
            Run::Defer(_) => {
                self.too_busy(job, delivery, "the per-IP limit allowed no request in time")
                    .await
            }
        }
    }

    /// The `unknown/rate_limited` answer to a job our own per-IP limit kept from asking
    /// the site (its IP stayed busy): our limit, not the site's failure.
    pub async fn too_busy(&self, job: &Job, delivery: Delivery<'_>, why: &str) -> Report {
        metric::result(Verdict::Unknown, Reason::RateLimited, false);
        let mut r =
            self.report_without_probe(job, Verdict::Unknown, Reason::RateLimited, why.into());
        self.settle(&mut r, delivery).await;
        r
    }

    /// Answers a job, or says to defer it when a per-IP limit would make it wait longer
    /// than `max_wait` (`None`: never defer). A message the broker hands out again gets
    /// the result its first delivery produced when the state still keeps it: a repeat,
    /// never a different story.
    pub async fn run_or_defer(
        &self,
        job: &Job,
        max_wait: Option<Duration>,
        delivery: Delivery<'_>,
    ) -> Run {
        if delivery.redelivered {
            if let Some(report) = self.state.replay(&job.key, delivery.id).await {
                metric::state_replayed();
                metric::result(report.verdict, report.reason, false);
                return Run::Done(Box::new(report));
            }
        }
        if let Some(max_age) = job.max_age {
            if let Some(mut cached) = self.state.fresh(&job.key, max_age).await {
                cached.job_id = job.id.clone();
                cached.meta = job.meta.clone();
                cached.cached = true;
                cached.worker = self.worker.clone();
                // A served verdict is no new observation: it changes nothing.
                cached.previous_verdict = Some(cached.verdict).filter(|v| v.is_about_the_site());
                cached.changed = false;
                metric::result(cached.verdict, cached.reason, true);
                return Run::Done(Box::new(cached));
            }
        }
        let mut report = match self.probe(job, max_wait).await {
            Ok(r) => r,
            Err(wait) => return Run::Defer(wait),
        };
        self.settle(&mut report, delivery).await;
        metric::result(report.verdict, report.reason, false);
        Run::Done(Box::new(report))
    }

    /// Takes the key's state step for a report and fills its state fields.
    async fn settle(&self, report: &mut Report, delivery: Delivery<'_>) {
        let answer = self.state.step(report, delivery).await;
        if answer.is_none() && report.key.is_some() {
            metric::state_unavailable();
        }
        crate::state::fill(report, answer);
        if report.changed {
            if let Some(previous) = report.previous_verdict {
                metric::state_changed(previous, report.verdict);
            }
        }
    }

    /// Probes with confirmation; `Err(wait)` when the job should be deferred.
    async fn probe(&self, job: &Job, max_wait: Option<Duration>) -> Result<Report, Duration> {
        let mut plan = Plan::new(job, &self.probe);
        plan.max_wait = max_wait;
        let egresses = self.prober.egress_count().max(1);
        let required = self.probe.attempts as usize;
        // Failed egresses and bot walls cost attempts without telling anything about the
        // site, so with other egresses to try there is room for a few more.
        let budget = if egresses > 1 { 2 * required } else { required };
        // Spread first attempts over the egresses; a retry moves on to the next one.
        let mut next = (fxhash(job.url.as_str()) as usize) % egresses;
        // Egresses that have told all they can about this site.
        let mut spent: Vec<usize> = Vec::new();
        let mut observations: Vec<Observation> = Vec::new();
        let mut judgements: Vec<Judgement> = Vec::new();
        while judgements.len() < budget {
            let now = tokio::time::Instant::now();
            let Some(egress) = self.health.pick(next, &spent, now) else {
                break;
            };
            if !judgements.is_empty() {
                tokio::time::sleep(self.probe.retry_delay).await;
            }
            let obs = self.prober.observe(&plan, egress).await;
            if let Some(wait) = obs.deferred {
                return Err(wait);
            }
            metric::probe_observed(&obs);
            metric::egress_attempt(&obs.egress, matches!(obs.outcome, Outcome::Answer(_)));
            self.note_health(egress, &obs);
            let j = judge(&plan, &obs, &self.judge);
            tracing::debug!(attempt = judgements.len(), egress = %obs.egress, verdict = j.verdict.as_str(), reason = j.reason.as_str(), detail = %j.detail, "attempt");
            // Asking again through an egress the site refused as a bot tells nothing, and
            // a failed egress says nothing about the site; with one egress only, a failed
            // egress may still recover for the next attempt.
            if j.reason == Reason::Blocked
                || (j.reason == Reason::EgressUnavailable && egresses > 1)
            {
                spent.push(egress);
            }
            observations.push(obs);
            judgements.push(j);
            if settled(&judgements, required) {
                break;
            }
            next = egress + 1;
        }
        let Some((i, decisive)) = combine(&judgements, required) else {
            return Ok(self.report_without_probe(
                job,
                Verdict::Unknown,
                Reason::EgressUnavailable,
                "no attempt was made".into(),
            ));
        };
        let obs = &observations[i];
        let mut verdict = decisive.verdict;
        let mut reason = decisive.reason;
        let mut detail = decisive.detail.clone();
        // A site we cannot reach while known-good sites are unreachable too says
        // nothing about the site: our network is failing.
        if verdict == Verdict::Down
            && matches!(reason, Reason::Connect | Reason::Timeout | Reason::Dns)
        {
            if !self.network_ok().await {
                verdict = Verdict::Unknown;
                reason = Reason::EgressUnavailable;
                detail = format!(
                    "{detail}; every canary failed too, so this is our network, not the site"
                );
            } else if self.canaries.plans.is_empty() {
                // Without canaries to ask, a wave of silence is taken for what it almost
                // always is.
                if let Some(wave) = self.network.wave(tokio::time::Instant::now()) {
                    verdict = Verdict::Unknown;
                    reason = Reason::EgressUnavailable;
                    detail = format!("{detail}; {wave}: this looks like our network, not the site (configure probe.canaries to be sure)");
                }
            }
        }
        for note in &obs.notes {
            detail = format!("{detail}; {note}");
        }
        if judgements.len() > 1 && verdict == Verdict::Down {
            detail = format!("{detail} (confirmed by {} attempts)", judgements.len());
        } else if i > 0 && !decisive.wants_confirmation() {
            detail = format!(
                "{detail} (attempt {} failed first: {})",
                1, judgements[0].detail
            );
        }
        let http = match &obs.outcome {
            Outcome::Answer(a) => Some(HttpFacts {
                status: a.status,
                body_bytes: a.body_bytes as u64,
                final_url: a.final_url.clone(),
                redirects: a.redirects,
                charset: a.charset.clone(),
                truncated: a.truncated,
            }),
            Outcome::Failure(_) => None,
        };
        let tls_days_left = match &obs.outcome {
            Outcome::Answer(a) => a.tls_days_left,
            Outcome::Failure(_) => None,
        };
        let attempt_log = observations
            .iter()
            .zip(&judgements)
            .map(|(o, j)| AttemptRecord {
                egress: o.egress.clone(),
                verdict: j.verdict,
                reason: j.reason,
                detail: j.detail.clone(),
                ip: o.ip.map(|ip| ip.to_string()),
                total_ms: ms(o.total),
            })
            .collect();
        Ok(Report {
            schema: SchemaVersion,
            job_id: job.id.clone(),
            url: job.url.to_string(),
            verdict,
            reason,
            detail,
            http,
            timing_ms: Timing {
                total: ms(obs.total),
                dns: obs.dns.map(ms),
                connect: obs.connect.map(ms),
                tls: obs.tls.map(ms),
                first_byte: obs.first_byte.map(ms),
                queue: Some(ms(observations.iter().map(|o| o.queued).sum())),
            },
            ip: obs.ip.map(|ip| ip.to_string()),
            egress: Some(obs.egress.clone()),
            attempts: judgements.len() as u32,
            attempt_log,
            checked_at: now_rfc3339(),
            cached: false,
            key: Some(job.key.clone()),
            previous_verdict: None,
            changed: false,
            streak: 1,
            since: None,
            worker: self.worker.clone(),
            meta: job.meta.clone(),
            tls_days_left,
        })
    }

    fn report_without_probe(
        &self,
        job: &Job,
        verdict: Verdict,
        reason: Reason,
        detail: String,
    ) -> Report {
        self.bare_report(
            (&job.id, Some(&job.key)),
            job.url.as_str(),
            job.meta.clone(),
            (verdict, reason),
            detail,
        )
    }

    /// The `invalid` answer to a job that was refused before probing, with its key's
    /// state when it has a key.
    pub async fn rejected(&self, r: &Rejected, delivery: Delivery<'_>) -> Report {
        metric::result(Verdict::Invalid, Reason::InvalidJob, false);
        let mut report = self.bare_report(
            (&r.id, r.key.as_ref()),
            &r.url,
            r.meta.clone(),
            (Verdict::Invalid, Reason::InvalidJob),
            r.detail.clone(),
        );
        self.settle(&mut report, delivery).await;
        report
    }

    /// A report with no probe behind it (a refused job, or no attempt possible).
    fn bare_report(
        &self,
        (id, key): (&str, Option<&String>),
        url: &str,
        meta: Option<RawJson>,
        (verdict, reason): (Verdict, Reason),
        detail: String,
    ) -> Report {
        Report {
            schema: SchemaVersion,
            job_id: id.to_string(),
            key: key.cloned(),
            streak: 1,
            since: None,
            url: url.to_string(),
            verdict,
            reason,
            detail,
            http: None,
            timing_ms: Timing::default(),
            ip: None,
            egress: None,
            attempts: 0,
            attempt_log: Vec::new(),
            checked_at: now_rfc3339(),
            cached: false,
            previous_verdict: None,
            changed: false,
            worker: self.worker.clone(),
            meta,
            tls_days_left: None,
        }
    }
}

/// A small stable hash (FNV-1a) to spread URLs over egresses.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::job_for_url;
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
    }

    impl Scripted {
        fn new(outcomes: Vec<Outcome>) -> Arc<Scripted> {
            Arc::new(Scripted {
                outcomes: Mutex::new(outcomes),
                calls: AtomicUsize::new(0),
                egresses: Mutex::new(vec![]),
                egress_count: 2,
            })
        }
    }

    impl Prober for Scripted {
        fn egress_count(&self) -> usize {
            self.egress_count
        }
        fn observe<'a>(&'a self, _plan: &'a Plan, egress: usize) -> BoxFuture<'a, Observation> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.egresses.lock().expect("lock").push(egress % 2);
                let outcome = self.outcomes.lock().expect("lock").remove(0);
                let mut o = Observation::new(&format!("e{}", egress % 2));
                o.ip = Some("192.0.2.1".parse().expect("ip"));
                o.outcome = outcome;
                o.total = Duration::from_millis(3);
                o
            })
        }
    }

    fn ok() -> Outcome {
        Outcome::Answer(Answer {
            status: 200,
            body_bytes: 500,
            final_url: "http://a.example/".into(),
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
        let mut s =
            Settings::from_toml("[probe]\nretry_delay = \"1ms\"\nattempts = 3\n").expect("cfg");
        s.worker.name = "w".into();
        Engine::new(p, Arc::new(MemoryState::default()), &s, "w".into())
    }

    #[tokio::test]
    async fn a_blip_is_not_down_and_retries_change_egress() {
        let p = Scripted::new(vec![refused(), ok()]);
        let e = engine(p.clone());
        let r = e
            .run(&job_for_url("http://a.example/", "j").expect("job"))
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

    #[tokio::test]
    async fn blocked_is_confirmed_only_through_another_egress() {
        let job = job_for_url("http://a.example/", "j").expect("job");
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
            .run(&job_for_url("http://a.example/", "j").expect("job"))
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
        let job = job_for_url("http://a.example/", "j").expect("job");
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
        let mut job = job_for_url("http://a.example/", "first").expect("job");
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
            .run(&job_for_url("http://a.example/", "j").expect("job"))
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
            .run(&job_for_url("http://a.example/", "j").expect("job"))
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
            .run(&job_for_url("http://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "http_status")
        );
        let p = Scripted::new(vec![throttled(), refused(), refused(), refused()]);
        let r = engine(p.clone())
            .run(&job_for_url("http://a.example/", "j").expect("job"))
            .await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "blocked")
        );
    }
}
