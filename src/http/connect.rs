//! From one hop's URL to an answer: resolve the host, keep the addresses the policy
//! allows ([`pick_addresses`]), then ask them in turn, each counted by the per-IP limiter
//! first, until one answers. [`HttpProber::ask_address`] is the one place a request goes
//! to one candidate address (over rustls, and once more over OpenSSL for a server that
//! speaks only legacy TLS), and [`send`] the one place it is handed to a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::client::Egress;
use super::failure::Allowed;
use super::in_flight::Sending;
use super::issuers::Incomplete;
use super::pin::{Hop, Route};
use super::redirect::Chain;
use super::sites_clock::{DatesMissed, Offset};
use super::socks_watch::watched;
use super::tls;
use super::tried::{not_sent_from_here, Last, Tried};
use super::tunnel::{AskedByName, MendedLine, NoTunnel, SendError};
use super::{fail, HttpProber, Probe};
use crate::dns::{Addresses, DnsError};
use crate::job::Method;
use crate::limit::{Grant, Permit, Request, Signal};
use crate::probe::{policy, Failure, FailureKind, Observation, Outcome, Plan};

/// Addresses of one name tried before the probe gives up on connecting.
const MAX_ADDRESSES: usize = 8;

/// Longest wait for a per-IP limit when the job cannot be deferred (`picket check`, or a
/// job deferred too often): long enough for any sane limit, bounded all the same.
const WAIT_WITHOUT_DEFERRAL: Duration = Duration::from_secs(600);

/// Probe times a request held open is given when asked again after the hold: a tarpit
/// that flagged us (haproxy's `timeout tarpit`) held the first past one probe's time,
/// and answers its 500 within two unless it is longer than that. One request of the IP
/// now and then waits longer still (`outwait`).
const TARPIT_OUTWAIT: u32 = 2;

/// Where one hop may go: its host and port, and the addresses the policy allows.
pub(super) struct Target {
    pub(super) host: String,
    port: u16,
    candidates: Vec<IpAddr>,
    /// The name's IPv6 addresses are still to be asked, when no IPv4 one answers.
    ipv6_unasked: bool,
}

/// The answer of one address, with the per-IP permit held until its body is read.
pub(super) struct Answered {
    pub(super) resp: reqwest::Response,
    pub(super) permit: Permit,
    pub(super) ip: IpAddr,
    /// The answer's stamp among the IP's recent answers (`RecentAnswers::answered`).
    pub(super) stamp: u64,
}

/// What one address did with a hop's request.
enum AtAddress {
    /// It answered: the answer, when its connection was ready, and the permit it was
    /// sent under.
    Answered(reqwest::Response, Instant, Permit),
    /// It failed: the error, how long the request waited for it, the time it had, and
    /// the permit it was sent under while it holds (a question to a neighbour goes on
    /// its slot).
    Failed(SendError, Duration, Allowed, Option<Permit>),
}

/// What every address of one hop is asked: the job's method and headers (credentials
/// only within the origin the job named) and the cookies of the chain so far.
#[derive(Clone)]
struct Ask<'a> {
    plan: &'a Plan,
    chain: &'a Chain,
    cookie: Option<reqwest::header::HeaderValue>,
    /// Over HTTP/1.1 only: the server refused it over HTTP/2.
    http1: bool,
}

impl<'a> Ask<'a> {
    fn new(plan: &'a Plan, chain: &'a Chain) -> Ask<'a> {
        let cookie = chain.cookies.header_for(&chain.url);
        Ask {
            plan,
            chain,
            cookie,
            http1: false,
        }
    }

    /// The egress's client for this request (rustls; HTTP/1.1 only when asked so).
    fn client<'e>(&self, egress: &'e Egress) -> &'e reqwest::Client {
        if self.http1 {
            &egress.http1
        } else {
            &egress.client
        }
    }

    /// The URL of the hop.
    fn url(&self) -> &Url {
        &self.chain.url
    }

    /// The request for `client`, given `timeout` for all of it.
    ///
    /// Where it goes over HTTP/1.1 for sure (plain HTTP; the HTTP/1.1-only clients)
    /// `Host` and `Connection: keep-alive` come first, as browsers write them: hyper
    /// would append `Host` after every other header and write no `Connection`, a head
    /// no browser sends. (Pooling is off: the connection is closed after the answer
    /// all the same.) Over HTTPS otherwise the handshake chooses the version, HTTP/2
    /// has neither line, and hyper adds `Host` for HTTP/1.1.
    fn build(&self, client: &reqwest::Client, timeout: Duration) -> reqwest::RequestBuilder {
        let method = match self.plan.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
        };
        let mut req = client.request(method, self.url().clone()).timeout(timeout);
        let secure = self.url().scheme() == "https";
        if !secure || self.http1 {
            req = req
                .header(reqwest::header::HOST, host_header(self.url()))
                .header(reqwest::header::CONNECTION, "keep-alive");
        }
        for (name, value) in self.plan.headers(secure) {
            if self.chain.sends(name) {
                req = req.header(name, value);
            }
        }
        if let Some(cookie) = &self.cookie {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        req
    }
}

