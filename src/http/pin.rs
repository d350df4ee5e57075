//! Pinning the requests of shared clients to the address the limiter counted.
//!
//! A reqwest client is built once per egress and TLS mode and serves every probe, so
//! what used to be per-hop client settings (the pinned address, the connect timeout,
//! the phase clock) travels with the request instead: the hop's [`Hop`] is a tokio
//! task-local for the duration of `send()`. Pooling is off, so hyper-util connects
//! inside the request's own future (never in a spawned task) and both hooks below run
//! in the probe's task and see its `Hop`:
//!
//! - [`PinnedResolver`] answers the hop's host name with exactly the counted address
//!   (other names, a proxy's, go to the real resolver);
//! - [`PinLayer`] wraps reqwest's connector: it applies the hop's connect timeout,
//!   notes when the connection is ready, and fails closed when the connection reached
//!   another peer than the counted one (before a byte of the request is written);
//! - [`MarkHello`], the rustls session store, notes when the ClientHello is built.
//!
//! Outside a hop's scope the resolver and the layer refuse to work: a request that was
//! not counted is never sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use rustls::pki_types::ServerName;
use tokio::time::Instant;

use super::phase::PhaseClock;
use crate::dns::{ProxyNameResolver, Resolver};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    static HOP: Arc<Hop>;
}

/// How the connection of a hop reaches the site, which decides what can be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Straight to the site: the peer must be the counted address.
    Direct,
    /// Through a SOCKS5 proxy that is given the address we resolved: the proxy is the
    /// peer, and our resolver must have been asked for the host.
    SocksLocal,
    /// Through a proxy that resolves the name itself (HTTP, socks5h): not pinnable.
    ProxyResolves,
}

/// One hop's request: where it must go and what its connection saw.
pub(super) struct Hop {
    host: String,
    addr: SocketAddr,
    connect_timeout: Duration,
    route: Route,
    /// The host is an IP literal: no resolver is asked, the peer check still holds.
    literal: bool,
    /// Our resolver handed the counted address out for this hop.
    resolved: AtomicBool,
    /// When the connection was up and when it was ready.
    pub(super) clock: PhaseClock,
    /// The site's certificate (DER), as the TLS verifier saw it: reqwest keeps none on
    /// its SOCKS path.
    pub(super) leaf: OnceLock<Vec<u8>>,
}

impl Hop {
    pub(super) fn new(
        host: &str,
        addr: SocketAddr,
        connect_timeout: Duration,
        route: Route,
    ) -> Arc<Hop> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        Arc::new(Hop {
            literal: bare.parse::<std::net::IpAddr>().is_ok(),
            host: host.to_string(),
            addr,
            connect_timeout,
            route,
            resolved: AtomicBool::new(false),
            clock: PhaseClock::default(),
            leaf: OnceLock::new(),
        })
    }

    /// The time its connection has to be ready in.
    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Runs `fut` (a request's `send()`) with this hop as the pinning context.
    pub(super) async fn scope<F: std::future::Future>(self: &Arc<Self>, fut: F) -> F::Output {
        HOP.scope(self.clone(), fut).await
    }

    /// Whether the connection `conn` reached may carry this hop's request.
    fn check(&self, peer: Option<SocketAddr>) -> Result<(), PinError> {
        match self.route {
            Route::Direct if peer != Some(self.addr) => Err(PinError::Peer {
                counted: self.addr,
                reached: peer,
            }),
            Route::Direct | Route::ProxyResolves => Ok(()),
            Route::SocksLocal => self.check_resolved(),
        }
    }

    /// Whether the connection, whose socket's peer is `peer`, may carry this hop's request.
    ///
    /// Straight to the site, a socket with no peer any more was reset as soon as it was
    /// accepted (haproxy's `tcp-request connection reject`, a firewall resetting new
    /// connections): the site's reset, with nothing sent, not a connection gone astray.
    fn admit(&self, peer: Option<SocketAddr>) -> Result<(), BoxError> {
        if peer.is_none() && self.route == Route::Direct {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset as it was accepted",
            )));
        }
        self.check(peer).map_err(|e| Box::new(e) as BoxError)
    }

    /// A failed connect is the site's only when it was made to the counted address.
    fn check_failed(&self) -> Result<(), PinError> {
        match self.route {
            Route::Direct | Route::SocksLocal => self.check_resolved(),
            Route::ProxyResolves => Ok(()),
        }
    }

    fn check_resolved(&self) -> Result<(), PinError> {
        if self.literal || self.resolved.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(PinError::NotResolved {
                host: self.host.clone(),
            })
        }
    }
}

