//! The connections one egress may hold at once. A proxy takes so many clients
//! (tinyproxy's `MaxClients`, Privoxy's `max-client-connections`, a provider's plan) and
//! leaves the next unaccepted or unanswered: a tunnel waiting there outlives its time,
//! and the site is `unknown` for our own crowd. A request past the egress's room waits
//! its turn here, which is our time, not the site's (the probe's deadline moves by it,
//! as it does for the per-IP limit), within the same `rate_limit.max_wait`.
//!
//! The room is `egress.max_connections` when set. A proxy that says it has no room for
//! another client (Privoxy's "503 Too many open connections") teaches it too: the room
//! shrinks to the requests of ours that were out through it then, and grows by one
//! for every room's worth of requests that end, so a proxy that gained room (or whose
//! other clients left) is found again. Either way, how many of ours are out through the
//! egress is counted, for the detail of its failures.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An egress's connection slots, and how many of this process's requests are out
/// through it.
pub(super) struct Slots {
    room: Arc<Room>,
}

/// The slots one egress lends.
struct Room {
    /// The egress's name, for the metrics.
    egress: String,
    slots: Arc<Semaphore>,
    /// `egress.max_connections`, if set.
    cap: Option<NonZeroU32>,
    size: Mutex<Size>,
    out: AtomicUsize,
}

/// How many slots the room lends now.
#[derive(Debug)]
struct Size {
    /// The slots lent at most: the cap, what the proxy was found to take, or (neither)
    /// as many as a semaphore holds.
    now: usize,
    /// Whether `now` was learned from the proxy, below the cap.
    learned: bool,
    /// Slots out when the room shrank, to be forgotten as they come back.
    debt: usize,
    /// Requests ended with the room full since it last changed.
    ended: usize,
    /// When a shrinking was last warned of: the room found again by growing shrinks
    /// once per room's worth of requests, which is no news each time.
    warned: Option<std::time::Instant>,
}

/// How often a proxy's room shrinking is warned of at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One request's slot: it is out through the egress until this is dropped.
pub(super) struct Slot {
    /// Others of this process out through the egress when it was taken.
    pub(super) beside: usize,
    permit: Option<OwnedSemaphorePermit>,
    room: Arc<Room>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let was_out = self.room.out.fetch_sub(1, Ordering::Relaxed);
        if let Some(permit) = self.permit.take() {
            self.room.give_back(permit, was_out);
        }
    }
}

/// No slot came free within the wait allowed.
#[derive(Debug, thiserror::Error)]
#[error("not asked: every one of the {room} connections egress {egress} {takes} stayed busy for {waited} ms")]
pub(super) struct Busy {
    egress: String,
    room: usize,
    takes: &'static str,
    waited: u128,
}

impl Slots {
    pub(super) fn new(egress: &str, max_connections: Option<NonZeroU32>) -> Slots {
        let now = max_connections.map_or(Semaphore::MAX_PERMITS, |n| n.get() as usize);
        Slots {
            room: Arc::new(Room {
                egress: egress.to_string(),
                slots: Arc::new(Semaphore::new(now)),
                cap: max_connections,
                size: Mutex::new(Size {
                    now,
                    learned: false,
                    debt: 0,
                    ended: 0,
                    warned: None,
                }),
                out: AtomicUsize::new(0),
            }),
        }
    }

    /// How many of this process's requests are out through the egress now.
    #[cfg(test)]
    fn out(&self) -> usize {
        self.room.out.load(Ordering::Relaxed)
    }

