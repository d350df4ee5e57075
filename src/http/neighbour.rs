//! The question to a neighbour. After a hold, a 503 (asking a pause or not), a close or a
//! reset from an IP that answered nothing since is one of two things: the site failing
//! (a shared server whose backend died answers every host so, the first request after a
//! pause too; a site in maintenance says when to come back), or a limit whose memory
//! outlasts our hold (haproxy's `http_req_rate(10s)`, which weighs the last period into
//! the current one; nginx's `limit_req` in requests a minute), which refuses
//! the first request after it too. A host of the same IP that served us lately, asked
//! once right then, tells them apart: it answers, and the IP serves us, so the refusal
//! is the site's own; it is refused alike, and the IP still refuses us, whatever the
//! site (`Signal::NeighbourToo`: held again, until the holds add up to
//! `rate_limit.limit_memory`). One answer is not yet proof: a block of the IP may end
//! between the site's request and the neighbour's, and the one request it serves then
//! may arm it again (the CRS's burst counter outlives its block; a ModSecurity
//! collection written by two requests at once loses the block and regains it). So the
//! site is asked again at once, and its refusal is its own only when a neighbour answers
//! right after that refusal too: a refusal between two answers of its IP. The
//! neighbour's answer is a question of ours, not a
//! check: it is told to no limiter's standing, so a broken site beside working ones is
//! asked about afresh each time. A close once a hold is over, with nothing answered
//! since, is asked about before the limiter reads it: the limiter may read it as a
//! block outlasting the hold and hold the IP again, which a neighbour answering right
//! then disproves.

use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use super::{HttpProber, Probe};
use crate::job::{Expect, Method};
use crate::limit::{Refusal, Request, Signal};
use crate::probe::{Line, Plan};

/// How the limiter read an answer ([`HttpProber::standing`]).
pub(super) struct Read {
    /// The answer refuses *us*: the IP is held.
    pub(super) refusal: Option<Refusal>,
    /// A neighbour answered right then, as one did after the refusal before (the
    /// request asked again at once): the refusal is the site's own, and this says so.
    pub(super) proof: Option<String>,
    /// The refusal is ours because a neighbour was refused alike: a limit remembering
    /// us past the hold, whose request is asked again after this hold too
    /// ([`Probe::ask_once_more`](super::Probe)).
    pub(super) alike: bool,
    /// A neighbour answered right after the probe's first refusal: the request is asked
    /// again at once ([`Probe::ask_at_once`](super::Probe)), this note saying why.
    pub(super) ask_at_once: Option<String>,
}

impl From<Option<Refusal>> for Read {
    fn from(refusal: Option<Refusal>) -> Read {
        Read {
            refusal,
            proof: None,
            alike: false,
            ask_at_once: None,
        }
    }
}

/// What a neighbour said.
pub(super) struct Neighbour {
    /// Its host name.
    pub(super) host: String,
    /// How its IP answered it.
    pub(super) signal: Signal,
}

/// What a neighbour's answer tells of the IP.
#[derive(Debug, PartialEq, Eq)]
enum Says {
    /// It answered, and not with a refusal: the IP serves us.
    ServesUs,
    /// Refused as a limit refuses a client (a 403, 429 or 503, with a pause asked or
    /// not, a close, a reset): the IP turns us away. A whole server gone into
    /// maintenance since it served this neighbour lately answers so too, and is held
    /// only until the holds outlast a limit's memory.
    RefusesUs,
    /// Neither: a request held open or left unanswered, or a connection refused, may
    /// be either.
    Nothing,
}

impl Neighbour {
    /// What its answer tells of the IP.
    fn says(&self) -> Says {
        match self.signal {
            Signal::Fine => Says::ServesUs,
            Signal::Refused(_)
            | Signal::Paused(_)
            | Signal::Errored(_)
            | Signal::Closed
            | Signal::Reset => Says::RefusesUs,
            _ => Says::Nothing,
        }
    }

    /// `refusal`, telling that this neighbour was refused alike.
    fn refused_too(&self, refusal: Refusal) -> Refusal {
        let alike = format!(
            "{}, a host of the same IP that served us lately, was refused alike right then \
             ({}): a limit still counting our requests",
            self.host,
            self.said()
        );
        Refusal {
            detail: format!("{}; {alike}", refusal.detail),
            asked_again: format!("{}; {alike}", refusal.asked_again),
            ..refusal
        }
    }

    /// What its answer right after `host`'s refusal tells: the refusal is its own when
    /// a neighbour answered after the probe's refusal before too (`probe`'s request
    /// asked again at once); otherwise the request is asked again at once.
    fn served(&self, probe: &Probe<'_>, (ip, host): (IpAddr, &str)) -> Read {
        if !probe.neighbour_answered {
            return Read {
                ask_at_once: Some(format!(
                    "{}, a host of the same IP {ip} that served us lately, answered right \
                     after {host} refused us: {host} asked again at once, since a block \
                     of {ip} may have ended between the two",
                    self.host
                )),
                ..Read::from(None)
            };
        }
        Read {
            proof: Some(format!(
                "{}, a host of the same IP {ip} that served us lately, answered right \
                 then, as one did after {host}'s refusal before: {ip} serves us, and \
                 {host}'s refusal is its own",
                self.host
            )),
            ..Read::from(None)
        }
    }

    /// How it was refused, in words.
    fn said(&self) -> String {
        match self.signal {
            Signal::Closed => "its connection closed without an answer".to_string(),
            Signal::Reset => "its connection reset".to_string(),
            signal => format!("status {}", signal.code()),
        }
    }
}

