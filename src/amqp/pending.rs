//! Telling a job's outcome: its result, its reply, its change, in that order; and what
//! the broker refused of it, retried alone. A queue that rejects publishes when full
//! (`x-overflow = reject-publish`: the results queue under a length policy, an alerting
//! subscriber's queue on the changes exchange) refuses a message that is no fault of the
//! job's. Handing the whole job back would ask the site again and publish its result
//! again every couple of seconds for as long as the queue stays full (hunt W: 50 results
//! in 20 s for 5 jobs, and for ever for a result bigger than a `max-length-bytes`).
//! Instead the refused message goes to a delay queue as a pending copy (`x-picket-pending`
//! says whether its result or only its change is still to be told), the job is acked
//! once that copy is confirmed, so nothing is lost between the two, and the copy comes
//! back through the jobs queue to be told without a probe. A copy refused for a day
//! goes to the dead-letter queue instead ([`GIVE_UP_AFTER_S`]).

use lapin::types::{AMQPValue, ShortString};
use lapin::BasicProperties;

use super::delivery::{
    dead_letter, dead_letter_message, header_int, header_text, requeue, Session,
};
use super::publish::persistent_json;
use super::topology::{delay_queue_name, DELAY_BUCKETS};
use super::{publish_confirmed, AmqpError, Route};
use crate::job::{Reason, Report, Verdict};
use crate::metric;

/// Header of a pending copy: what of it is still to be told, [`Stage`].
pub const PENDING_HEADER: &str = "x-picket-pending";
/// Header of a pending copy: how often it was refused so far.
const TRIES_HEADER: &str = "x-picket-pending-tries";
/// How long a refused message is tried again before it is dead-lettered, in seconds. A
/// queue full for a day is one nobody reads any more (a subscriber gone, its queue left
/// full); tried for ever, every result and change it refuses would be asked about every
/// 30 s for as long, each new one joining them.
const GIVE_UP_AFTER_S: u64 = 24 * 3600;

/// What of an outcome is still to be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The result (then its reply and its change).
    Result,
    /// Only the change: the result was confirmed, and its reply sent.
    Change,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Result => "result",
            Stage::Change => "change",
        }
    }
}

/// A job's outcome to tell: its result message and what the result says of itself.
pub(super) struct Outcome<'a> {
    /// The result's JSON.
    payload: &'a [u8],
    /// The result's properties (persistent JSON, its job id as `message_id`).
    props: BasicProperties,
    verdict: Verdict,
    reason: Reason,
    cached: bool,
    /// The change's routing key (`PREVIOUS.VERDICT`), when the result changed its key.
    change: Option<String>,
    /// The job's `reply_to` and `correlation_id`.
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    /// How often it was refused before.
    tries: i64,
}

impl<'a> Outcome<'a> {
    /// The outcome of `report`, whose message is `(payload, props)`, for a job with
    /// `job` properties.
    pub(super) fn of(
        report: &Report,
        (payload, props): &'a (Vec<u8>, BasicProperties),
        job: &BasicProperties,
    ) -> Outcome<'a> {
        Outcome {
            payload,
            props: props.clone(),
            verdict: report.verdict,
            reason: report.reason,
            cached: report.cached,
            change: super::publish::change_route(report),
            reply_to: job.reply_to().clone(),
            correlation_id: job.correlation_id().clone(),
            tries: 0,
        }
    }
}

/// Tells `outcome` from `stage` on: the result (a refused one is handed back with all
/// that follows it), the reply, the change (a refused one is handed back alone). Ok when
/// each step was confirmed or handed back.
///
/// # Errors
/// A publish failed otherwise, or a hand-back was not confirmed: the caller hands the
/// job (or the pending copy) back whole.
pub(super) async fn tell(
    s: &Session,
    outcome: &Outcome<'_>,
    stage: Stage,
) -> Result<(), AmqpError> {
    if stage == Stage::Result {
        let results = (
            s.settings.results_exchange.as_str(),
            outcome.verdict.as_str(),
        );
        let sent = publish(s, results, Route::Mandatory, outcome).await;
        if !confirmed(s, outcome, Stage::Result, sent).await? {
            return Ok(());
        }
        // Counted once confirmed: a result the broker refused went to no subscriber.
        metric::result(outcome.verdict, outcome.reason, outcome.cached);
        reply(s, outcome).await;
    }
    let Some(route) = outcome.change.as_deref() else {
        return Ok(());
    };
    let changes = (s.settings.changes_exchange.as_str(), route);
    let sent = publish(s, changes, Route::Optional, outcome).await;
    if confirmed(s, outcome, Stage::Change, sent).await? {
        metric::change_published();
    }
    Ok(())
}

async fn publish(
    s: &Session,
    to: (&str, &str),
    route: Route,
    outcome: &Outcome<'_>,
) -> Result<(), AmqpError> {
    let props = outcome.props.clone();
    publish_confirmed(&s.publish, to, route, outcome.payload, props).await
}

