//! What to do with one incoming message, independent of the broker: decode it, run the
//! engine, and say what must happen next ([`Disposition`]). The AMQP adapter carries
//! the disposition out (publish with confirms, then ack; or dead-letter).

use std::time::Duration;

use crate::engine::{Engine, Run};
use crate::job::{decode, Decoded, Report};
use crate::state::Delivery;

/// What must be done with a message.
#[derive(Debug)]
pub(crate) enum Disposition {
    /// Publish this result (and a reply if asked), then ack.
    Answer(Box<Report>),
    /// Not a job: move it to the dead-letter queue with this reason, then ack.
    DeadLetter(String),
    /// Its IP is busy: put it back on the broker to return after about this long, then ack.
    Defer(Duration),
}

/// A message as the broker handed it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    /// Its body.
    pub body: &'a [u8],
    /// The AMQP `message_id`, or a stable id made from the message.
    pub fallback_id: &'a str,
    /// Which delivery of which message this is, for the key's state.
    pub delivery: Delivery<'a>,
    /// The job was deferred as often as it may be: if its IP is still busy it is
    /// answered `unknown/rate_limited` instead of holding a probe slot while it waits.
    pub last_deferral: bool,
}

/// Handles a message. `max_bytes` is the largest job accepted; `max_wait` is how long a
/// per-IP limit may hold it before it is deferred (`None`: never).
pub(crate) async fn handle(
    engine: &Engine,
    message: Message<'_>,
    max_bytes: usize,
    max_wait: Option<Duration>,
) -> Disposition {
    match decode(message.body, message.fallback_id, max_bytes) {
        Err(not_a_job) => Disposition::DeadLetter(not_a_job.0),
        Ok(Decoded::Rejected(r)) => {
            tracing::info!(job_id = %r.id, detail = %r.detail, "invalid job");
            Disposition::Answer(Box::new(engine.rejected(&r, message.delivery).await))
        }
        Ok(Decoded::Job(job)) => {
            let span = tracing::info_span!("job", job_id = %job.id, url = %job.url);
            let run = engine.run_or_defer(&job, max_wait, message.delivery);
            match tracing::Instrument::instrument(run, span.clone()).await {
                Run::Done(report) => {
                    // Every result is published; the log keeps what needs a look, so a
                    // busy worker does not spend its time writing "up" lines.
                    span.in_scope(|| {
                        if report.verdict == crate::job::Verdict::Up {
                            tracing::debug!(verdict = report.verdict.as_str(), reason = %report.reason, cached = report.cached, "result");
                        } else {
                            tracing::info!(verdict = report.verdict.as_str(), reason = %report.reason, cached = report.cached, "result");
                        }
                    });
                    Disposition::Answer(report)
                }
                Run::Defer(_) if message.last_deferral => {
                    let why = "the per-IP limit kept this job's IP busy through every deferral";
                    let report = engine.too_busy(&job, message.delivery, why).await;
                    Disposition::Answer(Box::new(report))
                }
                Run::Defer(wait) => {
                    span.in_scope(|| {
                        tracing::info!(
                            wait_ms = wait.as_millis() as u64,
                            "IP busy; deferring the job"
                        );
                    });
                    Disposition::Defer(wait)
                }
            }
        }
    }
}

/// A job id for a message with neither `id` nor `message_id`: a hash of its body and
/// timestamp, so that a redelivery of the same message carries the same `job_id`.
pub(crate) fn stable_id(body: &[u8], timestamp: Option<u64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body
        .iter()
        .chain(timestamp.unwrap_or(0).to_le_bytes().iter())
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("msg-{h:016x}")
}

/// What tells one published message from another for the key's state: its
/// `message_id` (when it has one) and a hash of its body and timestamp. A redelivery
/// of the message has the same.
pub(crate) fn delivery_id(message_id: Option<&str>, body: &[u8], timestamp: Option<u64>) -> String {
    format!(
        "{}|{}",
        message_id.unwrap_or(""),
        stable_id(body, timestamp)
    )
}

/// A unique id: name, time and a counter (for messages picket publishes itself).
pub(crate) fn make_id(worker: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{worker}-{t:x}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_survive_redelivery_and_tell_messages_apart() {
        let a = stable_id(br#"{"url":"http://a.example/"}"#, None);
        assert_eq!(a, stable_id(br#"{"url":"http://a.example/"}"#, None));
        assert_ne!(a, stable_id(br#"{"url":"http://b.example/"}"#, None));
        assert_ne!(
            a,
            stable_id(br#"{"url":"http://a.example/"}"#, Some(1_700_000_000))
        );
        assert_ne!(make_id("w"), make_id("w"));
    }
}
