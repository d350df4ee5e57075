//! How a pool reaches Redis: one server, the primary a set of Sentinels names, or a
//! Redis Cluster, each over TLS with a private CA (`redis.ca_file`) and a client
//! certificate (`redis.client_cert_file`) when the settings give them.
//!
//! deadpool-redis's own configurations have no place for certificates, so every pool is
//! built from a redis-rs client made here, with the certificates in it: for Sentinels,
//! the same files serve the Sentinels and the primary they name; for a cluster, every
//! node, including those found from the seeds.

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisError, TlsCertificates, TlsMode};

use super::{pool_config, RedisSetupError};
use crate::config::RedisSettings;

/// A pool of one kind of Redis deployment.
#[derive(Clone)]
pub(super) enum PoolKind {
    /// One Redis server.
    Single(deadpool_redis::Pool),
    /// The primary that Redis Sentinels point at.
    Sentinel(deadpool::managed::Pool<Sentinels>),
    /// A Redis Cluster, found from its seed nodes.
    Cluster(deadpool::managed::Pool<Cluster>),
}

fn setup(e: &dyn std::fmt::Display) -> RedisSetupError {
    RedisSetupError(e.to_string())
}

/// The pool `settings` ask for: a cluster's, the Sentinels' primary's, or one server's.
pub(super) fn pool_kind(settings: &RedisSettings) -> Result<PoolKind, RedisSetupError> {
    let certs = certificates(settings)?;
    if settings.cluster {
        let mut nodes = ClusterClientBuilder::new(settings.nodes.clone());
        if let Some(certs) = certs {
            nodes = nodes.certs(certs);
        }
        let client = nodes.build().map_err(|e| setup(&e))?;
        pool(Cluster(client), settings).map(PoolKind::Cluster)
    } else if !settings.sentinels.is_empty() {
        let client = sentinel_client(settings, certs)?;
        pool(Sentinels(tokio::sync::Mutex::new(client)), settings).map(PoolKind::Sentinel)
    } else {
        let client = match certs {
            Some(certs) => redis::Client::build_with_tls(settings.url.as_str(), certs),
            None => redis::Client::open(settings.url.as_str()),
        }
        .map_err(|e| setup(&e))?;
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| setup(&e))?;
        pool(manager, settings).map(PoolKind::Single)
    }
}

/// A pool (of one connection, see the module above) with picket's timeouts; `W` is the
/// type a pooled connection is handed out as.
fn pool<M: Manager, W: From<deadpool::managed::Object<M>>>(
    manager: M,
    settings: &RedisSettings,
) -> Result<deadpool::managed::Pool<M, W>, RedisSetupError> {
    deadpool::managed::Pool::<M, W>::builder(manager)
        .config(pool_config(settings))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| setup(&e))
}

/// `redis.ca_file` and the client certificate, read once; none when neither is set.
fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, RedisSetupError> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| RedisSetupError(format!("redis.{key} {}: {e}", path.display())))
    };
    let root_cert = match &settings.ca_file {
        Some(ca) => Some(read("ca_file", ca)?),
        None => None,
    };
    let client_tls = match &settings.client_identity {
        Some(id) => Some(redis::ClientTlsConfig {
            client_cert: read("client_cert_file", &id.cert_file)?,
            client_key: read("client_key_file", &id.key_file)?,
        }),
        None => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// A client that asks the Sentinels for the primary, then connects to it with the
/// database and credentials of `redis.url`, over TLS when that URL is `rediss://` (a
/// deployment that serves TLS only would otherwise refuse the primary's plain
/// connection for ever).
fn sentinel_client(
    settings: &RedisSettings,
    certs: Option<TlsCertificates>,
) -> Result<SentinelClient, RedisSetupError> {
    let primary = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| setup(&e))?;
    let sentinels = settings
        .sentinels
        .iter()
        .map(|u| u.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(&e))?;
    let (username, password) = sentinel_credentials(&sentinels)?;
    let addrs = sentinels.iter().map(|s| s.addr().clone());
    let mut builder = SentinelClientBuilder::new(
        addrs,
        settings.sentinel_master.as_str(),
        SentinelServerType::Master,
    )
    .map_err(|e| setup(&e))?;
    let on_primary = primary.redis_settings();
    builder = builder.set_client_to_redis_db(on_primary.db());
    if let Some(user) = on_primary.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(pass) = on_primary.password() {
        builder = builder.set_client_to_redis_password(pass);
    }
    if matches!(primary.addr(), ConnectionAddr::TcpTls { .. }) {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certs) = &certs {
            builder = builder.set_client_to_redis_certificates(certs.clone());
        }
    }
    if let Some(user) = username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(pass) = password {
        builder = builder.set_client_to_sentinel_password(pass);
    }
    if let Some(certs) = certs {
        // The configuration lets certificates sit only beside `rediss://` Sentinels.
        builder = builder.set_client_to_sentinel_certificates(certs);
    }
    builder.build().map_err(|e| setup(&e))
}

/// The one username and password every Sentinel is asked with: redis-rs takes one for
/// all of them, so Sentinels that differ are refused at start rather than some of them
/// failing at every failover.
fn sentinel_credentials(
    sentinels: &[redis::ConnectionInfo],
) -> Result<(Option<String>, Option<String>), RedisSetupError> {
    let of = |s: &redis::ConnectionInfo| {
        let r = s.redis_settings();
        (
            r.username().map(str::to_string),
            r.password().map(str::to_string),
        )
    };
    let first = sentinels.first().map(of).unwrap_or_default();
    if sentinels.iter().any(|s| of(s) != first) {
        return Err(RedisSetupError(
            "redis.sentinels: every Sentinel URL must carry the same username and password".into(),
        ));
    }
    Ok(first)
}

/// Makes connections to the primary the Sentinels name, asking them anew each time.
pub(super) struct Sentinels(tokio::sync::Mutex<SentinelClient>);

impl Manager for Sentinels {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.0.lock().await.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        ping(conn).await
    }
}

/// Makes connections to a Redis Cluster, which find its nodes from the seeds.
pub(super) struct Cluster(ClusterClient);

impl Manager for Cluster {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.0.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        ping(conn).await
    }
}

/// The pool's check of a connection it hands out again. picket takes its one
/// connection out of the pool for good (see the module above), so this runs only if
/// that ever changes.
async fn ping(conn: &mut impl redis::aio::ConnectionLike) -> RecycleResult<RedisError> {
    let pong: String = redis::cmd("PING").query_async(conn).await?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(RecycleError::message("unexpected PING reply"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sentinel_is_asked_with_the_one_password_they_share_or_none_is() {
        let infos = |urls: &[&str]| {
            urls.iter()
                .map(|u| u.into_connection_info().expect("a URL"))
                .collect::<Vec<_>>()
        };
        let same = sentinel_credentials(&infos(&["redis://:s@h:1", "redis://:s@h:2"]));
        assert_eq!(same.ok(), Some((None, Some("s".to_string()))));
        let differ = sentinel_credentials(&infos(&["redis://:s@h:1", "redis://:t@h:2"]));
        assert!(differ.is_err_and(|e| e.to_string().contains("redis.sentinels")));
        let none = sentinel_credentials(&infos(&["redis://h:1"]));
        assert_eq!(none.ok(), Some((None, None)));
    }
}
