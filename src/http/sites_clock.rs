//! What the sites' clocks say of ours. A worker whose clock is days off (a VM restored
//! from a snapshot, a host without NTP, a reset RTC) finds every certificate expired or
//! not valid yet, where every browser with a true clock shows the site: that is our
//! failure, not theirs (hunt S). The sites tell the time: the `Date` of each answer
//! (RFC 9110 asks every origin server with a clock to send one).
//!
//! Only what a few broken or hostile servers cannot move is believed (review AA): one
//! answer per probe (the first hop's; a chain of redirects is one site), one per
//! address, the latest 31 of the last hour; no cache's copy (an `Age`: its `Date` is
//! when the origin made it, or restated by the cache); no `Date` before picket's
//! release (a device without a clock says 1970); and only a median that most of them
//! agree with, within two minutes. Each answer is kept against our monotonic clock, so
//! a wall clock stepped right by NTP is seen right at once.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, AGE, DATE};

/// How many addresses' latest answers are kept.
const KEPT: usize = 31;
/// How many addresses must have answered before their clocks are believed over ours.
const AT_LEAST: usize = 5;
/// How long an answer's clock counts.
const FRESH: Duration = Duration::from_secs(3600);
/// Within this of the median, an answer's clock agrees with it.
const AGREE: Duration = Duration::from_secs(120);
/// Below this, our clock is not the one that is wrong: a `Date` has whole seconds,
/// servers' clocks drift, and a certificate's dates are set hours apart from any moment
/// that matters (Let's Encrypt dates a certificate an hour back).
const OFF_BY: Duration = Duration::from_secs(300);
/// How often an offset is warned of while it lasts.
const WARN_EVERY: Duration = Duration::from_secs(600);
/// No true clock reads earlier than this (2026-11-01T00:00:00Z, before this release).
const EARLIEST: Duration = Duration::from_secs(1_793_491_200);

/// The latest answers' clocks, against ours.
#[derive(Default)]
pub(super) struct SitesClock {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// One per address, the newest last.
    answers: VecDeque<Answer>,
    /// The estimate last exported (ms).
    exported: Option<i64>,
    warned: Option<Instant>,
}

/// When an address's answer said it was made, and when (by our monotonic clock) it came.
struct Answer {
    ip: IpAddr,
    theirs: SystemTime,
    came: Instant,
}

impl SitesClock {
    /// Notes the clock of a probe's first answer, from `ip` with `headers`, come now.
    pub(super) fn note(&self, ip: IpAddr, headers: &HeaderMap) {
        let Some(theirs) = made_at(headers) else {
            return;
        };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        seen.answers
            .retain(|a| a.ip != ip && a.came.elapsed() < FRESH);
        if seen.answers.len() == KEPT {
            seen.answers.pop_front();
        }
        let came = Instant::now();
        seen.answers.push_back(Answer { ip, theirs, came });
        let Some(offset) = estimate(&seen.answers) else {
            return;
        };
        // Whole seconds move the gauge: the rest is a `Date`'s rounding.
        if seen
            .exported
            .is_none_or(|last| (last - offset).abs() >= 1000)
        {
            seen.exported = Some(offset);
            crate::metric::clock_offset(offset);
        }
        let off = offset.unsigned_abs() >= millis(OFF_BY);
        if off && seen.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            seen.warned = Some(Instant::now());
            tracing::warn!(
                offset_s = offset / 1000,
                answers = seen.answers.len(),
                "this worker's clock is {}: certificates are judged by the sites' clocks; set its time (NTP)",
                Offset(offset)
            );
        }
    }

    /// Now by the sites' clock when [`SitesClock::offset`] says ours is off, else by
    /// ours.
    pub(super) fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match self.offset() {
            Some(ms) if ms >= 0 => now + Duration::from_millis(ms.unsigned_abs()),
            Some(ms) => now - Duration::from_millis(ms.unsigned_abs()),
            None => now,
        }
    }

    /// The sites' clock minus ours (ms), when the latest answers of enough addresses
    /// agree on it and put it at least [`OFF_BY`] from ours.
    pub(super) fn offset(&self) -> Option<i64> {
        let seen = self.seen.lock().ok()?;
        estimate(&seen.answers).filter(|o| o.unsigned_abs() >= millis(OFF_BY))
    }
}

