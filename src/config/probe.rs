//! `[probe]`: how a site is asked (timeouts, body limits, redirects, the browser's
//! headers), how a failure is confirmed (attempts, canaries), and when an egress that
//! fails for many sites is rested.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::parse::{nonempty, parse_duration, positive_duration, url_with_scheme, MAX_COUNT};
use super::{invalid, ConfigError};
use crate::job::Verdict;

/// `[probe]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    #[serde(deserialize_with = "super::parse::whole")]
    concurrency: u32,
    connect_timeout: String,
    timeout: String,
    #[serde(deserialize_with = "super::parse::whole")]
    max_body_bytes: u64,
    #[serde(deserialize_with = "super::parse::whole")]
    min_body_bytes: u64,
    #[serde(deserialize_with = "super::parse::whole")]
    max_redirects: u32,
    #[serde(deserialize_with = "super::parse::whole")]
    attempts: u32,
    retry_delay: String,
    user_agent: String,
    accept: String,
    accept_language: String,
    #[serde(deserialize_with = "super::parse::entries")]
    canaries: Vec<String>,
    soft_failures: String,
    max_latency: String,
    #[serde(deserialize_with = "super::parse::whole")]
    egress_fail_targets: u32,
    egress_rest: String,
    runtime: String,
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
    /// The headers sent with every page request, derived from the three above.
    pub(crate) browser: std::sync::Arc<crate::probe::browser::Browser>,
    /// Known-good URLs re-checked when failures look like our own problem.
    pub canaries: Vec<Url>,
    /// Verdict for a page that matches a built-in block, parked, suspended or
    /// default-server pattern; `None` = patterns off.
    pub soft_failures: Option<Verdict>,
    /// A site answering slower than this is `degraded/slow`, for jobs that name no
    /// `expect.max_latency_ms`; `None` ("off") = no limit, as the contract has it.
    pub max_latency: Option<Duration>,
    /// When an egress failing for many sites is rested.
    pub egress_health: crate::egress::HealthSettings,
    /// The shape of `picket check`'s async runtime.
    pub runtime: RuntimeShape,
}

/// `probe.runtime`: how `picket check` schedules its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeShape {
    /// Every probe, hyper's connection tasks and the I/O driver on one thread: no
    /// wake-up crosses threads, at the price of one core's worth of CPU at most.
    CurrentThread,
    /// Tokio's work-stealing pool, `worker.threads` threads.
    MultiThread,
}

