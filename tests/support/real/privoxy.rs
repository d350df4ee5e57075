//! Privoxy as an HTTP egress: a filtering proxy, often chained to a SOCKS parent
//! (`forward-socks5`). Its own pages carry no marker header; its reason phrases say what
//! happened ("503 Connect failed", "404 No such domain", "503 Forwarding failure", "403
//! Request blocked by Privoxy"). Its own name lookups use the system's resolver, which
//! knows none of the tests' names.

use super::{scratch, write, Daemon};
use crate::support::free_port;

/// A running Privoxy.
pub struct Privoxy {
    /// The server.
    pub daemon: Daemon,
    /// `http://ip:port`
    pub url: String,
}

impl Privoxy {
    /// Privoxy on `ip` with more config lines (`extra`, e.g. `forward-socks5 / ip:port .`)
    /// and an actions file blocking the hosts in `blocked` (names or addresses).
    pub fn start(ip: &str, extra: &str, blocked: &[&str]) -> Privoxy {
        let dir = scratch("privoxy");
        let d = dir.display().to_string();
        let port = free_port();
        let mut actions = String::from("{ +block{Blocked by the test's policy.} }\n");
        for host in blocked {
            actions.push_str(&format!("{host}\n"));
        }
        write(&dir, "user.action", &actions);
        let conf = format!(
            "confdir {d}\ntempldir /etc/privoxy/templates\nlogdir {d}\nlogfile privoxy.log\n\
             actionsfile user.action\nlisten-address {ip}:{port}\ntoggle 1\n\
             enable-remote-toggle 0\nenable-edit-actions 0\nforwarded-connect-retries 0\n{extra}\n"
        );
        let path = write(&dir, "config", &conf);
        let daemon = Daemon::start(
            "privoxy",
            "privoxy",
            &["--no-daemon".into(), path.display().to_string()],
            &dir,
            &format!("{ip}:{port}"),
        );
        Privoxy {
            daemon,
            url: format!("http://{ip}:{port}"),
        }
    }
}
