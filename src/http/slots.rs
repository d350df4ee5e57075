//! The connections one egress may hold at once (`egress.max_connections`). A proxy takes
//! so many clients (tinyproxy's `MaxClients`, Privoxy's `max-client-connections`, a
//! provider's plan) and leaves the next unaccepted or unanswered: a tunnel waiting there
//! outlives its time, and the site is `unknown` for our own crowd. With a cap, a request
//! past it waits its turn here, which is our time, not the site's (the probe's deadline
//! moves by it, as it does for the per-IP limit), within the same `rate_limit.max_wait`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An egress's connection slots: none to take when it has no cap.
pub(super) struct Slots {
    cap: Option<(Arc<Semaphore>, NonZeroU32)>,
}

/// No slot came free within the wait allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "not asked: every one of the {cap} connections egress {egress} may hold at once \
     (egress.max_connections) stayed busy for {waited} ms"
)]
pub(super) struct Busy {
    egress: String,
    cap: NonZeroU32,
    waited: u128,
}

impl Slots {
    pub(super) fn new(max_connections: Option<NonZeroU32>) -> Slots {
        Slots {
            cap: max_connections.map(|n| (Arc::new(Semaphore::new(n.get() as usize)), n)),
        }
    }

    /// A slot for one request through `egress`, held until it is dropped, waiting at
    /// most `max_wait` (first come, first served); `None` when the egress has no cap.
    pub(super) async fn take(
        &self,
        egress: &str,
        max_wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, Busy> {
        let Some((slots, cap)) = &self.cap else {
            return Ok(None);
        };
        let began = tokio::time::Instant::now();
        let taken = tokio::time::timeout(max_wait, slots.clone().acquire_owned()).await;
        crate::metric::egress_slot_wait(egress, began.elapsed());
        match taken {
            // The semaphore is never closed.
            Ok(slot) => Ok(slot.ok()),
            Err(_) => {
                crate::metric::egress_busy(egress);
                Err(Busy {
                    egress: egress.to_string(),
                    cap: *cap,
                    waited: began.elapsed().as_millis(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_capped_egress_lends_its_slots_in_turn_and_says_when_none_came_free() {
        let slots = Slots::new(NonZeroU32::new(2));
        let wait = Duration::from_secs(5);
        let first = slots
            .take("p", wait)
            .await
            .expect("a slot")
            .expect("capped");
        let _second = slots
            .take("p", wait)
            .await
            .expect("a slot")
            .expect("capped");
        let busy = slots.take("p", wait).await.expect_err("both busy");
        assert!(
            busy.to_string().contains("the 2 connections egress p"),
            "{busy}"
        );
        assert!(busy.to_string().contains("5000 ms"), "{busy}");
        drop(first);
        assert!(slots.take("p", wait).await.expect("freed").is_some());
    }

    #[tokio::test]
    async fn an_egress_with_no_cap_takes_no_slot() {
        let slots = Slots::new(None);
        assert!(slots
            .take("p", Duration::ZERO)
            .await
            .expect("no cap")
            .is_none());
    }
}
