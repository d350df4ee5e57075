//! Requests through an HTTP-proxy egress, sent to the address picket counted.
//!
//! reqwest asks an HTTP proxy for the *name* (`CONNECT name:443`, `GET http://name/`),
//! and the proxy resolves it again: DNS rebinding or split-horizon DNS would take the
//! request past the address policy, to an address the per-IP limit never counted.
//! reqwest cannot ask for the address and still present the name to the site, so this
//! module does it beside reqwest with the crates reqwest is built on:
//!
//! 1. a TCP (or TLS, for `https://` proxies) connection to the proxy;
//! 2. `CONNECT ip:port` over hyper's HTTP/1 client, with `Proxy-Authorization` from the
//!    egress URL's userinfo; a refusal is read from the proxy's own status and markers
//!    (`X-Squid-Error`, RFC 9209 `Proxy-Status`), so the proxy failing is told from the
//!    site failing;
//! 3. for https, TLS over the tunnel with the probes' rustls configuration (roots, extra
//!    CA, ALPN h2 and http/1.1, no resumption) and the *host name* as SNI;
//! 4. the request over hyper's HTTP/1 or HTTP/2 client with the name in `Host` or
//!    `:authority`; the answer is decoded (gzip, br) by the decoder reqwest itself uses,
//!    bounded by the probe's deadline, and handed on as a `reqwest::Response`.
//!
//! Plain http goes through a tunnel too. The absolute form with the address
//! (`GET http://ip:port/` with `Host: name`) would lose the name: squid, like RFC 9112
//! asks of proxies, replaces `Host` with the request target's authority, so name-based
//! virtual hosts would answer for another site. A proxy must therefore allow CONNECT to
//! every port probed; one that refuses is the egress failing, never the site.
//!
//! The OpenSSL retry for servers speaking only legacy TLS is not made through these
//! egresses: the rustls failure is the verdict.

