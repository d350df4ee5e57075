//! `[http]`, `[log]` and `[worker]`: the worker process itself, its operations
//! endpoint, its log lines, its name in results and its runtime.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::parse::parse_duration;
use super::{invalid, ConfigError};

/// More runtime threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

/// Longest `worker.name`: it goes into results, logs and AMQP consumer tags.
const MAX_WORKER_NAME: usize = 200;

/// `[http]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: String,
}

/// `[log]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: String,
    level: String,
}

/// `[worker]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    name: String,
    shutdown_grace: String,
    #[serde(deserialize_with = "super::parse::whole")]
    threads: usize,
}

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable text on a terminal, JSON otherwise.
    Auto,
    /// Readable text.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Line format.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `picket=debug` (`RUST_LOG` wins when set).
    pub level: String,
}

/// `[worker]`
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Name written in each result's `worker` field; empty = host name and PID.
    pub name: String,
    /// How long in-flight probes may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// Threads of the async runtime; `None` = one per CPU core.
    pub threads: Option<usize>,
}

impl TryFrom<RawHttp> for HttpSettings {
    type Error = ConfigError;

    fn try_from(h: RawHttp) -> Result<Self, ConfigError> {
        let listen = h.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!("{:?} is not an address like 127.0.0.1:9464", h.listen),
            )
        })?;
        Ok(HttpSettings { listen })
    }
}

impl TryFrom<RawLog> for LogSettings {
    type Error = ConfigError;

    fn try_from(l: RawLog) -> Result<Self, ConfigError> {
        let format = match l.format.as_str() {
            "auto" => LogFormat::Auto,
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not \"auto\", \"text\" or \"json\""),
                ))
            }
        };
        // Read now: a filter the log cannot read fell back to `info` without a word.
        if let Some(e) = crate::log::filter_problem(&l.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", l.level)));
        }
        Ok(LogSettings {
            format,
            level: l.level,
        })
    }
}

impl TryFrom<RawWorker> for WorkerSettings {
    type Error = ConfigError;

    fn try_from(w: RawWorker) -> Result<Self, ConfigError> {
        super::parse::no_control("worker.name", &w.name)?;
        if w.name.len() > MAX_WORKER_NAME {
            return Err(invalid(
                "worker.name",
                format!("is {} bytes; at most {MAX_WORKER_NAME}", w.name.len()),
            ));
        }
        let shutdown_grace = parse_duration("worker.shutdown_grace", &w.shutdown_grace)?;
        let threads = match w.threads {
            0 => None,
            n if n > MAX_THREADS => {
                return Err(invalid(
                    "worker.threads",
                    format!("{n} is more than {MAX_THREADS}; 0 means one per CPU core"),
                ))
            }
            n => Some(n),
        };
        Ok(WorkerSettings {
            name: w.name,
            shutdown_grace,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};
    use super::*;

    /// `log.level = "bogus=="` was accepted, and the log fell back to `info` unsaid.
    #[test]
    fn a_log_level_the_filter_cannot_read_names_its_key() {
        assert!(err("[log]\nlevel = \"bogus==\"\n").contains("log.level"));
        let s = Settings::from_toml("[log]\nlevel = \"warn,picket=debug\"\n").expect("a filter");
        assert_eq!(s.log.level, "warn,picket=debug");
    }

    /// Hunt N: `warning`, `err`, `notice`, `critical`, an empty value: each was taken
    /// for the name of a module to log, so every warning and error went unlogged, and
    /// `picket config check` said the level was fine.
    #[test]
    fn a_level_the_log_does_not_know_is_refused_not_read_as_a_module() {
        for level in [
            "warning", "err", "notice", "critical", "fatal", "verbose", "", " ",
        ] {
            let e = err(&format!("[log]\nlevel = \"{level}\"\n"));
            assert!(e.contains("log.level"), "{level:?}: {e}");
        }
        for level in [
            "WARN",
            "debug",
            "warn,picket=debug",
            "picket::http=trace",
            "off",
        ] {
            let s = Settings::from_toml(&format!("[log]\nlevel = \"{level}\"\n"));
            assert!(s.is_ok(), "{level:?}: {:?}", s.err());
        }
    }

    #[test]
    fn runtime_threads_default_to_one_per_core_and_are_bounded() {
        assert_eq!(
            Settings::from_toml("").expect("defaults").worker.threads,
            None
        );
        let one = Settings::from_toml("[worker]\nthreads = 1\n").expect("one thread");
        assert_eq!(one.worker.threads, Some(1));
        assert!(err("[worker]\nthreads = 100000\n").contains("worker.threads"));
        assert!(err("[worker]\nthreads = -1\n").contains("threads"));
    }

    #[test]
    fn listen_address_and_log_format_name_their_keys() {
        assert!(err("[http]\nlisten = \"localhost\"\n").contains("http.listen"));
        assert!(err("[log]\nformat = \"xml\"\n").contains("log.format"));
        let s = Settings::from_toml("[log]\nformat = \"json\"\n").expect("json");
        assert_eq!(s.log.format, LogFormat::Json);
        assert!(err("[worker]\nshutdown_grace = \"later\"\n").contains("worker.shutdown_grace"));
    }
}
