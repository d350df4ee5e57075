//! nginx as an operator typically sets it up against floods: `limit_req` keyed by the
//! client address (one zone for every virtual host), with or without `burst`/`nodelay`,
//! and `limit_conn` per client address; name-based virtual hosts on one address.

use super::{page, scratch, write, Daemon, Hits};
use crate::support::free_port;

/// One listening address with its limits.
#[derive(Debug, Clone)]
pub struct Site {
    /// Loopback address.
    pub ip: String,
    /// Requests per second in `limit_req_zone`.
    pub rate: u32,
    /// `burst=` (0: none).
    pub burst: u32,
    /// `nodelay`.
    pub nodelay: bool,
    /// `limit_conn` per client address.
    pub conn: u32,
    /// What a refused request gets (`limit_req_status`, `limit_conn_status`): nginx's
    /// 503, or the 444 many hardening guides set (the connection closed, no answer).
    pub status: u16,
    /// Virtual host names.
    pub hosts: Vec<String>,
}

/// The file whose presence puts [`Nginx::maintenance`]'s sites in maintenance.
const MAINTENANCE_SWITCH: &str = "maintenance.on";

/// A running nginx.
pub struct Nginx {
    /// The server.
    pub daemon: Daemon,
    /// The port every site listens on.
    pub port: u16,
}

impl Nginx {
    /// nginx serving `sites`, each on its own address and zone.
    pub fn start(sites: &[Site]) -> Nginx {
        let dir = scratch("nginx");
        let d = dir.display().to_string();
        let port = free_port();
        let mut conf = String::new();
        for (i, s) in sites.iter().enumerate() {
            let burst = match (s.burst, s.nodelay) {
                (0, _) => String::new(),
                (b, false) => format!(" burst={b}"),
                (b, true) => format!(" burst={b} nodelay"),
            };
            conf.push_str(&format!(
                "  limit_req_zone $binary_remote_addr zone=req{i}:1m rate={}r/s;\n  \
                 limit_conn_zone $binary_remote_addr zone=conn{i}:1m;\n",
                s.rate
            ));
            for h in &s.hosts {
                write(&dir, &format!("www/{h}/index.html"), &page(h));
                conf.push_str(&format!(
                    "  server {{ listen {ip}:{port}; server_name {h}; root {d}/www/{h}; \
                     limit_req zone=req{i}{burst}; limit_conn conn{i} {conn}; \
                     limit_req_status {status}; limit_conn_status {status}; }}\n",
                    ip = s.ip,
                    conn = s.conn,
                    status = s.status
                ));
            }
        }
        Nginx::run("nginx", &dir, &sites[0].ip, port, &conf)
    }

    /// nginx on `ip` limiting every client to `rate` requests a second without burst
    /// (`limit_req`, one zone for all `hosts`), answering what it refuses with its own
    /// small "Too many requests" page and a 200 (`limit_req_status 429; error_page 429
    /// =200 /busy.html`), as operators set it so that clients do not retry at once.
    pub fn limiting_with_a_page_of_200(ip: &str, hosts: &[String], rate: u32) -> Nginx {
        let dir = scratch("nginx-busy-200");
        let d = dir.display().to_string();
        let port = free_port();
        write(
            &dir,
            "busy/busy.html",
            "<!DOCTYPE html>\n<html><head><title>Busy</title></head><body>\n\
             <h1>Too many requests</h1>\n<p>Please slow down and try again in a minute.</p>\n\
             </body></html>\n",
        );
        let mut conf =
            format!("  limit_req_zone $binary_remote_addr zone=busy:1m rate={rate}r/s;\n");
        for h in hosts {
            write(&dir, &format!("www/{h}/index.html"), &page(h));
            conf.push_str(&format!(
                "  server {{ listen {ip}:{port}; server_name {h}; root {d}/www/{h}; \
                 limit_req zone=busy; limit_req_status 429; error_page 429 =200 /busy.html; \
                 location = /busy.html {{ root {d}/busy; internal; }} }}\n"
            ));
        }
        Nginx::run("nginx (a limit page of 200)", &dir, ip, port, &conf)
    }

    /// nginx on `ip` serving `hosts`, of which those in `failing` answer `status` to
    /// everything (broken sites beside working ones on a shared server), with no limit.
    pub fn some_failing(ip: &str, hosts: &[String], failing: &[String], status: u16) -> Nginx {
        let what = format!("location / {{ return {status}; }}");
        Nginx::some_set_apart(ip, hosts, (failing, &what), "nginx (some sites failing)")
    }

