//! Whose is a step that ran out of time through an HTTP proxy: the site's, or the
//! proxy's. A proxy that hangs (overloaded, paused, its disk full) holds every tunnel
//! still, and a CONNECT it has not answered, a handshake or an answer that does not come
//! through it, look like a site that does not answer. So when a step is late the proxy
//! is asked a question it answers itself ([`Proxy::silence`]) *while the step goes on*:
//! - no answer to it either: the proxy is not answering, the egress fails;
//! - the step comes through before that answer, or about as long after it as the proxy
//!   took to give it: the proxy was holding everything up and has just let go (asked
//!   after the step had been dropped, a proxy back from a pause answers at once, and its
//!   silence was taken for the site's);
//! - the proxy answers at once and the step still waits: the proxy is well, the time is
//!   the site's.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::TunnelError;
use super::Proxy;
use crate::http::pin::Hop;

/// The longest the proxy is given to answer its own question: one on the path of every
/// probe answers in milliseconds, and a proxy slower than this is failing anyway.
pub(in crate::http) const OWN_QUESTION_TIME: Duration = Duration::from_secs(2);

/// After the proxy answered its own question, how long a step coming through is still
/// taken for one it held up, at least: it handles what queued in one go.
const TOGETHER: Duration = Duration::from_millis(50);

/// `step`, due by `until`; on a route with no proxy to ask, its lateness is `late`.
pub(super) async fn in_time<T>(
    step: impl Future<Output = Result<T, TunnelError>>,
    until: Instant,
    late: TunnelError,
) -> Result<T, TunnelError> {
    tokio::time::timeout_at(until, step)
        .await
        .unwrap_or(Err(late))
}

impl Proxy {
    /// `step` through this proxy, due by `until`. Late, it is `late` (the site's) only
    /// when the proxy answered a question of its own, within `within`, while it waited
    /// (module docs); else the egress failing. The time past `until` is our question's,
    /// noted on `hop` (not the site's, nor our timers' lag).
    pub(super) async fn in_time<T>(
        &self,
        step: impl Future<Output = Result<T, TunnelError>>,
        (until, late): (Instant, TunnelError),
        within: Duration,
        hop: &Hop,
    ) -> Result<T, TunnelError> {
        let mut step = std::pin::pin!(step);
        if let Ok(done) = tokio::time::timeout_at(until, step.as_mut()).await {
            return done;
        }
        let asked = Instant::now();
        let judged = self.judge_late(step, late, within).await;
        hop.clock.checked(asked.elapsed());
        judged
    }

    /// [`Proxy::in_time`] once `step` is late.
    async fn judge_late<T>(
        &self,
        mut step: std::pin::Pin<&mut impl Future<Output = Result<T, TunnelError>>>,
        late: TunnelError,
        within: Duration,
    ) -> Result<T, TunnelError> {
        let asked = Instant::now();
        let check = self.silence(within.min(OWN_QUESTION_TIME));
        tokio::select! {
            biased;
            done = step.as_mut() => return held_up(done, asked),
            silence = check => if let Some(why) = silence {
                return Err(TunnelError::Proxy(why));
            },
        }
        let together = asked.elapsed().max(TOGETHER);
        match tokio::time::timeout(together, step.as_mut()).await {
            Ok(done) => held_up(done, asked),
            Err(_) => Err(late),
        }
    }
}

/// A step that came through late, once the proxy was asked (at `asked`): what the proxy
/// reported stands (a refusal of its own, the site's failure it read), and one that went
/// through was held up by the proxy.
fn held_up<T>(done: Result<T, TunnelError>, asked: Instant) -> Result<T, TunnelError> {
    match done {
        Ok(_) => Err(TunnelError::Proxy(format!(
            "it held the request up: it came through {} ms after its time, once the proxy \
             answered a question of its own, as a proxy that hung and came back does",
            asked.elapsed().as_millis()
        ))),
        Err(e) => Err(e),
    }
}
