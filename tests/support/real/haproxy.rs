//! haproxy 2.6 in front of a backend that is gone (every request gets haproxy's own
//! `503 Service Unavailable`, "No server is available to handle this request"), or
//! terminating TLS in front of another server.

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
        Haproxy::launch(&dir, &conf, ip, port)
    }

    /// haproxy on `ip` taking TLS with the certificate and key in `pem` and passing the
    /// bytes inside on to `backend` (`ip:port`), as a load balancer before a proxy does.
    pub fn tls_front(ip: &str, backend: &str, pem: &str) -> Haproxy {
        let dir = scratch("haproxy-tls");
        let port = free_port();
        let conf = format!(
            r#"global
  maxconn 256
  pidfile {d}/haproxy.pid
defaults
  mode tcp
  timeout connect 1s
  timeout client 10s
  timeout server 10s
frontend front
  bind {ip}:{port} ssl crt {pem}
  default_backend back
backend back
  server back1 {backend}
"#,
            d = dir.display()
        );
        Haproxy::launch(&dir, &conf, ip, port)
    }

    fn launch(dir: &std::path::Path, conf: &str, ip: &str, port: u16) -> Haproxy {
        let path = write(dir, "haproxy.cfg", conf);
        let daemon = Daemon::start(
            "haproxy",
            "haproxy",
            &["-db".into(), "-f".into(), path.display().to_string()],
            dir,
            &format!("{ip}:{port}"),
        );
        Haproxy {
            daemon,
            ip: ip.to_string(),
            port,
        }
    }
}
