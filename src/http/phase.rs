//! Splitting a connection's time into connect and TLS without touching reqwest's
//! internals: the pinning layer around its connector notes when the connection is
//! ready (`pin::PinLayer`), and a rustls session store that stores nothing notes when
//! the ClientHello is built, which is the moment TCP (and a proxy's handshake) is done
//! (`pin::MarkHello`). Both write into the clock of the hop whose request the task is
//! sending.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::Observation;

/// When the connection of one hop was up and when it was ready (TLS done), read from
/// hooks inside reqwest's connector and rustls.
#[derive(Default)]
pub(super) struct PhaseClock {
    /// The ClientHello was built: TCP (and the proxy's handshake) done.
    pub(super) hello: OnceLock<Instant>,
    /// The connector returned a usable connection.
    pub(super) connected: OnceLock<Instant>,
    /// Time spent asking the egress about itself (`tunnel`'s questions whether a proxy
    /// is one, and whether it is the one holding a late step up): not the site's.
    checking: Mutex<Duration>,
}

impl PhaseClock {
    /// Notes `took` more of our own questions to the egress.
    pub(super) fn checked(&self, took: Duration) {
        *self.checking.lock().unwrap_or_else(PoisonError::into_inner) += took;
    }

    /// Writes connect and TLS time into `obs` (for the hop whose request went out at
    /// `sent`; pooling is off, so the connection was opened for it).
    pub(super) fn write(&self, sent: Instant, obs: &mut Observation) {
        let hello = self.hello.get().copied();
        let connected = self.connected.get().copied();
        let checking = *self.checking.lock().unwrap_or_else(PoisonError::into_inner);
        obs.checking += checking;
        obs.connect = hello
            .or(connected)
            .map(|t| t.saturating_duration_since(sent).saturating_sub(checking));
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
