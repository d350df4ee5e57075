//! One request per IP, now and then, waits out a tarpit.
//!
//! Requests held open on several hosts of an IP right after it answered are a server
//! hanging or a tarpit holding what came from us, and asked again after the hold they
//! are held again either way when the tarpit flagged us (haproxy's "flag abusers"
//! recipe: each of our requests keeps the flag). Only waiting longer than the tarpit
//! tells them apart: it then answers its 500, a refusal of us in its own words, and what
//! it holds next is more of it (`limit::standing::AfterHold::SitesUnlessRefused`). A
//! backend hanging behind a proxy answers the proxy's 504 within the same wait (nginx's
//! and Apache's proxy timeouts are a minute by default). But while one request of a
//! backed-off IP waits, its other hosts wait behind it, so one request of the IP is
//! given that wait, once in [`CLAIM_EVERY`] per worker, and only when the IP served none
//! of our requests since it was held (a tarpit that flagged us holds them all); the
//! others are given twice a probe's time (`connect::TARPIT_OUTWAIT`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{HttpProber, Probe};
use crate::probe::Observation;

/// How long the one request waits: longer than the tarpits of haproxy's recipes (10 to
/// 30 s, its default the connect timeout) and than the minute after which nginx and
/// Apache answer 504 for a backend that hangs.
pub(super) const TARPIT_LONGEST: Duration = Duration::from_secs(65);

/// How often one IP's request may wait so long, per worker.
const CLAIM_EVERY: Duration = Duration::from_secs(600);

/// IPs remembered at most; beyond, none is given the long wait until some are older
/// than [`CLAIM_EVERY`].
const MAX_IPS: usize = 4096;

/// When each IP's request last waited [`TARPIT_LONGEST`].
#[derive(Default)]
pub(super) struct Outwaits {
    claimed: Mutex<HashMap<IpAddr, Instant>>,
}

impl Outwaits {
    /// Whether a request to `ip`, asked again after a hold that requests held open
    /// began, waits [`TARPIT_LONGEST`]: the first such in [`CLAIM_EVERY`].
    pub(super) fn claim(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if claimed
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < CLAIM_EVERY)
        {
            return false;
        }
        if claimed.len() >= MAX_IPS {
            claimed.retain(|_, t| now.duration_since(*t) < CLAIM_EVERY);
            if claimed.len() >= MAX_IPS {
                return false;
            }
        }
        claimed.insert(ip, now);
        true
    }
}

impl HttpProber {
    /// Gives the request of `probe` to `ip`, asked again after a hold that requests held
    /// open began (`Probe::tarpit_due`), [`TARPIT_LONGEST`] to answer, when it may
    /// claim it. An IP that served us since this request was held does not hold all of
    /// ours: no tarpit flagged us, and a limit still holding what came too fast lets it
    /// through now.
    pub(super) fn wait_out_a_tarpit(
        &self,
        probe: &mut Probe<'_>,
        ip: IpAddr,
        obs: &mut Observation,
    ) {
        let Some(held) = probe.tarpit_due.take() else {
            return;
        };
        if self.recent.since(ip, probe.index, held).0 > 0 || !self.outwaits.claim(ip) {
            return;
        }
        let wait = TARPIT_LONGEST.max(probe.plan.timeout);
        probe.deadline = probe.deadline.max(Instant::now() + wait);
        obs.notes.push(format!(
            "asked again with {} s to answer, longer than a tarpit holds what it flagged",
            wait.as_secs()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_request_per_ip_waits_out_a_tarpit_every_ten_minutes() {
        let w = Outwaits::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(w.claim(a));
        assert!(
            !w.claim(a),
            "a second request of the IP waits behind the first"
        );
        assert!(w.claim(b), "another IP's own");
        tokio::time::advance(CLAIM_EVERY).await;
        assert!(w.claim(a));
    }
}
