//! The one place that talks HTTP to sites: a [`Plan`] in, an [`Observation`] out.
//!
//! Each hop is resolved here, checked against the address policy, counted by the
//! per-IP limiter, and then requested from exactly that address: the reqwest clients
//! (one per egress and TLS mode, built once) have pooling off and are pinned per request
//! by a resolver and a connector layer that read the hop from the task (`pin`), so
//! neither a second DNS answer nor a stale pooled connection can change where the
//! request goes or fake a failure, and a connection that reached another peer is our
//! error, never the site's. Redirects are followed here, hop by hop, for the same reasons.
//!
//! # Layout
//! `follow` (here) is a loop over hops; each hop is the same steps, each in its room:
//! - `connect`: resolve and screen by policy (`pick_addresses`), then ask the addresses
//!   in turn, each after its per-IP permit and a connection `slots` of its egress grants
//!   (`egress.max_connections`); `ask_address` is the one place a request
//!   goes to one address (rustls, then OpenSSL for legacy TLS), `send` the one place it
//!   is handed to a client.
//! - here: the proxy's own answers (`proxy_refusal`), `Retry-After` and the limiter's
//!   standing signals, then the redirect decision or the final answer.
//! - `redirect`: the chain with no I/O: `Chain::decide` (follow, final, or why not),
//!   the cookie jar, and which of the job's headers still go (credentials by origin).
//! - `body`: reading, inflating and decoding the final answer's body.
//! - `client`: the shared clients per egress and TLS mode; `tls`: roots, extra CA and
//!   certificate days-left; `issuers`: chains sent incomplete, completed as browsers do; `pin` and `phase`: pinning and timing of a connection;
//!   `failure`: a request error as a failure; `recent`: answers kept for a later reset;
//!   `lag`: how late our own event loop runs, told with each observation.
//! - `tunnel/`: requests through HTTP proxies, sent to the counted address (`CONNECT
//!   ip:port`), in place of `send`'s client; its `SendError` is either path's failure.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use url::Url;

use crate::config::{EgressSettings, TlsSettings};
use crate::dns::{DnsError, Resolver};
use crate::engine::{Attempt, Prober};
use crate::limit::{Limiter, Permit, Signal};
use crate::probe::{Answer, Failure, FailureKind, Observation, Outcome, Plan};

mod body;
mod client;
mod connect;
mod failure;
mod head;
mod heed;
mod in_flight;
mod issuers;
mod lag;
mod neighbour;
mod outwait;
mod phase;
mod pin;
mod recent;
mod redirect;
mod sites_clock;
mod slots;
mod socks_watch;
mod tls;
mod tried;
mod tunnel;

use client::Egress;
// pin's tests build a bare client the way every client is built.
#[cfg(test)]
use client::builder;
use connect::Answered;
use lag::LagWatch;
use outwait::Outwaits;
use pin::PinnedResolver;
use recent::RecentAnswers;
use redirect::{Chain, Next};
use sites_clock::SitesClock;
pub use tls::tls_config;

/// Something that stops the prober from being built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The extra CA file could not be read or holds no certificate.
    #[error("tls.extra_ca_file {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A proxy URL reqwest does not accept.
    #[error("egress {name}: proxy not usable: {message}")]
    Proxy {
        /// The egress.
        name: String,
        /// reqwest's words.
        message: String,
    },
    /// DNS could not be set up.
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// How often one probe is asked again after the egress's proxy said it had no room for
/// another client: the room learned then is for ours alone, other clients of the proxy
/// may take what ours free, and the room grows by trying one more. Each time waits
/// for our own slot, within the time our waits may take (`rate_limit.max_wait`).
const ROOM_ASKS: u8 = 4;

/// The pause before a request a proxy had no room for is asked again: a proxy counts a
/// connection of ours until it has seen it close, a moment after we closed it.
const ROOM_PAUSE: Duration = Duration::from_millis(100);

