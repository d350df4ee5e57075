//! The tests' private RabbitMQ nodes and clusters: the workspace's `testbed`
//! crate, which `cargo xtask bench|demo` share (testbed/src/rabbitmq/).

pub use testbed::rabbitmq::*;
