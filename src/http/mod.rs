//! The one place that talks HTTP to sites: a [`Plan`] in, an [`Observation`] out.
//!
//! Each hop is resolved here, checked against the address policy, counted by the
//! per-IP limiter, and then requested from exactly that address: the reqwest clients
//! (one per egress and TLS mode, built once) have pooling off and are pinned per request
//! by a resolver and a connector layer that read the hop from the task (`pin`), so
//! neither a second DNS answer nor a stale pooled connection can change where the
//! request goes or fake a failure, and a connection that reached another peer is our
//! error, never the site's. Redirects are followed here, hop by hop, for the same reasons.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use url::Url;

use crate::config::{EgressSettings, TlsSettings};
use crate::dns::{DnsError, Resolver};
use crate::engine::Prober;
use crate::job::Method;
use crate::limit::{Grant, Limiter, Request, Signal};
use crate::probe::{policy, Answer, Failure, FailureKind, Observation, Outcome, Plan};

mod body;
mod client;
mod failure;
mod phase;
mod pin;
mod recent;
mod tls;

use client::Egress;
// pin's tests build a bare client the way every client is built.
#[cfg(test)]
use client::builder;
use failure::{classify, root_cause};
use pin::{pin_error, Hop, PinnedResolver};
use recent::RecentAnswers;
pub use tls::tls_config;

/// Addresses of one name tried before the probe gives up on connecting.
const MAX_ADDRESSES: usize = 8;

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

