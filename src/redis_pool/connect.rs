//! How a pool reaches Redis: one server, the primary a set of Sentinels names, or a
//! Redis Cluster, each over TLS with a private CA (`redis.ca_file`) and a client
//! certificate (`redis.client_cert_file`) when the settings give them.
//!
//! deadpool-redis's managers (no longer a dependency) have no place for certificates
//! and read nothing anew; so the pool's managers here make each connection with a
//! redis-rs client built for it, from the certificate files as they are then: a
//! certificate renewed in place is shown at the next connection, as the broker's is.
//! For Sentinels the same files serve the Sentinels and the primary they name; for a
//! cluster, every node, including those found from the seeds. The settings are checked
//! once at start (URLs, files readable, PEM that redis-rs takes), so a mistake stops
//! picket there, not at every reconnect.

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ConnectionAddr, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates, TlsMode,
};

use super::{pool_config, RedisSetupError};
use crate::config::RedisSettings;

/// A pool of one kind of Redis deployment.
#[derive(Clone)]
pub(super) enum PoolKind {
    /// One Redis server, or the primary that Redis Sentinels point at.
    Server(deadpool::managed::Pool<Server>),
    /// A Redis Cluster, found from its seed nodes.
    Cluster(deadpool::managed::Pool<Cluster>),
}

/// The pool `settings` ask for, its settings checked by building its client once.
pub(super) fn pool_kind(settings: &RedisSettings) -> Result<PoolKind, RedisSetupError> {
    let setup = |e: &RedisError| RedisSetupError(e.to_string());
    let certs = certificates(settings).map_err(RedisSetupError)?;
    if settings.cluster {
        cluster_client(settings, certs).map_err(|e| setup(&e))?;
        pool(Cluster(settings.clone()), settings).map(PoolKind::Cluster)
    } else {
        if settings.sentinels.is_empty() {
            single_client(settings, certs).map_err(|e| setup(&e))?;
        } else {
            sentinel_client(settings, certs).map_err(|e| setup(&e))?;
        }
        let server = Server {
            settings: settings.clone(),
            primary: std::sync::Mutex::new(None),
        };
        pool(server, settings).map(PoolKind::Server)
    }
}

/// A pool (of one connection, see `RedisPool`) with picket's timeouts.
fn pool<M: Manager>(
    manager: M,
    settings: &RedisSettings,
) -> Result<deadpool::managed::Pool<M>, RedisSetupError> {
    deadpool::managed::Pool::builder(manager)
        .config(pool_config(settings))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| RedisSetupError(e.to_string()))
}

/// `redis.ca_file` and the client certificate as the files hold them now; none when
/// neither is set.
fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, String> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("redis.{key} {}: {e}", path.display()))
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

/// The certificates of a connection about to be made, or why they cannot be read.
pub(super) fn certificates_now(settings: &RedisSettings) -> RedisResult<Option<TlsCertificates>> {
    certificates(settings).map_err(|e| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "TLS files unreadable",
            e,
        ))
    })
}

/// A client of `redis.url`.
fn single_client(
    settings: &RedisSettings,
    certs: Option<TlsCertificates>,
) -> RedisResult<redis::Client> {
    match certs {
        Some(certs) => redis::Client::build_with_tls(settings.url.as_str(), certs),
        None => redis::Client::open(settings.url.as_str()),
    }
}

/// A client of the cluster seeded by `redis.nodes`.
fn cluster_client(
    settings: &RedisSettings,
    certs: Option<TlsCertificates>,
) -> RedisResult<ClusterClient> {
    let mut nodes = ClusterClientBuilder::new(settings.nodes.clone())
        .connection_timeout(settings.timeout)
        .response_timeout(settings.timeout);
    if let Some(certs) = certs {
        nodes = nodes.certs(certs);
    }
    nodes.build()
}