use std::error::Error as StdError;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, BoxFuture, Either};
use http::{HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::Url;

use super::client::{Egress, MAX_HEADER_LINES, MAX_HEADER_LIST_BYTES};
use super::fail;
use super::failure::{root_cause, rustls_inside, tls_problem};
use super::phase::MarkHello;
use super::pin::{pin_error, Hop, PinError};
use crate::config::EgressSettings;
use crate::probe::{FailureKind, Outcome, Plan};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A byte stream of either side of the tunnel (TCP or TLS, to the proxy or the site).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How one HTTP-proxy egress reaches sites.
pub(super) struct Tunnel {
    /// The proxy's host (a name or an address) and port.
    host: String,
    port: u16,
    /// The proxy is spoken to over TLS (`https://`), with this configuration.
    proxy_tls: Option<Arc<rustls::ClientConfig>>,
    /// `Proxy-Authorization` for the CONNECT, from the URL's userinfo.
    auth: Option<HeaderValue>,
    /// The shared clients' resolver: the proxy's name is looked up as reqwest would.
    resolve: Arc<dyn reqwest::dns::Resolve>,
    /// The probes' rustls configuration, with no resumption and the hello mark.
    tls: Arc<rustls::ClientConfig>,
}

impl Tunnel {
    /// The tunnel of `e` when it names an HTTP(S) proxy; `None` for the direct route and
    /// SOCKS (reqwest hands those the counted address itself).
    pub(super) fn for_egress(
        e: &EgressSettings,
        resolve: &Arc<dyn reqwest::dns::Resolve>,
        tls: &rustls::ClientConfig,
    ) -> Option<Tunnel> {
        let url = e.proxy.as_ref()?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let mut site_tls = tls.clone();
        // As on reqwest's path: every probe a first visitor, and the ClientHello marks
        // the end of connecting (here: TCP, the proxy, and its CONNECT).
        site_tls.resumption = rustls::client::Resumption::store(Arc::new(MarkHello));
        let proxy_tls = secure.then(|| {
            let mut c = tls.clone();
            // The proxy speaks HTTP/1.1 for CONNECT.
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        });
        Some(Tunnel {
            host: url.host_str()?.to_string(),
            port: url.port_or_known_default()?,
            proxy_tls,
            auth: basic_auth(url),
            resolve: resolve.clone(),
            tls: Arc::new(site_tls),
        })
    }

    /// Sends `request` to `addr` (the counted address) through the proxy, the URL's host
    /// as the name the site sees. The connection's stages must be done within
    /// `connect_timeout`, the answer's head and body within the request's timeout.
    ///
    /// # Errors
    /// See [`TunnelError`]; a request reqwest cannot build is [`SendError::Client`].
    pub(super) fn send<'a>(
        &'a self,
        request: reqwest::RequestBuilder,
        addr: SocketAddr,
        connect_timeout: Duration,
        hop: &'a Arc<Hop>,
    ) -> BoxFuture<'a, Result<reqwest::Response, SendError>> {
        // Boxed: the tunnel's future is large, and only HTTP-proxy egresses carry it.
        Box::pin(async move {
            let request = request.build().map_err(SendError::Client)?;
            let total = request.timeout().copied().unwrap_or(connect_timeout);
            let deadline = Instant::now() + total;
            let url = request.url().clone();
            let exchange = async move {
                let mut stage = Stage::Proxy;
                let opened =
                    tokio::time::timeout(connect_timeout, self.open(&url, addr, &mut stage)).await;
                let (io, h2, certificate) = match opened {
                    Err(_) => return Err(TunnelError::ConnectTimeout(stage)),
                    Ok(opened) => opened?,
                };
                let _ = hop.clock.connected.set(Instant::now());
                let answer = tokio::time::timeout_at(deadline, ask(io, h2, request))
                    .await
                    .map_err(|_| TunnelError::Timeout)??;
                Ok(answer_to_reqwest(answer, certificate, deadline).await)
            };
            hop.scope(exchange).await.map_err(SendError::Tunnel)
        })
    }

    /// A connection to the site at `addr` through the proxy, TLS set up for https, with
    /// whether it speaks HTTP/2 and the site's certificate. `stage` tells how far it got.
    async fn open(
        &self,
        url: &Url,
        addr: SocketAddr,
        stage: &mut Stage,
    ) -> Result<(Box<dyn Io>, bool, Option<Vec<u8>>), TunnelError> {
        let proxy = self.connect_proxy().await?;
        *stage = Stage::Connect;
        let tunnel = self.connect(proxy, addr).await?;
        if url.scheme() != "https" {
            return Ok((tunnel, false, None));
        }
        *stage = Stage::Tls;
        let name = match url.host() {
            Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string())
                .map_err(|e| TunnelError::Proxy(format!("{d} is no TLS server name: {e}")))?,
            _ => ServerName::IpAddress(addr.ip().into()),
        };
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tunnel)
            .await
            .map_err(TunnelError::Tls)?;
        let session = tls.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2");
        let certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        Ok((Box::new(tls), h2, certificate))
    }

    /// A connection to the proxy: each of its addresses in turn until one answers.
    async fn connect_proxy(&self) -> Result<Box<dyn Io>, TunnelError> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => {
                let name = bare.parse::<reqwest::dns::Name>().map_err(|e| {
                    TunnelError::Proxy(format!("proxy host {bare} is not a name: {e}"))
                })?;
                let found = self.resolve.resolve(name).await.map_err(|e| {
                    TunnelError::Proxy(format!("the proxy's name {bare} did not resolve: {e}"))
                })?;
                found.map(|a| SocketAddr::new(a.ip(), self.port)).collect()
            }
        };
        let mut last = format!("no address for the proxy {bare}");
        for a in addrs {
            let tcp = match TcpStream::connect(a).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    last = format!("proxy {a}: {e}");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = &self.proxy_tls else {
                return Ok(Box::new(tcp));
            };
            let name = ServerName::try_from(bare.to_string())
                .map_err(|e| TunnelError::Proxy(format!("proxy {bare}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| TunnelError::Proxy(format!("TLS with the proxy {a}: {e}")))?;
            return Ok(Box::new(tls));
        }
        Err(TunnelError::Proxy(last))
    }

    /// Asks the proxy on `proxy` for a tunnel to `addr`, the literal address.
    async fn connect(
        &self,
        proxy: Box<dyn Io>,
        addr: SocketAddr,
    ) -> Result<Box<dyn Io>, TunnelError> {
        let broken = |e: hyper::Error| TunnelError::Proxy(format!("CONNECT failed: {e}"));
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(proxy))
            .await
            .map_err(broken)?;
        let connect = self
            .connect_request(addr)
            .map_err(|e| TunnelError::Proxy(format!("CONNECT {addr}: {e}")))?;
        let mut conn = std::pin::pin!(conn.with_upgrades());
        // The connection is driven here, in the probe's task, until it hands the
        // stream over: nothing of it outlives the probe.
        let asked = Box::pin(sender.send_request(connect));
        // The connection may finish first: it ends as soon as it handed the stream to
        // the answer's upgrade (or the proxy closed it), and the answer is waiting then.
        let (answer, ended) = match select(asked, conn.as_mut()).await {
            Either::Left((answer, _)) => (answer.map_err(broken)?, false),
            Either::Right((ended, asked)) => {
                ended.map_err(broken)?;
                (asked.await.map_err(broken)?, true)
            }
        };
        if answer.status() != StatusCode::OK {
            return Err(TunnelError::Refused(Refusal::of(&answer)));
        }
        if !ended {
            // Hands the stream over to the upgrade, then ends.
            conn.as_mut().await.map_err(broken)?;
        }
        let upgraded = hyper::upgrade::on(answer).await.map_err(broken)?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }

    /// `CONNECT ip:port`, with the proxy's credentials.
    fn connect_request(
        &self,
        addr: SocketAddr,
    ) -> Result<http::Request<Empty<Bytes>>, http::Error> {
        let authority = addr.to_string();
        let mut connect = http::Request::connect(authority.as_str())
            .header(http::header::HOST, authority.as_str());
        if let Some(auth) = &self.auth {
            connect = connect.header(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        connect.body(Empty::new())
    }
}

/// `Proxy-Authorization: Basic …` from a proxy URL's (percent-encoded) userinfo.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or(""))
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Sends `request` over `io` with HTTP/2 or HTTP/1.1 and returns the answer's head.
async fn ask(
    io: Box<dyn Io>,
    h2: bool,
    request: reqwest::Request,
) -> Result<http::Response<Incoming>, TunnelError> {
    let url = request.url();
    let mut head = http::Request::builder().method(request.method().clone());
    let io = TokioIo::new(io);
    if h2 {
        // HTTP/2 takes the name from the absolute URI (`:authority`), as browsers send it.
        head = head.uri(url.as_str());
    } else {
        // Origin form, and the name in Host (with the port unless it is the default),
        // unless the job set its own Host, as on reqwest's path.
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        head = head.uri(path);
        if !request.headers().contains_key(http::header::HOST) {
            let host = match url.port() {
                Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_string(),
            };
            head = head.header(http::header::HOST, host);
        }
    }
    for (name, value) in request.headers() {
        head = head.header(name, value);
    }
    let built = head.body(Empty::<Bytes>::new()).map_err(|e| {
        TunnelError::Proxy(format!("the request for {url} could not be built: {e}"))
    })?;
    let answer = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .handshake(io)
            .await
            .map_err(TunnelError::Http)?;
        // Ends once the answer and the sender are dropped (pooling is off here too).
        tokio::spawn(conn);
        sender.send_request(built).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_headers(MAX_HEADER_LINES)
            .handshake(io)
            .await
            .map_err(TunnelError::Http)?;
        // Driven beside the probe while it reads the body; it ends when the body is
        // read or dropped, as the sender is gone by then.
        tokio::spawn(conn);
        sender.send_request(built).await
    };
    answer.map_err(TunnelError::Http)
}

/// The site's certificate as the tunnel's TLS saw it (reqwest's `TlsInfo` is its own).
#[derive(Clone)]
struct PeerCertificate(Vec<u8>);

/// The DER certificate of the site, when the answer came through a tunnel over TLS.
pub(super) fn peer_certificate(resp: &reqwest::Response) -> Option<&[u8]> {
    resp.extensions()
        .get::<PeerCertificate>()
        .map(|c| c.0.as_slice())
}

/// The answer as the rest of the prober expects it from reqwest: gzip and br decoded
/// (deflate is left to the prober, as on reqwest's path), the body bounded by the
/// probe's deadline, the certificate in the extensions.
async fn answer_to_reqwest(
    answer: http::Response<Incoming>,
    certificate: Option<Vec<u8>>,
    deadline: Instant,
) -> reqwest::Response {
    let decoded = decode(answer).await;
    let (mut parts, body) = decoded.into_parts();
    if let Some(der) = certificate {
        parts.extensions.insert(PeerCertificate(der));
    }
    let body = Deadline {
        inner: Box::pin(body),
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    };
    reqwest::Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
}

/// The decoder reqwest uses (tower-http's), driven through its `Service`: its body
/// type has no other public constructor.
async fn decode(
    answer: http::Response<Incoming>,
) -> http::Response<tower_http::decompression::DecompressionBody<Incoming>> {
    use tower_service::Service as _;
    let mut decoder = tower_http::decompression::Decompression::new(Given(Some(answer)))
        .no_deflate()
        .no_zstd();
    match decoder.call(http::Request::new(())).await {
        Ok(decoded) => decoded,
        Err(never) => match never {},
    }
}

/// A service that hands out the one answer it was given.
struct Given(Option<http::Response<Incoming>>);

impl tower_service::Service<http::Request<()>> for Given {
    type Response = http::Response<Incoming>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        match self.0.take() {
            Some(answer) => std::future::ready(Ok(answer)),
            // Called once, by `decode`.
            None => unreachable!("the answer was handed out already"),
        }
    }
}

