//! Configuration: the raw, layered settings (built-in defaults, then a TOML file, then
//! `PICKET__SECTION__KEY` environment variables) and their validation into typed settings.
//!
//! Everything downstream takes the validated [`Settings`] (or only its own section), so
//! nothing after start-up re-parses a duration or a URL. Every validation error names the
//! key it is about, because an operator reading one line must know what to fix.
//!
//! Each section has its own file, holding its raw serde shape (`RawX`, exactly the TOML,
//! unknown keys refused), its validated type and the validation between them
//! (`TryFrom<RawX>`); this file loads the layers and assembles the sections in the
//! order of the file, so the first error reported is the first in the file:
//! [`amqp`], [`redis`], [`probe`], [`rate_limit`], [`dns`], [`egress`] (with
//! `[targets]`), [`tls`], [`process`] (`[http]`, `[log]`, `[worker]`). The value parsers
//! they share are in [`parse`]; where each value came from is in [`origin`].

use std::path::Path;

use serde::Deserialize;

pub(crate) mod amqp;
pub(crate) mod dns;
pub(crate) mod egress;
pub(crate) mod origin;
pub(crate) mod parse;
pub(crate) mod probe;
pub(crate) mod process;
pub(crate) mod rate_limit;
pub mod redis;
pub(crate) mod tls;

pub use amqp::{AmqpSettings, QueueType};
pub(crate) use dns::DnsSettings;
pub(crate) use egress::{ByName, EgressSettings, TargetSettings};
pub(crate) use parse::redact_url;
pub use parse::ClientIdentity;
pub(crate) use probe::{ProbeSettings, RuntimeShape};
pub(crate) use process::{HttpSettings, LogFormat, LogSettings, WorkerSettings};
pub(crate) use rate_limit::{LimitScope, OverrideMatch, Rate, RateLimitSettings};
pub use redis::RedisSettings;
pub(crate) use tls::{TlsOnError, TlsSettings};

/// The default configuration, compiled in so that a file only has to name what it changes.
pub(crate) const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The file read without `--config` (CONTRACT: "built-in defaults, then
/// `config/default.toml` (or the `--config` file), then environment variables"),
/// relative to the working directory.
pub(crate) const DEFAULT_FILE: &str = "config/default.toml";

/// The configuration file of a command: the one named (`--config`, `PICKET_CONFIG`), else
/// [`DEFAULT_FILE`] when the working directory has one. A deployment that edits the
/// shipped file in place, or a harness that writes one beside the binary's working
/// directory, gets what it wrote; with neither, the built-in defaults (that same file's
/// text as shipped) stand alone.
pub(crate) fn file_to_read(named: Option<&Path>) -> Option<std::path::PathBuf> {
    match named {
        Some(path) => Some(path.to_path_buf()),
        None => Some(Path::new(DEFAULT_FILE))
            .filter(|p| p.is_file())
            .map(Path::to_path_buf),
    }
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, a TOML syntax error, an unknown key or a value of the wrong type.
    #[error("config: {0}")]
    Load(String),
    /// A key whose value is out of range or unparsable.
    #[error("config: {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `probe.timeout`.
        key: String,
        /// What is wrong with its value.
        message: String,
    },
}

/// The error for `key`, whose value is wrong as `message` says.
fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The whole file exactly as written (over the defaults), unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    amqp: amqp::RawAmqp,
    redis: redis::RawRedis,
    probe: probe::RawProbe,
    rate_limit: rate_limit::RawRateLimit,
    dns: dns::RawDns,
    targets: egress::RawTargets,
    tls: tls::RawTls,
    egress: Vec<egress::RawEgress>,
    http: process::RawHttp,
    log: process::RawLog,
    worker: process::RawWorker,
}

/// The whole validated configuration; each adapter takes only its own section.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RabbitMQ connection and topology.
    pub amqp: AmqpSettings,
    /// Redis connection and verdict cache.
    pub redis: RedisSettings,
    /// How a site is probed and judged.
    pub probe: ProbeSettings,
    /// Per-IP politeness limits.
    pub rate_limit: RateLimitSettings,
    /// Name resolution.
    pub dns: DnsSettings,
    /// Which addresses may be probed at all.
    pub targets: TargetSettings,
    /// Certificate verification.
    pub tls: TlsSettings,
    /// The ways out to the internet, at least one.
    pub egress: Vec<EgressSettings>,
    /// The operations endpoint.
    pub http: HttpSettings,
    /// Logging.
    pub log: LogSettings,
    /// The worker process itself.
    pub worker: WorkerSettings,
    /// Keys that old configuration files may still set but that do nothing any more;
    /// the worker warns about each at start.
    pub ignored_keys: Vec<String>,
}

