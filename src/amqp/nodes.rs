//! The broker's nodes: which RabbitMQ node a connection goes to, and the next one to try
//! when it goes away.
//!
//! A worker given the nodes of a cluster (`amqp.urls`) shuffles them once, with a seed of
//! its own, so that many workers spread over the nodes instead of all piling onto the
//! first. Every connection attempt starts at the node after the one used last: when a
//! node dies its workers move on to the next at once, rather than waiting for that node
//! to return, and a node that refuses is skipped within the same round. Only when every
//! node failed does the caller back off. Connection names say who connected (role,
//! worker, host and PID), so an operator finds a worker in the management UI.

use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Connect, Connection, ConnectionProperties};

use super::AmqpError;
use crate::config::{redact_url, AmqpSettings, QueueType};

/// The nodes of one broker, in this process's order, and where the next attempt starts.
#[derive(Debug, Clone)]
pub struct Nodes {
    urls: Vec<String>,
    next: usize,
    current: Option<usize>,
}

/// A node a connection was made to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its URL with the password redacted, fit for logs and `/readyz`.
    pub label: String,
    /// Whether it is another node than the one the previous connection used.
    pub moved: bool,
}

impl Nodes {
    /// The nodes of `settings` (`amqp.urls`, or `amqp.url` alone) in an order of this
    /// process's own.
    pub(crate) fn new(settings: &AmqpSettings) -> Nodes {
        Nodes::shuffled(settings.nodes(), seed())
    }

    /// The nodes in the order `seed` gives (for tests).
    pub(crate) fn shuffled(mut urls: Vec<String>, seed: u64) -> Nodes {
        // Fisher-Yates over xorshift: no need for more randomness than "workers differ".
        let mut x = seed | 1;
        for i in (1..urls.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = (x % (i as u64 + 1)) as usize;
            urls.swap(i, j);
        }
        Nodes {
            urls,
            next: 0,
            current: None,
        }
    }

    /// The URLs in the order they are tried from the start.
    #[cfg(test)]
    pub(crate) fn order(&self) -> &[String] {
        &self.urls
    }

    /// Connects to the first node that answers, trying each once, starting at the node
    /// after the one used last.
    ///
    /// # Errors
    /// Every node failed: the last node's [`AmqpError::Connect`], which names how many
    /// nodes were tried.
    pub async fn connect(
        &mut self,
        settings: &AmqpSettings,
        name: &str,
    ) -> Result<(Connection, Node), AmqpError> {
        let mut last = None;
        for _ in 0..self.urls.len() {
            let i = self.next % self.urls.len();
            self.next = i + 1;
            match connect_url(settings, &self.urls[i], name).await {
                Ok(conn) => {
                    let moved = self.current.is_some_and(|c| c != i);
                    self.current = Some(i);
                    let label = redact_url(&self.urls[i]);
                    return Ok((conn, Node { label, moved }));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "broker node unavailable; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(AmqpError::Connect { url, message }) if self.urls.len() > 1 => {
                AmqpError::Connect {
                    url,
                    message: format!("{message} (and the other {} nodes)", self.urls.len() - 1),
                }
            }
            Some(e) => e,
            None => AmqpError::Connect {
                url: String::new(),
                message: "no broker node configured".to_string(),
            },
        })
    }
}

/// Connects once to `url`, within `amqp.connect_timeout`.
///
/// # Errors
/// [`AmqpError::Connect`] with the URL redacted.
pub async fn connect_url(
    settings: &AmqpSettings,
    url: &str,
    name: &str,
) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let err = |message: String| AmqpError::Connect {
        url: redact_url(url),
        message,
    };
    let connect = async {
        let uri = with_heartbeat(url, settings.heartbeat)?;
        if settings.ca_file.is_none() && settings.client_identity.is_none() {
            return Connection::connect_uri(uri, props)
                .await
                .map_err(|e| e.to_string());
        }
        let tls = broker_tls(settings)?;
        let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
        uri.connect_with_config(props, tls, runtime)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(settings.connect_timeout, connect).await {
        Err(_) => Err(err(format!(
            "timed out after {:?}",
            settings.connect_timeout
        ))),
        Ok(Err(e)) => Err(err(e)),
        Ok(Ok(c)) => Ok(c),
    }
}

/// `url` parsed, asking for `heartbeat` (whole seconds) unless the URL names one or it
/// is zero (then the broker's own applies).
fn with_heartbeat(url: &str, heartbeat: std::time::Duration) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse()?;
    if uri.query.heartbeat.is_none() && !heartbeat.is_zero() {
        // Whole seconds within 16 bits, checked when the settings were read.
        uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs()).unwrap_or(u16::MAX));
    }
    Ok(uri)
}

