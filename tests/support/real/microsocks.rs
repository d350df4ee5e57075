//! microsocks as a SOCKS5 egress asking for a user name and password, as a small
//! SOCKS proxy on a gateway is often set up.

use super::{scratch, Daemon};
use crate::support::free_port;

/// A running microsocks.
pub struct Microsocks {
    /// The server.
    pub daemon: Daemon,
    /// `ip:port`, for a `socks5://` URL with or without credentials.
    pub addr: String,
}

impl Microsocks {
    /// microsocks on `ip`, letting through clients that log in as `user` / `password`.
    pub fn with_login(ip: &str, user: &str, password: &str) -> Microsocks {
        let dir = scratch("microsocks");
        let port = free_port();
        let args = [
            "-i",
            ip,
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            password,
        ];
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let daemon = Daemon::start(
            "microsocks",
            "microsocks",
            &args,
            &dir,
            &format!("{ip}:{port}"),
        );
        Microsocks {
            daemon,
            addr: format!("{ip}:{port}"),
        }
    }
}