impl HttpProber {
    /// Resolves the host of `url` (hop number `redirects`) and keeps the addresses the
    /// policy allows.
    pub(super) async fn resolve(
        &self,
        url: &Url,
        deadline: Instant,
        redirects: u32,
        obs: &mut Observation,
    ) -> Result<Target, Outcome> {
        let Some(host) = url.host_str().map(str::to_string) else {
            return Err(fail(FailureKind::BadRedirect, format!("{url} has no host")));
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut found = self.lookup(&host, deadline, obs).await?;
        if found.ipv6_unasked && pick_addresses(&found.ips, self.allow_private).is_empty() {
            // Every IPv4 address refused by policy: an IPv6 one may still be allowed.
            found.ips.extend(self.ipv6_of(&host, deadline).await);
            found.ipv6_unasked = false;
        }
        let ips = found.ips;
        // A name, not an address written in the URL (which the policy refuses below).
        let named = matches!(url.host(), Some(url::Host::Domain(_)));
        let sunk = named && found.own && ips.iter().all(IpAddr::is_unspecified);
        if let Some(&first) = ips.first().filter(|_| sunk) {
            // An ad-blocking hosts file of the worker's own host (`0.0.0.0 name`), or
            // `dns.static`: our policy refusing the target, not the site's DNS (hunt S).
            obs.ip = Some(first);
            return Err(fail(
                FailureKind::BlockedTarget,
                format!(
                    "{host} is sunk to {first} by this worker's own /etc/hosts or \
                     dns.static: not asked; remove that line to check it"
                ),
            ));
        }
        match screen(url, &host, &ips, self.allow_private, redirects) {
            Ok(candidates) => Ok(Target {
                host,
                port,
                candidates,
                ipv6_unasked: found.ipv6_unasked,
            }),
            Err(refused) => {
                obs.ip = ips.first().copied();
                Err(Outcome::Failure(refused))
            }
        }
    }

    async fn lookup(
        &self,
        host: &str,
        deadline: Instant,
        obs: &mut Observation,
    ) -> Result<Addresses, Outcome> {
        let dns_start = Instant::now();
        // Boxed: hickory's lookup future is large, and inline it would make every
        // probe's future twice as big for the whole probe, not just its lookup
        // (4.5 → 2.3 KB a probe in flight; docs/BENCHMARKS.md).
        let asked = OnceLock::new();
        let lookup = self.resolver.lookup_noting(host, &asked);
        let lookup = tokio::time::timeout_at(deadline, Box::pin(lookup)).await;
        if obs.dns.is_none() {
            obs.dns = Some(dns_start.elapsed());
        }
        match lookup {
            // Held up by picket: it waited for one of its own lookup slots longer than
            // it was asked (or was never asked). Jobs queued together end together, so
            // each slot freed at the deadline goes to one with no time left.
            // Whether the lookups holding the slots hang on a resolver that answers
            // nothing is asked before this is believed (`engine::unless_ours`).
            Err(_) if queued_longer(dns_start, asked.get()) => {
                obs.unresolved = Some(host.to_string());
                Err(fail(
                    FailureKind::LocalResources,
                    format!(
                        "{host}: not looked up in time: every one of picket's DNS lookups \
                         was busy (dns.max_concurrent)"
                    ),
                ))
            }
            // A lookup the probe's deadline cut short is a lookup that failed, like one
            // the resolver gave up on: the site was never asked, so it is no slow site,
            // and whether our nameservers answer at all tells whose failure it is.
            Err(_) => {
                obs.unresolved = Some(host.to_string());
                Err(fail(
                    FailureKind::DnsFailed,
                    format!("{host}: DNS lookup ran out of time"),
                ))
            }
            Ok(Err(e @ DnsError::LocalResources { .. })) => {
                Err(fail(FailureKind::LocalResources, e.to_string()))
            }
            Ok(Err(e @ DnsError::NotFound { .. })) => Err(fail(FailureKind::Dns, e.to_string())),
            Ok(Err(e)) => {
                obs.unresolved = Some(e.host().unwrap_or(host).to_string());
                Err(fail(FailureKind::DnsFailed, e.to_string()))
            }
            Ok(Ok(found)) => Ok(found),
        }
    }

    /// The IPv6 addresses of `host` left unasked by [`HttpProber::lookup`]; none when
    /// that lookup fails or runs out of time (the IPv4 addresses' failure then stands).
    async fn ipv6_of(&self, host: &str, deadline: Instant) -> Vec<IpAddr> {
        let lookup = Box::pin(self.resolver.lookup_ipv6(host));
        match tokio::time::timeout_at(deadline, lookup).await {
            Ok(Ok(ips)) => ips,
            Ok(Err(e)) => {
                tracing::debug!(host, "no IPv6 address to fall back on: {e}");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// More addresses for a target whose candidates all failed to connect: its IPv6
    /// ones, when they were left unasked, screened by policy like the first.
    async fn more_candidates(&self, target: &mut Target, deadline: Instant) {
        if !std::mem::take(&mut target.ipv6_unasked) {
            return;
        }
        let ipv6 = self.ipv6_of(&target.host, deadline).await;
        let room = MAX_ADDRESSES.saturating_sub(target.candidates.len());
        let fresh: Vec<IpAddr> = pick_addresses(&ipv6, self.allow_private)
            .into_iter()
            .filter(|ip| !target.candidates.contains(ip))
            .take(room)
            .collect();
        target.candidates.extend(fresh);
    }

    /// Asks the target's addresses in turn until one answers: a broken address (a
    /// backend down, a broken address family) is not a broken site.
    pub(super) async fn connect_any(
        &self,
        probe: &mut Probe<'_>,
        chain: &Chain,
        target: &mut Target,
        obs: &mut Observation,
    ) -> Result<Answered, Outcome> {
        let ask = Ask::new(probe.plan, chain);
        // Addresses that refused or did not connect before one answered (or none did).
        let mut tried = Tried::default();
        let mut n = 0;
        while let Some(&ip) = target.candidates.get(n) {
            n += 1;
            obs.ip = Some(ip);
            let addr = SocketAddr::new(ip, target.port);
            let (e, waited, allowed, permit) =
                match self.ask_ip(probe, &ask, &target.host, addr, obs).await? {
                    AtAddress::Answered(resp, ready, permit) => {
                        // One clock per probe: a chain of redirects is one site's.
                        if chain.redirects == 0 {
                            self.clock.note(ip, resp.headers());
                        }
                        let stamp = self.answered(probe, (ip, &chain.url), ready, &tried, obs);
                        return Ok(Answered {
                            resp,
                            permit,
                            ip,
                            stamp,
                        });
                    }
                    AtAddress::Failed(e, waited, allowed, permit) => (e, waited, allowed, permit),
                };
            // A question to a neighbour judges this failure: asked on its slot, right
            // after it (`Permit::on_a_held_slot`). At the IP's next turn, or after a
            // hold another probe began meanwhile, the neighbour's answer would tell of
            // the IP as it is by then: a block of us that ended while the question
            // waited serves the neighbour, and the site's refusal, the block's, would
            // read as its own (hunt 98).
            probe.slot_in_hand = permit.is_some();
            let outcome = self
                .failed(probe, &target.host, addr, (&e, waited, &allowed), obs)
                .await;
            probe.slot_in_hand = false;
            drop(permit);
            let last = if probe.egress.proxy.is_none() && not_sent_from_here(&e, &outcome, ip) {
                Last::NotSent(ip)
            } else {
                Last::Failed(outcome)
            };
            // The egress failing is no address's fault: the next would fail the same.
            let next = e.is_connect()
                && !matches!(&last, Last::Failed(outcome) if outcome.is_egress_failure());
            if next && n == target.candidates.len() {
                self.more_candidates(target, probe.deadline).await;
            }
            if next && n < target.candidates.len() {
                tried.push(ip, last);
                continue;
            }
            let (outcome, failed_ip, note) = tried.gave_up(&target.host, last);
            obs.ip = failed_ip.or(obs.ip);
            obs.notes.extend(note);
            return Err(outcome);
        }
        Err(fail(
            FailureKind::Connect,
            format!("{}: no address could be reached", target.host),
        ))
    }

    /// Asks one address of `host`, counted by the per-IP limiter first: its answer
    /// (asked again once to read a head as browsers do), or its error and how
    /// long the request waited for it. `Err` when the probe must end here: no permit,
    /// no time left, or a connection that reached another address than the counted one.
    async fn ask_ip(
        &self,
        probe: &mut Probe<'_>,
        ask: &Ask<'_>,
        host: &str,
        addr: SocketAddr,
        obs: &mut Observation,
    ) -> Result<AtAddress, Outcome> {
        let mut permit = self.permit(probe, host, addr.ip(), obs).await?;
        let sending = self.sending(probe, addr.ip(), &permit, obs).await;
        self.wait_out_a_tarpit(probe, addr.ip(), obs);
        let remaining = probe.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(fail(
                FailureKind::Timeout,
                format!("no time left after {} redirects", ask.chain.redirects),
            ));
        }
        let asked = Instant::now();
        obs.last_asked = Some(asked.saturating_duration_since(probe.started));
        let at_our_pace = permit.at_our_pace;
        let checked = obs.checking;
        let (result, ready) = self
            .ask_address(probe, ask, (host, addr), remaining, &mut permit, obs)
            .await?;
        // Out no longer: a request asked again below counts anew.
        obs.beside_ours |= sending.came_back() && !probe.plan.alone;
        if result.is_ok() && !obs.beside_ours && !probe.plan.alone {
            obs.beside_ours = self
                .booked_beside(probe, (host, addr.ip()), &permit, ready)
                .await;
        }
        // Our own question to the egress gave the request that much more time.
        probe.deadline += obs.checking.saturating_sub(checked);
        let e = match result {
            Ok(resp) => return Ok(AtAddress::Answered(resp, ready, permit)),
            Err(e) => e,
        };
        if e.http1_required() && !ask.http1 {
            // Refused over HTTP/2 after it was sent: browsers ask again over HTTP/1.1,
            // a second request, counted anew.
            drop(permit);
            obs.notes.push(
                "the server reset the HTTP/2 request asking for HTTP/1.1 \
                 (HTTP_1_1_REQUIRED, as servers do where they renegotiate for a client \
                 certificate): asked again over HTTP/1.1, as browsers do"
                    .to_string(),
            );
            let again = Ask {
                http1: true,
                ..ask.clone()
            };
            return Box::pin(self.ask_ip(probe, &again, host, addr, obs)).await;
        }
        // Not when the request was already read as browsers read it (`read_as_browsers`).
        let mut permit = Some(permit);
        if e.unreadable_head() && !probe.read_as_browsers {
            // The first request's slot is ours no longer: the second asks anew.
            permit = None;
            let mended = self.ask_mended(probe, ask, host, addr, &e, obs);
            if let Some((resp, ready, permit)) = mended.await? {
                return Ok(AtAddress::Answered(resp, ready, permit));
            }
        }
        if let Some(pin) = e.pin_error() {
            // Where the request would go is not where it was counted: nothing is
            // known about the site, and nothing was sent.
            return Err(fail(
                FailureKind::Egress,
                format!("{host}: not probed, picket's own error: {pin}"),
            ));
        }
        let https = ask.url().scheme() == "https";
        let mut allowed = Allowed::new(remaining, probe.plan.connect_timeout, https, obs);
        allowed.at_our_pace = at_our_pace;
        Ok(AtAddress::Failed(e, asked.elapsed(), allowed, permit))
    }

    /// Whether an answer slower than the job's `max_latency` may have waited behind
    /// another worker's request booked right after it, which reached the server first
    /// ([`Limiter::booked_since`]). Only a slow answer asks: a healthy one costs no
    /// call to the shared limiter.
    async fn booked_beside(
        &self,
        probe: &Probe<'_>,
        (host, ip): (&str, IpAddr),
        permit: &Permit,
        ready: Instant,
    ) -> bool {
        let (Some(booked), Some(limit)) = (permit.booked, probe.plan.expect.max_latency_ms) else {
            return false;
        };
        if ready.elapsed() <= Duration::from_millis(limit) {
            return false;
        }
        let req = Request::sent(ip, host, &probe.egress.name);
        self.limiter.booked_since(req, booked).await
    }

    /// The request's place among ours in flight to `ip`: asked alone when the plan says
    /// so (waiting for ours to come back is our time, not the site's, at most the
    /// probe's time), else noting whether others of ours were out beside it, this
    /// process's or, as its `permit` was booked, any worker's.
    async fn sending(
        &self,
        probe: &mut Probe<'_>,
        ip: IpAddr,
        permit: &Permit,
        obs: &mut Observation,
    ) -> Sending<'_> {
        if !probe.plan.alone {
            let (sending, others) = self.in_flight.send(ip, probe.index);
            obs.beside_ours |= others > 0 || permit.beside > 0;
            return sending;
        }
        let began = Instant::now();
        let until = began + probe.plan.timeout;
        let sending = self.in_flight.send_alone(ip, probe.index, until).await;
        let waited = began.elapsed();
        obs.queued += waited;
        probe.deadline += waited;
        obs.notes.push(format!(
            "asked alone, once no other request of ours to {ip} was out, any worker's \
             ({} ms later): a limit queueing what comes too fast answers late what is \
             asked beside others",
            (waited + permit.waited).as_millis()
        ));
        sending
    }

    /// What one request for `plan`'s URL to `addr` says of our standing with its IP,
    /// counted by the per-IP limiter like any: the signal of its answer (its status,
    /// and the pause a 429 or 503 asked) or of its failure. `None` when it was not sent
    /// (no permit, no time) or its failure tells nothing of us.
    pub(super) async fn signal_from(
        &self,
        probe: &mut Probe<'_>,
        host: &str,
        addr: SocketAddr,
    ) -> Option<Signal> {
        let chain = Chain::new(&probe.plan.url);
        let ask = Ask::new(probe.plan, &chain);
        let mut obs = Observation::new(&probe.egress.name);
        match self.ask_ip(probe, &ask, host, addr, &mut obs).await.ok()? {
            AtAddress::Answered(resp, _, _) => {
                let signal = Signal::of_status(resp.status().as_u16());
                Some(signal.asking(super::retry_after(&resp)))
            }
            AtAddress::Failed(e, waited, allowed, _) => {
                let outcome = classify(&e, host, addr, &allowed, probe.egress);
                signal_of(&outcome, &e, probe.egress.route, (waited, &allowed))
            }
        }
    }

    /// The per-IP limiter's permit for `ip`. Waiting for our own limit is not the
    /// site's time: it extends the probe's deadline, by at most `rate_limit.max_wait`
    /// for all the requests of the probe together (a redirect chain on a slowly asked
    /// IP waited that long at every hop, and held its job past a broker's
    /// `consumer_timeout`).
    async fn permit(
        &self,
        probe: &mut Probe<'_>,
        host: &str,
        ip: IpAddr,
        obs: &mut Observation,
    ) -> Result<Permit, Outcome> {
        let max_wait = probe
            .plan
            .max_wait
            .map_or(WAIT_WITHOUT_DEFERRAL, |w| w.saturating_sub(obs.queued));
        let request = Request {
            ip,
            host,
            egress: &probe.egress.name,
            max_wait,
            // A job that cannot be deferred (`picket check`) waits out our own limit for
            // as long as a list needs, but not a site's pause longer than a probe takes.
            max_pause: probe.plan.max_wait.unwrap_or(probe.plan.timeout),
            line: std::mem::take(&mut probe.line),
            // Waiting for every worker's requests to come back is ours, like the local
            // wait in `sending`: at most a probe's time, and never so long that the
            // booking after it would be deferred.
            alone: probe
                .plan
                .alone
                .then(|| probe.plan.timeout.min(max_wait / 2)),
        };
        let asked = Instant::now();
        let grant = if probe.slot_in_hand {
            Grant::Go(Permit::on_a_held_slot())
        } else {
            self.limiter.acquire(request).await
        };
        let mut permit = match grant {
            Grant::Go(p) => p,
            Grant::Defer(wait) if probe.followed == 0 => {
                if probe.plan.max_wait.is_some() {
                    probe.deferred = Some(wait);
                }
                return Err(fail(
                    FailureKind::Throttled,
                    format!(
                        "the per-IP limit of {ip} allows no request for {} ms",
                        wait.as_millis()
                    ),
                ));
            }
            // A chain half followed is not started again later: what it met is told
            // (`unknown`: our limit, not the site, ended it).
            Grant::Defer(_) => {
                return Err(fail(
                    FailureKind::Throttled,
                    format!(
                        "{host}: not asked: this probe's requests waited {} ms for the \
                         per-IP limit of {ip}, as long as one may (rate_limit.max_wait)",
                        obs.queued.as_millis()
                    ),
                ));
            }
            Grant::Paused(left) => {
                return Err(fail(
                    FailureKind::Paused,
                    format!(
                        "{host} asked us (Retry-After) to send it nothing for {} s more, \
                         longer than a check may wait: not asked, as it asked",
                        left.as_secs().max(1)
                    ),
                ))
            }
        };
        crate::metric::throttle_wait(permit.waited);
        obs.queued += permit.waited;
        // After the IP's permit, never before: a slot held while the IP's turn comes
        // would idle while other sites wait for it.
        let slot_wait = max_wait.saturating_sub(permit.waited);
        let slot_waited = egress_slot(probe, &mut permit, slot_wait).await?;
        obs.queued += slot_waited;
        self.recent.asked(ip, probe.index);
        // The limiter's whole time is ours, not the site's: its waiting, and its round
        // trip to Redis, which a stalled Redis stretches to `redis.timeout` (hunt W);
        // and the wait for the egress's connection slot.
        probe.deadline += asked.elapsed().max(permit.waited + slot_waited);
        Ok(permit)
    }

    /// Asks one candidate address, within `remaining` of the probe's time: the one
    /// place a request goes to an address. Returns the result and when the connection
    /// was ready (the start of the server's own time).
    async fn ask_address(
        &self,
        probe: &mut Probe<'_>,
        ask: &Ask<'_>,
        (host, addr): (&str, SocketAddr),
        remaining: Duration,
        permit: &mut Permit,
        obs: &mut Observation,
    ) -> Result<(Result<reqwest::Response, SendError>, Instant), Outcome> {
        let (result, hop, sent) = self.ask_once(probe, ask, host, addr, remaining, obs).await;
        let ready = hop.clock.ready(sent);
        let https = ask.url().scheme() == "https";
        // A server that speaks only TLS that rustls never will (CBC suites) but
        // browsers still do: ask again over OpenSSL. Whatever that finds wrong is not
        // reported in place of the first failure, which says what happened.
        Ok(match result {
            Err(first) if https && first.no_common_tls() => {
                let why = first.cause();
                // Another request: a server that renegotiates for a client certificate
                // read the first one before the handshake failed (review V). Its slot
                // goes back first, or a limit of one in flight would wait for itself.
                permit.release();
                *permit = self.permit(probe, host, addr.ip(), obs).await?;
                match self
                    .ask_legacy(probe, ask, host, addr, (&hop, sent, &why), obs)
                    .await?
                {
                    Some((resp, ready)) => (Ok(resp), ready),
                    None => (Err(first), ready),
                }
            }
            // A chain sent without its intermediate: fetched as browsers fetch it,
            // then the site is asked again.
            Err(first) if https && first.missing_issuer().is_some() => {
                match self
                    .ask_completed(probe, ask, host, addr, &first, obs)
                    .await?
                {
                    Some(answer) => answer,
                    None => (Err(first), ready),
                }
            }
            other => (other, ready),
        })
    }

    /// Asks `addr` again once the chain whose issuer was missing (`first`'s error) is
    /// complete; `None` when it cannot be completed (said in a note); `Err` when our
    /// per-IP limit allowed no fetch of the issuer, or the fetch left no time to ask
    /// again (nothing is known of the site).
    async fn ask_completed(
        &self,
        probe: &mut Probe<'_>,
        ask: &Ask<'_>,
        host: &str,
        addr: SocketAddr,
        first: &SendError,
        obs: &mut Observation,
    ) -> Result<Option<(Result<reqwest::Response, SendError>, Instant)>, Outcome> {
        let Some(missing) = first.missing_issuer() else {
            return Ok(None);
        };
        match self.complete_chain(probe, host, missing).await {
            Ok(()) => {}
            Err(Incomplete::Site(why)) => {
                obs.notes.push(format!(
                    "browsers fetch the missing intermediate from the URL the certificate \
                     names, which failed here: {why}"
                ));
                return Ok(None);
            }
            Err(Incomplete::Limited(why, wait)) => {
                // A job that may wait comes back when the limit has a slot, as one
                // whose own request found none.
                if probe.plan.max_wait.is_some() && probe.followed == 0 {
                    probe.deferred = Some(wait);
                }
                return Err(chain_not_known(
                    host,
                    &format!(
                        "not fetched, our per-IP limit allowed no request in the probe's \
                         time ({why}): whether a browser completes the chain"
                    ),
                ));
            }
            Err(Incomplete::Egress(why)) => {
                return Err(fail(
                    FailureKind::Egress,
                    format!(
                        "egress {} failed fetching the intermediate {host}'s chain lacks, \
                         so whether a browser completes it is not known: {why}",
                        probe.egress.name
                    ),
                ));
            }
            // Asked again at once (`unknown` wants confirmation): the next attempt has
            // time of its own, and what this one fetched.
            Err(Incomplete::NoTime(why)) => {
                return Err(chain_not_known(
                    host,
                    &format!(
                        "not fetched in the probe's time ({why}): whether a browser \
                         completes the chain"
                    ),
                ));
            }
            // Asked again at once too; told apart from the CA's server failing by
            // time (`issuers::failed`).
            Err(Incomplete::Unreached(why)) => {
                return Err(fail(
                    FailureKind::IssuerUnreached,
                    format!(
                        "{host}: its certificate's chain lacks an intermediate, which \
                         browsers fetch from the URL it names; not fetched ({why}): whether \
                         a browser completes the chain is not known"
                    ),
                ));
            }
        }
        let left = probe.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Complete now, so the site would be seen: its chain is not what failed. The
            // time went to the fetch, most often to our limit of the CA's server, which
            // every site it signs asks (a redirect there costs two requests).
            return Err(chain_not_known(
                host,
                "fetched, with no time left in the probe to ask the site again (the fetch \
                 waited for our per-IP limit of its server, or for its answer): what the \
                 site answers",
            ));
        }
        let (result, hop, sent) = self.ask_once(probe, ask, host, addr, left, obs).await;
        Ok(Some((result, hop.clock.ready(sent))))
    }

    /// Sends the hop's request to `addr` within `time` through the probe's egress (its
    /// tunnel for an HTTP proxy, else its rustls client), pinned by a fresh [`Hop`]:
    /// the connection's times go into `obs`, and so does a note when only a fetched
    /// intermediate completed the site's chain. Returns the hop and when it was sent.
    async fn ask_once(
        &self,
        probe: &Probe<'_>,
        ask: &Ask<'_>,
        host: &str,
        addr: SocketAddr,
        time: Duration,
        obs: &mut Observation,
    ) -> (Result<reqwest::Response, SendError>, Arc<Hop>, Instant) {
        let sent = Instant::now();
        let connect_timeout = probe.plan.connect_timeout.min(time);
        let hop = Hop::new(host, addr, connect_timeout, probe.egress.route);
        // The answer's chunks were refused: the route that reads them as browsers do.
        let mended = probe
            .egress
            .mended
            .as_ref()
            .filter(|_| probe.read_as_browsers);
        // HTTP-proxy egress: reqwest would ask the proxy for the name, which the proxy
        // resolves again; the tunnel asks for the counted address (`tunnel/`).
        let result = match mended.or(probe.egress.tunnel.as_ref()) {
            Some(t) => {
                let req = ask.build(&probe.egress.client, time);
                t.send(req, addr, connect_timeout, &hop).await
            }
            None => {
                let sending = send(&hop, ask.client(probe.egress), ask, time);
                watched(sending, probe, &hop, time).await
            }
        };
        hop.clock.write(sent, obs);
        let result = result.map(|mut resp| {
            tls::keep_leaf(&mut resp, &hop);
            self.note_completed(&resp, obs);
            note_by_name(&resp, probe, addr, obs);
            note_mended(&resp, obs);
            resp
        });
        (result, hop, sent)
    }

    /// Asks `addr` again on the tunnel's own HTTP/1 client (directly, or through the
    /// egress's SOCKS5 proxy), which reads a head as browsers do
    /// (`tunnel/mend`), after reqwest's could not read it (`first`); through an HTTP
    /// proxy, on its tunnel reading heads as long as browsers take them. A second
    /// request, so the limiter is asked again. The answer, when its connection was ready,
    /// and its permit; `None` when no time is left, and the first failure stands.
    async fn ask_mended(
        &self,
        probe: &mut Probe<'_>,
        ask: &Ask<'_>,
        host: &str,
        addr: SocketAddr,
        first: &SendError,
        obs: &mut Observation,
    ) -> Result<Option<(reqwest::Response, Instant, Permit)>, Outcome> {
        let egress = probe.egress;
        let Some(route) = egress.mended.as_ref().or(egress.long_heads.as_ref()) else {
            return Ok(None);
        };
        let permit = self.permit(probe, host, addr.ip(), obs).await?;
        let sent = Instant::now();
        let left = probe.deadline.saturating_duration_since(sent);
        if left.is_zero() {
            return Ok(None);
        }
        let connect_timeout = probe.plan.connect_timeout.min(left);
        let hop = Hop::new(host, addr, connect_timeout, egress.route);
        let request = ask.build(&egress.client, left);
        let result = route.send(request, addr, connect_timeout, &hop).await;
        hop.clock.write(sent, obs);
        match result {
            Ok(mut resp) => {
                tls::keep_leaf(&mut resp, &hop);
                obs.notes.push(format!(
                    "the answer's head breaks HTTP's grammar ({}) in a way browsers \
                     forgive: asked again and read as they read it",
                    first.cause()
                ));
                Ok(Some((resp, hop.clock.ready(sent), permit)))
            }
            Err(e) => {
                obs.notes.push(format!(
                    "asked again to read its head as browsers do: {}",
                    e.cause()
                ));
                Ok(None)
            }
        }
    }

    /// Notes an answer whose chain only a fetched intermediate completed.
    fn note_completed(&self, resp: &reqwest::Response, obs: &mut Observation) {
        if tls::leaf(resp).is_some_and(|der| self.issuers.was_completed(der)) {
            obs.notes.push(
                "the server does not send the intermediate certificate that signs its own \
                 (an incomplete chain): browsers fetch it from the URL the certificate names, \
                 as picket did, but curl and most HTTP libraries fail"
                    .to_string(),
            );
        }
    }

    /// Asks `addr` again over OpenSSL, after rustls (its hop, send time and failure in
    /// `first`) failed the handshake for want of something it does not speak. The answer
    /// and when its connection was ready, or nothing when OpenSSL failed too (said in a
    /// note) or no time is left; our clock failing when OpenSSL found the certificate's
    /// dates wrong and the sites' clock says it is ours that is off (review AA).
    async fn ask_legacy(
        &self,
        probe: &Probe<'_>,
        ask: &Ask<'_>,
        host: &str,
        addr: SocketAddr,
        first: (&Arc<Hop>, Instant, &str),
        obs: &mut Observation,
    ) -> Result<Option<(reqwest::Response, Instant)>, Outcome> {
        let sent = Instant::now();
        // Within what is left of the probe's time, like any other step.
        let left = probe.deadline.saturating_duration_since(sent);
        if left.is_zero() {
            return Ok(None);
        }
        let connect_timeout = probe.plan.connect_timeout.min(left);
        let hop = Hop::new(host, addr, connect_timeout, probe.egress.route);
        // OpenSSL's client speaks HTTP/1.1 only.
        let ask = Ask {
            http1: true,
            ..ask.clone()
        };
        let legacy = probe.egress.legacy.now();
        // Through an HTTP proxy, its tunnel to the counted address with OpenSSL's
        // handshake; elsewhere reqwest's OpenSSL client, handed the address.
        let tunnel = (probe.egress.tunnel.as_ref()).and_then(|t| t.over_openssl(legacy.handshake));
        let result = match tunnel {
            Some(t) => {
                let request = ask.build(&legacy.client, left);
                t.send(request, addr, connect_timeout, &hop).await
            }
            None => {
                let sending = send(&hop, &legacy.client, &ask, left);
                watched(sending, probe, &hop, left).await
            }
        };
        match result {
            Ok(resp) => {
                hop.clock.write_legacy(sent, &first.0.clock, first.1, obs);
                // Which of the two it was, OpenSSL does not say.
                obs.notes.push(format!(
                    "rustls could not complete the handshake ({}): the server speaks only \
                     legacy TLS (no TLS 1.3 and no AEAD cipher suite) or renegotiates to ask \
                     for a client certificate, which browsers still accept: answered over \
                     OpenSSL",
                    first.2
                ));
                Ok(Some((resp, hop.clock.ready(sent))))
            }
            // The egress failing under the retry says nothing of the site's TLS.
            Err(e) if e.proxy_failure().is_some() => Err(fail(
                FailureKind::Egress,
                format!(
                    "egress {} failed, so nothing is known about {host} ({addr}) over \
                     OpenSSL, which rustls could not speak with it ({}): {}",
                    probe.egress.name,
                    first.2,
                    e.proxy_failure().unwrap_or_default()
                ),
            )),
            // No connection for the retry, to the address that took rustls's handshake
            // a moment before: nothing is known of its TLS (a way out cut meanwhile
            // shows so), and another attempt may tell.
            Err(e) if e.reached_no_site(hop.clock.connected.get().is_some()) => Err(fail(
                FailureKind::Egress,
                format!(
                    "{host} ({addr}) took a connection for rustls's handshake ({}), but \
                     gave none for asking again over OpenSSL ({}): nothing is known of \
                     its TLS through egress {}",
                    first.2,
                    e.cause(),
                    probe.egress.name
                ),
            )),
            Err(e) => {
                let cause = e.cause();
                // OpenSSL's verify result is said above its error stack, the root.
                let verify = std::iter::successors(Some(e.as_error()), |e| e.source())
                    .find_map(|e| DatesMissed::of_openssl(&e.to_string()));
                let said = match verify {
                    Some(DatesMissed::Expired(_)) => "certificate has expired",
                    _ => "certificate is not yet valid",
                };
                let at = format!("{host} ({addr}): TLS failed over OpenSSL: {said}");
                if let Some(ours) = self.our_clock(verify, &at) {
                    return Err(ours);
                }
                obs.notes.push(format!(
                    "asked again as browsers still would (OpenSSL, TLS 1.2 or later, CBC \
                     suites allowed): {cause}"
                ));
                Ok(None)
            }
        }
    }

    /// What an answer from `ip` tells: the notes on addresses that failed before it,
    /// the answers remembered for a later reset, the first byte's time (which paces the
    /// IP once the answer is known to be no refusal: `HttpProber::paced_by`).
    fn answered(
        &self,
        probe: &Probe<'_>,
        (ip, url): (IpAddr, &Url),
        ready: Instant,
        tried: &Tried,
        obs: &mut Observation,
    ) -> u64 {
        if !tried.is_empty() {
            obs.notes
                .push(format!("{} failed; {ip} answered instead", tried.list()));
        }
        let stamp = self.recent.answered(ip, probe.index, url, ready);
        obs.first_byte = Some(ready.elapsed());
        stamp
    }

    /// The failure a request error (`e`, after `waited`) is; a reset, a connection
    /// refused, timed out or closed without an answer, or a request left unanswered, is
    /// also told to the limiter, which may say the site refuses us (a refused, reset or
    /// closed one is then asked again after the hold: `Probe::refused_on_us`).
    async fn failed(
        &self,
        probe: &mut Probe<'_>,
        host: &str,
        addr: SocketAddr,
        (e, waited, allowed): (&SendError, Duration, &Allowed),
        obs: &mut Observation,
    ) -> Outcome {
        let ip = addr.ip();
        let outcome = self.by_the_sites_clock(e, classify(e, host, addr, allowed, probe.egress));
        if e.no_room() && wait_for_room(probe, &outcome, obs) {
            return outcome;
        }
        if outcome.is_egress_failure() {
            obs.notes.extend(crowd_through(probe.egress, probe.crowd));
        }
        let signal = signal_of(&outcome, e, probe.egress.route, (waited, allowed));
        if let Some(signal) = signal {
            obs.recent_answers = self.recent.count(ip, probe.index);
            let read = self.standing(probe, (ip, host), signal).await;
            obs.notes.extend(read.proof);
            probe.ask_once_more = read.alike;
            if let Some(note) = read.ask_at_once {
                probe.again_at_once(note, obs);
                probe.ask_at_once = true;
            }
            let refusal = read.refusal;
            obs.amid_our_requests =
                refusal.is_none() && self.recent.amid_or_unserved(ip, probe.index, signal);
            // A connection that timed out, or a request dropped without a word, used
            // the probe's time up: nothing is left to ask again with; nor is a refusal
            // that holds nothing worth asking at once. A refused connection costs no
            // time, and a firewall's ban is not lengthened by the connections it
            // refuses: a server that stopped listening (a crashed app server) is told
            // from one after the hold, in this check (hunt Z3).
            let cheap = matches!(
                signal,
                Signal::Closed | Signal::Reset | Signal::ConnectionRefused
            );
            // A request held open is asked again after the hold with time of its own
            // ([`TARPIT_OUTWAIT`]): a limit holding what came too fast lets it through
            // then, a tarpit that flagged us holds it again for the tarpit's whole
            // length and then answers its 500 (a refusal of us), and a backend that
            // hangs behind several hosts of the IP holds it still, which is that site's
            // failure (`AfterHold::SitesUnlessRefused`).
            let held_open = matches!(signal, Signal::HeldOpen(_) | Signal::HeldAtOurPace(_));
            probe.refused_on_us = refusal
                .as_ref()
                .filter(|r| (cheap || held_open) && !r.hold.is_zero())
                .map(|r| r.asked_again.clone());
            probe.tarpit_due = (held_open && probe.refused_on_us.is_some()).then(Instant::now);
            if probe.tarpit_due.is_some() {
                let outwait = probe.plan.timeout.saturating_mul(TARPIT_OUTWAIT);
                probe.deadline = probe.deadline.max(Instant::now() + outwait);
            }
            obs.refusal = refusal.map(|r| r.detail);
        }
        outcome
    }
}

impl HttpProber {
    /// A certificate whose dates failed by our clock and not by the sites' (hunt S: a
    /// worker days off): our clock failing, not the site.
    fn by_the_sites_clock(&self, e: &SendError, outcome: Outcome) -> Outcome {
        let Outcome::Failure(failure) = &outcome else {
            return outcome;
        };
        let missed = e.tls_error().and_then(DatesMissed::of);
        self.our_clock(missed, &failure.detail).unwrap_or(outcome)
    }