/// The hop whose request the current task is sending, if any.
pub(super) fn current() -> Option<Arc<Hop>> {
    HOP.try_with(Arc::clone).ok()
}

/// A session store that keeps nothing (every probe is a first visitor: a resumed
/// session would skip the certificate check) and notes when rustls first asks it, in
/// the clock of the hop being sent.
#[derive(Debug)]
pub(super) struct MarkHello;

impl MarkHello {
    fn mark(&self) {
        if let Some(hop) = current() {
            let _ = hop.clock.hello.set(Instant::now());
        }
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

/// The connection would not have gone where the limiter counted: our fault, never the
/// site's.
#[derive(Debug, thiserror::Error)]
pub(super) enum PinError {
    /// A request outside any hop's scope (a bug in picket).
    #[error("a connection was asked for outside a counted hop")]
    NoHop,
    /// The connection reached another peer than the counted address.
    #[error("the connection reached {reached:?}, not the counted address {counted}")]
    Peer {
        /// The address the limiter counted.
        counted: SocketAddr,
        /// Where the connection went.
        reached: Option<SocketAddr>,
    },
    /// The connection was made without our resolver handing out the counted address.
    #[error("{host} was not resolved to the counted address before connecting")]
    NotResolved {
        /// The hop's host.
        host: String,
    },
}

/// The pin error in a request error's source chain, if that is why it failed.
pub(super) fn pin_error(e: &reqwest::Error) -> Option<&PinError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(pin) = err.downcast_ref::<PinError>() {
            return Some(pin);
        }
        source = err.source();
    }
    None
}

/// The shared clients' resolver: the hop's host resolves to the counted address only.
pub(super) struct PinnedResolver(pub(super) ProxyNameResolver);

impl PinnedResolver {
    pub(super) fn new(resolver: Resolver) -> PinnedResolver {
        PinnedResolver(ProxyNameResolver(resolver))
    }
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let Some(hop) = current() else {
            return Box::pin(async { Err(Box::new(PinError::NoHop) as BoxError) });
        };
        if name.as_str().eq_ignore_ascii_case(&hop.host) {
            hop.resolved.store(true, Ordering::Relaxed);
            let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(hop.addr));
            return Box::pin(async move { Ok(addrs) });
        }
        // Another name is the proxy's: resolved as before, never the target's.
        self.0.resolve(name)
    }
}

/// The connector layer of the shared clients (see the module's documentation).
#[derive(Clone, Copy, Default)]
pub(super) struct PinLayer;

impl<S> tower_layer::Layer<S> for PinLayer {
    type Service = Pinned<S>;
    fn layer(&self, inner: S) -> Pinned<S> {
        Pinned { inner }
    }
}

#[derive(Clone)]
pub(super) struct Pinned<S> {
    inner: S,
}

impl<S, R> tower_service::Service<R> for Pinned<S>
where
    S: tower_service::Service<R>,
    S::Response: Connection + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let hop = current();
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let Some(hop) = hop else {
                return Err(Box::new(PinError::NoHop) as BoxError);
            };
            let conn = match tokio::time::timeout(hop.connect_timeout, connecting).await {
                Err(_) => {
                    hop.check_failed()?;
                    return Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )) as BoxError);
                }
                Ok(Err(e)) => {
                    hop.check_failed()?;
                    return Err(e.into());
                }
                Ok(Ok(conn)) => conn,
            };
            hop.admit(peer(&conn))?;
            let _ = hop.clock.connected.set(Instant::now());
            Ok(conn)
        })
    }
}

