//! `[amqp]`: the broker's nodes, the names of the queues and exchanges picket declares,
//! and how much the broker may push ahead.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{self, each_url, nonempty, positive_duration, url_with_scheme, ClientIdentity};
use super::{invalid, ConfigError};

/// Schemes a broker URL may have.
const SCHEMES: &[&str] = &["amqp", "amqps"];

/// `[amqp]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmqp {
    url: String,
    #[serde(deserialize_with = "super::parse::entries")]
    urls: Vec<String>,
    jobs_queue: String,
    results_exchange: String,
    results_queue: String,
    changes_exchange: String,
    dead_letter_queue: String,
    delay_queue: String,
    #[serde(deserialize_with = "super::parse::whole")]
    prefetch: u32,
    queue_type: String,
    #[serde(deserialize_with = "super::parse::whole")]
    max_message_bytes: u64,
    connect_timeout: String,
    heartbeat: String,
    ca_file: String,
    client_cert_file: String,
    client_key_file: String,
}

/// Durable or replicated queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// A classic durable queue.
    Classic,
    /// A replicated quorum queue, the durable choice for clusters.
    Quorum,
}

/// `[amqp]`
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Broker URL (may hold credentials: never log it as is, see [`super::redact_url`]).
    pub url: String,
    /// The nodes of a cluster (`amqp.urls`); empty = `url` alone. See [`Self::nodes`].
    pub urls: Vec<String>,
    /// Where jobs arrive.
    pub jobs_queue: String,
    /// Topic exchange results are published to, routing key = verdict.
    pub results_exchange: String,
    /// Queue bound to the results exchange with `#`.
    pub results_queue: String,
    /// Topic exchange that gets the results that change their key's verdict, routing
    /// key `PREVIOUS.VERDICT`.
    pub changes_exchange: String,
    /// Where messages that are not jobs go, with the reason in a header.
    pub dead_letter_queue: String,
    /// Where deferred jobs wait (per-message TTL) before returning to the jobs queue.
    pub delay_queue: String,
    /// Unacknowledged deliveries the broker may push ahead.
    pub prefetch: u16,
    /// Queue type of the jobs and dead-letter queues.
    pub queue_type: QueueType,
    /// A job message larger than this is dead-lettered unread.
    pub max_message_bytes: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The AMQP heartbeat asked of the broker (whole seconds; zero: the broker's own),
    /// unless a node's URL names one (`?heartbeat=N`). A connection that carries
    /// nothing for twice this long is taken for dead and another node is tried.
    pub heartbeat: Duration,
    /// The CA that signed an `amqps://` broker's certificate, trusted beside the
    /// system's (`amqp.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// The certificate and key shown to a broker that asks for one
    /// (`amqp.client_cert_file`, `amqp.client_key_file`).
    pub client_identity: Option<ClientIdentity>,
}

impl AmqpSettings {
    /// The broker nodes to connect to, at least one: `amqp.urls` when given, else `url`.
    pub(crate) fn nodes(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }
}

impl TryFrom<RawAmqp> for AmqpSettings {
    type Error = ConfigError;

    fn try_from(a: RawAmqp) -> Result<Self, ConfigError> {
        url_with_scheme("amqp.url", &a.url, SCHEMES)?;
        // The protocol's prefetch count is 16 bits; 0 would mean "no limit".
        let prefetch = u16::try_from(a.prefetch)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid("amqp.prefetch", "must be between 1 and 65535"))?;
        let queue_type = match a.queue_type.as_str() {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            other => {
                return Err(invalid(
                    "amqp.queue_type",
                    format!("{other:?} is not \"classic\" or \"quorum\""),
                ))
            }
        };
        if a.max_message_bytes < 1024 {
            return Err(invalid("amqp.max_message_bytes", "must be at least 1024"));
        }
        each_url("amqp.urls", &a.urls, SCHEMES)?;
        let nodes: Vec<&str> = if a.urls.is_empty() {
            vec![a.url.as_str()]
        } else {
            a.urls.iter().map(String::as_str).collect()
        };
        let ca_file = parse::tls_file("amqp.ca_file", &a.ca_file, &nodes, "amqps")?;
        if let Some(path) = &ca_file {
            parse::pem_certificates("amqp.ca_file", path)?;
        }
        let (cert, key) = (&a.client_cert_file, &a.client_key_file);
        let client_identity = parse::client_identity("amqp", cert, key, &nodes, "amqps")?;
        Ok(AmqpSettings {
            ca_file,
            client_identity,
            url: a.url,
            urls: a.urls,
            jobs_queue: nonempty("amqp.jobs_queue", &a.jobs_queue)?,
            results_exchange: nonempty("amqp.results_exchange", &a.results_exchange)?,
            results_queue: nonempty("amqp.results_queue", &a.results_queue)?,
            changes_exchange: nonempty("amqp.changes_exchange", &a.changes_exchange)?,
            dead_letter_queue: nonempty("amqp.dead_letter_queue", &a.dead_letter_queue)?,
            delay_queue: nonempty("amqp.delay_queue", &a.delay_queue)?,
            prefetch,
            queue_type,
            // A u64 that does not fit this machine's usize is no limit it could reach.
            max_message_bytes: usize::try_from(a.max_message_bytes).unwrap_or(usize::MAX),
            connect_timeout: positive_duration("amqp.connect_timeout", &a.connect_timeout)?,
            heartbeat: heartbeat(&a.heartbeat)?,
        })
    }
}