/// When the answer was made, by its `Date`: none for a cache's copy (an `Age` above
/// 0), or a `Date` no true clock reads.
fn made_at(headers: &HeaderMap) -> Option<SystemTime> {
    let aged = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().parse::<u64>() != Ok(0));
    if aged {
        return None;
    }
    let date = httpdate::parse_http_date(headers.get(DATE)?.to_str().ok()?).ok()?;
    (date >= SystemTime::UNIX_EPOCH + EARLIEST).then_some(date)
}

/// `later` minus `earlier`, in ms (negative when `later` is earlier).
fn millis_between(earlier: SystemTime, later: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sites' clock minus ours now (ms): the median of the fresh answers' clocks, each
/// carried to now on our monotonic clock, once [`AT_LEAST`] addresses answered and
/// most of them agree with it.
fn estimate(answers: &VecDeque<Answer>) -> Option<i64> {
    let now = SystemTime::now();
    let mut offsets: Vec<i64> = answers
        .iter()
        .filter(|a| a.came.elapsed() < FRESH)
        .map(|a| millis_between(now, a.theirs + a.came.elapsed()))
        .collect();
    if offsets.len() < AT_LEAST {
        return None;
    }
    offsets.sort_unstable();
    let median = offsets[offsets.len() / 2];
    let agree = offsets
        .iter()
        .filter(|o| (*o - median).unsigned_abs() <= millis(AGREE))
        .count();
    (agree * 2 > offsets.len()).then_some(median)
}

/// How a certificate's dates missed our clock, as rustls said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DatesMissed {
    /// Expired this long before our now.
    Expired(Duration),
    /// Valid only this long after our now.
    NotYet(Duration),
}

impl DatesMissed {
    /// Of a rustls error, when it is a certificate's dates.
    pub(super) fn of(e: &rustls::Error) -> Option<DatesMissed> {
        use rustls::CertificateError as C;
        let rustls::Error::InvalidCertificate(c) = e else {
            return None;
        };
        let secs = |from: rustls::pki_types::UnixTime, to: rustls::pki_types::UnixTime| {
            Duration::from_secs(to.as_secs().saturating_sub(from.as_secs()))
        };
        match c {
            C::ExpiredContext { time, not_after } => {
                Some(DatesMissed::Expired(secs(*not_after, *time)))
            }
            C::NotValidYetContext { time, not_before } => {
                Some(DatesMissed::NotYet(secs(*time, *not_before)))
            }
            _ => None,
        }
    }

    /// Of OpenSSL's words for a certificate's dates (the legacy TLS path), which say
    /// which way they missed but not by how much.
    pub(super) fn of_openssl(cause: &str) -> Option<DatesMissed> {
        if cause.contains("certificate has expired") {
            Some(DatesMissed::Expired(Duration::ZERO))
        } else if cause.contains("certificate is not yet valid") {
            Some(DatesMissed::NotYet(Duration::ZERO))
        } else {
            None
        }
    }

    /// Whether the sites' clock, `offset` ms from ours, has the certificate valid: a
    /// certificate expired by ours not by theirs (ours ahead), or valid by theirs and
    /// not yet by ours (ours behind).
    pub(super) fn explained_by(self, offset: i64) -> bool {
        let by = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match self {
            DatesMissed::Expired(ago) => {
                offset < 0 && offset.unsigned_abs() > by(ago).unsigned_abs()
            }
            DatesMissed::NotYet(until) => offset > by(until),
        }
    }
}

