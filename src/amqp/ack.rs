//! Acknowledgements in batches: finished deliveries are acked by one task per session,
//! with one `multiple` ack for the oldest ones where it can, instead of a round trip
//! through lapin's RPC task per job.
//!
//! A `multiple` ack settles *every* unsettled delivery up to its tag, so the ledger
//! knows which deliveries are still unsettled (being probed, or being handed back) and
//! only ever covers a run of finished ones. The rest are acked one by one in the same
//! batch: a slow probe must not hold back the acks behind it, or the unacked finished
//! jobs would fill the prefetch window and stall the consumer.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;
use lapin::options::BasicAckOptions;
use lapin::Channel;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// What to send for one batch of finished deliveries.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AckPlan {
    /// One ack with `multiple`: every delivery up to this tag is finished.
    pub multiple: Option<u64>,
    /// The finished deliveries behind an unfinished one, acked singly.
    pub single: Vec<u64>,
}

impl AckPlan {
    fn frames(&self) -> usize {
        usize::from(self.multiple.is_some()) + self.single.len()
    }
}

/// Delivery tags the broker holds as unacknowledged on one channel.
#[derive(Debug, Default)]
pub(crate) struct AckLedger {
    unsettled: BTreeSet<u64>,
}

impl AckLedger {
    /// A delivery arrived (tags grow by one per delivery on a channel).
    pub(crate) fn delivered(&mut self, tag: u64) {
        self.unsettled.insert(tag);
    }

    /// A delivery was settled some other way (nacked): a later `multiple` ack may
    /// pass over it.
    pub(crate) fn forget(&mut self, tag: u64) {
        self.unsettled.remove(&tag);
    }

    /// Plans the acks of `finished` and takes them out of the ledger. Tags the ledger
    /// does not hold are dropped: acking an unknown tag would close the channel.
    pub(crate) fn settle(&mut self, mut finished: Vec<u64>) -> AckPlan {
        finished.sort_unstable();
        finished.dedup();
        finished.retain(|t| self.unsettled.contains(t));
        // The finished tags that are also the oldest unsettled ones, in a row.
        let run = self
            .unsettled
            .iter()
            .zip(&finished)
            .take_while(|(u, f)| u == f)
            .count();
        for t in &finished {
            self.unsettled.remove(t);
        }
        let mut plan = AckPlan::default();
        if run >= 2 {
            plan.multiple = Some(finished[run - 1]);
            plan.single = finished.split_off(run);
        } else {
            plan.single = finished;
        }
        plan
    }
}

/// The handle delivery tasks use; the batching task ends once every handle is gone.
#[derive(Clone)]
pub(crate) struct Acks {
    ledger: Arc<Mutex<AckLedger>>,
    finished: mpsc::UnboundedSender<u64>,
}

impl Acks {
    /// Starts the batching task for `channel` on `tracker`, so that draining the
    /// tracker also flushes the last acks.
    pub(crate) fn start(channel: Channel, tracker: &TaskTracker) -> Acks {
        let ledger = Arc::new(Mutex::new(AckLedger::default()));
        let (finished, rx) = mpsc::unbounded_channel();
        tracker.spawn(run(channel, ledger.clone(), rx));
        Acks { ledger, finished }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, AckLedger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a delivery before its job starts.
    pub(crate) fn delivered(&self, tag: u64) {
        self.ledger().delivered(tag);
    }

    /// The job is done and its result confirmed: ack it (soon, with others).
    pub(crate) fn ack(&self, tag: u64) {
        if self.finished.send(tag).is_err() {
            // Only after the session's task ended: the broker redelivers the job.
            tracing::warn!(
                tag,
                "ack after the session ended; the job will be redelivered"
            );
        }
    }

    /// The delivery was nacked (and the nack sent).
    pub(crate) fn forget(&self, tag: u64) {
        self.ledger().forget(tag);
    }
}

async fn run(
    channel: Channel,
    ledger: Arc<Mutex<AckLedger>>,
    mut rx: mpsc::UnboundedReceiver<u64>,
) {
    let mut finished = Vec::new();
    // Whatever finished while the previous batch was being sent makes the next one.
    while rx.recv_many(&mut finished, 4096).await > 0 {
        let plan = ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .settle(std::mem::take(&mut finished));
        crate::metric::acks_sent(plan.frames());
        let multiple = plan
            .multiple
            .map(|tag| channel.basic_ack(tag, BasicAckOptions { multiple: true }));
        let singles = plan
            .single
            .iter()
            .map(|&tag| channel.basic_ack(tag, BasicAckOptions::default()));
        let results = join_all(multiple.into_iter().chain(singles)).await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            // The channel is gone: the broker hands these jobs out again.
            tracing::warn!(error = %e, "ack failed; the jobs will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(tags: std::ops::RangeInclusive<u64>) -> AckLedger {
        let mut l = AckLedger::default();
        for t in tags {
            l.delivered(t);
        }
        l
    }

    #[test]
    fn the_oldest_finished_in_a_row_take_one_multiple_ack() {
        let mut l = ledger(1..=5);
        let plan = l.settle(vec![3, 1, 2]);
        assert_eq!(
            plan,
            AckPlan {
                multiple: Some(3),
                single: vec![]
            }
        );
        assert_eq!(l.unsettled.iter().copied().collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn finished_jobs_behind_a_running_one_are_acked_singly() {
        let mut l = ledger(1..=6);
        // 1 is still running: a multiple ack up to 4 would settle it too.
        let plan = l.settle(vec![2, 4, 3]);
        assert_eq!(
            plan,
            AckPlan {
                multiple: None,
                single: vec![2, 3, 4]
            }
        );
        // Once 1 finishes, 1 and 5 are the oldest unsettled tags in a row (2-4 are
        // settled): one multiple ack up to 5 covers both and leaves 6 alone.
        let plan = l.settle(vec![5, 1]);
        assert_eq!(plan.multiple, Some(5));
        assert!(plan.single.is_empty());
        assert_eq!(l.unsettled.iter().copied().collect::<Vec<_>>(), vec![6]);
    }

    #[test]
    fn a_nacked_delivery_does_not_hold_back_a_multiple_ack() {
        let mut l = ledger(1..=4);
        l.forget(2);
        let plan = l.settle(vec![1, 3, 4]);
        assert_eq!(plan.multiple, Some(4));
        assert!(plan.single.is_empty());
    }

    #[test]
    fn unknown_and_repeated_tags_are_never_acked() {
        let mut l = ledger(1..=2);
        let plan = l.settle(vec![1, 1, 9]);
        assert_eq!(plan.frames(), 1);
        assert_eq!(plan.single, vec![1]);
        let again = l.settle(vec![1]);
        assert_eq!(again.frames(), 0, "a tag is acked once");
    }

    #[test]
    fn a_single_finished_tag_is_a_plain_ack() {
        let mut l = ledger(1..=3);
        let plan = l.settle(vec![1]);
        assert_eq!(plan.multiple, None);
        assert_eq!(plan.single, vec![1]);
    }
}
