//! Results the broker refuses for good. A publish that breaks a rule of the broker for
//! that one message (a `max_message_size` below its size, a topic permission that leaves
//! out its verdict's routing key) closes its channel; the job goes back and comes again,
//! first, to every session, and would for ever. Such a job is dead-lettered on its next
//! delivery, with the broker's words, and the worker goes on. A refusal of every result
//! (the user may not write to the results exchange at all) is not the message's: jobs
//! keep going back, the sessions rebuilt ever more slowly, until the operator fixes it.

use std::collections::VecDeque;
use std::sync::Mutex;

use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

use super::AmqpError;

/// How many refused deliveries are remembered; the oldest are forgotten first.
const REMEMBERED: usize = 256;

/// The worker's memory of refused results, across its sessions: delivery ids and the
/// broker's words.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    refused: Mutex<VecDeque<(String, String)>>,
}

impl Refusals {
    fn refused(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, String)>> {
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
        refused.retain(|(id, _)| id != delivery_id);
        if refused.len() >= REMEMBERED {
            refused.pop_front();
        }
        refused.push_back((delivery_id.to_string(), words));
    }

    /// Why `delivery_id` is to be dead-lettered: its result was refused for good.
    pub(super) fn dead_letter(&self, delivery_id: &str) -> Option<String> {
        let mut refused = self.refused();
        let at = refused.iter().position(|(id, _)| id == delivery_id)?;
        let (_, words) = refused.remove(at)?;
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
