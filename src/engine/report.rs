//! Building the result message: one pure function from what the engine learned (the job,
//! the verdict and, when probes were made, the attempts) to a [`Report`], so that every
//! report the engine writes, probed or not, is filled the same way. The key's state
//! fields start fresh here; the state store fills them afterwards.

use std::time::Duration;

use crate::job::{
    AttemptRecord, HttpFacts, RawJson, Reason, Report, SchemaVersion, Timing, Verdict,
};
use crate::probe::judge::Judgement;
use crate::probe::{Observation, Outcome};

/// Whom a report answers: the job as far as it is known (a refused job may have no key).
pub(super) struct Subject<'a> {
    /// The job's id.
    pub id: &'a str,
    /// The monitored check's key, when there is one.
    pub key: Option<&'a str>,
    /// The URL as asked.
    pub url: &'a str,
    /// The job's `meta`, echoed back.
    pub meta: Option<RawJson>,
}

/// The final word on a job: verdict, reason and the detail line.
pub(super) struct Word {
    /// The verdict.
    pub verdict: Verdict,
    /// Its reason.
    pub reason: Reason,
    /// One readable line.
    pub detail: String,
}

/// The attempts behind a report, in order, and which one decided it.
pub(super) struct Attempts<'a> {
    /// What each attempt saw.
    pub observations: &'a [Observation],
    /// What each attempt said on its own, one per observation.
    pub judgements: &'a [Judgement],
    /// Index of the decisive attempt.
    pub decisive: usize,
}

/// Where the report comes from: who wrote it and when.
pub(super) struct Stamp<'a> {
    /// The worker's name.
    pub worker: &'a str,
    /// When the verdict was reached (RFC 3339).
    pub checked_at: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The report on `subject`: `word`, with the facts of the decisive attempt and the log
/// of every attempt when there were any (`None`: refused, or no attempt possible).
pub(super) fn build(
    subject: Subject<'_>,
    word: Word,
    attempts: Option<Attempts<'_>>,
    stamp: Stamp<'_>,
) -> Report {
    let mut report = Report {
        schema: SchemaVersion,
        job_id: subject.id.to_string(),
        url: subject.url.to_string(),
        verdict: word.verdict,
        reason: word.reason,
        detail: word.detail,
        http: None,
        timing_ms: Timing::default(),
        ip: None,
        egress: None,
        attempts: 0,
        attempt_log: Vec::new(),
        checked_at: stamp.checked_at,
        cached: false,
        key: subject.key.map(str::to_string),
        previous_verdict: None,
        changed: false,
        streak: 1,
        since: None,
        worker: stamp.worker.to_string(),
        meta: subject.meta,
        tls_days_left: None,
        looked_ms: None,
    };
    if let Some(attempts) = attempts {
        fill_from_attempts(&mut report, &attempts);
    }
    report
}

/// The facts of the decisive attempt and the attempt log.
fn fill_from_attempts(report: &mut Report, attempts: &Attempts<'_>) {
    let Some(obs) = attempts.observations.get(attempts.decisive) else {
        return;
    };
    if let Outcome::Answer(a) = &obs.outcome {
        report.http = Some(HttpFacts {
            status: a.status,
            body_bytes: a.body_bytes as u64,
            final_url: a.final_url.clone(),
            redirects: a.redirects,
            charset: a.charset.map(str::to_owned),
            truncated: a.truncated,
        });
        report.tls_days_left = a.tls_days.map(|d| i64::from(d.left));
    }
    report.timing_ms = Timing {
        // The site's time, as the detail's "in N ms": our own waits are `queue`.
        total: ms(obs.sites_time()),
        dns: obs.dns.map(ms),
        connect: obs.connect.map(ms),
        tls: obs.tls.map(ms),
        first_byte: obs.first_byte.map(ms),
        // Our own waits for the per-IP limit, over every attempt.
        queue: Some(ms(attempts.observations.iter().map(|o| o.queued).sum())),
    };
    report.ip = obs.ip.map(|ip| ip.to_string());
    report.egress = Some(obs.egress.clone());
    report.attempts = attempts.judgements.len() as u32;
    report.attempt_log = attempts
        .observations
        .iter()
        .zip(attempts.judgements)
        .map(|(o, j)| AttemptRecord {
            egress: o.egress.clone(),
            verdict: j.verdict,
            reason: j.reason,
            detail: j.detail.clone(),
            ip: o.ip.map(|ip| ip.to_string()),
            total_ms: ms(o.sites_time()),
        })
        .collect();
}