/// A body that fails with `TimedOut` once the probe's deadline passed (reqwest's total
/// timeout does the same on its own path).
struct Deadline<B> {
    inner: Pin<Box<B>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let late =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the body ran out of time");
            return Poll::Ready(Some(Err(Box::new(late))));
        }
        self.inner.as_mut().poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How far a tunnel got when its connect time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Reaching the proxy.
    Proxy,
    /// Waiting for the proxy's answer to CONNECT (it is connecting to the site).
    Connect,
    /// The TLS handshake with the site.
    Tls,
}

/// Why a request through a tunnel got no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum TunnelError {
    /// The proxy could not be reached or broke off: nothing is known about the site.
    #[error("{0}")]
    Proxy(String),
    /// The proxy answered the CONNECT with something other than 200.
    #[error("the proxy answered CONNECT with {}", .0.status)]
    Refused(Refusal),
    /// The connection was not ready within the connect timeout.
    #[error("not connected in time ({0:?})")]
    ConnectTimeout(Stage),
    /// The TLS handshake with the site failed.
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange with the site failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// No answer within the probe's time.
    #[error("no answer in time")]
    Timeout,
}

/// A proxy's non-200 answer to CONNECT, with its own words about why.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    /// squid's `X-Squid-Error`, e.g. `ERR_CONNECT_FAIL 111` or `ERR_ACCESS_DENIED 0`.
    squid: Option<String>,
    /// An RFC 9209 `Proxy-Status` error, e.g. `connection_refused`.
    proxy_status: Option<String>,
}

