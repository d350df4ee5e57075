//! A server's way out to the sites, cut with iptables: a proxy whose host lost its
//! uplink but still takes its clients. The rule names only the address the proxy
//! connects from (dante's `external:`, squid's `tcp_outgoing_address`), so other
//! tests' servers are untouched.

/// The way out of a proxy that connects to sites from `from` cut while this lives: the
/// SYNs it sends are dropped (iptables, `OUTPUT`), so every connection it opens to a
/// site hangs, as when a proxy's host loses its uplink but still takes its clients.
pub struct WayOutCut {
    rules: Vec<String>,
}

impl WayOutCut {
    /// Cuts it.
    pub fn from(from: &str) -> WayOutCut {
        WayOutCut::with(&format!("OUTPUT -s {from}/32 -p tcp --syn -j DROP"))
    }

    /// Cuts it loudly: every connection the proxy opens is refused at once (a reset
    /// from its own host's firewall, `REJECT --reject-with tcp-reset`), as when a rule
    /// of the proxy's host or its network turns the sites away.
    pub fn refusing(from: &str) -> WayOutCut {
        WayOutCut::with(&format!(
            "OUTPUT -s {from}/32 -p tcp --syn -j REJECT --reject-with tcp-reset"
        ))
    }

    /// Cut loudly for a moment: the first `n` connections the proxy opens are refused at
    /// once, then it works again. The moment is counted in bytes (iptables' `quota`):
    /// a SYN on loopback is 60 bytes, and the quota leaves half of one over.
    pub fn refusing_first(from: &str, n: u32) -> WayOutCut {
        WayOutCut::with(&format!(
            "OUTPUT -s {from}/32 -p tcp --syn -m quota --quota {} -j REJECT --reject-with tcp-reset",
            n * 60 + 30
        ))
    }

    /// Every connection to `ip`'s `port` refused at once (a reset from our own host's
    /// firewall): one server out of our reach while every other answers, as in the
    /// moment our network turns away from it.
    pub fn refusing_to(ip: &str, port: u16) -> WayOutCut {
        WayOutCut::with(&format!(
            "OUTPUT -d {ip}/32 -p tcp --dport {port} --syn -j REJECT --reject-with tcp-reset"
        ))
    }

    /// Every connection to `net` (an address or a CIDR block) reset once it is up: the
    /// handshake passes, our first data meets a reset from our own host's firewall, as
    /// when a middlebox of ours (a DPI filter, a failing NAT) kills what it lets open.
    pub fn resetting_to(net: &str) -> WayOutCut {
        WayOutCut::with(&format!(
            "OUTPUT -d {net} -p tcp ! --syn -j REJECT --reject-with tcp-reset"
        ))
    }

    /// Every packet over 1200 bytes from `net` dropped: connections come up and a
    /// request goes out, but no page comes back, as behind a path MTU black hole (a
    /// tunnel whose "fragmentation needed" never reaches the sender).
    pub fn dropping_large_from(net: &str) -> WayOutCut {
        WayOutCut::with(&format!(
            "OUTPUT -s {net} -p tcp -m length --length 1200:65535 -j DROP"
        ))
    }

    fn with(rule: &str) -> WayOutCut {
        assert!(iptables(&format!("-I {rule}")), "iptables -I {rule} failed");
        WayOutCut {
            rules: vec![rule.to_string()],
        }
    }
}

impl Drop for WayOutCut {
    fn drop(&mut self) {
        for rule in &self.rules {
            if !iptables(&format!("-D {rule}")) {
                eprintln!("iptables -D {rule} failed: remove the rule by hand");
            }
        }
    }
}

fn iptables(args: &str) -> bool {
    std::process::Command::new("iptables")
        .arg("-w")
        .args(args.split(' '))
        .status()
        .is_ok_and(|s| s.success())
}
