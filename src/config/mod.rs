//! Configuration: the raw, layered settings (built-in defaults, then a TOML file, then
//! `PICKET__SECTION__KEY` environment variables) and their validation into typed settings.
//!
//! Everything downstream takes the validated [`Settings`] (or only its own section), so
//! nothing after start-up re-parses a duration or a URL. Every validation error names the
//! key it is about, because an operator reading one line must know what to fix.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub mod origin;

/// The default configuration, compiled in so that a file only has to name what it changes.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// More runtime threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw settings: exactly the TOML shape, unknown keys refused.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    amqp: RawAmqp,
    redis: RawRedis,
    probe: RawProbe,
    rate_limit: RawRateLimit,
    dns: RawDns,
    targets: RawTargets,
    tls: RawTls,
    egress: Vec<RawEgress>,
    http: RawHttp,
    log: RawLog,
    worker: RawWorker,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmqp {
    url: String,
    urls: Vec<String>,
    jobs_queue: String,
    results_exchange: String,
    results_queue: String,
    changes_exchange: String,
    dead_letter_queue: String,
    delay_queue: String,
    prefetch: u32,
    queue_type: String,
    max_message_bytes: u64,
    connect_timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    cluster: bool,
    nodes: Vec<String>,
    sentinels: Vec<String>,
    sentinel_master: String,
    key_prefix: String,
    verdict_ttl: String,
    state_ttl: String,
    /// No longer used (see docs/DESIGN.md); still accepted so that old files load.
    #[serde(default)]
    pool_size: Option<u32>,
    timeout: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    concurrency: u32,
    connect_timeout: String,
    timeout: String,
    max_body_bytes: u64,
    min_body_bytes: u64,
    max_redirects: u32,
    attempts: u32,
    retry_delay: String,
    user_agent: String,
    accept: String,
    accept_language: String,
    canaries: Vec<String>,
    soft_failures: String,
    egress_fail_targets: u32,
    egress_rest: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max_wait: String,
    fallback_share: f64,
    backoff: String,
    per_ip: RawPerIp,
    #[serde(rename = "override", default)]
    overrides: Vec<RawOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerIp {
    rate: f64,
    burst: u32,
    max_inflight: u32,
    scope: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    host_suffix: Option<String>,
    rate: f64,
    burst: u32,
    max_inflight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    nameservers: Vec<String>,
    #[serde(rename = "static")]
    static_hosts: BTreeMap<String, String>,
    timeout: String,
    max_concurrent: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    allow_private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    extra_ca_file: String,
    on_error: String,
    expiry_warn_days: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    name: String,
    #[serde(default)]
    proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: String,
    level: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: String,
    shutdown_grace: String,
    threads: usize,
}

// ---------------------------------------------------------------------------------------
// Validated settings.

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

/// Durable or replicated queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// A classic durable queue.
    Classic,
    /// A replicated quorum queue, the durable choice for clusters.
    Quorum,
}

