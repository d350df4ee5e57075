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
//!    `:authority`; the answer is decoded (br, zstd) by the decoder reqwest itself uses,
//!    bounded by the probe's deadline, and handed on as a `reqwest::Response`.
//!
//! Plain http goes through a tunnel too. The absolute form with the address
//! (`GET http://ip:port/` with `Host: name`) would lose the name: squid, like RFC 9112
//! asks of proxies, replaces `Host` with the request target's authority, so name-based
//! virtual hosts would answer for another site. A proxy that refuses a tunnel to the
//! address (most ship allowing CONNECT to 443 only; allow lists name sites) is asked by
//! name instead (`by_name`), unless the egress says `by_name = "never"`; so is one that
//! closes a plain-http tunnel without an answer (a proxy that intercepts TLS takes every
//! tunnel for TLS).
//!
//! The OpenSSL retry for servers speaking only legacy TLS takes the same tunnel, with
//! OpenSSL's handshake in place of rustls's ([`Tunnel::over_openssl`]).
//!
//! The same client also asks again, directly or through a SOCKS5 egress's proxy, a
//! request whose head or chunks reqwest's client could not read ([`Tunnel::mended`]):
//! it reads every answer's head and chunks as browsers do (`mend`, `chunks`).
//!
//! # Layout
//! - here: the [`Tunnel`] of an egress and [`Tunnel::send`], one request's way through it;
//! - `open`: the connection to the proxy, its `CONNECT ip:port`, and TLS with the site;
//! - `answer`: the request over HTTP/1 or HTTP/2, and its answer decoded and bounded by
//!   the deadline as a `reqwest::Response`;
//! - `by_name`: a URL asked of a proxy that refuses a tunnel to the counted address;
//! - `mend`: the HTTP/1 answer's head as browsers read it, and `chunks` its chunked
//!   body's framing;
//! - `error`: [`TunnelError`] and [`SendError`], and what each failure is in the
//!   prober's terms (the proxy's, or the site's); `words`: what proxies that mark their
//!   pages with no header say in their reason phrases, and their page for a host that
//!   does not exist;
//! - `intercept`: whether the proxy intercepts TLS (it makes up a certificate for a host
//!   that does not exist), so that a certificate it made up is not judged as the site's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use url::Url;

use super::head::{MAX_HEADER_LINES, MAX_HEADER_LINES_MENDED};
use super::pin::Hop;
use super::pin::MarkHello;
use crate::config::{ByName, EgressSettings};

mod answer;
mod by_name;
mod chunks;
mod error;
mod heard;
mod intercept;
mod late;
mod mend;
mod open;
mod words;

use answer::{answer_to_reqwest, ask, Form};
pub(super) use by_name::{stale_copy, AskedByName, NoTunnel};
pub(super) use error::SendError;
use error::TunnelError;
pub(super) use late::OWN_QUESTION_TIME;
pub(super) use mend::{MendedChunks, MendedLine};

/// A byte stream of either side of the tunnel (TCP or TLS, to the proxy or the site).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How requests reach sites through one HTTP-proxy egress, or, to be asked again when
/// reqwest's client could not read a head, directly or through a SOCKS5 proxy
/// ([`Tunnel::mended`]): the answers are read by hyper's own HTTP/1 client here, which
/// is handed the head as browsers read it (`mend`).
pub(super) struct Tunnel {
    /// What every connection goes through.
    via: Via,
    /// The TLS handshake with the site.
    tls: SiteTls,
    /// Header lines of an answer it reads: a proxy's tunnel asks every request, the
    /// mending routes only those whose head the first client could not read.
    head_lines: usize,
}

/// The TLS a tunnel speaks with the site.
enum SiteTls {
    /// The probes' rustls configuration, with no resumption and the hello mark.
    Rustls(Arc<rustls::ClientConfig>),
    /// OpenSSL, for a server that speaks only legacy TLS (the egress's `Legacy`).
    OpenSsl(tokio_native_tls::TlsConnector),
}

/// The way to the site's address.
enum Via {
    /// A TCP connection to it.
    Direct,
    /// A tunnel from an HTTP(S) proxy (`CONNECT ip:port`).
    Proxy(Arc<Proxy>),
    /// A SOCKS5 proxy, asked for the address (hyper-util's connector, as reqwest's).
    Socks(SocksProxy),
}

/// A SOCKS5 proxy and its credentials.
struct SocksProxy {
    host: String,
    port: u16,
    auth: Option<(String, String)>,
    /// The shared clients' resolver: the proxy's name is looked up as reqwest would.
    resolve: Arc<dyn reqwest::dns::Resolve>,
}