impl Settings {
    /// Loads defaults, then `file` (if given), then the environment, and validates.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, env)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub(crate) fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            readable_text(path)?;
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let env_map: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("PICKET__"))
            .collect();
        // Before deserializing: its message would not say which layer holds the key.
        origin::check_unknown(file, &env_map)?;
        builder = builder.add_source(
            Environment::with_prefix("PICKET")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("dns.nameservers")
                .with_list_parse_key("probe.canaries")
                .with_list_parse_key("redis.nodes")
                .with_list_parse_key("redis.sentinels")
                .with_list_parse_key("amqp.urls")
                .source(Some(env_map)),
        );
        let raw: RawSettings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::validate(raw)
    }

    /// Parses a TOML text (over the defaults) without the environment; for tests and tools.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        use config::{Config, File, FileFormat};
        let raw: RawSettings = Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(text, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::validate(raw)
    }
    /// Each section validated in the file's order (a struct expression evaluates its
    /// fields as written), so the first error is the first in the file.
    fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
        let ignored_keys = raw.redis.ignored_keys();
        Ok(Settings {
            amqp: raw.amqp.try_into()?,
            redis: raw.redis.try_into()?,
            probe: raw.probe.try_into()?,
            rate_limit: raw.rate_limit.try_into()?,
            dns: raw.dns.try_into()?,
            targets: raw.targets.into(),
            tls: raw.tls.try_into()?,
            egress: egress::build(raw.egress)?,
            http: raw.http.try_into()?,
            log: raw.log.try_into()?,
            worker: raw.worker.try_into()?,
            ignored_keys,
        })
    }
}