/// The address the connection's socket is connected to.
fn peer<C: Connection>(conn: &C) -> Option<SocketAddr> {
    let mut extras = http::Extensions::new();
    conn.connected().get_extras(&mut extras);
    extras.get::<HttpInfo>().map(HttpInfo::remote_addr)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A resolver that answers every name with one fixed address, whatever was counted.
    struct Fixed(SocketAddr);

    impl reqwest::dns::Resolve for Fixed {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let addr = self.0;
            Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
        }
    }

    /// Two loopback servers on one port and two addresses (the URL's port is the one
    /// dialled, so only the address can differ), answering 200 to anything.
    async fn two_servers() -> [(SocketAddr, Arc<AtomicUsize>); 2] {
        for _ in 0..50 {
            let first = tokio::net::TcpListener::bind("127.0.6.1:0")
                .await
                .expect("bind");
            let port = first.local_addr().expect("addr").port();
            if let Ok(second) = tokio::net::TcpListener::bind(("127.0.6.2", port)).await {
                return [serve(first), serve(second)];
            }
        }
        panic!("no port free on both 127.0.6.1 and 127.0.6.2");
    }

    /// Serves `listener`; counts the requests that reached it.
    fn serve(listener: tokio::net::TcpListener) -> (SocketAddr, Arc<AtomicUsize>) {
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        (addr, hits)
    }

    fn client(resolve: impl reqwest::dns::Resolve + 'static) -> reqwest::Client {
        super::super::builder(Arc::new(resolve), None)
            .build()
            .expect("client")
    }

    async fn get(client: &reqwest::Client, hop: &Arc<Hop>) -> reqwest::Result<u16> {
        let url = format!("http://pinned.test:{}/", hop.addr.port());
        let resp = hop.scope(client.get(url).send()).await?;
        Ok(resp.status().as_u16())
    }

    #[test]
    fn a_connection_gone_before_its_peer_was_read_is_a_reset_not_our_error() {
        // haproxy's `tcp-request connection reject` resets the connection as it accepts
        // it: by the time the peer is asked for, the socket has none.
        let counted: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let direct = Hop::new("site.test", counted, Duration::from_secs(5), Route::Direct);
        let e = direct.admit(None).expect_err("nothing may be sent");
        let io = e.downcast_ref::<std::io::Error>().expect("an I/O error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert!(direct.admit(Some(counted)).is_ok());
        let other: SocketAddr = "127.0.0.2:8080".parse().expect("address");
        let e = direct.admit(Some(other)).expect_err("another peer");
        assert!(e.downcast_ref::<PinError>().is_some(), "{e}");
    }

    #[tokio::test]
    async fn a_resolver_answering_another_address_is_caught_before_the_request() {
        let [(counted, counted_hits), (other, other_hits)] = two_servers().await;
        let hop = Hop::new(
            "pinned.test",
            counted,
            Duration::from_secs(5),
            Route::Direct,
        );
        let err = get(&client(Fixed(other)), &hop)
            .await
            .expect_err("a connection to another address must fail");
        assert!(
            matches!(pin_error(&err), Some(PinError::Peer { reached: Some(r), .. }) if *r == other),
            "{err:?}"
        );
        assert_eq!(
            other_hits.load(Ordering::SeqCst),
            0,
            "no request was written"
        );
        assert_eq!(counted_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_connect_to_an_address_not_counted_is_not_the_sites_failure() {
        let [(counted, _), _] = two_servers().await;
        // Nothing listens on 127.0.6.3: the connect is refused there.
        let elsewhere = SocketAddr::from(([127, 0, 6, 3], counted.port()));
        let hop = Hop::new(
            "pinned.test",
            counted,
            Duration::from_secs(5),
            Route::Direct,
        );
        let err = get(&client(Fixed(elsewhere)), &hop)
            .await
            .expect_err("refused");
        assert!(
            matches!(pin_error(&err), Some(PinError::NotResolved { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_pinned_resolver_sends_the_request_to_the_counted_address() {
        let [(counted, hits), _] = two_servers().await;
        // Never asked: the hop's host is answered by the pin.
        let settings = crate::config::DnsSettings {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            static_hosts: Default::default(),
            timeout: Duration::from_secs(1),
            max_concurrent: 1,
            search: Vec::new(),
        };
        let resolver = Resolver::new(&settings).expect("resolver");
        let hop = Hop::new(
            "pinned.test",
            counted,
            Duration::from_secs(5),
            Route::Direct,
        );
        let status = get(&client(PinnedResolver::new(resolver)), &hop).await;
        assert_eq!(status.expect("answer"), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(hop.clock.connected.get().is_some(), "connect time noted");
    }

    #[tokio::test]
    async fn no_connection_is_made_outside_a_hop() {
        let [(counted, hits), _] = two_servers().await;
        let err = client(Fixed(counted))
            .get(format!("http://pinned.test:{}/", counted.port()))
            .send()
            .await
            .expect_err("no hop, no request");
        assert!(matches!(pin_error(&err), Some(PinError::NoHop)), "{err:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }
}