/// One probe's fixed parts: what is asked, through which egress, until when.
struct Probe<'a> {
    plan: &'a Plan,
    egress: &'a Egress,
    /// The egress's place in the list, which the remembered answers are kept by.
    index: usize,
    /// When the attempt began: [`Observation::last_asked`] counts from it.
    started: Instant,
    /// When the probe's time is up; our own waits for the per-IP limit extend it.
    deadline: Instant,
    /// The per-IP limit asked to send the job back after this wait (a deferral).
    deferred: Option<Duration>,
    /// Where the next request stands in its IP's line of deferred jobs: the plan's for
    /// the first request, outside it for every later one.
    line: crate::probe::Line,
    /// The last request's connection was refused, reset or closed without an answer,
    /// and the limiter took that for a refusal of us (a firewall's REJECT, nginx's 444
    /// for `limit_req`, haproxy's `reject`): the URL is asked again once after the
    /// hold, as after a 503. Holds the
    /// refusal as told once asked again ([`Refusal::asked_again`]).
    refused_on_us: Option<String>,
    /// The request asked again after the hold follows requests held open, the last of
    /// them given up at this instant: it may wait out a tarpit (`outwait`).
    tarpit_due: Option<Instant>,
    /// Redirects followed so far: a chain half followed is not deferred to start again.
    followed: u32,
    /// The URL is asked again on the egress's route that reads chunks as browsers do,
    /// after hyper refused its answer's chunks ([`read_as_browsers`]).
    read_as_browsers: bool,
    /// The probe holds its IP's slot for an answer whose body is unread (a refusal being
    /// heeded) or for a request that failed (its failure being read): a question to a
    /// neighbour now goes on that slot, right after the answer it judges
    /// ([`Permit::on_a_held_slot`]).
    slot_in_hand: bool,
    /// Other requests of this process that were out through the egress when the last
    /// request took its slot: a proxy that takes no more clients at once leaves the
    /// next waiting, and a failure of the egress tells the crowd it came in.
    crowd: usize,
    /// The egress's proxy said it had no room for the last request: it is asked again
    /// after [`ROOM_PAUSE`], once one of ours through the egress ends ([`ROOM_ASKS`]
    /// times at most).
    no_room: bool,
    /// How often the probe was asked again so.
    room_asks: u8,
    /// The last refusal was taken for ours because a neighbour was refused alike (a
    /// limit still counting us past the hold): the request is asked again after this
    /// hold too, though it was asked again once already. Bounded: such holds end once
    /// they add up to `rate_limit.limit_memory`.
    ask_once_more: bool,
    /// A neighbour answered right after a refusal of this probe's request
    /// ([`neighbour::Read::ask_at_once`]): a neighbour's answer after the next refusal
    /// proves it the site's own.
    neighbour_answered: bool,
    /// The request is asked again at once, a neighbour having answered right after its
    /// refusal.
    ask_at_once: bool,
    /// Time spent past the deadline waiting on our own adapters (the shared limiter's
    /// Redis, told of a failure), in nanoseconds: no lag of our event loop.
    ours_past_deadline: std::sync::atomic::AtomicU64,
}

impl Probe<'_> {
    /// Awaits `step`, a call to one of our own adapters, noting how much of it ran past
    /// the deadline: the attempt ends that much later than its last timer fired, and
    /// that is neither the site's time nor our timers running late.
    async fn ours<T>(&self, step: impl std::future::Future<Output = T>) -> T {
        let began = Instant::now();
        let out = step.await;
        let past = Instant::now().saturating_duration_since(began.max(self.deadline));
        let nanos = u64::try_from(past.as_nanos()).unwrap_or(u64::MAX);
        self.ours_past_deadline
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        out
    }

    /// Notes that the request is asked again at once, `note` saying why: a neighbour
    /// answered right after its refusal, and the refusal is the site's own only if one
    /// answers right after the next refusal too ([`neighbour`]). The question is ours:
    /// the request asked again has time of its own (hunt 98: it waited for its turn
    /// past the probe's time, and "no time left" was a `down`).
    fn again_at_once(&mut self, note: String, obs: &mut Observation) {
        obs.notes.push(note);
        self.neighbour_answered = true;
        self.deadline = self.deadline.max(Instant::now() + self.plan.timeout);
    }

    /// How long the attempt went on after its deadline for anything but our own
    /// adapters ([`Self::ours`]): a timer that fired late.
    fn overran(&self) -> Duration {
        let ours = self
            .ours_past_deadline
            .load(std::sync::atomic::Ordering::Relaxed);
        Instant::now()
            .saturating_duration_since(self.deadline)
            .saturating_sub(Duration::from_nanos(ours))
    }
}

/// Where a hop leaves the chain.
enum Step {
    /// Ask again: the next hop of a redirect.
    Again,
    /// Ask the same URL again after a hold (the IP's, or our wait for room at the
    /// egress's proxy): nothing answered.
    AfterHold,
    /// The final answer.
    Answer(Box<Answer>),
}

/// What the prober needs to know of the targets beside how to reach them.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    /// Loopback, private and link-local addresses may be probed (`targets.allow_private`).
    pub allow_private: bool,
    /// How long one host that refused us right after its IP answered a burst is held
    /// before it is asked again (`rate_limit.backoff`).
    pub suspect_hold: Duration,
}

