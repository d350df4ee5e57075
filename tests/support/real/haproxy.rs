//! haproxy 2.6 in front of a backend that is gone (every request gets haproxy's own
//! `503 Service Unavailable`, "No server is available to handle this request"),
//! terminating TLS in front of another server, or serving pages behind a stick-table
//! rate limit.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// The `global` and `defaults` sections of every test haproxy, in `mode`.
fn head(dir: &std::path::Path, mode: &str) -> String {
    format!(
        "global\n  maxconn 256\n  pidfile {}/haproxy.pid\ndefaults\n  mode {mode}\n  \
         timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n",
        dir.display()
    )
}

/// What a stick-table rate limit does with a client over its rate.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `http-request reject`: the connection closed without an answer.
    Reject,
    /// `http-request silent-drop`: the connection vanishes without a word to the
    /// client (TCP_REPAIR), which waits for an answer that never comes.
    SilentDrop,
    /// `tcp-request connection reject`: closed as it is accepted, the request unread.
    ConnectionReject,
    /// `http-request deny deny_status 503`: haproxy's own 503 page, the page it
    /// answers when no backend server is up.
    Deny503,
    /// The same over a ten-second rate, as haproxy's stick-table examples count: its
    /// memory of a burst outlasts a short hold of ours (haproxy weighs the last period
    /// into the current one, so a burst still counts for part of the ten seconds after).
    Deny503Over10s,
    /// The same answering `Retry-After` with this many seconds (`deny ... hdr
    /// Retry-After`), as operators add so that well-behaved clients come back later:
    /// a limit's 503 that looks like a site in maintenance.
    Deny503AskingPause(u32),
    /// `http-request tarpit`: held for `timeout tarpit` (1 s here), then haproxy's own
    /// 500 page.
    Tarpit,
    /// The same held for 30 s, longer than a probe waits: the connection is kept open
    /// and nothing comes.
    LongTarpit,
    /// haproxy's "flag abusers" recipe: a client over the rate in 10 s is flagged
    /// (`gpc0`) for as long as its entry lives (10 minutes after its last request, so
    /// each request it makes keeps the flag), and every request of a flagged client is
    /// tarpitted for 20 s, then answered haproxy's 500.
    FlaggedTarpit,
}

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
        Haproxy::in_front_of(ip, &format!("{ip}:{}", free_port()))
    }

    /// haproxy on `ip` balancing to the server at `backend` (`ip:port`), which it checks
    /// twice a second: when that server is gone, every host answers haproxy's 503.
    pub fn in_front_of(ip: &str, backend: &str) -> Haproxy {
        let dir = scratch("haproxy-lb");
        let port = free_port();
        let conf = format!(
            r#"{head}frontend site
  bind {ip}:{port}
  default_backend app
backend app
  option httpchk GET /
  server app1 {backend} check inter 500ms fall 1 rise 1
"#,
            head = head(&dir, "http")
        );
        Haproxy::launch(&dir, &conf, ip, port)
    }

    /// haproxy on `ip` taking TLS with the certificate and key in `pem` and passing the
    /// bytes inside on to `backend` (`ip:port`), as a load balancer before a proxy does.
    pub fn tls_front(ip: &str, backend: &str, pem: &str) -> Haproxy {
        let dir = scratch("haproxy-tls");
        let port = free_port();
        let conf = format!(
            r#"{head}frontend front
  bind {ip}:{port} ssl crt {pem}
  default_backend back
backend back
  server back1 {backend}
"#,
            head = head(&dir, "tcp")
        );
        Haproxy::launch(&dir, &conf, ip, port)
    }

    /// haproxy on `ip` serving every host a page of its own, with the rate limit its
    /// operators write from the stick-table recipes: over `rate` requests a second from
    /// one client, `limit` turns them away.
    pub fn rate_limited(ip: &str, rate: u32, limit: Limit) -> Haproxy {
        let dir = scratch("haproxy-limit");
        let port = free_port();
        let mut table = "expire 10s store http_req_rate(1s),conn_rate(1s)";
        let rule = match limit {
            Limit::Reject => format!(
                "  http-request track-sc0 src\n  \
                 http-request reject if {{ sc_http_req_rate(0) gt {rate} }}\n"
            ),
            Limit::SilentDrop => format!(
                "  http-request track-sc0 src\n  \
                 http-request silent-drop if {{ sc_http_req_rate(0) gt {rate} }}\n"
            ),
            Limit::Tarpit => format!(
                "  timeout tarpit 1s\n  http-request track-sc0 src\n  \
                 http-request tarpit if {{ sc_http_req_rate(0) gt {rate} }}\n"
            ),
            Limit::LongTarpit => format!(
                "  timeout tarpit 30s\n  http-request track-sc0 src\n  \
                 http-request tarpit if {{ sc_http_req_rate(0) gt {rate} }}\n"
            ),
            Limit::FlaggedTarpit => {
                table = "expire 10m store gpc0,http_req_rate(10s)";
                format!(
                    "  timeout tarpit 20s\n  http-request track-sc0 src\n  \
                     http-request sc-inc-gpc0(0) if {{ sc_http_req_rate(0) gt {rate} }}\n  \
                     http-request tarpit if {{ sc_get_gpc0(0) gt 0 }}\n"
                )
            }
            Limit::Deny503Over10s => {
                table = "expire 30s store http_req_rate(10s)";
                format!(
                    "  http-request track-sc0 src\n  \
                     http-request deny deny_status 503 if {{ sc_http_req_rate(0) gt {rate} }}\n"
                )
            }
            Limit::Deny503AskingPause(secs) => {
                table = "expire 30s store http_req_rate(10s)";
                format!(
                    "  http-request track-sc0 src\n  \
                     http-request deny deny_status 503 hdr Retry-After {secs} \
                     if {{ sc_http_req_rate(0) gt {rate} }}\n"
                )
            }
            Limit::Deny503 => format!(
                "  http-request track-sc0 src\n  \
                 http-request deny deny_status 503 if {{ sc_http_req_rate(0) gt {rate} }}\n"
            ),
            Limit::ConnectionReject => format!(
                "  tcp-request connection track-sc0 src\n  \
                 tcp-request connection reject if {{ sc_conn_rate(0) gt {rate} }}\n"
            ),
        };
        let conf = format!(
            r#"{head}frontend site
  bind {ip}:{port}
  stick-table type ip size 1k {table}
{rule}  http-request return status 200 content-type "text/html" lf-string "<!doctype html><html><head><title>%[req.hdr(host)]</title></head><body><h1>%[req.hdr(host)]</h1><p>Welcome to the county office. Opening hours, forms and services are listed below; call us during office hours.</p></body></html>"
"#,
            head = head(&dir, "http")
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
