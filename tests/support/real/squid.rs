//! squid 5 as an HTTP egress (plain requests and CONNECT), either letting every client
//! on loopback through or refusing every request with its own
//! `403 Forbidden` / `X-Squid-Error: ERR_ACCESS_DENIED` page.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running squid.
pub struct Squid {
    /// The server.
    pub daemon: Daemon,
    /// `http://ip:port`
    pub url: String,
}

impl Squid {
    /// squid on `ip`; with `deny`, `http_access deny all`.
    pub fn start(ip: &str, deny: bool) -> Squid {
        let dir = scratch("squid");
        let d = dir.display().to_string();
        let port = free_port();
        let access = if deny {
            "http_access deny all"
        } else {
            "acl loop src 127.0.0.0/8\nhttp_access allow loop\nhttp_access deny all"
        };
        let conf = format!(
            r#"http_port {ip}:{port}
{access}
cache deny all
cache_mem 8 MB
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
shutdown_lifetime 1 second
dns_v4_first on
via on
forwarded_for delete
"#
        );
        let path = write(&dir, "squid.conf", &conf);
        let daemon = Daemon::start(
            "squid",
            "squid",
            &["-N".into(), "-f".into(), path.display().to_string()],
            &dir,
            &format!("{ip}:{port}"),
        );
        Squid {
            daemon,
            url: format!("http://{ip}:{port}"),
        }
    }
}