/// Probes sites over HTTP(S).
pub struct HttpProber {
    resolver: Resolver,
    limiter: Arc<dyn Limiter>,
    allow_private: bool,
    egress: Vec<Egress>,
    recent: RecentAnswers,
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
        allow_private: bool,
    ) -> Result<HttpProber, SetupError> {
        let tls = tls_config(tls_settings)?;
        let extra_ca = tls::extra_ca(tls_settings)?;
        let resolve: Arc<dyn reqwest::dns::Resolve> =
            Arc::new(PinnedResolver::new(resolver.clone()));
        let egress = egress
            .iter()
            .map(|e| Egress::new(e, &resolve, &tls, &extra_ca))
            .collect::<Result<Vec<_>, SetupError>>()?;
        Ok(HttpProber {
            resolver,
            limiter,
            allow_private,
            egress,
            recent: RecentAnswers::default(),
        })
    }

    async fn observe_with(&self, plan: &Plan, egress: &Egress, index: usize) -> Observation {
        let start = Instant::now();
        let mut obs = Observation::new(&egress.name);
        let outcome = self
            .follow(plan, egress, index, start + plan.timeout, &mut obs)
            .await;
        obs.outcome = outcome;
        obs.total = start.elapsed();
        obs
    }

    async fn follow(
        &self,
        plan: &Plan,
        egress: &Egress,
        index: usize,
        mut deadline: Instant,
        obs: &mut Observation,
    ) -> Outcome {
        let mut url = plan.url.clone();
        // Cookies set along the redirect chain, sent on later hops as a browser would:
        // many sites set a cookie and redirect to the same URL to check it.
        let mut cookies = CookieJar::default();
        let mut seen: Vec<(Url, usize)> = vec![(url.clone(), 0)];
        let mut redirects = 0u32;
        // The job's credentials go only to the origin it named, as browsers and curl do:
        // once a redirect leaves it they are not sent again.
        let mut credentials = true;
        // A refusal of us is asked again once, after the IP's hold.
        let mut reasked = false;
        loop {
            credentials &= same_origin(&plan.url, &url);
            let Some(host) = url.host_str().map(str::to_string) else {
                return fail(FailureKind::BadRedirect, format!("{url} has no host"));
            };
            let port = url.port_or_known_default().unwrap_or(80);

            let dns_start = Instant::now();
            // Boxed: hickory's lookup future is large, and inline it would make every
            // probe's future twice as big for the whole probe, not just its lookup
            // (4.5 → 2.3 KB a probe in flight; docs/BENCHMARKS.md).
            let lookup =
                tokio::time::timeout_at(deadline, Box::pin(self.resolver.lookup(&host))).await;
            if obs.dns.is_none() {
                obs.dns = Some(dns_start.elapsed());
            }
            let ips = match lookup {
                Err(_) => {
                    return fail(
                        FailureKind::Timeout,
                        format!("{host}: DNS lookup ran out of time"),
                    )
                }
                Ok(Err(e @ DnsError::LocalResources { .. })) => {
                    return fail(FailureKind::LocalResources, e.to_string())
                }
                Ok(Err(e)) => return fail(FailureKind::Dns, e.to_string()),
                Ok(Ok(ips)) => ips,
            };
            // A name that resolves only to 0.0.0.0 (or ::) is a resolver's sinkhole: no
            // visitor reaches the site, and on Linux dialling it reaches this host.
            if url
                .host()
                .is_some_and(|h| matches!(h, url::Host::Domain(_)))
                && ips.iter().all(IpAddr::is_unspecified)
            {
                obs.ip = ips.first().copied();
                return fail(
                    FailureKind::Dns,
                    format!(
                        "{host} resolves only to {} (a DNS sinkhole): no visitor can reach it",
                        ips[0]
                    ),
                );
            }
            let candidates = pick_addresses(&ips, self.allow_private);
            if candidates.is_empty() {
                let why = policy::refusal(ips[0], self.allow_private).unwrap_or("refused");
                obs.ip = Some(ips[0]);
                let hop = if redirects == 0 {
                    String::new()
                } else {
                    format!(" (redirect hop {redirects})")
                };
                return fail(
                    FailureKind::BlockedTarget,
                    format!(
                        "{host} resolves to {} which is {why}; refused by policy{hop}{}",
                        ips[0],
                        policy::how_to_allow(ips[0])
                    ),
                );
            }
            let mut response = None;
            let mut permit_held = None;
            // Addresses that refused or did not connect before one answered (or none did).
            let mut unreachable: Vec<String> = Vec::new();
            for (n, &ip) in candidates.iter().enumerate() {
                obs.ip = Some(ip);
                // Waiting for our own limit is not the site's time: it extends the deadline.
                let max_wait = plan.max_wait.unwrap_or(WAIT_WITHOUT_DEFERRAL);
                let request = Request {
                    ip,
                    host: &host,
                    egress: &egress.name,
                    max_wait,
                };
                let permit = match self.limiter.acquire(request).await {
                    Grant::Go(p) => p,
                    Grant::Defer(wait) => {
                        if plan.max_wait.is_some() {
                            obs.deferred = Some(wait);
                        }
                        return fail(
                            FailureKind::Throttled,
                            format!(
                                "the per-IP limit of {ip} allows no request for {} ms",
                                wait.as_millis()
                            ),
                        );
                    }
                };
                crate::metric::throttle_wait(permit.waited);
                obs.queued += permit.waited;
                deadline += permit.waited;

                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return fail(
                        FailureKind::Timeout,
                        format!("no time left after {redirects} redirects"),
                    );
                }
                let addr = SocketAddr::new(ip, port);
                let connect_timeout = plan.connect_timeout.min(remaining);
                let hop = Hop::new(&host, addr, connect_timeout, egress.route);
                let request = |client: &reqwest::Client, timeout: Duration| {
                    let method = match plan.method {
                        Method::Get => reqwest::Method::GET,
                        Method::Head => reqwest::Method::HEAD,
                    };
                    let mut req = client.request(method, url.clone()).timeout(timeout);
                    for (name, value) in &plan.headers {
                        if credentials || !is_credential(name) {
                            req = req.header(name.as_str(), value.as_str());
                        }
                    }
                    if let Some(cookie) = cookies.header_for(&url) {
                        req = req.header(reqwest::header::COOKIE, cookie);
                    }
                    req
                };
                let sent = Instant::now();
                let mut result = hop.scope(request(&egress.client, remaining).send()).await;
                hop.clock.write(sent, obs);
                let mut ready = hop.clock.ready(sent);
                // A server that speaks only TLS that rustls never will (CBC suites) but
                // browsers still do: ask again over OpenSSL. Whatever that finds wrong is
                // not reported in place of the first failure, which says what happened.
                if let Err(first) = &result {
                    if url.scheme() == "https" && failure::no_common_tls(first) {
                        let legacy_sent = Instant::now();
                        // Within what is left of the probe's time, like any other step.
                        let left = deadline.saturating_duration_since(legacy_sent);
                        let legacy_hop =
                            Hop::new(&host, addr, plan.connect_timeout.min(left), egress.route);
                        let retried = if left.is_zero() {
                            Err(None)
                        } else {
                            legacy_hop
                                .scope(request(&egress.legacy, left).send())
                                .await
                                .map_err(Some)
                        };
                        match retried {
                            Ok(r) => {
                                legacy_hop
                                    .clock
                                    .write_legacy(legacy_sent, &hop.clock, sent, obs);
                                ready = legacy_hop.clock.ready(legacy_sent);
                                obs.notes.push(
                                    "the server speaks only legacy TLS (no TLS 1.3 and no AEAD \
                                     cipher suite), which browsers still accept: answered over \
                                     OpenSSL"
                                        .to_string(),
                                );
                                result = Ok(r);
                            }
                            Err(Some(e)) => obs.notes.push(format!(
                                "asked again as browsers still would (OpenSSL, TLS 1.2 or \
                                 later, CBC suites allowed): {}",
                                root_cause(&e)
                            )),
                            Err(None) => {}
                        }
                    }
                }
                match result {
                    Ok(r) => {
                        if !unreachable.is_empty() {
                            obs.notes.push(format!(
                                "{} failed; {ip} answered instead",
                                unreachable.join(", ")
                            ));
                        }
                        self.recent.answered(ip, index);
                        obs.first_byte = Some(ready.elapsed());
                        let answered = Request {
                            ip,
                            host: &host,
                            egress: &egress.name,
                            max_wait: Duration::ZERO,
                        };
                        self.limiter.latency(&answered, ready.elapsed());
                        response = Some(r);
                        permit_held = Some(permit);
                        break;
                    }
                    Err(e) => {
                        if let Some(pin) = pin_error(&e) {
                            // Where the request would go is not where it was counted:
                            // nothing is known about the site, and nothing was sent.
                            return fail(
                                FailureKind::Egress,
                                format!("{host}: not probed, picket's own error: {pin}"),
                            );
                        }
                        let outcome = classify(&e, &host, ip, port, plan, egress);
                        if let Outcome::Failure(Failure {
                            kind: FailureKind::Reset,
                            ..
                        }) = &outcome
                        {
                            obs.recent_answers = self.recent.count(ip, index);
                            obs.refusal = self.standing(ip, &host, egress, Signal::Reset).await;
                        }
                        // A broken address (a backend down, a broken address family) is
                        // not a broken site: try the next one, as browsers do.
                        if e.is_connect() && n + 1 < candidates.len() {
                            let why = match &outcome {
                                Outcome::Failure(f) => f.detail.clone(),
                                Outcome::Answer(_) => String::new(),
                            };
                            unreachable.push(format!("{ip} ({why})"));
                            continue;
                        }
                        if !unreachable.is_empty() {
                            obs.notes
                                .push(format!("also tried: {}", unreachable.join(", ")));
                        }
                        return outcome;
                    }
                }
            }
            let (Some(resp), Some(permit)) = (response, permit_held) else {
                return fail(
                    FailureKind::Connect,
                    format!("{host}: no address could be reached"),
                );
            };
            let status = resp.status().as_u16();
            if let Some(refusal) = proxy_refusal(egress, &url, &resp) {
                // The proxy answered for itself: nothing is known about the site.
                return fail(FailureKind::Egress, refusal);
            }
            let tls_days_left = tls::days_left(&resp);

            if let (429 | 503, Some(ip)) = (status, obs.ip) {
                if let Some(pause) = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    // The server asked for a pause: no worker sends to this host before
                    // it ends, nor to the IP when several of its hosts ask (capped, so a
                    // silly value cannot silence a site for days).
                    let pause = Duration::from_secs(pause).min(MAX_RETRY_AFTER);
                    let request = Request {
                        ip,
                        host: &host,
                        egress: &egress.name,
                        max_wait: Duration::ZERO,
                    };
                    self.limiter.hold(request, pause).await;
                }
            }

            let expected_here = plan
                .expect
                .status
                .as_ref()
                .is_some_and(|s| s.contains(&status));
            if let Some(ip) = obs.ip {
                let signal = if expected_here {
                    Signal::Fine
                } else {
                    Signal::of_status(status)
                };
                if let Some(refusal) = self.standing(ip, &host, egress, signal).await {
                    if !reasked {
                        // The request for it waits for the hold (or the job is deferred).
                        reasked = true;
                        obs.notes
                            .push(format!("{refusal}; asked again after the hold"));
                        drop(resp);
                        drop(permit);
                        continue;
                    }
                    obs.refusal = Some(refusal);
                }
            }
            if resp.status().is_redirection() && !expected_here {
                cookies.take(&url, resp.headers());
                if let Some(location) = resp.headers().get(reqwest::header::LOCATION) {
                    let next = match location.to_str().ok().and_then(|l| url.join(l).ok()) {
                        Some(n) => n,
                        None => {
                            return fail(
                                FailureKind::BadRedirect,
                                format!("{status} with a Location that is not a URL"),
                            )
                        }
                    };
                    if next.scheme() != "http" && next.scheme() != "https" {
                        return fail(
                            FailureKind::BadRedirect,
                            format!(
                                "{status} redirect to unsupported scheme {:?}",
                                next.scheme()
                            ),
                        );
                    }
                    drop(resp);
                    drop(permit);
                    redirects += 1;
                    // The same URL again is a loop only if nothing changed: a new cookie
                    // makes the next visit a different request.
                    if seen.contains(&(next.clone(), cookies.len())) {
                        return fail(
                            FailureKind::TooManyRedirects,
                            format!(
                                "redirect loop: {next} was already visited after {redirects} hops"
                            ),
                        );
                    }
                    if redirects > plan.max_redirects {
                        return fail(
                            FailureKind::TooManyRedirects,
                            format!(
                                "more than {} redirects (last to {next})",
                                plan.max_redirects
                            ),
                        );
                    }
                    seen.push((next.clone(), cookies.len()));
                    url = next;
                    continue;
                }
            }

            let content_type = body::header(resp.headers(), reqwest::header::CONTENT_TYPE);
            let retry_after = body::header(resp.headers(), reqwest::header::RETRY_AFTER);
            let (body, truncated) = match body::read(resp, plan.max_body_bytes, status).await {
                Ok(read) => read,
                Err(outcome) => return outcome,
            };
            drop(permit);
            let body_bytes = body.len();
            let (text, charset) = body::decode(body, content_type.as_deref(), plan);
            return Outcome::Answer(Answer {
                status,
                body_bytes,
                truncated,
                text,
                charset,
                final_url: url.to_string(),
                redirects,
                retry_after,
                tls_days_left,
            });
        }
    }
}

