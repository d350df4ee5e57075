//! One delivery's handling, from the message to its ack: read its headers, run the
//! handler (decode and engine) under a panic guard, publish what it decided and wait for
//! the broker's confirmation, then ack, or hand the job back (a nack, or a copy through a
//! delay queue). Poison messages and the `PICKET_TEST_CRASH` hook live here too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapin::options::BasicNackOptions;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

use super::ack::Acks;
use super::pending::{self, Outcome, Stage};
use super::publish::report_message;
use super::reply::Replies;
use super::topology::{delay_bucket, delay_queue_name, DELAY_BUCKETS};
use super::{publish_confirmed, AmqpError, Publisher, Route};
use crate::config::AmqpSettings;
use crate::engine::Engine;
use crate::metric;
use crate::worker::{self, Disposition};

/// Header carrying why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-picket-reason";
/// Header counting how often a job was deferred because its IP was busy.
pub const DEFERRALS_HEADER: &str = "x-picket-deferrals";
/// Header carrying when a deferred job's place in its IP's line comes (ms since the Unix
/// epoch, by the deferring worker's clock).
pub const NOT_BEFORE_HEADER: &str = "x-picket-not-before";
/// Header carrying the most of a deferral's wait left once the delay queue has held the
/// copy (ms): the wait less the queue's delay, whatever the clocks of the workers say.
pub const MOST_LEFT_HEADER: &str = "x-picket-most-left";
/// Header carrying when a deferred job first began to wait for its IP (ms since the Unix
/// epoch, by the clock of the worker that first deferred it): its result's
/// `timing_ms.queue` counts from then.
pub const WAITING_SINCE_HEADER: &str = "x-picket-waiting-since";
/// After this many deferrals a job whose IP is still busy is answered unknown/rate_limited
/// (it cannot loop for ever, nor hold a probe slot while it waits).
pub const MAX_DEFERRALS: i64 = 20;
/// Pause before handing back a job whose result the broker refused.
const NACK_PAUSE: Duration = Duration::from_secs(1);

/// What the jobs of one broker session share.
#[derive(Clone)]
pub(super) struct Session {
    /// The engine that handles each job.
    pub(super) engine: Arc<Engine>,
    /// The session's publishing channels (confirm mode).
    pub(super) publish: Publisher,
    /// The worker's replies to `reply_to`, over a connection of their own.
    pub(super) replies: Arc<Replies>,
    /// Results the broker refused for good (kept across sessions).
    pub(super) refusals: Arc<super::refusals::Refusals>,
    /// The broker settings (queue names, message size limit).
    pub(super) settings: Arc<AmqpSettings>,
    /// How long a per-IP limit may hold a job, and how far ahead it may be deferred.
    pub(super) deferral: worker::Deferral,
    /// The session's ack task.
    pub(super) acks: Acks,
    /// Cancelled by a job whose publish failed: the session is rebuilt.
    pub(super) broken: CancellationToken,
    /// Cancelled when the session is over: its unfinished jobs stop.
    pub(super) over: CancellationToken,
    /// The worker's shutdown: a session over because of it hands its unfinished jobs
    /// back as copies where a return would count (see [`hand_back_on_stop`]).
    pub(super) shutdown: CancellationToken,
    /// The connection ended on a message the client cannot read, and that was told
    /// (the consumer and the connection's events both see it; told once).
    pub(super) unreadable: Arc<std::sync::atomic::AtomicBool>,
    /// A job's publish was confirmed and the job acked: the session works.
    pub(super) settled: Arc<std::sync::atomic::AtomicBool>,
    /// The connection's largest frame: a message's properties must fit one.
    pub(super) frame_max: usize,
}

