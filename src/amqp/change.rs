//! A change the broker refused after its result was confirmed: an alerting subscriber's
//! queue on the changes exchange is full (`x-overflow = reject-publish`). Handing the
//! whole job back would ask the site again and publish its result again, every couple of
//! seconds for as long as the queue stays full (hunt W: 50 results in 20 s for 5 jobs).
//! Only the change is retried: the result message goes to a delay queue marked as a
//! pending change (`x-picket-change`, its routing key), comes back through the jobs queue,
//! and is published to the changes exchange alone, without a probe. The job is acked once
//! that copy is confirmed, so the change is never lost between the two.

use lapin::types::AMQPValue;
use lapin::BasicProperties;

use super::delivery::{dead_letter, header_int, header_text, requeue, Session};
use super::publish::persistent_json;
use super::topology::{delay_queue_name, DELAY_BUCKETS};
use super::{publish_confirmed, AmqpError, Route};
use crate::job::Verdict;
use crate::metric;

/// Header of a pending change's copy: the change's routing key (`PREVIOUS.VERDICT`).
pub const CHANGE_HEADER: &str = "x-picket-change";
/// Header of a pending change's copy: how often the change was refused so far.
const TRIES_HEADER: &str = "x-picket-change-tries";

/// A change to publish: its routing key and the result message it carries.
pub(super) struct Change<'a> {
    /// `PREVIOUS.VERDICT`, e.g. `up.down`.
    pub(super) route: &'a str,
    /// The result's JSON.
    pub(super) payload: &'a [u8],
    /// The result's properties (persistent JSON, its job id as `message_id`).
    pub(super) props: &'a BasicProperties,
    /// How often it was refused before.
    pub(super) tries: i64,
}

/// Publishes the change to the changes exchange; when the broker refuses it (a full
/// queue), hands it back as a pending change instead. Ok when either was confirmed.
///
/// # Errors
/// Neither the change nor its copy was confirmed: the caller hands the job back.
pub(super) async fn tell(s: &Session, change: &Change<'_>) -> Result<(), AmqpError> {
    let changes = (s.settings.changes_exchange.as_str(), change.route);
    let props = change.props.clone();
    match publish_confirmed(&s.publish, changes, Route::Optional, change.payload, props).await {
        Ok(()) => {
            metric::change_published();
            Ok(())
        }
        Err(e @ AmqpError::Nacked { .. }) => {
            metric::publish_failed();
            let wait = wait_before(change.tries);
            tracing::warn!(error = %e, retry_in_s = wait, "change not confirmed; it alone is tried again");
            hand_back(s, change, wait).await
        }
        Err(e) => Err(e),
    }
}

/// How long a refused change waits before its next try (a delay queue's bucket): a
/// second for its first three tries, then 5 s, then 30 s, so that a queue full for
/// hours is not asked every second, and a change is late by at most 30 s once the queue
/// has room.
fn wait_before(tries: i64) -> u64 {
    match tries {
        ..=2 => DELAY_BUCKETS[0],
        3..=5 => DELAY_BUCKETS[1],
        _ => DELAY_BUCKETS[2],
    }
}

/// Publishes the change's copy to the delay queue of `wait` seconds.
async fn hand_back(s: &Session, change: &Change<'_>, wait: u64) -> Result<(), AmqpError> {
    let mut headers = change.props.headers().clone().unwrap_or_default();
    let route = AMQPValue::LongString(change.route.into());
    headers.insert(CHANGE_HEADER.into(), route);
    let tries = AMQPValue::LongLongInt(change.tries.saturating_add(1));
    headers.insert(TRIES_HEADER.into(), tries);
    let props = change.props.clone().with_headers(headers);
    let queue = delay_queue_name(&s.settings, wait);
    let to = ("", queue.as_str());
    publish_confirmed(&s.publish, to, Route::Mandatory, change.payload, props).await
}

/// The routing key of a delivery that is a pending change, not a job.
pub(super) fn pending(props: &BasicProperties) -> Option<String> {
    header_text(props, CHANGE_HEADER)
}

/// Tells a pending change (`route`) that came back through the jobs queue, then acks it;
/// one that is no change picket handed back is dead-lettered. False when the session
/// should be rebuilt.
pub(super) async fn retry(s: &Session, delivery: &lapin::message::Delivery, route: &str) -> bool {
    let outcome = match check(route, &delivery.data) {
        Ok(()) => {
            let props = result_props(&delivery.properties);
            let tries = header_int(&delivery.properties, TRIES_HEADER).unwrap_or(0);
            let change = Change {
                route,
                payload: &delivery.data,
                props: &props,
                tries,
            };
            tell(s, &change).await
        }
        Err(why) => dead_letter(s, delivery, &why).await,
    };
    if outcome.is_err() {
        requeue(delivery, &s.acks).await;
        return false;
    }
    s.acks.ack(delivery.delivery_tag);
    true
}

/// The properties a change is published with: the result's, without the copy's headers.
fn result_props(props: &BasicProperties) -> BasicProperties {
    let p = persistent_json();
    match props.message_id() {
        Some(id) => p.with_message_id(id.clone()),
        None => p,
    }
}

/// Whether `payload` is a result whose change `route` names: a message marked as a
/// pending change by anyone who may publish jobs is never announced unless it is one.
fn check(route: &str, payload: &[u8]) -> Result<(), String> {
    let no = |what: &str| Err(format!("a pending change ({CHANGE_HEADER}) that {what}"));
    let Some((previous, verdict)) = route.split_once('.') else {
        return no("names no PREVIOUS.VERDICT");
    };
    let (Some(previous), Some(verdict)) = (Verdict::parse(previous), Verdict::parse(verdict))
    else {
        return no("names no two verdicts");
    };
    let Ok(result) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return no("carries no JSON result");
    };
    let says =
        |field: &str, v: Verdict| result.get(field).and_then(|f| f.as_str()) == Some(v.as_str());
    let changed = result.get("changed").and_then(serde_json::Value::as_bool) == Some(true);
    if !(changed && says("previous_verdict", previous) && says("verdict", verdict)) {
        return no("carries a result that is not that change");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_change_waits_longer_the_longer_it_is_refused() {
        let waits: Vec<u64> = (0..8).map(wait_before).collect();
        assert_eq!(waits, [1, 1, 1, 5, 5, 5, 30, 30]);
        assert_eq!(wait_before(i64::MAX), 30);
    }

    #[test]
    fn only_a_result_that_is_the_named_change_is_told() {
        let change = br#"{"verdict":"down","previous_verdict":"up","changed":true}"#;
        assert_eq!(check("up.down", change), Ok(()));
        let refused = [
            ("down.up", &change[..]),
            ("up", &change[..]),
            ("up.gone", &change[..]),
            (
                "up.down",
                br#"{"verdict":"down","previous_verdict":"up","changed":false}"#,
            ),
            ("up.down", b"not json"),
        ];
        for (route, payload) in refused {
            assert!(check(route, payload).is_err(), "{route} {payload:?}");
        }
    }
}
