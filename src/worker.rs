//! What to do with one incoming message, independent of the broker: decode it, run the
//! engine, and say what must happen next ([`Disposition`]). The AMQP adapter carries
//! the disposition out (publish with confirms, then ack; or dead-letter).

use std::time::{Duration, SystemTime};

use crate::engine::{Engine, Run};
use crate::job::{decode, Decoded, Report};
use crate::probe::Line;
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
    /// It came back before its place in its IP's line of deferred jobs (the delay
    /// queues round down): put it back as it is, for about this long, then ack.
    Early(Duration),
    /// Its state step got no answer and may have run: put it back as a redelivery of
    /// itself (one more time unsettled), for about this long, then ack. When it comes
    /// back with the store up, it recalls the answer its step got and tells the change.
    Again(Duration),
}

/// How long a job whose state step is unsettled waits before each hand-back: once per
/// delay queue, so about 7.5 minutes of a Redis away in all. After the last, its result
/// goes out without state, as any result does while Redis is away.
const UNSETTLED_WAITS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(300),
];

/// How long a busy IP may hold a job in the worker, and how far ahead it may be deferred.
#[derive(Debug, Clone, Copy)]
pub struct Deferral {
    /// `rate_limit.max_wait`: a longer wait is deferred.
    pub max_wait: Duration,
    /// `rate_limit.max_defer`: a job told to come back later than this is answered.
    pub max_defer: Duration,
}

/// How a job that was deferred stands against its place in its IP's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Its place has come (or it has none): run it.
    Come,
    /// Its place is this close: wait for it here, as the limiter would, then run it.
    Near(Duration),
    /// Its place is further than the worker waits for an IP: back to the delay queues.
    Far(Duration),
}

/// When a deferred job was told to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Return {
    /// Its place in its IP's line, by the deferring worker's clock.
    pub at: SystemTime,
    /// The most of its wait the delay queue left (the wait less the queue's delay, which
    /// the broker kept): what is left of it on any clock. `None`: not said.
    pub most_left: Option<Duration>,
    /// When it first began to wait for its IP (its first deferral), by the clock of
    /// the worker that deferred it. `None`: not said.
    pub waiting_since: Option<SystemTime>,
}

/// The longest time a job is taken to have waited for its IP before this run: a
/// `waiting_since` further back came from a wrong clock or not from picket.
const LONGEST_WAITED: Duration = Duration::from_secs(24 * 3600);

impl Return {
    /// How long the job has waited for its IP, by this worker's clock, until `now`.
    fn waited(&self, now: SystemTime) -> Option<Duration> {
        let waited = now.duration_since(self.waiting_since?).ok()?;
        (waited <= LONGEST_WAITED).then_some(waited)
    }
}

impl Deferral {
    /// Where a job told to come back at `back` stands at `now`. A job that ran ahead of
    /// its place would take the slot of the one whose place it is, which would then be
    /// deferred again, to the end of the line. A place further ahead than `max_defer`
    /// came from a wrong clock or not from picket: it is not waited for; nor longer than
    /// the delay queue left of the wait (a deferring worker's clock ahead of ours).
    pub(crate) fn place(&self, back: Return, now: SystemTime) -> Place {
        let rest = back
            .at
            .duration_since(now)
            .map(|rest| back.most_left.map_or(rest, |most| rest.min(most)));
        match rest {
            Ok(rest) if rest > self.max_defer || rest.is_zero() => Place::Come,
            Ok(rest) if rest > self.max_wait => Place::Far(rest),
            Ok(rest) => Place::Near(rest),
            Err(_) => Place::Come,
        }
    }
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
    /// When a deferral told it to come back (its place in its IP's line).
    pub not_before: Option<Return>,
    /// How often it was handed back because its state step was unsettled
    /// ([`Disposition::Again`]).
    pub unsettled: usize,
}

/// Handles a message. `max_bytes` is the largest job accepted; `deferral` says how long
/// a per-IP limit may hold it before it is deferred (`None`: never).
pub(crate) async fn handle(
    engine: &Engine,
    message: Message<'_>,
    max_bytes: usize,
    deferral: Option<Deferral>,
) -> Disposition {
    let place = deferral
        .zip(message.not_before)
        .map_or(Place::Come, |(d, at)| d.place(at, SystemTime::now()));
    match place {
        Place::Far(rest) => return Disposition::Early(rest),
        Place::Near(rest) => tokio::time::sleep(rest).await,
        Place::Come => {}
    }
    let waited = message
        .not_before
        .and_then(|back| back.waited(SystemTime::now()));
    match decode(message.body, message.fallback_id, max_bytes) {
        Err(not_a_job) => Disposition::DeadLetter(not_a_job.0),
        Ok(Decoded::Rejected(r)) => {
            tracing::info!(job_id = %r.id, detail = %r.detail, "invalid job");
            Disposition::Answer(Box::new(engine.rejected(&r, message.delivery).await))
        }
        Ok(Decoded::Job(job)) => {
            let mut disposition = run_job(engine, &job, message, deferral).await;
            if let (Disposition::Answer(report), Some(waited)) = (&mut disposition, waited) {
                queued_before(report, waited);
            }
            disposition
        }
    }
}

