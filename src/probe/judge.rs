//! The judgement: an [`Observation`] against a [`Plan`] gives a verdict, a stable reason
//! code and one readable detail line; several attempts combine into the final word.
//!
//! Order of the rules matters and is the same as a person's reading of a page: no answer
//! at all, then the status, then whether there is a page, then what it says, then speed.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::config::{ProbeSettings, TlsOnError, TlsSettings};
use crate::job::{Reason, Verdict};
use crate::probe::{Answer, Failure, FailureKind, Observation, Outcome, Plan};

/// A verdict with its reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// One readable line.
    pub detail: String,
}

impl Judgement {
    fn new(verdict: Verdict, reason: Reason, detail: impl Into<String>) -> Judgement {
        Judgement {
            verdict,
            reason,
            detail: detail.into(),
        }
    }

    /// Whether another attempt could change this judgement (a failure to confirm).
    pub fn wants_confirmation(&self) -> bool {
        matches!(self.verdict, Verdict::Down | Verdict::Unknown)
    }
}

/// Judge-wide settings that do not come from the job.
#[derive(Debug, Clone, Copy)]
pub struct JudgeSettings {
    /// Verdict for a certificate problem.
    pub tls_on_error: TlsOnError,
    /// Fewer days to expiry than this is `degraded`.
    pub expiry_warn_days: i64,
    /// Verdict for a page matching a built-in soft-failure pattern; `None` = off.
    pub soft_failures: Option<Verdict>,
}

impl JudgeSettings {
    /// The judge's settings out of the `[probe]` and `[tls]` sections.
    pub fn new(probe: &ProbeSettings, tls: &TlsSettings) -> JudgeSettings {
        JudgeSettings {
            tls_on_error: tls.on_error,
            expiry_warn_days: tls.expiry_warn_days,
            soft_failures: probe.soft_failures,
        }
    }
}

/// Pages up to this size are read as text and checked for soft failures; block, parked
/// and default pages are small, real pages that mention "access denied" are not.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// Markers of bot walls and challenge pages (matched lower-cased).
const CHALLENGE_MARKERS: &[&str] = &[
    "cf-chl",
    "challenge-platform",
    "just a moment...",
    "attention required! | cloudflare",
    "checking your browser",
    "ddos protection by",
    "captcha",
    "请完成安全验证",
    "人机验证",
];

/// Built-in soft-failure patterns: (kind, phrase) matched lower-cased in small pages.
const SOFT_PATTERNS: &[(&str, &str)] = &[
    ("block page", "access denied"),
    ("block page", "访问被拒绝"),
    ("block page", "您的访问被阻断"),
    ("block page", "request blocked"),
    ("block page", "the requested url was rejected"),
    ("block page", "web application firewall"),
    ("parked domain", "this domain is for sale"),
    ("parked domain", "domain is parked"),
    ("parked domain", "buy this domain"),
    ("parked domain", "域名出售"),
    ("suspended account", "account has been suspended"),
    ("suspended account", "account suspended"),
    ("suspended account", "website is suspended"),
    ("suspended account", "网站已暂停"),
    ("suspended account", "网站暂停访问"),
];

/// Default-server pages, matched in the page title only.
const DEFAULT_TITLES: &[&str] = &[
    "welcome to nginx!",
    "apache2 debian default page",
    "apache2 ubuntu default page",
    "test page for the apache",
    "iis windows server",
    "welcome to centos",
    "test page for the nginx",
];

/// The patterns above, compiled once. A page is ASCII-lower-cased once (a fast byte
/// pass) and then searched for all patterns in one go, which the SIMD prefilter of a
/// case-sensitive search makes several times faster than a case-insensitive automaton.
/// The patterns are ASCII or CJK, which has no case, so nothing is lost.
struct Finders {
    soft: AhoCorasick,
    challenge: AhoCorasick,
}

