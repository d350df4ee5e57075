//! Replies to a job's `reply_to`, over a connection of their own.
//!
//! A reply is the requester's: it is sent once the result is confirmed on the results
//! exchange, and the job is acked whatever becomes of it. It must not cost the session:
//! RabbitMQ closes a whole connection (`INTERNAL_ERROR`) on a publish to a direct
//! reply-to name of a node it does not know (the requester's node left the cluster).
//! On the session's connection that cut off every job in flight and brought the job
//! back, unacked, to do the same again every half second, with a duplicate result each
//! time. So replies go over a connection opened when the first is needed, dropped when
//! it breaks, and opened again for the next.

use std::sync::Arc;

use lapin::types::ShortString;
use lapin::{BasicProperties, Connection};
use tokio_util::sync::CancellationToken;

use super::{
    close_connection, connect, connection_name, publish_confirmed, AmqpError, Publisher, Route,
};
use crate::config::AmqpSettings;
use crate::metric;

/// How a reply is routed: mandatory, so that the broker returns one to a queue that does
/// not exist and it is said (hunt U), but not to RabbitMQ's direct reply-to, which is no
/// queue and which the broker may return though it delivered it.
fn route(reply_to: &ShortString) -> Route {
    if reply_to.as_str().starts_with("amq.rabbitmq.reply-to") {
        Route::Optional
    } else {
        Route::Mandatory
    }
}

/// Channels of the reply connection: replies are sent side by side, one per channel.
const REPLY_CHANNELS: usize = 8;

/// The worker's replies, shared by its sessions.
pub(super) struct Replies {
    settings: Arc<AmqpSettings>,
    worker_name: String,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Set by [`Replies::close`]: no connection is opened after it (a job finishing
    /// late would open one that nothing closes).
    closed: std::sync::atomic::AtomicBool,
}

/// The reply connection and its confirm channels.
struct Link {
    conn: Connection,
    publish: Publisher,
    /// Cancelled when one of its channels can no longer be trusted.
    broken: CancellationToken,
}

impl Link {
    fn usable(&self) -> bool {
        self.conn.status().connected() && !self.broken.is_cancelled()
    }
}

impl Replies {
    pub(super) fn new(settings: Arc<AmqpSettings>, worker_name: &str) -> Replies {
        Replies {
            settings,
            worker_name: worker_name.to_string(),
            link: tokio::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends `payload` to `reply_to`, confirmed. A reply the broker does not take is
    /// logged and counted, never returned: the job's result is already safe.
    pub(super) async fn send(
        &self,
        reply_to: &ShortString,
        payload: &[u8],
        props: BasicProperties,
    ) {
        let sent = match self.link().await {
            Ok(link) => {
                let to = ("", reply_to.as_str());
                let r = publish_confirmed(&link.publish, to, route(reply_to), payload, props).await;
                if r.is_err() && !link.usable() {
                    self.forget(&link).await;
                }
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            metric::publish_failed();
            tracing::warn!(error = %e, reply_to = %reply_to, "reply not delivered; the result is on the results exchange");
        }
    }

    /// The reply connection, opened when there is none that works.
    async fn link(&self) -> Result<Arc<Link>, AmqpError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref().filter(|l| l.usable()) {
            return Ok(link.clone());
        }
        if let Some(old) = current.take() {
            close_connection(&old.conn, "reply connection broken").await;
        }
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AmqpError::Topology("the worker is shutting down".into()));
        }
        let name = connection_name("replies", Some(&self.worker_name));
        let conn = connect(&self.settings, &name).await?;
        let broken = CancellationToken::new();
        let publish = match Publisher::open(&conn, REPLY_CHANNELS, broken.clone()).await {
            Ok(p) => p,
            Err(e) => {
                close_connection(&conn, "reply channels refused").await;
                return Err(e);
            }
        };
        let link = Arc::new(Link {
            conn,
            publish,
            broken,
        });
        *current = Some(link.clone());
        Ok(link)
    }

    /// Drops `link` if it is still the current one: the next reply opens another.
    async fn forget(&self, link: &Arc<Link>) {
        let mut current = self.link.lock().await;
        if current.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            *current = None;
            close_connection(&link.conn, "reply connection broken").await;
        }
    }

    /// Closes the reply connection, if one is open (the worker is shutting down).
    pub(super) async fn close(&self) {
        let mut current = self.link.lock().await;
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(link) = current.take() {
            close_connection(&link.conn, "picket worker shutting down").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job finishing after the worker closed its replies opened a connection that
    /// nothing closed.
    #[tokio::test]
    async fn no_reply_connection_is_opened_once_closed() {
        let settings = crate::config::Settings::from_toml(
            "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nconnect_timeout = \"1s\"\n",
        )
        .expect("settings");
        let replies = Replies::new(Arc::new(settings.amqp), "w");
        replies.close().await;
        match replies.link().await {
            Err(AmqpError::Topology(why)) => assert!(why.contains("shutting down"), "{why}"),
            Err(e) => panic!("tried to connect: {e}"),
            Ok(_) => panic!("a connection after close"),
        }
    }
}