/// Probes sites over HTTP(S).
pub struct HttpProber {
    resolver: Resolver,
    limiter: Arc<dyn Limiter>,
    allow_private: bool,
    egress: Vec<Egress>,
    recent: RecentAnswers,
    /// Our requests to each IP in flight now (`in_flight`).
    in_flight: in_flight::InFlight,
    /// Which IPs' requests waited out a tarpit lately (`outwait`).
    outwaits: Outwaits,
    /// What the sites' clocks say of ours (`sites_clock`).
    clock: SitesClock,
    /// How long a host that alone refused us right after its IP answered a burst is
    /// held before it is asked again (`rate_limit.backoff`; see [`HttpProber::heed`]).
    suspect_hold: Duration,
    /// Intermediates fetched for sites that send their chain incomplete (`issuers`).
    issuers: Arc<issuers::Issuers>,
    /// The watch over our own event loop, started with the first probe (on the runtime
    /// that probes).
    lag: std::sync::OnceLock<LagWatch>,
}

impl HttpProber {
    /// A prober for the given egress list, sharing `resolver` and `limiter`.
    ///
    /// # Errors
    /// See [`SetupError`].
    pub fn new(
        resolver: Resolver,
        limiter: Arc<dyn Limiter>,
        tls_settings: &TlsSettings,
        egress: &[EgressSettings],
        targets: Targets,
    ) -> Result<HttpProber, SetupError> {
        let (tls, issuers, trust) = tls::trust(tls_settings)?;
        let resolve: Arc<dyn reqwest::dns::Resolve> =
            Arc::new(PinnedResolver::new(resolver.clone()));
        let egress = egress
            .iter()
            .map(|e| Egress::new(e, &resolve, &tls, &trust))
            .collect::<Result<Vec<_>, SetupError>>()?;
        Ok(HttpProber {
            resolver,
            limiter,
            allow_private: targets.allow_private,
            egress,
            recent: RecentAnswers::default(),
            in_flight: in_flight::InFlight::default(),
            outwaits: Outwaits::default(),
            clock: SitesClock::default(),
            suspect_hold: targets.suspect_hold,
            issuers,
            lag: std::sync::OnceLock::new(),
        })
    }

    async fn observe_with(&self, plan: &Plan, egress: &Egress, index: usize) -> Attempt {
        let lag = self.lag.get_or_init(LagWatch::start);
        let start = Instant::now();
        let mut obs = Observation::new(&egress.name);
        let mut probe = Probe {
            plan,
            egress,
            index,
            started: start,
            deadline: start + plan.timeout,
            deferred: None,
            refused_on_us: None,
            tarpit_due: None,
            followed: 0,
            line: plan.line,
            read_as_browsers: false,
            slot_in_hand: false,
            crowd: 0,
            no_room: false,
            room_asks: 0,
            ask_once_more: false,
            neighbour_answered: false,
            ask_at_once: false,
            ours_past_deadline: Default::default(),
        };
        let outcome = self.follow(&mut probe, &mut obs).await;
        if let Some(wait) = probe.deferred {
            return Attempt::Deferred(wait);
        }
        obs.outcome = outcome;
        obs.total = start.elapsed();
        // Nothing runs past the deadline but a timer that fired late, or a call to our
        // own adapters (`Probe::ours`): how long the attempt went on after it for the
        // former is lag too, whatever thread the watch ticks on.
        obs.lag = lag.worst_since(start).max(probe.overran());
        Attempt::Observed(obs)
    }

    /// Follows the plan's URL hop by hop (resolve, connect, read the answer) to the
    /// final answer or the failure that ends the probe.
    async fn follow(&self, probe: &mut Probe<'_>, obs: &mut Observation) -> Outcome {
        let mut chain = Chain::new(&probe.plan.url);
        // A refusal of us is asked again once, after the IP's hold.
        let mut reasked = false;
        // The plain-HTTP failure a hop asked again over HTTPS stands for, until HTTPS
        // answers: when it fails too, browsers fall back and show that failure.
        let mut fallback: Option<Outcome> = None;
        // The site's time of the plain-HTTP hop asked again over HTTPS.
        let mut plain_took = Duration::ZERO;
        loop {
            probe.followed = chain.redirects;
            let began = (Instant::now(), obs.queued + obs.checking);
            let step = self.hop(probe, &mut chain, &mut reasked, obs).await;
            let took = hop_time(began, obs);
            // A request turned away (refused, or held open by a tarpit) and asked again
            // after the hold: the defence's time; the answer asked again is the site's.
            if matches!(step, Ok(Step::AfterHold)) {
                obs.set_aside += took;
            }
            // The upgrade answered (a page or a redirect); a refusal of it asked again
            // after the hold still stands for the plain-HTTP failure (review AC).
            if fallback.is_some() && matches!(step, Ok(Step::Again | Step::Answer(_))) {
                crate::metric::https_upgrade(true);
                fallback = None;
                // Browsers asked HTTPS first: nobody waited for port 80.
                obs.set_aside += plain_took;
            }
            match step {
                Ok(Step::Again | Step::AfterHold) => {}
                Ok(Step::Answer(answer)) => return Outcome::Answer(*answer),
                Err(failure) => {
                    if let Some(end) = upgrade_or_end(&mut chain, failure, &mut fallback, obs) {
                        return end;
                    }
                    plain_took = took;
                    // A browser asks HTTPS first, so its answer never waits behind a
                    // port 80 that hung: the HTTPS ask is a request with time of its
                    // own, not what the plain one left (none, when it timed out).
                    probe.deadline = probe.deadline.max(Instant::now() + probe.plan.timeout);
                }
            }
        }
    }