impl HttpProber {
    /// Tells the limiter how `ip` answered `host`; `Some` when it refuses *us*. A
    /// limit-like refusal that a backed-off IP's limiter reads as the site's (nothing
    /// answered since the hold) is asked about once more: a neighbour refused alike
    /// makes it a refusal of us, and one that answered is the proof that it is not.
    pub(super) async fn standing(
        &self,
        probe: &Probe<'_>,
        (ip, host): (IpAddr, &str),
        signal: Signal,
    ) -> Read {
        let request = Request::sent(ip, host, &probe.egress.name);
        let after_a_hold = signal.a_neighbour_may_tell() && self.limiter.level(&request) > 0;
        // A close once a hold is over, with nothing answered since, reads to the
        // limiter as a block outlasting the hold (CRS's drop, haproxy's `reject` on a
        // ban flag), and the limiter would step the hold up before a neighbour could
        // tell: asked about first. Such a block closes every connection of ours, where
        // a host closing its own (nginx's `return 444` for a site whose configuration
        // is gone) closes alone (review AF). During the hold (the burst's requests
        // coming back), or once the IP answered since, a close may be a limit refusing
        // what is still too fast, and a neighbour it let through a moment later
        // proves nothing.
        let asked_first = if signal == Signal::Closed && self.limiter.quiet_after_hold(&request) {
            let neighbour = Box::pin(self.ask_a_neighbour(probe, ip, host)).await;
            if let Some(serving) = neighbour.as_ref().filter(|n| n.says() == Says::ServesUs) {
                return serving.served(probe, (ip, host));
            }
            Some(neighbour)
        } else {
            None
        };
        let refusal = probe.ours(self.limiter.answered(request, signal)).await;
        if refusal.is_some() || !after_a_hold {
            return Read::from(refusal);
        }
        let neighbour = match asked_first {
            Some(asked) => asked,
            // Boxed: the question's request is a future as large as a hop's, and only
            // this rare path needs it.
            None => Box::pin(self.ask_a_neighbour(probe, ip, host)).await,
        };
        let Some(neighbour) = neighbour else {
            return Read::from(None);
        };
        match neighbour.says() {
            Says::ServesUs => neighbour.served(probe, (ip, host)),
            Says::Nothing => Read::from(None),
            Says::RefusesUs => {
                let again = Signal::NeighbourToo(signal.code());
                let refusal = probe.ours(self.limiter.answered(request, again)).await;
                Read {
                    alike: refusal.is_some(),
                    ..Read::from(refusal.map(|r| neighbour.refused_too(r)))
                }
            }
        }
    }

    /// Asks a host of `ip` other than `host` that served us lately (through the
    /// probe's egress) its page once, with the probe's time; `None` when none is known
    /// or it was not asked (no permit in the probe's time).
    pub(super) async fn ask_a_neighbour(
        &self,
        probe: &Probe<'_>,
        ip: IpAddr,
        host: &str,
    ) -> Option<Neighbour> {
        let url = self.recent.neighbour(ip, probe.index, host)?;
        let neighbour = url.host_str()?.to_string();
        let addr = SocketAddr::new(ip, url.port_or_known_default()?);
        // Only the browser's headers: the job's own (its credentials) are its site's.
        let plan = Plan {
            url,
            method: Method::Get,
            job_headers: Vec::new(),
            expect: Expect::default(),
            max_wait: Some(probe.plan.timeout),
            line: Line::Outside,
            alone: false,
            ..probe.plan.clone()
        };
        let mut asking = Probe {
            plan: &plan,
            egress: probe.egress,
            index: probe.index,
            started: Instant::now(),
            deadline: Instant::now() + plan.timeout,
            deferred: None,
            line: Line::Outside,
            refused_on_us: None,
            tarpit_due: None,
            // Not the job's first request: a busy limit ends the question, deferring nothing.
            followed: 1,
            read_as_browsers: false,
            slot_in_hand: probe.slot_in_hand,
            crowd: probe.crowd,
            // One question, never asked again.
            no_room: false,
            room_asks: super::ROOM_ASKS,
            ask_once_more: false,
            neighbour_answered: false,
            ask_at_once: false,
            ours_past_deadline: Default::default(),
        };
        let signal = self.signal_from(&mut asking, &neighbour, addr).await?;
        Some(Neighbour {
            host: neighbour,
            signal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Only an answer is proof that the IP serves us: a neighbour whose request was
    /// held open or left unanswered proves nothing, and the site's refusal is read as
    /// the limiter reads it, without a claim that the neighbour answered.
    #[test]
    fn only_an_answer_proves_the_ip_serves_us_and_only_a_refusal_that_it_does_not() {
        let says = |signal| {
            Neighbour {
                host: "b.test".into(),
                signal,
            }
            .says()
        };
        assert_eq!(says(Signal::Fine), Says::ServesUs);
        for refused in [
            Signal::Refused(503),
            Signal::Refused(403),
            Signal::Paused(503),
            Signal::Closed,
            Signal::Reset,
        ] {
            assert_eq!(says(refused), Says::RefusesUs, "{refused:?}");
        }
        let wait = Duration::from_secs(5);
        for nothing in [
            Signal::HeldOpen(wait),
            Signal::Unanswered(wait),
            Signal::TimedOut(wait),
            Signal::ConnectionRefused,
        ] {
            assert_eq!(says(nothing), Says::Nothing, "{nothing:?}");
        }
    }
}