/// An offset of the sites' clock from ours, read as ours being ahead or behind.
pub(super) struct Offset(pub(super) i64);

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // To the minute: a `Date` has whole seconds, and the answer took some.
        let secs = (self.0.unsigned_abs() / 1000 + 30) / 60 * 60;
        let side = if self.0 < 0 { "ahead of" } else { "behind" };
        let span = humantime::format_duration(Duration::from_secs(secs));
        write!(f, "{span} {side} the Date of the sites' answers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dated(at: SystemTime, age: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(DATE, httpdate::fmt_http_date(at).parse().expect("a date"));
        if let Some(age) = age {
            h.insert(AGE, age.parse().expect("an age"));
        }
        h
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 9, n])
    }

    #[test]
    fn the_median_of_five_addresses_or_more_tells_and_a_few_wrong_servers_do_not() {
        let now = SystemTime::now();
        let clock = SitesClock::default();
        let day = Duration::from_secs(86_400);
        // Our clock three days behind: theirs reads three days later.
        for n in 1..=4 {
            clock.note(ip(n), &dated(now + 3 * day, None));
        }
        assert_eq!(clock.offset(), None, "four addresses are not enough");
        // The same address again counts once.
        clock.note(ip(4), &dated(now + 3 * day, None));
        assert_eq!(clock.offset(), None);
        clock.note(ip(5), &dated(now + 3 * day, None));
        let offset = clock.offset().expect("five addresses agree");
        assert!((offset - 3 * 86_400_000).abs() < 2000, "{offset}");
        // Two servers with clocks of their own move nothing.
        clock.note(ip(6), &dated(now, None));
        clock.note(ip(7), &dated(now - day, None));
        assert!(clock.offset().is_some_and(|o| o > 2 * 86_400_000));
        // Once they are as many as the rest, no clock is believed.
        clock.note(ip(8), &dated(now, None));
        clock.note(ip(9), &dated(now - 2 * day, None));
        clock.note(ip(10), &dated(now - 5 * day, None));
        assert_eq!(clock.offset(), None, "no majority agrees");
    }

    #[test]
    fn a_caches_copy_and_a_clockless_device_say_nothing_and_a_true_clock_is_no_offset() {
        let now = SystemTime::now();
        let clock = SitesClock::default();
        let day = Duration::from_secs(86_400);
        for n in 1..=5 {
            clock.note(ip(n), &dated(now - day, Some("86400")));
            clock.note(ip(n + 10), &dated(SystemTime::UNIX_EPOCH + day, None));
        }
        assert_eq!(clock.offset(), None, "copies and 1970 are not counted");
        for n in 1..=5 {
            clock.note(ip(n), &dated(now + Duration::from_secs(20), Some("0")));
        }
        assert_eq!(clock.offset(), None, "20 s is no clock of ours off");
    }

    #[test]
    fn dates_missed_by_ours_alone_are_explained_by_the_sites_clock() {
        let day = Duration::from_secs(86_400);
        let ms = |d: Duration| i64::try_from(d.as_millis()).expect("ms");
        // Not valid for another day by ours; theirs is three days later.
        assert!(DatesMissed::NotYet(day).explained_by(ms(3 * day)));
        assert!(!DatesMissed::NotYet(4 * day).explained_by(ms(3 * day)));
        assert!(!DatesMissed::NotYet(day).explained_by(-ms(3 * day)));
        // Expired a day ago by ours; theirs is three days earlier.
        assert!(DatesMissed::Expired(day).explained_by(-ms(3 * day)));
        assert!(!DatesMissed::Expired(4 * day).explained_by(-ms(3 * day)));
        assert!(!DatesMissed::Expired(day).explained_by(ms(3 * day)));
        // OpenSSL says which way, not how far.
        let openssl = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed: certificate is not yet valid";
        let missed = DatesMissed::of_openssl(openssl).expect("a date");
        assert!(missed.explained_by(ms(3 * day)));
        assert!(!missed.explained_by(-ms(3 * day)));
    }

    #[test]
    fn an_offset_reads_as_our_clock_ahead_or_behind_to_the_minute() {
        let behind = Offset(3 * 86_400_000 - 1500).to_string();
        assert_eq!(behind, "3days behind the Date of the sites' answers");
        let ahead = Offset(-(2 * 3_600_000 + 29_000)).to_string();
        assert_eq!(ahead, "2h ahead of the Date of the sites' answers");
    }
}
