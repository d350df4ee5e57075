//! Opening a tunnel: the connection to the proxy (TCP, or TLS for `https://` proxies),
//! its `CONNECT ip:port` over hyper's HTTP/1 client, and for https the TLS handshake
//! with the site over the tunnel, with the host name as SNI. A status line asked again
//! takes the same way from a TCP connection to the site, or one through a SOCKS5 proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::Url;

use super::error::{Refusal, Stage, TunnelError};
use super::heard::Heard;
use super::late::in_time;
use super::{Io, Proxy, SiteTls, SocksProxy, Tunnel, Via};
use crate::http::pin::Hop;

impl Tunnel {
    /// A connection to the site at `addr` through the proxy, TLS set up for https, with
    /// whether it speaks HTTP/2 and the site's certificate; with no `addr`, a tunnel the
    /// proxy is asked for by the URL's name (`by_name`). Every stage is done within
    /// `connect_timeout`, or the error says which was late (`late`: through a proxy,
    /// whether it was the proxy's doing).
    pub(super) async fn open(
        &self,
        url: &Url,
        addr: Option<SocketAddr>,
        connect_timeout: Duration,
        hop: &Hop,
    ) -> Result<(Box<dyn Io>, bool, Option<Vec<u8>>), TunnelError> {
        let until = Instant::now() + connect_timeout;
        let site = match addr {
            Some(addr) => addr.to_string(),
            None => by_name(url)?,
        };
        let late = TunnelError::ConnectTimeout;
        let tunnel: Box<dyn Io> = match (&self.via, addr) {
            (Via::Proxy(proxy), _) => {
                let to_proxy = in_time(proxy.reach(), until, late(Stage::Proxy)).await?;
                let connect = proxy.connect(to_proxy, &site);
                proxy
                    .in_time(connect, (until, late(Stage::Connect)), connect_timeout, hop)
                    .await?
            }
            (Via::Socks(socks), Some(addr)) => {
                in_time(socks.connect(addr), until, late(Stage::Connect)).await?
            }
            (Via::Direct, Some(addr)) => {
                let connect = async {
                    let tcp = TcpStream::connect(addr).await.map_err(TunnelError::Site)?;
                    let _ = tcp.set_nodelay(true);
                    Ok(tcp)
                };
                Box::new(in_time(connect, until, late(Stage::Connect)).await?)
            }
            (Via::Socks(_) | Via::Direct, None) => {
                return Err(TunnelError::Proxy(format!(
                    "{site}: only an HTTP proxy is asked by name"
                )))
            }
        };
        if url.scheme() != "https" {
            return Ok((tunnel, false, None));
        }
        let handshake = async {
            match &self.tls {
                SiteTls::Rustls(config) => rustls_handshake(config, url, tunnel).await,
                SiteTls::OpenSsl(handshake) => openssl_handshake(handshake, url, tunnel).await,
            }
        };
        match &self.via {
            Via::Proxy(proxy) => {
                proxy
                    .in_time(handshake, (until, late(Stage::Tls)), connect_timeout, hop)
                    .await
            }
            Via::Socks(_) | Via::Direct => in_time(handshake, until, late(Stage::Tls)).await,
        }
    }
}