    /// One hop of the chain: the answer of [`Chain::url`], or the next hop to ask.
    async fn hop(
        &self,
        probe: &mut Probe<'_>,
        chain: &mut Chain,
        reasked: &mut bool,
        obs: &mut Observation,
    ) -> Result<Step, Outcome> {
        let mut target = self
            .resolve(&chain.url, probe.deadline, chain.redirects, obs)
            .await?;
        let answered = self.connect_any(probe, chain, &mut target, obs).await;
        let at_once = std::mem::take(&mut probe.ask_at_once);
        let Answered {
            resp,
            permit,
            ip,
            stamp,
        } = match answered {
            // Our own wait for room at the proxy, then the same request.
            Err(_) if std::mem::take(&mut probe.no_room) => {
                tokio::time::sleep(ROOM_PAUSE).await;
                obs.queued += ROOM_PAUSE;
                probe.deadline += ROOM_PAUSE;
                return Ok(Step::AfterHold);
            }
            // A neighbour answered right after the refusal: asked again at once.
            Err(_) if at_once => return Ok(Step::AfterHold),
            Err(_)
                if probe.refused_on_us.is_some()
                    && (!*reasked || std::mem::take(&mut probe.ask_once_more)) =>
            {
                // The request is asked again: its answer, not the refusal, judges.
                obs.refusal = None;
                let refusal = probe.refused_on_us.take();
                return Ok(ask_again_after_the_hold(reasked, refusal, obs));
            }
            answered => answered?,
        };
        if let Some(refusal) = proxy_refusal(probe.egress, &chain.url, &resp) {
            // The proxy answered for itself: nothing is known about the site.
            return Err(fail(FailureKind::Egress, refusal));
        }
        let status = resp.status().as_u16();
        // A redirect is followed even when the job lists its status: `expect.status`
        // names the answers of the page a browser lands on (as for blackbox_exporter,
        // Gatus and Uptime Kuma), and the contract's own example lists 301 beside a
        // result that followed one (hunt U).
        let expected_here = !redirect::is_followed(status)
            && probe
                .plan
                .expect
                .status
                .as_ref()
                .is_some_and(|s| s.contains(&status));
        let asked = retry_after(&resp);
        let (reply, signal) = if expected_here {
            (Reply::Unread(resp, permit), Signal::Fine)
        } else {
            read_if_error(resp, permit, probe.plan, chain, self.clock.now()).await?
        };
        let signal = signal.asking(asked);
        self.paced_by(probe, &target.host, ip, signal, obs.first_byte);
        probe.slot_in_hand = matches!(reply, Reply::Unread(..));
        let heeded = self
            .heed(probe, &target.host, (ip, stamp), status, asked, signal)
            .await;
        probe.slot_in_hand = false;
        obs.amid_our_requests = heeded.amid_our_requests;
        obs.notes.extend(heeded.proof);
        if let Some(note) = heeded.ask_at_once {
            probe.again_at_once(note, obs);
            return Ok(Step::AfterHold);
        }
        if let Some(refusal) = heeded.refusal {
            // Asked again once after a hold; a refusal that holds nothing (the same host
            // again while its neighbours answer) would only be asked at once, and one
            // that asked for a longer pause than the probe has is kept to.
            let may_ask_again = !*reasked || heeded.alike;
            if may_ask_again && !refusal.hold.is_zero() && heeded.pause_in_doubt.is_none() {
                let told = reply.naming_its_firewall(refusal.asked_again);
                return Ok(ask_again_after_the_hold(reasked, Some(told), obs));
            }
            obs.refusal = Some(reply.naming_its_firewall(refusal.detail));
        }
        let (resp, permit) = match reply {
            Reply::Read(answer) => return Ok(Step::Answer(Box::new(answer))),
            Reply::Unread(resp, permit) => (resp, permit),
        };
        if redirect::is_followed(status) {
            let next = chain.decide(status, resp.headers(), probe.plan.max_redirects);
            obs.notes.extend(chain.take_hsts_note());
            match next {
                Next::Follow => return Ok(Step::Again),
                Next::Fail(failure) => return Err(Outcome::Failure(failure)),
                Next::Final => {}
            }
        }
        let step = last_hop(resp, permit, probe, chain, self.clock.now(), obs).await;
        let at = (target.host.as_str(), ip, stamp);
        if let Some(again) = self.heed_a_limit_page(probe, at, &step, reasked, obs).await {
            return Ok(again);
        }
        if let Some(pause) = heeded.pause_in_doubt.filter(|_| obs.refusal.is_none()) {
            obs.refusal = self
                .pause_of_a_limit(probe, &target.host, (ip, stamp), pause)
                .await;
        }
        step
    }
}