    /// nginx on `ip` serving `hosts`, those in `apart` with the server block lines
    /// `what` (a `location`), the others their own page.
    fn some_set_apart(
        ip: &str,
        hosts: &[String],
        (apart, what): (&[String], &str),
        name: &str,
    ) -> Nginx {
        let dir = scratch("nginx-some-apart");
        let d = dir.display().to_string();
        let port = free_port();
        let mut servers = String::new();
        for h in hosts {
            write(&dir, &format!("www/{h}/index.html"), &page(h));
            let what = if apart.contains(h) { what } else { "" };
            servers.push_str(&format!(
                "  server {{ listen {ip}:{port}; server_name {h}; root {d}/www/{h}; {what} }}\n"
            ));
        }
        Nginx::run(name, &dir, ip, port, &servers)
    }

    /// nginx on `ip` serving `hosts`, of which those in `hanging` pass every request to
    /// `backend` (`ip:port`), an application server that takes connections and never
    /// answers (its workers all waiting on a database that hangs): nginx waits for it
    /// (`proxy_read_timeout`, 60 s) while it answers its other hosts at once.
    pub fn some_hanging(ip: &str, hosts: &[String], hanging: &[String], backend: &str) -> Nginx {
        let what = format!("location / {{ proxy_pass http://{backend}; }}");
        Nginx::some_set_apart(ip, hosts, (hanging, &what), "nginx (some backends hanging)")
    }

    /// nginx on `ip` limiting every client to `burst` requests at once and `per_minute`
    /// after that (`limit_req` with `burst=… nodelay`, one zone for all `hosts`), its
    /// refusal a 503 asking for the pause until the next request is allowed
    /// (`Retry-After`), as operators add to tell clients when to come back.
    pub fn limiting_with_a_pause(ip: &str, hosts: &[String], burst: u32, per_minute: u32) -> Nginx {
        let retry_after = 60 / per_minute.max(1);
        let dir = scratch("nginx-limit-pause");
        let d = dir.display().to_string();
        let port = free_port();
        write(
            &dir,
            "www/slow-down.html",
            "<!doctype html><html><head><title>Slow down</title></head>\
               <body><h1>Slow down</h1><p>Please come back later.</p></body></html>",
        );
        let mut servers =
            format!("  limit_req_zone $binary_remote_addr zone=pause:1m rate={per_minute}r/m;\n");
        for h in hosts {
            write(&dir, &format!("www/{h}/index.html"), &page(h));
            servers.push_str(&format!(
                "  server {{ listen {ip}:{port}; server_name {h}; root {d}/www/{h}; \
                 error_page 503 /slow-down.html; \
                 location = /slow-down.html {{ internal; root {d}/www; add_header Retry-After {retry_after} always; }} \
                 location / {{ limit_req zone=pause burst={burst} nodelay; limit_req_status 503; }} }}\n"
            ));
        }
        Nginx::run("nginx (limit asking a pause)", &dir, ip, port, &servers)
    }

    /// nginx on `ip` serving `hosts`, of which those in `paused` are in maintenance: 503
    /// with a maintenance page and `Retry-After: {retry_after}` (one site of a shared
    /// server switched off while its neighbours work).
    pub fn some_in_maintenance(
        ip: &str,
        hosts: &[String],
        paused: &[String],
        retry_after: u32,
    ) -> Nginx {
        Nginx::some_failing_some_paused(ip, hosts, &[], (paused, retry_after))
    }

    /// nginx on `ip` serving `hosts`, of which those in `failing` answer a bare 503 (a
    /// shared server's front whose backend died, as Apache's `proxy_fcgi` answers for a
    /// PHP-FPM pool that is gone) and those in `paused` are in maintenance as in
    /// [`Nginx::some_in_maintenance`].
    pub fn some_failing_some_paused(
        ip: &str,
        hosts: &[String],
        failing: &[String],
        (paused, retry_after): (&[String], u32),
    ) -> Nginx {
        let dir = scratch("nginx-some-paused");
        let d = dir.display().to_string();
        let port = free_port();
        write(
            &dir,
            "www/pause.html",
            "<!doctype html><html><head><title>Down for maintenance</title></head>\
               <body><h1>We'll be back soon</h1><p>The site is being upgraded.</p></body></html>",
        );
        let mut servers = String::new();
        for h in hosts {
            write(&dir, &format!("www/{h}/index.html"), &page(h));
            let what = if paused.contains(h) {
                format!("error_page 503 /pause.html; location = /pause.html {{ internal; root {d}/www; \
                         add_header Retry-After {retry_after} always; }} location / {{ return 503; }}")
            } else if failing.contains(h) {
                "location / { return 503; }".to_string()
            } else {
                String::new()
            };
            servers.push_str(&format!(
                "  server {{ listen {ip}:{port}; server_name {h}; root {d}/www/{h}; {what} }}\n"
            ));
        }
        Nginx::run(
            "nginx (some sites in maintenance)",
            &dir,
            ip,
            port,
            &servers,
        )
    }

