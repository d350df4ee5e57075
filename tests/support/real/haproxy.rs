//! haproxy 2.6 in front of a backend that is gone: every request gets haproxy's own
//! `503 Service Unavailable` ("No server is available to handle this request").

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running haproxy.
pub struct Haproxy {
    /// The server.
    pub daemon: Daemon,
    /// Its address.
    pub ip: String,
    /// Its port.
    pub port: u16,
}

impl Haproxy {
    /// haproxy on `ip` whose only backend server (a free port on `ip`, nothing there)
    /// is checked and down.
    pub fn dead_backend(ip: &str) -> Haproxy {
        let dir = scratch("haproxy");
        let port = free_port();
        let dead = free_port();
        let conf = format!(
            r#"global
  maxconn 256
  pidfile {d}/haproxy.pid
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend site
  bind {ip}:{port}
  default_backend app
backend app
  option httpchk GET /
  server app1 {ip}:{dead} check inter 500ms fall 1 rise 1
"#,
            d = dir.display()
        );
        let path = write(&dir, "haproxy.cfg", &conf);
        let daemon = Daemon::start(
            "haproxy",
            "haproxy",
            &["-db".into(), "-f".into(), path.display().to_string()],
            &dir,
            &format!("{ip}:{port}"),
        );
        Haproxy {
            daemon,
            ip: ip.to_string(),
            port,
        }
    }
}