/// The pause a 429 or 503 asks for (`Retry-After`), capped so a silly value cannot
/// silence a site for days.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    if !matches!(resp.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let date = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok());
    pause_asked(value, server_clock(date, std::time::SystemTime::now()))
}

/// The time on the clock that wrote a `Retry-After` date: the server's, as its answer's
/// `Date` tells it (RFC 9110, 6.6.1), so that a worker whose clock is off holds the host
/// (for every worker: the hold is shared) as long as the server asked; ours when the
/// answer has no `Date` or one more than [`MAX_SERVER_SKEW`] off, a clock too broken
/// (reset to its epoch) to have written the `Retry-After` by.
fn server_clock(date: Option<&str>, ours: std::time::SystemTime) -> std::time::SystemTime {
    let Some(server) = date.and_then(|d| httpdate::parse_http_date(d.trim()).ok()) else {
        return ours;
    };
    let skew = server
        .duration_since(ours)
        .or_else(|_| ours.duration_since(server))
        .unwrap_or(Duration::MAX);
    if skew > MAX_SERVER_SKEW {
        return ours;
    }
    server
}

/// How far a server's `Date` may be from our clock and still be read as its clock.
const MAX_SERVER_SKEW: Duration = Duration::from_secs(24 * 3600);

/// The pause a `Retry-After` value asks for at `now`: whole seconds, or an HTTP date
/// (RFC 9110, 10.2.3; a maintenance page's "back at"), at most [`MAX_RETRY_AFTER`].
fn pause_asked(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let pause = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok()
            .filter(|d| !d.is_zero())?,
    };
    Some(pause.min(MAX_RETRY_AFTER))
}

/// The answer that ended the redirects: read, and followed on when it is a page a
/// browser leaves by itself (`Refresh`, `<meta http-equiv="refresh">`, a stub's script),
/// or asked again when hyper refused chunks browsers read ([`read_as_browsers`]).
async fn last_hop(
    resp: reqwest::Response,
    permit: Permit,
    probe: &mut Probe<'_>,
    chain: &mut Chain,
    cert_now: std::time::SystemTime,
    obs: &mut Observation,
) -> Result<Step, Outcome> {
    let plan = probe.plan;
    let page = resp.status().is_success() && plan.method != crate::job::Method::Head;
    let refresh_header = page
        .then(|| body::header(resp.headers(), reqwest::header::REFRESH))
        .flatten();
    if page {
        // A page a browser leaves keeps its cookies as a redirect does.
        chain.cookies.take(&chain.url, resp.headers());
    }
    let chunk_line = resp
        .extensions()
        .get::<tunnel::MendedChunks>()
        .map(|m| m.0.clone());
    let finished = finish(resp, permit, plan, chain, cert_now).await;
    if let Some(line) = chunk_line.as_ref().and_then(|l| l.get()) {
        let which = match line.as_str() {
            "" => "a chunk's data".to_string(),
            line => format!("the chunk line {line:?}"),
        };
        obs.notes.push(format!(
            "{which} ends in a bare LF, which browsers read and HTTP/1.1 does not allow: \
             read as browsers read it"
        ));
    }
    if let Some(cause) = finished.unframed {
        if read_as_browsers(probe, &cause, obs) {
            return Ok(Step::Again);
        }
    }
    let answer = finished.result?;
    if page {
        if let Some(step) = refresh(chain, &answer, refresh_header, plan, obs) {
            return step;
        }
    }
    Ok(Step::Answer(Box::new(answer)))
}

/// Whether a final answer whose chunks hyper refused (`cause`) is asked again, once, on
/// the egress's route that reads chunks as browsers do (`tunnel::chunks`): a second
/// request. Not when there is no such route or it was that route's answer; what was
/// read then stands.
fn read_as_browsers(probe: &mut Probe<'_>, cause: &str, obs: &mut Observation) -> bool {
    if probe.read_as_browsers || probe.egress.mended.is_none() {
        return false;
    }
    probe.read_as_browsers = true;
    obs.notes.push(format!(
        "hyper refused the answer's chunks ({cause}): asked again to read them as \
         browsers do"
    ));
    true
}

