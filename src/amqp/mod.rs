//! The RabbitMQ adapter, a file per role: [`topology`] (what is declared and why),
//! [`publish`] (confirmed, mandatory publishing), [`consumer`] (the worker's sessions),
//! `delivery` (one delivery, from the message to its ack), `pending` (a job's result,
//! reply and change, and what a full queue refused of them, retried alone), `ack` (acks
//! in batches),
//! `reply` (replies to `reply_to`),
//! `nodes` (the cluster's nodes and failover), and [`commands`] (the broker side of
//! `enqueue` and `results`).
//!
//! The rule that keeps jobs safe: a delivery is acked only after its result (and its
//! change) were confirmed by the broker; if that fails, it is handed back. Its reply
//! (`reply`) is sent, confirmed, over a connection of its own, and is the requester's:
//! a reply lost does not hand the job back.
//! Dead-lettering publishes a copy with the reason header, confirmed, then acks.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lapin::Connection;

use crate::config::AmqpSettings;

mod ack;
pub(crate) mod commands;
pub(crate) mod consumer;
mod delivery;
mod frame;
mod nodes;
mod pending;
pub(crate) mod publish;
mod refusals;
mod reply;
pub(crate) mod topology;

pub use consumer::{run_worker, ConsumerOptions};
pub use delivery::{DEFERRALS_HEADER, MAX_DEFERRALS, REASON_HEADER, RETRY_OF_HEADER};
pub use nodes::{connect_url, connection_name, Node, Nodes};
pub use publish::{publish_confirmed, short, Publisher, Route};
pub use topology::{declare, delay_bucket, delay_queue_name, DELAY_BUCKETS, DELIVERY_LIMIT};

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// Connecting failed or timed out.
    #[error("cannot connect to RabbitMQ at {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        message: String,
    },
    /// A protocol operation failed.
    #[error("RabbitMQ: {0}")]
    Protocol(#[from] lapin::Error),
    /// The broker refused a publish.
    #[error(
        "RabbitMQ refused (nack) the message to exchange {exchange:?}, routing key \
         {routing_key:?}: a queue it goes to is full and rejects publishes \
         (x-overflow reject-publish), or the broker could not store it"
    )]
    Nacked {
        /// Where it was published (`""`: the default exchange).
        exchange: String,
        /// With which routing key.
        routing_key: String,
    },
    /// A mandatory publish reached no queue (a queue or binding is missing).
    #[error("RabbitMQ returned the message: no queue is bound for exchange {exchange:?}, routing key {routing_key:?}")]
    Unroutable {
        /// Where it was published.
        exchange: String,
        /// With which routing key.
        routing_key: String,
    },
    /// The broker's topology cannot be used without losing work.
    #[error("{0}")]
    Topology(String),
}

/// What to do about an `amqps://` connection that ended in its TLS
/// ([`AmqpError::ended_in_tls`]).
pub const TLS_HINT: &str = "the broker's TLS ended the connection. If the message names \
the broker's certificate, trust the CA that signed it with amqp.ca_file; if the broker asks \
clients for a certificate (mutual TLS), it ends the connection so when none is shown: give \
picket's with amqp.client_cert_file and amqp.client_key_file.";

/// Said beside a connection the broker refused for a user's or a virtual host's
/// connection limit, which its words count without saying that each worker opens two.
pub const CONNECTION_LIMIT_HINT: &str = "each worker opens two connections to the broker, \
one for jobs and one for replies to jobs that name a reply_to queue: allow the user at \
least twice as many as there are workers (and picket enqueue and picket results one each), \
e.g. rabbitmqctl set_user_limits USER '{\"max-connections\": N}', or the virtual host's \
max-connections with rabbitmqctl set_vhost_limits";

impl AmqpError {
    /// Whether the broker refused the connection for a connection limit (the user's,
    /// or the virtual host's).
    pub fn hit_a_connection_limit(&self) -> bool {
        matches!(self, AmqpError::Connect { message, .. } if message.contains("connection limit"))
    }

    /// Whether an `amqps://` connection failed in its TLS
    /// ([`crate::config::parse::ended_in_tls`]).
    pub fn ended_in_tls(&self) -> bool {
        let AmqpError::Connect { url, message } = self else {
            return false;
        };
        url.starts_with("amqps://") && crate::config::parse::ended_in_tls(message)
    }
}

/// Connects to the first broker node that answers (`amqp.urls` in this process's
/// order, or `amqp.url`), each within `connect_timeout`.
///
/// # Errors
/// [`AmqpError::Connect`]: no node answered.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, AmqpError> {
    let (conn, _) = Nodes::new(settings).connect(settings, name).await?;
    Ok(conn)
}

/// State the operations endpoint reads.
#[derive(Default)]
pub struct BrokerState {
    /// Connected and topology declared.
    pub connected: AtomicBool,
    /// Consuming jobs right now.
    pub consuming: AtomicBool,
    /// The node of the current (or last) session, password redacted.
    pub node: std::sync::Mutex<Option<String>>,
    /// The broker blocks this connection's publishing (`connection.blocked`: a memory or
    /// disk alarm): results wait for their confirms until it lifts.
    pub blocked: AtomicBool,
}

impl BrokerState {
    /// The node of the current (or last) session.
    pub(crate) fn node(&self) -> Option<String> {
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_node(&self, label: String) {
        *self
            .node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(label);
    }
}

/// How long closing a connection or channel, or cancelling a consumer, waits for the
/// broker's answer. A broker in a memory or disk alarm reads nothing from a connection
/// that published, not even its close: unbounded, a worker told to stop would never end.
/// The broker drops the connection (and hands back its unacked jobs) once we are gone.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes `conn`, waiting at most [`CLOSE_WAIT`] for the broker.
pub(crate) async fn close_connection(conn: &Connection, why: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, why.into())).await;
}

/// Capped, jittered exponential backoff: 0.5 s, 1 s, 2 s ... up to 30 s, each ±20 %.
pub(crate) fn backoff() -> impl Iterator<Item = Duration> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            u64::from(d.subsec_nanos()) ^ u64::from(std::process::id())
        });
    backoff_seeded(seed)
}

/// [`backoff`] with a given jitter seed (for tests).
pub(crate) fn backoff_seeded(seed: u64) -> impl Iterator<Item = Duration> {
    let mut seed = seed | 1;
    (0u32..).map(move |n| {
        // xorshift: enough randomness to keep workers from reconnecting in lockstep
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let base = 500u64.saturating_mul(1u64 << n.min(6)).min(30_000);
        let jitter = (seed % 400) as i64 - 200; // per mille
        Duration::from_millis((base as i64 + base as i64 * jitter / 1000) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for seed in [1, 2, 12345, u64::MAX] {
            let d: Vec<Duration> = backoff_seeded(seed).take(12).collect();
            assert!(d[0] >= Duration::from_millis(400) && d[0] <= Duration::from_millis(600));
            assert!(d[3] > d[1], "{d:?}");
            for x in &d[8..] {
                assert!(*x <= Duration::from_millis(36_000) && *x >= Duration::from_millis(24_000));
            }
        }
        let a: Vec<Duration> = backoff_seeded(1).take(12).collect();
        let b: Vec<Duration> = backoff_seeded(2).take(12).collect();
        assert_ne!(a, b, "jitter keeps workers from reconnecting in lockstep");
        assert_eq!(a, backoff_seeded(1).take(12).collect::<Vec<_>>());
    }
}
