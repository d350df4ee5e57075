//! `[redis]`: where the shared state lives (one Redis, a Cluster, or a primary found
//! through Sentinels), the prefix of picket's keys and how long they are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{self, each_url, nonempty, positive_duration, url_with_scheme, ClientIdentity};
use super::{invalid, ConfigError};

/// Schemes a Redis URL may have.
const SCHEMES: &[&str] = &["redis", "rediss"];

/// `[redis]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    url: String,
    cluster: bool,
    #[serde(deserialize_with = "super::parse::entries")]
    nodes: Vec<String>,
    #[serde(deserialize_with = "super::parse::entries")]
    sentinels: Vec<String>,
    sentinel_master: String,
    ca_file: String,
    client_cert_file: String,
    client_key_file: String,
    key_prefix: String,
    verdict_ttl: String,
    state_ttl: String,
    /// No longer used (see docs/DESIGN.md); still accepted so that old files load.
    #[serde(default)]
    pool_size: Option<u32>,
    timeout: String,
}

impl RawRedis {
    /// Keys this section still accepts but that do nothing any more.
    pub(super) fn ignored_keys(&self) -> Vec<String> {
        if self.pool_size.is_some() {
            vec!["redis.pool_size".to_string()]
        } else {
            Vec::new()
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Redis URL (may hold a password).
    pub url: String,
    /// Whether Redis is a Redis Cluster (picket then speaks the cluster protocol).
    pub cluster: bool,
    /// The cluster's seed nodes when `cluster`: `redis.nodes`, or `url` alone when
    /// none were given. Empty for a single Redis.
    pub nodes: Vec<String>,
    /// Redis Sentinels watching the primary (`redis.sentinels`); when not empty, the
    /// primary is asked of them and `url` gives only the database and credentials.
    pub sentinels: Vec<String>,
    /// The name the Sentinels know the primary by (`redis.sentinel_master`).
    pub sentinel_master: String,
    /// The CA that signed a `rediss://` Redis's certificate, trusted instead of the
    /// system's (`redis.ca_file`), for every Redis server and Sentinel picket reaches.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key shown to a Redis that asks for one
    /// (`redis.client_cert_file`, `redis.client_key_file`), to every server and Sentinel.
    pub client_identity: Option<ClientIdentity>,
    /// Prefix of every key picket writes.
    pub key_prefix: String,
    /// How long a key's latest report may be served for `max_age_s`.
    pub verdict_ttl: Duration,
    /// How long a key's state is kept after its last check.
    pub state_ttl: Duration,
    /// How long one Redis call may take before the worker goes on without it.
    pub timeout: Duration,
}

impl TryFrom<RawRedis> for RedisSettings {
    type Error = ConfigError;

    fn try_from(r: RawRedis) -> Result<Self, ConfigError> {
        url_with_scheme("redis.url", &r.url, SCHEMES)?;
        each_url("redis.nodes", &r.nodes, SCHEMES)?;
        if !r.cluster && !r.nodes.is_empty() {
            return Err(invalid(
                "redis.nodes",
                "nodes are only for a cluster: set redis.cluster = true",
            ));
        }
        each_url("redis.sentinels", &r.sentinels, SCHEMES)?;
        client_accepts("redis.url", std::slice::from_ref(&r.url))?;
        client_accepts("redis.nodes", &r.nodes)?;
        client_accepts("redis.sentinels", &r.sentinels)?;
        let (ca_file, client_identity) = tls_files(&r)?;
        if r.cluster && !r.sentinels.is_empty() {
            return Err(invalid(
                "redis.sentinels",
                "Sentinels watch a single primary, not a Redis Cluster: set redis.cluster = false or drop the sentinels",
            ));
        }
        let sentinel_master = if r.sentinels.is_empty() {
            r.sentinel_master
        } else {
            nonempty("redis.sentinel_master", &r.sentinel_master)?
        };
        let nodes = match (r.cluster, r.nodes.is_empty()) {
            (false, _) => Vec::new(),
            // A cluster named by its URL alone: that node is the seed.
            (true, true) => vec![r.url.clone()],
            (true, false) => r.nodes,
        };
        Ok(RedisSettings {
            url: r.url,
            cluster: r.cluster,
            nodes,
            sentinels: r.sentinels,
            sentinel_master,
            ca_file,
            client_identity,
            key_prefix: r.key_prefix,
            verdict_ttl: positive_duration("redis.verdict_ttl", &r.verdict_ttl)?,
            state_ttl: positive_duration("redis.state_ttl", &r.state_ttl)?,
            timeout: positive_duration("redis.timeout", &r.timeout)?,
        })
    }
}

/// Each of `urls` as redis-rs reads it (`key`'s): a database that is no number or an
/// unknown protocol passed the scheme check, and ended the worker naming no key.
fn client_accepts(key: &str, urls: &[String]) -> Result<(), ConfigError> {
    for url in urls {
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(invalid(
                key,
                format!("{}: {e}", crate::config::redact_url(url)),
            ));
        }
    }
    Ok(())
}

/// `redis.ca_file` and the client certificate, for Redis reached over TLS: one server,
/// a cluster's seed nodes, or the Sentinels and the primary they name. Every one of
/// those URLs must be `rediss://`, so that no certificate sits beside a plain connection.
fn tls_files(r: &RawRedis) -> Result<(Option<PathBuf>, Option<ClientIdentity>), ConfigError> {
    let mut urls = vec![r.url.as_str()];
    if r.cluster && !r.nodes.is_empty() {
        // The seeds are the cluster; `url` is then not used.
        urls = r.nodes.iter().map(String::as_str).collect();
    }
    urls.extend(r.sentinels.iter().map(String::as_str));
    let ca = parse::tls_file("redis.ca_file", &r.ca_file, &urls, "rediss")?;
    if let Some(path) = &ca {
        parse::pem_certificates("redis.ca_file", path)?;
    }
    let (cert, key) = (&r.client_cert_file, &r.client_key_file);
    let identity = parse::client_identity("redis", cert, key, &urls, "rediss")?;
    Ok((ca, identity))
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};

