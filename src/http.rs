//! The one place that talks HTTP to sites: a [`Plan`] in, an [`Observation`] out.
//!
//! Each hop is resolved here, checked against the address policy, counted by the
//! per-IP limiter, and then requested from exactly that address: the reqwest client of
//! a hop is pinned to it with `resolve_to_addrs` and has pooling off, so neither a second
//! DNS answer nor a stale pooled connection can change where the request goes or fake a
//! failure. Redirects are followed here, hop by hop, for the same reasons.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rustls::pki_types::ServerName;
use tokio::time::Instant;
use url::Url;

use crate::config::{EgressSettings, TlsSettings};
use crate::dns::{DnsError, ProxyNameResolver, Resolver};
use crate::engine::Prober;
use crate::job::Method;
use crate::limit::{Grant, Limiter, Request};
use crate::probe::{policy, text, Answer, Failure, FailureKind, Observation, Outcome, Plan};

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

struct Egress {
    name: String,
    proxy: Option<reqwest::Proxy>,
    /// The proxy speaks SOCKS (else HTTP, when there is a proxy).
    socks: bool,
}

/// Probes sites over HTTP(S).
pub struct HttpProber {
    resolver: Resolver,
    limiter: Arc<dyn Limiter>,
    tls: rustls::ClientConfig,
    allow_private: bool,
    egress: Vec<Egress>,
    recent: RecentAnswers,
}