/// One delivery's task: handled to the end, or stopped when its session is over. A
/// panic anywhere in the handling, publishing included, ends in a nack (the failure is
/// counted: a second one makes the message poison), never in a delivery that stays
/// unacked for good.
pub(super) async fn job(
    session: Session,
    delivery: lapin::message::Delivery,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    use futures_util::FutureExt;
    metric::in_flight(1.0);
    let tag = delivery.delivery_tag;
    let acker = delivery.acker.clone();
    let s = &session;
    let work = deliver(s, &delivery);
    tokio::select! {
        () = s.over.cancelled() => {
            if !(s.shutdown.is_cancelled() && hand_back_on_stop(s, &delivery).await) {
                tracing::info!("session over; the broker hands this job out again");
            }
        }
        handled = std::panic::AssertUnwindSafe(work).catch_unwind() => match handled {
            Ok(true) => {}
            Ok(false) => s.broken.cancel(),
            Err(e) => {
                tracing::error!(error = %panic_text(e), "publishing a result failed unexpectedly; handing the job back");
                metric::requeued();
                let nack = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                let _ = acker.nack(nack).await;
                s.acks.forget(tag);
            }
        },
    }
    metric::in_flight(-1.0);
    drop(permit);
}

/// Handles one delivery to the end (ack or nack): decode, engine, publish, settle.
/// False when publishing failed, which means the session should be rebuilt.
async fn deliver(s: &Session, delivery: &lapin::message::Delivery) -> bool {
    if let Some(stage) = pending::stage(&delivery.properties) {
        return pending::retry(s, delivery, stage).await;
    }
    let received = Received::read(delivery);
    let refused = s
        .refusals
        .dead_letter(&received.delivery_id, received.redelivered);
    let decided = match refused {
        Some(why) => Some(Disposition::DeadLetter(why)),
        None => decide(s, delivery, &received).await,
    };
    let Some(disposition) = decided else {
        requeue(delivery, &s.acks).await;
        return true;
    };
    crash_point(CrashPoint::AfterState, &disposition);
    let outcome = publish_disposition(s, delivery, &received, &disposition).await;
    settle(s, delivery, &received, &disposition, outcome).await
}

/// What a delivery's properties say about it, read once.
struct Received {
    /// How often it was deferred already (`x-picket-deferrals`).
    deferrals: i64,
    /// Its place in its IP's line, when it was deferred (`x-picket-not-before`), and the
    /// most of its wait left (`x-picket-most-left`).
    not_before: Option<worker::Return>,
    /// The job id a message without one is answered under.
    fallback_id: String,
    /// The delivery's id for the key's state: the copied message's for a handed-back copy.
    delivery_id: String,
    /// Seen before: redelivered by the broker, or a copy handed back by us.
    redelivered: bool,
    /// How often it was handed back with its state step unsettled (`x-picket-unsettled`).
    unsettled: usize,
}

impl Received {
    fn read(delivery: &lapin::message::Delivery) -> Self {
        Received::of(&delivery.properties, &delivery.data, delivery.redelivered)
    }

    fn of(props: &BasicProperties, data: &[u8], redelivered: bool) -> Self {
        let message_id = props.message_id().as_ref().map(|m| m.as_str());
        let message_id = message_id.filter(|m| !m.is_empty());
        let timestamp = props.timestamp().as_ref().copied();
        let fallback_id = message_id
            .map(str::to_string)
            .unwrap_or_else(|| worker::stable_id(data, timestamp));
        // A job handed back as a copy (see `hand_back`) is a redelivery of the message it
        // copies, for the key's state.
        let retry_of = header_text(props, RETRY_OF_HEADER);
        let redelivered = redelivered || retry_of.is_some();
        let delivery_id =
            retry_of.unwrap_or_else(|| worker::delivery_id(message_id, data, timestamp));
        Received {
            deferrals: deferrals(props),
            not_before: not_before(props),
            fallback_id,
            delivery_id,
            redelivered,
            unsettled: header_int(props, UNSETTLED_HEADER)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
        }
    }
}

/// The `x-picket-deferrals` count (0 when absent).
fn deferrals(props: &BasicProperties) -> i64 {
    header_int(props, DEFERRALS_HEADER).unwrap_or(0)
}