/// Runs a decoded job: its result, or a deferral, or `unknown/rate_limited` when its
/// IP stays busy beyond what a deferral may cover.
async fn run_job(
    engine: &Engine,
    job: &crate::job::Job,
    message: Message<'_>,
    deferral: Option<Deferral>,
) -> Disposition {
    let span = tracing::info_span!("job", job_id = %job.id, url = %job.url);
    let max_wait = deferral.map(|d| d.max_wait);
    let line = match (deferral, message.not_before) {
        (None, _) => Line::Outside,
        (Some(_), _) if message.last_deferral => Line::Last,
        (Some(_), None) => Line::Fresh,
        (Some(_), Some(_)) => Line::Placed,
    };
    let run = engine.run_or_defer(job, max_wait, line, message.delivery);
    match tracing::Instrument::instrument(run, span.clone()).await {
        Run::Done(report) => {
            // Every result is published; the log keeps what needs a look, so a busy
            // worker does not spend its time writing "up" lines.
            span.in_scope(|| {
                if report.verdict == crate::job::Verdict::Up {
                    tracing::debug!(verdict = report.verdict.as_str(), reason = %report.reason, cached = report.cached, "result");
                } else {
                    tracing::info!(verdict = report.verdict.as_str(), reason = %report.reason, cached = report.cached, "result");
                }
            });
            Disposition::Answer(report)
        }
        Run::Unsettled(report, may_have_run) => {
            unsettled(report, may_have_run, message.unsettled, &span)
        }
        Run::Defer(wait) if message.last_deferral || too_far(deferral, wait) => {
            let why = too_busy(message.last_deferral, wait);
            span.in_scope(|| {
                crate::metric::too_busy(!message.last_deferral);
                tracing::warn!(wait_ms = wait.as_millis() as u64, detail = %why, "IP too busy; answered unknown/rate_limited unprobed");
            });
            let report = engine.too_busy(job, message.delivery, &why).await;
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

/// Adds to a probed result's `timing_ms.queue` what its job `waited` for its IP before
/// this run: deferrals, delay queues, its place in its IP's line. A result told from the
/// cache or unprobed waited for nothing of it.
fn queued_before(report: &mut crate::job::Report, waited: Duration) {
    if report.cached || report.attempts == 0 {
        return;
    }
    let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    let queue = report.timing_ms.queue.unwrap_or(0).saturating_add(ms);
    report.timing_ms.queue = Some(queue);
}

/// A result whose state step got no answer: handed back while the step may have run (or
/// this is a hand-back whose first step may have) and hand-backs are left, else answered
/// without state.
fn unsettled(
    report: Box<crate::job::Report>,
    may_have_run: bool,
    handed_back: usize,
    span: &tracing::Span,
) -> Disposition {
    match UNSETTLED_WAITS.get(handed_back) {
        Some(wait) if may_have_run || handed_back > 0 => {
            span.in_scope(|| {
                tracing::warn!(wait_ms = wait.as_millis() as u64, handed_back, "state step unanswered and it may have run; handing the job back to tell its change");
            });
            Disposition::Again(*wait)
        }
        _ => {
            crate::engine::without_state(&report);
            Disposition::Answer(report)
        }
    }
}

/// The `detail` of a job answered unprobed because its IP stays busy.
fn too_busy(last_deferral: bool, wait: Duration) -> String {
    if last_deferral {
        "the per-IP limit kept this job's IP busy through every deferral".into()
    } else {
        format!(
            "this job's IP has more jobs waiting than its rate allows within rate_limit.max_defer: its place would be {} s away",
            wait.as_secs()
        )
    }
}

/// Whether a deferral of `wait` is further ahead than a job may be deferred.
fn too_far(deferral: Option<Deferral>, wait: Duration) -> bool {
    deferral.is_some_and(|d| wait > d.max_defer)
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

    #[test]
    fn a_job_back_before_its_place_waits_for_it_unless_the_place_is_implausible() {
        let d = Deferral {
            max_wait: Duration::from_secs(30),
            max_defer: Duration::from_secs(600),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |s: u64| Return {
            at: now + Duration::from_secs(s),
            most_left: None,
            waiting_since: None,
        };
        // 65 s early: more than the worker waits itself, so back to the delay queues.
        assert_eq!(d.place(at(65), now), Place::Far(Duration::from_secs(65)));
        // Within max_wait it waits for its place here; past it, it runs.
        assert_eq!(d.place(at(30), now), Place::Near(Duration::from_secs(30)));
        let past = Return {
            at: now - Duration::from_secs(5),
            most_left: None,
            waiting_since: None,
        };
        assert_eq!(d.place(past, now), Place::Come);
        // Further than any deferral goes: a wrong clock or not ours, so not waited for.
        assert_eq!(d.place(at(601), now), Place::Come);
    }

    #[test]
    fn the_wait_before_a_run_counts_from_the_first_deferral_unless_implausible() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let since = |t: SystemTime| Return {
            at: now,
            most_left: None,
            waiting_since: Some(t),
        };
        let ago = |s: u64| since(now - Duration::from_secs(s));
        assert_eq!(ago(7).waited(now), Some(Duration::from_secs(7)));
        // Another worker's clock ahead of ours, or a day and more: not said.
        assert_eq!(since(now + Duration::from_secs(1)).waited(now), None);
        assert_eq!(ago(24 * 3600 + 1).waited(now), None);
        let none = Return {
            waiting_since: None,
            ..ago(1)
        };
        assert_eq!(none.waited(now), None);
    }
}
