//! The Redis connection pool, to a single Redis or to a Redis Cluster (`redis.cluster`).
//!
//! Callers see one pool and one connection type either way: [`RedisConn`] implements
//! [`redis::aio::ConnectionLike`], so commands and scripts run on it unchanged. On a
//! cluster each command goes to the node that owns its key's hash slot; a script's keys
//! must therefore share one slot (the limiter's keys carry a `{hash tag}`).

use std::time::Duration;

use crate::config::RedisSettings;

/// Connections to Redis, made lazily and kept for reuse.
#[derive(Clone)]
pub enum RedisPool {
    /// One Redis server.
    Single(deadpool_redis::Pool),
    /// A Redis Cluster, found from its seed nodes.
    Cluster(deadpool_redis::cluster::Pool),
}

/// A connection taken from a [`RedisPool`]; it goes back to the pool when dropped.
pub enum RedisConn {
    /// To one Redis server.
    Single(deadpool_redis::Connection),
    /// To a Redis Cluster (routes each command to the node of its slot).
    Cluster(deadpool_redis::cluster::Connection),
}

/// A Redis pool could not be made from the settings.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisSetupError(String);

fn pool_config(settings: &RedisSettings) -> deadpool_redis::PoolConfig {
    deadpool_redis::PoolConfig {
        max_size: settings.pool_size,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(settings.timeout),
            create: Some(settings.timeout),
            recycle: Some(settings.timeout),
        },
        ..deadpool_redis::PoolConfig::default()
    }
}

/// Builds the Redis connection pool from `[redis]` (connections are made lazily): to
/// `redis.url`, or with `redis.cluster` to the cluster seeded by `redis.nodes`.
///
/// # Errors
/// A URL is not one redis-rs accepts.
pub fn redis_pool(settings: &RedisSettings) -> Result<RedisPool, RedisSetupError> {
    let runtime = Some(deadpool_redis::Runtime::Tokio1);
    if settings.cluster {
        let mut cfg = deadpool_redis::cluster::Config::from_urls(settings.nodes.clone());
        cfg.pool = Some(pool_config(settings));
        cfg.create_pool(runtime)
            .map(RedisPool::Cluster)
            .map_err(|e| RedisSetupError(e.to_string()))
    } else {
        let mut cfg = deadpool_redis::Config::from_url(settings.url.clone());
        cfg.pool = Some(pool_config(settings));
        cfg.create_pool(runtime)
            .map(RedisPool::Single)
            .map_err(|e| RedisSetupError(e.to_string()))
    }
}

impl RedisPool {
    /// A connection from the pool, made if none is idle (within the pool's timeouts).
    ///
    /// # Errors
    /// No connection could be had: the pool's message.
    pub async fn get(&self) -> Result<RedisConn, String> {
        match self {
            RedisPool::Single(p) => p.get().await.map(RedisConn::Single),
            RedisPool::Cluster(p) => p.get().await.map(RedisConn::Cluster),
        }
        .map_err(|e| e.to_string())
    }

    /// Whether this pool speaks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisPool::Cluster(_))
    }

    /// How long a caller waits for a free connection at most.
    pub fn wait_timeout(&self) -> Option<Duration> {
        match self {
            RedisPool::Single(p) => p.timeouts().wait,
            RedisPool::Cluster(p) => p.timeouts().wait,
        }
    }
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
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
}