/// The `x-picket-not-before` place, when it is a time at all: a header of any other type
/// or range (not set by picket) is no place, never a failure of the job.
fn not_before(props: &BasicProperties) -> Option<worker::Return> {
    let ms = u64::try_from(header_int(props, NOT_BEFORE_HEADER)?).ok()?;
    let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let most_left = header_int(props, MOST_LEFT_HEADER)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis);
    let waiting_since = header_int(props, WAITING_SINCE_HEADER)
        .and_then(|ms| u64::try_from(ms).ok())
        .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
    Some(worker::Return {
        at,
        most_left,
        waiting_since,
    })
}

/// Epoch milliseconds as a header value.
fn epoch_ms(t: SystemTime) -> AMQPValue {
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    AMQPValue::LongLongInt(i64::try_from(ms.as_millis()).unwrap_or(i64::MAX))
}

/// An integer header.
pub(super) fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Runs the handler (decode and engine) over the delivery. `None` when it panicked for
/// the first time on this message: the caller hands the job back once.
async fn decide(
    s: &Session,
    delivery: &lapin::message::Delivery,
    received: &Received,
) -> Option<Disposition> {
    use futures_util::FutureExt;
    // A panic on some message is caught here (no task of its own: a spawn and a join per
    // job cost more than the handler's bookkeeping): the first time the job goes back to
    // the queue, a second time it is poison.
    let room_for_a_copy =
        super::frame::header_frame_len(&delivery.properties) + COPY_HEADERS_ROOM <= s.frame_max;
    let message = worker::Message {
        body: &delivery.data,
        fallback_id: &received.fallback_id,
        delivery: crate::state::Delivery {
            id: &received.delivery_id,
            redelivered: received.redelivered,
        },
        // A job whose own headers leave no room in a frame for a copy's (the broker
        // would close the connection on it) is answered now: never deferred, never
        // handed back.
        last_deferral: received.deferrals >= MAX_DEFERRALS || !room_for_a_copy,
        not_before: received.not_before,
        unsettled: if room_for_a_copy {
            received.unsettled
        } else {
            usize::MAX
        },
    };
    let limit = s.settings.max_message_bytes;
    let handle = worker::handle(&s.engine, message, limit, Some(s.deferral));
    match std::panic::AssertUnwindSafe(handle).catch_unwind().await {
        Ok(d) => Some(d),
        Err(e) => {
            let why = panic_text(e);
            let poison = poison_reason(failures().count(&received.delivery_id), &why);
            if poison.is_none() {
                tracing::error!(error = %why, "handler failed; handing the job back once");
            }
            poison.map(Disposition::DeadLetter)
        }
    }
}

/// Publishes what the disposition says (a deferred copy, the result, a dead letter) and
/// waits for the broker's confirmation.
async fn publish_disposition(
    s: &Session,
    delivery: &lapin::message::Delivery,
    received: &Received,
    disposition: &Disposition,
) -> Result<(), AmqpError> {
    let props = &delivery.properties;
    match disposition {
        Disposition::Defer(wait) => {
            let p = deferred(props, received, SystemTime::now() + *wait);
            delay_counted(s, delivery, *wait, p, metric::deferred).await
        }
        Disposition::Early(rest) => {
            let p = still_redelivered(republished(props), received);
            delay_counted(s, delivery, *rest, p, metric::back_early).await
        }
        Disposition::Again(wait) => {
            let count = i64::try_from(received.unsettled + 1).unwrap_or(i64::MAX);
            let p = copy_with(props, UNSETTLED_HEADER, AMQPValue::LongLongInt(count));
            let of = AMQPValue::LongString(received.delivery_id.as_str().into());
            let p = copy_with(&p, RETRY_OF_HEADER, of);
            delay_counted(s, delivery, *wait, p, metric::requeued).await
        }
        Disposition::Answer(report) => answer(s, props, report).await,
        Disposition::DeadLetter(reason) => dead_letter(s, delivery, reason).await,
    }
}

/// [`delay`], counted by `counted` once confirmed.
async fn delay_counted(
    s: &Session,
    delivery: &lapin::message::Delivery,
    wait: Duration,
    p: BasicProperties,
    counted: fn(),
) -> Result<(), AmqpError> {
    let r = delay(s, delivery, wait, p).await;
    if r.is_ok() {
        counted();
    }
    r
}