/// `[amqp]`
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Broker URL (may hold credentials: never log it as is, see [`redact_url`]).
    pub url: String,
    /// The nodes of a cluster (`amqp.urls`); empty = `url` alone. See [`Self::nodes`].
    pub urls: Vec<String>,
    /// Where jobs arrive.
    pub jobs_queue: String,
    /// Topic exchange results are published to, routing key = verdict.
    pub results_exchange: String,
    /// Queue bound to the results exchange with `#`.
    pub results_queue: String,
    /// Topic exchange that gets the results that change their key's verdict, routing
    /// key `PREVIOUS.VERDICT`.
    pub changes_exchange: String,
    /// Where messages that are not jobs go, with the reason in a header.
    pub dead_letter_queue: String,
    /// Where deferred jobs wait (per-message TTL) before returning to the jobs queue.
    pub delay_queue: String,
    /// Unacknowledged deliveries the broker may push ahead.
    pub prefetch: u16,
    /// Queue type of the jobs and dead-letter queues.
    pub queue_type: QueueType,
    /// A job message larger than this is dead-lettered unread.
    pub max_message_bytes: usize,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl AmqpSettings {
    /// The broker nodes to connect to, at least one: `amqp.urls` when given, else `url`.
    pub fn nodes(&self) -> Vec<String> {
        if self.urls.is_empty() {
            vec![self.url.clone()]
        } else {
            self.urls.clone()
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Redis URL (may hold a password).
    pub url: String,
    /// Whether Redis is a Redis Cluster (picket then speaks the cluster protocol).
    pub cluster: bool,
    /// The cluster's seed nodes when `cluster`: `redis.nodes`, or `url` alone when
    /// none were given. Empty for a single Redis.
    pub nodes: Vec<String>,
    /// Redis Sentinels watching the primary (`redis.sentinels`); when not empty, the
    /// primary is asked of them and `url` gives only the database and credentials.
    pub sentinels: Vec<String>,
    /// The name the Sentinels know the primary by (`redis.sentinel_master`).
    pub sentinel_master: String,
    /// Prefix of every key picket writes.
    pub key_prefix: String,
    /// How long a key's latest report may be served for `max_age_s`.
    pub verdict_ttl: Duration,
    /// How long a key's state is kept after its last check.
    pub state_ttl: Duration,
    /// How long one Redis call may take before the worker goes on without it.
    pub timeout: Duration,
}

/// `[probe]`
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Probes in flight per worker process.
    pub concurrency: usize,
    /// Time allowed to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, redirects and body included.
    pub timeout: Duration,
    /// Read at most this much of a decoded body.
    pub max_body_bytes: usize,
    /// A 2xx/3xx answer with a smaller body is not `up`.
    pub min_body_bytes: usize,
    /// Redirect hops followed before `too_many_redirects`.
    pub max_redirects: u32,
    /// Probes made before a failure is called `down`.
    pub attempts: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// The User-Agent sent, a current desktop browser's.
    pub user_agent: String,
    /// The Accept header sent.
    pub accept: String,
    /// The Accept-Language header sent.
    pub accept_language: String,
    /// Known-good URLs re-checked when failures look like our own problem.
    pub canaries: Vec<Url>,
    /// Verdict for a page that matches a built-in block, parked, suspended or
    /// default-server pattern; `None` = patterns off.
    pub soft_failures: Option<crate::job::Verdict>,
    /// When an egress failing for many sites is rested.
    pub egress_health: crate::egress::HealthSettings,
}

/// How much one IP may take: a rate, a burst and an in-flight cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second.
    pub rate: f64,
    /// Requests allowed back to back before the rate applies.
    pub burst: u32,
    /// Requests in flight at most.
    pub max_inflight: u32,
}

/// What a limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The resolved target IP alone (all egresses share its budget).
    Target,
    /// Egress and target IP (for proxies that each have their own source address).
    EgressAndTarget,
}

/// Which requests an override applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideMatch {
    /// Resolved addresses in this network.
    Cidr(ipnet::IpNet),
    /// Host names ending with this suffix (lower case, e.g. `.gov.cn`).
    HostSuffix(String),
}

/// One `[[rate_limit.override]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RateOverride {
    /// What it applies to.
    pub matches: OverrideMatch,
    /// Its own limits.
    pub rate: Rate,
}

/// `[rate_limit]`
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// The default per-IP limits (`[rate_limit.per_ip]`).
    pub per_ip: Rate,
    /// What a limit is keyed by.
    pub scope: LimitScope,
    /// A job that would wait longer than this for its IP is deferred back to the broker.
    pub max_wait: Duration,
    /// Share of each rate one worker uses on its own while Redis is unavailable.
    pub fallback_share: f64,
    /// How long an IP that refused us is left alone the first time; doubled on every
    /// refusal after a hold, up to 10 minutes (see `limit::standing`).
    pub backoff: Duration,
    /// Overrides, first match wins (CIDR entries are checked before host suffixes).
    pub overrides: Vec<RateOverride>,
}

