//! `[[egress]]` and `[targets]`: the ways out to the internet (direct, or through an
//! HTTP or SOCKS5 proxy), and which target addresses they may be used for at all.

use std::num::NonZeroU32;

use serde::Deserialize;
use url::Url;

use super::parse::{nonempty, url_with_scheme};
use super::{invalid, ConfigError};

/// One `[[egress]]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    name: String,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    by_name: Option<String>,
    #[serde(default)]
    max_connections: Option<u32>,
}

/// `[targets]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargets {
    allow_private: bool,
}

/// One `[[egress]]` entry.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// Name reported in results.
    pub name: String,
    /// `http://host:port`, `socks5://host:port`, or none for a direct connection.
    pub proxy: Option<Url>,
    /// Whether an HTTP proxy that refuses the counted address is asked by name.
    pub by_name: ByName,
    /// The most requests this process sends through it at once (`egress.max_connections`;
    /// `None`: no cap): a proxy takes so many clients (tinyproxy's `MaxClients`, Privoxy's
    /// `max-client-connections`) and leaves the next waiting unanswered, past their time.
    pub max_connections: Option<NonZeroU32>,
}

/// Whether an HTTP-proxy egress that refuses a tunnel to the counted address is asked
/// by name instead (`egress.by_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByName {
    /// `CONNECT ip:port` to the counted address first; when the proxy refuses it for its
    /// own reasons (most ship allowing CONNECT to 443 only; an allow list names sites,
    /// not addresses), https is asked for with `CONNECT name:port` and plain http in
    /// absolute form, as browsers ask, and the proxy chooses the address.
    #[default]
    WhenRefused,
    /// `CONNECT ip:port` only: a refusal is the egress failing, and no request ever
    /// goes to an address picket did not count.
    Never,
}

/// `[targets]`
#[derive(Debug, Clone, Copy)]
pub struct TargetSettings {
    /// Allow loopback, private, link-local and metadata addresses.
    pub allow_private: bool,
}

impl From<RawTargets> for TargetSettings {
    fn from(t: RawTargets) -> Self {
        TargetSettings {
            allow_private: t.allow_private,
        }
    }
}

/// Every `[[egress]]` entry: at least one, each name once.
///
/// # Errors
/// No entry, or the first bad one, named `egress[i].name` or `egress[i].proxy`.
pub(super) fn build(raw: Vec<RawEgress>) -> Result<Vec<EgressSettings>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("egress", "at least one [[egress]] entry is needed"));
    }
    let mut egress: Vec<EgressSettings> = Vec::new();
    for (i, e) in raw.into_iter().enumerate() {
        let name = nonempty(&format!("egress[{i}].name"), &e.name)?;
        let proxy = proxy(&format!("egress[{i}].proxy"), e.proxy.as_deref())?;
        let by_name = by_name(&format!("egress[{i}].by_name"), &e, proxy.as_ref())?;
        let max_connections = max_connections(&format!("egress[{i}].max_connections"), &e)?;
        if egress.iter().any(|x| x.name == name) {
            return Err(invalid(
                &format!("egress[{i}].name"),
                format!("{name:?} is used twice"),
            ));
        }
        // One proxy (or the direct route) under two names is one way out counted as two
        // (its rate doubled per site, a failure "confirmed" through itself); the same
        // host with other credentials may be another way out (a provider's session or
        // country).
        if let Some(twin) = egress.iter().find(|x| x.proxy == proxy) {
            let (key, what) = match proxy {
                Some(_) => (format!("egress[{i}].proxy"), "the same proxy as"),
                None => (format!("egress[{i}]"), "a direct way out, as is"),
            };
            return Err(invalid(
                &key,
                format!("{what} egress {:?}: one way out under two names", twin.name),
            ));
        }
        egress.push(EgressSettings {
            name,
            proxy,
            by_name,
            max_connections,
        });
    }
    Ok(egress)
}

