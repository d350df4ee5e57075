//! The judgement of one attempt: an [`Observation`] against a [`Plan`] gives a verdict,
//! a stable reason code and one readable detail line. Several attempts are combined in
//! [`crate::probe::combine`]; what a page's text shows is read in [`crate::probe::pages`].
//!
//! An answer goes through an ordered list of small rules (after Gatus's conditions), each
//! over what was seen and free of I/O: the first that has something to say decides. The
//! order is a person's reading of a page: no answer at all, then the status, then whether
//! there is a page, then what it says, then speed. A body still coming when the probe's
//! time ran out is read as far as it came, as a browser draws it: a slow site when that
//! much is the page, a timeout when it is not yet.

use crate::config::{ProbeSettings, TlsOnError, TlsSettings};
use crate::job::{Method, Reason, Verdict};
use crate::probe::pages::{
    challenge, cookie_wall, firewall_block, limit_page, soft_failure, wall_on_success, COOKIE_WALL,
};
use crate::probe::shown::shows_nothing;
use crate::probe::{Answer, CertDays, Failure, FailureKind, Observation, Outcome, Plan};

/// Read here by the HTTP prober too, which reads that much of a page as text.
pub(crate) use crate::probe::pages::SNIFF_BYTES;

/// A verdict with its reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// One readable line.
    pub detail: String,
    /// The site's own words confirm it: a 503 whose `Retry-After` asks for a pause
    /// longer than a confirmation may wait, so no attempt may follow it in time.
    pub confirmed_by_site: bool,
    /// Nothing was asked: the host's pause (its `Retry-After`) was still on. Such an
    /// attempt adds nothing to what an earlier one was answered.
    pub unasked: bool,
}

impl Judgement {
    /// A judgement from its parts.
    pub(crate) fn new(verdict: Verdict, reason: Reason, detail: impl Into<String>) -> Judgement {
        Judgement {
            verdict,
            reason,
            detail: detail.into(),
            confirmed_by_site: false,
            unasked: false,
        }
    }

    /// Whether another attempt could change this judgement (a failure to confirm, or a
    /// page whose body broke off, which a blip of the network does too).
    pub(crate) fn wants_confirmation(&self) -> bool {
        matches!(self.verdict, Verdict::Down | Verdict::Unknown)
            || (self.verdict == Verdict::Degraded && self.reason == Reason::Protocol)
    }
}

/// Judge-wide settings that do not come from the job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JudgeSettings {
    /// Verdict for a certificate problem.
    pub tls_on_error: TlsOnError,
    /// Fewer days to expiry than this is `degraded`.
    pub expiry_warn_days: i64,
    /// `tls.expiry_by_lifetime`.
    pub expiry_by_lifetime: bool,
    /// Verdict for a page matching a built-in soft-failure pattern; `None` = off.
    pub soft_failures: Option<Verdict>,
}

impl JudgeSettings {
    /// The judge's settings out of the `[probe]` and `[tls]` sections.
    pub(crate) fn new(probe: &ProbeSettings, tls: &TlsSettings) -> JudgeSettings {
        JudgeSettings {
            tls_on_error: tls.on_error,
            expiry_warn_days: tls.expiry_warn_days,
            expiry_by_lifetime: tls.expiry_by_lifetime,
            soft_failures: probe.soft_failures,
        }
    }
}

/// Judges one attempt.
pub(crate) fn judge(plan: &Plan, obs: &Observation, settings: &JudgeSettings) -> Judgement {
    // A defence refusing us says nothing about the site (the limiter has backed off).
    if let Some(refusal) = &obs.refusal {
        return Judgement::new(Verdict::Unknown, Reason::Blocked, refusal.clone());
    }
    let judged = match &obs.outcome {
        Outcome::Failure(f) => judge_failure(f, obs.recent_answers, settings),
        Outcome::Answer(answer) => {
            let seen = Seen {
                plan,
                answer,
                settings,
                status: status_line(answer.status, answer.reason.as_deref()),
                // The site's latency: our own wait for the per-IP limit, and our own
                // questions to the egress, are not its slowness.
                ms: obs.sites_time().as_millis(),
            };
            judge_answer(&seen)
        }
    };
    ours_if_our_timers_ran_late(plan, obs, judged)
}

/// The share of an attempt's time our own event loop may lag before a timeout is ours:
/// a quarter. A probe waits on our scheduler at each of its steps (lookup, connect,
/// handshake, request, the body's reads), and a loop that late at one is about as late
/// at the next: over two or more such waits, a lag of a quarter of the time may have
/// cost the site half of it, and a timeout then says nothing about the site. A smaller
/// share would turn real timeouts into `unknown` on any busy machine (a 50 ms stall is
/// common there); the shortest job timeout, 100 ms, puts this at 25 ms.
const LAG_SHARE_OURS: u32 = 4;

/// A timeout while our own timers and wake-ups ran late by a share of the attempt's
/// time ([`LAG_SHARE_OURS`]): the site was not given its time, our worker (short of
/// CPU) failed it: `unknown/local_resources`, never `down`. So is a lookup that ran
/// out of time meanwhile (hunt S); one our nameservers left unanswered with our timers
/// on time has its own check of our side (`engine::our_side`).
fn ours_if_our_timers_ran_late(plan: &Plan, obs: &Observation, j: Judgement) -> Judgement {
    let timed_out = j.verdict == Verdict::Down && j.reason == Reason::Timeout;
    if !(timed_out || lookup_out_of_time(obs)) || obs.lag * LAG_SHARE_OURS < plan.timeout {
        return j;
    }
    Judgement::new(
        Verdict::Unknown,
        Reason::LocalResources,
        format!(
            "{}; meanwhile our own timers ran up to {} ms late (this worker is short of \
             CPU), so the site did not get its {} ms: our side failed, not the site",
            j.detail,
            obs.lag.as_millis(),
            plan.timeout.as_millis()
        ),
    )
}

/// Whether the attempt ended in a lookup that ran out of time: the resolver's own
/// ("timed out", `dns::DnsError::Timeout`) or the probe's deadline ("ran out of time",
/// `http::connect`), not a nameserver's word such as SERVFAIL.
fn lookup_out_of_time(obs: &Observation) -> bool {
    matches!(&obs.outcome, Outcome::Failure(f) if f.kind == FailureKind::DnsFailed
        && (f.detail.contains("DNS lookup ran out of time")
            || f.detail.contains("DNS lookup timed out")))
}

/// An answer through the rules: first what it is ([`PAGE_RULES`]), then how it came
/// ([`DELIVERY_RULES`]); an answer no rule objects to is `up`.
fn judge_answer(s: &Seen<'_>) -> Judgement {
    if let Some(j) = PAGE_RULES.iter().find_map(|rule| rule(s)) {
        // What came before the time ran out is no working page yet (too little of it,
        // the job's text still to come): the time is why, as for any timeout. A
        // refusal of us (a block page, a 429) says what it is however slowly it came.
        let about_us = j.verdict == Verdict::Unknown;
        return if s.answer.late.is_some() && !about_us {
            timed_out(s)
        } else {
            j
        };
    }
    DELIVERY_RULES
        .iter()
        .find_map(|rule| rule(s))
        .unwrap_or_else(|| {
            let a = s.answer;
            let partly = if a.truncated && s.plan.expect.body_not_contains.is_some() {
                // The rest may hold it: said, as a keyword past the limit is (hunt U).
                "; body_not_contains was looked for in these bytes only, all that \
                 probe.max_body_bytes lets picket read"
            } else {
                ""
            };
            Judgement::new(
                Verdict::Up,
                Reason::Ok,
                format!(
                    "{}, {} bytes in {} ms{partly}",
                    s.status, a.body_bytes, s.ms
                ),
            )
        })
}

/// Answers from one IP shortly before a reset that make the reset look like a ban: a
/// server that just answered this often did not crash, it stopped talking to us.
pub(crate) const BURST_ANSWERS: u32 = 3;

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
        FailureKind::Dns | FailureKind::DnsFailed => (Verdict::Down, Reason::Dns),
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
        FailureKind::NoTls => (Verdict::Down, Reason::Tls),
        FailureKind::TooManyRedirects => (Verdict::Down, Reason::TooManyRedirects),
        FailureKind::BadRedirect => (Verdict::Down, Reason::HttpStatus),
        FailureKind::BlockedTarget => (Verdict::Invalid, Reason::BlockedTarget),
        FailureKind::Protocol => (Verdict::Down, Reason::Protocol),
        FailureKind::Egress => (Verdict::Unknown, Reason::EgressUnavailable),
        FailureKind::Throttled => (Verdict::Unknown, Reason::RateLimited),
        FailureKind::Paused => (Verdict::Unknown, Reason::Blocked),
        FailureKind::LocalResources => (Verdict::Unknown, Reason::LocalResources),
        FailureKind::LocalClock => (Verdict::Unknown, Reason::LocalClock),
        FailureKind::IssuerUnreached => (Verdict::Unknown, Reason::Tls),
    };
    let mut judged = Judgement::new(verdict, reason, f.detail.clone());
    judged.unasked = f.kind == FailureKind::Paused;
    judged
}

/// The status as the server wrote it ("503 Backend fetch failed"), or with its standard
/// words when the server wrote none of its own.
fn status_line(status: u16, reason: Option<&str>) -> String {
    match reason.map(shown_reason).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{status} {reason}"),
        None => status_text(status),
    }
}

/// The most characters of a reason phrase a detail line shows.
const REASON_CHARS: usize = 60;