/// A client that asks the Sentinels for the primary, then connects to it with the
/// database and credentials of `redis.url`, over TLS when that URL is `rediss://` (a
/// deployment that serves TLS only would otherwise refuse the primary's plain
/// connection for ever).
pub(super) fn sentinel_client(
    settings: &RedisSettings,
    certs: Option<TlsCertificates>,
) -> RedisResult<SentinelClient> {
    let primary = settings.url.as_str().into_connection_info()?;
    let sentinels = settings
        .sentinels
        .iter()
        .map(|u| u.as_str().into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let (username, password) = sentinel_credentials(&sentinels)?;
    let addrs = sentinels.iter().map(|s| s.addr().clone());
    let mut builder = SentinelClientBuilder::new(
        addrs,
        settings.sentinel_master.as_str(),
        SentinelServerType::Master,
    )?;
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
    builder.build()
}

/// A client of the one Sentinel at `url`, with the certificates `rediss://` Sentinels are
/// reached with.
pub(super) fn one_sentinel_client(
    url: &str,
    certs: Option<TlsCertificates>,
) -> RedisResult<redis::Client> {
    match certs {
        Some(certs)
            if url
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("rediss://") =>
        {
            redis::Client::build_with_tls(url, certs)
        }
        _ => redis::Client::open(url),
    }
}

/// The one username and password every Sentinel is asked with: redis-rs takes one for
/// all of them, so Sentinels that differ are refused at start rather than some of them
/// failing at every failover.
fn sentinel_credentials(
    sentinels: &[redis::ConnectionInfo],
) -> RedisResult<(Option<String>, Option<String>)> {
    let of = |s: &redis::ConnectionInfo| {
        let r = s.redis_settings();
        (
            r.username().map(str::to_string),
            r.password().map(str::to_string),
        )
    };
    let first = sentinels.first().map(of).unwrap_or_default();
    if sentinels.iter().any(|s| of(s) != first) {
        return Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis.sentinels: every Sentinel URL must carry the same username and password",
        )));
    }
    Ok(first)
}

/// `redis.timeout` for connecting and for each answer. redis-rs's own defaults (1 s to
/// connect, 500 ms for an answer) would give up on a Redis that stalls for less than
/// the setting allows (a fork for BGSAVE, a slow script), and take the shared
/// connection down with it. A connection that gets no answer within it is replaced, so
/// a primary that froze is left for the one the Sentinels name next.
pub(super) fn connection_config(settings: &RedisSettings) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
}

/// Makes connections to `redis.url`, or to the primary the Sentinels name (asked anew
/// each time), with the certificate files as they are then.
pub(super) struct Server {
    settings: RedisSettings,
    /// The primary the Sentinels named for the last connection made (the pool's one
    /// connection), which `sentinel_watch` holds against what they name now.
    primary: std::sync::Mutex<Option<Primary>>,
}

/// A primary as the Sentinels name it: host and port.
pub(crate) type Primary = (String, u16);

impl Server {
    pub(super) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The primary the last connection was made to, with Sentinels.
    pub(super) fn primary(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The host and port of a TCP address.
fn primary_of(addr: &ConnectionAddr) -> Option<Primary> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        _ => None,
    }
}

impl Manager for Server {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<MultiplexedConnection> {
        let certs = certificates_now(&self.settings)?;
        let config = connection_config(&self.settings);
        if self.settings.sentinels.is_empty() {
            return single_client(&self.settings, certs)?
                .get_multiplexed_async_connection_with_config(&config)
                .await;
        }
        let client = sentinel_client(&self.settings, certs)?
            .async_get_client()
            .await?;
        let named = primary_of(client.get_connection_info().addr());
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self
            .primary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = named;
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        ping(conn).await
    }
}

/// Makes connections to a Redis Cluster, which find its nodes from the seeds, with the
/// certificate files as they are then.
pub(super) struct Cluster(RedisSettings);

impl Manager for Cluster {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> RedisResult<ClusterConnection> {
        let certs = certificates_now(&self.0)?;
        cluster_client(&self.0, certs)?.get_async_connection().await
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
/// connection out of the pool for good (`RedisPool::get`), so this runs only if that
/// ever changes.
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