/// What the attempts of a `down` said besides the decisive one: how many confirmed it,
/// how many told nothing of the site (through a failed egress, or refused by a bot wall:
/// hunt U), and what any other said (a page that broke off before the site died).
fn others_of_a_down(judgements: &[Judgement], downs: usize) -> String {
    let mut said = Vec::new();
    if downs > 1 {
        said.push(format!("confirmed by {downs} attempts"));
    }
    let nothing = judgements
        .iter()
        .filter(|j| j.verdict == Verdict::Unknown)
        .count();
    match (nothing, downs > 1) {
        (0, _) => {}
        (n, true) => said.push(format!("{n} more told nothing of the site")),
        (1, false) => said.push("1 other attempt told nothing of the site".into()),
        (n, false) => said.push(format!("{n} other attempts told nothing of the site")),
    }
    for (i, j) in judgements.iter().enumerate() {
        if !matches!(j.verdict, Verdict::Down | Verdict::Unknown) {
            let (verdict, reason) = (j.verdict.as_str(), j.reason);
            said.push(format!(
                "attempt {} was {verdict}/{reason}: {}",
                i + 1,
                j.detail
            ));
        }
    }
    said.join("; ")
}

/// The detail line of a probed verdict: the decisive judgement's (or our side's word on
/// it), the decisive attempt's notes, and what the other attempts add: how many
/// confirmed a `down`, or the failure a good attempt overcame.
pub(super) fn detail(detail: String, verdict: Verdict, attempts: &Attempts<'_>) -> String {
    let mut detail = detail;
    if let Some(obs) = attempts.observations.get(attempts.decisive) {
        for note in &obs.notes {
            detail = format!("{detail}; {note}");
        }
    }
    let judgements = attempts.judgements;
    let decisive_wants_confirmation = judgements
        .get(attempts.decisive)
        .is_some_and(Judgement::wants_confirmation);
    let downs = judgements
        .iter()
        .filter(|j| j.verdict == Verdict::Down)
        .count();
    if judgements.len() > 1 && verdict == Verdict::Down {
        detail = format!("{detail} ({})", others_of_a_down(judgements, downs));
    } else if attempts.decisive > 0 && !decisive_wants_confirmation {
        // A slow answer asked again alone (`Observation::beside_ours`) did not fail.
        let first = if judgements[0].reason == Reason::Slow {
            "was slower"
        } else {
            "failed first"
        };
        detail = format!("{detail} (attempt 1 {first}: {})", judgements[0].detail);
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Answer, Failure, FailureKind};

    fn subject() -> Subject<'static> {
        Subject {
            id: "j",
            key: Some("k"),
            url: "http://a.example/",
            meta: None,
        }
    }

    fn stamp() -> Stamp<'static> {
        Stamp {
            worker: "w",
            checked_at: "2026-11-29T00:00:00Z".into(),
        }
    }

    fn word(verdict: Verdict, reason: Reason) -> Word {
        Word {
            verdict,
            reason,
            detail: "d".into(),
        }
    }

    fn observed(outcome: Outcome, egress: &str, ms: u64) -> Observation {
        let mut o = Observation::new(egress);
        o.ip = Some("192.0.2.1".parse().expect("ip"));
        o.outcome = outcome;
        o.total = Duration::from_millis(ms);
        o.queued = Duration::from_millis(1);
        o
    }

    fn judged(verdict: Verdict, reason: Reason, detail: &str) -> Judgement {
        Judgement {
            verdict,
            reason,
            detail: detail.into(),
            confirmed_by_site: false,
            unasked: false,
        }
    }

    /// The report of `observations` judged `judgements`, the last attempt decisive.
    fn reported(observations: &[Observation], judgements: &[Judgement], word: Word) -> Report {
        let attempts = Attempts {
            observations,
            judgements,
            decisive: observations.len() - 1,
        };
        build(subject(), word, Some(attempts), stamp())
    }

    #[test]
    fn a_report_without_probes_has_no_facts() {
        let r = build(
            subject(),
            word(Verdict::Invalid, Reason::InvalidJob),
            None,
            stamp(),
        );
        assert_eq!(
            (r.verdict, r.reason, r.attempts),
            (Verdict::Invalid, Reason::InvalidJob, 0)
        );
        assert_eq!(
            (r.key.as_deref(), r.worker.as_str(), r.streak),
            (Some("k"), "w", 1)
        );
        assert!(r.http.is_none() && r.ip.is_none() && r.egress.is_none());
        assert_eq!(r.timing_ms, Timing::default());
        assert!(r.attempt_log.is_empty());
    }

    #[test]
    fn the_decisive_attempt_gives_the_facts_and_every_attempt_is_logged() {
        let refused = Outcome::Failure(Failure {
            kind: FailureKind::Connect,
            detail: "refused".into(),
        });
        let answer = Outcome::Answer(Answer {
            status: 200,
            body_bytes: 500,
            final_url: "http://a.example/".into(),
            tls_days: Some(crate::probe::CertDays {
                left: 40,
                lifetime: 90,
            }),
            ..Answer::default()
        });
        let observations = [observed(refused, "e0", 7), observed(answer, "e1", 3)];
        let judgements = [
            judged(Verdict::Down, Reason::Connect, "refused"),
            judged(Verdict::Up, Reason::Ok, "200 OK"),
        ];
        let r = reported(&observations, &judgements, word(Verdict::Up, Reason::Ok));
        assert_eq!(r.attempts, 2);
        assert_eq!(r.egress.as_deref(), Some("e1"));
        assert_eq!(r.http.as_ref().map(|h| h.status), Some(200));
        assert_eq!(r.tls_days_left, Some(40));
        assert_eq!((r.timing_ms.total, r.timing_ms.queue), (2, Some(2)));
        let log: Vec<_> = r
            .attempt_log
            .iter()
            .map(|a| (a.egress.as_str(), a.reason, a.total_ms))
            .collect();
        assert_eq!(log, [("e0", Reason::Connect, 6), ("e1", Reason::Ok, 2)]);
    }

    /// An instant refused connection after 20 s waiting for its IP's hold was logged as
    /// taking 20003 ms, and a result's `total` (499) was smaller than its `queue`
    /// (20498) (hunt Z3). `total` and each attempt's `total_ms` are the site's time, as
    /// the detail's "in N ms" is; `queue` is our own waiting, over every attempt.
    #[test]
    fn the_times_are_the_sites_and_our_waiting_is_the_queue() {
        let refused = || {
            Outcome::Failure(Failure {
                kind: FailureKind::Connect,
                detail: "refused".into(),
            })
        };
        let mut first = observed(refused(), "e", 20_003);
        first.queued = Duration::from_millis(20_000);
        let mut second = observed(refused(), "e", 499);
        second.queued = Duration::from_millis(498);
        let observations = [first, second];
        let down = judged(Verdict::Down, Reason::Connect, "refused");
        let judgements = [down.clone(), down];
        let r = reported(
            &observations,
            &judgements,
            word(Verdict::Down, Reason::Connect),
        );
        assert_eq!((r.timing_ms.total, r.timing_ms.queue), (1, Some(20_498)));
        let logged: Vec<u64> = r.attempt_log.iter().map(|a| a.total_ms).collect();
        assert_eq!(logged, [3, 1]);
    }

    #[test]
    fn the_detail_tells_what_the_other_attempts_add() {
        let o = observed(Outcome::Answer(Answer::default()), "e", 1);
        let observations = [o.clone(), o.clone(), o];
        let down = judged(Verdict::Down, Reason::Connect, "refused");
        let up = judged(Verdict::Up, Reason::Ok, "200 OK");
        let confirmed = [down.clone(), down.clone(), down.clone()];
        let attempts = Attempts {
            observations: &observations,
            judgements: &confirmed,
            decisive: 2,
        };
        assert_eq!(
            detail("refused".into(), Verdict::Down, &attempts),
            "refused (confirmed by 3 attempts)"
        );
        // Hunt U: an attempt through a dead proxy confirms nothing.
        let unknown = judged(Verdict::Unknown, Reason::EgressUnavailable, "proxy refused");
        let through_a_dead_proxy = [unknown, down.clone(), down.clone()];
        let attempts = Attempts {
            observations: &observations,
            judgements: &through_a_dead_proxy,
            decisive: 2,
        };
        assert_eq!(
            detail("refused".into(), Verdict::Down, &attempts),
            "refused (confirmed by 2 attempts; 1 more told nothing of the site)"
        );
        // Hunt Z1b: a Node app that wrote part of its page and died; the first attempt
        // saw the page break off, the second a refused connection. The detail said "1
        // other attempts told nothing of the site".
        let broke = judged(
            Verdict::Degraded,
            Reason::Protocol,
            "200 OK, 150 bytes, but the body broke off",
        );
        let died = [broke, down.clone()];
        let attempts = Attempts {
            observations: &observations[..2],
            judgements: &died,
            decisive: 1,
        };
        assert_eq!(
            detail("refused".into(), Verdict::Down, &attempts),
            "refused (attempt 1 was degraded/protocol: 200 OK, 150 bytes, but the body broke off)"
        );
        let unknown = judged(Verdict::Unknown, Reason::EgressUnavailable, "proxy refused");
        let one_through_a_dead_proxy = [unknown, down.clone()];
        let attempts = Attempts {
            observations: &observations[..2],
            judgements: &one_through_a_dead_proxy,
            decisive: 1,
        };
        assert_eq!(
            detail("refused".into(), Verdict::Down, &attempts),
            "refused (1 other attempt told nothing of the site)"
        );
        let blip = [down, up];
        let attempts = Attempts {
            observations: &observations[..2],
            judgements: &blip,
            decisive: 1,
        };
        assert_eq!(
            detail("200 OK".into(), Verdict::Up, &attempts),
            "200 OK (attempt 1 failed first: refused)"
        );
    }
}
