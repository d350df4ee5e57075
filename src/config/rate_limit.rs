//! `[rate_limit]`: how much one target IP may be asked (rate, burst, in flight), what a
//! limit is keyed by, the overrides by network or host name, and how the limits behave
//! without Redis or after a refusal.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{parse_duration, positive_duration, MAX_COUNT};
use super::{invalid, ConfigError};

/// Bounds of a per-IP rate (requests per second): one a day to far beyond any server.
const RATE_RANGE: (f64, f64) = (1.0 / 86_400.0, 100_000.0);

/// `[rate_limit]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    max_wait: String,
    max_defer: String,
    fallback_share: f64,
    backoff: String,
    limit_memory: String,
    drop_memory: String,
    ban_reaction: String,
    per_ip: RawPerIp,
    #[serde(rename = "override", default)]
    overrides: Vec<RawOverride>,
}

/// `[rate_limit.per_ip]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerIp {
    rate: f64,
    #[serde(deserialize_with = "super::parse::whole")]
    burst: u32,
    #[serde(deserialize_with = "super::parse::whole")]
    max_inflight: u32,
    scope: String,
}

/// One `[[rate_limit.override]]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    host_suffix: Option<String>,
    rate: f64,
    #[serde(deserialize_with = "super::parse::whole")]
    burst: u32,
    #[serde(deserialize_with = "super::parse::whole")]
    max_inflight: u32,
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
    /// How far ahead a deferred job may be given a place in its IP's line; a job whose
    /// place would be later is answered `unknown/rate_limited` at once.
    pub max_defer: Duration,
    /// Share of each rate one worker uses on its own while Redis is unavailable.
    pub fallback_share: f64,
    /// How long an IP that refused us is left alone the first time; doubled on every
    /// refusal after a hold, up to 10 minutes (see `limit::standing`).
    pub backoff: Duration,
    /// How long a limit may remember our requests: after a hold, a 503, a close or a
    /// reset that a host of the same IP which served us lately meets too, right then,
    /// holds the IP again until the holds add up to this; then it is the server failing
    /// (`limit::standing::AfterHold::WhileRemembered`). Zero: never held again so.
    pub limit_memory: Duration,
    /// How long a firewall dropping or rejecting our connections may remember them:
    /// after a hold, connections timing out or refused hold the IP again until a hold
    /// lasted this long; then it is the server gone (iptables' `recent --update
    /// --seconds 60` lengthens its ban with every connection it turns away, so a ban
    /// ends only after that long without one;
    /// `limit::standing::AfterHold::TurnedAwayWhileRemembered`). Zero: timing out or
    /// refused after one hold is the site's.
    pub drop_memory: Duration,
    /// How long after a server refused us a firewall's ban may still shut us out: an
    /// answer since the hold rules a ban out only when it came this long or more
    /// after the refusal (fail2ban reads the log, then runs iptables). 10 s by
    /// default; zero: any answer since the hold rules it out.
    pub ban_reaction: Duration,
    /// Overrides, first match wins (CIDR entries are checked before host suffixes).
    pub overrides: Vec<RateOverride>,
}

impl TryFrom<RawRateLimit> for RateLimitSettings {
    type Error = ConfigError;

    fn try_from(rl: RawRateLimit) -> Result<Self, ConfigError> {
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
        let overrides = rl
            .overrides
            .into_iter()
            .enumerate()
            .map(|(i, o)| rate_override(&format!("rate_limit.override[{i}]"), o))
            .collect::<Result<Vec<_>, _>>()?;
        let max_wait = parse_duration("rate_limit.max_wait", &rl.max_wait)?;
        let max_defer = parse_duration("rate_limit.max_defer", &rl.max_defer)?;
        if max_defer < max_wait {
            return Err(invalid(
                "rate_limit.max_defer",
                "must be at least rate_limit.max_wait (a job waits that long in the worker before it is deferred)",
            ));
        }
        Ok(RateLimitSettings {
            per_ip,
            scope,
            max_wait,
            max_defer,
            fallback_share: rl.fallback_share,
            backoff: positive_duration("rate_limit.backoff", &rl.backoff)?,
            limit_memory: parse_duration("rate_limit.limit_memory", &rl.limit_memory)?,
            drop_memory: parse_duration("rate_limit.drop_memory", &rl.drop_memory)?,
            ban_reaction: parse_duration("rate_limit.ban_reaction", &rl.ban_reaction)?,
            overrides,
        })
    }
}

/// One override, `key` being `rate_limit.override[i]`.
fn rate_override(key: &str, o: RawOverride) -> Result<RateOverride, ConfigError> {
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
        _ => return Err(invalid(key, "needs exactly one of cidr or host_suffix")),
    };
    Ok(RateOverride {
        matches,
        rate: rate(key, o.rate, o.burst, o.max_inflight)?,
    })
}

/// A rate, burst and in-flight cap, each within bounds; `key` is the table they are in.
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

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};
    use super::*;

    #[test]
    fn a_deferral_reaches_at_least_as_far_as_the_wait_in_the_worker() {
        let s = Settings::from_toml("").expect("defaults");
        assert_eq!(s.rate_limit.max_defer, Duration::from_secs(600));
        let e = err("[rate_limit]\nmax_wait = \"60s\"\nmax_defer = \"30s\"\n");
        assert!(e.contains("rate_limit.max_defer"), "{e}");
    }

    #[test]
    fn zero_rate_is_refused() {
        let e = err("[rate_limit.per_ip]\nrate = 0.0\n");
        assert!(e.contains("rate_limit.per_ip.rate"), "{e}");
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
    fn a_ban_reaction_is_ten_seconds_unless_set() {
        let defaults = Settings::from_toml("").expect("defaults");
        assert_eq!(defaults.rate_limit.ban_reaction, Duration::from_secs(10));
        let slow = Settings::from_toml("[rate_limit]\nban_reaction = \"45s\"\n").expect("45 s");
        assert_eq!(slow.rate_limit.ban_reaction, Duration::from_secs(45));
        assert!(err("[rate_limit]\nban_reaction = \"soon\"\n").contains("rate_limit.ban_reaction"));
    }

    #[test]
    fn a_drop_memory_is_a_minute_unless_set() {
        let defaults = Settings::from_toml("").expect("defaults");
        assert_eq!(defaults.rate_limit.drop_memory, Duration::from_secs(60));
        let off = Settings::from_toml("[rate_limit]\ndrop_memory = \"0s\"\n").expect("0 s");
        assert_eq!(off.rate_limit.drop_memory, Duration::ZERO);
        assert!(err("[rate_limit]\ndrop_memory = \"soon\"\n").contains("rate_limit.drop_memory"));
    }

    #[test]
    fn share_and_each_bound_of_a_rate_name_their_key() {
        assert!(err("[rate_limit]\nfallback_share = 1.5\n").contains("rate_limit.fallback_share"));
        assert!(err("[rate_limit]\nbackoff = \"0s\"\n").contains("rate_limit.backoff"));
        let key = "rate_limit.per_ip";
        assert!(rate(key, 1.0, 0, 1)
            .expect_err("burst")
            .to_string()
            .contains("rate_limit.per_ip.burst"));
        assert!(rate(key, 1.0, 1, 0)
            .expect_err("in flight")
            .to_string()
            .contains("rate_limit.per_ip.max_inflight"));
        assert_eq!(
            rate(key, 2.0, 2, 4).expect("the contract's example"),
            Rate {
                rate: 2.0,
                burst: 2,
                max_inflight: 4
            }
        );
    }
}