/// Where a page that answered sends a browser by itself at once, or the page its frames
/// show (`probe::refresh`): the next hop, as a redirect; `None` when it stays.
fn refresh(
    chain: &mut Chain,
    answer: &Answer,
    header: Option<String>,
    plan: &Plan,
    obs: &mut Observation,
) -> Option<Result<Step, Outcome>> {
    use crate::probe::refresh;
    let (target, framed) = match refresh::target(header.as_deref(), &answer.text) {
        Some(target) => (target, false),
        None => (refresh::frame(&answer.text)?, true),
    };
    let from = chain.url.clone();
    let next = chain.refresh(answer.status, &target, plan.max_redirects);
    obs.notes.extend(chain.take_hsts_note());
    match next {
        Next::Follow => {
            obs.notes.push(if framed {
                format!("{from} shows {} in a frame", chain.url)
            } else {
                format!("{from} sends browsers on to {} by itself", chain.url)
            });
            Some(Ok(Step::Again))
        }
        Next::Fail(failure) => Some(Err(Outcome::Failure(failure))),
        Next::Final => None,
    }
}

/// The request a refusal of us turned away is asked once more: its next request waits
/// for the hold (or the job is deferred), and the refusal is noted as what happened
/// ([`Refusal::asked_again`]): the next answer judges the site.
/// The site's time of a hop begun at `began` (with our own time so far): its time
/// less our waits for the per-IP limit and our questions to the egress during it.
fn hop_time((at, ours_before): (Instant, Duration), obs: &Observation) -> Duration {
    let ours = (obs.queued + obs.checking).saturating_sub(ours_before);
    at.elapsed().saturating_sub(ours)
}

fn ask_again_after_the_hold(
    reasked: &mut bool,
    told: Option<String>,
    obs: &mut Observation,
) -> Step {
    *reasked = true;
    obs.notes.extend(told);
    Step::AfterHold
}

/// An answer, its body read or not yet.
enum Reply {
    /// Not read: a page, a redirect, or an error whose status says all.
    Unread(reqwest::Response, Permit),
    /// Read, as the final answer of the chain.
    Read(Answer),
}

impl Reply {
    /// A refusal's detail, naming the firewall whose page refused us, if this is one.
    fn naming_its_firewall(&self, detail: String) -> String {
        match self {
            Reply::Read(answer) => match crate::probe::pages::firewall_block(&answer.text) {
                Some((firewall, _)) => format!("{firewall}'s page: {detail}"),
                None => detail,
            },
            Reply::Unread(..) => detail,
        }
    }
}

/// The answer and what it says of us, for an answer that was not expected. An error
/// page whose status is no refusal of us may still be one by its words (haproxy's
/// tarpit 500, ModSecurity's 406 on LiteSpeed: `Signal::of_block_page`), so it is
/// read before the limiter is told: a storm of them then holds the IP as a 403 storm
/// does, instead of the limit being tripped again and again. An error ends the chain
/// in any case, and a block page is small.
async fn read_if_error(
    resp: reqwest::Response,
    permit: Permit,
    plan: &Plan,
    chain: &Chain,
    cert_now: std::time::SystemTime,
) -> Result<(Reply, Signal), Outcome> {
    let status = resp.status().as_u16();
    let signal = Signal::of_status(status);
    let error = resp.status().is_client_error() || resp.status().is_server_error();
    if signal != Signal::Fine || !error || plan.method == crate::job::Method::Head {
        return Ok((Reply::Unread(resp, permit), signal));
    }
    let answer = finish(resp, permit, plan, chain, cert_now).await.result?;
    let signal = Signal::of_block_page(status, &answer.text);
    Ok((Reply::Read(answer), signal))
}

