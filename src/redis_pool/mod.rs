//! The Redis connection pool, to a single Redis, to the primary a set of Redis Sentinels
//! points at (`redis.sentinels`), or to a Redis Cluster (`redis.cluster`).
//!
//! Callers see one pool and one connection type either way: [`RedisConn`] implements
//! [`redis::aio::ConnectionLike`], so commands and scripts run on it unchanged. On a
//! cluster each command goes to the node that owns its key's hash slot; a script's keys
//! must therefore share one slot (the limiter's keys carry a `{hash tag}`).
//!
//! redis-rs connections are multiplexed: one carries any number of concurrent commands,
//! and commands issued together go out in one write. So every call shares one connection
//! taken from the pool, instead of taking a connection per call: deadpool checks a
//! connection with a PING round trip each time it hands one out, which doubled the
//! round trips of every call, and separate connections cannot batch their writes. The
//! pool is asked again only when the shared connection breaks, so it never holds more
//! than one connection: one carries several times what a worker can ask of Redis
//! (measured in docs/DESIGN.md), and more would not batch.
//!
//! Failover: a connection is dropped (never handed out again) when it breaks, when
//! Redis answers READONLY (the node was demoted to a replica: a failover happened while
//! the connection stayed up) or MOVED (the slot has another owner), or when the
//! Sentinels name another primary ([`sentinel_watch`]). The next call then
//! asks the Sentinels for the primary again, or the cluster for its slots, so the
//! limiter and the cache leave their fallback by themselves once the new primary serves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;

use crate::config::RedisSettings;

mod connect;
mod sentinel_watch;
mod settle;

pub(crate) use connect::Primary;
use connect::{pool_kind, PoolKind};
use settle::Settle;

/// Connections to Redis, made lazily and kept for reuse.
#[derive(Clone)]
pub struct RedisPool {
    kind: PoolKind,
    /// The connection every call shares, once one was made.
    shared: Arc<Mutex<Option<Shared>>>,
    /// Held while a new shared connection is made, so that a burst of calls finding
    /// none waits for one instead of each taking its own from the pool. It keeps the
    /// last failure: calls that waited behind a failed attempt fail at once instead of
    /// each trying again, one after the other, while Redis is down.
    making: Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>>,
    /// Whether Redis is reached over TLS (`rediss://`): a failure in its handshake
    /// then says which setting to look at.
    tls: bool,
    /// Whether the Sentinels are watched yet (`sentinel_watch`; with Sentinels only,
    /// from the first connection on).
    watching: Arc<std::sync::atomic::AtomicBool>,
    /// With Sentinels: the rounds that tell a write settled ([`RedisPool::settled`]).
    settle: Option<Arc<Settle>>,
}

#[derive(Clone)]
enum Shared {
    /// To one server, or to the primary the Sentinels named when it was made.
    Single(MultiplexedConnection, Option<Arc<Primary>>),
    Cluster(ClusterConnection),
}

/// A handle on the shared connection; cheap, and dropped after each call.
pub struct RedisConn {
    conn: Shared,
    /// Where it came from: emptied when the connection turns out broken.
    slot: Arc<Mutex<Option<Shared>>>,
}

/// How long a failure to connect answers for the calls that waited behind it.
const FAIL_FAST: Duration = Duration::from_millis(250);

/// A Redis pool could not be made from the settings.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisSetupError(String);

fn pool_config(settings: &RedisSettings) -> deadpool::managed::PoolConfig {
    deadpool::managed::PoolConfig {
        // The shared connection is cloned out and its pool object handed straight back:
        // one is all the pool ever holds.
        max_size: 1,
        timeouts: deadpool::managed::Timeouts {
            wait: Some(settings.timeout),
            create: Some(settings.timeout),
            recycle: Some(settings.timeout),
        },
        ..deadpool::managed::PoolConfig::default()
    }
}