fn finders() -> &'static Finders {
    static FINDERS: OnceLock<Finders> = OnceLock::new();
    FINDERS.get_or_init(|| {
        let build = |patterns: &[&str]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(patterns)
                // The patterns are constants: a failure here is a bug caught by every test.
                .expect("built-in page patterns compile")
        };
        let soft: Vec<&str> = SOFT_PATTERNS.iter().map(|(_, p)| *p).collect();
        Finders {
            soft: build(&soft),
            challenge: build(CHALLENGE_MARKERS),
        }
    })
}

/// The title of a lower-cased page.
fn title(lower: &[u8]) -> Option<&[u8]> {
    let start = memchr::memmem::find(lower, b"<title")?;
    let open_end = start + memchr::memchr(b'>', &lower[start..])? + 1;
    let close = open_end + memchr::memmem::find(&lower[open_end..], b"</title")?;
    Some(lower[open_end..close].trim_ascii())
}

/// The soft failure a small page shows, if any: "block page (\"access denied\")".
fn soft_failure(text: &str) -> Option<String> {
    let lower = text.as_bytes().to_ascii_lowercase();
    if let Some(t) = title(&lower) {
        if let Some(d) = DEFAULT_TITLES
            .iter()
            .find(|d| memchr::memmem::find(t, d.as_bytes()).is_some())
        {
            return Some(format!("default server page ({d:?} in the title)"));
        }
    }
    let found = finders().soft.find(&lower)?;
    let (kind, phrase) = SOFT_PATTERNS[found.pattern().as_usize()];
    Some(format!("{kind} ({phrase:?})"))
}

fn challenge(text: &str) -> Option<&'static str> {
    let lower = text.as_bytes().to_ascii_lowercase();
    let found = finders().challenge.find(&lower)?;
    Some(CHALLENGE_MARKERS[found.pattern().as_usize()])
}

/// Judges one attempt.
pub fn judge(plan: &Plan, obs: &Observation, settings: &JudgeSettings) -> Judgement {
    // A defence refusing us says nothing about the site (the limiter has backed off).
    if let Some(refusal) = &obs.refusal {
        return Judgement::new(Verdict::Unknown, Reason::Blocked, refusal.clone());
    }
    match &obs.outcome {
        Outcome::Failure(f) => judge_failure(f, obs.recent_answers, settings),
        Outcome::Answer(a) => judge_answer(plan, obs, a, settings),
    }
}

/// Answers from one IP shortly before a reset that make the reset look like a ban: a
/// server that just answered this often did not crash, it stopped talking to us.
pub const BURST_ANSWERS: u32 = 3;

fn judge_failure(f: &Failure, recent_answers: u32, settings: &JudgeSettings) -> Judgement {
    if f.kind == FailureKind::Reset && recent_answers >= BURST_ANSWERS {
        return Judgement::new(
            Verdict::Unknown,
            Reason::Blocked,
            format!(
                "{} right after {recent_answers} answers from the same IP: it looks like a ban of our burst, not an outage",
                f.detail
            ),
        );
    }
    let (verdict, reason) = match f.kind {
        FailureKind::Dns => (Verdict::Down, Reason::Dns),
        FailureKind::Connect | FailureKind::Unreachable | FailureKind::Reset => {
            (Verdict::Down, Reason::Connect)
        }
        FailureKind::Timeout => (Verdict::Down, Reason::Timeout),
        FailureKind::Tls => (
            match settings.tls_on_error {
                TlsOnError::Degraded => Verdict::Degraded,
                TlsOnError::Down => Verdict::Down,
            },
            Reason::Tls,
        ),
        FailureKind::TooManyRedirects => (Verdict::Down, Reason::TooManyRedirects),
        FailureKind::BadRedirect => (Verdict::Down, Reason::HttpStatus),
        FailureKind::BlockedTarget => (Verdict::Invalid, Reason::BlockedTarget),
        FailureKind::Protocol => (Verdict::Down, Reason::Protocol),
        FailureKind::Egress => (Verdict::Unknown, Reason::EgressUnavailable),
        FailureKind::Throttled => (Verdict::Unknown, Reason::RateLimited),
        FailureKind::LocalResources => (Verdict::Unknown, Reason::LocalResources),
    };
    Judgement::new(verdict, reason, f.detail.clone())
}