/// `[dns]`
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Nameservers to ask; empty means the system's resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Fixed answers, like `curl --resolve`, lower-cased host → addresses (a value may
    /// list several, comma-separated, e.g. an IPv4 and an IPv6 address).
    pub static_hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Time allowed for one lookup.
    pub timeout: Duration,
    /// Lookups in flight at once (answers are cached per TTL, so this bounds misses).
    pub max_concurrent: usize,
}

/// `[targets]`
#[derive(Debug, Clone, Copy)]
pub struct TargetSettings {
    /// Allow loopback, private, link-local and metadata addresses.
    pub allow_private: bool,
}

/// What a certificate problem makes of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOnError {
    /// Reachable, but not right.
    Degraded,
    /// Not available.
    Down,
}

/// `[tls]`
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file trusted in addition to the bundled and system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Verdict for a certificate problem.
    pub on_error: TlsOnError,
    /// A certificate expiring sooner than this many days makes the site `degraded`.
    pub expiry_warn_days: i64,
}

/// One `[[egress]]` entry.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// Name reported in results.
    pub name: String,
    /// `http://host:port`, `socks5://host:port`, or none for a direct connection.
    pub proxy: Option<Url>,
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

/// Parses `"1500ms"`, `"30s"`, `"10m"`.
///
/// # Errors
/// A message saying what the value should look like.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like \"1500ms\", \"30s\" or \"10m\" ({e})"),
        )
    })?;
    // Past a year a duration is a typo, and adding it to a clock could overflow.
    if d > MAX_DURATION {
        return Err(invalid(key, format!("{value:?} is longer than a year")));
    }
    Ok(d)
}

/// Longest duration any key takes.
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Bounds of a per-IP rate (requests per second): one a day to far beyond any server.
const RATE_RANGE: (f64, f64) = (1.0 / 86_400.0, 100_000.0);

/// Most requests a burst or an in-flight cap, and probes a worker, may allow.
const MAX_COUNT: u32 = 100_000;

/// Longest `worker.name`: it goes into results, logs and AMQP consumer tags.
const MAX_WORKER_NAME: usize = 200;

/// Longest AMQP name (queues, exchanges, consumer tags): the protocol's short string.
const MAX_AMQP_NAME: usize = 255;

fn positive_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

fn nonempty(key: &str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if value.len() > MAX_AMQP_NAME {
        return Err(invalid(
            key,
            format!(
                "is {} bytes; AMQP names are at most {MAX_AMQP_NAME}",
                value.len()
            ),
        ));
    }
    Ok(value.to_string())
}

fn url_with_scheme(key: &str, value: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| invalid(key, format!("{:?} is not a URL ({e})", redact_url(value))))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            key,
            format!(
                "scheme {:?} is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, "URL has no host"));
    }
    Ok(url)
}

