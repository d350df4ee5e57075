//! dante-server (`danted`) as a SOCKS5 egress for clients on loopback, without
//! authentication; with `deny`, every SOCKS request is refused.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running danted.
pub struct Dante {
    /// The server.
    pub daemon: Daemon,
    /// `socks5://ip:port`
    pub url: String,
}

impl Dante {
    /// danted on `ip`.
    pub fn start(ip: &str, deny: bool) -> Dante {
        Dante::start_from(ip, "lo", deny)
    }

    /// danted on `ip`, connecting to sites from `external` (an address, or `lo`).
    pub fn start_from(ip: &str, external: &str, deny: bool) -> Dante {
        let dir = scratch("dante");
        let d = dir.display().to_string();
        let port = free_port();
        let verdict = if deny { "block" } else { "pass" };
        let conf = format!(
            r#"logoutput: {d}/danted.log
internal: {ip} port = {port}
external: {external}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 127.0.0.0/8 to: 0.0.0.0/0
}}
socks {verdict} {{
  from: 127.0.0.0/8 to: 0.0.0.0/0
  log: error connect
}}
"#
        );
        let path = write(&dir, "danted.conf", &conf);
        let daemon = Daemon::start(
            "danted",
            "danted",
            &[
                "-f".into(),
                path.display().to_string(),
                "-p".into(),
                format!("{d}/danted.pid"),
                "-N".into(),
                "1".into(),
            ],
            &dir,
            &format!("{ip}:{port}"),
        );
        Dante {
            daemon,
            url: format!("socks5://{ip}:{port}"),
        }
    }
}

/// The way out of a proxy that connects to sites from `from` cut while this lives: the
/// SYNs it sends are dropped (iptables, `OUTPUT`), so every connection it opens to a
/// site hangs, as when a proxy's host loses its uplink but still takes its clients.
pub struct WayOutCut {
    rule: String,
}

impl WayOutCut {
    /// Cuts it.
    pub fn from(from: &str) -> WayOutCut {
        let rule = format!("OUTPUT -s {from}/32 -p tcp --syn -j DROP");
        assert!(iptables(&format!("-I {rule}")), "iptables -I {rule} failed");
        WayOutCut { rule }
    }
}

impl Drop for WayOutCut {
    fn drop(&mut self) {
        if !iptables(&format!("-D {}", self.rule)) {
            eprintln!("iptables -D {} failed: remove the rule by hand", self.rule);
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