    /// How many slots the egress lends now.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.room.size().now
    }

    /// The egress's cap, if it has one.
    pub(super) fn cap(&self) -> Option<NonZeroU32> {
        self.room.cap
    }

    /// A slot for one request through the egress, held until it is dropped, waiting at
    /// most `max_wait` (first come, first served) when the egress has no room.
    pub(super) async fn take(&self, max_wait: Duration) -> Result<Slot, Busy> {
        let egress = self.room.egress.as_str();
        let permit = match self.room.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                if self.room.cap.is_some() {
                    crate::metric::egress_slot_wait(egress, Duration::ZERO);
                }
                permit
            }
            Err(_) => self.room.wait_for(max_wait).await?,
        };
        let beside = self.room.out.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            beside,
            permit: Some(permit),
            room: self.room.clone(),
        })
    }

    /// The egress's proxy said it had no room for another client while `held` other
    /// requests of ours were out through it: it takes no more than those (one at
    /// least), until requests ending show it may take more. Whether the room shrank.
    pub(super) fn no_room(&self, held: usize) -> bool {
        let egress = self.room.egress.as_str();
        crate::metric::egress_full(egress);
        let room = held.max(1);
        let mut size = self.room.size();
        if room >= size.now {
            return false;
        }
        let cut = size.now - room;
        let forgotten = self.room.slots.forget_permits(cut);
        size.debt += cut - forgotten;
        size.now = room;
        size.learned = true;
        size.ended = 0;
        crate::metric::egress_room(egress, room);
        if size.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            size.warned = Some(std::time::Instant::now());
            tracing::warn!(
                egress,
                room,
                "the egress's proxy has no room for another client: sending it at most this many at once, one more for every so many requests that end"
            );
        }
        true
    }
}

impl Room {
    fn size(&self) -> MutexGuard<'_, Size> {
        // Every change is whole under the lock: a panic elsewhere leaves it consistent.
        self.size.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One of the slots, within `max_wait`.
    async fn wait_for(&self, max_wait: Duration) -> Result<OwnedSemaphorePermit, Busy> {
        let egress = self.egress.as_str();
        let began = tokio::time::Instant::now();
        let taken = tokio::time::timeout(max_wait, self.slots.clone().acquire_owned()).await;
        crate::metric::egress_slot_wait(egress, began.elapsed());
        match taken {
            Ok(Ok(slot)) => Ok(slot),
            // The semaphore is never closed: only the wait ends.
            Ok(Err(_)) | Err(_) => {
                crate::metric::egress_busy(egress);
                let size = self.size();
                Err(Busy {
                    egress: egress.to_string(),
                    room: size.now,
                    takes: match size.learned {
                        true => "takes at once (it said it had no room for more)",
                        false => "may hold at once (egress.max_connections)",
                    },
                    waited: began.elapsed().as_millis(),
                })
            }
        }
    }

