//! Splitting a connection's time into connect and TLS without touching reqwest's
//! internals: a tower layer around its connector notes when the connection is ready,
//! and a rustls session store that stores nothing notes when the ClientHello is built,
//! which is the moment TCP (and a proxy's handshake) is done.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use rustls::pki_types::ServerName;
use tokio::time::Instant;

use crate::probe::Observation;

/// When the connection of one hop was up and when it was ready (TLS done), read from
/// hooks inside reqwest's connector and rustls.
#[derive(Default)]
pub(super) struct PhaseClock {
    /// The ClientHello was built: TCP (and the proxy's handshake) done.
    pub(super) hello: Arc<OnceLock<Instant>>,
    /// The connector returned a usable connection.
    pub(super) connected: Arc<OnceLock<Instant>>,
}

impl PhaseClock {
    /// Writes connect and TLS time into `obs` (for the hop whose request went out at
    /// `sent`; pooling is off, so the connection was opened for it).
    pub(super) fn write(&self, sent: Instant, obs: &mut Observation) {
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

    /// Like [`write`](Self::write) for a connection made over OpenSSL, which has no hook
    /// between the TCP connect and the handshake: the TCP part is taken from `first`,
    /// the rustls attempt to the same address a moment before (sent at `first_sent`),
    /// and the rest of the time to a ready connection is the handshake.
    pub(super) fn write_legacy(
        &self,
        sent: Instant,
        first: &PhaseClock,
        first_sent: Instant,
        obs: &mut Observation,
    ) {
        let tcp = first
            .hello
            .get()
            .map(|h| h.saturating_duration_since(first_sent));
        let ready = self
            .connected
            .get()
            .map(|c| c.saturating_duration_since(sent));
        match (tcp, ready) {
            (Some(tcp), Some(ready)) => {
                obs.connect = Some(tcp.min(ready));
                obs.tls = Some(ready.saturating_sub(tcp));
            }
            _ => self.write(sent, obs),
        }
    }

    /// When the connection was ready for the request.
    pub(super) fn ready(&self, sent: Instant) -> Instant {
        self.connected.get().copied().unwrap_or(sent)
    }
}

/// A session store that keeps nothing and notes when rustls first asks it.
#[derive(Debug)]
pub(super) struct MarkHello(pub(super) Arc<OnceLock<Instant>>);

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
pub(super) struct MarkConnected(pub(super) Arc<OnceLock<Instant>>);

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
pub(super) struct Marked<S> {
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