/// An egress's proxy URL; none or blank is a direct connection.
fn proxy(key: &str, value: Option<&str>) -> Result<Option<Url>, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        // socks5h hands the name to the proxy, which resolves it where the address
        // policy and the per-IP limit cannot see: refused, socks5 does the same with the
        // name resolved, checked and counted here.
        Some(p) if p.to_ascii_lowercase().starts_with("socks5h:") => Err(invalid(
            key,
            "socks5h:// lets the proxy resolve names past the address policy and the per-IP limit: use socks5://, which sends the address picket resolved and counted",
        )),
        Some(p) => {
            let mut url = url_with_scheme(key, p, &["http", "https", "socks5"])?;
            // A proxy is a host and a port: anything after them was dropped unsaid.
            if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some()
            {
                return Err(invalid(
                    key,
                    format!(
                        "{:?}: a proxy URL has no path, query or fragment, only scheme://[user:password@]host:port",
                        super::redact_url(p)
                    ),
                ));
            }
            // SOCKS5's port written out, so every route through it takes the same one
            // (the URL crate knows no default port for socks5).
            if url.scheme() == "socks5" && url.port().is_none() {
                let _ = url.set_port(Some(1080));
            }
            Ok(Some(url))
        }
    }
}

/// `egress.max_connections`: left out for no cap, else at least one.
fn max_connections(key: &str, e: &RawEgress) -> Result<Option<NonZeroU32>, ConfigError> {
    match e.max_connections {
        None => Ok(None),
        Some(n) => NonZeroU32::new(n).map(Some).ok_or_else(|| {
            invalid(
                key,
                "0 would send nothing through it: at least 1, or leave the key out for no cap",
            )
        }),
    }
}

