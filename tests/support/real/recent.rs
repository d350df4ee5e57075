//! The tutorials' iptables rate limit on new connections, the `recent` match: a client
//! that opened `hits` connections to a server within `seconds` has every new one dropped
//! (or refused), and each one turned away is a hit too (`--update`), so the ban lasts
//! until the client stays away for the whole window. Operators of small servers add it
//! as their defence against floods (two rules, `--set` then `--update --seconds 60
//! --hitcount 20 -j DROP`). The rules name only the test server's address and port.

use std::process::Command;

/// The two rules, on `INPUT`, while this lives.
pub struct RecentBan {
    rules: Vec<String>,
}

impl RecentBan {
    /// New connections to `ip:port` from a client that opened `hits` within `seconds`
    /// are dropped, each one counted as another hit.
    pub fn dropping(ip: &str, port: u16, hits: u32, seconds: u32) -> RecentBan {
        RecentBan::with(
            ip,
            port,
            &format!("--hitcount {hits} --seconds {seconds}"),
            "DROP",
        )
    }

    /// The same ban refusing: iptables' `REJECT`, an ICMP port-unreachable, which
    /// reaches the client as a refused connection, as a closed port's reset does.
    pub fn rejecting(ip: &str, port: u16, hits: u32, seconds: u32) -> RecentBan {
        RecentBan::with(
            ip,
            port,
            &format!("--hitcount {hits} --seconds {seconds}"),
            "REJECT",
        )
    }

    fn with(ip: &str, port: u16, over: &str, target: &str) -> RecentBan {
        let new = format!(
            "-d {ip}/32 -p tcp --dport {port} -m conntrack --ctstate NEW \
             -m recent --name picket{port}"
        );
        let set = format!("INPUT {new} --set");
        let ban = format!("INPUT {new} --update {over} -j {target}");
        let mut made = RecentBan { rules: Vec::new() };
        // Inserted at the top in turn: the ban ends up before the count, as the
        // tutorials order them.
        for rule in [set, ban] {
            assert!(iptables(&format!("-I {rule}")), "iptables -I {rule} failed");
            made.rules.push(rule);
        }
        made
    }

    /// Connections turned away so far (the ban rule's packet counter).
    pub fn turned_away(&self) -> u64 {
        let ban = self.rules.last().map(String::as_str).unwrap_or_default();
        let name = ban
            .split(" --name ")
            .nth(1)
            .and_then(|s| s.split(' ').next());
        let listing = Command::new("iptables")
            .args(["-w", "-S", "INPUT", "-v"])
            .output()
            .expect("iptables -S");
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .filter(|l| l.contains("--update") && name.is_some_and(|n| l.contains(n)))
            .filter_map(|l| {
                l.split(" -c ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RecentBan {
    fn drop(&mut self) {
        for rule in self.rules.iter().rev() {
            if !iptables(&format!("-D {rule}")) {
                eprintln!("iptables -D {rule} failed: remove the rule by hand");
            }
        }
    }
}

fn iptables(args: &str) -> bool {
    Command::new("iptables")
        .arg("-w")
        .args(args.split(' '))
        .status()
        .is_ok_and(|s| s.success())
}
