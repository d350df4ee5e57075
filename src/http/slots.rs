//! The connections one egress may hold at once (`egress.max_connections`). A proxy takes
//! so many clients (tinyproxy's `MaxClients`, Privoxy's `max-client-connections`, a
//! provider's plan) and leaves the next unaccepted or unanswered: a tunnel waiting there
//! outlives its time, and the site is `unknown` for our own crowd. With a cap, a request
//! past it waits its turn here, which is our time, not the site's (the probe's deadline
//! moves by it, as it does for the per-IP limit), within the same `rate_limit.max_wait`.
//! Capped or not, how many of ours are out through the egress is counted, for the detail
//! of its failures.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An egress's connection slots (a semaphore only when it has a cap), and how many of
/// this process's requests are out through it.
pub(super) struct Slots {
    cap: Option<(Arc<Semaphore>, NonZeroU32)>,
    out: Arc<AtomicUsize>,
}

/// One request's slot: it is out through the egress until this is dropped.
pub(super) struct Slot {
    /// Others of this process out through the egress when it was taken.
    pub(super) beside: usize,
    _capped: Option<OwnedSemaphorePermit>,
    out: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.out.fetch_sub(1, Ordering::Relaxed);
    }
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
            out: Arc::default(),
        }
    }

    /// How many of this process's requests are out through the egress now.
    #[cfg(test)]
    fn out(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }

    /// The egress's cap, if it has one.
    pub(super) fn cap(&self) -> Option<NonZeroU32> {
        self.cap.as_ref().map(|(_, n)| *n)
    }

    /// A slot for one request through `egress`, held until it is dropped, waiting at
    /// most `max_wait` (first come, first served) when the egress has a cap.
    pub(super) async fn take(&self, egress: &str, max_wait: Duration) -> Result<Slot, Busy> {
        let capped = match &self.cap {
            None => None,
            Some(cap) => Some(wait_for(egress, cap, max_wait).await?),
        };
        let beside = self.out.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            beside,
            _capped: capped,
            out: self.out.clone(),
        })
    }
}

/// One of the `cap` slots of `egress`, within `max_wait`.
async fn wait_for(
    egress: &str,
    (slots, cap): &(Arc<Semaphore>, NonZeroU32),
    max_wait: Duration,
) -> Result<OwnedSemaphorePermit, Busy> {
    let began = tokio::time::Instant::now();
    let taken = tokio::time::timeout(max_wait, slots.clone().acquire_owned()).await;
    crate::metric::egress_slot_wait(egress, began.elapsed());
    match taken {
        Ok(Ok(slot)) => Ok(slot),
        // The semaphore is never closed: only the wait ends.
        Ok(Err(_)) | Err(_) => {
            crate::metric::egress_busy(egress);
            Err(Busy {
                egress: egress.to_string(),
                cap: *cap,
                waited: began.elapsed().as_millis(),
            })
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
        let first = slots.take("p", wait).await.expect("a slot");
        let second = slots.take("p", wait).await.expect("a slot");
        assert_eq!((first.beside, second.beside, slots.out()), (0, 1, 2));
        let busy = slots.take("p", wait).await.err().expect("both busy");
        assert!(
            busy.to_string().contains("the 2 connections egress p"),
            "{busy}"
        );
        assert!(busy.to_string().contains("5000 ms"), "{busy}");
        assert_eq!(slots.out(), 2, "a request not sent is not out");
        drop(first);
        assert!(slots.take("p", wait).await.is_ok());
    }

    #[tokio::test]
    async fn an_egress_with_no_cap_counts_what_is_out_and_waits_for_nothing() {
        let slots = Slots::new(None);
        let taken: Vec<Slot> = (0..3)
            .map(|_| slots.take("p", Duration::ZERO))
            .map(|t| {
                futures_util::FutureExt::now_or_never(t)
                    .expect("at once")
                    .expect("no cap")
            })
            .collect();
        assert_eq!(
            taken.iter().map(|s| s.beside).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        drop(taken);
        assert_eq!(slots.out(), 0);
    }
}