/// Tells `report`: its result, its reply to the job's `reply_to` (with its
/// `correlation_id`), its change; what a full queue refuses is retried alone
/// ([`pending`]).
async fn answer(
    s: &Session,
    props: &BasicProperties,
    report: &crate::job::Report,
) -> Result<(), AmqpError> {
    let message = report_message(report);
    pending::tell(s, &Outcome::of(report, &message, props), Stage::Result).await
}

/// Copies a message that is no job to the dead-letter queue, its `reason` in a header.
pub(super) async fn dead_letter(
    s: &Session,
    delivery: &lapin::message::Delivery,
    reason: &str,
) -> Result<(), AmqpError> {
    tracing::warn!(reason = %reason, "not a job; dead-lettering");
    dead_letter_message(s, (&delivery.properties, &delivery.data), reason).await
}

/// Copies the message `(props, data)` to the dead-letter queue, its `reason` in a header.
pub(super) async fn dead_letter_message(
    s: &Session,
    (props, data): (&BasicProperties, &[u8]),
    reason: &str,
) -> Result<(), AmqpError> {
    let why = AMQPValue::LongString(reason.into());
    let mut p = copy_with(props, REASON_HEADER, why);
    // Its headers leave no room for ours: the broker would close the connection on the
    // copy. Its reason is in the log line above; the copy keeps what it came with, not
    // even made persistent when that is one byte too many.
    if !fits_a_frame(s, &p) {
        p = republished(props);
    }
    if !fits_a_frame(s, &p) {
        p = copy_of(props, *props.delivery_mode());
    }
    let dead = ("", s.settings.dead_letter_queue.as_str());
    let r = publish_confirmed(&s.publish, dead, Route::Mandatory, data, p).await;
    if r.is_ok() {
        metric::dead_lettered();
    }
    r
}

/// The properties of a deferred job's copy: one more deferral, its place in its IP's
/// line (`place`), when it began to wait (kept from its first deferral), and, for a
/// redelivery, the message it copies.
fn deferred(props: &BasicProperties, received: &Received, place: SystemTime) -> BasicProperties {
    let count = AMQPValue::LongLongInt(received.deferrals + 1);
    let mut p = copy_with(props, DEFERRALS_HEADER, count);
    if header_int(props, WAITING_SINCE_HEADER).is_none() {
        p = copy_with(&p, WAITING_SINCE_HEADER, epoch_ms(SystemTime::now()));
    }
    still_redelivered(copy_with(&p, NOT_BEFORE_HEADER, epoch_ms(place)), received)
}

/// A copy of a redelivered job stays a redelivery of the message it copies (see
/// `hand_back`): its first delivery may have taken a step whose change was never told,
/// and the copy comes back without the broker's `redelivered` flag.
fn still_redelivered(p: BasicProperties, received: &Received) -> BasicProperties {
    if !received.redelivered {
        return p;
    }
    let of = AMQPValue::LongString(received.delivery_id.as_str().into());
    let mut headers = p.headers().clone().unwrap_or_default();
    headers.insert(RETRY_OF_HEADER.into(), of);
    p.with_headers(headers)
}

/// Publishes a copy of the job to the delay queue for `wait`.
async fn delay(
    s: &Session,
    delivery: &lapin::message::Delivery,
    wait: Duration,
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let queue = delay_queue_name(&s.settings, delay_bucket(wait));
    let to = ("", queue.as_str());
    let props = delayed(props, wait);
    publish_confirmed(&s.publish, to, Route::Mandatory, &delivery.data, props).await
}

/// A copy's properties for a delay queue, for a wait of `wait`: the most of it left once
/// the queue held it (its bucket rounds down), which no worker's clock can stretch.
fn delayed(props: BasicProperties, wait: Duration) -> BasicProperties {
    let bucket = Duration::from_secs(delay_bucket(wait));
    let left = wait.saturating_sub(bucket).as_millis();
    let left = AMQPValue::LongLongInt(i64::try_from(left).unwrap_or(i64::MAX));
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(MOST_LEFT_HEADER.into(), left);
    props.with_headers(headers)
}