impl HttpProber {
    /// Tells the limiter how `ip` answered; `Some(detail)` when it refuses *us*.
    async fn standing(
        &self,
        ip: IpAddr,
        host: &str,
        egress: &Egress,
        signal: Signal,
    ) -> Option<String> {
        let request = Request {
            ip,
            host,
            egress: &egress.name,
            max_wait: Duration::ZERO,
        };
        let refusal = self.limiter.answered(request, signal).await?;
        Some(refusal.detail)
    }
}

impl Prober for HttpProber {
    fn egress_count(&self) -> usize {
        self.egress.len()
    }

    fn observe<'a>(&'a self, plan: &'a Plan, egress: usize) -> BoxFuture<'a, Observation> {
        Box::pin(async move {
            let index = egress % self.egress.len();
            self.observe_with(plan, &self.egress[index], index).await
        })
    }
}

/// The cookies of one probe's redirect chain, by host (no paths, no expiry: the chain
/// lasts seconds).
#[derive(Default)]
struct CookieJar {
    cookies: Vec<(String, String, String)>,
}

impl CookieJar {
    /// Keeps the `Set-Cookie` name=value pairs of a response from `url`'s host.
    fn take(&mut self, url: &Url, headers: &reqwest::header::HeaderMap) {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) else {
                continue;
            };
            let Some((name, val)) = pair.split_once('=') else {
                continue;
            };
            let (name, val) = (name.trim().to_string(), val.trim().to_string());
            self.cookies.retain(|(h, n, _)| !(h == &host && n == &name));
            if self.cookies.len() < 50 {
                self.cookies.push((host.clone(), name, val));
            }
        }
    }

    /// The `Cookie` header for a request to `url`, if any cookie applies.
    fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(h, _, _)| *h == host)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn len(&self) -> usize {
        self.cookies.len()
    }
}