/// The final answer of the chain: its body read (the per-IP permit is held until then),
/// decoded when the judgement needs its text; its certificate's days counted to
/// `cert_now` (the sites' clock: `sites_clock`).
async fn finish(
    resp: reqwest::Response,
    permit: Permit,
    plan: &Plan,
    chain: &Chain,
    cert_now: std::time::SystemTime,
) -> body::Finished<Answer> {
    let status = resp.status().as_u16();
    // hyper keeps a status line's words only when they are not the standard ones.
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into());
    let tls_days = tls::days(&resp, cert_now);
    let content_type = body::header(resp.headers(), reqwest::header::CONTENT_TYPE);
    let disposition = body::header(resp.headers(), reqwest::header::CONTENT_DISPOSITION);
    let retry_after = body::header(resp.headers(), reqwest::header::RETRY_AFTER);
    let login = (status == 401)
        .then(|| body::header(resp.headers(), reqwest::header::WWW_AUTHENTICATE))
        .flatten()
        .map(String::into_boxed_str);
    let pause_asked = self::retry_after(&resp);
    if let Some(refused) = unasked_coding(&resp, plan, chain) {
        return body::Finished {
            result: Err(fail(FailureKind::Protocol, refused)),
            unframed: None,
        };
    }
    let body::Finished { result, unframed } = body::read(resp, plan.max_body_bytes, status).await;
    drop(permit);
    let body = match result {
        Ok(body) => body,
        Err(failure) => {
            return body::Finished {
                result: Err(failure),
                unframed,
            }
        }
    };
    let body_bytes = body.bytes.len();
    let not_shown = crate::probe::not_shown_as_a_page(
        content_type.as_deref(),
        disposition.as_deref(),
        &body.bytes,
    );
    let (text, charset) = body::decode(body.bytes, content_type.as_deref(), plan);
    let answer = Answer {
        status,
        reason,
        body_bytes,
        truncated: body.truncated,
        broke_off: body.broke_off,
        late: body.late,
        stalled_ms: u32::try_from(body.stalled.as_millis()).unwrap_or(u32::MAX),
        text,
        charset,
        final_url: chain.url.to_string(),
        redirects: chain.redirects,
        retry_after: retry_after.map(String::into_boxed_str),
        pause_asked,
        tls_days,
        not_shown,
        login,
    };
    body::Finished {
        result: Ok(answer),
        unframed,
    }
}

impl Prober for HttpProber {
    fn egress_count(&self) -> usize {
        self.egress.len()
    }

    fn observe<'a>(&'a self, plan: &'a Plan, egress: usize) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let index = egress % self.egress.len();
            self.observe_with(plan, &self.egress[index], index).await
        })
    }

    fn nameservers_answer<'a>(
        &'a self,
        failed: &'a str,
        canaries: &'a [String],
    ) -> BoxFuture<'a, bool> {
        Box::pin(self.resolver.answers(failed, canaries))
    }
}

/// An answer an HTTP proxy made itself (its refusal or error page), not the site's:
/// squid marks its own pages with `X-Squid-Error`, RFC 9209 proxies with an error in
/// `Proxy-Status`, and a 407 is always the proxy's. Only plain http is asked of the
/// proxy itself: https goes through a CONNECT tunnel, so what comes back through it is
/// the site's (its own reverse proxy's pages included), and a refused CONNECT is an
/// error, not an answer.
fn proxy_refusal(egress: &Egress, url: &Url, resp: &reqwest::Response) -> Option<String> {
    // Through a tunnel (`tunnel/`) plain http is the site's answer too.
    if egress.proxy.is_none() || egress.socks || egress.tunnel.is_some() || url.scheme() != "http" {
        return None;
    }
    if let Some(warning) = tunnel::stale_copy(resp.headers()) {
        return Some(format!(
            "the proxy of egress {} answered a stale copy from its cache ({warning}): it \
             could not reach the site, and the site was not heard",
            egress.name
        ));
    }
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let marker = header("x-squid-error")
        .or_else(|| header("proxy-status").filter(|v| v.contains("error=")))
        .or_else(|| (status.as_u16() == 407).then(|| "proxy authentication required".into()))?;
    if status.is_success() || status.is_redirection() {
        return None;
    }
    Some(format!(
        "the proxy of egress {} answered {status} itself ({marker}); the site was not asked",
        egress.name
    ))
}

/// Longest `Retry-After` pause honoured.
const MAX_RETRY_AFTER: Duration = crate::probe::MAX_RETRY_AFTER;

/// Why browsers show no page for `resp`, the answer to [`Chain::url`], when it comes
/// in a coding the request did not ask for ([`body::unasked_coding`]). A redirect is
/// followed all the same (Chrome exempts it), and an answer to `HEAD` has no body.
///
/// A job's own `Accept-Encoding` changes what picket asks for, not what browsers are
/// shown: a coding is refused only when the browser's own list would not ask for it
/// either.
fn unasked_coding(resp: &reqwest::Response, plan: &Plan, chain: &Chain) -> Option<String> {
    let redirect = matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308)
        && resp.headers().contains_key(reqwest::header::LOCATION);
    if redirect || plan.method == crate::job::Method::Head {
        return None;
    }
    let secure = chain.url.scheme() == "https";
    let browsers = if secure {
        &plan.browser.secure
    } else {
        &plan.browser.plain
    };
    let accepted = accept_encoding(plan.headers(secure));
    let by_browsers = accept_encoding(browsers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    body::unasked_coding(resp.headers(), by_browsers)?;
    let coding = body::unasked_coding(resp.headers(), accepted)?;
    Some(format!(
        "{} but the body is coded {coding}, which the request did not ask for \
         (Accept-Encoding: {}): browsers show no page (Chrome refuses it, Firefox shows \
         its compressed bytes)",
        resp.status().as_u16(),
        accepted.unwrap_or_default(),
    ))
}