/// A byte count from the file as this machine's size; one that does not fit is no limit
/// the machine could reach anyway.
fn bytes(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl TryFrom<RawProbe> for ProbeSettings {
    type Error = ConfigError;

    fn try_from(p: RawProbe) -> Result<Self, ConfigError> {
        if p.concurrency == 0 || p.concurrency > MAX_COUNT {
            return Err(invalid(
                "probe.concurrency",
                format!("must be from 1 to {MAX_COUNT}"),
            ));
        }
        if p.attempts == 0 || p.attempts > 10 {
            return Err(invalid("probe.attempts", "must be between 1 and 10"));
        }
        if p.max_body_bytes == 0 || p.max_body_bytes < p.min_body_bytes {
            return Err(invalid(
                "probe.max_body_bytes",
                format!(
                    "must be greater than zero and at least probe.min_body_bytes ({}): \
                     a body read no further could never be a working page",
                    p.min_body_bytes
                ),
            ));
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
        let user_agent = header_value("probe.user_agent", &p.user_agent, Empty::Refused)?;
        let accept = header_value("probe.accept", &p.accept, Empty::Refused)?;
        let accept_language =
            header_value("probe.accept_language", &p.accept_language, Empty::LeftOut)?;
        Ok(ProbeSettings {
            concurrency: p.concurrency as usize,
            connect_timeout: site_time("probe.connect_timeout", &p.connect_timeout)?,
            timeout: site_time("probe.timeout", &p.timeout)?,
            max_body_bytes: bytes(p.max_body_bytes),
            min_body_bytes: bytes(p.min_body_bytes),
            max_redirects: p.max_redirects,
            attempts: p.attempts,
            retry_delay: parse_duration("probe.retry_delay", &p.retry_delay)?,
            browser: std::sync::Arc::new(crate::probe::browser::Browser::new(
                &user_agent,
                &accept,
                &accept_language,
            )),
            user_agent,
            accept,
            accept_language,
            canaries,
            soft_failures: soft_failures(&p.soft_failures)?,
            max_latency: max_latency(&p.max_latency)?,
            egress_health: crate::egress::HealthSettings {
                fail_targets: p.egress_fail_targets as usize,
                rest: positive_duration("probe.egress_rest", &p.egress_rest)?,
            },
            runtime: runtime_shape(&p.runtime)?,
        })
    }
}

/// The least time a site is given to connect or answer: the floor of a job's own
/// `timeout_ms` too. Less made every site `down/timeout` with nothing sent.
const LEAST_SITE_TIME: Duration = Duration::from_millis(crate::job::TIMEOUT_MS_RANGE.0);

/// A time given to a site, at least [`LEAST_SITE_TIME`].
fn site_time(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = positive_duration(key, value)?;
    if d < LEAST_SITE_TIME {
        return Err(invalid(
            key,
            format!("{value:?} is less than {LEAST_SITE_TIME:?}: no site could answer in time"),
        ));
    }
    Ok(d)
}

/// A header the browser sends: surrounding whitespace (a newline an environment variable
/// or a secret file brings) trimmed, and what is left sendable; empty only when the
/// header may be left out. A control character made every request fail to build, every
/// site `down/protocol`.
fn header_value(key: &str, value: &str, may_be_empty: Empty) -> Result<String, ConfigError> {
    let trimmed = match may_be_empty {
        Empty::Refused => nonempty(key, value.trim())?,
        Empty::LeftOut => value.trim().to_string(),
    };
    if reqwest::header::HeaderValue::from_str(&trimmed).is_err() {
        return Err(invalid(
            key,
            "must be printable ASCII (no control characters): it is sent as a header",
        ));
    }
    Ok(trimmed)
}

/// Whether a browser header may be empty ([`header_value`]).
#[derive(Clone, Copy)]
enum Empty {
    Refused,
    /// The header is not sent.
    LeftOut,
}

/// `probe.runtime`.
fn runtime_shape(value: &str) -> Result<RuntimeShape, ConfigError> {
    match value {
        "current_thread" => Ok(RuntimeShape::CurrentThread),
        "multi_thread" => Ok(RuntimeShape::MultiThread),
        other => Err(invalid(
            "probe.runtime",
            format!("{other:?} is not \"current_thread\" or \"multi_thread\""),
        )),
    }
}

/// `probe.max_latency`: "off", or a time a site's answer may take before it is
/// `degraded/slow`, at least 1 ms (a job's `max_latency_ms` is counted in those).
fn max_latency(value: &str) -> Result<Option<Duration>, ConfigError> {
    if value.trim() == "off" {
        return Ok(None);
    }
    let d = positive_duration("probe.max_latency", value)?;
    if d < Duration::from_millis(1) {
        return Err(invalid(
            "probe.max_latency",
            format!("{value:?} is less than 1ms (or \"off\")"),
        ));
    }
    Ok(Some(d))
}

/// `probe.soft_failures`: what a block, parked or default-server page makes of a site.
fn soft_failures(value: &str) -> Result<Option<Verdict>, ConfigError> {
    match value {
        "off" => Ok(None),
        "degraded" => Ok(Some(Verdict::Degraded)),
        "down" => Ok(Some(Verdict::Down)),
        other => Err(invalid(
            "probe.soft_failures",
            format!("{other:?} is not \"off\", \"degraded\" or \"down\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};
    use super::*;

    #[test]
    fn bad_duration_names_the_key() {
        let e = err("[probe]\ntimeout = \"thirty seconds\"\n");
        assert!(e.contains("probe.timeout"), "{e}");
    }

    #[test]
    fn counts_and_soft_failures_name_their_keys() {
        assert!(err("[probe]\nconcurrency = 0\n").contains("probe.concurrency"));
        assert!(err("[probe]\nattempts = 11\n").contains("probe.attempts"));
        assert!(err("[probe]\nmax_body_bytes = 0\n").contains("probe.max_body_bytes"));
        assert!(err("[probe]\nmax_redirects = 51\n").contains("probe.max_redirects"));
        assert!(err("[probe]\nsoft_failures = \"maybe\"\n").contains("probe.soft_failures"));
        let s = Settings::from_toml("[probe]\nsoft_failures = \"off\"\n").expect("off");
        assert_eq!(s.probe.soft_failures, None);
        assert_eq!(soft_failures("down").expect("down"), Some(Verdict::Down));
    }

    #[test]
    fn max_latency_is_off_or_a_time() {
        let s = Settings::from_toml("").expect("defaults");
        assert_eq!(
            s.probe.max_latency, None,
            "off unless set, as the contract has it"
        );
        let s = Settings::from_toml("[probe]\nmax_latency = \"10s\"\n").expect("10s");
        assert_eq!(s.probe.max_latency, Some(Duration::from_secs(10)));
        for bad in ["soon", "0s", "500us"] {
            let e = err(&format!("[probe]\nmax_latency = \"{bad}\"\n"));
            assert!(e.contains("probe.max_latency"), "{bad}: {e}");
        }
    }

    /// A newline at the end of a value (an env var or a secret file's) made every
    /// request fail to build: every site `down/protocol`, and `config check` said valid.
    #[test]
    fn header_values_are_trimmed_and_must_be_sendable() {
        let s =
            Settings::from_toml("[probe]\nuser_agent = \"Mozilla/5.0 X\\n\"\n").expect("trimmed");
        assert_eq!(s.probe.user_agent, "Mozilla/5.0 X");
        let s = Settings::from_toml("[probe]\naccept_language = \"\"\n").expect("left out");
        assert_eq!(s.probe.accept_language, "");
        for key in ["user_agent", "accept", "accept_language"] {
            let e = err(&format!("[probe]\n{key} = \"a\\u0007b\"\n"));
            assert!(e.contains(&format!("probe.{key}")), "{e}");
        }
    }

    /// A body limit under the least body a working page has made every site `down`.
    #[test]
    fn a_body_limit_below_the_least_page_is_refused() {
        let e = err("[probe]\nmax_body_bytes = 10\n");
        assert!(
            e.contains("probe.max_body_bytes") && e.contains("min_body_bytes"),
            "{e}"
        );
    }

    /// A timeout no site can meet made every site `down/timeout`, with nothing sent.
    #[test]
    fn timeouts_too_short_for_any_site_are_refused() {
        assert!(err("[probe]\ntimeout = \"1ms\"\n").contains("probe.timeout"));
        assert!(err("[probe]\nconnect_timeout = \"5ms\"\n").contains("probe.connect_timeout"));
        assert!(Settings::from_toml("[probe]\ntimeout = \"100ms\"\n").is_ok());
    }

    #[test]
    fn runtime_defaults_to_one_thread_and_names_its_key() {
        let s = Settings::from_toml("").expect("defaults");
        assert_eq!(s.probe.runtime, RuntimeShape::CurrentThread);
        let s = Settings::from_toml("[probe]\nruntime = \"multi_thread\"\n").expect("multi");
        assert_eq!(s.probe.runtime, RuntimeShape::MultiThread);
        assert!(err("[probe]\nruntime = \"threads\"\n").contains("probe.runtime"));
    }
}
