//! Private servers on loopback for picket's integration tests and for
//! `cargo xtask bench|demo`: one launcher of RabbitMQ and Redis, so the tests,
//! the benchmark and the demo start them the same way.
//!
//! - [`procs`]: free ports, unique names, scratch directories, readiness
//!   polling, kills that check a PID is still ours, and the watchdog that
//!   stops a server once the process that started it is gone.
//! - [`rabbitmq`]: a private RabbitMQ node ([`RabbitServer`]), a cluster of
//!   them ([`RabbitCluster`]), and the [`rabbitmq::NodeLayout`] they share with
//!   the demo's long-lived node.
//! - [`redis_server`]: a private redis-server ([`RedisServer`]), a Redis
//!   Cluster ([`RedisCluster`]) and a Sentinel setup ([`RedisSentinels`]).
//! - [`tls`]: the PEM files of a server that serves TLS.
//!
//! It is a library of the workspace, not published: picket takes it as a
//! dev-dependency only, so nothing here reaches the worker's binary.

pub mod procs;
pub mod rabbitmq;
pub mod redis_server;
pub mod tls;

pub use procs::{free_port, unique};
pub use rabbitmq::{RabbitCluster, RabbitServer};
pub use redis_server::{RedisCluster, RedisSentinels, RedisServer};