/// `egress.by_name`: only for an HTTP(S) proxy, which is what it is about.
fn by_name(key: &str, e: &RawEgress, proxy: Option<&Url>) -> Result<ByName, ConfigError> {
    let Some(value) = e.by_name.as_deref().map(str::trim) else {
        return Ok(ByName::default());
    };
    if !proxy.is_some_and(|p| matches!(p.scheme(), "http" | "https")) {
        return Err(invalid(
            key,
            "is only for an egress whose proxy is http:// or https:// (direct and SOCKS5 egresses always connect to the counted address)",
        ));
    }
    match value {
        "when_refused" => Ok(ByName::WhenRefused),
        "never" => Ok(ByName::Never),
        other => Err(invalid(
            key,
            format!("{other:?} is not \"when_refused\" or \"never\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};

    #[test]
    fn a_socks5h_egress_is_refused_because_the_proxy_would_resolve_names() {
        let e = err("[[egress]]\nname = \"p\"\nproxy = \"socks5h://127.0.0.1:1080\"\n");
        assert!(
            e.contains("egress[0].proxy") && e.contains("socks5://"),
            "{e}"
        );
    }

    #[test]
    fn an_egress_may_cap_its_connections_but_not_at_zero() {
        let egress = |keys: &str| format!("[[egress]]\nname = \"p\"\n{keys}");
        let s = Settings::from_toml(&egress("max_connections = 40\n")).expect("capped");
        assert_eq!(s.egress[0].max_connections.map(|n| n.get()), Some(40));
        let s = Settings::from_toml(&egress("")).expect("no cap");
        assert_eq!(s.egress[0].max_connections, None);
        let e = err(&egress("max_connections = 0\n"));
        assert!(e.contains("egress[0].max_connections"), "{e}");
    }

    #[test]
    fn egress_names_are_needed_once_each() {
        let two = "[[egress]]\nname = \"a\"\n[[egress]]\nname = \"b\"\nproxy = \"socks5://127.0.0.1:1080\"\n";
        let s = Settings::from_toml(two).expect("two egresses");
        assert_eq!(s.egress.len(), 2);
        assert!(s.egress[0].proxy.is_none());
        assert_eq!(
            s.egress[1].proxy.as_ref().map(url::Url::scheme),
            Some("socks5")
        );
        let e = err("[[egress]]\nname = \"a\"\n[[egress]]\nname = \"a\"\n");
        assert!(e.contains("egress[1].name") && e.contains("twice"), "{e}");
        assert!(err("[[egress]]\nname = \"\"\n").contains("egress[0].name"));
    }

    /// `socks5://host` took port 1080 for requests but no port at all for the route a
    /// status line is asked again on, which was lost: a page browsers show was
    /// `down/protocol` through it and `up` through `socks5://host:1080`. And a proxy
    /// URL's path or query was dropped without a word.
    #[test]
    fn a_proxy_url_is_a_host_and_a_port_the_default_written_out() {
        let proxy = |p: &str| format!("[[egress]]\nname = \"p\"\nproxy = \"{p}\"\n");
        let s = Settings::from_toml(&proxy("socks5://127.0.0.1")).expect("socks5");
        assert_eq!(
            s.egress[0].proxy.as_ref().and_then(url::Url::port),
            Some(1080)
        );
        let s = Settings::from_toml(&proxy("http://127.0.0.1")).expect("http");
        assert_eq!(
            s.egress[0]
                .proxy
                .as_ref()
                .and_then(url::Url::port_or_known_default),
            Some(80)
        );
        for bad in [
            "http://127.0.0.1:3128/squid",
            "http://127.0.0.1:3128/?a=1",
            "socks5://h:1080/#x",
        ] {
            let e = err(&proxy(bad));
            assert!(
                e.contains("egress[0].proxy") && e.contains("path"),
                "{bad}: {e}"
            );
        }
        Settings::from_toml(&proxy("http://127.0.0.1:3128/")).expect("a bare slash");
    }

    /// One proxy under two names is one way out counted as two: with
    /// `scope = "egress_and_target"` a site got twice its rate, and a failure was
    /// "confirmed through another egress" that was the same one. (The same host with
    /// other credentials may well be another way out: a provider's session or country.)
    #[test]
    fn one_proxy_is_one_egress() {
        let two = |a: &str, b: &str| {
            format!("[[egress]]\nname = \"a\"\nproxy = \"{a}\"\n[[egress]]\nname = \"b\"\nproxy = \"{b}\"\n")
        };
        let e = err(&two("http://127.0.0.1:3128", "http://127.0.0.1:3128/"));
        assert!(e.contains("egress[1].proxy") && e.contains("\"a\""), "{e}");
        Settings::from_toml(&two(
            "http://u1:p@127.0.0.1:3128",
            "http://u2:p@127.0.0.1:3128",
        ))
        .expect("other credentials, another way out");
        // Two entries without a proxy are the one direct way out.
        let e = err("[[egress]]\nname = \"a\"\n[[egress]]\nname = \"b\"\n");
        assert!(e.contains("egress[1]") && e.contains("\"a\""), "{e}");
    }

    #[test]
    fn by_name_is_a_choice_of_http_proxies_only() {
        use super::ByName;
        let squid =
            |v: &str| format!("[[egress]]\nname = \"p\"\nproxy = \"http://127.0.0.1:3128\"\n{v}");
        let s = Settings::from_toml(&squid("")).expect("default");
        assert_eq!(s.egress[0].by_name, ByName::WhenRefused);
        let s = Settings::from_toml(&squid("by_name = \"never\"\n")).expect("set");
        assert_eq!(s.egress[0].by_name, ByName::Never);
        let e = err(&squid("by_name = \"always\"\n"));
        assert!(
            e.contains("egress[0].by_name") && e.contains("when_refused"),
            "{e}"
        );
        let e = err("[[egress]]\nname = \"d\"\nby_name = \"never\"\n");
        assert!(
            e.contains("egress[0].by_name") && e.contains("http://"),
            "{e}"
        );
    }
}