    /// Takes back a slot whose request ended, `was_out` of ours out with it: forgotten
    /// while the room is smaller than the slots out; and once a room's worth of
    /// requests ended while the room was full, one more (a room never filled shows
    /// nothing of the proxy's).
    fn give_back(&self, permit: OwnedSemaphorePermit, was_out: usize) {
        let mut size = self.size();
        if size.debt > 0 {
            size.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        if !size.learned || was_out < size.now {
            return;
        }
        size.ended += 1;
        if size.ended < size.now {
            return;
        }
        size.ended = 0;
        size.now += 1;
        self.slots.add_permits(1);
        crate::metric::egress_room(&self.egress, size.now);
        if self.cap.is_some_and(|cap| size.now >= cap.get() as usize) {
            size.learned = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_capped_egress_lends_its_slots_in_turn_and_says_when_none_came_free() {
        let slots = Slots::new("p", NonZeroU32::new(2));
        let wait = Duration::from_secs(5);
        let first = slots.take(wait).await.expect("a slot");
        let second = slots.take(wait).await.expect("a slot");
        assert_eq!((first.beside, second.beside, slots.out()), (0, 1, 2));
        let busy = slots.take(wait).await.err().expect("both busy");
        assert!(
            busy.to_string().contains("the 2 connections egress p"),
            "{busy}"
        );
        assert!(busy.to_string().contains("5000 ms"), "{busy}");
        assert_eq!(slots.out(), 2, "a request not sent is not out");
        drop(first);
        assert!(slots.take(wait).await.is_ok());
    }

    #[tokio::test]
    async fn an_egress_with_no_cap_counts_what_is_out_and_waits_for_nothing() {
        let slots = Slots::new("p", None);
        let taken: Vec<Slot> = (0..3)
            .map(|_| slots.take(Duration::ZERO))
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

    /// A proxy that said it had no room with 3 of ours out takes 3: the one it turned
    /// away waits for one of them, and the room grows by one once 3 have ended.
    #[tokio::test(start_paused = true)]
    async fn a_proxy_with_no_room_takes_no_more_than_it_held_until_requests_end() {
        let slots = Slots::new("p", None);
        let wait = Duration::from_secs(5);
        let mut out: Vec<Slot> = Vec::new();
        for _ in 0..4 {
            out.push(slots.take(wait).await.expect("no cap"));
        }
        let turned_away = out.pop().expect("the fourth");
        assert!(slots.no_room(turned_away.beside));
        assert!(!slots.no_room(5), "it only shrinks");
        drop(turned_away);
        assert_eq!(slots.room(), 3);
        let busy = slots.take(wait).await.err().expect("3 out, room for 3");
        assert!(
            busy.to_string().contains(
                "the 3 connections egress p takes at once (it said it had no room for more)"
            ),
            "{busy}"
        );
        // One ends: its slot goes to the next.
        out.pop();
        let next = slots.take(wait).await.expect("a slot came back");
        out.push(next);
        drop(out);
        assert_eq!(slots.room(), 4, "3 ended: one more");
        assert_eq!(fill(&slots, 4).await.len(), 4);
    }

    /// The room a proxy taught is a gauge per egress, as it shrinks and as it grows.
    #[test]
    fn the_room_a_proxy_taught_is_told_as_it_changes() {
        use futures_util::FutureExt;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let slots = Slots::new("squid", None);
        let take = || slots.take(Duration::ZERO).now_or_never();
        metrics::with_local_recorder(&recorder, || {
            assert!(handle.render().is_empty(), "nothing before the proxy said");
            let first = take().expect("at once").expect("room");
            assert!(slots.no_room(1));
            assert!(
                handle
                    .render()
                    .contains("picket_egress_room{egress=\"squid\"} 1"),
                "{}",
                handle.render()
            );
            drop(first);
        });
        assert!(
            handle
                .render()
                .contains("picket_egress_room{egress=\"squid\"} 2"),
            "one ended with the room full: {}",
            handle.render()
        );
    }

    /// `n` slots taken at once, each within a second.
    async fn fill(slots: &Slots, n: usize) -> Vec<Slot> {
        let taken = (0..n).map(|_| slots.take(Duration::from_secs(1)));
        futures_util::future::join_all(taken)
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("room for them")
    }

    /// A capped egress learns below its cap and grows back to it, never past.
    #[tokio::test(start_paused = true)]
    async fn a_room_learned_below_the_cap_grows_back_to_it_and_no_further() {
        let slots = Slots::new("p", NonZeroU32::new(3));
        let wait = Duration::from_secs(1);
        let first = slots.take(wait).await.expect("a slot");
        assert!(slots.no_room(1));
        assert_eq!(slots.room(), 1);
        drop(first);
        assert_eq!(slots.room(), 2, "one ended with the room full");
        for _ in 0..5 {
            let one = slots.take(wait).await.expect("room for two");
            drop(one);
        }
        assert_eq!(slots.room(), 2, "a room never full shows nothing");
        for _ in 0..5 {
            let full = fill(&slots, slots.room()).await;
            drop(full);
        }
        assert_eq!(slots.room(), 3, "back to the cap");
        let held = fill(&slots, 3).await;
        let busy = slots.take(wait).await.err().expect("no more than the cap");
        assert!(
            busy.to_string().contains("egress.max_connections"),
            "{busy}"
        );
        drop(held);
    }
}
