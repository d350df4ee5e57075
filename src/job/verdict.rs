//! The word on a site: the [`Verdict`] and the stable [`Reason`] code of a result, its
//! attempts and the results metric, each written as the snake_case name of `CONTRACT.md`.

use serde::{Deserialize, Serialize};

/// The verdict on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Works as a person's browser would see it.
    Up,
    /// Reachable but not right (slow, certificate problem).
    Degraded,
    /// Not available, confirmed.
    Down,
    /// We could not tell: our problem, not the site's.
    Unknown,
    /// The job itself is wrong.
    Invalid,
}

impl Verdict {
    /// The snake_case name, also the routing key of its results.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Up => "up",
            Verdict::Degraded => "degraded",
            Verdict::Down => "down",
            Verdict::Unknown => "unknown",
            Verdict::Invalid => "invalid",
        }
    }

    /// Whether this is a verdict on the site, which a key's history keeps: `unknown`
    /// (our own trouble) and `invalid` (the job is wrong) are reported, never kept.
    pub(crate) fn is_about_the_site(self) -> bool {
        !matches!(self, Verdict::Unknown | Verdict::Invalid)
    }

    /// The verdict named `s` (its snake_case name).
    pub(crate) fn parse(s: &str) -> Option<Verdict> {
        [
            Verdict::Up,
            Verdict::Degraded,
            Verdict::Down,
            Verdict::Unknown,
            Verdict::Invalid,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Why a verdict is what it is: the stable snake_case `reason` code of a result, an
/// attempt and the results metric (`CONTRACT.md`). New codes may be added, none renamed.
/// Its wire form is [`Reason::as_str`] and nothing else, so the codes written, counted
/// and documented cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// All is well.
    Ok,
    /// The name did not resolve.
    Dns,
    /// No connection.
    Connect,
    /// TLS handshake or certificate.
    Tls,
    /// Out of time.
    Timeout,
    /// Unexpected status code.
    HttpStatus,
    /// The page is empty or tiny.
    BodyTooSmall,
    /// The page lacks the expected text or has a forbidden one.
    BodyMismatch,
    /// Slower than `max_latency_ms`.
    Slow,
    /// Too many redirect hops, or a loop.
    TooManyRedirects,
    /// The target is refused by policy.
    BlockedTarget,
    /// We are throttled or refused as a bot.
    Blocked,
    /// Every egress failed.
    EgressUnavailable,
    /// The job is wrong.
    InvalidJob,
    /// The server broke HTTP (picket's own addition to the contract's list).
    Protocol,
    /// Our own per-IP limit left no time to ask the site (picket's own).
    RateLimited,
    /// This worker ran out of file descriptors or buffers (picket's own).
    LocalResources,
    /// This worker's clock is off: a certificate valid by the sites' clocks looked
    /// expired or not valid yet by ours (picket's own).
    LocalClock,
}

impl Reason {
    /// Every reason, in the contract's order, picket's own additions last.
    pub(crate) const ALL: [Reason; 18] = [
        Reason::Ok,
        Reason::Dns,
        Reason::Connect,
        Reason::Tls,
        Reason::Timeout,
        Reason::HttpStatus,
        Reason::BodyTooSmall,
        Reason::BodyMismatch,
        Reason::Slow,
        Reason::TooManyRedirects,
        Reason::BlockedTarget,
        Reason::Blocked,
        Reason::EgressUnavailable,
        Reason::InvalidJob,
        Reason::Protocol,
        Reason::RateLimited,
        Reason::LocalResources,
        Reason::LocalClock,
    ];

    /// The snake_case code written in results and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Dns => "dns",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::HttpStatus => "http_status",
            Reason::BodyTooSmall => "body_too_small",
            Reason::BodyMismatch => "body_mismatch",
            Reason::Slow => "slow",
            Reason::TooManyRedirects => "too_many_redirects",
            Reason::BlockedTarget => "blocked_target",
            Reason::Blocked => "blocked",
            Reason::EgressUnavailable => "egress_unavailable",
            Reason::InvalidJob => "invalid_job",
            Reason::Protocol => "protocol",
            Reason::RateLimited => "rate_limited",
            Reason::LocalResources => "local_resources",
            Reason::LocalClock => "local_clock",
        }
    }

    /// The reason whose code is `s`.
    pub(crate) fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Comparing with a code as text keeps tests and filters that speak the wire's words short.
impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

// By hand rather than derived: the wire form is `as_str`, the one list of codes.
impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Reason::parse(&code)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown reason code {code:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason codes of `CONTRACT.md` ("reason is a stable snake_case code"), in its
    /// order, and picket's own additions (README, "Reason codes").
    const CONTRACT_REASONS: &[&str] = &[
        "ok",
        "dns",
        "connect",
        "tls",
        "timeout",
        "http_status",
        "body_too_small",
        "body_mismatch",
        "slow",
        "too_many_redirects",
        "blocked_target",
        "blocked",
        "egress_unavailable",
        "invalid_job",
    ];
    const OUR_REASONS: &[&str] = &["protocol", "rate_limited", "local_resources", "local_clock"];

    #[test]
    fn reasons_are_the_contracts_codes_and_round_trip() {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        let expected: Vec<&str> = CONTRACT_REASONS
            .iter()
            .chain(OUR_REASONS)
            .copied()
            .collect();
        assert_eq!(codes, expected);
        for reason in Reason::ALL {
            let json = serde_json::to_string(&reason).expect("json");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            let back: Reason = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, reason);
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), reason.as_str());
            assert!(reason == reason.as_str());
        }
        assert!(serde_json::from_str::<Reason>("\"Ok\"").is_err());
        assert!(serde_json::from_str::<Reason>("\"no_such_reason\"").is_err());
        assert_eq!(Reason::parse("HttpStatus"), None);
    }
}