/// Replaces the password of a URL (and any userinfo) so that it can be logged.
pub fn redact_url(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => match value.rfind('@') {
            Some(at) => format!("***{}", &value[at..]),
            None => value.to_string(),
        },
    }
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
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        use config::{Config, Environment, File, FileFormat};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "{}: no such file",
                    path.display()
                )));
            }
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

    fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
        let a = raw.amqp;
        url_with_scheme("amqp.url", &a.url, &["amqp", "amqps"])?;
        if a.prefetch == 0 || a.prefetch > u32::from(u16::MAX) {
            return Err(invalid("amqp.prefetch", "must be between 1 and 65535"));
        }
        let queue_type = match a.queue_type.as_str() {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            other => {
                return Err(invalid(
                    "amqp.queue_type",
                    format!("{other:?} is not \"classic\" or \"quorum\""),
                ))
            }
        };
        if a.max_message_bytes < 1024 {
            return Err(invalid("amqp.max_message_bytes", "must be at least 1024"));
        }
        for (i, node) in a.urls.iter().enumerate() {
            url_with_scheme(&format!("amqp.urls[{i}]"), node, &["amqp", "amqps"])?;
        }
        let amqp = AmqpSettings {
            url: a.url,
            urls: a.urls,
            jobs_queue: nonempty("amqp.jobs_queue", &a.jobs_queue)?,
            results_exchange: nonempty("amqp.results_exchange", &a.results_exchange)?,
            results_queue: nonempty("amqp.results_queue", &a.results_queue)?,
            changes_exchange: nonempty("amqp.changes_exchange", &a.changes_exchange)?,
            dead_letter_queue: nonempty("amqp.dead_letter_queue", &a.dead_letter_queue)?,
            delay_queue: nonempty("amqp.delay_queue", &a.delay_queue)?,
            prefetch: a.prefetch as u16,
            queue_type,
            max_message_bytes: a.max_message_bytes as usize,
            connect_timeout: positive_duration("amqp.connect_timeout", &a.connect_timeout)?,
        };

        let r = raw.redis;
        url_with_scheme("redis.url", &r.url, &["redis", "rediss"])?;
        let mut ignored_keys = Vec::new();
        if r.pool_size.is_some() {
            ignored_keys.push("redis.pool_size".to_string());
        }
        for (i, node) in r.nodes.iter().enumerate() {
            url_with_scheme(&format!("redis.nodes[{i}]"), node, &["redis", "rediss"])?;
        }
        if !r.cluster && !r.nodes.is_empty() {
            return Err(invalid(
                "redis.nodes",
                "nodes are only for a cluster: set redis.cluster = true",
            ));
        }
        for (i, node) in r.sentinels.iter().enumerate() {
            url_with_scheme(&format!("redis.sentinels[{i}]"), node, &["redis", "rediss"])?;
        }
        if r.cluster && !r.sentinels.is_empty() {
            return Err(invalid(
                "redis.sentinels",
                "Sentinels watch a single primary, not a Redis Cluster: set redis.cluster = false or drop the sentinels",
            ));
        }
        let sentinel_master = if r.sentinels.is_empty() {
            r.sentinel_master
        } else {
            nonempty("redis.sentinel_master", &r.sentinel_master)?
        };
        let nodes = match (r.cluster, r.nodes.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => vec![r.url.clone()],
            (true, false) => r.nodes,
        };
        let redis = RedisSettings {
            url: r.url,
            cluster: r.cluster,
            nodes,
            sentinels: r.sentinels,
            sentinel_master,
            key_prefix: r.key_prefix,
            verdict_ttl: positive_duration("redis.verdict_ttl", &r.verdict_ttl)?,
            state_ttl: positive_duration("redis.state_ttl", &r.state_ttl)?,
            timeout: positive_duration("redis.timeout", &r.timeout)?,
        };

        let p = raw.probe;
        if p.concurrency == 0 || p.concurrency > MAX_COUNT {
            return Err(invalid(
                "probe.concurrency",
                format!("must be from 1 to {MAX_COUNT}"),
            ));
        }
        if p.attempts == 0 || p.attempts > 10 {
            return Err(invalid("probe.attempts", "must be between 1 and 10"));
        }
        if p.max_body_bytes == 0 {
            return Err(invalid("probe.max_body_bytes", "must be greater than zero"));
        }
        if p.max_redirects > 50 {
            return Err(invalid("probe.max_redirects", "must be at most 50"));
        }
        let canaries = p
            .canaries
            .iter()
            .enumerate()
            .map(|(i, c)| url_with_scheme(&format!("probe.canaries[{i}]"), c, &["http", "https"]))
            .collect::<Result<Vec<_>, _>>()?;
        let probe = ProbeSettings {
            concurrency: p.concurrency as usize,
            connect_timeout: positive_duration("probe.connect_timeout", &p.connect_timeout)?,
            timeout: positive_duration("probe.timeout", &p.timeout)?,
            max_body_bytes: p.max_body_bytes as usize,
            min_body_bytes: p.min_body_bytes as usize,
            max_redirects: p.max_redirects,
            attempts: p.attempts,
            retry_delay: parse_duration("probe.retry_delay", &p.retry_delay)?,
            user_agent: nonempty("probe.user_agent", &p.user_agent)?,
            accept: nonempty("probe.accept", &p.accept)?,
            accept_language: p.accept_language,
            canaries,
            soft_failures: match p.soft_failures.as_str() {
                "off" => None,
                "degraded" => Some(crate::job::Verdict::Degraded),
                "down" => Some(crate::job::Verdict::Down),
                other => {
                    return Err(invalid(
                        "probe.soft_failures",
                        format!("{other:?} is not \"off\", \"degraded\" or \"down\""),
                    ))
                }
            },
            egress_health: crate::egress::HealthSettings {
                fail_targets: p.egress_fail_targets as usize,
                rest: positive_duration("probe.egress_rest", &p.egress_rest)?,
            },
        };

        let rl = raw.rate_limit;
        let l = rl.per_ip;
        let per_ip = rate("rate_limit.per_ip", l.rate, l.burst, l.max_inflight)?;
        let scope = match l.scope.as_str() {
            "target" => LimitScope::Target,
            "egress_and_target" => LimitScope::EgressAndTarget,
            other => {
                return Err(invalid(
                    "rate_limit.per_ip.scope",
                    format!("{other:?} is not \"target\" or \"egress_and_target\""),
                ))
            }
        };
        if !(rl.fallback_share.is_finite() && rl.fallback_share > 0.0 && rl.fallback_share <= 1.0) {
            return Err(invalid("rate_limit.fallback_share", "must be in (0, 1]"));
        }
        let mut overrides = Vec::new();
        for (i, o) in rl.overrides.into_iter().enumerate() {
            let key = format!("rate_limit.override[{i}]");
            let matches = match (o.cidr.as_deref(), o.host_suffix.as_deref()) {
                (Some(c), None) => OverrideMatch::Cidr(c.trim().parse().map_err(|_| {
                    invalid(
                        &format!("{key}.cidr"),
                        format!("{c:?} is not a network like 203.0.113.0/24"),
                    )
                })?),
                (None, Some(h)) if !h.trim().is_empty() => {
                    OverrideMatch::HostSuffix(h.trim().trim_end_matches('.').to_ascii_lowercase())
                }
                _ => return Err(invalid(&key, "needs exactly one of cidr or host_suffix")),
            };
            overrides.push(RateOverride {
                matches,
                rate: rate(&key, o.rate, o.burst, o.max_inflight)?,
            });
        }
        let rate_limit = RateLimitSettings {
            per_ip,
            scope,
            max_wait: parse_duration("rate_limit.max_wait", &rl.max_wait)?,
            fallback_share: rl.fallback_share,
            backoff: positive_duration("rate_limit.backoff", &rl.backoff)?,
            overrides,
        };

        let d = raw.dns;
        let nameservers = d
            .nameservers
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_nameserver(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut static_hosts = BTreeMap::new();
        for (host, ip) in d.static_hosts {
            let key = format!("dns.static.{host}");
            let ips = ip
                .split(',')
                .map(|one| {
                    one.trim().parse::<IpAddr>().map_err(|_| {
                        invalid(
                            &key,
                            format!("{ip:?} is not an IP address (or a comma-separated list)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            static_hosts.insert(host.to_ascii_lowercase(), ips);
        }
        let dns = DnsSettings {
            nameservers,
            static_hosts,
            timeout: positive_duration("dns.timeout", &d.timeout)?,
            max_concurrent: match d.max_concurrent {
                0 => return Err(invalid("dns.max_concurrent", "must be at least 1")),
                n => n as usize,
            },
        };

        let t = raw.tls;
        let on_error = match t.on_error.as_str() {
            "degraded" => TlsOnError::Degraded,
            "down" => TlsOnError::Down,
            other => {
                return Err(invalid(
                    "tls.on_error",
                    format!("{other:?} is not \"degraded\" or \"down\""),
                ))
            }
        };
        let extra_ca_file = if t.extra_ca_file.trim().is_empty() {
            None
        } else {
            let path = PathBuf::from(&t.extra_ca_file);
            if !path.is_file() {
                return Err(invalid(
                    "tls.extra_ca_file",
                    format!("{}: no such file", path.display()),
                ));
            }
            Some(path)
        };
        if t.expiry_warn_days < 0 {
            return Err(invalid("tls.expiry_warn_days", "must not be negative"));
        }
        let tls = TlsSettings {
            extra_ca_file,
            on_error,
            expiry_warn_days: t.expiry_warn_days,
        };

        if raw.egress.is_empty() {
            return Err(invalid("egress", "at least one [[egress]] entry is needed"));
        }
        let mut egress = Vec::new();
        for (i, e) in raw.egress.into_iter().enumerate() {
            let name = nonempty(&format!("egress[{i}].name"), &e.name)?;
            let proxy = match e.proxy.as_deref().map(str::trim) {
                None | Some("") => None,
                // socks5h hands the name to the proxy, which resolves it where the
                // address policy and the per-IP limit cannot see: refused, socks5 does the
                // same with the name resolved, checked and counted here.
                Some(p) if p.to_ascii_lowercase().starts_with("socks5h:") => {
                    return Err(invalid(
                        &format!("egress[{i}].proxy"),
                        "socks5h:// lets the proxy resolve names past the address policy and the per-IP limit: use socks5://, which sends the address picket resolved and counted",
                    ))
                }
                Some(p) => Some(url_with_scheme(
                    &format!("egress[{i}].proxy"),
                    p,
                    &["http", "https", "socks5"],
                )?),
            };
            if egress.iter().any(|x: &EgressSettings| x.name == name) {
                return Err(invalid(
                    &format!("egress[{i}].name"),
                    format!("{name:?} is used twice"),
                ));
            }
            egress.push(EgressSettings { name, proxy });
        }

        let listen = raw.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:9464",
                    raw.http.listen
                ),
            )
        })?;

        let format = match raw.log.format.as_str() {
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

        if raw.worker.name.len() > MAX_WORKER_NAME {
            return Err(invalid(
                "worker.name",
                format!(
                    "is {} bytes; at most {MAX_WORKER_NAME}",
                    raw.worker.name.len()
                ),
            ));
        }

        Ok(Settings {
            amqp,
            redis,
            probe,
            rate_limit,
            dns,
            targets: TargetSettings {
                allow_private: raw.targets.allow_private,
            },
            tls,
            egress,
            http: HttpSettings { listen },
            log: LogSettings {
                format,
                level: raw.log.level,
            },
            worker: WorkerSettings {
                name: raw.worker.name,
                shutdown_grace: parse_duration(
                    "worker.shutdown_grace",
                    &raw.worker.shutdown_grace,
                )?,
                threads: match raw.worker.threads {
                    0 => None,
                    n if n > MAX_THREADS => {
                        return Err(invalid(
                            "worker.threads",
                            format!("{n} is more than {MAX_THREADS}; 0 means one per CPU core"),
                        ))
                    }
                    n => Some(n),
                },
            },
            ignored_keys,
        })
    }
}

fn rate(key: &str, rate: f64, burst: u32, max_inflight: u32) -> Result<Rate, ConfigError> {
    if !(rate.is_finite() && rate >= RATE_RANGE.0 && rate <= RATE_RANGE.1) {
        return Err(invalid(
            &format!("{key}.rate"),
            format!(
                "must be a number of requests per second from {:e} (one a day) to {}",
                RATE_RANGE.0, RATE_RANGE.1
            ),
        ));
    }
    if burst == 0 || burst > MAX_COUNT {
        return Err(invalid(
            &format!("{key}.burst"),
            format!("must be from 1 to {MAX_COUNT}"),
        ));
    }
    if max_inflight == 0 || max_inflight > MAX_COUNT {
        return Err(invalid(
            &format!("{key}.max_inflight"),
            format!("must be from 1 to {MAX_COUNT}"),
        ));
    }
    Ok(Rate {
        rate,
        burst,
        max_inflight,
    })
}

fn parse_nameserver(value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    value
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            invalid(
                "dns.nameservers",
                format!("{value:?} is not an address like 127.0.0.1:5353"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values no operator means but a typo makes: a clear error (exit 2), never a panic,
    /// and nothing built from settings that pass panics either.
    #[test]
    fn a_socks5h_egress_is_refused_because_the_proxy_would_resolve_names() {
        let e = err("[[egress]]\nname = \"p\"\nproxy = \"socks5h://127.0.0.1:1080\"\n");
        assert!(
            e.contains("egress[0].proxy") && e.contains("socks5://"),
            "{e}"
        );
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

    fn err(toml: &str) -> String {
        Settings::from_toml(toml)
            .expect_err("should fail")
            .to_string()
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
        assert_eq!(s.rate_limit.per_ip.rate, 1.0);
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
    fn an_old_file_setting_redis_pool_size_still_loads_and_is_reported() {
        assert!(Settings::from_toml("")
            .expect("defaults")
            .ignored_keys
            .is_empty());
        let old = Settings::from_toml("[redis]\npool_size = 16\n").expect("old file loads");
        assert_eq!(old.ignored_keys, vec!["redis.pool_size".to_string()]);
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
    fn bad_duration_names_the_key() {
        let e = err("[probe]\ntimeout = \"thirty seconds\"\n");
        assert!(e.contains("probe.timeout"), "{e}");
    }

    #[test]
    fn zero_rate_is_refused() {
        let e = err("[rate_limit.per_ip]\nrate = 0.0\n");
        assert!(e.contains("rate_limit.per_ip.rate"), "{e}");
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
    fn redis_cluster_nodes_are_validated_and_default_to_the_url() {
        let single = Settings::from_toml("").expect("defaults");
        assert!(!single.redis.cluster);
        assert!(single.redis.nodes.is_empty());

        let seed = Settings::from_toml("[redis]\ncluster = true\n").expect("seed");
        assert!(seed.redis.cluster);
        assert_eq!(seed.redis.nodes, vec![seed.redis.url.clone()]);

        let listed = Settings::from_toml(
            "[redis]\ncluster = true\nnodes = [\"redis://a:7000\", \"rediss://b:7001\"]\n",
        )
        .expect("nodes");
        assert_eq!(listed.redis.nodes, ["redis://a:7000", "rediss://b:7001"]);

        let e = err("[redis]\ncluster = true\nnodes = [\"redis://a:7000\", \"http://b\"]\n");
        assert!(e.contains("redis.nodes[1]"), "{e}");
        let e = err("[redis]\nnodes = [\"redis://a:7000\"]\n");
        assert!(e.contains("redis.nodes") && e.contains("cluster"), "{e}");

        let env = vec![
            ("PICKET__REDIS__CLUSTER".to_string(), "true".to_string()),
            (
                "PICKET__REDIS__NODES".to_string(),
                "redis://a:6379,redis://b:6379".to_string(),
            ),
        ];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert!(s.redis.cluster);
        assert_eq!(s.redis.nodes, ["redis://a:6379", "redis://b:6379"]);
    }

    #[test]
    fn amqp_urls_replace_the_url_and_are_validated() {
        let single = Settings::from_toml("").expect("defaults");
        assert_eq!(single.amqp.nodes(), vec![single.amqp.url.clone()]);
        let listed = Settings::from_toml(
            "[amqp]\nurls = [\"amqp://u:p@a:5672/%2f\", \"amqps://b:5671/v\"]\n",
        )
        .expect("urls");
        assert_eq!(
            listed.amqp.nodes(),
            ["amqp://u:p@a:5672/%2f", "amqps://b:5671/v"]
        );
        let e = err("[amqp]\nurls = [\"amqp://a:5672\", \"http://b\"]\n");
        assert!(e.contains("amqp.urls[1]"), "{e}");
        let env = vec![(
            "PICKET__AMQP__URLS".to_string(),
            "amqp://a:5672/%2f,amqp://b:5672/%2f".to_string(),
        )];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert_eq!(s.amqp.nodes(), ["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
    }

    #[test]
    fn redis_sentinels_are_validated_and_not_for_a_cluster() {
        let plain = Settings::from_toml("").expect("defaults");
        assert!(plain.redis.sentinels.is_empty());
        let s = Settings::from_toml(
            "[redis]\nsentinels = [\"redis://a:26379\", \"redis://b:26379\"]\nsentinel_master = \"main\"\n",
        )
        .expect("sentinels");
        assert_eq!(s.redis.sentinels.len(), 2);
        assert_eq!(s.redis.sentinel_master, "main");
        let e = err("[redis]\nsentinels = [\"tcp://a:26379\"]\n");
        assert!(e.contains("redis.sentinels[0]"), "{e}");
        let e = err("[redis]\ncluster = true\nsentinels = [\"redis://a:26379\"]\n");
        assert!(
            e.contains("redis.sentinels") && e.contains("Cluster"),
            "{e}"
        );
        let e = err("[redis]\nsentinels = [\"redis://a:26379\"]\nsentinel_master = \"\"\n");
        assert!(e.contains("redis.sentinel_master"), "{e}");
        let env = vec![(
            "PICKET__REDIS__SENTINELS".to_string(),
            "redis://a:26379,redis://b:26379".to_string(),
        )];
        let s = Settings::load_with_env(None, env).expect("env config");
        assert_eq!(s.redis.sentinels, ["redis://a:26379", "redis://b:26379"]);
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

    #[test]
    fn bad_environment_value_names_the_key() {
        let env = vec![("PICKET__PROBE__RETRY_DELAY".to_string(), "soon".to_string())];
        let e = Settings::load_with_env(None, env)
            .expect_err("bad")
            .to_string();
        assert!(e.contains("probe.retry_delay"), "{e}");
    }

    #[test]
    fn overrides_parse_and_are_checked() {
        let s = Settings::from_toml(
            "[[rate_limit.override]]\ncidr = \"203.0.113.0/24\"\nrate = 0.5\nburst = 1\nmax_inflight = 1\n\
             [[rate_limit.override]]\nhost_suffix = \".Gov.CN\"\nrate = 1.0\nburst = 1\nmax_inflight = 2\n",
        )
        .expect("overrides");
        assert_eq!(s.rate_limit.overrides.len(), 2);
        assert_eq!(
            s.rate_limit.overrides[1].matches,
            OverrideMatch::HostSuffix(".gov.cn".into())
        );
        assert!(err(
            "[[rate_limit.override]]\ncidr = \"nope\"\nrate = 1.0\nburst = 1\nmax_inflight = 1\n"
        )
        .contains("rate_limit.override[0].cidr"));
        assert!(
            err("[[rate_limit.override]]\nrate = 1.0\nburst = 1\nmax_inflight = 1\n")
                .contains("exactly one")
        );
        assert!(err("[[rate_limit.override]]\ncidr = \"10.0.0.0/8\"\nrate = 0.0\nburst = 1\nmax_inflight = 1\n")
            .contains("rate_limit.override[0].rate"));
        assert!(err("[rate_limit.per_ip]\nscope = \"world\"\n").contains("rate_limit.per_ip.scope"));
    }

    #[test]
    fn static_hosts_parse() {
        let s = Settings::from_toml("[dns.static]\n\"A.example\" = \"127.0.0.2\"\n").expect("ok");
        assert_eq!(
            s.dns.static_hosts.get("a.example"),
            Some(&vec!["127.0.0.2".parse::<IpAddr>().expect("ip")])
        );
        let s = Settings::from_toml("[dns.static]\n\"b.example\" = \"192.0.2.1, 2001:db8::1\"\n")
            .expect("two addresses");
        assert_eq!(s.dns.static_hosts.get("b.example").map(Vec::len), Some(2));
        assert!(err("[dns.static]\n\"a.example\" = \"nope\"\n").contains("dns.static.a.example"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://user:secret@host:5672/%2f"),
            "amqp://user:***@host:5672/%2f"
        );
        assert!(!redact_url("redis://:pw@h:1/0").contains("pw"));
    }
}
