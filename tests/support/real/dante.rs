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
