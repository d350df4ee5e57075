//! The tests' private redis-server, Redis Cluster and Sentinels: the
//! workspace's `testbed` crate, which `cargo xtask bench|demo` share
//! (testbed/src/redis_server/).

pub use testbed::redis_server::*;
