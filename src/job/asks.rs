//! What a job asks of a site: the method of its request and what the answer must be.
//! The derived identity of a monitored check (`crate::key`) is made of these, so they
//! stand apart from the rest of the wire types.

use serde::{Deserialize, Serialize};

/// What a job expects of the site, all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Acceptable final status codes; default: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<u16>>,
    /// Smaller bodies are not `up`; default: `probe.min_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_body_bytes: Option<u64>,
    /// Text the decoded page must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Text the decoded page must not contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_not_contains: Option<String>,
    /// Slower answers are `degraded` / `slow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u64>,
}

/// HTTP method of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The default: some servers mishandle HEAD.
    Get,
    /// Allowed when a job asks for it.
    Head,
}