/// A reason phrase as a detail line shows it: no control characters, one space between
/// words, at most [`REASON_CHARS`] characters.
fn shown_reason(reason: &str) -> String {
    let words: Vec<&str> = reason
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    words
        .join(" ")
        .chars()
        .take(REASON_CHARS)
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn status_text(status: u16) -> String {
    let phrase = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        305 => "Use Proxy",
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

/// What the rules over an answer look at.
struct Seen<'a> {
    plan: &'a Plan,
    answer: &'a Answer,
    settings: &'a JudgeSettings,
    /// The status as a person reads it ("200 OK"), which every detail line starts with.
    status: String,
    /// The site's own latency in milliseconds.
    ms: u128,
}

/// One rule over an answer: its judgement when it applies, `None` to let the next speak.
type Rule = fn(&Seen<'_>) -> Option<Judgement>;

/// The rules over what an answer is, in order: its status, then whether its body is the
/// page the job expects. A body cut by the probe's deadline is judged by what came.
const PAGE_RULES: &[Rule] = &[
    wrong_status,
    wall_answering_success,
    limit_answering_success,
    broke_off_before_the_page,
    no_page,
    keyword_missing,
    blank_page,
    keyword_forbidden,
    page_not_shown,
    soft_failure_page,
];

/// The rules over how a page that passed [`PAGE_RULES`] came, in order.
const DELIVERY_RULES: &[Rule] = &[
    arrived_late,
    slow,
    certificate_expiring,
    broke_off_after_the_page,
    stopped_part_way,
];

/// The longest quiet in a page cut off that tells a script stopped part way (a proxy's
/// buffers may send its part at once, its rest and end after the quiet).
const STOPPED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A page that stopped coming for seconds and ended cut off before its body closed: the
/// application behind the server was stopped part way (PHP's `max_execution_time`,
/// uWSGI's `harakiri`), and the server ended the answer cleanly, as FastCGI and uwsgi
/// have no length of their own to fall short of (hunt Z4). A browser shows half a page.
/// A page cut off at once is no sign: pages minified without their optional end tags
/// end so; nor is a page whose parts came seconds apart (flushed before a slow query)
/// and that left only optional end tags out: it was cut off part way when it left an
/// element open whose end tag is required (`shown::left_open`; review AB).
fn stopped_part_way(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let stopped = u128::from(a.stalled_ms) >= STOPPED_AFTER.as_millis()
        && a.broke_off.is_none()
        && a.late.is_none()
        && !a.truncated
        && crate::probe::shown::cut_off_page(&a.text)
        && crate::probe::shown::left_open(&a.text);
    stopped.then(|| {
        Judgement::new(
            Verdict::Degraded,
            Reason::Protocol,
            format!(
                "{}, {} bytes in {} ms, but the page stopped coming for {} ms and ended \
                 cut off before its end: the application behind the server was stopped part \
                 way (PHP's max_execution_time, uWSGI's harakiri); a browser shows the part \
                 that came",
                s.status, a.body_bytes, s.ms, a.stalled_ms
            ),
        )
    })
}

/// Whether the job lists `code` in `expect.status`.
fn asked_for(plan: &Plan, code: u16) -> bool {
    plan.expect
        .status
        .as_ref()
        .is_some_and(|list| list.contains(&code))
}

/// A status the job does not accept: a bot wall or throttling refuses *us* (`unknown`),
/// anything else is the site's failure.
fn wrong_status(s: &Seen<'_>) -> Option<Judgement> {
    let status_ok = match &s.plan.expect.status {
        Some(list) => list.contains(&s.answer.status),
        None => (200..400).contains(&s.answer.status),
    };
    if status_ok {
        return None;
    }
    let refusal = refusal_of_us(s).map(|why| {
        Judgement::new(
            Verdict::Unknown,
            Reason::Blocked,
            format!("{}: {why}", s.status),
        )
    });
    Some(refusal.unwrap_or_else(|| site_failing(s)))
}

/// Why a status the job does not accept refuses *us*, not the site failing: a bot
/// challenge, a firewall's block page, throttling, a refusal of automated clients.
fn refusal_of_us(s: &Seen<'_>) -> Option<String> {
    let a = s.answer;
    let small = a.body_bytes <= SNIFF_BYTES;
    if matches!(a.status, 403 | 503) && small {
        if let Some(marker) = challenge(&a.text) {
            return Some(format!(
                "a bot challenge page ({marker:?}) refuses us; the site itself may be fine"
            ));
        }
    }
    if a.status >= 400 && cookie_wall(&a.text) {
        return Some(format!(
            "{COOKIE_WALL} refuses us: browsers pass it at once; the site itself may be fine"
        ));
    }
    if a.status >= 400 && small {
        if let Some((firewall, marker)) = firewall_block(&a.text) {
            return Some(format!(
                "{firewall}'s block page ({marker:?}) refuses us; the site itself may be fine"
            ));
        }
    }
    match a.status {
        429 => {
            let after = a
                .retry_after
                .as_deref()
                .map(|r| format!(", Retry-After {r}"))
                .unwrap_or_default();
            Some(format!("the site is throttling us{after}"))
        }
        999 => Some(
            "a refusal of automated clients (LinkedIn-style \"Request denied\") refuses us; \
             the site itself may be fine"
                .to_string(),
        ),
        _ => None,
    }
}

/// A bot wall answering with a success (DDoS-Guard's 200 "Checking your browser", a
/// testcookie stub): a refusal of us, as on a 403, since browsers pass it at once and
/// the page behind it is unseen. A job whose own keyword is on the page has its page.
/// A rate limit's own page answering with a success (nginx's `error_page 429 =200`):
/// a refusal of us, not the site's page, whatever the job looks for on it.
fn limit_answering_success(s: &Seen<'_>) -> Option<Judgement> {
    let phrase = limit_page_of(s.plan, s.answer)?;
    Some(Judgement::new(
        Verdict::Unknown,
        Reason::Blocked,
        format!(
            "{}: a rate limit's page ({phrase:?}) answering with a success refuses us; \
             the site itself may be fine",
            s.status
        ),
    ))
}

/// The words of a rate limit's own page ([`limit_page`]) that `a`, a success, is, unless
/// the job's own keyword is on it (then the page is its): read by the judge, and by the
/// prober, which tells the limiter of it as of a refusal.
pub(crate) fn limit_page_of(plan: &Plan, a: &Answer) -> Option<&'static str> {
    if !(200..300).contains(&a.status) || a.body_bytes > SNIFF_BYTES {
        return None;
    }
    let phrase = limit_page(&a.text)?;
    let keyword = plan.expect.body_contains.as_ref();
    (!keyword.is_some_and(|k| page_has(&a.text, k))).then_some(phrase)
}

fn wall_answering_success(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    if !(200..300).contains(&a.status) || a.body_bytes > SNIFF_BYTES {
        return None;
    }
    let wall = wall_on_success(&a.text)?;
    let keyword_found = s
        .plan
        .expect
        .body_contains
        .as_ref()
        .is_some_and(|k| page_has(&a.text, k));
    (!keyword_found).then(|| {
        Judgement::new(
            Verdict::Unknown,
            Reason::Blocked,
            format!(
                "{}: {wall} refuses us: browsers pass it at once; the site itself may be fine",
                s.status
            ),
        )
    })
}

/// A status the job does not accept, from the site itself: `down`, confirmed by the
/// site's own word when its `Retry-After` outlasts any confirmation.
fn site_failing(s: &Seen<'_>) -> Judgement {
    let wanted = match &s.plan.expect.status {
        Some(list) => format!(
            "expected {}",
            list.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "expected 2xx or 3xx".to_string(),
    };
    let mut j = Judgement::new(
        Verdict::Down,
        Reason::HttpStatus,
        format!("{} ({wanted}) after {} ms", s.status, s.ms),
    );
    if let Some(login) = &s.answer.login {
        j.detail = if s.plan.sends_credentials() {
            // The job's own password was refused (changed, expired): no 401 to expect.
            format!(
                "{}; the site refused the job's credentials ({login})",
                j.detail
            )
        } else {
            format!(
                "{}; the site asks for a password ({login}), as a browser's login prompt \
                 shows: list 401 in the job's expect.status if that is how it should answer",
                j.detail
            )
        };
    }
    if let Some(pause) = pause_beyond_confirmation(s) {
        j.detail = format!(
            "{}; it asks to be left alone {}, longer than a confirmation may wait: its \
             own word confirms it",
            j.detail,
            pause_in_words(pause, s.answer.retry_after.as_deref())
        );
        j.confirmed_by_site = true;
    }
    j
}

/// The pause a site asked for, as it asked (`raw`, the `Retry-After` value) when that
/// was beyond the longest picket heeds (`pause` is then the cap).
fn pause_in_words(pause: std::time::Duration, raw: Option<&str>) -> String {
    let held = pause.as_secs();
    match raw.map(str::trim) {
        Some(raw) if pause >= crate::probe::MAX_RETRY_AFTER && raw.parse() != Ok(held) => {
            let asked = match raw.parse::<f64>() {
                Ok(_) => format!("for {raw} s"),
                Err(_) => format!("until {raw}"),
            };
            format!("{asked} (Retry-After; picket holds a site back at most {held} s)")
        }
        _ => format!("for {held} s (Retry-After)"),
    }
}

/// The pause a 503 asks for (a maintenance page's `Retry-After`) when it confirms the
/// `down` by itself ([`Plan::confirmed_by_pause`]).
fn pause_beyond_confirmation(s: &Seen<'_>) -> Option<std::time::Duration> {
    let pause = s.answer.pause_asked?;
    s.plan
        .confirmed_by_pause(s.answer.status, pause)
        .then_some(pause)
}

/// An empty or tiny body. HEAD answers carry no body by design, and so do 204, 304 and
/// redirects, but a page that answers with no body is a blank page to a browser: only a
/// job that lists the status in `expect.status` (a health endpoint; a redirect with no
/// `Location` to follow, the last answer) accepts it without one.
fn no_page(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let bodyless = s.plan.method == Method::Head
        || (matches!(a.status, 204 | 300..=399) && asked_for(s.plan, a.status));
    (!bodyless && a.body_bytes < s.plan.min_body_bytes).then(|| {
        if a.truncated {
            // Our own read limit, not the page, stopped the count (hunt U).
            return Judgement::new(
                Verdict::Unknown,
                Reason::BodyTooSmall,
                format!(
                    "{}, {} bytes read, all that probe.max_body_bytes lets picket read: fewer \
                     than the job's min_body_bytes ({}), so the page's size is not known; \
                     raise probe.max_body_bytes to check it",
                    s.status, a.body_bytes, s.plan.min_body_bytes
                ),
            );
        }
        Judgement::new(
            Verdict::Down,
            Reason::BodyTooSmall,
            format!(
                "{} but the body is {} bytes (at least {} expected)",
                s.status, a.body_bytes, s.plan.min_body_bytes
            ),
        )
    })
}

/// The body broke off before enough of it came to be a page.
fn broke_off_before_the_page(s: &Seen<'_>) -> Option<Judgement> {
    let why = s.answer.broke_off.as_ref()?;
    (s.answer.body_bytes < s.plan.min_body_bytes).then(|| {
        Judgement::new(
            Verdict::Down,
            Reason::Protocol,
            format!("{} but {why}", s.status),
        )
    })
}

/// A page that passed every rule, but whose body broke off before its announced end: a
/// browser shows what came, so the site works for people, and its server is broken.
fn broke_off_after_the_page(s: &Seen<'_>) -> Option<Judgement> {
    let why = s.answer.broke_off.as_ref()?;
    Some(Judgement::new(
        Verdict::Degraded,
        Reason::Protocol,
        format!(
            "{}, {} bytes in {} ms, but {why} (a browser shows the page that came)",
            s.status, s.answer.body_bytes, s.ms
        ),
    ))
}

/// Whether the page has `needle` (`body_contains`): in its text as sent, markup and all
/// (a keyword may be markup, `<body>`), or in what a person reads on it
/// ([`crate::probe::pages::visible_text`]: "Smith & Sons" for `Smith &amp; Sons`, "欢迎"
/// for `&#27426;&#36814;`, "Welcome to Springfield" across `<b>` and line breaks),
/// which is where operators copy their keywords from.
fn page_has(text: &str, needle: &str) -> bool {
    text.contains(needle) || reads(text, needle)
}

/// Whether the page shows `needle` (`body_not_contains`): words are looked for in what a
/// person reads, so the words of a script, a comment or a hidden element ("Access
/// Denied" kept for a failed login) do not make a working page `down`; a needle written
/// as markup ([`is_markup`]) is looked for in the source too.
fn page_shows(text: &str, needle: &str) -> bool {
    (is_markup(needle) && text.contains(needle)) || reads(text, needle)
}

/// Whether a needle is written as markup: a tag, an attribute (`class="maintenance"`), a
/// character reference (`AT&amp;T`), or nothing to read. Words with an apostrophe or
/// quotes ("We're sorry") are words.
fn is_markup(needle: &str) -> bool {
    let reference = needle.split('&').skip(1).any(|after| {
        after.split_once(';').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.len() <= 10
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
        })
    });
    needle.contains(['<', '>', '=']) || reference || needle.trim().is_empty()
}

