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
    #[serde(deserialize_with = "super::parse::entries")]
    nameservers: Vec<String>,
    #[serde(rename = "static")]
    static_hosts: BTreeMap<String, String>,
    timeout: String,
    #[serde(deserialize_with = "super::parse::whole")]
    max_concurrent: u32,
    #[serde(deserialize_with = "super::parse::entries")]
    search: Vec<String>,
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
    /// Domains a name not found as written is asked under, in turn (lower case, no
    /// dots at either end); empty: the system's search list when `nameservers` is.
    pub search: Vec<String>,
}

impl TryFrom<RawDns> for DnsSettings {
    type Error = ConfigError;

    fn try_from(d: RawDns) -> Result<Self, ConfigError> {
        let nameservers = d
            .nameservers
            .iter()
            .map(|s| parse_nameserver(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut static_hosts = BTreeMap::new();
        for (host, ip) in d.static_hosts {
            let key = format!("dns.static.{host}");
            let ips = static_addresses(&key, &ip)?;
            static_hosts.insert(static_name(&key, &host)?, ips);
        }
        Ok(DnsSettings {
            nameservers,
            static_hosts,
            timeout: positive_duration("dns.timeout", &d.timeout)?,
            max_concurrent: match d.max_concurrent {
                0 => return Err(invalid("dns.max_concurrent", "must be at least 1")),
                n => n as usize,
            },
            search: d
                .search
                .iter()
                .map(|domain| static_name("dns.search", domain))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A `dns.static` name as a job URL's host carries it: IDNA (punycode), lower case, no
/// final dot. The resolver looks names up in that form.
fn static_name(key: &str, host: &str) -> Result<String, ConfigError> {
    match url::Host::parse(host.trim_end_matches('.')) {
        Ok(url::Host::Domain(name)) => Ok(name),
        Ok(ip) => Ok(ip.to_string()),
        Err(e) => Err(invalid(key, format!("{host:?} is not a host name: {e}"))),
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

    /// Job URLs carry a name as the URL parser writes it (IDNA, lower case, no final
    /// dot), so a `dns.static` name written otherwise must be read the same way, or it
    /// never answers: a Chinese government domain, or a name copied from a zone file.
    #[test]
    fn static_names_are_read_as_urls_write_them() {
        let s = Settings::from_toml(
            "[dns.static]\n\"政府.Example\" = \"127.0.0.2\"\n\"zone.example.\" = \"127.0.0.3\"\n",
        )
        .expect("ok");
        let url = url::Url::parse("http://政府.example/").expect("url");
        let host = url.host_str().expect("host");
        assert!(host.starts_with("xn--"), "{host}");
        assert!(
            s.dns.static_hosts.contains_key(host),
            "{:?}",
            s.dns.static_hosts
        );
        assert!(
            s.dns.static_hosts.contains_key("zone.example"),
            "{:?}",
            s.dns.static_hosts
        );
        assert!(err("[dns.static]\n\"bad host\" = \"127.0.0.2\"\n").contains("dns.static"));
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