/// Whether a publish of `stage` was confirmed; a refused one (a nack: a full queue) is
/// handed back as a pending copy.
async fn confirmed(
    s: &Session,
    outcome: &Outcome<'_>,
    stage: Stage,
    sent: Result<(), AmqpError>,
) -> Result<bool, AmqpError> {
    match sent {
        Ok(()) => Ok(true),
        Err(e @ AmqpError::Nacked { .. }) => {
            metric::publish_failed();
            if waited(outcome.tries) >= GIVE_UP_AFTER_S {
                give_up(s, outcome, stage).await?;
                return Ok(false);
            }
            let wait = wait_before(outcome.tries);
            let stage_name = stage.as_str();
            tracing::warn!(error = %e, stage = stage_name, retry_in_s = wait, "{stage_name} not confirmed; it alone is tried again");
            hand_back(s, outcome, stage, wait).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Sends the reply, if the job asked for one, once its result was confirmed.
async fn reply(s: &Session, outcome: &Outcome<'_>) {
    let Some(reply_to) = &outcome.reply_to else {
        return;
    };
    let mut p = outcome.props.clone();
    if let Some(c) = &outcome.correlation_id {
        p = p.with_correlation_id(c.clone());
    }
    s.replies.send(reply_to, outcome.payload, p).await;
}

/// How long a refused message waits before its next try (a delay queue's bucket): a
/// second for its first three tries, then 5 s, then 30 s, so that a queue full for
/// hours is not asked every second, and a message is late by at most 30 s once the
/// queue has room.
fn wait_before(tries: i64) -> u64 {
    match tries {
        ..=2 => DELAY_BUCKETS[0],
        3..=5 => DELAY_BUCKETS[1],
        _ => DELAY_BUCKETS[2],
    }
}

/// The seconds a message refused `tries` times has waited at the least ([`wait_before`]).
fn waited(tries: i64) -> u64 {
    let tries = u64::try_from(tries).unwrap_or(0);
    let (first, then) = (tries.min(3), tries.saturating_sub(3).min(3));
    let rest = tries.saturating_sub(6);
    (first * DELAY_BUCKETS[0] + then * DELAY_BUCKETS[1])
        .saturating_add(rest.saturating_mul(DELAY_BUCKETS[2]))
}

/// Dead-letters the outcome's pending copy from `stage`, refused for a day, with why;
/// its tries are set back to none, so a replay once the queue has room tries it afresh.
async fn give_up(s: &Session, outcome: &Outcome<'_>, stage: Stage) -> Result<(), AmqpError> {
    let exchange = match stage {
        Stage::Result => &s.settings.results_exchange,
        Stage::Change => &s.settings.changes_exchange,
    };
    let why = format!(
        "the {} was refused {} times over {} hours by a full queue (reject-publish) bound to \
         {exchange}: no longer tried; replay it once that queue has room",
        stage.as_str(),
        outcome.tries.saturating_add(1),
        waited(outcome.tries) / 3600
    );
    tracing::warn!(stage = stage.as_str(), reason = %why, "pending copy dead-lettered");
    let props = pending_copy(outcome, stage, 0);
    dead_letter_message(s, (&props, outcome.payload), &why).await
}

/// Publishes the outcome's pending copy from `stage` on to the delay queue of `wait`
/// seconds.
async fn hand_back(
    s: &Session,
    outcome: &Outcome<'_>,
    stage: Stage,
    wait: u64,
) -> Result<(), AmqpError> {
    let props = pending_copy(outcome, stage, outcome.tries.saturating_add(1));
    let queue = delay_queue_name(&s.settings, wait);
    let to = ("", queue.as_str());
    publish_confirmed(&s.publish, to, Route::Mandatory, outcome.payload, props).await
}

/// The properties of the outcome's pending copy from `stage`, refused `tries` times. A
/// copy of the result keeps the job's reply address; one of a change has none (its
/// reply went with its result).
fn pending_copy(outcome: &Outcome<'_>, stage: Stage, tries: i64) -> BasicProperties {
    let mut headers = outcome.props.headers().clone().unwrap_or_default();
    headers.insert(
        PENDING_HEADER.into(),
        AMQPValue::LongString(stage.as_str().into()),
    );
    headers.insert(TRIES_HEADER.into(), AMQPValue::LongLongInt(tries));
    let mut props = outcome.props.clone().with_headers(headers);
    if stage == Stage::Result {
        if let Some(r) = &outcome.reply_to {
            props = props.with_reply_to(r.clone());
        }
        if let Some(c) = &outcome.correlation_id {
            props = props.with_correlation_id(c.clone());
        }
    }
    props
}

/// The stage of a delivery that is a pending copy, not a job (`Err`: a stage picket
/// never writes).
pub(super) fn stage(props: &BasicProperties) -> Option<Result<Stage, String>> {
    let value = header_text(props, PENDING_HEADER)?;
    Some(match value.as_str() {
        "result" => Ok(Stage::Result),
        "change" => Ok(Stage::Change),
        _ => Err(format!(
            "{PENDING_HEADER} is {value:?}, no stage picket writes"
        )),
    })
}

/// Tells a pending copy that came back through the jobs queue, then acks it; one that is
/// no outcome picket handed back is dead-lettered. False when the session should be
/// rebuilt.
pub(super) async fn retry(
    s: &Session,
    delivery: &lapin::message::Delivery,
    stage: Result<Stage, String>,
) -> bool {
    let props = &delivery.properties;
    let read = stage.and_then(|stage| Ok((stage, read(&delivery.data, stage)?)));
    let told = match read {
        Ok((stage, said)) => {
            let outcome = Outcome {
                payload: &delivery.data,
                props: result_props(props),
                verdict: said.verdict,
                reason: said.reason,
                cached: said.cached,
                change: said.change,
                reply_to: props.reply_to().clone(),
                correlation_id: props.correlation_id().clone(),
                tries: header_int(props, TRIES_HEADER).unwrap_or(0),
            };
            tell(s, &outcome, stage).await
        }
        Err(why) => dead_letter(s, delivery, &why).await,
    };
    if told.is_err() {
        requeue(delivery, &s.acks).await;
        return false;
    }
    s.acks.ack(delivery.delivery_tag);
    true
}

/// The properties a pending copy's result is published with: the result's, without the
/// copy's headers and reply address.
fn result_props(props: &BasicProperties) -> BasicProperties {
    let p = persistent_json();
    match props.message_id() {
        Some(id) => p.with_message_id(id.clone()),
        None => p,
    }
}

/// What a pending copy's result says of itself.
#[derive(Debug, PartialEq)]
struct Said {
    verdict: Verdict,
    reason: Reason,
    cached: bool,
    change: Option<String>,
}

/// What the result in `payload` says, when it is one: a message marked pending by anyone
/// who may publish jobs is never told unless it is a result, and a pending change only
/// when its result changed its key.
fn read(payload: &[u8], stage: Stage) -> Result<Said, String> {
    let no = |what: &str| format!("a pending {} ({PENDING_HEADER}) {what}", stage.as_str());
    let result: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| no("carries no JSON result"))?;
    let text = |field: &str| result.get(field).and_then(serde_json::Value::as_str);
    let verdict = text("verdict").and_then(Verdict::parse);
    let reason = text("reason").and_then(Reason::parse);
    let (Some(verdict), Some(reason)) = (verdict, reason) else {
        return Err(no("carries no result's verdict and reason"));
    };
    let flag = |field: &str| result.get(field).and_then(serde_json::Value::as_bool);
    let previous = text("previous_verdict").and_then(Verdict::parse);
    let change = match (flag("changed"), previous) {
        (Some(true), Some(previous)) => Some(format!("{}.{}", previous.as_str(), verdict.as_str())),
        _ => None,
    };
    if stage == Stage::Change && change.is_none() {
        return Err(no("carries a result that changed nothing"));
    }
    Ok(Said {
        verdict,
        reason,
        cached: flag("cached") == Some(true),
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_message_waits_longer_the_longer_it_is_refused() {
        let waits: Vec<u64> = (0..8).map(wait_before).collect();
        assert_eq!(waits, [1, 1, 1, 5, 5, 5, 30, 30]);
        assert_eq!(wait_before(i64::MAX), 30);
        let summed = |tries: i64| (0..tries).map(wait_before).sum::<u64>();
        for tries in [0, 1, 3, 4, 6, 7, 100, 2886] {
            assert_eq!(waited(tries), summed(tries), "{tries}");
        }
        assert_eq!((waited(-1), waited(i64::MAX)), (0, u64::MAX));
        // A day of refusals is about 2886 of them.
        assert!(waited(2885) < GIVE_UP_AFTER_S && waited(2886) >= GIVE_UP_AFTER_S);
    }

    #[test]
    fn a_pending_copy_is_told_only_when_it_is_a_result_of_its_stage() {
        let change =
            br#"{"verdict":"down","reason":"http_status","previous_verdict":"up","changed":true}"#;
        let said = read(change, Stage::Change).expect("a change");
        assert_eq!(said.change.as_deref(), Some("up.down"));
        assert_eq!(
            (said.verdict, said.reason, said.cached),
            (Verdict::Down, Reason::HttpStatus, false)
        );
        let same = br#"{"verdict":"up","reason":"ok","previous_verdict":"up","changed":false}"#;
        assert_eq!(read(same, Stage::Result).expect("a result").change, None);
        let refused: [(&[u8], Stage); 4] = [
            (same, Stage::Change),
            (br#"{"verdict":"gone","reason":"ok"}"#, Stage::Result),
            (br#"{"verdict":"up"}"#, Stage::Result),
            (b"not json", Stage::Result),
        ];
        for (payload, stage) in refused {
            assert!(read(payload, stage).is_err(), "{stage:?} {payload:?}");
        }
    }
}
