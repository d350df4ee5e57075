//! tinyproxy as an HTTP egress: a small proxy operators run on a gateway. Its own pages
//! carry no marker header, only `Server: tinyproxy/…` and reason phrases of its own
//! ("500 Unable to connect", "502 Unable to connect to upstream proxy", "403 Access
//! violation"). Its own name lookups use the system's resolver, which knows none of the
//! tests' names.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running tinyproxy.
pub struct Tinyproxy {
    /// The server.
    pub daemon: Daemon,
    /// `http://ip:port`
    pub url: String,
}

impl Tinyproxy {
    /// tinyproxy on `ip` letting clients on loopback through, with more config lines
    /// (`extra`: `ConnectPort 443`, `Upstream http ip:port`, …).
    pub fn start(ip: &str, extra: &str) -> Tinyproxy {
        let dir = scratch("tinyproxy");
        let port = free_port();
        // No `LogFile`: with -d it logs to the daemon's stdout.log.
        let conf = format!(
            "Port {port}\nListen {ip}\nTimeout 30\nMaxClients 50\nAllow 127.0.0.0/8\n{extra}\n"
        );
        let path = write(&dir, "tinyproxy.conf", &conf);
        let daemon = Daemon::start(
            "tinyproxy",
            "tinyproxy",
            &["-d".into(), "-c".into(), path.display().to_string()],
            &dir,
            &format!("{ip}:{port}"),
        );
        Tinyproxy {
            daemon,
            url: format!("http://{ip}:{port}"),
        }
    }
}