/// The delivery's properties with one header added: for the copies we publish.
fn copy_with(props: &BasicProperties, header: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(header.into(), value);
    republished(props).with_headers(headers)
}

/// The properties of a copy of the job we publish (dead letter, deferral, hand-back):
/// the job's own, persistent, without two that are the original publish's and not
/// the copy's. `expiration` would drop the copy when it runs out (a dead letter lost; a
/// deferred job back early again and again), and RabbitMQ refuses a publish whose
/// `user_id` is not the publishing connection's user (a worker with a user of its own
/// was refused every copy, and the job handed back for ever).
fn republished(props: &BasicProperties) -> BasicProperties {
    copy_of(props, Some(2))
}

/// [`republished`] with `delivery_mode` as given.
fn copy_of(props: &BasicProperties, delivery_mode: Option<u8>) -> BasicProperties {
    let mut p = BasicProperties::default();
    if let Some(mode) = delivery_mode {
        p = p.with_delivery_mode(mode);
    }
    if let Some(v) = props.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = props.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = props.headers() {
        p = p.with_headers(v.clone());
    }
    if let Some(v) = props.priority() {
        p = p.with_priority(*v);
    }
    if let Some(v) = props.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = props.reply_to() {
        p = p.with_reply_to(v.clone());
    }
    if let Some(v) = props.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = props.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = props.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = props.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = props.cluster_id() {
        p = p.with_cluster_id(v.clone());
    }
    p
}

/// Whether a message with `props` fits one header frame of the session's connection.
fn fits_a_frame(s: &Session, props: &BasicProperties) -> bool {
    super::frame::header_frame_len(props) <= s.frame_max
}

/// Room a job's copy needs for picket's own headers (a deferral's four, a hand-back's
/// `x-picket-retry-of` with a delivery id of up to 255 bytes, `x-picket-unsettled`) and
/// its delivery mode.
const COPY_HEADERS_ROOM: usize = 512;

/// Acks the delivery once its publish was confirmed, or hands it back. False when the
/// session should be rebuilt.
async fn settle(
    s: &Session,
    delivery: &lapin::message::Delivery,
    received: &Received,
    disposition: &Disposition,
    outcome: Result<(), AmqpError>,
) -> bool {
    let Err(e) = outcome else {
        crash_point(CrashPoint::AfterPublish, disposition);
        // If the ack is lost the broker redelivers the job: a duplicate result,
        // never a lost job.
        s.acks.ack(delivery.delivery_tag);
        s.settled.store(true, std::sync::atomic::Ordering::Relaxed);
        return true;
    };
    metric::publish_failed();
    // The message stays what operators alert on; the error names where the refused
    // publish went (the results exchange, the changes exchange, a copy's queue).
    tracing::warn!(error = %e, "result not confirmed; handing the job back");
    if matches!(disposition, Disposition::Answer(_)) {
        s.refusals.failed(&received.delivery_id, &e);
    }
    let nacked = matches!(e, AmqpError::Nacked { .. });
    if nacked || matches!(e, AmqpError::Unroutable { .. }) {
        // The broker refused this one message (a full queue, a missing one): hand
        // it back after a pause rather than in a hot loop.
        tokio::time::sleep(NACK_PAUSE).await;
    }
    if !(nacked && hand_back(s, delivery, &received.delivery_id).await) {
        requeue(delivery, &s.acks).await;
    }
    // A nack leaves the session fine; a missing queue is declared again by a new
    // session, and a failed publish may mean the channel is gone.
    nacked
}

/// Header of a job's copy handed back through a delay queue: the delivery id of the
/// message it copies, so that the copy is a redelivery for the key's state.
pub const RETRY_OF_HEADER: &str = "x-picket-retry-of";

/// Header of a job's copy handed back because its state step got no answer and may have
/// run (`worker::Disposition::Again`): how often so far.
pub const UNSETTLED_HEADER: &str = "x-picket-unsettled";