/// `amqp.heartbeat`: whole seconds that fit the protocol's 16 bits.
fn heartbeat(value: &str) -> Result<Duration, ConfigError> {
    let d = parse::parse_duration("amqp.heartbeat", value)?;
    if d.subsec_nanos() != 0 || d.as_secs() > u64::from(u16::MAX) {
        return Err(invalid(
            "amqp.heartbeat",
            "must be whole seconds, at most 65535 (\"0s\": the broker's own)",
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};

    #[test]
    fn amqp_urls_replace_the_url_and_are_validated() {
        let single = Settings::from_toml("").expect("defaults");
        assert_eq!(single.amqp.nodes(), vec![single.amqp.url.clone()]);
        let listed = Settings::from_toml(
            "[amqp]\nurls = [\"amqp://u:p@a:5672/%2f\", \"amqps://b:5671/v\"]\n",
        )
        .expect("urls");
        assert_eq!(
            listed.amqp.nodes(),
            ["amqp://u:p@a:5672/%2f", "amqps://b:5671/v"]
        );
        let e = err("[amqp]\nurls = [\"amqp://a:5672\", \"http://b\"]\n");
        assert!(e.contains("amqp.urls[1]"), "{e}");
        let env = vec![(
            "PICKET__AMQP__URLS".to_string(),
            "amqp://a:5672/%2f,amqp://b:5672/%2f".to_string(),
        )];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert_eq!(s.amqp.nodes(), ["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
    }

    /// Hunt N: an env file with Windows line ends left `\r` on every name. RabbitMQ
    /// drops it from the queue it declares but keeps it in the queue's dead-letter
    /// arguments and in the consume, which then fails for ever, and the broken
    /// arguments outlived the fix. A name with a control character is refused.
    #[test]
    fn a_name_with_a_control_character_is_refused() {
        let env = vec![(
            "PICKET__AMQP__JOBS_QUEUE".to_string(),
            "picket.jobs\r".to_string(),
        )];
        let e = Settings::load_with_env(None, env).expect_err("refused");
        assert!(e.to_string().contains("amqp.jobs_queue"), "{e}");
        assert!(err("[amqp]\ndelay_queue = \"d\\u0007\"\n").contains("amqp.delay_queue"));
        let e = err("[worker]\nname = \"w-crlf\\r\"\n");
        assert!(e.contains("worker.name"), "{e}");
    }

    #[test]
    fn the_heartbeat_is_whole_seconds_of_sixteen_bits() {
        let s = Settings::from_toml("").expect("defaults");
        assert_eq!(s.amqp.heartbeat, std::time::Duration::from_secs(10));
        assert!(err("[amqp]\nheartbeat = \"1500ms\"\n").contains("amqp.heartbeat"));
        assert!(err("[amqp]\nheartbeat = \"70000s\"\n").contains("amqp.heartbeat"));
        let off = Settings::from_toml("[amqp]\nheartbeat = \"0s\"\n").expect("0s");
        assert!(off.amqp.heartbeat.is_zero());
    }

    #[test]
    fn prefetch_queue_type_and_message_size_name_their_keys() {
        assert!(err("[amqp]\nprefetch = 0\n").contains("amqp.prefetch"));
        assert!(err("[amqp]\nprefetch = 65536\n").contains("amqp.prefetch"));
        let max = Settings::from_toml("[amqp]\nprefetch = 65535\n").expect("u16::MAX");
        assert_eq!(max.amqp.prefetch, u16::MAX);
        assert!(err("[amqp]\nqueue_type = \"stream\"\n").contains("amqp.queue_type"));
        assert!(err("[amqp]\nmax_message_bytes = 10\n").contains("amqp.max_message_bytes"));
        assert!(err("[amqp]\ndelay_queue = \" \"\n").contains("amqp.delay_queue"));
    }
}
