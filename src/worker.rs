//! What to do with one incoming message, independent of the broker: decode it, run the
//! engine, and say what must happen next ([`Disposition`]). The AMQP adapter carries
//! the disposition out (publish with confirms, then ack; or dead-letter).

use crate::engine::Engine;
use crate::job::{decode, Decoded, Report};

/// What must be done with a message.
#[derive(Debug)]
pub enum Disposition {
    /// Publish this result (and a reply if asked), then ack.
    Answer(Box<Report>),
    /// Not a job: move it to the dead-letter queue with this reason, then ack.
    DeadLetter(String),
}

/// Handles a message body. `fallback_id` is the AMQP `message_id` or a generated id.
pub async fn handle(
    engine: &Engine,
    body: &[u8],
    fallback_id: &str,
    max_bytes: usize,
) -> Disposition {
    match decode(body, fallback_id, max_bytes) {
        Err(not_a_job) => Disposition::DeadLetter(not_a_job.0),
        Ok(Decoded::Rejected(r)) => {
            tracing::info!(job_id = %r.id, detail = %r.detail, "invalid job");
            Disposition::Answer(Box::new(engine.rejected(&r)))
        }
        Ok(Decoded::Job(job)) => {
            let span = tracing::info_span!("job", job_id = %job.id, url = %job.url);
            let report = tracing::Instrument::instrument(engine.run(&job), span.clone()).await;
            span.in_scope(|| {
                tracing::info!(verdict = report.verdict.as_str(), reason = %report.reason, cached = report.cached, "result");
            });
            Disposition::Answer(Box::new(report))
        }
    }
}

/// A job id for messages that bring none: worker name, time and a counter.
pub fn make_id(worker: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{worker}-{t:x}-{n}")
}
