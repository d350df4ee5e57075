//! Publishing with publisher confirms: a result, its change and its reply, each
//! confirmed before the job is acked; `mandatory` where a message routed nowhere would
//! be work lost.

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};

use super::AmqpError;
use crate::config::AmqpSettings;
use crate::job::Report;
use crate::metric;

/// Whether a message that reaches no queue is a failure ([`Route::Mandatory`]) or fine
/// ([`Route::Optional`]: e.g. changes nobody subscribed to yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Published with `mandatory`: a returned message is [`AmqpError::Unroutable`].
    Mandatory,
    /// Dropped by the broker when unroutable, as subscribers allow.
    Optional,
}

/// Publishes and waits for the broker's confirm (the channel must be in confirm mode).
///
/// # Errors
/// The publish failed, was nacked, or (mandatory) reached no queue.
pub async fn publish_confirmed(
    channel: &Channel,
    (exchange, routing_key): (&str, &str),
    route: Route,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let options = BasicPublishOptions {
        mandatory: route == Route::Mandatory,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(short(exchange), short(routing_key), options, payload, props)
        .await?
        .await?;
    if confirm.is_nack() {
        return Err(AmqpError::Nacked);
    }
    if confirm.take_message().is_some() {
        return Err(AmqpError::Unroutable {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        });
    }
    Ok(())
}

/// An AMQP short string (at most 255 bytes): the text itself when it fits, else a stable
/// hash of it, so that a long job id or worker name can never panic a publish.
pub fn short(text: &str) -> ShortString {
    ShortString::try_new(text).unwrap_or_else(|_| {
        ShortString::try_new(format!("sha256:{}", crate::key::short_hash(text))).unwrap_or_default()
    })
}

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes a result to the results exchange (routing key = verdict) and, when the job
/// asked for it, to its `reply_to` queue with its `correlation_id`.
///
/// # Errors
/// Any publish not confirmed.
pub async fn publish_report(
    channel: &Channel,
    s: &AmqpSettings,
    report: &Report,
    reply_to: Option<&ShortString>,
    correlation_id: Option<&ShortString>,
) -> Result<(), AmqpError> {
    let payload = serde_json::to_vec(report).unwrap_or_default();
    let props = persistent_json().with_message_id(short(&report.job_id));
    let results = (s.results_exchange.as_str(), report.verdict.as_str());
    publish_confirmed(channel, results, Route::Mandatory, &payload, props.clone()).await?;
    if report.changed {
        if let Some(previous) = report.previous_verdict {
            // Confirmed before the job is acked, like the result: a change is never lost
            // between the two (a redelivery repeats it, with the same job id).
            let key = format!("{}.{}", previous.as_str(), report.verdict.as_str());
            let changes = (s.changes_exchange.as_str(), key.as_str());
            publish_confirmed(channel, changes, Route::Optional, &payload, props.clone()).await?;
            metric::change_published();
        }
    }
    if let Some(reply_to) = reply_to {
        let mut p = props;
        if let Some(c) = correlation_id {
            p = p.with_correlation_id(c.clone());
        }
        // The result itself is safe on the exchange: a reply the broker refuses (a full
        // or missing reply queue) is the requester's loss, not a reason to redo the job.
        let reply = ("", reply_to.as_str());
        if let Err(e) = publish_confirmed(channel, reply, Route::Optional, &payload, p).await {
            metric::publish_failed();
            tracing::warn!(error = %e, reply_to = %reply_to, "reply not delivered; the result is on the results exchange");
            if !matches!(e, AmqpError::Nacked) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_become_short_strings_without_a_panic() {
        let long = "j".repeat(300);
        let s = short(&long);
        assert!(s.as_str().len() <= 255 && s.as_str().starts_with("sha256:"));
        assert_eq!(s, short(&long), "the same text gives the same short string");
        assert_eq!(short("picket.jobs").as_str(), "picket.jobs");
    }
}