/// A short-string or long-string header's text.
pub(super) fn header_text(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Hands a job whose result the broker refused (a full results queue) back as a copy
/// through the shortest delay queue, then acks it: a nack would count as a delivery on a
/// quorum queue, whose `x-delivery-limit` would dead-letter a healthy job after a few
/// refusals of a full queue that is not its fault. False when the copy was not
/// confirmed either (the caller nacks then).
async fn hand_back(s: &Session, delivery: &lapin::message::Delivery, delivery_id: &str) -> bool {
    let of = AMQPValue::LongString(delivery_id.into());
    let props = copy_with(&delivery.properties, RETRY_OF_HEADER, of);
    if !fits_a_frame(s, &props) {
        return false;
    }
    let queue = delay_queue_name(&s.settings, DELAY_BUCKETS[0]);
    let to = ("", queue.as_str());
    match publish_confirmed(&s.publish, to, Route::Mandatory, &delivery.data, props).await {
        Ok(()) => {
            metric::requeued();
            s.acks.ack(delivery.delivery_tag);
            true
        }
        Err(_) => false,
    }
}

/// Hands a job the worker stops without finishing (at shutdown: only prefetched, or
/// still running when the grace ran out) back as a copy, then acks it, where the queue
/// is a quorum queue: there the channel's close would count a delivery, and a backlog
/// that lived through `x-delivery-limit` rollouts or scale-downs would be dead-lettered
/// unanswered (hunt W). A classic queue counts nothing and keeps the job's place, so it
/// is left to the close. False when nothing was handed back (the close returns it).
pub(super) async fn hand_back_on_stop(s: &Session, delivery: &lapin::message::Delivery) -> bool {
    if s.settings.queue_type != crate::config::QueueType::Quorum {
        return false;
    }
    let received = Received::read(delivery);
    let handed = hand_back(s, delivery, &received.delivery_id).await;
    if handed {
        tracing::info!(
            job_id = %received.fallback_id,
            "worker stopping; the job is handed back as a copy"
        );
    }
    handed
}

/// Hands a delivery back to the queue (the broker redelivers it, to us or another worker).
pub(super) async fn requeue(delivery: &lapin::message::Delivery, acks: &Acks) {
    metric::requeued();
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await;
    // Only now, with the nack sent: a multiple ack sent before it would have settled
    // this delivery as done.
    acks.forget(delivery.delivery_tag);
}

/// After the handler failed on a message for the `failures`-th time: `None` = hand it
/// back once more; `Some(reason)` = it is poison, dead-letter it with that reason.
fn poison_reason(failures: u32, why: &str) -> Option<String> {
    (failures >= 2).then(|| format!("the handler failed on this message {failures} times: {why}"))
}

/// Handler failures by message in this process. Counting them, rather than trusting
/// the broker's `redelivered` flag, keeps a job that was merely handed back (a broken
/// session, a killed worker) from being called poison at its first failure.
struct Failures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `delivery_id` and returns how many there were.
    fn count(&self, delivery_id: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Failures are rare; a bound keeps a storm of them from growing without end.
        if map.len() > 10_000 {
            map.clear();
        }
        let n = map.entry(delivery_id.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

fn failures() -> &'static Failures {
    static FAILURES: std::sync::OnceLock<Failures> = std::sync::OnceLock::new();
    FAILURES.get_or_init(|| Failures(std::sync::Mutex::new(std::collections::HashMap::new())))
}

/// Where the test hook `PICKET_TEST_CRASH=POINT:JOB_ID` ends the process, as `kill -9`
/// would, so that tests kill a worker at an exact step instead of by luck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// The key's state was stepped, nothing published yet.
    AfterState,
    /// The result (and change) were confirmed, the job not yet acked.
    AfterPublish,
}

fn crash_point(point: CrashPoint, disposition: &Disposition) {
    static HOOK: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var("PICKET_TEST_CRASH").ok()?;
        let (at, job) = v.split_once(':')?;
        Some((at.to_string(), job.to_string()))
    });
    let Some((at, job)) = hook else { return };
    let name = match point {
        CrashPoint::AfterState => "after_state",
        CrashPoint::AfterPublish => "after_publish",
    };
    if let Disposition::Answer(report) = disposition {
        if at == name && &report.job_id == job {
            eprintln!("PICKET_TEST_CRASH: ending the process {name} of job {job}");
            std::process::abort();
        }
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_failure_is_retried_once_then_the_message_is_poison() {
        assert_eq!(poison_reason(1, "boom"), None);
        let reason = poison_reason(2, "boom").expect("poison");
        assert!(
            reason.contains("boom") && reason.contains("2 times"),
            "{reason}"
        );
        let f = Failures(std::sync::Mutex::new(std::collections::HashMap::new()));
        assert_eq!((f.count("a"), f.count("b"), f.count("a")), (1, 1, 2));
    }

    #[test]
    fn a_place_header_of_any_value_is_read_without_failing() {
        let with = |v: AMQPValue| {
            let mut h = lapin::types::FieldTable::default();
            h.insert(NOT_BEFORE_HEADER.into(), v);
            not_before(&BasicProperties::default().with_headers(h)).map(|r| r.at)
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        assert_eq!(with(AMQPValue::LongLongInt(1_800_000_000_000)), Some(at));
        assert_eq!(with(AMQPValue::LongLongInt(-5)), None);
        assert_eq!(with(AMQPValue::LongString("soon".into())), None);
        // Far beyond any deferral: read, then ignored by `Deferral::place`.
        assert!(with(AMQPValue::LongLongInt(i64::MAX)).is_some());
        assert_eq!(not_before(&BasicProperties::default()), None);
    }

    /// An empty `message_id` was taken for an id: every such job had `job_id: ""`, one id
    /// for all, and one delivery id for the key's memo. The contract's fallback is for
    /// an absent id; an empty one is none.
    #[test]
    fn an_empty_message_id_is_no_id() {
        let body = br#"{"url":"http://a.example/"}"#;
        let empty = BasicProperties::default().with_message_id("".into());
        let none = BasicProperties::default();
        let (a, b) = (
            Received::of(&empty, body, false),
            Received::of(&none, body, false),
        );
        assert!(!a.fallback_id.is_empty());
        assert_eq!(
            (a.fallback_id, a.delivery_id),
            (b.fallback_id, b.delivery_id)
        );
    }

    #[test]
    fn a_copy_keeps_the_jobs_properties_but_its_expiration_and_user() {
        let job = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_timestamp(1_800_000_000)
            .with_priority(3)
            .with_app_id("scheduler".into())
            .with_expiration("2000".into())
            .with_user_id("upstream".into());
        let copy = copy_with(&job, REASON_HEADER, AMQPValue::LongString("why".into()));
        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.delivery_mode(), &Some(2), "persistent");
        assert_eq!(copy.message_id(), job.message_id());
        assert_eq!(copy.correlation_id(), job.correlation_id());
        assert_eq!(copy.reply_to(), job.reply_to());
        assert_eq!(copy.timestamp(), job.timestamp());
        assert_eq!(copy.priority(), job.priority());
        assert_eq!(copy.app_id(), job.app_id());
        let headers = copy.headers().clone().expect("headers");
        assert!(headers.inner().contains_key(REASON_HEADER));
    }

    #[tokio::test]
    async fn panic_text_reads_the_panic_message() {
        use futures_util::FutureExt;
        let e = std::panic::AssertUnwindSafe(async { panic!("bad input {}", 7) })
            .catch_unwind()
            .await
            .expect_err("panics");
        assert_eq!(panic_text(e), "bad input 7");
    }

    /// A job deferred for 1 s by a worker whose clock runs three minutes ahead: its place
    /// is three minutes ahead on every other worker's clock, and it went back to the delay
    /// queues again and again while its IP sat idle (found by a hunt with `faketime`:
    /// twelve jobs took 187 s instead of 12). The delay queue kept its wait: it runs.
    #[test]
    fn a_deferral_by_a_clock_ahead_is_not_held_for_the_clocks_lead() {
        let props = BasicProperties::default().with_message_id("m-1".into());
        let first = Received::of(&props, b"{}", false);
        let ahead = SystemTime::now() + Duration::from_secs(180);
        let wait = Duration::from_secs(1);
        let copy = delayed(deferred(&props, &first, ahead + wait), wait);
        let back = Received::of(&copy, b"{}", false);
        let d = crate::worker::Deferral {
            max_wait: Duration::from_secs(30),
            max_defer: Duration::from_secs(600),
        };
        let place = d.place(back.not_before.expect("a place"), SystemTime::now());
        assert_eq!(place, crate::worker::Place::Come);
        // A wait the delay queue could not keep whole (6.5 s in the 5 s queue) is waited
        // out here, at most what it left.
        let wait = Duration::from_millis(6500);
        let copy = delayed(deferred(&props, &first, ahead + wait), wait);
        let back = Received::of(&copy, b"{}", false);
        let place = d.place(back.not_before.expect("a place"), SystemTime::now());
        assert_eq!(
            place,
            crate::worker::Place::Near(Duration::from_millis(1500))
        );
    }

    /// A job deferred twice waits from its first deferral: the second copy keeps the
    /// first's `x-picket-waiting-since`.
    #[test]
    fn a_job_deferred_again_keeps_when_it_began_to_wait() {
        let props = BasicProperties::default().with_message_id("m-1".into());
        let place = SystemTime::now() + Duration::from_secs(2);
        let before = SystemTime::now();
        let once = deferred(&props, &Received::of(&props, b"{}", false), place);
        let since = |p: &BasicProperties| {
            let back = Received::of(p, b"{}", false).not_before.expect("a place");
            back.waiting_since.expect("when it began to wait")
        };
        let first = since(&once);
        assert!(first >= before - Duration::from_millis(1), "{first:?}");
        std::thread::sleep(Duration::from_millis(5));
        let twice = deferred(&once, &Received::of(&once, b"{}", false), place);
        assert_eq!(since(&twice), first);
        assert_eq!(Received::of(&twice, b"{}", false).deferrals, 2);
    }

    /// Review D. A redelivered job (its first delivery took `up → down` and its worker
    /// died before publishing) that another job of the key overtook is not replayed but
    /// probed again, and when its IP is busy it is deferred: the copy through the delay
    /// queue carries neither the broker's `redelivered` flag nor `x-picket-retry-of`, so
    /// when it comes back it is a new delivery for the key's state, stepped as `down`
    /// after `down`, and `up → down` is told by no result.
    #[test]
    fn review_d_a_deferred_redelivery_is_still_a_redelivery_when_it_comes_back() {
        use crate::job::Verdict::{Down, Up};
        use crate::state::{step, Delivery, Record};
        let body = br#"{"url":"http://a.example/","key":"k"}"#;
        let props = BasicProperties::default().with_message_id("m-1".into());
        let first = Received::of(&props, body, false);
        let again = Received::of(&props, body, true);
        // The copy `publish_disposition` makes for `Disposition::Defer`.
        let place = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let p = deferred(&props, &again, place);
        let back = Received::of(&p, body, false);
        // And a first delivery's copy is no redelivery.
        assert!(!Received::of(&deferred(&props, &first, place), body, false).redelivered);
        assert_eq!(back.delivery_id, first.delivery_id);
        let of = |r: &Received| (r.delivery_id.clone(), r.redelivered);
        let mut r = Record::default();
        let new = |id| Delivery {
            id,
            redelivered: false,
        };
        step(&mut r, new("j1"), Up, None, 1000);
        let (id, redelivered) = of(&first);
        let told = step(
            &mut r,
            Delivery {
                id: &id,
                redelivered,
            },
            Down,
            None,
            2000,
        );
        assert!(
            told.changed(Down),
            "up → down, never published: the worker died"
        );
        step(&mut r, new("j3"), Down, None, 3000); // so the redelivery is not replayed
                                                   // The redelivery (`again`) is deferred: no step. Its copy comes back:
        let (id, redelivered) = of(&back);
        let a = step(
            &mut r,
            Delivery {
                id: &id,
                redelivered,
            },
            Down,
            None,
            5000,
        );
        assert!(
            back.redelivered && a.changed(Down),
            "the deferred copy of a redelivery came back as a new delivery \
             (redelivered = {}) and up → down was swallowed: {a:?}",
            back.redelivered
        );
    }
}