impl Refusal {
    fn of<B>(answer: &http::Response<B>) -> Refusal {
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Refusal {
            status: answer.status(),
            squid: header("x-squid-error"),
            proxy_status: header("proxy-status").and_then(|v| {
                let (_, after) = v.split_once("error=")?;
                Some(
                    after
                        .split([';', ','])
                        .next()?
                        .trim()
                        .trim_matches('"')
                        .to_string(),
                )
            }),
        }
    }

    /// What the site did, when the proxy says the site is why (else `None`: the proxy
    /// refused for its own reasons).
    fn site_failure(&self) -> Option<(FailureKind, &'static str)> {
        let squid = self.squid.as_deref().unwrap_or("");
        let code = squid.strip_prefix("ERR_CONNECT_FAIL ").map(str::trim);
        let said = self.proxy_status.as_deref();
        if code == Some("111") || said == Some("connection_refused") {
            return Some((FailureKind::Connect, "the proxy reports connection refused"));
        }
        if matches!(code, Some("101" | "113")) || said == Some("destination_ip_unroutable") {
            return Some((FailureKind::Unreachable, "the proxy reports no route to it"));
        }
        if code == Some("110")
            || squid.starts_with("ERR_READ_TIMEOUT")
            || said == Some("connection_timeout")
        {
            return Some((
                FailureKind::Timeout,
                "the proxy got no connection to it in time",
            ));
        }
        if self.squid.is_some() || self.proxy_status.is_some() {
            return None;
        }
        // A proxy that says nothing more: a gateway error is the site's, as before.
        match self.status.as_u16() {
            502 | 503 => Some((
                FailureKind::Connect,
                "the proxy could not open a tunnel to it",
            )),
            504 => Some((
                FailureKind::Timeout,
                "the proxy got no connection to it in time",
            )),
            _ => None,
        }
    }
}