fn status_text(status: u16) -> String {
    let phrase = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if phrase.is_empty() {
        status.to_string()
    } else {
        format!("{status} {phrase}")
    }
}

fn judge_answer(plan: &Plan, obs: &Observation, a: &Answer, settings: &JudgeSettings) -> Judgement {
    // The site's latency: our own wait for the per-IP limit is not its slowness.
    let latency = obs.total.saturating_sub(obs.queued);
    let ms = latency.as_millis();
    let status = status_text(a.status);
    let status_ok = match &plan.expect.status {
        Some(list) => list.contains(&a.status),
        None => (200..400).contains(&a.status),
    };
    if !status_ok {
        if matches!(a.status, 403 | 503) && a.body_bytes <= SNIFF_BYTES {
            if let Some(marker) = challenge(&a.text) {
                return Judgement::new(
                    Verdict::Unknown,
                    Reason::Blocked,
                    format!("{status}: a bot challenge page ({marker:?}) refuses us; the site itself may be fine"),
                );
            }
        }
        if a.status == 429 {
            let after = a
                .retry_after
                .as_deref()
                .map(|r| format!(", Retry-After {r}"))
                .unwrap_or_default();
            return Judgement::new(
                Verdict::Unknown,
                Reason::Blocked,
                format!("{status}: the site is throttling us{after}"),
            );
        }
        let wanted = match &plan.expect.status {
            Some(list) => format!(
                "expected {}",
                list.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "expected 2xx or 3xx".to_string(),
        };
        return Judgement::new(
            Verdict::Down,
            Reason::HttpStatus,
            format!("{status} ({wanted}) after {ms} ms"),
        );
    }
    // HEAD answers carry no body by design, and so do 204 and 304, but a page that
    // answers with no body is a blank page to a browser: only a job that lists the
    // status in `expect.status` (a health endpoint) accepts it without one.
    let asked_for = |code: u16| {
        plan.expect
            .status
            .as_ref()
            .is_some_and(|list| list.contains(&code))
    };
    let bodyless = plan.method == crate::job::Method::Head
        || (matches!(a.status, 204 | 304) && asked_for(a.status));
    if !bodyless && a.body_bytes < plan.min_body_bytes {
        return Judgement::new(
            Verdict::Down,
            Reason::BodyTooSmall,
            format!(
                "{status} but the body is {} bytes (at least {} expected)",
                a.body_bytes, plan.min_body_bytes
            ),
        );
    }
    if let Some(needle) = &plan.expect.body_contains {
        if !a.text.contains(needle.as_str()) {
            return Judgement::new(
                Verdict::Down,
                Reason::BodyMismatch,
                format!(
                    "{status}, {} bytes, but the page does not contain {needle:?}{}",
                    a.body_bytes,
                    if a.truncated {
                        " (in the part read)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    if let Some(needle) = &plan.expect.body_not_contains {
        if a.text.contains(needle.as_str()) {
            return Judgement::new(
                Verdict::Down,
                Reason::BodyMismatch,
                format!(
                    "{status}, {} bytes, but the page contains {needle:?}",
                    a.body_bytes
                ),
            );
        }
    }
    let keyword_matched = plan.expect.body_contains.is_some();
    if let Some(verdict) = settings.soft_failures {
        if !keyword_matched && a.body_bytes <= SNIFF_BYTES {
            if let Some(what) = soft_failure(&a.text) {
                return Judgement::new(
                    verdict,
                    Reason::BodyMismatch,
                    format!("{status}, {} bytes, but it is a {what}", a.body_bytes),
                );
            }
        }
    }
    if let Some(limit) = plan.expect.max_latency_ms {
        if ms > u128::from(limit) {
            return Judgement::new(
                Verdict::Degraded,
                Reason::Slow,
                format!(
                    "{status}, {} bytes in {ms} ms (more than {limit} ms)",
                    a.body_bytes
                ),
            );
        }
    }
    if let Some(days) = a.tls_days_left {
        if days < settings.expiry_warn_days {
            return Judgement::new(
                Verdict::Degraded,
                Reason::Tls,
                format!("{status}, but the certificate expires in {days} days"),
            );
        }
    }
    Judgement::new(
        Verdict::Up,
        Reason::Ok,
        format!("{status}, {} bytes in {ms} ms", a.body_bytes),
    )
}

/// Combines the attempts' judgements (in order) into the final one and the index of the
/// attempt it comes from. `required` is how many failures make a `down` (`probe.attempts`).
///
/// One good attempt wins: a failure that another probe did not see is a blip, not an
/// outage. `down` needs `required` failing attempts that are evidence about the site:
/// an egress that failed says nothing about it, and once the site refused us as a bot
/// only an answer through another egress that shows the site failing (a bad status or
/// page) confirms it; a connection failure there may be the same ban. Short of that the
/// verdict is `unknown`, with the reason that kept us from knowing.
pub fn combine(judgements: &[Judgement], required: usize) -> Option<(usize, &Judgement)> {
    if judgements.is_empty() {
        return None;
    }
    if let Some(i) = judgements.iter().rposition(|j| !j.wants_confirmation()) {
        return Some((i, &judgements[i]));
    }
    if let Some(i) = confirmed_down(judgements, required) {
        return Some((i, &judgements[i]));
    }
    let unknown = |reason: Option<Reason>| {
        judgements
            .iter()
            .rposition(|j| j.verdict == Verdict::Unknown && reason.is_none_or(|r| j.reason == r))
    };
    if let Some(i) = unknown(Some(Reason::Blocked)).or_else(|| unknown(None)) {
        return Some((i, &judgements[i]));
    }
    let last = judgements.len() - 1;
    Some((last, &judgements[last]))
}

/// Whether the judgements so far settle the verdict: a good attempt, or `required`
/// failures (a confirmed down, or after a bot wall, as much as can be learned).
pub fn settled(judgements: &[Judgement], required: usize) -> bool {
    judgements.iter().any(|j| !j.wants_confirmation())
        || judgements
            .iter()
            .filter(|j| j.verdict == Verdict::Down)
            .count()
            >= required.max(1)
}

/// The last of at least `required` failures that are evidence about the site.
fn confirmed_down(judgements: &[Judgement], required: usize) -> Option<usize> {
    let blocked = judgements.iter().any(|j| j.reason == Reason::Blocked);
    let evidence =
        |j: &&Judgement| j.verdict == Verdict::Down && (!blocked || site_answered_badly(j.reason));
    let count = judgements.iter().filter(evidence).count();
    if count >= required.max(1) {
        judgements.iter().rposition(|j| evidence(&j))
    } else {
        None
    }
}

/// Reasons that come from an HTTP answer the site gave: proof that the site itself is
/// failing even when another egress was refused as a bot.
fn site_answered_badly(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::HttpStatus | Reason::BodyTooSmall | Reason::BodyMismatch | Reason::TooManyRedirects
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::job::{job_for_url, Expect};
    use std::time::Duration;

    fn plan(expect: Expect) -> Plan {
        let s = Settings::from_toml("").expect("defaults");
        let mut job = job_for_url("http://site.example/", "t").expect("job");
        job.expect = expect;
        Plan::new(&job, &s.probe)
    }

    fn answer(status: u16, body: &str) -> Observation {
        let mut o = Observation::new("direct");
        o.outcome = Outcome::Answer(Answer {
            status,
            body_bytes: body.len(),
            text: body.into(),
            final_url: "http://site.example/".into(),
            ..Answer::default()
        });
        o.total = Duration::from_millis(120);
        o
    }

    fn failure(kind: FailureKind) -> Observation {
        let mut o = answer(200, "");
        o.outcome = Outcome::Failure(Failure {
            kind,
            detail: "x".into(),
        });
        o
    }

    const SETTINGS: JudgeSettings = JudgeSettings {
        tls_on_error: TlsOnError::Degraded,
        expiry_warn_days: 14,
        soft_failures: Some(Verdict::Degraded),
    };

    #[test]
    fn soft_failures_are_recognised_on_small_pages() {
        let p = plan(Expect::default());
        let pad = "x".repeat(80);
        for page in [
            format!("<html><title>Access Denied</title><body>{pad}</body></html>"),
            format!("<html><body>访问被拒绝 {pad}</body></html>"),
            format!("<html><body>This domain is for sale! {pad}</body></html>"),
            format!("<html><head><title>Welcome to nginx!</title></head><body>{pad}</body></html>"),
            format!("<html><body>This account has been suspended. {pad}</body></html>"),
        ] {
            assert_eq!(
                j(&p, &answer(200, &page)),
                (Verdict::Degraded, Reason::BodyMismatch),
                "{page}"
            );
        }
        // A big page that mentions the phrase is a real page.
        let big = format!("{PAGE}{}access denied", "y".repeat(SNIFF_BYTES));
        assert_eq!(j(&p, &answer(200, &big)), (Verdict::Up, Reason::Ok));
        // The job's own keyword wins.
        let p = plan(Expect {
            body_contains: Some("Welcome".into()),
            ..Expect::default()
        });
        let page = format!("{PAGE} access denied for guests");
        assert_eq!(j(&p, &answer(200, &page)), (Verdict::Up, Reason::Ok));
        // Off means off.
        let off = JudgeSettings {
            soft_failures: None,
            ..SETTINGS
        };
        let p = plan(Expect::default());
        let page = format!("<title>Access Denied</title>{pad}");
        assert_eq!(judge(&p, &answer(200, &page), &off).verdict, Verdict::Up);
    }

    #[test]
    fn challenge_pages_are_blocked_not_down() {
        let p = plan(Expect::default());
        let page = "<html><title>Just a moment...</title><script src=/cdn-cgi/challenge-platform/x></script></html>";
        assert_eq!(
            j(&p, &answer(403, page)),
            (Verdict::Unknown, Reason::Blocked)
        );
        assert_eq!(
            j(&p, &answer(503, page)),
            (Verdict::Unknown, Reason::Blocked)
        );
        assert_eq!(
            j(&p, &answer(403, PAGE)),
            (Verdict::Down, Reason::HttpStatus)
        );
    }

    fn j(plan: &Plan, obs: &Observation) -> (Verdict, Reason) {
        let r = judge(plan, obs, &SETTINGS);
        (r.verdict, r.reason)
    }

    const PAGE: &str =
        "<html><body>Welcome to the county office. Opening hours are posted below.</body></html>";

    #[test]
    fn a_normal_page_is_up() {
        let p = plan(Expect::default());
        assert_eq!(j(&p, &answer(200, PAGE)), (Verdict::Up, Reason::Ok));
        let d = judge(&p, &answer(200, PAGE), &SETTINGS).detail;
        assert!(d.contains("200 OK") && d.contains("120 ms"), "{d}");
    }

    #[test]
    fn status_rules() {
        let p = plan(Expect::default());
        assert_eq!(
            j(&p, &answer(503, PAGE)),
            (Verdict::Down, Reason::HttpStatus)
        );
        assert_eq!(
            j(&p, &answer(404, PAGE)),
            (Verdict::Down, Reason::HttpStatus)
        );
        assert_eq!(
            j(&p, &answer(429, PAGE)),
            (Verdict::Unknown, Reason::Blocked)
        );
        let p = plan(Expect {
            status: Some(vec![404]),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(404, PAGE)), (Verdict::Up, Reason::Ok));
        assert_eq!(
            j(&p, &answer(200, PAGE)),
            (Verdict::Down, Reason::HttpStatus)
        );
    }

    #[test]
    fn empty_and_tiny_bodies_are_not_up() {
        let p = plan(Expect::default());
        assert_eq!(
            j(&p, &answer(200, "")),
            (Verdict::Down, Reason::BodyTooSmall)
        );
        assert_eq!(
            j(&p, &answer(200, "ok")),
            (Verdict::Down, Reason::BodyTooSmall)
        );
        let p = plan(Expect {
            min_body_bytes: Some(2),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(200, "ok")), (Verdict::Up, Reason::Ok));
        // A 204 is a blank page, unless the job asked for one.
        assert_eq!(
            j(&p, &answer(204, "")),
            (Verdict::Down, Reason::BodyTooSmall)
        );
        let p = plan(Expect {
            status: Some(vec![204]),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(204, "")), (Verdict::Up, Reason::Ok));
    }

    #[test]
    fn keywords() {
        let p = plan(Expect {
            body_contains: Some("欢迎".into()),
            ..Expect::default()
        });
        let cn = format!("{PAGE}欢迎光临");
        assert_eq!(j(&p, &answer(200, &cn)), (Verdict::Up, Reason::Ok));
        assert_eq!(
            j(&p, &answer(200, PAGE)),
            (Verdict::Down, Reason::BodyMismatch)
        );
        let p = plan(Expect {
            body_not_contains: Some("Access Denied".into()),
            ..Expect::default()
        });
        let denied = format!("{PAGE} Access Denied");
        assert_eq!(
            j(&p, &answer(200, &denied)),
            (Verdict::Down, Reason::BodyMismatch)
        );
        assert_eq!(j(&p, &answer(200, PAGE)), (Verdict::Up, Reason::Ok));
    }

    #[test]
    fn slow_is_degraded() {
        let p = plan(Expect {
            max_latency_ms: Some(100),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(200, PAGE)), (Verdict::Degraded, Reason::Slow));
        let p = plan(Expect {
            max_latency_ms: Some(1000),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(200, PAGE)), (Verdict::Up, Reason::Ok));
    }

    #[test]
    fn our_own_queue_time_is_not_the_sites_latency() {
        let p = plan(Expect {
            max_latency_ms: Some(100),
            ..Expect::default()
        });
        let mut o = answer(200, PAGE);
        o.queued = Duration::from_millis(60);
        let r = judge(&p, &o, &SETTINGS);
        assert_eq!((r.verdict, r.reason), (Verdict::Up, Reason::Ok));
        assert!(r.detail.contains("60 ms"), "{}", r.detail);
    }

    #[test]
    fn failures_map_to_reasons() {
        let p = plan(Expect::default());
        assert_eq!(
            j(&p, &failure(FailureKind::Dns)),
            (Verdict::Down, Reason::Dns)
        );
        assert_eq!(
            j(&p, &failure(FailureKind::Connect)),
            (Verdict::Down, Reason::Connect)
        );
        assert_eq!(
            j(&p, &failure(FailureKind::Timeout)),
            (Verdict::Down, Reason::Timeout)
        );
        assert_eq!(
            j(&p, &failure(FailureKind::Tls)),
            (Verdict::Degraded, Reason::Tls)
        );
        assert_eq!(
            j(&p, &failure(FailureKind::BlockedTarget)),
            (Verdict::Invalid, Reason::BlockedTarget)
        );
        assert_eq!(
            j(&p, &failure(FailureKind::TooManyRedirects)),
            (Verdict::Down, Reason::TooManyRedirects)
        );
        let down = JudgeSettings {
            tls_on_error: TlsOnError::Down,
            ..SETTINGS
        };
        assert_eq!(
            judge(&p, &failure(FailureKind::Tls), &down).verdict,
            Verdict::Down
        );
    }

    #[test]
    fn certificate_close_to_expiry_is_degraded() {
        let p = plan(Expect::default());
        let mut o = answer(200, PAGE);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.tls_days_left = Some(3);
        }
        assert_eq!(j(&p, &o), (Verdict::Degraded, Reason::Tls));
    }

    #[test]
    fn combine_needs_consistent_failure_for_down() {
        let down = Judgement::new(Verdict::Down, Reason::Connect, "a");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "b");
        let blocked = Judgement::new(Verdict::Unknown, Reason::Blocked, "c");
        assert_eq!(
            combine(&[down.clone(), up.clone()], 2).map(|x| x.0),
            Some(1)
        );
        assert_eq!(
            combine(&[up.clone(), down.clone()], 2).map(|x| x.0),
            Some(0)
        );
        assert_eq!(
            combine(&[down.clone(), down.clone()], 2).map(|x| x.1.verdict),
            Some(Verdict::Down)
        );
        assert_eq!(
            combine(&[down.clone(), blocked], 2).map(|x| x.1.verdict),
            Some(Verdict::Unknown)
        );
        // One failure is not confirmed when two are required.
        assert_eq!(
            combine(std::slice::from_ref(&down), 2).map(|x| x.1.verdict),
            Some(Verdict::Down)
        );
        assert!(!settled(std::slice::from_ref(&down), 2));
        assert!(settled(std::slice::from_ref(&down), 1));
        assert!(settled(&[down.clone(), down], 2));
        assert!(combine(&[], 2).is_none());
    }

    #[test]
    fn a_failed_egress_is_no_evidence_about_the_site() {
        let down = Judgement::new(Verdict::Down, Reason::Connect, "refused");
        let egress = Judgement::new(Verdict::Unknown, Reason::EgressUnavailable, "proxy");
        let seen = [down.clone(), egress.clone()];
        assert!(!settled(&seen, 2));
        let (_, j) = combine(&seen, 2).expect("some");
        assert_eq!(
            (j.verdict, j.reason),
            (Verdict::Unknown, Reason::EgressUnavailable)
        );
        // A third attempt through a working egress confirms it.
        let seen = [down.clone(), egress, down];
        assert!(settled(&seen, 2));
        assert_eq!(combine(&seen, 2).map(|x| x.1.verdict), Some(Verdict::Down));
    }

    #[test]
    fn blocked_is_confirmed_only_by_a_bad_answer_through_another_egress() {
        let blocked = Judgement::new(Verdict::Unknown, Reason::Blocked, "429");
        let refused = Judgement::new(Verdict::Down, Reason::Connect, "refused");
        let error = Judgement::new(Verdict::Down, Reason::HttpStatus, "500");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "200");
        // The server answered us (429) on one path: a refused connection on the other
        // may be the same ban.
        let verdict = |seen: &[Judgement]| combine(seen, 2).map(|(_, j)| (j.verdict, j.reason));
        assert_eq!(
            verdict(&[blocked.clone(), refused.clone(), refused]),
            Some((Verdict::Unknown, Reason::Blocked))
        );
        assert_eq!(
            verdict(&[blocked.clone(), error.clone(), error]),
            Some((Verdict::Down, Reason::HttpStatus))
        );
        assert_eq!(verdict(&[blocked, up]), Some((Verdict::Up, Reason::Ok)));
    }

    #[test]
    fn a_reset_right_after_a_burst_is_a_ban() {
        let p = plan(Expect::default());
        let mut o = failure(FailureKind::Reset);
        assert_eq!(j(&p, &o), (Verdict::Down, Reason::Connect));
        o.recent_answers = BURST_ANSWERS;
        assert_eq!(j(&p, &o), (Verdict::Unknown, Reason::Blocked));
        // Refused is not a reset: a server that stopped listening is down.
        let mut o = failure(FailureKind::Connect);
        o.recent_answers = 10;
        assert_eq!(j(&p, &o), (Verdict::Down, Reason::Connect));
    }

    #[test]
    fn a_refusal_of_us_is_blocked_not_down() {
        let p = plan(Expect::default());
        let mut o = answer(403, "<html>Forbidden</html>");
        assert_eq!(j(&p, &o), (Verdict::Down, Reason::HttpStatus));
        o.refusal = Some("403 Forbidden (a mod_evasive-style 403 storm) from 2 hosts".into());
        assert_eq!(j(&p, &o), (Verdict::Unknown, Reason::Blocked));
        let judged = judge(&p, &o, &SETTINGS);
        assert!(judged.detail.contains("mod_evasive"), "{}", judged.detail);
    }
}
