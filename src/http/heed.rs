//! What an answer tells the limiter about our standing with its IP, and a pause asked
//! right after a burst: a site in maintenance, or a limit refusing us.
//!
//! A 503 whose `Retry-After` outlasts any confirmation confirms its own `down` (a site
//! in maintenance says when to come back). But a shared server's limit may answer the
//! same 503 and pause to a client that just sent it a burst, and then it refuses every
//! host of the IP. Right after or amid a burst of ours that the IP served, the IP's
//! other answers tell the two apart: its other hosts refused too (a limit refusing us:
//! `unknown/blocked`, and the host held for the pause it asked), or it served a request
//! sent since (the site's own maintenance: `down` by its word, nothing held, so its
//! next check asks it again).

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{HttpProber, Probe};
use crate::limit::standing::REFUSAL_WINDOW;
use crate::limit::{Hold, Refusal, Request, Signal};
use crate::probe::judge::BURST_ANSWERS;

/// How often the IP's answers are looked at while a pause is in doubt.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What [`HttpProber::heed`] made of an answer.
pub(super) struct Heeded {
    /// The answer refuses *us* (the limiter has backed off).
    pub(super) refusal: Option<Refusal>,
    /// A pause asked right after or amid a burst, long enough to confirm a `down` by itself: a
    /// site in maintenance, or a limit refusing us, which its IP's next answers tell.
    pub(super) pause_in_doubt: Option<Duration>,
    /// A refusal amid other requests of ours to the IP, not (yet) taken for one of us
    /// (`Observation::amid_our_requests`).
    pub(super) amid_our_requests: bool,
    /// A neighbour of the IP answered right then: the refusal is the site's own.
    pub(super) proof: Option<String>,
    /// A neighbour was refused alike: the request may be asked again after this hold.
    pub(super) alike: bool,
    /// A neighbour answered right after the probe's first refusal: the request is asked
    /// again at once, this saying why.
    pub(super) ask_at_once: Option<String>,
}

impl HttpProber {
    /// The time `ip` took to answer (`first_byte`) paces our requests to it, unless the
    /// answer refused us by a status or page naming us (`signal`): a tarpit answers its
    /// 500 (or the 429 or 403 of its `deny_status`) as late as the tarpit is long, by
    /// design, and taking that for a server slowing down under its load would read the
    /// requests it holds next as a struggling server's, never as a refusal of us
    /// (`Signal::may_refuse`). A slow 503 is a saturated server's as often (haproxy's
    /// `timeout queue`), and paces.
    pub(super) fn paced_by(
        &self,
        probe: &Probe<'_>,
        host: &str,
        ip: IpAddr,
        signal: Signal,
        first_byte: Option<Duration>,
    ) {
        let names_us =
            matches!(signal, Signal::Refused(status) | Signal::Paused(status) if status != 503);
        if let (Some(latency), false) = (first_byte, names_us) {
            let request = Request::sent(ip, host, &probe.egress.name);
            self.limiter.latency(&request, latency);
        }
    }

    /// Tells the limiter what the answer of `ip` said: a `Retry-After` pause `asked` by a
    /// 429 or 503 (`status`), its `signal`, and a refusal by one host right after its IP
    /// served a burst (that host is held).
    pub(super) async fn heed(
        &self,
        probe: &Probe<'_>,
        host: &str,
        (ip, stamp): (IpAddr, u64),
        status: u16,
        asked: Option<Duration>,
        signal: Signal,
    ) -> Heeded {
        let request = Request::sent(ip, host, &probe.egress.name);
        let refused = matches!(
            signal,
            Signal::Refused(_) | Signal::Paused(_) | Signal::Errored(_)
        );
        if refused {
            self.recent.refused(ip, probe.index, stamp);
        } else {
            self.recent.served_us(ip, probe.index, stamp);
        }
        // The answers that served us from the IP lately, counted for a refusal only.
        let served = if refused {
            self.recent.served(ip, probe.index)
        } else {
            0
        };
        let after_burst = served >= BURST_ANSWERS;
        let confirms = |p: Duration| probe.plan.confirmed_by_pause(status, p);
        // Amid a burst of ours, its answers may not all be back yet: a limit lets the
        // first requests through and refuses the next, whose 503 can come back first.
        let amid = refused && self.recent.asked_lately(ip, probe.index) > 1;
        if let Some(pause) = asked.filter(|p| !confirms(*p)) {
            // The server asked for a pause: no worker sends to this host before it ends,
            // nor to the IP when several of its hosts ask. A maintenance page's longer
            // pause is not held: its own word confirms this check's `down` with nothing
            // more sent, and the next check of the site (a new job) asks it once, as a
            // visitor would, to see whether it is back. One in doubt is held once it
            // shows itself a limit's (`pause_of_a_limit`, or a storm below).
            probe
                .ours(self.limiter.hold(request, Hold::Asked(pause)))
                .await;
        }
        let read = self.standing(probe, (ip, host), signal).await;
        let refusal = read.refusal;
        // Amid a burst, only a pause the limiter did not read as a refusal of us is in
        // doubt: one it read so is asked again after the hold, as any refusal of us.
        let pause_in_doubt =
            asked.filter(|p| confirms(*p) && (after_burst || (amid && refusal.is_none())));
        if refusal.is_none() && asked.is_none() && after_burst {
            // One host refused right after its IP answered a burst: a per-client ban
            // (mod_evasive blocks a client for its DOSBlockingPeriod, and every request
            // meanwhile extends it) may have caught only this host's request, and a
            // confirmation at `probe.retry_delay` would be refused by the same ban and
            // make a working site `down`. So the host is held for `rate_limit.backoff`,
            // as if it had said Retry-After; a site that refuses its visitors still
            // refuses then. A wall of refusals (a bot wall on this egress) is no burst.
            probe
                .ours(self.limiter.hold(request, Hold::Ours(self.suspect_hold)))
                .await;
        }
        let refusal = match (refusal, pause_in_doubt) {
            (Some(r), Some(pause)) => {
                probe
                    .ours(self.limiter.hold(request, Hold::Asked(pause)))
                    .await;
                Some(kept_to(r, host, pause))
            }
            (refusal, _) => refusal,
        };
        Heeded {
            amid_our_requests: refused
                && refusal.is_none()
                && self.recent.amid_or_unserved(ip, probe.index, signal),
            refusal,
            pause_in_doubt,
            proof: read.proof,
            alike: read.alike,
            ask_at_once: read.ask_at_once,
        }
    }

