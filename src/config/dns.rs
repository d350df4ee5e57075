//! `[dns]`: which nameservers are asked (or the system's resolver), fixed answers like
//! `curl --resolve`, and how long and how many lookups may take.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::parse::positive_duration;
use super::{invalid, ConfigError};

/// `[dns]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    nameservers: Vec<String>,
    #[serde(rename = "static")]
    static_hosts: BTreeMap<String, String>,
    timeout: String,
    max_concurrent: u32,
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

impl TryFrom<RawDns> for DnsSettings {
    type Error = ConfigError;

    fn try_from(d: RawDns) -> Result<Self, ConfigError> {
        // A blank entry is what an empty environment list leaves: not a nameserver.
        let nameservers = d
            .nameservers
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_nameserver(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut static_hosts = BTreeMap::new();
        for (host, ip) in d.static_hosts {
            let ips = static_addresses(&format!("dns.static.{host}"), &ip)?;
            static_hosts.insert(host.to_ascii_lowercase(), ips);
        }
        Ok(DnsSettings {
            nameservers,
            static_hosts,
            timeout: positive_duration("dns.timeout", &d.timeout)?,
            max_concurrent: match d.max_concurrent {
                0 => return Err(invalid("dns.max_concurrent", "must be at least 1")),
                n => n as usize,
            },
        })
    }
}

/// One `dns.static` value: an address, or several comma-separated.
fn static_addresses(key: &str, value: &str) -> Result<Vec<IpAddr>, ConfigError> {
    value
        .split(',')
        .map(|one| {
            one.trim().parse::<IpAddr>().map_err(|_| {
                invalid(
                    key,
                    format!("{value:?} is not an IP address (or a comma-separated list)"),
                )
            })
        })
        .collect()
}

/// `127.0.0.1:5353`, or an address alone for port 53.
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
    use super::super::{err, Settings};
    use super::*;

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
    fn nameservers_take_port_53_unless_given_and_blanks_are_skipped() {
        assert_eq!(
            parse_nameserver(" 192.0.2.53 ").expect("bare address"),
            "192.0.2.53:53".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(parse_nameserver("[::1]:5353").expect("v6").port(), 5353);
        assert!(err("[dns]\nnameservers = [\"ns.example\"]\n").contains("dns.nameservers"));
        let s = Settings::from_toml("[dns]\nnameservers = [\" \", \"127.0.0.1:5353\"]\n")
            .expect("blank skipped");
        assert_eq!(s.dns.nameservers.len(), 1);
        assert!(err("[dns]\nmax_concurrent = 0\n").contains("dns.max_concurrent"));
    }
}