/// Builds the rustls configuration: bundled roots, system roots, and the extra CA file.
///
/// # Errors
/// The extra CA file is unreadable or empty, or rustls refuses the configuration.
pub fn tls_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // System roots are a bonus: a machine without them still has the bundled ones.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.extra_ca_file {
        let ca_err = |message: String| SetupError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl HttpProber {
    /// A prober for the given egress list, sharing `resolver` and `limiter`.
    ///
    /// # Errors
    /// See [`SetupError`].
    pub fn new(
        resolver: Resolver,
        limiter: Arc<dyn Limiter>,
        tls: &TlsSettings,
        egress: &[EgressSettings],
        allow_private: bool,
    ) -> Result<HttpProber, SetupError> {
        let egress = egress
            .iter()
            .map(|e| {
                let proxy = match &e.proxy {
                    None => None,
                    Some(url) => Some(reqwest::Proxy::all(url.as_str()).map_err(|err| {
                        SetupError::Proxy {
                            name: e.name.clone(),
                            message: err.to_string(),
                        }
                    })?),
                };
                Ok(Egress {
                    name: e.name.clone(),
                    proxy,
                    socks: e
                        .proxy
                        .as_ref()
                        .is_some_and(|u| u.scheme().starts_with("socks")),
                })
            })
            .collect::<Result<Vec<_>, SetupError>>()?;
        Ok(HttpProber {
            resolver,
            limiter,
            tls: tls_config(tls)?,
            allow_private,
            egress,
            recent: RecentAnswers::default(),
        })
    }

    fn client(
        &self,
        egress: &Egress,
        host: &str,
        addr: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
        clock: &PhaseClock,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let mut tls = self.tls.clone();
        // No session resumption: a resumed session skips the certificate check and shows
        // no certificate, and every probe must see the site as a first visitor does. The
        // store is asked for a session when the ClientHello is built, which is the moment
        // the connection is up: that splits connect from TLS time.
        tls.resumption =
            rustls::client::Resumption::store(Arc::new(MarkHello(clock.hello.clone())));
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connector_layer(MarkConnected(clock.connected.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .connect_timeout(connect_timeout)
            .tls_info(true)
            // Deflate is decoded here: servers send raw deflate as often as zlib, and
            // browsers accept both.
            .no_deflate()
            .timeout(timeout)
            .dns_resolver(Arc::new(ProxyNameResolver(self.resolver.clone())))
            .resolve_to_addrs(host, &[addr]);
        b = match &egress.proxy {
            Some(p) => b.proxy(p.clone()),
            None => b.no_proxy(),
        };
        b.build()
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
        loop {
            let Some(host) = url.host_str().map(str::to_string) else {
                return fail(FailureKind::BadRedirect, format!("{url} has no host"));
            };
            let port = url.port_or_known_default().unwrap_or(80);

            let dns_start = Instant::now();
            let lookup = tokio::time::timeout_at(deadline, self.resolver.lookup(&host)).await;
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
                Ok(Err(e)) => return fail(FailureKind::Dns, e.to_string()),
                Ok(Ok(ips)) => ips,
            };
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
                        "{host} resolves to {} which is {why}; refused by policy{hop}",
                        ips[0]
                    ),
                );
            }
            let mut response = None;
            let mut permit_held = None;
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
                let clock = PhaseClock::default();
                let client = match self.client(
                    egress,
                    &host,
                    SocketAddr::new(ip, port),
                    plan.connect_timeout.min(remaining),
                    remaining,
                    &clock,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        return fail(
                            FailureKind::Egress,
                            format!("HTTP client could not be built: {e}"),
                        )
                    }
                };
                let method = match plan.method {
                    Method::Get => reqwest::Method::GET,
                    Method::Head => reqwest::Method::HEAD,
                };
                let mut req = client.request(method, url.clone());
                for (name, value) in &plan.headers {
                    req = req.header(name.as_str(), value.as_str());
                }
                if let Some(cookie) = cookies.header_for(&url) {
                    req = req.header(reqwest::header::COOKIE, cookie);
                }
                let sent = Instant::now();
                let result = req.send().await;
                clock.write(sent, obs);
                match result {
                    Ok(r) => {
                        self.recent.answered(ip, index);
                        obs.first_byte = Some(clock.ready(sent).elapsed());
                        response = Some(r);
                        permit_held = Some(permit);
                        break;
                    }
                    Err(e) => {
                        let outcome = classify(&e, &host, ip, port, plan, egress);
                        if let Outcome::Failure(Failure {
                            kind: FailureKind::Reset,
                            ..
                        }) = &outcome
                        {
                            obs.recent_answers = self.recent.count(ip, index);
                        }
                        // A broken address family is not a broken site: try the other one.
                        if e.is_connect() && n + 1 < candidates.len() {
                            let why = match &outcome {
                                Outcome::Failure(f) => f.detail.clone(),
                                Outcome::Answer(_) => String::new(),
                            };
                            obs.notes.push(format!(
                                "{ip} failed ({why}); {} answered instead",
                                candidates[n + 1]
                            ));
                            continue;
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
            let tls_days_left = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(reqwest::tls::TlsInfo::peer_certificate)
                .and_then(cert_days_left);

            if let (429 | 503, Some(ip)) = (status, obs.ip) {
                if let Some(pause) = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    // The server asked for a pause: no worker sends to this IP before it
                    // ends (capped, so a silly value cannot silence a site for days).
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

            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let deflated = resp
                .headers()
                .get(reqwest::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("deflate"));
            let read = read_body(resp, plan.max_body_bytes).await;
            let read = match read {
                Ok((raw, cut)) if deflated => Ok(inflate(&raw, plan.max_body_bytes, cut)),
                other => other,
            };
            let (body, truncated) = match read {
                Ok(b) => b,
                Err((e, got)) => {
                    if e.is_timeout() {
                        return fail(
                            FailureKind::Timeout,
                            format!(
                                "{status} but the body did not arrive in time ({got} bytes read)"
                            ),
                        );
                    }
                    return fail(
                        FailureKind::Protocol,
                        format!(
                            "{status} but the body broke off after {got} bytes: {}",
                            root_cause(&e)
                        ),
                    );
                }
            };
            drop(permit);
            // Small pages are always read as text: block and parked pages are small.
            let needs_text = plan.expect.body_contains.is_some()
                || plan.expect.body_not_contains.is_some()
                || body.len() <= crate::probe::judge::SNIFF_BYTES;
            let (text, charset) = if needs_text {
                let (t, cs) = text::decode(&body, content_type.as_deref());
                (t, Some(cs.to_string()))
            } else {
                (String::new(), None)
            };
            return Outcome::Answer(Answer {
                status,
                body_bytes: body.len(),
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

/// When the connection of one hop was up and when it was ready (TLS done), read from
/// hooks inside reqwest's connector and rustls.
#[derive(Default)]
struct PhaseClock {
    /// The ClientHello was built: TCP (and the proxy's handshake) done.
    hello: Arc<OnceLock<Instant>>,
    /// The connector returned a usable connection.
    connected: Arc<OnceLock<Instant>>,
}

impl PhaseClock {
    /// Writes connect and TLS time into `obs` (for the hop whose request went out at
    /// `sent`; pooling is off, so the connection was opened for it).
    fn write(&self, sent: Instant, obs: &mut Observation) {
        let hello = self.hello.get().copied();
        let connected = self.connected.get().copied();
        obs.connect = hello
            .or(connected)
            .map(|t| t.saturating_duration_since(sent));
        obs.tls = match (hello, connected) {
            (Some(h), Some(c)) => Some(c.saturating_duration_since(h)),
            _ => None,
        };
    }

    /// When the connection was ready for the request.
    fn ready(&self, sent: Instant) -> Instant {
        self.connected.get().copied().unwrap_or(sent)
    }
}

/// A session store that keeps nothing and notes when rustls first asks it.
#[derive(Debug)]
struct MarkHello(Arc<OnceLock<Instant>>);

impl MarkHello {
    fn mark(&self) {
        let _ = self.0.set(Instant::now());
    }
}

impl rustls::client::ClientSessionStore for MarkHello {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.mark();
        None
    }
    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.mark();
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls13ClientSessionValue,
    ) {
    }
    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.mark();
        None
    }
}

/// A connector layer that notes when the connection is ready.
#[derive(Clone)]
struct MarkConnected(Arc<OnceLock<Instant>>);

impl<S> tower_layer::Layer<S> for MarkConnected {
    type Service = Marked<S>;
    fn layer(&self, inner: S) -> Marked<S> {
        Marked {
            inner,
            at: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Marked<S> {
    inner: S,
    at: Arc<OnceLock<Instant>>,
}

impl<S, R> tower_service::Service<R> for Marked<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.inner.call(req);
        let at = self.at.clone();
        Box::pin(async move {
            let conn = connecting.await;
            if conn.is_ok() {
                let _ = at.set(Instant::now());
            }
            conn
        })
    }
}

/// How long answers from one IP are remembered to recognise a reset after a burst.
const BURST_WINDOW: Duration = Duration::from_secs(10);

/// Recent answers per (target IP, egress), so a reset right after a burst of answers
/// can be told from an outage. Bounded: a few instants per key, and keys whose answers
/// are all old are dropped when the map grows.
#[derive(Default)]
struct RecentAnswers {
    seen: Mutex<HashMap<(IpAddr, usize), VecDeque<Instant>>>,
}

impl RecentAnswers {
    const PER_KEY: usize = 8;
    const MAX_KEYS: usize = 8192;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, usize), VecDeque<Instant>>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answered(&self, ip: IpAddr, egress: usize) {
        let now = Instant::now();
        let mut seen = self.lock();
        if seen.len() >= Self::MAX_KEYS {
            seen.retain(|_, v| {
                v.back()
                    .is_some_and(|t| now.duration_since(*t) < BURST_WINDOW)
            });
            if seen.len() >= Self::MAX_KEYS {
                seen.clear();
            }
        }
        let times = seen.entry((ip, egress)).or_default();
        if times.len() >= Self::PER_KEY {
            times.pop_front();
        }
        times.push_back(now);
    }

    fn count(&self, ip: IpAddr, egress: usize) -> u32 {
        let now = Instant::now();
        self.lock().get(&(ip, egress)).map_or(0, |v| {
            v.iter()
                .filter(|t| now.duration_since(**t) < BURST_WINDOW)
                .count() as u32
        })
    }
}

/// Whole days until the certificate in `der` expires (negative when expired).
fn cert_days_left(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((cert.validity().not_after.timestamp() - now).div_euclid(86_400))
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

/// Longest `Retry-After` pause honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Longest wait for a per-IP limit when the job cannot be deferred (`picket check`, or a
/// job deferred too often): long enough for any sane limit, bounded all the same.
const WAIT_WITHOUT_DEFERRAL: Duration = Duration::from_secs(600);

fn fail(kind: FailureKind, detail: String) -> Outcome {
    Outcome::Failure(Failure { kind, detail })
}

/// The addresses to try: the first allowed IPv4 address, then the first allowed IPv6
/// one (IPv6 paths are more often broken, and a site that works over one family is up).
fn pick_addresses(ips: &[IpAddr], allow_private: bool) -> Vec<IpAddr> {
    let ok = |ip: &&IpAddr| policy::refusal(**ip, allow_private).is_none();
    let v4 = ips.iter().filter(|ip| ip.is_ipv4()).find(ok);
    let v6 = ips.iter().filter(|ip| ip.is_ipv6()).find(ok);
    v4.into_iter().chain(v6).copied().collect()
}

async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), (reqwest::Error, usize)> {
    let mut body = Vec::with_capacity(
        resp.content_length()
            .map_or(16 * 1024, |l| (l as usize).min(max)),
    );
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                if chunk.len() >= room {
                    body.extend_from_slice(&chunk[..room]);
                    // Enough read to judge; the rest is not ours to wait for.
                    let more = chunk.len() > room;
                    return Ok((
                        body,
                        more || resp.content_length().is_some_and(|l| l as usize > max),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((body, false)),
            Err(e) => return Err((e, body.len())),
        }
    }
}

/// Decodes a deflate body, zlib-wrapped or raw, to at most `max` bytes. A stream cut
/// short (by the read limit) yields what decoded before the cut.
fn inflate(raw: &[u8], max: usize, cut: bool) -> (Vec<u8>, bool) {
    use std::io::Read;
    let mut out = Vec::new();
    let zlib = flate2::read::ZlibDecoder::new(raw)
        .take(max as u64 + 1)
        .read_to_end(&mut out);
    if zlib.is_err() && out.is_empty() {
        out.clear();
        let _ = flate2::read::DeflateDecoder::new(raw)
            .take(max as u64 + 1)
            .read_to_end(&mut out);
    }
    let over = out.len() > max;
    out.truncate(max);
    (out, cut || over)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Sorts a request error into a failure kind with a precise detail.
fn classify(
    e: &reqwest::Error,
    host: &str,
    ip: IpAddr,
    port: u16,
    plan: &Plan,
    egress: &Egress,
) -> Outcome {
    let at = format!("{host} ({ip}:{port})");
    // A TLS failure is the site's even through a proxy: the handshake runs end to end
    // inside the tunnel.
    if let Some(tls) = tls_error(e) {
        return fail(
            FailureKind::Tls,
            format!("{at}: TLS failed: {}", tls_problem(tls)),
        );
    }
    if egress.proxy.is_some() {
        if let Some(outcome) = classify_proxy(e, &at, egress) {
            return outcome;
        }
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let (kind, what) = match io.kind() {
                K::ConnectionRefused => (FailureKind::Connect, "connection refused"),
                K::ConnectionReset => (FailureKind::Reset, "connection reset by the server"),
                K::ConnectionAborted => (FailureKind::Reset, "connection aborted"),
                // A clean close is how a crashing backend behind a proxy looks: not a ban.
                K::UnexpectedEof => (FailureKind::Connect, "connection closed before an answer"),
                K::HostUnreachable | K::NetworkUnreachable => {
                    (FailureKind::Unreachable, "no route to host")
                }
                _ => {
                    source = err.source();
                    continue;
                }
            };
            return fail(kind, format!("{at}: {what}"));
        }
        source = err.source();
    }
    if e.is_timeout() {
        let phase = if e.is_connect() {
            format!(
                "no connection within {} ms",
                plan.connect_timeout.as_millis()
            )
        } else {
            format!("no answer within {} ms", plan.timeout.as_millis())
        };
        return fail(FailureKind::Timeout, format!("{at}: {phase}"));
    }
    let cause = root_cause(e);
    if e.is_connect() {
        return fail(
            FailureKind::Connect,
            format!("{at}: connection failed: {cause}"),
        );
    }
    if cause.contains("reset") {
        return fail(FailureKind::Reset, format!("{at}: {cause}"));
    }
    if cause.contains("closed") || cause.contains("incomplete") {
        return fail(FailureKind::Connect, format!("{at}: {cause}"));
    }
    fail(FailureKind::Protocol, format!("{at}: {cause}"))
}

/// Through a proxy, tells the proxy's own failure (nothing known about the site) from
/// the site's failure as the proxy reports it. reqwest and hyper-util expose these only
/// as messages, so this reads the error chain's words.
fn classify_proxy(e: &reqwest::Error, at: &str, egress: &Egress) -> Option<Outcome> {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        chain.push(err.to_string());
        source = err.source();
    }
    let words = chain.join(": ");
    let socks = words.contains("socks proxy");
    let tunnel = words.contains("tunnel error");
    if !socks && !tunnel {
        // Plain http through an HTTP proxy: the only connection made is to the proxy.
        if !egress.socks && e.is_connect() {
            return Some(fail(
                FailureKind::Egress,
                format!(
                    "egress {} failed, so nothing is known about {at}: {}",
                    egress.name,
                    chain[1..].join(": ")
                ),
            ));
        }
        return None;
    }
    // What the proxy says about the target (SOCKS5 replies; a refused CONNECT).
    const TARGET_FAILURES: [(&str, FailureKind); 5] = [
        ("connection refused", FailureKind::Connect),
        ("host unreachable", FailureKind::Unreachable),
        ("network unreachable", FailureKind::Unreachable),
        ("ttl expired", FailureKind::Timeout),
        ("tunnel error: unsuccessful", FailureKind::Connect),
    ];
    for (marker, kind) in TARGET_FAILURES {
        let said = if socks {
            chain[1..].iter().any(|c| c.ends_with(marker))
        } else {
            words.contains(marker)
        };
        if said {
            let what = if tunnel {
                "the proxy could not open a tunnel to it".to_string()
            } else {
                format!("the proxy reports {marker}")
            };
            return Some(fail(
                kind,
                format!("{at} via egress {}: {what}", egress.name),
            ));
        }
    }
    Some(fail(
        FailureKind::Egress,
        format!(
            "egress {} failed, so nothing is known about {at}: {}",
            egress.name,
            chain[1..].join(": ")
        ),
    ))
}

/// The rustls error somewhere in `e`'s chain, if any. It sits inside io::Errors
/// (hyper-util and tokio-rustls each wrap it) whose source() skips it.
fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err.downcast_ref::<std::io::Error>().and_then(rustls_inside) {
            return Some(tls);
        }
        source = err.source();
    }
    None
}

fn rustls_inside(io: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    None
}

fn tls_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => format!("certificate {}", cert_problem(c)),
        other => other.to_string(),
    }
}

fn cert_problem(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::Expired | C::ExpiredContext { .. } => "has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet".into(),
        C::UnknownIssuer => {
            "is not signed by a trusted authority (self-signed or incomplete chain)".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "is not valid for this host name".into()
        }
        C::Revoked => "is revoked".into(),
        C::BadSignature => "has a bad signature".into(),
        other => format!("is not valid: {other:?}"),
    }
}