/// An HTTP(S) proxy, and what it takes to be asked for a tunnel.
struct Proxy {
    /// The proxy's host (a name or an address) and port.
    host: String,
    port: u16,
    /// The proxy is spoken to over TLS (`https://`), with this configuration.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// `Proxy-Authorization` for the CONNECT, from the URL's userinfo.
    auth: Option<HeaderValue>,
    /// The shared clients' resolver: the proxy's name is looked up as reqwest would.
    resolve: Arc<dyn reqwest::dns::Resolve>,
    /// A URL is asked by name when the proxy refuses a tunnel to the counted address.
    by_name: bool,
    /// The ports whose tunnels to an address lately failed, when and why (`by_name`).
    no_tunnel: std::sync::Mutex<std::collections::HashMap<u16, (Instant, NoTunnel)>>,
    /// What the proxy answers for a host that does not exist, and when that was found;
    /// held while it is being found, so that a burst of probes asks it once.
    no_such_host: tokio::sync::Mutex<Option<(Instant, by_name::NoSuchHost)>>,
    /// What the proxy does with a tunnel to a host that does not exist (whether it
    /// intercepts TLS, and whose certificates it makes up), and when that was found
    /// (`intercept`).
    intercepts: tokio::sync::Mutex<Option<(Instant, intercept::Stranger)>>,
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
        let proxy_tls = secure.then(|| {
            let mut c = tls.clone();
            // The proxy speaks HTTP/1.1 for CONNECT.
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        });
        Some(Tunnel {
            via: Via::Proxy(Arc::new(Proxy {
                host: url.host_str()?.to_string(),
                port: url.port_or_known_default()?,
                tls: proxy_tls,
                auth: basic_auth(url),
                resolve: resolve.clone(),
                by_name: e.by_name == ByName::WhenRefused,
                no_tunnel: Default::default(),
                no_such_host: Default::default(),
                intercepts: Default::default(),
            })),
            tls: SiteTls::Rustls(site_tls(tls)),
            head_lines: MAX_HEADER_LINES,
        })
    }

    /// The route on which a request of egress `e` is asked again when reqwest's client
    /// could not read the answer's head or chunks: directly, or through `e`'s SOCKS5
    /// proxy. `None` for an HTTP-proxy egress, whose tunnel reads them as browsers do
    /// from the start (but for a head's length: [`Tunnel::reading_long_heads`]).
    pub(super) fn mended(
        e: &EgressSettings,
        resolve: &Arc<dyn reqwest::dns::Resolve>,
        tls: &rustls::ClientConfig,
    ) -> Option<Tunnel> {
        let via = match &e.proxy {
            None => Via::Direct,
            Some(url) if url.scheme().starts_with("socks5") => Via::Socks(SocksProxy {
                host: url.host_str()?.to_string(),
                port: url.port_or_known_default()?,
                auth: userinfo(url),
                resolve: resolve.clone(),
            }),
            Some(_) => return None,
        };
        Some(Tunnel {
            via,
            tls: SiteTls::Rustls(site_tls(tls)),
            head_lines: MAX_HEADER_LINES_MENDED,
        })
    }

    /// The same proxy's tunnel reading heads as long as browsers take them: where an
    /// HTTP-proxy egress asks again a request whose head had more lines than its
    /// tunnel reads. `None` for the other routes.
    pub(super) fn reading_long_heads(&self) -> Option<Tunnel> {
        let SiteTls::Rustls(tls) = &self.tls else {
            return None;
        };
        self.through_proxy(SiteTls::Rustls(Arc::clone(tls)), MAX_HEADER_LINES_MENDED)
    }

    /// The same proxy's tunnel with OpenSSL's `handshake` for the site: where an
    /// HTTP-proxy egress asks again a server that shares no TLS with rustls (reqwest's
    /// OpenSSL client would ask the proxy for the name). `None` for the other routes,
    /// where reqwest's OpenSSL client is handed the counted address.
    pub(super) fn over_openssl(&self, handshake: tokio_native_tls::TlsConnector) -> Option<Tunnel> {
        self.through_proxy(SiteTls::OpenSsl(handshake), self.head_lines)
    }

    /// This tunnel's proxy, shared, with another TLS or head length.
    fn through_proxy(&self, tls: SiteTls, head_lines: usize) -> Option<Tunnel> {
        match &self.via {
            Via::Proxy(proxy) => Some(Tunnel {
                via: Via::Proxy(Arc::clone(proxy)),
                tls,
                head_lines,
            }),
            Via::Direct | Via::Socks(_) => None,
        }
    }

    /// Sends `request` to `addr` (the counted address) on its route, the URL's host as
    /// the name the site sees. The connection's stages must be done within
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
        // Boxed: the tunnel's future is large, and only HTTP-proxy egresses (and a status
        // line asked again) carry it.
        Box::pin(async move {
            let sent = self.send_pinned(request, addr, connect_timeout, hop).await;
            match sent {
                Err(SendError::Tunnel(TunnelError::Tls(e))) => Err(SendError::Tunnel(
                    self.intercepted(e, connect_timeout, hop).await,
                )),
                sent => sent,
            }
        })
    }

    /// A TLS failure through the tunnel: the site's, or the egress failing when the
    /// proxy had a hand in it (`intercept`).
    async fn intercepted(
        &self,
        e: std::io::Error,
        connect_timeout: Duration,
        hop: &Hop,
    ) -> TunnelError {
        match &self.via {
            Via::Proxy(proxy) => proxy.tls_failure(e, connect_timeout, hop.leaf.get()).await,
            _ => TunnelError::Tls(e),
        }
    }

    /// [`Tunnel::send`], its TLS failures as they are.
    async fn send_pinned(
        &self,
        request: reqwest::RequestBuilder,
        addr: SocketAddr,
        connect_timeout: Duration,
        hop: &Arc<Hop>,
    ) -> Result<reqwest::Response, SendError> {
        let request = request.build().map_err(SendError::Client)?;
        let total = request.timeout().copied().unwrap_or(connect_timeout);
        let mut deadline = Instant::now() + total;
        let by_name = self.by_name();
        let port = request.url().port_or_known_default().unwrap_or(80);
        if let Some((proxy, why)) = by_name.and_then(|p| Some((p, p.no_tunnel_lately(port)?))) {
            let asked = self.asked_by_name(proxy, request, (connect_timeout, deadline), why, hop);
            return hop.scope(asked).await.map_err(SendError::Tunnel);
        }
        let plain = request.url().scheme() == "http";
        let again = by_name.and_then(|_| request.try_clone());
        let tunnelled = self.tunnelled(request, Some(addr), connect_timeout, deadline, hop);
        match (hop.scope(tunnelled).await, by_name.zip(again)) {
            (Err(TunnelError::Refused(r)), Some((proxy, again))) if r.refuses_tunnels() => {
                let forwards = proxy.forwards(connect_timeout);
                if !our_question(forwards, &mut deadline, hop).await {
                    return Err(SendError::Tunnel(TunnelError::Proxy(format!(
                        "it refused the tunnel ({}), and asked by name for a host that does not exist it served a page: a web server, not a proxy",
                        r.status()
                    ))));
                }
                proxy.remember(port, NoTunnel::Refused);
                let asked = self.asked_by_name(
                    proxy,
                    again,
                    (connect_timeout, deadline),
                    NoTunnel::Refused,
                    hop,
                );
                hop.scope(asked).await
            }
            // A proxy that intercepts TLS takes every tunnel for TLS and closes one
            // that carries plain http; asked by name, as browsers ask, it forwards
            // the request. Only a proxy that answers a tunnel before it connects it
            // can: through one that connects first, the close is the site's (a reset,
            // an empty reply), and one site's must not move its port off the counted
            // address. A site that closes without an answer is reported so by the
            // proxy asked by name too, and its port keeps its tunnels.
            (Err(TunnelError::Http(e)), Some((proxy, again)))
                if plain && e.is_incomplete_message() =>
            {
                if !self
                    .takes_tunnels_for_tls(proxy, connect_timeout, &mut deadline, hop)
                    .await
                {
                    return Err(SendError::Tunnel(TunnelError::Http(e)));
                }
                let why = NoTunnel::ClosedPlain;
                let asked =
                    self.asked_by_name(proxy, again, (connect_timeout, deadline), why, hop);
                let asked = hop.scope(asked).await;
                if asked.is_ok() {
                    proxy.remember(port, why);
                }
                asked
            }
            (result, _) => result,
        }
        .map_err(SendError::Tunnel)
    }

    /// For a SOCKS5 egress, why its proxy answers nothing, if it does not (asked when a
    /// connection through it was not made in time: reqwest's SOCKS connect is one step
    /// to us, so a hung proxy would look like a site that never answers). `None` when
    /// the proxy answers, or this is no SOCKS route.
    pub(super) async fn socks_silence(&self, within: Duration) -> Option<String> {
        match &self.via {
            Via::Socks(socks) => socks.silence(within).await,
            Via::Direct | Via::Proxy(_) => None,
        }
    }

    /// The proxy to ask by name should it refuse a tunnel to the counted address
    /// (`egress.by_name`), if any.
    fn by_name(&self) -> Option<&Proxy> {
        match &self.via {
            Via::Proxy(p) if p.by_name => Some(p),
            _ => None,
        }
    }

    /// Whether `proxy` may close a plain-http tunnel by itself: it answers a tunnel
    /// before it connects it ([`Proxy::stranger`]), and forwards what it is asked by
    /// name. Our own questions, not the site's time, so the request's `deadline` moves
    /// by their time.
    async fn takes_tunnels_for_tls(
        &self,
        proxy: &Proxy,
        connect_timeout: Duration,
        deadline: &mut Instant,
        hop: &Hop,
    ) -> bool {
        let question = async {
            proxy.stranger(connect_timeout).await.answers_first()
                && proxy.forwards(connect_timeout).await
        };
        our_question(question, deadline, hop).await
    }

    /// `request` asked of `proxy` by name (`by_name`), as its tunnels to the address
    /// fail (`why`): https through `CONNECT name:port`, plain http in absolute form,
    /// connected within the connect timeout and answered by the deadline (`within`). The
    /// answer is marked [`AskedByName`].
    async fn asked_by_name(
        &self,
        proxy: &Proxy,
        request: reqwest::Request,
        (connect_timeout, deadline): (Duration, Instant),
        why: NoTunnel,
        hop: &Hop,
    ) -> Result<reqwest::Response, TunnelError> {
        let port = request.url().port_or_known_default().unwrap_or(80);
        let mut answer = if request.url().scheme() == "https" {
            match self
                .tunnelled(request, None, connect_timeout, deadline, hop)
                .await
            {
                Err(TunnelError::Refused(r)) => {
                    let own = proxy.own_page(connect_timeout).await;
                    return Err(TunnelError::Refused(Box::new(r.against(own.as_ref()))));
                }
                answer => answer?,
            }
        } else {
            proxy
                .forward(request, connect_timeout, deadline, hop)
                .await?
        };
        answer.extensions_mut().insert(AskedByName { port, why });
        Ok(answer)
    }

    /// `request` through a connection to the site at `addr` (a tunnel, for a proxy), or
    /// with no address a tunnel the proxy is asked for by the URL's name.
    async fn tunnelled(
        &self,
        request: reqwest::Request,
        addr: Option<SocketAddr>,
        connect_timeout: Duration,
        deadline: Instant,
        hop: &Hop,
    ) -> Result<reqwest::Response, TunnelError> {
        let (io, h2, certificate) = self.open(request.url(), addr, connect_timeout, hop).await?;
        let _ = hop.clock.connected.set(Instant::now());
        let form = if h2 { Form::H2 } else { Form::Origin };
        let asked = ask(io, form, request, self.head_lines);
        let answer = match &self.via {
            Via::Proxy(proxy) => {
                let late = (deadline, TunnelError::Timeout);
                proxy.in_time(asked, late, connect_timeout, hop).await?
            }
            Via::Socks(_) | Via::Direct => {
                late::in_time(asked, deadline, TunnelError::Timeout).await?
            }
        };
        Ok(answer_to_reqwest(answer, certificate, deadline).await)
    }
}

/// `question` to the egress about itself: our time, not the site's, noted on `hop`, and
/// the request's `deadline` moves by it.
async fn our_question<T>(
    question: impl std::future::Future<Output = T>,
    deadline: &mut Instant,
    hop: &Hop,
) -> T {
    let asking = Instant::now();
    let answer = question.await;
    hop.clock.checked(asking.elapsed());
    *deadline += asking.elapsed();
    answer
}

/// The probes' rustls configuration as reqwest's path has it: every probe a first
/// visitor, and the ClientHello marks the end of connecting (here: TCP, the proxy and
/// its CONNECT).
fn site_tls(tls: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut site = tls.clone();
    site.resumption = rustls::client::Resumption::store(Arc::new(MarkHello));
    Arc::new(site)
}

/// The user name and password of a proxy URL's (percent-encoded) userinfo.
fn userinfo(url: &Url) -> Option<(String, String)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((decode(url.username()), decode(url.password().unwrap_or(""))))
}

/// `Proxy-Authorization: Basic …` from a proxy URL's (percent-encoded) userinfo.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    let (user, password) = userinfo(url)?;
    let pair = format!("{user}:{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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