/// TLS with the site over `tunnel` with rustls, the URL's host as SNI: the stream,
/// whether it speaks HTTP/2, and the site's certificate.
async fn rustls_handshake(
    config: &Arc<rustls::ClientConfig>,
    url: &Url,
    tunnel: Box<dyn Io>,
) -> Result<(Box<dyn Io>, bool, Option<Vec<u8>>), TunnelError> {
    let name = match url.host() {
        Some(url::Host::Domain(d)) => ServerName::try_from(d.to_string())
            .map_err(|e| TunnelError::Proxy(format!("{d} is no TLS server name: {e}")))?,
        Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
        Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
        None => return Err(TunnelError::Proxy(format!("{url} names no host"))),
    };
    let tls = tokio_rustls::TlsConnector::from(config.clone())
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

/// TLS with the site over `tunnel` with OpenSSL (HTTP/1.1 only), the URL's host as
/// SNI and the name checked: the stream, and the site's certificate.
async fn openssl_handshake(
    handshake: &tokio_native_tls::TlsConnector,
    url: &Url,
    tunnel: Box<dyn Io>,
) -> Result<(Box<dyn Io>, bool, Option<Vec<u8>>), TunnelError> {
    let Some(host) = url.host_str() else {
        return Err(TunnelError::Proxy(format!("{url} names no host")));
    };
    let tls = handshake
        .connect(bare_host(host), tunnel)
        .await
        .map_err(|e| TunnelError::Tls(std::io::Error::other(e)))?;
    let certificate = tls
        .get_ref()
        .peer_certificate()
        .ok()
        .flatten()
        .and_then(|c| c.to_der().ok());
    Ok((Box::new(tls), false, certificate))
}

impl Proxy {
    /// Why the proxy answers nothing, if it does not: asked on a connection of its own
    /// for a request any proxy answers itself at once (a path, not a URL: squid says
    /// "invalid URL", tinyproxy "bad request", a web server serves its page, a proxy for
    /// CONNECT alone closes), it says not a byte within `within`. `None`: it answered.
    pub(super) async fn silence(&self, within: Duration) -> Option<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let asked = async {
            let mut io = self.reach().await.map_err(|e| e.to_string())?;
            io.write_all(
                b"GET / HTTP/1.1\r\nHost: picket-egress-check.invalid\r\nConnection: close\r\n\r\n",
            )
            .await
            .map_err(|e| e.to_string())?;
            // Any word, or a close (a proxy that serves CONNECT alone closes the rest),
            // is a proxy at work; only silence is one hung.
            let mut byte = [0u8; 1];
            io.read(&mut byte)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(within, asked).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(format!("its proxy {}:{}: {why}", self.host, self.port)),
            Err(_) => Some(format!(
                "its proxy {}:{} did not answer a request of its own within {} ms",
                self.host,
                self.port,
                within.as_millis()
            )),
        }
    }

    /// A connection to the proxy: each of its addresses in turn until one answers.
    pub(super) async fn reach(&self) -> Result<Box<dyn Io>, TunnelError> {
        let bare = bare_host(&self.host);
        let addrs = addresses(bare, self.port, &self.resolve).await?;
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
            let Some(config) = &self.tls else {
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

    /// Asks the proxy on `proxy` for a tunnel to `site`: the literal address, or
    /// `name:port` when it is asked by name.
    pub(super) async fn connect(
        &self,
        proxy: Box<dyn Io>,
        site: &str,
    ) -> Result<Box<dyn Io>, TunnelError> {
        let (proxy, first) = Heard::new(proxy);
        // A proxy that answered before it was asked failed in its own words.
        let broken = |e: hyper::Error| match first.answer() {
            Some(answer) if answer.status() != StatusCode::OK => {
                TunnelError::Refused(Box::new(Refusal::of(&answer)))
            }
            _ => TunnelError::Proxy(format!("CONNECT failed: {e}")),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(TokioIo::new(proxy))
            .await
            .map_err(broken)?;
        let connect = self
            .connect_request(site)
            .map_err(|e| TunnelError::Proxy(format!("CONNECT {site}: {e}")))?;
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
            return Err(TunnelError::Refused(Box::new(Refusal::of(&answer))));
        }
        if !ended {
            // Hands the stream over to the upgrade, then ends.
            conn.as_mut().await.map_err(broken)?;
        }
        let upgraded = hyper::upgrade::on(answer).await.map_err(broken)?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }

    /// `CONNECT site` (`ip:port`, or `name:port`), with the proxy's credentials.
    fn connect_request(&self, site: &str) -> Result<http::Request<Empty<Bytes>>, http::Error> {
        let mut connect = http::Request::connect(site).header(http::header::HOST, site);
        if let Some(auth) = &self.auth {
            connect = connect.header(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        connect.body(Empty::new())
    }
}

impl SocksProxy {
    /// A connection to `addr` through the SOCKS5 proxy, asked for the address itself:
    /// each of the proxy's addresses in turn until one answers.
    async fn connect(&self, addr: SocketAddr) -> Result<Box<dyn Io>, TunnelError> {
        use hyper_util::client::legacy::connect::{proxy::SocksV5, HttpConnector};
        use tower_service::Service as _;
        let target: http::Uri = format!("http://{addr}")
            .parse()
            .map_err(|e| TunnelError::Proxy(format!("{addr} is no address to ask for: {e}")))?;
        let bare = bare_host(&self.host);
        let mut last = format!("no address for the proxy {bare}");
        for proxy in addresses(bare, self.port, &self.resolve).await? {
            let Ok(uri) = format!("socks5://{proxy}").parse::<http::Uri>() else {
                continue;
            };
            let mut tcp = HttpConnector::new();
            // The proxy's own URI is socks5://, which the connector refuses by default.
            tcp.enforce_http(false);
            tcp.set_nodelay(true);
            let mut socks = SocksV5::new(uri, tcp).local_dns(true);
            if let Some((user, password)) = &self.auth {
                socks = socks.with_auth(user.clone(), password.clone());
            }
            match socks.call(target.clone()).await {
                Ok(stream) => return Ok(Box::new(stream.into_inner())),
                Err(e) => last = format!("SOCKS5 proxy {proxy} to {addr}: {e}"),
            }
        }
        Err(TunnelError::Proxy(last))
    }
}

impl SocksProxy {
    /// Why the proxy is not answering, if it is not: each of its addresses is asked
    /// for a SOCKS5 greeting (RFC 1928's method selection, the first thing any SOCKS5
    /// proxy answers) within `within`. `None` when one of them answers it, or when its
    /// name cannot be looked up here (nothing is known then: the site's failure stands).
    pub(super) async fn silence(&self, within: Duration) -> Option<String> {
        let bare = bare_host(&self.host);
        let addrs = addresses(bare, self.port, &self.resolve).await.ok()?;
        let mut why = format!("no address for the proxy {bare}");
        for proxy in addrs {
            match tokio::time::timeout(within, self.greet(proxy)).await {
                Ok(Ok(())) => return None,
                Ok(Err(e)) => why = format!("SOCKS5 proxy {proxy}: {e}"),
                Err(_) => {
                    why = format!(
                        "SOCKS5 proxy {proxy} did not answer a greeting within {} ms",
                        within.as_millis()
                    )
                }
            }
        }
        Some(why)
    }

    /// One greeting: the method we would use offered, the proxy's choice read back.
    async fn greet(&self, proxy: SocketAddr) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // 0x00: no authentication; 0x02: user name and password (RFC 1929).
        let method = if self.auth.is_some() { 0x02 } else { 0x00 };
        let mut tcp = TcpStream::connect(proxy).await?;
        tcp.write_all(&[0x05, 0x01, method]).await?;
        let mut answer = [0u8; 2];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != 0x05 {
            return Err(std::io::Error::other(format!(
                "answered a SOCKS5 greeting with version {}",
                answer[0]
            )));
        }
        Ok(())
    }
}

/// `name:port` of `url`, to ask a proxy for a tunnel by name.
fn by_name(url: &Url) -> Result<String, TunnelError> {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => Ok(format!("{host}:{port}")),
        _ => Err(TunnelError::Proxy(format!("{url} names no host and port"))),
    }
}

/// A proxy's host as written, without the brackets of an IPv6 address.
fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The addresses of a proxy's host (an address, or a name looked up as reqwest would).
async fn addresses(
    bare: &str,
    port: u16,
    resolve: &Arc<dyn reqwest::dns::Resolve>,
) -> Result<Vec<SocketAddr>, TunnelError> {
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = bare
        .parse::<reqwest::dns::Name>()
        .map_err(|e| TunnelError::Proxy(format!("proxy host {bare} is not a name: {e}")))?;
    let found = resolve
        .resolve(name)
        .await
        .map_err(|e| TunnelError::Proxy(format!("the proxy's name {bare} did not resolve: {e}")))?;
    Ok(found.map(|a| SocketAddr::new(a.ip(), port)).collect())
}
