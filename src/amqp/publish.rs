//! Publishing with publisher confirms: a result and its change (told by `pending`), each confirmed before
//! the job is acked (its reply goes over a connection of its own, `reply`); `mandatory` where a message routed nowhere would
//! be work lost. A [`Publisher`] lends each publish a confirm channel of its own, so
//! that the return a confirm carries is the publish's own.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::AmqpError;
use crate::job::Report;

/// Whether a message that reaches no queue is a failure ([`Route::Mandatory`]) or fine
/// ([`Route::Optional`]: e.g. changes nobody subscribed to yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Published with `mandatory`: a returned message is [`AmqpError::Unroutable`].
    Mandatory,
    /// Dropped by the broker when unroutable, as subscribers allow.
    Optional,
}

/// A session's publishing channels, each in confirm mode and lent to one publish at a
/// time.
///
/// AMQP's `basic.return` does not say which publish it returns, and lapin hands it to
/// whichever confirm completes next on the channel, while RabbitMQ acks several
/// publishes with one frame: with publishes side by side on one channel, an unroutable
/// one could come back confirmed (its job acked, its copy gone) and a routed one be
/// called unroutable. With one publish at a time on a channel, the return that precedes
/// its confirm is its own. Several channels keep publishes concurrent.
#[derive(Clone)]
pub struct Publisher {
    idle: Arc<Mutex<Vec<Channel>>>,
    free: Arc<Semaphore>,
    /// Cancelled when a publish was abandoned half-way: its channel may still get that
    /// publish's return, so it is closed, and the pool is short of one until rebuilt.
    broken: CancellationToken,
}

/// A channel lent to one publish; back to the pool once its confirm arrived.
struct Lent {
    channel: Option<Channel>,
    publisher: Publisher,
    settled: bool,
    _permit: OwnedSemaphorePermit,
}

impl Publisher {
    /// Opens `channels` confirm channels on `conn`. `broken` is cancelled when one of
    /// them can no longer be trusted (see [`Publisher`]).
    ///
    /// # Errors
    /// The broker refused a channel or confirm mode.
    pub async fn open(
        conn: &Connection,
        channels: usize,
        broken: CancellationToken,
    ) -> Result<Publisher, AmqpError> {
        let open = (0..channels.max(1)).map(|_| async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, AmqpError>(ch)
        });
        let idle = try_join_all(open).await?;
        Ok(Publisher {
            free: Arc::new(Semaphore::new(idle.len())),
            idle: Arc::new(Mutex::new(idle)),
            broken,
        })
    }

    async fn lend(&self) -> Result<Lent, AmqpError> {
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AmqpError::Topology("the publishing channels are closed".into()))?;
        // A permit is only given while a channel is idle: it is taken with the lock.
        let channel = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Ok(Lent {
            channel,
            publisher: self.clone(),
            settled: false,
            _permit: permit,
        })
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        if self.settled {
            // Back before the permit is released (fields drop after this body).
            let idle = &self.publisher.idle;
            idle.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(channel);
            return;
        }
        self.publisher.broken.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let closing = channel.close(200, "publish abandoned".into());
                let _ = tokio::time::timeout(super::CLOSE_WAIT, closing).await;
            });
        }
    }
}

/// Publishes on a channel of its own and waits for the broker's confirm.
///
/// # Errors
/// The publish failed, was nacked, or (mandatory) reached no queue.
pub async fn publish_confirmed(
    publisher: &Publisher,
    (exchange, routing_key): (&str, &str),
    route: Route,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let options = BasicPublishOptions {
        mandatory: route == Route::Mandatory,
        ..BasicPublishOptions::default()
    };
    let mut lent = publisher.lend().await?;
    let Some(channel) = lent.channel.as_ref() else {
        return Err(AmqpError::Topology("no idle publishing channel".into()));
    };
    let confirm = channel
        .basic_publish(short(exchange), short(routing_key), options, payload, props)
        .await?
        .await?;
    // The confirm arrived, and with it any return of this publish: the channel is clean.
    lent.settled = true;
    drop(lent);
    if confirm.is_nack() {
        return Err(AmqpError::Nacked {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        });
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

pub(super) fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// The message of a result: its JSON and properties.
pub(crate) fn report_message(report: &Report) -> (Vec<u8>, BasicProperties) {
    let payload = serde_json::to_vec(report).unwrap_or_default();
    (
        payload,
        persistent_json().with_message_id(short(&report.job_id)),
    )
}

/// The routing key of the report's change (`PREVIOUS.VERDICT`), when it changed its
/// key's verdict.
pub(crate) fn change_route(report: &Report) -> Option<String> {
    let previous = report.previous_verdict.filter(|_| report.changed)?;
    Some(format!("{}.{}", previous.as_str(), report.verdict.as_str()))
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