/// Builds the Redis connection pool from `[redis]` (connections are made lazily): to
/// `redis.url`, or with `redis.cluster` to the cluster seeded by `redis.nodes`.
///
/// # Errors
/// A URL is not one redis-rs accepts.
pub fn redis_pool(settings: &RedisSettings) -> Result<RedisPool, RedisSetupError> {
    let tls = std::iter::once(&settings.url)
        .chain(&settings.nodes)
        .any(|u| u.trim_start().to_ascii_lowercase().starts_with("rediss://"));
    let settle = Settle::new(settings).map(Arc::new);
    pool_kind(settings).map(|kind| RedisPool::new(kind, tls, settle))
}

/// A failure to connect, with what to set when it ended in TLS: a certificate refused,
/// or an alert such as the `CertificateRequired` of a Redis that asks clients for one.
fn with_tls_hint(tls: bool, error: String) -> String {
    if !(tls && crate::config::parse::ended_in_tls(&error)) {
        return error;
    }
    format!(
        "{error} (TLS: if Redis asks clients for a certificate, set redis.client_cert_file and \
         redis.client_key_file; if this names Redis's certificate, trust its CA with redis.ca_file)"
    )
}

impl RedisPool {
    fn new(kind: PoolKind, tls: bool, settle: Option<Arc<Settle>>) -> RedisPool {
        RedisPool {
            settle,
            kind,
            shared: Arc::new(Mutex::new(None)),
            making: Arc::new(tokio::sync::Mutex::new(None)),
            tls,
            watching: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Shared>> {
        // A plain Option: nothing is left half-written by a panicking holder.
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shared connection, made (through the pool, within its timeouts) if there is
    /// none yet or the last one broke.
    ///
    /// # Errors
    /// No connection could be had: the pool's message.
    pub async fn get(&self) -> Result<RedisConn, String> {
        let current = self.slot().clone();
        let conn = match current {
            Some(c) => c,
            // Boxed: making a connection (a cluster's above all) is a future of about
            // 12 KB, which every call's future would otherwise carry, and copy, while
            // it only ever uses the shared connection.
            None => Box::pin(self.make()).await?,
        };
        Ok(RedisConn {
            conn,
            slot: self.shared.clone(),
        })
    }

    /// A new shared connection, unless another call made one meanwhile or the last
    /// attempt failed within [`FAIL_FAST`].
    async fn make(&self) -> Result<Shared, String> {
        let mut making = self.making.lock().await;
        if let Some(c) = self.slot().clone() {
            // Made while this call waited.
            return Ok(c);
        }
        if let Some((at, error)) = making.as_ref() {
            if at.elapsed() < FAIL_FAST {
                return Err(error.clone());
            }
        }
        // Taken out of the pool for good: a connection dropped after READONLY
        // still answers PING, and the pool would hand it out again.
        let made = match &self.kind {
            PoolKind::Server(p) => p.get().await.map(|c| {
                // Made (under `making`) by the manager, which noted whom it reached.
                let primary = p.manager().primary().map(Arc::new);
                Shared::Single(deadpool::managed::Object::take(c), primary)
            }),
            PoolKind::Cluster(p) => p
                .get()
                .await
                .map(|c| Shared::Cluster(deadpool::managed::Object::take(c))),
        };
        match made {
            Ok(fresh) => {
                *making = None;
                *self.slot() = Some(fresh.clone());
                self.watch_sentinels();
                Ok(fresh)
            }
            Err(e) => {
                let error = with_tls_hint(self.tls, e.to_string());
                *making = Some((tokio::time::Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Starts the watch of the Sentinels (`sentinel_watch`), once, if there are any.
    fn watch_sentinels(&self) {
        let PoolKind::Server(server) = &self.kind else {
            return;
        };
        if server.manager().settings().sentinels.is_empty()
            || self
                .watching
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(sentinel_watch::watch(server.clone(), shared));
    }

    /// Whether a write the primary `on` answered before `since` stays: always, without
    /// Sentinels; with them, when a round of every Sentinel, begun after it, names `on`
    /// steadily ([`settle`]). A write not settled may be wiped by a failover's resync:
    /// its caller writes it again once the Sentinels name the new primary, which the
    /// shared connection is then made to (it leaves `on` here when they name another).
    pub(crate) async fn settled(&self, on: Option<&Primary>, since: tokio::time::Instant) -> bool {
        let (Some(settle), Some(on)) = (&self.settle, on) else {
            return true;
        };
        let named = settle.named_since(since).await;
        if named.settles(on) {
            return true;
        }
        if matches!(&named, settle::Named::Steady(other) if other != on) {
            let mut slot = self.slot();
            if matches!(&*slot, Some(Shared::Single(_, Some(p))) if **p == *on) {
                *slot = None;
            }
        }
        false
    }

    /// Whether this pool speaks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, PoolKind::Cluster(_))
    }

    /// How long a caller waits for a connection at most.
    #[cfg(test)]
    pub(crate) fn wait_timeout(&self) -> Option<Duration> {
        match &self.kind {
            PoolKind::Server(p) => p.timeouts().wait,
            PoolKind::Cluster(p) => p.timeouts().wait,
        }
    }
}

impl RedisConn {
    /// The primary the Sentinels named when this connection was made; `None` without
    /// Sentinels.
    pub(crate) fn primary(&self) -> Option<&Primary> {
        match &self.conn {
            Shared::Single(_, primary) => primary.as_deref(),
            Shared::Cluster(_) => None,
        }
    }

    /// Forgets the shared connection when `result` shows it is broken or talks to a
    /// node that no longer owns the data, so the next call makes a new one.
    ///
    /// redis-rs hands a command's error reply back as a value ([`redis::Value::ServerError`])
    /// and makes it an error only later, in `query_async`: the replies are read too.
    fn check(slot: &Mutex<Option<Shared>>, result: Result<&[redis::Value], &redis::RedisError>) {
        let broken = match result {
            Err(e) => must_reconnect(e),
            Ok(replies) => replies.iter().any(names_another_node),
        };
        if broken {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }
}

/// Whether a reply says the node no longer serves what it was asked: READONLY (it was
/// demoted) or MOVED (another node owns the slot).
fn names_another_node(reply: &redis::Value) -> bool {
    use redis::ServerErrorKind;
    matches!(
        reply,
        redis::Value::ServerError(e)
            if matches!(e.kind(), Some(ServerErrorKind::ReadOnly | ServerErrorKind::Moved))
    )
}

/// Whether an error means the connection must be replaced: it broke, or it reaches a
/// replica (READONLY: a failover demoted the node it was made to) or a node that no
/// longer serves the key's slot (MOVED).
fn must_reconnect(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::Moved)
        )
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let result = match &mut self.conn {
                Shared::Single(c, _) => c.req_packed_command(cmd).await,
                Shared::Cluster(c) => c.req_packed_command(cmd).await,
            };
            RedisConn::check(&self.slot, result.as_ref().map(std::slice::from_ref));
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let result = match &mut self.conn {
                Shared::Single(c, _) => c.req_packed_commands(pipeline, offset, count).await,
                Shared::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            };
            RedisConn::check(&self.slot, result.as_ref().map(Vec::as_slice));
            result
        })
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Shared::Single(c, _) => c.get_db(),
            Shared::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn the_setting_chooses_the_kind_of_pool_and_both_keep_the_timeout() {
        let single = Settings::from_toml("[redis]\ntimeout = \"750ms\"\n").expect("settings");
        let pool = redis_pool(&single.redis).expect("pool");
        assert!(!pool.is_cluster());
        assert_eq!(pool.wait_timeout(), Some(Duration::from_millis(750)));

        let cluster = Settings::from_toml(
            "[redis]\ntimeout = \"750ms\"\ncluster = true\nnodes = [\"redis://127.0.0.1:7000\"]\n",
        )
        .expect("settings");
        let pool = redis_pool(&cluster.redis).expect("pool");
        assert!(pool.is_cluster());
        assert_eq!(pool.wait_timeout(), Some(Duration::from_millis(750)));
    }

    #[test]
    fn a_call_on_the_shared_connection_carries_no_connect_future() {
        // Every Redis call of every job awaits `get`; making a connection is a future of
        // about 12 KB, which each call's future (and every future it is part of) was
        // copied around with although it only ever used the shared connection.
        for toml in [
            "",
            "[redis]\ncluster = true\nnodes = [\"redis://127.0.0.1:7000\"]\n",
        ] {
            let s = Settings::from_toml(toml).expect("settings");
            let pool = redis_pool(&s.redis).expect("pool");
            let size = std::mem::size_of_val(&pool.get());
            assert!(size <= 512, "get() is a {size}-byte future");
        }
    }

    #[test]
    fn readonly_and_moved_replies_drop_the_connection_other_errors_do_not() {
        use redis::{ErrorKind, RedisError, ServerErrorKind};
        let server = |kind: ServerErrorKind, detail: &str| {
            RedisError::from((ErrorKind::Server(kind), "server", detail.to_string()))
        };
        assert!(must_reconnect(&server(
            ServerErrorKind::ReadOnly,
            "You can't write against a read only replica."
        )));
        assert!(must_reconnect(&server(
            ServerErrorKind::Moved,
            "3999 127.0.0.1:6381"
        )));
        let script_error = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR",
            "bad".to_string(),
        ));
        assert!(!must_reconnect(&script_error));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(must_reconnect(&io));
        // The same as the reply values redis-rs hands back first.
        let reply = |wire: &[u8]| redis::parse_redis_value(wire).expect("a reply");
        assert!(names_another_node(&reply(
            b"-READONLY You can't write against a read only replica.\r\n"
        )));
        assert!(names_another_node(&reply(
            b"-MOVED 3999 127.0.0.1:6381\r\n"
        )));
        assert!(!names_another_node(&reply(
            b"-ERR Error running script\r\n"
        )));
        assert!(!names_another_node(&reply(b"+OK\r\n")));
    }

    #[test]
    fn sentinels_are_checked_at_start_and_differing_passwords_refused() {
        let with = |second: &str| {
            Settings::from_toml(&format!(
                "[redis]\nurl = \"redis://:pw@127.0.0.1:6379/3\"\n\
                 sentinels = [\"redis://:s@127.0.0.1:26379\", \"{second}\"]\n"
            ))
            .expect("settings")
        };
        let pool = redis_pool(&with("redis://:s@127.0.0.1:26380").redis).expect("pool");
        assert!(!pool.is_cluster());
        let differ = redis_pool(&with("redis://:t@127.0.0.1:26380").redis).err();
        assert!(
            differ.is_some_and(|e| e.to_string().contains("same username and password")),
            "refused at start"
        );
    }

    #[tokio::test]
    async fn calls_waiting_behind_a_failed_connect_fail_with_it() {
        // A listener whose accept queue is full: connecting hangs until the timeout.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(1).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut held = Vec::new();
        for _ in 0..4 {
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                held.push(s);
            }
        }
        let settings = Settings::from_toml(&format!(
            "[redis]\nurl = \"redis://{addr}/0\"\ntimeout = \"1s\"\n"
        ))
        .expect("settings");
        let pool = redis_pool(&settings.redis).expect("pool");
        let start = tokio::time::Instant::now();
        let (a, b, c) = tokio::join!(pool.get(), pool.get(), pool.get());
        assert!(a.is_err() && b.is_err() && c.is_err());
        // One attempt's timeout, not three in a row.
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "{:?}",
            start.elapsed()
        );
        drop((listener, held));
    }
}
