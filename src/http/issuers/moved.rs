//! `caIssuers` URLs that redirected lately, and where to. A job whose fetch found no slot
//! of the CA's per-IP limit is deferred and comes back; were it to ask the old URL again
//! each time, a redirected URL would need two slots within one probe, and at a CA's
//! slow rate it would come back for ever. Browsers keep a 301 in their HTTP cache; the
//! fetch keeps every redirect it followed for a while, the same way.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;
use url::Url;

use super::failed::FAILED_FOR;

/// Redirects remembered at most: far more than the CAs a fleet of sites names.
const KEPT: usize = 256;

/// Redirected URLs with where they led and when.
#[derive(Debug, Default)]
pub(super) struct MovedUrls(Mutex<HashMap<String, (Instant, Url)>>);

impl MovedUrls {
    /// `from` redirected to `to` at `now`.
    pub(super) fn moved(&self, from: &Url, to: &Url, now: Instant) {
        let mut moved = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if moved.len() >= KEPT && !moved.contains_key(from.as_str()) {
            moved.clear();
        }
        moved.insert(from.to_string(), (now, to.clone()));
    }

    /// Where `url` led, when that was less than [`FAILED_FOR`] before `now`.
    pub(super) fn lately(&self, url: &Url, now: Instant) -> Option<Url> {
        let moved = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, to) = moved.get(url.as_str())?;
        (now.saturating_duration_since(*at) < FAILED_FOR).then(|| to.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_is_remembered_for_a_while() {
        let m = MovedUrls::default();
        let from = Url::parse("http://ca.test/old.crt").expect("url");
        let to = Url::parse("http://ca.test/new.crt").expect("url");
        let now = Instant::now();
        assert!(m.lately(&from, now).is_none());
        m.moved(&from, &to, now);
        assert_eq!(m.lately(&from, now + FAILED_FOR / 2), Some(to));
        assert!(m.lately(&from, now + FAILED_FOR).is_none());
    }
}