    /// Our clock failing, when a certificate's dates `missed` by ours (a TLS failure
    /// told as `detail`) and not by the sites' clock.
    fn our_clock(&self, missed: Option<DatesMissed>, detail: &str) -> Option<Outcome> {
        let missed = missed?;
        let offset = self.clock.offset().filter(|o| missed.explained_by(*o))?;
        Some(fail(
            FailureKind::LocalClock,
            format!(
                "{detail} by this worker's clock, which is {}: by theirs it is valid; set \
                 this worker's time (NTP)",
                Offset(offset)
            ),
        ))
    }
}

/// What a failed request tells the limiter of our standing with the IP, if anything,
/// `allowed` saying how far its connection got before it waited `waited`.
fn signal_of(
    outcome: &Outcome,
    e: &SendError,
    route: Route,
    (waited, allowed): (Duration, &Allowed),
) -> Option<Signal> {
    match outcome {
        Outcome::Failure(Failure {
            kind: FailureKind::Reset,
            ..
        }) => Some(Signal::Reset),
        Outcome::Failure(Failure {
            kind: FailureKind::Connect,
            ..
        }) if e.connection_refused() => Some(Signal::ConnectionRefused),
        Outcome::Failure(Failure {
            kind: FailureKind::Connect,
            ..
        }) if e.closed_before_answer() => Some(Signal::Closed),
        // Only straight to the site is the connect ours: through a SOCKS proxy it
        // also covers the proxy, whose slowness says nothing of the site's IP. An HTTP
        // proxy says when its own connect to the site timed out.
        Outcome::Failure(Failure {
            kind: FailureKind::Timeout,
            ..
        }) if route == Route::Direct => Some(if e.connect_timed_out() || !allowed.tcp_up {
            Signal::TimedOut(waited)
        } else if allowed.sent && waited >= super::client::KEPT_OPEN_AFTER && !e.went_silent() {
            if allowed.at_our_pace {
                Signal::HeldAtOurPace(waited)
            } else {
                Signal::HeldOpen(waited)
            }
        } else {
            Signal::Unanswered(waited)
        }),
        Outcome::Failure(Failure {
            kind: FailureKind::Timeout,
            ..
        }) if e.proxy_connect_timed_out() => Some(Signal::TimedOut(waited)),
        _ => None,
    }
}

/// One of the egress's connection slots (`egress.max_connections`, or the room its
/// proxy taught), held on `permit`, within `max_wait`: how long it took. None for a
/// request on a slot its probe still holds (the question to a neighbour): it would
/// wait for itself. None free in time: a job that may wait is deferred, as one its
/// IP's limit had no slot for, since the egress's room is ours to wait for.
async fn egress_slot(
    probe: &mut Probe<'_>,
    permit: &mut Permit,
    max_wait: Duration,
) -> Result<Duration, Outcome> {
    let began = Instant::now();
    if probe.slot_in_hand {
        return Ok(Duration::ZERO);
    }
    let egress = probe.egress;
    match egress.slots.take(max_wait).await {
        Ok(slot) => {
            probe.crowd = slot.beside;
            permit.keep(slot);
        }
        Err(busy) => {
            if let Some(wait) = probe.plan.max_wait.filter(|_| probe.followed == 0) {
                probe.deferred = Some(wait);
            }
            return Err(fail(FailureKind::Egress, busy.to_string()));
        }
    }
    Ok(began.elapsed())
}

/// The egress's proxy had no room for the request that failed so (`outcome`): the room
/// is learned from the requests of ours out through it, and the request is asked again
/// once one of them ends (a moment later when none were: other clients fill it), if it
/// may be asked again (true).
fn wait_for_room(probe: &mut Probe<'_>, outcome: &Outcome, obs: &mut Observation) -> bool {
    let egress = probe.egress;
    egress.slots.no_room(probe.crowd);
    if probe.room_asks >= super::ROOM_ASKS {
        return false;
    }
    probe.room_asks += 1;
    probe.no_room = true;
    let when = match probe.crowd {
        0 => format!("a moment later (no other request of ours was out through egress {}: other clients fill it)", egress.name),
        n => format!("once one of the {n} other requests of ours out through egress {} ended", egress.name),
    };
    if let Outcome::Failure(failure) = outcome {
        obs.notes
            .push(format!("{}; asked again {when}", failure.detail));
    }
    true
}

/// The `crowd` of other requests of ours out through `egress` when the one that failed
/// was sent, when there was one: a proxy that takes no more clients at once leaves the
/// next waiting past their time, and this tells the operator it may have been ours.
fn crowd_through(egress: &Egress, crowd: usize) -> Option<String> {
    let cap = match egress.slots.cap() {
        Some(n) => format!("egress.max_connections = {n}"),
        None => "no egress.max_connections".to_string(),
    };
    // The direct route has no proxy of ours to crowd.
    (crowd > 0 && egress.proxy.is_some()).then(|| {
        format!(
            "{crowd} other requests of this worker were out through egress {} when it was \
             sent ({cap}): a proxy taking no more clients at once leaves the next waiting",
            egress.name
        )
    })
}

/// Whether a lookup that began at `start` and got picket's own lookup slot at `asked`
/// (never, if `None`) waited for it longer than it was then asked, until now.
fn queued_longer(start: Instant, asked: Option<&Instant>) -> bool {
    asked.is_none_or(|&at| at.saturating_duration_since(start) > at.elapsed())
}

/// Notes an answer whose head the tunnel read as browsers do (an HTTP-proxy egress
/// reads every answer so; the other routes ask again and say so themselves).
fn note_mended(resp: &reqwest::Response, obs: &mut Observation) {
    if let Some(MendedLine(line)) = resp.extensions().get::<MendedLine>() {
        obs.notes.push(format!(
            "the line {line:?} of the answer's head breaks HTTP's grammar in a way \
             browsers forgive: read as they read it"
        ));
    }
}

/// Notes an answer an HTTP proxy was asked for by name, as it refused a tunnel to the
/// counted address.
fn note_by_name(
    resp: &reqwest::Response,
    probe: &Probe<'_>,
    addr: SocketAddr,
    obs: &mut Observation,
) {
    let Some(AskedByName { port, why }) = resp.extensions().get::<AskedByName>() else {
        return;
    };
    let egress = &probe.egress.name;
    obs.notes.push(match why {
        NoTunnel::Refused => format!(
            "egress {egress} refuses a tunnel to the address picket counted ({addr}), so it \
             was asked by name, as browsers ask it, and chose the address itself; let it \
             CONNECT to addresses on port {port} to keep requests on the counted address"
        ),
        NoTunnel::ClosedPlain => format!(
            "egress {egress} closes a plain-http tunnel to the address picket counted \
             ({addr}) without an answer, as a proxy that intercepts TLS does, so it was \
             asked by name, as browsers ask it, and chose the address itself; let it tunnel \
             plain http on port {port} to keep requests on the counted address"
        ),
    });
}

/// `Host` as HTTP/1.1 clients write it: the URL's host (an IPv6 address in brackets),
/// with its port unless it is the scheme's own.
pub(super) fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Hands the request to `client` with `hop` as its pinning context: the one place a
/// request of a probe leaves picket.
async fn send(
    hop: &Arc<Hop>,
    client: &reqwest::Client,
    ask: &Ask<'_>,
    timeout: Duration,
) -> reqwest::Result<reqwest::Response> {
    hop.scope(ask.build(client, timeout).send()).await
}

/// The addresses of `host` (the host of `url`, hop number `redirects`) that may be
/// asked, or why none may.
fn screen(
    url: &Url,
    host: &str,
    ips: &[IpAddr],
    allow_private: bool,
    redirects: u32,
) -> Result<Vec<IpAddr>, Failure> {
    // A name that resolves only to 0.0.0.0 (or ::) is a resolver's sinkhole: no
    // visitor reaches the site, and on Linux dialling it reaches this host.
    if url
        .host()
        .is_some_and(|h| matches!(h, url::Host::Domain(_)))
        && ips.iter().all(IpAddr::is_unspecified)
    {
        return Err(Failure {
            kind: FailureKind::Dns,
            detail: format!(
                "{host} resolves only to {} (a DNS sinkhole): no visitor can reach it",
                ips[0]
            ),
        });
    }
    let candidates = pick_addresses(ips, allow_private);
    if candidates.is_empty() {
        let why = policy::refusal(ips[0], allow_private).unwrap_or("refused");
        let hop = if redirects == 0 {
            String::new()
        } else {
            format!(" (redirect hop {redirects})")
        };
        return Err(Failure {
            kind: FailureKind::BlockedTarget,
            detail: format!(
                "{host} resolves to {} which is {why}; refused by policy{hop}{}",
                ips[0],
                policy::how_to_allow(ips[0])
            ),
        });
    }
    Ok(candidates)
}
/// The addresses to try in turn, as a browser does when a connect fails: every
/// address the policy allows (at most [`MAX_ADDRESSES`]), IPv4 and IPv6 alternating,
/// IPv4 first (a broken AAAA is the commoner fault), each family in the resolver's
/// order. A load-balanced site with one backend down is not down.
pub(super) fn pick_addresses(ips: &[IpAddr], allow_private: bool) -> Vec<IpAddr> {
    let ok = |ip: &&IpAddr| policy::refusal(**ip, allow_private).is_none();
    let mut v4 = ips.iter().filter(|ip| ip.is_ipv4()).filter(ok);
    let mut v6 = ips.iter().filter(|ip| ip.is_ipv6()).filter(ok);
    let mut picked = Vec::new();
    while picked.len() < MAX_ADDRESSES {
        let (a, b) = (v4.next(), v6.next());
        if a.is_none() && b.is_none() {
            break;
        }
        picked.extend(a.into_iter().chain(b).copied());
    }
    picked.truncate(MAX_ADDRESSES);
    picked
}

/// The failure a request error is, in the prober's terms: reqwest's errors as
/// `failure::classify` sorts them, the tunnel's by where they happened.
fn classify(
    e: &SendError,
    host: &str,
    addr: SocketAddr,
    allowed: &Allowed,
    egress: &Egress,
) -> Outcome {
    let (ip, port) = (addr.ip(), addr.port());
    match e {
        SendError::Client(e) => super::failure::classify(e, host, ip, port, allowed, egress),
        SendError::Tunnel(e) => e.classify(&format!("{host} ({ip}:{port})"), allowed, &egress.name),
    }
}

/// Our side kept `host`'s incomplete chain from being completed, or the completed one
/// from being asked: nothing is known of the site (`unknown`, asked again), and `what`
/// says what, ending with what is not known.
fn chain_not_known(host: &str, what: &str) -> Outcome {
    fail(
        FailureKind::Throttled,
        format!(
            "{host}: its certificate's chain lacks an intermediate, which browsers fetch \
             from the URL it names; {what} is not known"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_written_as_http_1_1_clients_write_it() {
        let host = |url: &str| host_header(&Url::parse(url).expect("url"));
        assert_eq!(host("http://site.example/a"), "site.example");
        assert_eq!(host("http://site.example:80/"), "site.example");
        assert_eq!(host("https://site.example:443/"), "site.example");
        assert_eq!(host("http://site.example:8080/"), "site.example:8080");
        assert_eq!(host("http://[2001:db8::1]:8080/"), "[2001:db8::1]:8080");
        assert_eq!(host("http://BÜCHER.example/"), "xn--bcher-kva.example");
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("ip")).collect()
    }

    #[test]
    fn every_allowed_address_is_tried_families_alternating_ipv4_first() {
        let got = pick_addresses(
            &ips(&[
                "2a00:1450::1",
                "192.0.2.1",
                "192.0.2.2",
                "2a00:1450::2",
                "192.0.2.3",
            ]),
            false,
        );
        assert_eq!(
            got,
            ips(&[
                "192.0.2.1",
                "2a00:1450::1",
                "192.0.2.2",
                "2a00:1450::2",
                "192.0.2.3"
            ])
        );
    }

    #[test]
    fn refused_addresses_are_skipped_and_the_list_is_capped() {
        let got = pick_addresses(&ips(&["10.0.0.1", "192.0.2.1"]), false);
        assert_eq!(got, ips(&["192.0.2.1"]));
        assert!(pick_addresses(&ips(&["10.0.0.1", "127.0.0.1"]), false).is_empty());
        let many: Vec<IpAddr> = (1..=20).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        assert_eq!(pick_addresses(&many, false).len(), MAX_ADDRESSES);
    }

    fn refusal(url: &str, list: &[&str], redirects: u32) -> Failure {
        let url = Url::parse(url).expect("url");
        let host = url.host_str().expect("host").to_string();
        screen(&url, &host, &ips(list), false, redirects).expect_err("refused")
    }

    #[test]
    fn a_name_resolving_only_to_the_unspecified_address_is_a_dns_sinkhole() {
        let f = refusal("http://parked.example/", &["0.0.0.0"], 0);
        assert_eq!(f.kind, FailureKind::Dns);
        assert!(f.detail.contains("DNS sinkhole"), "{}", f.detail);
        // An address literal is not a name: it is refused by policy instead.
        let f = refusal("http://0.0.0.0/", &["0.0.0.0"], 0);
        assert_eq!(f.kind, FailureKind::BlockedTarget);
    }

    #[test]
    fn a_refused_address_names_the_redirect_hop_that_led_there() {
        let first = refusal("http://a.example/", &["10.0.0.1"], 0);
        assert_eq!(first.kind, FailureKind::BlockedTarget);
        assert!(!first.detail.contains("redirect hop"), "{}", first.detail);
        let later = refusal("http://a.example/", &["10.0.0.1"], 2);
        assert!(
            later.detail.contains("(redirect hop 2)"),
            "{}",
            later.detail
        );
    }
}
