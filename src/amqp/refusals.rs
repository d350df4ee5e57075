//! Results the broker refuses for good. A publish that breaks a rule of the broker for
//! that one message (a `max_message_size` below its size, a topic permission that leaves
//! out its verdict's routing key) closes its channel; the job goes back and comes again,
//! first, to every session, and would for ever. Such a job is dead-lettered on its next
//! delivery, with the broker's words, and the worker goes on. A refusal of every result
//! (the user may not write to the results exchange at all) is not the message's: jobs
//! keep going back, the sessions rebuilt ever more slowly, until the operator fixes it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

use super::AmqpError;

/// How many refused deliveries are remembered; the oldest are forgotten first.
const REMEMBERED: usize = 256;

/// How long a refusal is remembered: a message handed back comes again within the
/// sessions' back-off (at most 30 s), long before.
const REMEMBERED_FOR: Duration = Duration::from_secs(600);

type Refused = VecDeque<(String, Instant, String)>;

/// The worker's memory of refused results, across its sessions: delivery ids, when,
/// and the broker's words.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    refused: Mutex<Refused>,
}

impl Refusals {
    fn refused(&self) -> std::sync::MutexGuard<'_, Refused> {
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The result of `delivery_id` failed to publish with `error`: remembered when it
    /// is a refusal of that message.
    pub(super) fn failed(&self, delivery_id: &str, error: &AmqpError) {
        let Some(words) = refusal_of_the_message(error) else {
            return;
        };
        let mut refused = self.refused();
        refused.retain(|(id, _, _)| id != delivery_id);
        if refused.len() >= REMEMBERED {
            refused.pop_front();
        }
        refused.push_back((delivery_id.to_string(), Instant::now(), words));
    }

    /// Why `delivery_id`, delivered again (`redelivered`), is to be dead-lettered: its
    /// result was refused for good within [`REMEMBERED_FOR`]. A message published anew
    /// is never taken for it, whatever its id: an upstream that sends the same job
    /// without a `message_id` again makes the same id.
    pub(super) fn dead_letter(&self, delivery_id: &str, redelivered: bool) -> Option<String> {
        let mut refused = self.refused();
        refused.retain(|(_, at, _)| at.elapsed() < REMEMBERED_FOR);
        if !redelivered {
            return None;
        }
        let at = refused.iter().position(|(id, _, _)| id == delivery_id)?;
        let (_, _, words) = refused.remove(at)?;
        Some(format!(
            "the broker refuses this job's result ({words}); check the broker's \
             max_message_size and the worker user's topic permissions"
        ))
    }
}

/// The broker's words when `error` is its refusal of one message: a channel closed for
/// PRECONDITION_FAILED on the message's size, or ACCESS_REFUSED for its routing key (a
/// topic permission); not for the exchange as a whole.
fn refusal_of_the_message(error: &AmqpError) -> Option<String> {
    let AmqpError::Protocol(e) = error else {
        return None;
    };
    let lapin::ErrorKind::ProtocolError(amqp) = e.kind() else {
        return None;
    };
    let words = amqp.get_message().as_str();
    let of_the_message = match amqp.kind() {
        AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => words.contains("message size"),
        AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => words.contains("access to topic"),
        _ => false,
    };
    of_the_message.then(|| words.to_string())
}

#[cfg(test)]
mod review_s {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    fn topic_refused() -> AmqpError {
        let words = "ACCESS_REFUSED - write access to topic 'down' in exchange 'picket.results' \
                     in vhost '/' refused for user 'picket'";
        let e = AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
            words.into(),
        );
        AmqpError::Protocol(lapin::Error::from(lapin::ErrorKind::ProtocolError(e)))
    }

    /// Review S (82508ef): two workers (each with its own memory) take turns at a job
    /// whose `down` result a topic permission refuses: both remember its delivery id,
    /// the first one to see it again dead-letters it, and the other's memory is never
    /// cleared. The id is `message_id|hash(body, timestamp)`, so the next check of the
    /// same monitor (an upstream that publishes the same JSON, no `message_id` or
    /// `timestamp`, every few minutes, as the contract allows) has the same id: once the
    /// site is up again (a result the broker takes) or the permission is fixed, it is
    /// still dead-lettered by the second worker, unprobed and unanswered, for as long as
    /// that worker runs (no age, only 256 newer refusals push it out).
    #[test]
    fn review_s_a_refusal_remembered_by_a_worker_that_did_not_dead_letter_it_takes_a_later_good_job(
    ) {
        let body = br#"{"url":"https://www.example.gov/"}"#;
        let id = crate::worker::delivery_id(None, body, None);
        let (one, two) = (Refusals::default(), Refusals::default());
        // First delivery to worker one: refused, handed back.
        assert!(one.dead_letter(&id, false).is_none());
        one.failed(&id, &topic_refused());
        // Redelivered to worker two: probed, refused, handed back.
        assert!(two.dead_letter(&id, true).is_none());
        two.failed(&id, &topic_refused());
        // Redelivered to worker one: dead-lettered (as 82508ef means).
        assert!(one.dead_letter(&id, true).is_some());
        // Ten minutes later the same check, a new message, the site up: worker two.
        let later = crate::worker::delivery_id(None, body, None);
        let stale = two.dead_letter(&later, false);
        assert!(
            stale.is_none(),
            "a later job that was never refused is dead-lettered unprobed: {stale:?}"
        );
    }
}