/// The message of the error `toml` (over the defaults) is refused with.
/// Checks that the configuration file at `path` can be read as text, saying why not
/// and where: a directory was called "no such file", an unreadable file a bare
/// "Permission denied", and bytes that are not UTF-8 were replaced without a word.
fn readable_text(path: &Path) -> Result<(), ConfigError> {
    let at = |why: String| ConfigError::Load(format!("{}: {why}", path.display()));
    if path.is_dir() {
        return Err(at("is a directory, not a configuration file".into()));
    }
    if !path.exists() {
        return Err(at("no such file".into()));
    }
    // A pipe or a device would be read to its end, or for ever.
    if !path.is_file() {
        return Err(at("not a regular file".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| at(format!("cannot read: {e}")))?;
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(at(format!("not UTF-8 text (at byte {})", e.valid_up_to())));
    }
    Ok(())
}

#[cfg(test)]
fn err(toml: &str) -> String {
    Settings::from_toml(toml)
        .expect_err("should fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Values no operator means but a typo makes: a clear error (exit 2), never a panic,
    /// and nothing built from settings that pass panics either.
    /// A directory, an unreadable file and one that is not UTF-8 were told as "no such
    /// file", as a bare "Permission denied" without the path, or read with the bad bytes
    /// replaced (a worker name of "a\u{fffd}b") and called valid.
    #[test]
    fn a_config_file_that_cannot_be_read_says_why_and_where() {
        let dir = tempfile::tempdir().expect("temp dir");
        let load = |p: &std::path::Path| {
            Settings::load_with_env(Some(p), Vec::new())
                .expect_err("refused")
                .to_string()
        };
        let e = load(dir.path());
        assert!(
            e.contains("directory") && e.contains(&dir.path().display().to_string()),
            "{e}"
        );
        let e = load(std::path::Path::new("/dev/null"));
        assert!(e.contains("not a regular file"), "{e}");
        let bad = dir.path().join("latin1.toml");
        std::fs::write(&bad, b"[worker]\nname = \"a\xe9b\"\n").expect("write");
        let e = load(&bad);
        assert!(e.contains("UTF-8") && e.contains("latin1.toml"), "{e}");
    }

    #[test]
    fn exotic_values_are_refused_or_work_never_panic() {
        let long = "q".repeat(300);
        let refused = [
            "[rate_limit.per_ip]\nrate = 1e-300\n".to_string(),
            "[rate_limit.per_ip]\nrate = 1e300\n".into(),
            "[rate_limit.per_ip]\nrate = nan\n".into(),
            "[rate_limit.per_ip]\nburst = 4294967295\n".into(),
            "[rate_limit.per_ip]\nmax_inflight = 4294967295\n".into(),
            "[probe]\ntimeout = \"100000000d\"\n".into(),
            "[probe]\nretry_delay = \"100000000d\"\n".into(),
            "[rate_limit]\nmax_wait = \"100000000d\"\n".into(),
            "[redis]\nverdict_ttl = \"100000000d\"\n".into(),
            format!("[amqp]\njobs_queue = \"{long}\"\n"),
            format!("[amqp]\nresults_exchange = \"{long}\"\n"),
            format!("[worker]\nname = \"{long}\"\n"),
            "[probe]\nconcurrency = 4294967295\n".into(),
        ];
        for text in &refused {
            let got = std::panic::catch_unwind(|| {
                Settings::from_toml(text).map(|s| crate::limit::LocalLimiter::new(&s.rate_limit))
            });
            match got {
                Err(_) => panic!("panicked on {text}"),
                Ok(Ok(_)) => panic!("accepted {text}"),
                Ok(Err(e)) => assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let s = Settings::from_toml("").expect("defaults");
        assert_eq!(s.amqp.jobs_queue, "picket.jobs");
        assert_eq!(s.amqp.results_exchange, "picket.results");
        assert_eq!(s.amqp.results_queue, "picket.results");
        assert_eq!(s.amqp.dead_letter_queue, "picket.jobs.dead");
        assert_eq!(s.amqp.prefetch, 256);
        assert_eq!(s.probe.concurrency, 512);
        assert_eq!(s.probe.timeout, Duration::from_secs(30));
        assert_eq!(s.probe.attempts, 2);
        assert_eq!(s.probe.min_body_bytes, 64);
        // Not the contract's example (2.0 / 2 / 4): safe against the defences' defaults
        // (docs/POLITENESS.md).
        assert_eq!(s.rate_limit.per_ip.rate, 0.8);
        assert_eq!(s.rate_limit.per_ip.burst, 1);
        assert_eq!(s.rate_limit.per_ip.max_inflight, 2);
        assert_eq!(s.rate_limit.scope, LimitScope::Target);
        assert_eq!(s.redis.verdict_ttl, Duration::from_secs(3600));
        assert_eq!(s.redis.state_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(s.amqp.changes_exchange, "picket.changes");
        assert_eq!(s.egress.len(), 1);
        assert_eq!(s.egress[0].name, "direct");
        assert!(!s.targets.allow_private);
        assert_eq!(s.tls.on_error, TlsOnError::Degraded);
    }

    #[test]
    fn the_first_error_reported_is_the_first_section_in_the_file() {
        let e = err("[amqp]\nprefetch = 0\n[probe]\nattempts = 0\n[worker]\nthreads = 100000\n");
        assert!(e.contains("amqp.prefetch"), "{e}");
        let e = err("[probe]\nattempts = 0\n[worker]\nthreads = 100000\n");
        assert!(e.contains("probe.attempts"), "{e}");
        let e = err("[tls]\non_error = \"up\"\n[[egress]]\nname = \"\"\n");
        assert!(e.contains("tls.on_error"), "{e}");
    }

    /// The config crate rounds a decimal into a whole-number key: `attempts = 1.5` ran
    /// with 2 attempts and `config check` called it valid.
    #[test]
    fn a_decimal_in_a_whole_number_key_is_refused_naming_it() {
        for (toml, key) in [
            ("[probe]\nattempts = 1.5\n", "probe.attempts"),
            ("[amqp]\nprefetch = 10.5\n", "amqp.prefetch"),
            (
                "[rate_limit.per_ip]\nburst = 0.5\n",
                "rate_limit.per_ip.burst",
            ),
            ("[tls]\nexpiry_warn_days = 13.9\n", "tls.expiry_warn_days"),
            ("[worker]\nthreads = 1.5\n", "worker.threads"),
        ] {
            let e = err(toml);
            assert!(e.contains(key) && e.contains("whole number"), "{toml}: {e}");
        }
        let env = vec![(
            "PICKET__PROBE__MAX_REDIRECTS".to_string(),
            "2.5".to_string(),
        )];
        let e = Settings::load_with_env(None, env)
            .expect_err("decimal")
            .to_string();
        assert!(
            e.contains("probe.max_redirects") && e.contains("whole number"),
            "{e}"
        );
        // A whole number written as a decimal means that number.
        let s = Settings::from_toml("[probe]\nattempts = 3.0\n").expect("3.0 is 3");
        assert_eq!(s.probe.attempts, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[probe]\ntimout = \"3s\"\n");
        assert!(e.contains("timout"), "{e}");
    }

    #[test]
    fn unknown_section_is_named() {
        let e = err("[probes]\ntimeout = \"3s\"\n");
        assert!(e.contains("probes"), "{e}");
    }

    #[test]
    fn unparsable_urls_are_refused() {
        assert!(err("[amqp]\nurl = \"not a url\"\n").contains("amqp.url"));
        assert!(err("[redis]\nurl = \"http://x\"\n").contains("redis.url"));
        assert!(err("[probe]\ncanaries = [\"ftp://x/\"]\n").contains("probe.canaries[0]"));
        assert!(
            err("[[egress]]\nname = \"p\"\nproxy = \"gopher://x\"\n").contains("egress[0].proxy")
        );
    }

    #[test]
    fn environment_overrides_file_and_splits_lists() {
        let env = vec![
            (
                "PICKET__RATE_LIMIT__PER_IP__RATE".to_string(),
                "5".to_string(),
            ),
            (
                "PICKET__DNS__NAMESERVERS".to_string(),
                "127.0.0.1:5353,127.0.0.1:5354".to_string(),
            ),
            ("PICKET__PROBE__TIMEOUT".to_string(), "7s".to_string()),
        ];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert_eq!(s.rate_limit.per_ip.rate, 5.0);
        assert_eq!(s.dns.nameservers.len(), 2);
        assert_eq!(s.dns.nameservers[1].port(), 5354);
        assert_eq!(s.probe.timeout, Duration::from_secs(7));
    }

    /// A trailing comma (or an empty value) in an environment list was no entry for
    /// `dns.nameservers` but refused as `"" is not a URL` for the four other lists.
    #[test]
    fn a_blank_entry_in_an_environment_list_is_no_entry_in_every_list() {
        let env = |pairs: &[(&str, &str)]| {
            let env = pairs
                .iter()
                .map(|(k, v)| (format!("PICKET__{k}"), v.to_string()));
            Settings::load_with_env(None, env.collect::<Vec<_>>())
        };
        let s = env(&[
            ("DNS__NAMESERVERS", "127.0.0.1:5353,"),
            (
                "AMQP__URLS",
                "amqp://127.0.0.1:5672/,amqp://127.0.0.2:5672/,",
            ),
            ("PROBE__CANARIES", ",http://127.0.0.1/"),
        ])
        .expect("trailing commas");
        assert_eq!(s.dns.nameservers.len(), 1);
        assert_eq!(s.amqp.urls.len(), 2);
        assert_eq!(s.probe.canaries.len(), 1);
        let s = env(&[("REDIS__SENTINELS", "redis://127.0.0.1:26379/, ")]).expect("sentinels");
        assert_eq!(s.redis.sentinels.len(), 1);
        let s = env(&[
            ("REDIS__CLUSTER", "true"),
            ("REDIS__NODES", "redis://127.0.0.1:7000/,"),
        ])
        .expect("nodes");
        assert_eq!(s.redis.nodes.len(), 1);
        let s = env(&[("AMQP__URLS", "")]).expect("an empty list");
        assert!(s.amqp.urls.is_empty());
    }

    #[test]
    fn bad_environment_value_names_the_key() {
        let env = vec![("PICKET__PROBE__RETRY_DELAY".to_string(), "soon".to_string())];
        let e = Settings::load_with_env(None, env)
            .expect_err("bad")
            .to_string();
        assert!(e.contains("probe.retry_delay"), "{e}");
    }
}