/// TLS settings trusting `amqp.ca_file` beside the system's roots, and showing the
/// client certificate when one is configured. Read at every connect, so renewed files
/// are used without a restart.
fn broker_tls(settings: &AmqpSettings) -> Result<lapin::tcp::OwnedTLSConfig, String> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("amqp.{key} {}: {e}", path.display()))
    };
    let cert_chain = match &settings.ca_file {
        Some(ca) => Some(String::from_utf8_lossy(&read("ca_file", ca)?).into_owned()),
        None => None,
    };
    let identity = match &settings.client_identity {
        Some(id) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: read("client_cert_file", &id.cert_file)?,
            key: read("client_key_file", &id.key_file)?,
        }),
        None => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Arguments of the results queue. With `quorum`, a quorum queue: on a cluster a
/// classic queue lives on one node, and while that node is down results routed to it
/// are lost and every worker's declaration of it fails (so none could consume). Its
/// delivery limit is never reached (`topology::UNREACHED_DELIVERY_LIMIT`). Classic
/// otherwise, declared without arguments as it always was.
pub(crate) fn results_queue_args(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if kind == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(super::topology::UNREACHED_DELIVERY_LIMIT),
        );
    }
    args
}

/// Arguments of the delay queue (deferred jobs wait there on a per-message TTL). With
/// `quorum`, a quorum queue (per-message TTL needs RabbitMQ 3.10 or newer) that
/// dead-letters at least once: the default, at most once, would drop a deferred job
/// that expires while the jobs queue has no leader. At-least-once dead-lettering
/// needs `reject-publish` overflow (the queue has no length limit, so it never acts).
pub(crate) fn delay_queue_args(kind: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(v.into());
    match kind {
        QueueType::Classic => {
            args.insert("x-queue-type".into(), text("classic"));
        }
        QueueType::Quorum => {
            args.insert("x-queue-type".into(), text("quorum"));
            args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            args.insert("x-overflow".into(), text("reject-publish"));
        }
    }
    args
}

/// The connection name shown in the management UI: what connected, and from where.
pub fn connection_name(role: &str, worker: Option<&str>) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();
    match worker {
        Some(w) => format!("picket {role} {w} (host {host}, pid {pid})"),
        None => format!("picket {role} (host {host}, pid {pid})"),
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn urls(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("amqp://127.0.0.1:{}/%2f", 1 + i))
            .collect()
    }

    #[test]
    fn every_order_holds_every_node_once_and_seeds_spread_the_first() {
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..64u64 {
            let n = Nodes::shuffled(urls(3), seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut sorted = n.order().to_vec();
            sorted.sort();
            assert_eq!(sorted, urls(3));
            firsts.insert(n.order()[0].clone());
        }
        assert_eq!(firsts.len(), 3, "some node is never tried first");
    }

    #[tokio::test]
    async fn a_dead_node_is_skipped_and_the_next_attempt_starts_after_the_last_used() {
        // Two listeners that accept and say nothing (the connect times out) would be
        // slow; a refused port fails at once, which is what a killed node looks like.
        let mut s = Settings::from_toml("[amqp]\nconnect_timeout = \"300ms\"\n").expect("s");
        s.amqp.urls = vec![
            "amqp://127.0.0.1:9/%2f".into(),
            "amqp://127.0.0.1:7/%2f".into(),
        ];
        let mut nodes = Nodes::shuffled(s.amqp.urls.clone(), 1);
        let start = std::time::Instant::now();
        let e = nodes
            .connect(&s.amqp, "t")
            .await
            .expect_err("nothing listens");
        let text = e.to_string();
        assert!(text.contains("other 1 nodes"), "{text}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // Each node was tried once; the round starts where the last one ended.
        assert_eq!(nodes.next % 2, 0);
    }

    #[test]
    fn the_heartbeat_is_asked_unless_the_url_names_one() {
        let ten = std::time::Duration::from_secs(10);
        let uri = with_heartbeat("amqp://u:p@a:5672/%2f", ten).expect("uri");
        assert_eq!(uri.query.heartbeat, Some(10));
        let own = with_heartbeat("amqp://a:5672/%2f?heartbeat=30", ten).expect("uri");
        assert_eq!(own.query.heartbeat, Some(30));
        let broker = with_heartbeat("amqp://a:5672/%2f", std::time::Duration::ZERO);
        assert_eq!(broker.expect("uri").query.heartbeat, None);
    }

    #[test]
    fn connection_names_identify_the_process() {
        let name = connection_name("worker", Some("w-1"));
        assert!(name.contains("w-1"), "{name}");
        assert!(
            name.contains(&format!("pid {}", std::process::id())),
            "{name}"
        );
        assert!(name.contains("host "), "{name}");
    }
}