    #[test]
    fn an_old_file_setting_redis_pool_size_still_loads_and_is_reported() {
        assert!(Settings::from_toml("")
            .expect("defaults")
            .ignored_keys
            .is_empty());
        let old = Settings::from_toml("[redis]\npool_size = 16\n").expect("old file loads");
        assert_eq!(old.ignored_keys, vec!["redis.pool_size".to_string()]);
    }

    /// A URL redis-rs refuses (a database that is no number, an unknown protocol)
    /// passed `config check`; the worker then ended with exit 1 naming no key.
    #[test]
    fn a_redis_url_the_client_refuses_names_its_key() {
        for (toml, key) in [
            ("[redis]\nurl = \"redis://127.0.0.1:6379/x\"\n", "redis.url"),
            (
                "[redis]\nurl = \"redis://127.0.0.1:6379/0?protocol=bogus\"\n",
                "redis.url",
            ),
            (
                "[redis]\nsentinels = [\"redis://127.0.0.1:26379/y\"]\n",
                "redis.sentinels",
            ),
        ] {
            let e = err(toml);
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn redis_cluster_nodes_are_validated_and_default_to_the_url() {
        let single = Settings::from_toml("").expect("defaults");
        assert!(!single.redis.cluster);
        assert!(single.redis.nodes.is_empty());

        let seed = Settings::from_toml("[redis]\ncluster = true\n").expect("seed");
        assert!(seed.redis.cluster);
        assert_eq!(seed.redis.nodes, vec![seed.redis.url.clone()]);

        let listed = Settings::from_toml(
            "[redis]\ncluster = true\nnodes = [\"redis://a:7000\", \"rediss://b:7001\"]\n",
        )
        .expect("nodes");
        assert_eq!(listed.redis.nodes, ["redis://a:7000", "rediss://b:7001"]);

        let e = err("[redis]\ncluster = true\nnodes = [\"redis://a:7000\", \"http://b\"]\n");
        assert!(e.contains("redis.nodes[1]"), "{e}");
        let e = err("[redis]\nnodes = [\"redis://a:7000\"]\n");
        assert!(e.contains("redis.nodes") && e.contains("cluster"), "{e}");

        let env = vec![
            ("PICKET__REDIS__CLUSTER".to_string(), "true".to_string()),
            (
                "PICKET__REDIS__NODES".to_string(),
                "redis://a:6379,redis://b:6379".to_string(),
            ),
        ];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert!(s.redis.cluster);
        assert_eq!(s.redis.nodes, ["redis://a:6379", "redis://b:6379"]);
    }

    #[test]
    fn redis_sentinels_are_validated_and_not_for_a_cluster() {
        let plain = Settings::from_toml("").expect("defaults");
        assert!(plain.redis.sentinels.is_empty());
        let s = Settings::from_toml(
            "[redis]\nsentinels = [\"redis://a:26379\", \"redis://b:26379\"]\nsentinel_master = \"main\"\n",
        )
        .expect("sentinels");
        assert_eq!(s.redis.sentinels.len(), 2);
        assert_eq!(s.redis.sentinel_master, "main");
        let e = err("[redis]\nsentinels = [\"tcp://a:26379\"]\n");
        assert!(e.contains("redis.sentinels[0]"), "{e}");
        let e = err("[redis]\ncluster = true\nsentinels = [\"redis://a:26379\"]\n");
        assert!(
            e.contains("redis.sentinels") && e.contains("Cluster"),
            "{e}"
        );
        let e = err("[redis]\nsentinels = [\"redis://a:26379\"]\nsentinel_master = \"\"\n");
        assert!(e.contains("redis.sentinel_master"), "{e}");
        let env = vec![(
            "PICKET__REDIS__SENTINELS".to_string(),
            "redis://a:26379,redis://b:26379".to_string(),
        )];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert_eq!(s.redis.sentinels, ["redis://a:26379", "redis://b:26379"]);
    }
}