impl TunnelError {
    /// Whether the next address of the site is worth trying (the site's connect failed).
    fn is_connect(&self) -> bool {
        match self {
            TunnelError::Refused(r) => r.site_failure().is_some(),
            TunnelError::ConnectTimeout(stage) => *stage != Stage::Proxy,
            TunnelError::Tls(_) => true,
            TunnelError::Proxy(_) | TunnelError::Http(_) | TunnelError::Timeout => false,
        }
    }

    fn classify(&self, at: &str, plan: &Plan, egress: &Egress) -> Outcome {
        let proxy_failed = |why: String| {
            fail(
                FailureKind::Egress,
                format!(
                    "egress {} failed, so nothing is known about {at}: {why}",
                    egress.name
                ),
            )
        };
        let connect_ms = plan.connect_timeout.as_millis();
        match self {
            TunnelError::Proxy(why) => proxy_failed(why.clone()),
            TunnelError::Refused(r) => match r.site_failure() {
                Some((kind, what)) => {
                    fail(kind, format!("{at} via egress {}: {what}", egress.name))
                }
                None => proxy_failed(format!(
                    "the proxy refused the tunnel itself ({}{}); the site was not asked",
                    r.status,
                    r.squid
                        .as_deref()
                        .or(r.proxy_status.as_deref())
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default()
                )),
            },
            TunnelError::ConnectTimeout(Stage::Proxy) => {
                proxy_failed(format!("no connection to the proxy within {connect_ms} ms"))
            }
            TunnelError::ConnectTimeout(_) => fail(
                FailureKind::Timeout,
                format!(
                    "{at}: no connection within {connect_ms} ms (through egress {})",
                    egress.name
                ),
            ),
            TunnelError::Tls(io) => match rustls_inside(io) {
                Some(tls) => fail(
                    FailureKind::Tls,
                    format!("{at}: TLS failed: {}", tls_problem(tls)),
                ),
                None => site_failure(io, at),
            },
            TunnelError::Http(e) => site_failure(e, at),
            TunnelError::Timeout => fail(
                FailureKind::Timeout,
                format!("{at}: no answer within {} ms", plan.timeout.as_millis()),
            ),
        }
    }
}

/// A failure of the site's connection inside the tunnel, sorted by its I/O kind as
/// `failure::classify` sorts reqwest's errors.
fn site_failure(e: &(dyn StdError + 'static), at: &str) -> Outcome {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let found = match io.kind() {
                K::ConnectionReset => Some((FailureKind::Reset, "connection reset by the server")),
                K::ConnectionAborted => Some((FailureKind::Reset, "connection aborted")),
                K::UnexpectedEof => {
                    Some((FailureKind::Connect, "connection closed before an answer"))
                }
                _ => None,
            };
            if let Some((kind, what)) = found {
                return fail(kind, format!("{at}: {what}"));
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return fail(
                    FailureKind::Connect,
                    format!("{at}: connection closed before an answer"),
                );
            }
        }
        source = err.source();
    }
    let cause = root_cause(e);
    let kind = if cause.contains("reset") {
        FailureKind::Reset
    } else if cause.contains("closed") || cause.contains("incomplete") {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    };
    fail(kind, format!("{at}: {cause}"))
}

