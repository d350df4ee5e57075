//! picket tells, at scale and without false alarms, whether websites are up.
//!
//! # Layout
//! - [`config`]: layered, validated settings: `config/mod.rs` loads the layers and
//!   assembles the sections, each in its own file with its raw shape and its validation
//!   ([`config::amqp`], [`config::redis`], [`config::probe`], [`config::rate_limit`],
//!   [`config::dns`], [`config::tls`], [`config::egress`] with `[targets]`,
//!   [`config::process`] for `[http]`, `[log]`, `[worker]`); shared value parsers in
//!   [`config::parse`]; where each value came from in [`config::origin`].
//! - [`job`]: wire types, the job in and the [`job::Report`] out, with its
//!   [`job::Verdict`] and [`job::Reason`] code (`job/verdict.rs`); a decoded job's
//!   checks in `job/validate.rs`.
//! - [`probe`]: the pure core: plan, observation, judgement, address policy, charsets.
//! - [`engine`]: job → report with attempts and the cache, over the [`engine::Prober`] seam;
//!   within it, `our_side` tells our own failure from the site's (egress health, the
//!   network watch, canaries) and `report` builds every result message.
//! - [`http`]: the HTTP prober (resolve, pin, fetch, redirects), one room per hop step
//!   (`connect`, `redirect`, `body`, `client`, `tls`, and `tunnel` for HTTP proxies);
//!   [`dns`]: name resolution; `reread`: the host files and TLS roots, read again when
//!   they change.
//! - [`limit`]: per-IP politeness; [`state`]: each monitored key's state across checks
//!   (memory, Redis); [`key`]: what names a monitored check.
//! - [`redis_pool`]: connections to a single Redis or a Redis Cluster.
//! - [`worker`]: one message → disposition; [`amqp`]: the broker adapter.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`; [`metric`]: metric names.
//! - [`app`]: wiring of the worker and the engine.
//! - [`cli`]: the commands as a person types them: arguments, tables or JSON lines,
//!   progress, `config show`, completions and the man page; exit codes chosen by type
//!   in [`cli::exit`].
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
mod reread;
pub mod state;
pub mod worker;
