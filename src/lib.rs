//! picket tells, at scale and without false alarms, whether websites are up.
//!
//! # Layout
//! - [`config`]: layered, validated settings (one struct per section).
//! - [`job`]: wire types, the job in and the [`job::Report`] out.
//! - [`probe`]: the pure core: plan, observation, judgement, address policy, charsets.
//! - [`engine`]: job → report with attempts and the cache, over the [`engine::Prober`] seam.
//! - [`http`]: the HTTP prober (resolve, pin, fetch, redirects), one room per hop step
//!   (`connect`, `redirect`, `body`, `client`, `tls`); [`dns`]: name resolution.
//! - [`limit`]: per-IP politeness; [`state`]: each monitored key's state across checks
//!   (memory, Redis); [`key`]: what names a monitored check.
//! - [`redis_pool`]: connections to a single Redis or a Redis Cluster.
//! - [`worker`]: one message → disposition; [`amqp`]: the broker adapter.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`; [`metric`]: metric names.
//! - [`app`]: wiring of the worker and the engine.
//! - [`cli`]: the commands as a person types them: arguments, tables or JSON lines,
//!   progress, exit codes, `config show`, completions and the man page.
//! - [`log`]: log lines (text, or JSON with the worker's name).

pub mod admin;
pub mod amqp;
pub mod app;
pub mod cli;
pub mod config;
pub mod dns;
pub mod egress;
pub mod engine;
pub mod http;
pub mod job;
pub mod key;
pub mod limit;
pub mod log;
pub mod metric;
pub mod probe;
pub mod redis_pool;
pub mod state;
pub mod worker;
