//! dnsmasq as the network's resolver, authoritative for one zone from a hosts file:
//! the zone's names answered (A and AAAA, every address listed), every other name of
//! the zone NXDOMAIN, nothing forwarded.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running dnsmasq.
pub struct Dnsmasq {
    /// The server.
    pub daemon: Daemon,
    /// `ip:port`, UDP and TCP.
    pub addr: String,
}

impl Dnsmasq {
    /// dnsmasq on `ip`, answering the names under `zone` from `hosts` (name, addresses
    /// apart by commas), with `ttl` seconds on its answers.
    pub fn start(ip: &str, zone: &str, hosts: &[(String, String)], ttl: u32) -> Dnsmasq {
        Dnsmasq::on_port(ip, free_port(), zone, hosts, ttl)
    }

    /// [`Dnsmasq::start`] on `port`: 53 for a server that asks a nameserver by its
    /// address alone (squid's `dns_nameservers`).
    pub fn on_port(
        ip: &str,
        port: u16,
        zone: &str,
        hosts: &[(String, String)],
        ttl: u32,
    ) -> Dnsmasq {
        let dir = scratch("dnsmasq");
        let mut lines = String::new();
        for (name, ips) in hosts {
            for addr in ips.split(',').map(str::trim) {
                lines.push_str(&format!("{addr} {name}\n"));
            }
        }
        let file = write(&dir, "hosts", &lines);
        let args = [
            "--keep-in-foreground".to_string(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--local=/{zone}/"),
            format!("--local-ttl={ttl}"),
            "--bind-interfaces".into(),
            format!("--listen-address={ip}"),
            format!("--port={port}"),
            format!("--addn-hosts={}", file.display()),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--user=root".into(),
            format!("--log-facility={}", dir.join("dnsmasq.log").display()),
        ];
        let addr = format!("{ip}:{port}");
        let daemon = Daemon::start("dnsmasq", "dnsmasq", &args, &dir, &addr);
        Dnsmasq { daemon, addr }
    }
}