/// The value of the `Accept-Encoding` among `headers`.
fn accept_encoding<'a>(mut headers: impl Iterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    headers
        .find(|(name, _)| name.eq_ignore_ascii_case("accept-encoding"))
        .map(|(_, value)| value)
}

fn fail(kind: FailureKind, detail: String) -> Outcome {
    Outcome::Failure(Failure { kind, detail })
}

/// After a hop failed with `failure`: the outcome that ends the probe, or `None` when
/// the hop is to be asked again over HTTPS ([`Chain::upgrade`]; the failure is kept in
/// `fallback`). When that fails too, the plain-HTTP failure it stood for ends the probe,
/// as browsers fall back to it.
fn upgrade_or_end(
    chain: &mut Chain,
    failure: Outcome,
    fallback: &mut Option<Outcome>,
    obs: &mut Observation,
) -> Option<Outcome> {
    if let Some(first) = fallback.take() {
        crate::metric::https_upgrade(false);
        obs.notes.push(format!(
            "{} failed too: {}",
            chain.url,
            failure.failure_detail()
        ));
        return Some(first);
    }
    let Outcome::Failure(f) = &failure else {
        return Some(failure);
    };
    let Some(from) = chain.upgrade(f.kind) else {
        return Some(failure);
    };
    obs.notes.push(format!(
        "{from} failed ({}); asked {} instead, as browsers ask a plain-HTTP address over \
         HTTPS first",
        f.detail, chain.url
    ));
    *fallback = Some(failure);
    None
}

#[cfg(test)]
mod retry_after_tests {
    use std::time::{Duration, SystemTime};

    use super::{pause_asked, server_clock};

    #[test]
    fn a_retry_after_in_seconds_or_as_a_date_is_a_pause_capped_at_ten_minutes() {
        // Tue, 01 Dec 2026 08:00:00 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_112_000);
        assert_eq!(pause_asked(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(pause_asked("86400", now), Some(Duration::from_secs(600)));
        assert_eq!(
            pause_asked("Tue, 01 Dec 2026 08:02:30 GMT", now),
            Some(Duration::from_secs(150))
        );
        assert_eq!(
            pause_asked("Wed, 02 Dec 2026 08:00:00 GMT", now),
            Some(Duration::from_secs(600))
        );
        // A date gone by asks for no pause; words ask for nothing.
        assert_eq!(pause_asked("Tue, 01 Dec 2026 07:00:00 GMT", now), None);
        assert_eq!(pause_asked("soon", now), None);
        assert_eq!(pause_asked("-5", now), None);
    }

    /// Tue, 01 Dec 2026 08:00:00 GMT on the server's clock, which asks for 2 minutes.
    const DATE: &str = "Tue, 01 Dec 2026 08:00:00 GMT";
    const BACK: &str = "Tue, 01 Dec 2026 08:02:00 GMT";

    fn at(offset: i64) -> SystemTime {
        let server = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_112_000);
        let by = Duration::from_secs(offset.unsigned_abs());
        if offset < 0 {
            server - by
        } else {
            server + by
        }
    }

    #[test]
    fn a_retry_after_date_is_the_same_pause_for_a_worker_whose_clock_is_off() {
        let asked = |ours| pause_asked(BACK, server_clock(Some(DATE), ours));
        let two_minutes = Some(Duration::from_secs(120));
        assert_eq!(asked(at(0)), two_minutes, "on time");
        assert_eq!(asked(at(300)), two_minutes, "a worker 5 minutes ahead");
        assert_eq!(asked(at(-600)), two_minutes, "a worker 10 minutes behind");
    }

    #[test]
    fn a_retry_after_date_is_read_on_our_clock_without_a_sane_date_beside_it() {
        let ours = at(60);
        let asked = |date| pause_asked(BACK, server_clock(date, ours));
        let one_minute = Some(Duration::from_secs(60));
        assert_eq!(asked(None), one_minute, "no Date");
        assert_eq!(asked(Some("soon")), one_minute, "a Date that is no date");
        // A server clock reset to its epoch wrote neither the Date nor a pause.
        assert_eq!(
            asked(Some("Thu, 01 Jan 1970 00:00:00 GMT")),
            one_minute,
            "a Date decades off"
        );
    }
}