    /// A rate limit's own page answering with a success, read as the final answer
    /// (`probe::judge::limit_page_of`): told to the limiter as a refusal by its page
    /// (its answer was told as one that served us before it was read), so a storm of
    /// them holds the IP as a 429 storm does, and the request is asked again after the
    /// hold, once. `None`: the step stands (the judge reads the page as a refusal).
    pub(super) async fn heed_a_limit_page(
        &self,
        probe: &Probe<'_>,
        (host, ip, stamp): (&str, IpAddr, u64),
        step: &Result<super::Step, crate::probe::Outcome>,
        reasked: &mut bool,
        obs: &mut crate::probe::Observation,
    ) -> Option<super::Step> {
        let Ok(super::Step::Answer(answer)) = step else {
            return None;
        };
        crate::probe::judge::limit_page_of(probe.plan, answer)?;
        let page = Signal::Refused(answer.status);
        let heeded = self
            .heed(probe, host, (ip, stamp), answer.status, None, page)
            .await;
        let refusal = heeded.refusal?;
        if (*reasked && !heeded.alike) || refusal.hold.is_zero() {
            obs.refusal = Some(refusal.detail);
            return None;
        }
        Some(super::ask_again_after_the_hold(
            reasked,
            Some(refusal.asked_again),
            obs,
        ))
    }

    /// Whether a pause in doubt (see [`Heeded::pause_in_doubt`]) came from a limit
    /// refusing us: the IP had served us a burst ([`BURST_ANSWERS`], of requests sent
    /// before the refusal, wherever they came back), and its other hosts refused us too
    /// within [`REFUSAL_WINDOW`], before it served any request sent since (then the
    /// refusal, in words). Waits for those answers, at most the window and the probe's
    /// time; the per-IP permit is no longer held.
    pub(super) async fn pause_of_a_limit(
        &self,
        probe: &Probe<'_>,
        host: &str,
        (ip, stamp): (IpAddr, u64),
        pause: Duration,
    ) -> Option<String> {
        let now = Instant::now();
        let came = self.recent.came(ip, probe.index, stamp).unwrap_or(now);
        let until = (now + REFUSAL_WINDOW).min(probe.deadline);
        loop {
            let around = self.recent.around(ip, probe.index, (came, host));
            match (around.served_after, around.refused_near) {
                (0, refused) if refused > 0 && around.burst >= BURST_ANSWERS => {
                    let request = Request::sent(ip, host, &probe.egress.name);
                    probe
                        .ours(self.limiter.hold(request, Hold::Asked(pause)))
                        .await;
                    return Some(format!(
                        "503 Service Unavailable asking a pause right after {ip} answered us, \
                         and {refused} more of its requests refused at once: a limit refusing \
                         us, not the site in maintenance; {host} is left alone for {} s as it \
                         asked (Retry-After)",
                        pause.as_secs()
                    ));
                }
                (0, _) if Instant::now() < until => tokio::time::sleep(LOOK_EVERY).await,
                _ => return None,
            }
        }
    }
}

/// A refusal recognised while its host asked for a pause longer than the probe has: the
/// pause is kept, not asked again after our own hold.
fn kept_to(r: Refusal, host: &str, pause: Duration) -> Refusal {
    Refusal {
        detail: format!(
            "{}; {host} asked for {} s (Retry-After), which is kept",
            r.detail,
            pause.as_secs()
        ),
        ..r
    }
}
