//! A SOCKS5 egress's proxy, watched while a request through it is late. reqwest makes
//! the SOCKS5 handshake, the CONNECT and the request one step to us, so a proxy that
//! hangs (overloaded, paused) looks like a site that does not answer. Shortly before the
//! connection's or the request's time runs out with nothing come, the proxy is greeted
//! on a connection of its own (the first thing any SOCKS5 proxy answers), *while the
//! request goes on*: a proxy that answers the greeting is well and a timeout is the
//! site's; one that has not answered it when the time runs out is the egress failing.
//! (Greeted only after the request was dropped, a proxy back from a pause answered at
//! once, and its silence was the site's `down/timeout`.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pin::Hop;
use super::tunnel::{SendError, Tunnel, OWN_QUESTION_TIME};
use super::Probe;

/// How long before a due time the proxy is greeted: a greeting a proxy answers in
/// milliseconds, with room for a loaded machine.
const LEAD: Duration = Duration::from_millis(750);

/// `sending` (in `hop`'s scope) through the probe's egress: through a SOCKS5 proxy, the
/// proxy greeted when the request is late; `time` is the request's.
pub(in crate::http) async fn watched(
    sending: impl Future<Output = reqwest::Result<reqwest::Response>>,
    probe: &Probe<'_>,
    hop: &Arc<Hop>,
    time: Duration,
) -> Result<reqwest::Response, SendError> {
    let socks = probe.egress.mended.as_ref().filter(|_| probe.egress.socks);
    match socks {
        Some(socks) => greeting_when_late(sending, socks, hop, (hop.connect_timeout(), time)).await,
        None => sending.await.map_err(SendError::from),
    }
}

/// `sending` (a request through the SOCKS5 proxy of `socks`, connected by
/// `connect_timeout`, answered by `time`), its proxy greeted when either is near with
/// nothing come (module docs).
async fn greeting_when_late(
    sending: impl Future<Output = reqwest::Result<reqwest::Response>>,
    socks: &Tunnel,
    hop: &Arc<Hop>,
    (connect_timeout, time): (Duration, Duration),
) -> Result<reqwest::Response, SendError> {
    let start = Instant::now();
    let mut sending = std::pin::pin!(sending);
    let mut greeted = false;
    loop {
        let due = match hop.clock.connected.get() {
            None if !greeted => start + connect_timeout,
            Some(_) => start + time,
            // Greeted at the connect, well: the rest is the request's own.
            None => return sending.await.map_err(SendError::from),
        };
        let look = due
            .checked_sub(LEAD.min(connect_timeout / 2))
            .unwrap_or(start);
        if let Ok(done) = tokio::time::timeout_at(look, sending.as_mut()).await {
            return done.map_err(SendError::from);
        }
        let connected = hop.clock.connected.get().is_some();
        let within = connect_timeout.min(OWN_QUESTION_TIME);
        let greeting = hop.scope(socks.socks_silence(within));
        tokio::select! {
            biased;
            done = sending.as_mut() => return late(done, "it did not answer a greeting sent as the request's time ran out".into()),
            silence = greeting => if let Some(why) = silence {
                return late(sending.await, why);
            },
        }
        if connected {
            return sending.await.map_err(SendError::from);
        }
        greeted = true;
    }
}

/// A request through a SOCKS5 proxy that did not answer a greeting meanwhile (`why`):
/// its timeout is the egress failing.
fn late(
    done: reqwest::Result<reqwest::Response>,
    why: String,
) -> Result<reqwest::Response, SendError> {
    match done {
        Err(e) if e.is_timeout() => Err(SendError::proxy(format!("its SOCKS5 proxy: {why}"))),
        done => done.map_err(SendError::from),
    }
}