/// Whether what a person reads on the page holds `needle`, white space collapsed in both.
fn reads(text: &str, needle: &str) -> bool {
    let needle = needle.split_whitespace().collect::<Vec<_>>().join(" ");
    !needle.is_empty() && crate::probe::pages::visible_text(text).contains(&needle)
}

/// The page lacks the text the job expects.
fn keyword_missing(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let needle = s.plan.expect.body_contains.as_ref()?;
    (!page_has(&a.text, needle)).then(|| {
        if a.truncated {
            // Our own read limit, not the page, keeps the rest from us.
            return Judgement::new(
                Verdict::Unknown,
                Reason::BodyMismatch,
                format!(
                    "{}, but {needle:?} is not in the first {} bytes, all that \
                     probe.max_body_bytes lets picket read of a longer page: raise it to \
                     check this page",
                    s.status, a.body_bytes
                ),
            );
        }
        let part = if a.broke_off.is_some() {
            " (in the part read)"
        } else {
            ""
        };
        Judgement::new(
            Verdict::Down,
            Reason::BodyMismatch,
            format!(
                "{}, {} bytes, but the page does not contain {needle:?}{part}",
                s.status, a.body_bytes
            ),
        )
    })
}

/// A page that shows a person nothing (`shown::shows_nothing`), however many bytes it
/// has: white space, an empty document, a white screen. A browser shows a blank page,
/// so it is judged as a body too small. Only a 2xx page read whole as text, which no
/// word of the job vouches for: a job that lists the status, accepts an empty body, or
/// whose `body_contains` was found (the rule before this one) knows its page.
fn blank_page(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let p = s.plan;
    let judged = (200..300).contains(&a.status)
        && p.method != Method::Head
        && p.min_body_bytes > 0
        && p.expect.body_contains.is_none()
        && !asked_for(p, a.status)
        && a.body_bytes <= SNIFF_BYTES
        && !a.truncated;
    (judged && shows_nothing(&a.text)).then(|| {
        Judgement::new(
            Verdict::Down,
            Reason::BodyTooSmall,
            format!(
                "{} but the page shows nothing: {} bytes with no text, image, script or frame",
                s.status, a.body_bytes
            ),
        )
    })
}

/// The page has the text the job forbids.
fn keyword_forbidden(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let needle = s.plan.expect.body_not_contains.as_ref()?;
    page_shows(&a.text, needle).then(|| {
        Judgement::new(
            Verdict::Down,
            Reason::BodyMismatch,
            format!(
                "{}, {} bytes, but the page contains {needle:?}",
                s.status, a.body_bytes
            ),
        )
    })
}

/// A small page that is a block, parked, suspended or default-server page; a job that
/// found its own keyword knows its page better than the built-in patterns do.
fn soft_failure_page(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let verdict = s.settings.soft_failures?;
    if s.plan.expect.body_contains.is_some() || a.body_bytes > SNIFF_BYTES {
        return None;
    }
    // A job that lists an error status wants that status's page: its 404 page says
    // "404 Not Found", its 403 page "Access Denied".
    if !(200..300).contains(&a.status) && asked_for(s.plan, a.status) {
        return None;
    }
    let what = soft_failure(&a.text)?;
    Some(Judgement::new(
        verdict,
        Reason::BodyMismatch,
        format!(
            "{}, {} bytes, but it is {} {what}",
            s.status,
            a.body_bytes,
            article(&what)
        ),
    ))
}

/// A web page a browser does not show as one: HTML sent as a download (an
/// `octet-stream`, S3's type for an upload without one; an `attachment`), as plain
/// text (its code shown), or still compressed. A person gets a file, markup or
/// garbage, not the site. A file the job
/// watches on purpose is no HTML, and a job whose keyword was found knows its answer.
fn page_not_shown(s: &Seen<'_>) -> Option<Judgement> {
    let a = s.answer;
    let verdict = s.settings.soft_failures?;
    let how = a.not_shown.as_deref()?;
    let judged = (200..300).contains(&a.status)
        && s.plan.method != Method::Head
        && s.plan.expect.body_contains.is_none();
    judged.then(|| {
        Judgement::new(
            verdict,
            Reason::BodyMismatch,
            format!(
                "{}, {} bytes, but a browser {how} instead of showing the page",
                s.status, a.body_bytes
            ),
        )
    })
}

/// "a" or "an" before `what`.
fn article(what: &str) -> &'static str {
    match what.chars().next() {
        Some(c) if "aeiou".contains(c.to_ascii_lowercase()) => "an",
        _ => "a",
    }
}

/// A page whose body was still coming when the probe's time ran out, and what came of
/// it passed [`PAGE_RULES`]: a browser draws a slow page as it comes, so the site is
/// reachable, and slow. One whose bytes stopped coming for half the probe's time or
/// more is no slow page: it stopped part way (a `Content-Length` longer than what was
/// written, a backend hung mid-page), and a browser shows the part and spins.
fn arrived_late(s: &Seen<'_>) -> Option<Judgement> {
    let quiet = s.answer.late?;
    let (timeout, read) = (s.plan.timeout.as_millis(), s.answer.body_bytes);
    if quiet * 2 >= s.plan.timeout {
        return Some(Judgement::new(
            Verdict::Degraded,
            Reason::Timeout,
            format!(
                "{}, but the body stopped after {read} bytes: nothing more came in the \
                 last {} ms of the {timeout} ms given (a browser shows the part that came \
                 and goes on waiting)",
                s.status,
                quiet.as_millis()
            ),
        ));
    }
    Some(Judgement::new(
        Verdict::Degraded,
        Reason::Slow,
        format!(
            "{}, but the body did not arrive in full within {timeout} ms ({read} bytes \
             read): the page comes slowly (a browser shows it as it comes)",
            s.status
        ),
    ))
}

