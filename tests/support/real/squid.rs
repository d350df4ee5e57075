//! squid 5 as an HTTP egress (plain requests and CONNECT), either letting every client
//! on loopback through, or refusing every request with its own
//! `403 Forbidden` / `X-Squid-Error: ERR_ACCESS_DENIED` page, or with the access rules
//! Debian's `squid.conf` ships ([`Squid::stock`]: CONNECT only to port 443). Its own name lookups can
//! be given a hosts file ([`Squid::with_hosts`]) so a test can tell whether squid or
//! picket chose the address a request went to.

use super::{scratch, write, Daemon, REAL_INSTALL_HINT};
use crate::support::free_port;

/// Access rules that let clients on loopback through and CONNECT to port 443 only.
const CONNECT_TO_443: &str = "acl SSL_ports port 443\n\
     http_access deny CONNECT !SSL_ports\n\
     acl loop src 127.0.0.0/8\n\
     http_access allow loop\n\
     http_access deny all";

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
        Squid::with_hosts(ip, deny, &[])
    }

    /// Like [`start`](Self::start), with squid's own name lookups answered from `hosts`
    /// (name, address) and nothing else: no DNS server is asked, so a name not listed
    /// does not resolve at squid. Its connect timeout is 1 s, so an address that does
    /// not answer is reported (503, `ERR_CONNECT_FAIL`) before picket gives up.
    pub fn with_hosts(ip: &str, deny: bool, hosts: &[(&str, &str)]) -> Squid {
        let access = if deny {
            "http_access deny all"
        } else {
            "acl loop src 127.0.0.0/8\nhttp_access allow loop\nhttp_access deny all"
        };
        Squid::launch(ip, access, hosts, None, None)
    }

    /// squid letting clients on loopback through, its own lookups going to
    /// `nameserver` (an address; port 53), as production's squid asks the network's
    /// resolver: a name it does not know is NXDOMAIN at once, not a wait.
    pub fn resolving_through(ip: &str, nameserver: &str) -> Squid {
        Squid::resolving_through_from(ip, nameserver, None)
    }

    /// The same, connecting to sites from `outgoing` (`tcp_outgoing_address`) when given.
    pub fn resolving_through_from(ip: &str, nameserver: &str, outgoing: Option<&str>) -> Squid {
        let access = "acl loop src 127.0.0.0/8\nhttp_access allow loop\nhttp_access deny all";
        let extra = outgoing
            .map(|a| format!("tcp_outgoing_address {a}\n"))
            .unwrap_or_default();
        Squid::launch_in(
            scratch("squid"),
            ip,
            access,
            &[],
            None,
            None,
            ("", &extra, nameserver),
        )
    }

    /// squid with the access rules of the `squid.conf` Debian ships, letting clients on
    /// loopback through: plain requests to the "safe" ports (80, 443, 1025–65535 and a
    /// few more), CONNECT to port 443 only. Operators keep these rules; most proxies
    /// (tinyproxy's `ConnectPort`, Apache's `AllowCONNECT`) default to the same.
    pub fn stock(ip: &str, hosts: &[(&str, &str)]) -> Squid {
        let access = "acl SSL_ports port 443\n\
             acl Safe_ports port 80 21 443 70 210 1025-65535 280 488 591 777\n\
             http_access deny !Safe_ports\n\
             http_access deny CONNECT !SSL_ports\n\
             acl loop src 127.0.0.0/8\n\
             http_access allow loop\n\
             http_access deny all";
        Squid::launch(ip, access, hosts, None, None)
    }

    /// squid letting clients on loopback through to the sites under `domain` only
    /// (`dstdomain -n`: an address is never looked up backwards, as a hosting
    /// provider's address would not lead back to the site's name), the way companies
    /// fence their egress: a CONNECT to an address is refused.
    pub fn named_sites(ip: &str, domain: &str, hosts: &[(&str, &str)]) -> Squid {
        let access = format!(
            "acl loop src 127.0.0.0/8\nacl named dstdomain -n {domain}\n\
             http_access allow loop named\nhttp_access deny all"
        );
        Squid::launch(ip, &access, hosts, None, None)
    }

    /// squid letting through only clients with Basic credentials from `passwd` (an
    /// NCSA file: `user:crypt-or-md5-hash` lines), checked by squid's own helper.
    pub fn with_auth(ip: &str, hosts: &[(&str, &str)], passwd: &str) -> Squid {
        Squid::launch(
            ip,
            "acl authed proxy_auth REQUIRED\nhttp_access allow authed\nhttp_access deny all",
            hosts,
            Some(passwd),
            None,
        )
    }

    /// [`Squid::stock`] with squid's memory cache on, as Debian ships it: a page the
    /// site says is fresh (`Cache-Control: max-age=3600`) is answered from the cache to
    /// a plain request, without asking the site.
    pub fn stock_caching(ip: &str, hosts: &[(&str, &str)]) -> Squid {
        Squid::launch(ip, CONNECT_TO_443, hosts, None, Some(""))
    }

    /// [`Squid::stock_caching`] with the refresh rule operators add to save bandwidth
    /// (`reload-into-ims`: a client's `no-cache` becomes a revalidation). When the
    /// revalidation fails (the site is gone), squid answers its stale copy, a 200 with
    /// `Warning: 111 "Revalidation failed"`.
    pub fn reload_into_ims(ip: &str, hosts: &[(&str, &str)]) -> Squid {
        let refresh = "refresh_pattern . 60 50% 1440 reload-into-ims";
        Squid::launch(ip, CONNECT_TO_443, hosts, None, Some(refresh))
    }

    /// squid as a corporate TLS-intercepting egress (`ssl_bump`: peek, then bump all):
    /// every tunnel is taken for TLS and re-signed by the CA in `ca_pem` (certificate and
    /// key, PEM), trusting the sites of `site_ca` (PEM). A tunnel that carries plain HTTP
    /// is closed without an answer: browsers send plain http to a proxy in absolute form.
    /// Its own lookups go to `nameserver` (an address; port 53), then `hosts`.
    pub fn bumping(ip: &str, hosts: &[(&str, &str)], cas: (&str, &str), nameserver: &str) -> Squid {
        let rules = "acl step1 at_step SslBump1\nssl_bump peek step1\nssl_bump bump all\n";
        Squid::peeking(ip, hosts, cas, nameserver, rules)
    }

    /// squid as a corporate egress that blocks sites by name over TLS: it peeks at the
    /// ClientHello's server name and `ssl_bump terminate`s a tunnel to `blocked`,
    /// splicing every other one untouched. It answers each CONNECT `200` before it
    /// connects (it must, to read the ClientHello), then closes the blocked ones.
    pub fn terminating(
        ip: &str,
        hosts: &[(&str, &str)],
        cas: (&str, &str),
        nameserver: &str,
        blocked: &str,
    ) -> Squid {
        let rules = format!(
            "acl step1 at_step SslBump1\nacl blocked ssl::server_name {blocked}\n\
             ssl_bump peek step1\nssl_bump terminate blocked\nssl_bump splice all\n"
        );
        Squid::peeking(ip, hosts, cas, nameserver, &rules)
    }

    /// squid with `ssl_bump` `rules` on its port, re-signing with the CA in `ca_pem`
    /// what it bumps and trusting the sites of `site_ca`.
    fn peeking(
        ip: &str,
        hosts: &[(&str, &str)],
        (ca_pem, site_ca): (&str, &str),
        nameserver: &str,
        rules: &str,
    ) -> Squid {
        let dir = scratch("squid-bump");
        let db = dir.join("ssl_db");
        let certgen = "/usr/lib/squid/security_file_certgen";
        let made = std::process::Command::new(certgen)
            .args(["-c", "-s", &db.display().to_string(), "-M", "4MB"])
            .output()
            .unwrap_or_else(|e| panic!("{certgen}: {e}: {REAL_INSTALL_HINT}"));
        assert!(made.status.success(), "{certgen}: {made:?}");
        // squid's helpers run as its own user.
        let chown = std::process::Command::new("chown")
            .args(["-R", "proxy:proxy", &db.display().to_string()])
            .status()
            .expect("chown");
        assert!(chown.success(), "chown {}", db.display());
        let port_options = format!(
            " ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=4MB tls-cert={ca_pem}"
        );
        let extra = format!(
            "sslcrtd_program {certgen} -s {db} -M 4MB\n\
             tls_outgoing_options cafile={site_ca}\n{rules}",
            db = db.display()
        );
        let access = "acl loop src 127.0.0.0/8\nhttp_access allow loop\nhttp_access deny all";
        Squid::launch_in(
            dir,
            ip,
            access,
            hosts,
            None,
            None,
            (&port_options, &extra, nameserver),
        )
    }

    fn launch(
        ip: &str,
        access: &str,
        hosts: &[(&str, &str)],
        passwd: Option<&str>,
        cache: Option<&str>,
    ) -> Squid {
        Squid::launch_in(
            scratch("squid"),
            ip,
            access,
            hosts,
            passwd,
            cache,
            ("", "", "127.0.0.1"),
        )
    }

    /// squid in `dir`, with more options on its `http_port` line and more config lines
    /// (`more`).
    fn launch_in(
        dir: std::path::PathBuf,
        ip: &str,
        access: &str,
        hosts: &[(&str, &str)],
        passwd: Option<&str>,
        cache: Option<&str>,
        more: (&str, &str, &str),
    ) -> Squid {
        let d = dir.display().to_string();
        let port = free_port();
        let auth = match passwd {
            None => String::new(),
            Some(lines) => {
                let file = write(&dir, "passwd", lines);
                format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
                     auth_param basic children 1\n",
                    file.display()
                )
            }
        };
        let mut lines = String::new();
        for (name, addr) in hosts {
            lines.push_str(&format!("{addr} {name}\n"));
        }
        let hosts_file = write(&dir, "hosts", &lines);
        let conf = format!(
            r#"http_port {ip}:{port}{port_options}
{extra}hosts_file {hosts}
dns_nameservers {nameserver}
connect_timeout 1 second
{auth}{access}
{cache}
cache_mem 8 MB
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
shutdown_lifetime 1 second
dns_v4_first on
via on
forwarded_for delete
"#,
            hosts = hosts_file.display(),
            cache = cache.unwrap_or("cache deny all"),
            port_options = more.0,
            extra = more.1,
            nameserver = more.2,
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
