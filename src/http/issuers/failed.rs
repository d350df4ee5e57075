//! `caIssuers` URLs whose fetch failed lately. A CA's server that is down, or a URL that
//! is gone, would otherwise cost every probe of every site naming it a fetch on every
//! attempt (up to five seconds each when the server hangs), and the answer would be the
//! same: so the failure is remembered for a while and said again instead.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long a failed URL is not asked again: a few rounds of a site checked every
/// minute, short enough that a CA's server back up completes chains again soon.
pub(super) const FAILED_FOR: Duration = Duration::from_secs(300);

/// URLs remembered at most: far more than the CAs a fleet of sites names.
const KEPT: usize = 1024;

/// Failed URLs with when and why.
#[derive(Debug, Default)]
pub(super) struct FailedUrls(Mutex<HashMap<String, (Instant, String)>>);

impl FailedUrls {
    /// Fetching `url` failed at `now` for `why`, a failure of the URL's own (not of our
    /// time or our egress).
    pub(super) fn failed(&self, url: &str, why: &str, now: Instant) {
        let mut failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.len() >= KEPT && !failed.contains_key(url) {
            failed.retain(|_, (at, _)| now.saturating_duration_since(*at) < FAILED_FOR);
            if failed.len() >= KEPT {
                failed.clear();
            }
        }
        failed.insert(url.to_string(), (now, why.to_string()));
    }

    /// Why `url` failed, when that was less than [`FAILED_FOR`] before `now`, said with
    /// how long ago.
    pub(super) fn lately(&self, url: &str, now: Instant) -> Option<String> {
        let failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
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