    /// nginx on `ip` with every host of `hosts` in maintenance, as operators switch it
    /// on: a file whose presence makes every request `return 503` with a maintenance page
    /// and `Retry-After: {retry_after}`; [`Nginx::end_maintenance`] removes it.
    pub fn maintenance(ip: &str, hosts: &[String], retry_after: u32) -> Nginx {
        let page = "<!doctype html><html><head><title>Down for maintenance</title></head>\
                    <body><h1>We'll be back soon</h1><p>The county's web site is being \
                    upgraded tonight. Please come back in an hour; for urgent matters call \
                    the office.</p></body></html>";
        Nginx::asking_a_pause(ip, hosts, (503, retry_after), page)
    }

    /// nginx on `ip` throttling every request to `hosts` (a firewall or an application
    /// limiting its clients): 429 with `Retry-After: {retry_after}`, until
    /// [`Nginx::end_maintenance`] lifts it.
    pub fn throttling(ip: &str, hosts: &[String], retry_after: u32) -> Nginx {
        let page = "<!doctype html><html><head><title>Too many requests</title></head>\
                    <body><h1>Too many requests</h1><p>Please slow down and try again \
                    later.</p></body></html>";
        Nginx::asking_a_pause(ip, hosts, (429, retry_after), page)
    }

    /// nginx answering `status` with `page` and `Retry-After` to every request to `hosts`
    /// while its switch file is there.
    fn asking_a_pause(
        ip: &str,
        hosts: &[String],
        (status, retry_after): (u16, u32),
        page: &str,
    ) -> Nginx {
        let dir = scratch("nginx-pause");
        let d = dir.display().to_string();
        let port = free_port();
        write(&dir, "www/pause.html", page);
        write(&dir, "www/index.html", &super::page(&hosts.join(" ")));
        write(&dir, MAINTENANCE_SWITCH, "on");
        let names = hosts.join(" ");
        let server = format!(
            "  server {{\n    listen {ip}:{port};\n    server_name {names};\n    root {d}/www;\n    \
             error_page {status} /pause.html;\n    location = /pause.html {{ internal; \
             add_header Retry-After {retry_after} always; }}\n    location / {{ \
             if (-f {d}/{MAINTENANCE_SWITCH}) {{ return {status}; }} }}\n  }}\n"
        );
        Nginx::run("nginx (asking a pause)", &dir, ip, port, &server)
    }

    /// Switches the maintenance of [`Nginx::maintenance`] (or the throttling of
    /// [`Nginx::throttling`]) off: the sites answer again.
    pub fn end_maintenance(&self) {
        std::fs::remove_file(self.daemon.dir.join(MAINTENANCE_SWITCH)).expect("maintenance off");
    }

    /// nginx on `ip` sending `host`'s pages slowly, as operators cap a connection's
    /// bandwidth: the first `after` bytes at full speed, then `rate` bytes a second
    /// (`limit_rate_after`, `limit_rate`; sizes as nginx writes them, `8k`). `pages` are
    /// (path, content).
    pub fn slow(
        ip: &str,
        host: &str,
        (after, rate): (&str, &str),
        pages: &[(&str, String)],
    ) -> Nginx {
        let dir = scratch("nginx-slow");
        let d = dir.display().to_string();
        let port = free_port();
        for (path, content) in pages {
            write(&dir, &format!("www{path}"), content);
        }
        let server = format!(
            "  server {{ listen {ip}:{port}; server_name {host}; root {d}/www; \
             limit_rate_after {after}; limit_rate {rate}; }}\n"
        );
        Nginx::run("nginx (slow pages)", &dir, ip, port, &server)
    }

    /// nginx with the usual `http` head around `servers` (server blocks, and any more
    /// `http`-level directives), ready once `ip:port` accepts connections. The access
    /// log's last field is `$gzip_ratio` (`-` for an answer sent uncompressed).
    pub fn run(what: &str, dir: &std::path::Path, ip: &str, port: u16, servers: &str) -> Nginx {
        let d = dir.display().to_string();
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx tmp");
        let conf = format!(
            r#"daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  log_format usec '$msec $status $host $gzip_ratio';
  access_log {d}/access.log usec;
  access_log {d}/combined.log combined;
  client_body_temp_path {d}/tmp;
  proxy_temp_path {d}/tmp;
  fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp;
  scgi_temp_path {d}/tmp;
  default_type text/html;
{servers}}}
"#
        );
        let path = write(dir, "nginx.conf", &conf);
        let daemon = Daemon::start(
            what,
            "nginx",
            &[
                "-c".into(),
                path.display().to_string(),
                "-p".into(),
                format!("{d}/"),
                "-e".into(),
                format!("{d}/error.log"),
            ],
            dir,
            &format!("{ip}:{port}"),
        );
        Nginx { daemon, port }
    }

    /// What the access log holds (nginx writes each line when the request ends).
    pub fn hits(&self) -> Hits {
        Hits::parse(&self.daemon.read("access.log"))
    }
}
