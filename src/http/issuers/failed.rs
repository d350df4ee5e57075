//! `caIssuers` URLs whose fetch failed lately. A CA's server that is down, or a URL that
//! is gone, would otherwise cost every probe of every site naming it a fetch on every
//! attempt (up to five seconds each when the server hangs), and the answer would be the
//! same: so the failure is remembered for a while and said again instead.
//!
//! A URL whose server was not reached (refused, silent, its name not resolved, the
//! answer broken off) failed perhaps only in that moment of our own network: a way out
//! lost for a few seconds, while the site's handshake had just come through. So that
//! failure is the URL's own only once it repeats [`CONFIRM_AFTER`] later; until then the
//! site's chain is not known, and nothing is remembered for five minutes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed URL is not asked again: a few rounds of a site checked every
/// minute, short enough that a CA's server back up completes chains again soon.
pub(super) const FAILED_FOR: Duration = Duration::from_secs(300);

/// How long after its first failure to reach it a URL's server must fail to be
/// reached again for that to be the URL's failure: longer than the blips of our own
/// network the engine tells by its moments (a second or two), short enough that a
/// site checked every minute gets its verdict on its second check.
pub(super) const CONFIRM_AFTER: Duration = Duration::from_secs(20);

/// URLs remembered at most: far more than the CAs a fleet of sites names.
const KEPT: usize = 1024;

/// Failed URLs with when and why, and those whose server was not reached lately, with
/// when that was first.
#[derive(Debug, Default)]
pub(super) struct FailedUrls {
    failed: Mutex<HashMap<String, (Instant, String)>>,
    unreached: Mutex<HashMap<String, Instant>>,
}

/// Whether a URL's server not reached is the URL's failure yet.
#[derive(Debug, PartialEq)]
pub(super) enum Unreached {
    /// Not yet: it was first not reached this long ago, less than [`CONFIRM_AFTER`].
    Once(Duration),
    /// It was not reached this long ago either: the URL's failure, now remembered.
    Again(Duration),
}

impl FailedUrls {
    /// Fetching `url` failed at `now` for `why`, a failure of the URL's own (not of our
    /// time or our egress).
    pub(super) fn failed(&self, url: &str, why: &str, now: Instant) {
        self.forget_unreached(url);
        let mut failed = lock(&self.failed);
        if failed.len() >= KEPT && !failed.contains_key(url) {
            failed.retain(|_, (at, _)| now.saturating_duration_since(*at) < FAILED_FOR);
            if failed.len() >= KEPT {
                failed.clear();
            }
        }
        failed.insert(url.to_string(), (now, why.to_string()));
    }

    /// `url`'s server was not reached at `now`, with the fetch's full time: the URL's
    /// failure (for the caller to remember, [`FailedUrls::failed`]) when it was not
    /// reached [`CONFIRM_AFTER`] or more before as well, within [`FAILED_FOR`].
    pub(super) fn unreached(&self, url: &str, now: Instant) -> Unreached {
        let first = {
            let mut unreached = lock(&self.unreached);
            if unreached.len() >= KEPT && !unreached.contains_key(url) {
                unreached.retain(|_, at| now.saturating_duration_since(*at) < FAILED_FOR);
                if unreached.len() >= KEPT {
                    unreached.clear();
                }
            }
            let first = unreached.entry(url.to_string()).or_insert(now);
            if now.saturating_duration_since(*first) >= FAILED_FOR {
                *first = now;
            }
            now.saturating_duration_since(*first)
        };
        if first < CONFIRM_AFTER {
            Unreached::Once(first)
        } else {
            Unreached::Again(first)
        }
    }

    /// `url`'s server answered: a failure to reach it before was a moment's.
    pub(super) fn forget_unreached(&self, url: &str) {
        lock(&self.unreached).remove(url);
    }

    /// Why `url` failed, when that was less than [`FAILED_FOR`] before `now`, said with
    /// how long ago.
    pub(super) fn lately(&self, url: &str, now: Instant) -> Option<String> {
        let failed = lock(&self.failed);
        let (at, why) = failed.get(url)?;
        let ago = now.saturating_duration_since(*at);
        (ago < FAILED_FOR).then(|| {
            format!(
                "{why} ({} s ago; not asked again for {} min)",
                ago.as_secs(),
                FAILED_FOR.as_secs() / 60
            )
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_not_reached_is_its_failure_only_when_that_repeats_later() {
        let urls = FailedUrls::default();
        let url = "http://ca.test/intermediate.crt";
        let t0 = Instant::now();
        assert_eq!(urls.unreached(url, t0), Unreached::Once(Duration::ZERO));
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            urls.unreached(url, soon),
            Unreached::Once(Duration::from_secs(1))
        );
        let later = t0 + CONFIRM_AFTER;
        assert_eq!(urls.unreached(url, later), Unreached::Again(CONFIRM_AFTER));
        // Remembered as failed, it starts over.
        urls.failed(url, "connection refused", later);
        assert_eq!(urls.unreached(url, later), Unreached::Once(Duration::ZERO));
    }

    #[test]
    fn an_answer_between_two_failures_to_reach_a_url_makes_them_moments() {
        let urls = FailedUrls::default();
        let url = "http://ca.test/intermediate.crt";
        let t0 = Instant::now();
        urls.unreached(url, t0);
        urls.forget_unreached(url);
        let later = t0 + CONFIRM_AFTER;
        assert_eq!(urls.unreached(url, later), Unreached::Once(Duration::ZERO));
        // A first failure older than a remembered one's time starts over.
        let much_later = later + FAILED_FOR;
        assert_eq!(
            urls.unreached(url, much_later),
            Unreached::Once(Duration::ZERO)
        );
    }
}
