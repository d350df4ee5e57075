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
    #[serde(
        default,
        deserialize_with = "whole::codes",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<Vec<u16>>,
    /// Smaller bodies are not `up`; default: `probe.min_body_bytes`.
    #[serde(
        default,
        deserialize_with = "whole::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_body_bytes: Option<u64>,
    /// Text the decoded page must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Text the decoded page must not contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_not_contains: Option<String>,
    /// Slower answers are `degraded` / `slow`.
    #[serde(
        default,
        deserialize_with = "whole::option",
        skip_serializing_if = "Option::is_none"
    )]
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

/// Whole numbers as JSON writes them either way, `30000` or `30000.0` (a publisher whose
/// numbers are doubles: Python floats, Jackson's `Double`, JavaScript), as JSON Schema's
/// `integer` takes both (hunt U). A fraction, a negative number or one too large is
/// refused.
pub(crate) mod whole {
    use serde::{de::Error, Deserialize, Deserializer};
    use serde_json::Number;

    /// The largest whole number a double holds exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;

    fn of<E: Error>(n: &Number) -> Result<u64, E> {
        if let Some(v) = n.as_u64() {
            return Ok(v);
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=EXACT).contains(&f) => Ok(f as u64),
            _ => Err(E::custom(format!("{n} is not a whole number of 0 or more"))),
        }
    }

    /// An optional whole number.
    ///
    /// # Errors
    /// Not a number, or not a whole one.
    pub(crate) fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<Number>::deserialize(d)?
            .map(|n| of(&n))
            .transpose()
    }

    /// An optional list of status codes.
    ///
    /// # Errors
    /// Not a list of whole numbers below 65536.
    pub(crate) fn codes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
        let Some(list) = Option::<Vec<Number>>::deserialize(d)? else {
            return Ok(None);
        };
        list.iter()
            .map(|n| {
                let v = of(n)?;
                u16::try_from(v).map_err(|_| D::Error::custom(format!("{v} is no status code")))
            })
            .collect::<Result<Vec<u16>, D::Error>>()
            .map(Some)
    }
}