/// Why sending one request to one address failed, on either path.
#[derive(Debug)]
pub(super) enum SendError {
    /// reqwest's path (direct and SOCKS egresses).
    Client(reqwest::Error),
    /// The tunnel through an HTTP proxy.
    Tunnel(TunnelError),
}

impl SendError {
    /// The pinning layer's refusal, if that is why (reqwest's path only: the tunnel asks
    /// for the literal address and needs no pin).
    pub(super) fn pin_error(&self) -> Option<&PinError> {
        match self {
            SendError::Client(e) => pin_error(e),
            SendError::Tunnel(_) => None,
        }
    }

    /// Whether the connection to the site failed (the next address is tried).
    pub(super) fn is_connect(&self) -> bool {
        match self {
            SendError::Client(e) => e.is_connect(),
            SendError::Tunnel(e) => e.is_connect(),
        }
    }

    /// Whether the site's address refused the TCP connection itself. Through a tunnel
    /// the proxy connects, and its report of a refusal is an answer, not ours to see.
    pub(super) fn connection_refused(&self) -> bool {
        match self {
            SendError::Client(e) => super::failure::connection_refused(e),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether the OpenSSL retry applies: never through a tunnel (module docs).
    pub(super) fn no_common_tls(&self) -> bool {
        match self {
            SendError::Client(e) => super::failure::no_common_tls(e),
            SendError::Tunnel(_) => false,
        }
    }

    /// The failure this is, in the prober's terms.
    pub(super) fn classify(
        &self,
        host: &str,
        ip: IpAddr,
        port: u16,
        plan: &Plan,
        egress: &Egress,
    ) -> Outcome {
        match self {
            SendError::Client(e) => super::failure::classify(e, host, ip, port, plan, egress),
            SendError::Tunnel(e) => e.classify(&format!("{host} ({ip}:{port})"), plan, egress),
        }
    }
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> SendError {
        SendError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, headers: &[(&str, &str)]) -> Refusal {
        let mut answer = http::Response::builder().status(status);
        for (k, v) in headers {
            answer = answer.header(*k, *v);
        }
        Refusal::of(&answer.body(()).expect("answer"))
    }

    #[test]
    fn a_refused_connect_is_the_sites_only_when_the_proxy_says_the_site_is_why() {
        let kind = |r: Refusal| r.site_failure().map(|(k, _)| k);
        let squid = |code: &str| refusal(503, &[("X-Squid-Error", code)]);
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 111")),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 113")),
            Some(FailureKind::Unreachable)
        );
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 110")),
            Some(FailureKind::Timeout)
        );
        // squid's own refusals: the egress, not the site.
        assert_eq!(
            kind(refusal(403, &[("X-Squid-Error", "ERR_ACCESS_DENIED 0")])),
            None
        );
        assert_eq!(kind(refusal(407, &[])), None);
        assert_eq!(kind(refusal(403, &[])), None);
        assert_eq!(kind(squid("ERR_DNS_FAIL 0")), None);
        let status = |v: &str| refusal(502, &[("Proxy-Status", v)]);
        assert_eq!(
            kind(status("proxy.example; error=connection_refused")),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            kind(status("proxy.example; error=http_request_denied")),
            None
        );
        // A bare gateway error, as from a plain proxy: the site's, as before.
        assert_eq!(kind(refusal(502, &[])), Some(FailureKind::Connect));
        assert_eq!(kind(refusal(504, &[])), Some(FailureKind::Timeout));
    }

    #[test]
    fn proxy_credentials_come_from_the_urls_userinfo() {
        let url = Url::parse("http://us%40er:p%3Ass@proxy.example:3128").expect("url");
        let value = basic_auth(&url).expect("credentials");
        // base64("us@er:p:ss")
        assert_eq!(value.to_str().expect("ascii"), "Basic dXNAZXI6cDpzcw==");
        assert!(value.is_sensitive());
        assert!(basic_auth(&Url::parse("http://proxy.example:3128").expect("url")).is_none());
    }
}