/// A body cut by the probe's deadline before enough of it came to be the page the job
/// expects.
fn timed_out(s: &Seen<'_>) -> Judgement {
    Judgement::new(
        Verdict::Down,
        Reason::Timeout,
        format!(
            "{} but the body did not arrive in time ({} bytes read)",
            s.status, s.answer.body_bytes
        ),
    )
}

/// Slower than the job's `max_latency_ms`.
fn slow(s: &Seen<'_>) -> Option<Judgement> {
    let limit = s.plan.expect.max_latency_ms?;
    (s.ms > u128::from(limit)).then(|| {
        Judgement::new(
            Verdict::Degraded,
            Reason::Slow,
            format!(
                "{}, {} bytes in {} ms (more than {limit} ms)",
                s.status, s.answer.body_bytes, s.ms
            ),
        )
    })
}

/// A certificate that expires sooner than `tls.expiry_warn_days`; with
/// `tls.expiry_by_lifetime`, sooner than a third of the days it was issued for when
/// that is less: a 6-day certificate (Let's Encrypt's short-lived profile) or a 12-hour
/// one (Caddy's `tls internal`) always has fewer days left than the setting, and is
/// late only once two thirds of its life went by without a new one (ACME clients renew
/// at a third or half of it left). Its days are counted by the sites' clock when ours
/// is off (`http::sites_clock`): a certificate our clock, running behind, took as valid
/// may have expired.
fn certificate_expiring(s: &Seen<'_>) -> Option<Judgement> {
    let CertDays {
        left: days,
        lifetime,
    } = s.answer.tls_days?;
    let when = if days < 0 {
        format!(
            "expired {} days ago by the Date of the sites' answers (this worker's clock is \
             behind)",
            -days
        )
    } else {
        format!("expires in {days} days")
    };
    // Expired is a certificate problem as a failed handshake is (`tls.on_error`).
    let verdict = match s.settings.tls_on_error {
        TlsOnError::Down if days < 0 => Verdict::Down,
        _ => Verdict::Degraded,
    };
    let warn = match s.settings.expiry_by_lifetime {
        true => s.settings.expiry_warn_days.min(i64::from(lifetime / 3)),
        false => s.settings.expiry_warn_days,
    };
    (i64::from(days) < warn || days < 0).then(|| {
        Judgement::new(
            verdict,
            Reason::Tls,
            format!("{}, but the certificate {when}", s.status),
        )
    })
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
        expiry_by_lifetime: false,
        soft_failures: Some(Verdict::Degraded),
    };

    #[test]
    fn a_page_whose_body_broke_off_is_degraded_and_confirmed_only_a_scrap_is_down() {
        let p = plan(Expect::default());
        let cut = |body: &str| {
            let mut o = answer(200, body);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.broke_off = Some("the body broke off after N bytes: eof".into());
            }
            judge(&p, &o, &SETTINGS)
        };
        let page = format!(
            "<html><title>County</title><body>{}</body></html>",
            "x".repeat(200)
        );
        let shown = cut(&page);
        assert_eq!(
            (shown.verdict, shown.reason),
            (Verdict::Degraded, Reason::Protocol)
        );
        assert!(shown.detail.contains("broke off"), "{}", shown.detail);
        // A network blip cuts bodies too: another attempt is made before saying so.
        assert!(shown.wants_confirmation());
        let scrap = cut("<html>");
        assert_eq!(
            (scrap.verdict, scrap.reason),
            (Verdict::Down, Reason::Protocol)
        );
        // The rules over the page still speak first: a wrong status is the site's failure.
        let mut o = answer(500, &page);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.broke_off = Some("eof".into());
        }
        assert_eq!(judge(&p, &o, &SETTINGS).reason, Reason::HttpStatus);
    }

    /// Review AB: what the subscriber is told of a working page after a self-closed
    /// hidden SVG (`probe::shown::tests::review_ab_a_self_closed_hidden_svg_hides_nothing_after_it`):
    /// `down/body_too_small`, "the page shows nothing", where Chromium shows the page.
    #[test]
    fn review_ab_a_working_page_after_a_self_closed_hidden_svg_is_up() {
        let p = plan(Expect::default());
        let page = "<!DOCTYPE html><html><head><title>County office</title></head><body>\
                    <svg xmlns=\"http://www.w3.org/2000/svg\" style=\"display: none;\"/>\
                    <h1>County office</h1><p>Opening hours: 8 to 4. Permits, forms and \
                    services are listed below.</p></body></html>";
        let j = judge(&p, &answer(200, page), &SETTINGS);
        assert_eq!(
            (j.verdict, j.reason),
            (Verdict::Up, Reason::Ok),
            "{}",
            j.detail
        );
    }

    /// Hunt Z4: a script stopped part way behind nginx (PHP's `max_execution_time`,
    /// uWSGI's `harakiri`) leaves a page cut off, ended cleanly after seconds of nothing.
    #[test]
    fn a_page_cut_off_after_a_stall_was_stopped_part_way() {
        let p = plan(Expect::default());
        let seen = |body: &str, stalled_ms: u32| {
            let mut o = answer(200, body);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.stalled_ms = stalled_ms;
            }
            judge(&p, &o, &SETTINGS)
        };
        let half = format!(
            "<!DOCTYPE html><html><head><title>Permits</title></head><body><ul>{}",
            "<li>Permit: a new porch, approved by the board.</li>".repeat(20)
        );
        let j = seen(&half, 2000);
        assert_eq!((j.verdict, j.reason), (Verdict::Degraded, Reason::Protocol));
        assert!(
            j.detail.contains("stopped coming for 2000 ms"),
            "{}",
            j.detail
        );
        // Cut off at once (minified without its end tags), whole after a stall, or no
        // page at all: the site.
        let whole = format!("{half}</ul></body></html>");
        for (body, ms) in [(half.as_str(), 300), (whole.as_str(), 5000)] {
            assert_eq!(seen(body, ms).verdict, Verdict::Up, "{body}");
        }
        let feed = format!("{{\"permits\": [{}]}}", "\"porch\",".repeat(60));
        assert_eq!(seen(&feed, 5000).verdict, Verdict::Up);
    }

    /// Found by hand against Varnish 7.1 and PHP-FPM behind nginx (2026-12-04): the
    /// status line says what failed ("503 Backend fetch failed", "503 Down for
    /// maintenance"), and the detail said only "503 Service Unavailable".
    #[test]
    fn the_servers_own_reason_phrase_is_in_the_detail() {
        let p = plan(Expect::default());
        let mut o = answer(503, PAGE);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.reason = Some("Backend fetch failed".into());
        }
        let judged = judge(&p, &o, &SETTINGS);
        assert!(
            judged
                .detail
                .starts_with("503 Backend fetch failed (expected 2xx or 3xx)"),
            "{}",
            judged.detail
        );
        // Words no person should read whole are cut, and control characters dropped.
        if let Outcome::Answer(a) = &mut o.outcome {
            a.reason = Some(format!("Down\x07 for {}", "maintenance ".repeat(20)).into());
        }
        let judged = judge(&p, &o, &SETTINGS);
        let line = judged.detail.split(" (expected").next().unwrap_or_default();
        assert!(line.starts_with("503 Down for maintenance"), "{line}");
        assert!(line.chars().count() <= 4 + 60 + 1, "{line}");
        assert!(!line.contains('\x07'), "{line}");
    }

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

    /// A page longer than `probe.max_body_bytes`, read up to it.
    fn cut_by_our_limit() -> Observation {
        let mut o = answer(200, &format!("{PAGE}{}", "y".repeat(SNIFF_BYTES)));
        if let Outcome::Answer(a) = &mut o.outcome {
            a.truncated = true;
        }
        o
    }

    /// Hunt L: a keyword past `max_body_bytes` (a 3.2 MB page with a pasted `data:` image
    /// before its footer) is not in the part read: our own limit, not the page, keeps
    /// it from us, so the check cannot be told. It was a confirmed `down/body_mismatch`.
    #[test]
    fn a_keyword_past_our_read_limit_is_unknown_not_down() {
        let p = plan(Expect {
            body_contains: Some("Contact the Clerk".into()),
            ..Expect::default()
        });
        let mut o = cut_by_our_limit();
        let judged = judge(&p, &o, &SETTINGS);
        assert_eq!(
            (judged.verdict, judged.reason),
            (Verdict::Unknown, Reason::BodyMismatch),
            "{}",
            judged.detail
        );
        assert!(
            judged.detail.contains("max_body_bytes"),
            "{}",
            judged.detail
        );
        // A body the site broke off is the site's: what came is what a browser shows.
        if let Outcome::Answer(a) = &mut o.outcome {
            a.truncated = false;
            a.broke_off = Some("the body broke off".into());
        }
        assert_eq!(j(&p, &o), (Verdict::Down, Reason::BodyMismatch));
    }

    /// Hunt U: a `body_not_contains` past the read limit was `up` with no word that the
    /// rest of the page went unread (a `body_contains` there is `unknown`).
    #[test]
    fn a_forbidden_text_looked_for_in_part_of_the_page_says_so() {
        let p = plan(Expect {
            body_not_contains: Some("Site closed".into()),
            ..Expect::default()
        });
        let judged = judge(&p, &cut_by_our_limit(), &SETTINGS);
        assert_eq!(judged.verdict, Verdict::Up, "{}", judged.detail);
        assert!(
            judged.detail.contains("max_body_bytes"),
            "{}",
            judged.detail
        );
    }

    /// Hunt U: a job asking for more bytes (`expect.min_body_bytes`) than
    /// `probe.max_body_bytes` lets picket read got a confirmed `down/body_too_small`
    /// for a 3 MB page ("the body is 2097152 bytes"): our own limit, not the page, kept
    /// the rest from us, as for a keyword past it.
    #[test]
    fn a_minimum_past_our_read_limit_is_unknown_not_down() {
        let p = plan(Expect {
            min_body_bytes: Some(4 * SNIFF_BYTES as u64),
            ..Expect::default()
        });
        let o = cut_by_our_limit();
        let judged = judge(&p, &o, &SETTINGS);
        assert_eq!(
            (judged.verdict, judged.reason),
            (Verdict::Unknown, Reason::BodyTooSmall),
            "{}",
            judged.detail
        );
        assert!(
            judged.detail.contains("max_body_bytes"),
            "{}",
            judged.detail
        );
    }

    /// Hunt L: a 503 with `Retry-After: 3600` (or a date two hours ahead) was quoted as
    /// asking "to be left alone for 600 s": picket's own cap, said as the site's word.
    #[test]
    fn a_pause_asked_is_quoted_as_asked_not_as_capped() {
        let p = plan(Expect::default());
        let asked = |raw: &str, held: u64| {
            let mut o = answer(503, PAGE);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.retry_after = Some(raw.into());
                a.pause_asked = Some(Duration::from_secs(held));
            }
            judge(&p, &o, &SETTINGS).detail
        };
        let capped = asked("3600", 600);
        assert!(capped.contains("3600 s"), "{capped}");
        assert!(capped.contains("at most 600 s"), "{capped}");
        let date = "Wed, 02 Dec 2026 10:00:00 GMT";
        let capped = asked(date, 600);
        assert!(capped.contains(date), "{capped}");
        assert!(asked("1200.5", 600).contains("for 1200.5 s"), "review T");
        let as_asked = asked("120", 120);
        assert!(as_asked.contains("for 120 s (Retry-After)"), "{as_asked}");
        assert!(!as_asked.contains("at most"), "{as_asked}");
    }

    /// Review U: judge.rs:385 gives every 401 with a WWW-Authenticate the advice "list 401
    /// in the job's expect.status", also when the job sent its own Authorization: then
    /// the job's password was refused (changed, expired), and the advice would hide that
    /// for good.
    #[test]
    fn review_u_a_401_to_the_jobs_own_credentials_does_not_advise_expecting_401() {
        let mut p = plan(Expect::default());
        p.job_headers = vec![("Authorization".into(), "Basic dXNlcjpvbGQ=".into())];
        let mut o = answer(401, PAGE);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.login = Some("Basic realm=\"County staff\"".into());
        }
        let judged = judge(&p, &o, &SETTINGS);
        assert!(
            !judged.detail.contains("list 401"),
            "the job's credentials were refused: {}",
            judged.detail
        );
    }

    /// Hunt L: a site behind Basic auth was "401 Unauthorized (expected 2xx or 3xx)
    /// (confirmed)": true, but the detail never said the site asks for a password, which
    /// a browser's prompt shows at once, nor how to check such a site.
    #[test]
    fn a_401_says_the_site_asks_for_a_password() {
        let p = plan(Expect::default());
        let mut o = answer(401, PAGE);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.login = Some("Basic realm=\"County staff\"".into());
        }
        let judged = judge(&p, &o, &SETTINGS);
        assert_eq!(
            (judged.verdict, judged.reason),
            (Verdict::Down, Reason::HttpStatus)
        );
        assert!(
            judged.detail.contains("asks for a password"),
            "{}",
            judged.detail
        );
        assert!(judged.detail.contains("County staff"), "{}", judged.detail);
        assert!(judged.detail.contains("expect.status"), "{}", judged.detail);
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

    const DDOS_GUARD: &str = "<html><head><title>DDoS-Guard</title></head><body><h1>Just a \
        moment…</h1><p>Checking your browser before accessing county.example.</p><p>DDoS \
        protection by DDoS-Guard</p><script src=\"/.well-known/ddos-guard/check\"></script></body></html>";
    const JIASULE: &str = "<script>document.cookie=('_')+('_')+('j')+('s')+('l')+\
        ';max-age=3600;path=/';location.href=location.pathname+location.search</script>";
    const TESTCOOKIE: &str = "<html><body><script>document.cookie = \"TCK=4f2a; path=/\";\n\
        location.reload();</script></body></html>";

    /// nginx's `error_page 429 =200 /busy.html`: a rate limit's own page answering
    /// with a success (review AG: with a keyword job, 1 of 20 and 2 of 12
    /// `down/body_mismatch`). It refuses us, with or without the job's keyword; a page
    /// with much to read that mentions the words is the site's.
    #[test]
    fn a_rate_limits_page_answering_with_a_success_refuses_us() {
        const BUSY: &str = "<!DOCTYPE html>\n<html><head><title>Busy</title></head><body>\n\
            <h1>Too many requests</h1>\n<p>Please slow down and try again in a minute.</p>\n\
            </body></html>\n";
        let keyword = plan(Expect {
            body_contains: Some("Welcome".into()),
            ..Expect::default()
        });
        for p in [plan(Expect::default()), keyword] {
            let r = judge(&p, &answer(200, BUSY), &SETTINGS);
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Unknown, Reason::Blocked),
                "{}",
                r.detail
            );
            assert!(r.detail.contains("rate limit"), "{}", r.detail);
        }
        let faq = format!(
            "<html><head><title>Our API</title></head><body><h1>Welcome</h1><p>{}</p>\
             <p>Sending too many requests gets a 429.</p></body></html>",
            "Our county's API serves permits and meeting minutes to residents. ".repeat(8)
        );
        assert_eq!(
            j(&plan(Expect::default()), &answer(200, &faq)),
            (Verdict::Up, Reason::Ok)
        );
    }

    /// The same page in the languages of the sites we watch: a German, French,
    /// Spanish, Russian, Chinese or Japanese "too many requests" stub with a 200 was
    /// `up`, the limit's page taken for the site's.
    #[test]
    fn a_rate_limits_page_in_other_languages_refuses_us_too() {
        let p = plan(Expect::default());
        for words in [
            "Zu viele Anfragen",
            "Trop de requêtes",
            "Demasiadas solicitudes",
            "Слишком много запросов",
            "访问过于频繁，请稍后再试",
            "请求过于频繁",
            "リクエストが多すぎます",
        ] {
            let page = format!(
                "<!DOCTYPE html>\n<html><head><title>429</title></head><body>\n<h1>{words}</h1>\n\
                 <p>...</p>\n</body></html>\n"
            );
            let r = judge(&p, &answer(200, &page), &SETTINGS);
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Unknown, Reason::Blocked),
                "{words}: {}",
                r.detail
            );
        }
    }

    #[test]
    fn a_bot_wall_on_a_success_or_its_own_status_refuses_us() {
        let p = plan(Expect::default());
        for (status, page) in [
            (200, DDOS_GUARD),
            (200, TESTCOOKIE),
            (521, JIASULE),
            (403, JIASULE),
        ] {
            let r = judge(&p, &answer(status, page), &SETTINGS);
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Unknown, Reason::Blocked),
                "{status} {page}: {}",
                r.detail
            );
            assert!(r.detail.contains("refuses us"), "{}", r.detail);
        }
        // The job's own keyword on the page: the page is its.
        let own = plan(Expect {
            body_contains: Some("DDoS-Guard".into()),
            ..Expect::default()
        });
        assert_eq!(j(&own, &answer(200, DDOS_GUARD)), (Verdict::Up, Reason::Ok));
    }

    #[test]
    fn a_working_page_with_a_weak_challenge_word_is_up() {
        let p = plan(Expect::default());
        for page in [
            // A login page asks for a captcha.
            "<html><title>Sign in</title><body><form>User <input name=u> Type the captcha \
             <img src=/captcha.png><input name=c></form></body></html>",
            // An app's shell says it is loading.
            "<html><title>Portal</title><body><div id=app>Just a moment...</div>\
             <script src=/app.js></script></body></html>",
            // Cloudflare's bot detection script on an ordinary page.
            "<html><title>County</title><body><p>Opening hours</p><script>var a=document.\
             createElement('script');a.src='/cdn-cgi/challenge-platform/scripts/jsd/main.js';\
             </script></body></html>",
            // A language chooser sets a cookie and reloads, when a person clicks.
            "<html><body><a href=# onclick=\"document.cookie='lang=en';location.reload()\">\
             English</a> <a href=# onclick=\"document.cookie='lang=zh';location.reload()\">\
             中文</a></body></html>",
        ] {
            assert_eq!(
                j(&p, &answer(200, page)),
                (Verdict::Up, Reason::Ok),
                "{page}"
            );
        }
        // Cloudflare's own 521: the site's server refuses Cloudflare, a real outage.
        let cloudflare = "<html><head><title>county.example | 521: Web server is down</title>\
            </head><body><h1>Web server is down</h1><span>Error code 521</span><p>The web \
            server is not returning a connection.</p><script>(function(){var a=document;\
            a.getElementById('cf-footer-item-ip')})();</script></body></html>";
        assert_eq!(
            j(&p, &answer(521, cloudflare)),
            (Verdict::Down, Reason::HttpStatus)
        );
    }

    #[test]
    fn an_error_page_the_job_asked_for_is_no_soft_failure() {
        let page = format!(
            "<title>404 Not Found</title><h1>Not Found</h1>{}",
            "x".repeat(80)
        );
        let gone = plan(Expect {
            status: Some(vec![404]),
            ..Expect::default()
        });
        assert_eq!(j(&gone, &answer(404, &page)), (Verdict::Up, Reason::Ok));
        // The same page with a 200 is a soft 404, whatever the job lists.
        let home = plan(Expect {
            status: Some(vec![200, 404]),
            ..Expect::default()
        });
        assert_eq!(
            j(&home, &answer(200, &page)),
            (Verdict::Degraded, Reason::BodyMismatch)
        );
    }

    #[test]
    fn firewall_block_pages_are_blocked_and_a_sites_own_refusal_is_not() {
        let p = plan(Expect::default());
        let akamai = "<TITLE>Access Denied</TITLE>You don't have permission to access this server.\
                      <P>Reference&#32;&#35;18&#46;6f2e1402&#46;1764500000";
        for status in [403, 405, 406, 503] {
            assert_eq!(
                j(&p, &answer(status, akamai)),
                (Verdict::Unknown, Reason::Blocked),
                "{status}"
            );
        }
        let o = judge(&p, &answer(403, akamai), &SETTINGS);
        assert!(o.detail.contains("Akamai's block page"), "{}", o.detail);
        // IIS's and Apache's own 403 pages say "access denied" too, for every visitor.
        let iis = "<title>403 - Forbidden: Access is denied.</title>You do not have permission to view this directory or page.";
        assert_eq!(
            j(&p, &answer(403, iis)),
            (Verdict::Down, Reason::HttpStatus)
        );
        // A page the job accepts is judged as a page, whatever it says.
        assert_eq!(
            j(&p, &answer(200, &format!("{PAGE} errors.edgesuite.net"))),
            (Verdict::Up, Reason::Ok)
        );
    }

    /// LinkedIn-style sites answer automated clients 999 ("Request denied") while people
    /// see the page: a refusal of us, as a 429 is, not the site down.
    #[test]
    fn a_999_refusal_is_blocked_not_down() {
        let p = plan(Expect::default());
        let o = answer(999, "<html><body>Request denied</body></html>");
        assert_eq!(j(&p, &o), (Verdict::Unknown, Reason::Blocked));
        let d = judge(&p, &o, &SETTINGS).detail;
        assert!(d.contains("refuses us"), "{d}");
        // A job that asks for 999 gets it.
        let p = plan(Expect {
            status: Some(vec![999]),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(999, PAGE)), (Verdict::Up, Reason::Ok));
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
        // A redirect that is the last answer (nothing to follow) likewise (hunt U): the
        // contract's own example lists 301.
        let p = plan(Expect {
            status: Some(vec![200, 301]),
            min_body_bytes: Some(512),
            ..Expect::default()
        });
        assert_eq!(j(&p, &answer(301, "")), (Verdict::Up, Reason::Ok));
        assert_eq!(j(&p, &answer(302, "")), (Verdict::Down, Reason::HttpStatus));
    }

    /// What a browser shows as a blank page, above `min_body_bytes`.
    const BLANK: &[&str] = &[
        "                                                                                  ",
        "<!DOCTYPE html>\n<html>\n<head><title></title></head>\n<body>\n</body>\n</html>\n",
        "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<meta charset=\"UTF-8\">\n<title>County</title>\n",
        "\u{feff}\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ];

    #[test]
    fn a_blank_page_is_no_page() {
        let p = plan(Expect::default());
        for page in BLANK {
            assert!(page.len() >= p.min_body_bytes, "{page:?}");
            let r = judge(&p, &answer(200, page), &SETTINGS);
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Down, Reason::BodyTooSmall),
                "{page:?}: {}",
                r.detail
            );
            assert!(r.detail.contains("shows nothing"), "{}", r.detail);
        }
    }

    #[test]
    fn a_blank_page_is_up_where_the_job_or_the_method_says_so() {
        let blank = BLANK[1];
        // A job listing the status, or whose keyword is on the page, knows its page.
        let listed = plan(Expect {
            status: Some(vec![200]),
            ..Expect::default()
        });
        assert_eq!(j(&listed, &answer(200, blank)), (Verdict::Up, Reason::Ok));
        let keyword = plan(Expect {
            body_contains: Some("<body>".into()),
            ..Expect::default()
        });
        assert_eq!(j(&keyword, &answer(200, blank)), (Verdict::Up, Reason::Ok));
        // HEAD answers carry no page.
        let mut head = plan(Expect::default());
        head.method = Method::Head;
        assert_eq!(j(&head, &answer(200, blank)), (Verdict::Up, Reason::Ok));
        // Beyond what is read as text, nothing is said.
        let p = plan(Expect::default());
        let mut big = answer(200, blank);
        if let Outcome::Answer(a) = &mut big.outcome {
            a.body_bytes = SNIFF_BYTES + 1;
        }
        assert_eq!(j(&p, &big), (Verdict::Up, Reason::Ok));
        // A redirect the prober did not follow is judged by its status, not as a page.
        assert_eq!(j(&p, &answer(302, blank)), (Verdict::Up, Reason::Ok));
    }

    /// Hunt G. CONTRACT: `body_contains` and `body_not_contains` match "the decoded text
    /// of the page"; they matched its source. A keyword copied from the browser was not
    /// found across a character reference, an inline tag or a line break (`down`
    /// confirmed for a working page), and a forbidden word in a script or a comment made
    /// a working page `down`.
    #[test]
    fn keywords_are_matched_in_what_a_person_reads() {
        for (snippet, keyword) in [
            ("<p>Smith &amp; Sons</p>", "Smith & Sons"),
            ("<p>&#27426;&#36814;&#20809;&#20020;</p>", "欢迎光临"),
            (
                "<p>Bienvenue &agrave; la mairie</p>",
                "Bienvenue à la mairie",
            ),
            (
                "<p>Welcome to <b>Springfield</b></p>",
                "Welcome to Springfield",
            ),
            (
                "<p>Welcome to\n      Springfield</p>",
                "Welcome to Springfield",
            ),
            ("<p>Springfield&nbsp;County</p>", "Springfield County"),
            ("<p>We&#39;re open</p>", "We're open"),
        ] {
            let p = plan(Expect {
                body_contains: Some(keyword.into()),
                ..Expect::default()
            });
            let page = format!("{PAGE}{snippet}");
            assert_eq!(
                j(&p, &answer(200, &page)),
                (Verdict::Up, Reason::Ok),
                "{snippet}"
            );
        }
        let forbid = |k: &str| {
            plan(Expect {
                body_not_contains: Some(k.into()),
                ..Expect::default()
            })
        };
        let script = format!("{PAGE}<script>alert('Access Denied: wrong password')</script>");
        let comment = format!("{PAGE}<!-- Error log off -->");
        let shown = format!("{PAGE}<h1>Access&nbsp;Denied</h1>");
        let p = forbid("Access Denied");
        assert_eq!(j(&p, &answer(200, &script)), (Verdict::Up, Reason::Ok));
        assert_eq!(
            j(&p, &answer(200, &shown)),
            (Verdict::Down, Reason::BodyMismatch)
        );
        assert_eq!(
            j(&forbid("Error"), &answer(200, &comment)),
            (Verdict::Up, Reason::Ok)
        );
        // Markup is looked for in the markup.
        assert_eq!(
            j(&forbid("<!-- Error"), &answer(200, &comment)),
            (Verdict::Down, Reason::BodyMismatch)
        );
    }

    /// Hunt G: HTML a browser downloads (`application/octet-stream`, S3's
    /// `binary/octet-stream`, `Content-Disposition: attachment`) or shows as its code
    /// (`text/plain`) was up: a person gets a file or markup, not the site.
    #[test]
    fn a_page_a_browser_does_not_show_as_one_is_not_up() {
        let p = plan(Expect::default());
        let page = format!("<!DOCTYPE html>{PAGE}");
        for (ct, cd) in [
            (Some("application/octet-stream"), None),
            (Some("binary/octet-stream"), None),
            (
                Some("text/html; charset=utf-8"),
                Some("attachment; filename=index.html"),
            ),
            (Some("text/plain; charset=utf-8"), None),
        ] {
            let mut o = answer(200, &page);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.not_shown = crate::probe::not_shown_as_a_page(ct, cd, page.as_bytes());
            }
            assert_eq!(
                j(&p, &o),
                (Verdict::Degraded, Reason::BodyMismatch),
                "{ct:?} {cd:?}"
            );
        }
        // Files watched on purpose (no HTML), HTML as HTML, and a job that found its
        // keyword stay up.
        let json = "{\"status\":\"ok\",\"checks\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24]}";
        let mut file = answer(200, json);
        if let Outcome::Answer(a) = &mut file.outcome {
            a.not_shown =
                crate::probe::not_shown_as_a_page(Some("text/plain"), None, json.as_bytes());
        }
        assert_eq!(j(&p, &file), (Verdict::Up, Reason::Ok));
        assert_eq!(
            crate::probe::not_shown_as_a_page(Some("text/html"), None, page.as_bytes()),
            None
        );
        assert_eq!(
            crate::probe::not_shown_as_a_page(None, Some("inline"), page.as_bytes()),
            None
        );
        let keyword = plan(Expect {
            body_contains: Some("county".into()),
            ..Expect::default()
        });
        let mut o = answer(200, &page);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.not_shown =
                crate::probe::not_shown_as_a_page(Some("text/plain"), None, page.as_bytes());
        }
        assert_eq!(j(&keyword, &o), (Verdict::Up, Reason::Ok));
    }

    /// Hunt Q. A page gzip-compressed twice and labelled once (PHP's ob_gzhandler under
    /// a layer that compresses again), or gzipped with no `Content-Encoding`: browsers
    /// show the compressed bytes, no page; picket said `up`. A `.gz` file watched on
    /// purpose is no page and stays up.
    #[test]
    fn hunt_q_a_page_that_is_gzip_data_is_not_shown() {
        let page = "<!DOCTYPE html><html><head><title>County</title></head><body><p>Opening hours, permits and council minutes.</p></body></html>";
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, page.as_bytes()).expect("gzip");
        let gz = e.finish().expect("gzip");
        let text = String::from_utf8_lossy(&gz).into_owned();
        let p = plan(Expect::default());
        for ct in [Some("text/html; charset=utf-8"), Some("text/plain"), None] {
            let mut o = answer(200, &text);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.body_bytes = gz.len();
                a.not_shown = crate::probe::not_shown_as_a_page(ct, None, &gz);
            }
            assert_eq!(
                j(&p, &o),
                (Verdict::Degraded, Reason::BodyMismatch),
                "{ct:?}"
            );
        }
        for ct in [
            "application/gzip",
            "application/x-gzip",
            "application/octet-stream",
        ] {
            assert_eq!(
                crate::probe::not_shown_as_a_page(Some(ct), None, &gz),
                None,
                "{ct}"
            );
        }
    }

    /// Review X. A `.gz` file sent as a download on purpose: Flask/werkzeug's
    /// `send_file("export.csv.gz", as_attachment=True)` (and Quart's, Litestar's) takes
    /// the type `mimetypes` guesses from the name, `text/csv`, and on purpose sends no
    /// `Content-Encoding` for an attachment ("it causes browsers to save decompressed
    /// tar.gz files"). A browser saves `export.csv.gz`, the file the job watches, whole
    /// and right. `still_compressed` takes any `text/*` body that is gzip data for a page
    /// compressed twice, whatever its `Content-Disposition`: the download is
    /// degraded/body_mismatch ("shows compressed bytes"), a false not-up.
    #[test]
    fn review_x_a_gzip_file_sent_as_an_attachment_is_up() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let csv: String = (0..400)
            .map(|i| format!("{i},permit {},{}\n", i * 7919 % 1000, i * 104_729 % 997))
            .collect();
        std::io::Write::write_all(&mut e, format!("id,name,fee\n{csv}").as_bytes()).expect("gzip");
        let gz = e.finish().expect("gzip");
        let p = plan(Expect::default());
        for (ct, disposition) in [
            (
                "text/csv; charset=utf-8",
                "attachment; filename=export.csv.gz",
            ),
            (
                "text/plain; charset=utf-8",
                "attachment; filename=app.log.gz",
            ),
        ] {
            let mut o = answer(200, &String::from_utf8_lossy(&gz));
            if let Outcome::Answer(a) = &mut o.outcome {
                a.body_bytes = gz.len();
                a.not_shown = crate::probe::not_shown_as_a_page(Some(ct), Some(disposition), &gz);
            }
            let r = judge(&p, &o, &SETTINGS);
            assert_eq!(
                (r.verdict, r.reason),
                (Verdict::Up, Reason::Ok),
                "{ct}, {disposition}: {}",
                r.detail
            );
        }
    }

    /// Review L: `body_not_contains` markup is looked for in the source only when it
    /// holds `<` or `>`; markup without them (an attribute, `class="maintenance"`,
    /// `status="DOWN"`) is now looked for in the visible text, where attributes never
    /// are: a maintenance page the job was set to catch, down before cbe7880, is up.
    #[test]
    fn review_l_a_forbidden_attribute_is_still_found_in_the_markup() {
        let p = plan(Expect {
            body_not_contains: Some("class=\"maintenance\"".into()),
            ..Expect::default()
        });
        let page = "<html><body class=\"maintenance\"><p>We are upgrading our systems and \
                    will be back shortly. Thank you for your patience.</p></body></html>";
        assert_eq!(
            j(&p, &answer(200, page)),
            (Verdict::Down, Reason::BodyMismatch)
        );
    }

    /// A working page whose login form keeps its error `hidden` (each of `hidden`):
    /// a job forbidding "Access Denied" finds the site up.
    fn a_hidden_login_error_is_unseen(hidden: &[&str]) {
        let p = plan(Expect {
            body_not_contains: Some("Access Denied".into()),
            ..Expect::default()
        });
        for hidden in hidden {
            let page = format!("{PAGE}<form>Name <input name=u>{hidden}</form>");
            assert_eq!(
                j(&p, &answer(200, &page)),
                (Verdict::Up, Reason::Ok),
                "{hidden}"
            );
        }
    }

    /// Review L: `body_not_contains` is meant to match what a person reads, but
    /// `shown::visible_text` keeps the words of an element hidden by the `hidden`
    /// attribute or an inline `display:none` (a login form's error kept for a failed
    /// login: no person reads it), which `pages::visible::Unseen` already leaves out.
    #[test]
    fn review_l_a_forbidden_word_in_a_hidden_element_is_not_shown() {
        a_hidden_login_error_is_unseen(&[
            "<div class=err hidden>Access Denied</div>",
            "<div class=err style=\"display:none\">Access Denied</div>",
        ]);
    }

    /// Review L: `shown::visible_text` ends a tag at the first `>`, quoted or not, so
    /// the rest of an attribute's value is read as text: a keyword copied from the
    /// browser across the tag is not found (down, confirmed, on a working page).
    #[test]
    fn review_l_a_gt_in_a_quoted_attribute_does_not_end_the_tag() {
        let p = plan(Expect {
            body_contains: Some("Welcome to Springfield".into()),
            ..Expect::default()
        });
        let page =
            format!("{PAGE}<p>Welcome to <a href=/ title=\"Home > News\">Springfield</a></p>");
        assert_eq!(j(&p, &answer(200, &page)), (Verdict::Up, Reason::Ok));
    }

    /// Review M: a `body_not_contains` word with an apostrophe ("We're sorry", "You
    /// don't have permission") counts as markup since 9a31966 and is looked for in the
    /// source: a working page whose script (or hidden element) holds the words, as a
    /// login form's error or an app's message table does, is down, though no person
    /// reads them (before 9a31966: up).
    #[test]
    fn review_m_an_apostrophe_makes_no_word_markup() {
        let p = plan(Expect {
            body_not_contains: Some("We're sorry".into()),
            ..Expect::default()
        });
        let page = format!(
            "{PAGE}<script>function fail() {{ alert(\"We're sorry, that password is wrong\") }}</script>"
        );
        assert_eq!(j(&p, &answer(200, &page)), (Verdict::Up, Reason::Ok));
    }

    /// Review M: `visible_text` (now `pages::visible::Unseen`) reads a `<noscript>`'s words,
    /// which the old `shown::visible_text` left out: a person's browser runs scripts
    /// and never shows them. Every Vue CLI app says "We're sorry but … doesn't work
    /// properly without JavaScript enabled" there: a job forbidding "sorry" is down on
    /// a working app (before 9a31966: up).
    #[test]
    fn review_m_a_noscript_message_is_not_on_the_page() {
        let p = plan(Expect {
            body_not_contains: Some("sorry".into()),
            ..Expect::default()
        });
        let page = "<!DOCTYPE html><html><head><title>County services</title></head><body>\
                    <noscript><strong>We are sorry but county doesn't work properly without \
                    JavaScript enabled. Please enable it to continue.</strong></noscript>\
                    <div id=app></div><script src=/js/app.js></script></body></html>";
        assert_eq!(j(&p, &answer(200, page)), (Verdict::Up, Reason::Ok));
    }

    /// Review M: an element hidden by `hidden` or `display:none` that holds a
    /// `<script>`, `<style>`, `<template>` or `<textarea>` (valid markup) hides
    /// nothing: `pages::visible::Unseen` skips to the end of that element without counting it
    /// open, and takes its end tag for a stray one. The words stay, and a working
    /// page whose hidden login error carries its own script is down.
    #[test]
    fn review_m_a_script_inside_a_hidden_element_keeps_it_hidden() {
        a_hidden_login_error_is_unseen(&[
            "<div class=err hidden><p>Access Denied</p><script>track('login-error')</script></div>",
            "<div class=err style=\"display:none\"><style>.err p{color:red}</style><p>Access Denied</p></div>",
        ]);
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
    fn a_page_cut_short_by_the_deadline_is_slow_when_what_came_passes_and_a_timeout_when_not() {
        let p = plan(Expect {
            body_contains: Some("County".into()),
            ..Expect::default()
        });
        let late = |p: &Plan, status: u16, body: &str| {
            let mut o = answer(status, body);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.late = Some(Duration::ZERO);
            }
            o.total = Duration::from_secs(30);
            judge(p, &o, &SETTINGS)
        };
        // What came is a page with the expected text: a slow site, shown as it comes.
        let page = format!("<html><title>County</title><body>{}", "x".repeat(2000));
        let shown = late(&p, 200, &page);
        assert_eq!(
            (shown.verdict, shown.reason),
            (Verdict::Degraded, Reason::Slow),
            "{}",
            shown.detail
        );
        assert!(
            shown.detail.contains("did not arrive in full")
                && shown.detail.contains(&format!("{} bytes read", page.len())),
            "{}",
            shown.detail
        );
        assert!(!shown.wants_confirmation());
        // The same page whose bytes stopped for half the probe's time stopped part way.
        let mut stopped = answer(200, &page);
        if let Outcome::Answer(a) = &mut stopped.outcome {
            a.late = Some(p.timeout / 2);
        }
        let stopped = judge(&p, &stopped, &SETTINGS);
        assert_eq!(
            (stopped.verdict, stopped.reason),
            (Verdict::Degraded, Reason::Timeout),
            "{}",
            stopped.detail
        );
        assert!(
            stopped.detail.contains("stopped after"),
            "{}",
            stopped.detail
        );
        // The same with a latency limit: the deadline, not the limit, is what is said.
        let limited = plan(Expect {
            max_latency_ms: Some(5000),
            ..Expect::default()
        });
        let shown = late(&limited, 200, &page);
        assert_eq!(
            (shown.verdict, shown.reason),
            (Verdict::Degraded, Reason::Slow)
        );
        assert!(
            shown.detail.contains("did not arrive in full"),
            "{}",
            shown.detail
        );
        // What came would not be up: too little of it, the expected text not (yet)
        // there, a block page, a wrong status. The deadline is why, as before.
        let unexpected = format!("<html><title>Town</title><body>{}", "x".repeat(2000));
        let blocked = "<html><title>Access Denied</title><body>You don't have permission";
        for (p, status, body) in [
            (&p, 200, "<html><title>County"),
            (&p, 200, unexpected.as_str()),
            (&plan(Expect::default()), 200, blocked),
            (&p, 500, page.as_str()),
        ] {
            let cut = late(p, status, body);
            assert_eq!(
                (cut.verdict, cut.reason),
                (Verdict::Down, Reason::Timeout),
                "{body}: {}",
                cut.detail
            );
            assert!(
                cut.detail.contains("did not arrive in time")
                    && cut.detail.contains(&format!("({} bytes read)", body.len())),
                "{}",
                cut.detail
            );
        }
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
    fn a_request_turned_away_and_asked_again_is_not_the_sites_latency() {
        let p = plan(Expect {
            max_latency_ms: Some(200),
            ..Expect::default()
        });
        let mut o = answer(200, PAGE);
        o.total = Duration::from_millis(6_120);
        o.set_aside = Duration::from_millis(6_000);
        let r = judge(&p, &o, &SETTINGS);
        assert_eq!((r.verdict, r.reason), (Verdict::Up, Reason::Ok));
        assert!(r.detail.contains("in 120 ms"), "{}", r.detail);
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
            j(&p, &failure(FailureKind::NoTls)),
            (Verdict::Down, Reason::Tls),
            "no TLS at all is no certificate problem: down whatever tls.on_error says"
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

    /// Hunt Z1a: any certificate issued for fewer days than `tls.expiry_warn_days` was
    /// degraded on every check, renewed on schedule or not. The contract's rule stays
    /// the default; `tls.expiry_by_lifetime` judges such a certificate by its life.
    #[test]
    fn a_short_lived_certificate_is_late_only_past_two_thirds_of_its_life() {
        let p = plan(Expect::default());
        let by_lifetime = JudgeSettings {
            expiry_by_lifetime: true,
            ..SETTINGS
        };
        let judged = |left, lifetime, settings: &JudgeSettings| {
            let mut o = answer(200, PAGE);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.tls_days = Some(CertDays { left, lifetime });
            }
            let judged = judge(&p, &o, settings);
            (judged.verdict, judged.reason)
        };
        let with = |left, lifetime| judged(left, lifetime, &by_lifetime);
        let up = (Verdict::Up, Reason::Ok);
        let late = (Verdict::Degraded, Reason::Tls);
        assert_eq!(with(5, 6), up, "a 6-day certificate a day old");
        assert_eq!(with(2, 6), up);
        assert_eq!(with(1, 6), late, "not renewed with a day left");
        assert_eq!(with(0, 0), up, "a 12-hour certificate");
        assert_eq!(with(-1, 0), late, "expired by the sites' clock");
        assert_eq!(
            with(13, 90),
            late,
            "a 90-day one is warned of at 14 days, as before"
        );
        assert_eq!(with(14, 90), up);
        assert_eq!(with(13, 47), late, "47-day certificates too");
        assert_eq!(
            judged(5, 6, &SETTINGS),
            late,
            "the contract's rule by default"
        );
    }

    #[test]
    fn certificate_close_to_expiry_is_degraded() {
        let p = plan(Expect::default());
        let mut o = answer(200, PAGE);
        if let Outcome::Answer(a) = &mut o.outcome {
            a.tls_days = Some(CertDays {
                left: 3,
                lifetime: 90,
            });
        }
        assert_eq!(j(&p, &o), (Verdict::Degraded, Reason::Tls));
        // Counted by the sites' clock, a certificate our clock (behind) took as valid.
        if let Outcome::Answer(a) = &mut o.outcome {
            a.tls_days = Some(CertDays {
                left: -2,
                lifetime: 90,
            });
        }
        let judged = judge(&p, &o, &SETTINGS);
        assert_eq!(
            (judged.verdict, judged.reason),
            (Verdict::Degraded, Reason::Tls)
        );
        assert!(
            judged.detail.contains("expired 2 days ago"),
            "{}",
            judged.detail
        );
        let down = JudgeSettings {
            tls_on_error: TlsOnError::Down,
            ..SETTINGS
        };
        assert_eq!(
            judge(&p, &o, &down).verdict,
            Verdict::Down,
            "as a failed handshake"
        );
        // A local clock failure is ours.
        assert_eq!(
            j(&p, &failure(FailureKind::LocalClock)),
            (Verdict::Unknown, Reason::LocalClock)
        );
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

    /// A worker short of CPU runs its timers late: a 100 ms timeout that fired after
    /// our event loop was 80 ms late gave the site a fraction of its time. That is our
    /// side (`unknown/local_resources`), never `down`; a lag of a couple of ms is not.
    #[test]
    fn a_timeout_while_our_own_timers_ran_late_is_ours_not_the_sites() {
        let mut p = plan(Expect {
            body_contains: Some("County".into()),
            ..Expect::default()
        });
        p.timeout = Duration::from_millis(100);
        let lagged = |mut o: Observation, ms: u64| {
            o.lag = Duration::from_millis(ms);
            o.total = Duration::from_millis(180);
            judge(&p, &o, &SETTINGS)
        };
        let ours = lagged(failure(FailureKind::Timeout), 80);
        assert_eq!(
            (ours.verdict, ours.reason),
            (Verdict::Unknown, Reason::LocalResources),
            "{}",
            ours.detail
        );
        assert!(ours.detail.contains("80 ms late"), "{}", ours.detail);
        let theirs = lagged(failure(FailureKind::Timeout), 2);
        assert_eq!(
            (theirs.verdict, theirs.reason),
            (Verdict::Down, Reason::Timeout)
        );
        // A quarter of the time is where it starts.
        let edge = lagged(failure(FailureKind::Timeout), 24);
        assert_eq!(edge.verdict, Verdict::Down);
        assert_eq!(
            lagged(failure(FailureKind::Timeout), 25).verdict,
            Verdict::Unknown
        );
        // A page still coming when the late timer fired: ours too.
        let mut cut = answer(200, "<html>");
        if let Outcome::Answer(a) = &mut cut.outcome {
            a.late = Some(Duration::ZERO);
        }
        assert_eq!(
            lagged(cut, 80).reason,
            Reason::LocalResources,
            "a page cut by a late timer"
        );
        // Hunt S: a lookup that ran out of time while our timers ran late (the worker
        // frozen or throttled during the lookup) was a confirmed `down/dns`; the same
        // in the request was `unknown`. Ours too; a SERVFAIL is the nameserver's word.
        let mut lookup = failure(FailureKind::DnsFailed);
        for (words, ours) in [
            ("c1.example.gov: DNS lookup ran out of time", true),
            ("c1.example.gov: DNS lookup timed out after 3000 ms", true),
            ("c1.example.gov: DNS lookup failed: Server Failure", false),
        ] {
            if let Outcome::Failure(f) = &mut lookup.outcome {
                f.detail = words.into();
            }
            let j = lagged(lookup.clone(), 80);
            let expected = if ours {
                (Verdict::Unknown, Reason::LocalResources)
            } else {
                (Verdict::Down, Reason::Dns)
            };
            assert_eq!((j.verdict, j.reason), expected, "{words}: {}", j.detail);
        }
        // A refused connection is the site's answer, however late we were to read it.
        let refused = lagged(failure(FailureKind::Connect), 80);
        assert_eq!(
            (refused.verdict, refused.reason),
            (Verdict::Down, Reason::Connect)
        );
    }

    /// A refusal of *us* read from a body the deadline cut (a tarpit trickling its block
    /// page, a 429 whose page comes slowly) is still a refusal of us (from the review:
    /// the late-body rule turned the page rules' `unknown/blocked` into `down/timeout`).
    #[test]
    fn a_refusal_of_us_read_from_a_late_body_is_still_unknown() {
        let p = plan(Expect::default());
        let akamai = "<TITLE>Access Denied</TITLE>You don't have permission to access this server.\
                      <P>Reference&#32;&#35;18&#46;6f2e1402&#46;1764500000";
        for (status, body) in [
            (403, akamai),
            (429, "<html><body>Too many requests</body></html>"),
        ] {
            assert_eq!(
                j(&p, &answer(status, body)).0,
                Verdict::Unknown,
                "on time: {status}"
            );
            let mut o = answer(status, body);
            if let Outcome::Answer(a) = &mut o.outcome {
                a.late = Some(Duration::ZERO);
            }
            let judged = judge(&p, &o, &SETTINGS);
            assert_eq!(
                (judged.verdict, judged.reason),
                (Verdict::Unknown, Reason::Blocked),
                "late {status}: {}",
                judged.detail
            );
        }
    }
}