/// An answer an HTTP proxy made itself (its refusal or error page), not the site's:
/// squid marks its own pages with `X-Squid-Error`, RFC 9209 proxies with an error in
/// `Proxy-Status`, and a 407 is always the proxy's. Only plain http is asked of the
/// proxy itself: https goes through a CONNECT tunnel, so what comes back through it is
/// the site's (its own reverse proxy's pages included), and a refused CONNECT is an
/// error, not an answer.
fn proxy_refusal(egress: &Egress, url: &Url, resp: &reqwest::Response) -> Option<String> {
    if egress.proxy.is_none() || egress.socks || url.scheme() != "http" {
        return None;
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
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Longest wait for a per-IP limit when the job cannot be deferred (`picket check`, or a
/// job deferred too often): long enough for any sane limit, bounded all the same.
const WAIT_WITHOUT_DEFERRAL: Duration = Duration::from_secs(600);

/// Whether two URLs have one origin (scheme, host and port): a redirect from https to
/// http is another origin, so credentials never travel in clear text after TLS.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Request headers that carry a user's credentials.
fn is_credential(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

fn fail(kind: FailureKind, detail: String) -> Outcome {
    Outcome::Failure(Failure { kind, detail })
}

/// The addresses to try: the first allowed IPv4 address, then the first allowed IPv6
/// one (IPv6 paths are more often broken, and a site that works over one family is up).
/// The addresses to try in turn, as a browser does when a connect fails: every
/// address the policy allows (at most [`MAX_ADDRESSES`]), IPv4 and IPv6 alternating,
/// IPv4 first (a broken AAAA is the commoner fault), each family in the resolver's
/// order. A load-balanced site with one backend down is not down.
fn pick_addresses(ips: &[IpAddr], allow_private: bool) -> Vec<IpAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_with_the_origin_the_job_named() {
        let u = |s: &str| Url::parse(s).expect("url");
        let first = u("https://a.example/login");
        assert!(same_origin(&first, &u("https://a.example:443/next")));
        assert!(!same_origin(&first, &u("https://b.example/")));
        assert!(
            !same_origin(&first, &u("http://a.example/")),
            "https → http"
        );
        assert!(!same_origin(&first, &u("https://a.example:8443/")));
        for name in ["Authorization", "cookie", "PROXY-AUTHORIZATION"] {
            assert!(is_credential(name), "{name}");
        }
        assert!(!is_credential("Accept-Language"));
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
}
