//! Test support for the integration test binary: real, private RabbitMQ and
//! Redis servers shared by all its tests, unique names, free ports, and
//! small target servers for picket to probe.
//!
//! - [`servers()`] starts one RabbitMQ node and one redis-server per test
//!   binary, on 127.0.0.1 and free ports, with data in temp dirs. They stop
//!   when the test binary exits or is killed (see `procs`).
//! - [`RedisServer::launch`] and [`RabbitServer::launch`] give a test a
//!   server of its own, for fault tests that stop or restart it: stopping a
//!   shared server would break the other tests running in parallel.
//! - [`RedisCluster::launch`] starts a private Redis Cluster of N masters
//!   (`launch_with_replicas`: with replicas); [`RedisSentinels::launch`] a
//!   primary, a replica and three Sentinels; [`RabbitCluster::launch`] a
//!   RabbitMQ cluster of N nodes. Each can lose a node to SIGKILL.
//! - [`serve`] and [`serve_raw`] (in `targets`) put HTTP targets, well or
//!   badly behaved, on loopback addresses.
//! - [`farm::Farm`] starts a hostile target farm on 127.0.2.x (charsets,
//!   compression, broken TLS, redirect games, block pages, silence), each
//!   target with its truth and the verdict picket should give.
//!
//! Which helpers are used depends on which test modules the binary
//! declares, so unused ones (and unused re-exports) are not warnings here.
#![allow(dead_code, unused_imports)]

pub mod dns;
pub mod farm;
pub mod ops;
pub mod procs;
pub mod proxy;
pub mod rabbitmq;
pub mod redis_server;
pub mod relay;
pub mod run;
pub mod schema;
pub mod targets;
pub mod worker_process;

use std::sync::OnceLock;

pub use procs::{free_port, libfaketime, unique};
pub use rabbitmq::{RabbitCluster, RabbitServer};
pub use redis_server::{RedisCluster, RedisSentinels, RedisServer};
pub use targets::{blackhole, serve, serve_raw};

/// The servers every test of this binary shares.
pub struct Servers {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub amqp_url: String,
    /// `redis://127.0.0.1:PORT/0`
    pub redis_url: String,
    pub rabbit: RabbitServer,
    pub redis: RedisServer,
}

impl Servers {
    /// Kills the shared redis-server (as a crash would). Every test running
    /// at the same time loses Redis too; prefer [`RedisServer::launch`].
    pub fn redis_stop(&self) {
        self.redis.stop();
    }

    /// Starts the shared redis-server again on the same port, empty, and
    /// waits until it answers.
    pub fn redis_start(&self) {
        self.redis.start();
    }

    /// Stops the shared RabbitMQ node cleanly, starts it again on the same
    /// port with the same data, and waits until it accepts AMQP (about 5 s).
    /// Every test running at the same time sees the broker go away; prefer
    /// [`RabbitServer::launch`].
    ///
    /// This blocks the calling thread. In a `#[tokio::test]` whose worker
    /// under test must keep running meanwhile, call it through
    /// `tokio::task::spawn_blocking(|| servers().rabbit_restart())`.
    pub fn rabbit_restart(&self) {
        self.rabbit.restart();
    }
}

/// The shared servers, started on first use (about 5 s, RabbitMQ's boot).
///
/// Blocks the calling thread while starting; fine in tests. If starting
/// fails, every test that calls this panics with the same reason, rather
/// than each one trying (and waiting) again.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Result<Servers, String>> = OnceLock::new();
    let started = SERVERS.get_or_init(|| {
        log_worker_output();
        let redis = RedisServer::launch().map_err(|e| format!("starting redis-server: {e}"))?;
        let rabbit = RabbitServer::launch().map_err(|e| format!("starting RabbitMQ: {e}"))?;
        Ok(Servers {
            amqp_url: rabbit.url().to_string(),
            redis_url: redis.url().to_string(),
            rabbit,
            redis,
        })
    });
    match started {
        Ok(servers) => servers,
        Err(e) => panic!("test servers are unavailable: {e}"),
    }
}

/// The in-process workers' logs go to the test's captured output, which the harness
/// prints only for a failed test: a failure in CI shows what the worker did.
/// `PICKET_TEST_LOG` is the filter (`picket=info` unless set; `off` for none).
fn log_worker_output() {
    let filter = std::env::var("PICKET_TEST_LOG").unwrap_or_else(|_| "picket=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

pub mod picket;
pub mod real;
