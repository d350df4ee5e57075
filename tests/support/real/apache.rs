//! Apache 2.4 as Debian ships it, one child process (so mod_evasive has one hit table):
//! name-based virtual hosts on one loopback address, with mod_evasive at its documented
//! defaults (or tighter), mod_qos's per-client request limit, or with ModSecurity and
//! the OWASP CRS at a paranoia level.

use std::path::Path;

use super::{page, scratch, write, Daemon, Hits};
use crate::support::free_port;

const MODULES: &str = "/usr/lib/apache2/modules";

/// mod_evasive's settings; [`Evasive::default`] is the module's documented defaults.
#[derive(Debug, Clone, Copy)]
pub struct Evasive {
    /// DOSPageCount: hits for one (client, URI path) within the page interval.
    pub page_count: u32,
    /// DOSSiteCount: hits from one client within the site interval.
    pub site_count: u32,
    /// DOSBlockingPeriod, seconds.
    pub blocking_period: u32,
}

impl Default for Evasive {
    fn default() -> Evasive {
        Evasive {
            page_count: 2,
            site_count: 50,
            blocking_period: 10,
        }
    }
}

/// The OWASP CRS's DoS protection settings (`tx.dos_*` of crs-setup.conf).
#[derive(Debug, Clone, Copy)]
pub struct Dos {
    /// `tx.dos_counter_threshold`: requests that make a burst.
    pub threshold: u32,
    /// `tx.dos_burst_time_slice`, seconds.
    pub slice_s: u32,
    /// `tx.dos_block_timeout`, seconds.
    pub block_s: u32,
}

/// A running Apache.
pub struct Apache {
    /// The server.
    pub daemon: Daemon,
    /// Its address.
    pub ip: String,
    /// Its port.
    pub port: u16,
}

/// The common head of a configuration: one child process with threads, an access log
/// with µs arrival times, and a page per virtual host.
fn head(dir: &Path, ip: &str, port: u16, hosts: &[String]) -> String {
    let mut conf = format!(
        r#"ServerRoot {dir}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
LogLevel warn
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule mime_module {MODULES}/mod_mime.so
TypesConfig /etc/mime.types
User www-data
Group www-data
StartServers 1
ServerLimit 1
MinSpareThreads 1
MaxSpareThreads 32
ThreadsPerChild 32
MaxRequestWorkers 32
Listen {ip}:{port}
ServerName default.test
LogFormat "%{{usec}}t %>s %{{Host}}i" usec
CustomLog {dir}/access.log usec
DirectoryIndex index.html
DocumentRoot {dir}/www/default
<Directory {dir}/www>
  Require all granted
</Directory>
"#,
        dir = dir.display()
    );
    write(dir, "www/default/index.html", &page("default"));
    conf.push_str(&virtual_hosts(dir, ip, port, hosts));
    conf
}

/// A virtual host with a page of its own for each of `hosts`.
fn virtual_hosts(dir: &Path, ip: &str, port: u16, hosts: &[String]) -> String {
    let mut conf = String::new();
    for h in hosts {
        write(dir, &format!("www/{h}/index.html"), &page(h));
        conf.push_str(&format!(
            "<VirtualHost {ip}:{port}>\n  ServerName {h}\n  DocumentRoot {}/www/{h}\n</VirtualHost>\n",
            dir.display()
        ));
    }
    conf
}

impl Apache {
    fn run(what: &str, dir: &Path, ip: &str, port: u16, conf: &str) -> Apache {
        let path = write(dir, "httpd.conf", conf);
        let daemon = Daemon::start(
            what,
            "apache2",
            &[
                "-f".into(),
                path.display().to_string(),
                "-DFOREGROUND".into(),
            ],
            dir,
            &format!("{ip}:{port}"),
        );
        Apache {
            daemon,
            ip: ip.to_string(),
            port,
        }
    }

    /// Apache serving `hosts` on `ip` and nothing else: no proxy module, so it answers
    /// CONNECT with 405 and serves a request in absolute form (`GET http://x/`) from its
    /// own pages, as any web server does.
    pub fn plain(ip: &str, hosts: &[String]) -> Apache {
        let dir = scratch("apache-plain");
        let port = free_port();
        let conf = head(&dir, ip, port, hosts);
        Apache::run("apache", &dir, ip, port, &conf)
    }

    /// Apache with mod_evasive serving `hosts` on `ip`.
    pub fn evasive(ip: &str, hosts: &[String], e: Evasive) -> Apache {
        let dir = scratch("apache-evasive");
        let port = free_port();
        let mut conf = head(&dir, ip, port, hosts);
        conf.push_str(&format!(
            r#"LoadModule evasive20_module {MODULES}/mod_evasive20.so
<IfModule mod_evasive20.c>
  DOSHashTableSize 3097
  DOSPageCount {}
  DOSSiteCount {}
  DOSPageInterval 1
  DOSSiteInterval 1
  DOSBlockingPeriod {}
  DOSLogDir {}
</IfModule>
"#,
            e.page_count,
            e.site_count,
            e.blocking_period,
            dir.display()
        ));
        Apache::run("apache2 (mod_evasive)", &dir, ip, port, &conf)
    }

    /// Apache with mod_qos limiting each client to `events` requests in `secs` seconds
    /// (`QS_ClientEventLimitCount`, every request an event), as its documentation's
    /// per-client request limit: a client over it is answered mod_qos's default
    /// `QS_ErrorResponseCode`, 500, on every host, while the rest are served.
    pub fn qos(ip: &str, hosts: &[String], events: u32, secs: u32) -> Apache {
        let dir = scratch("apache-qos");
        let port = free_port();
        let mut conf = head(&dir, ip, port, &[]);
        // Debian 12's mod_qos.so was built against libpcre3 and does not load into
        // Debian 12's apache2 (linked with pcre2) without it.
        conf.push_str(&format!(
            "LoadFile /usr/lib/x86_64-linux-gnu/libpcre.so.3\n\
             LoadModule qos_module {MODULES}/mod_qos.so\n\
             LoadModule setenvif_module {MODULES}/mod_setenvif.so\n\
             QS_ClientEntries 10000\n\
             QS_ClientEventLimitCount {events} {secs}\n\
             SetEnvIf Request_URI \"^/\" QS_Limit=yes\n"
        ));
        conf.push_str(&virtual_hosts(&dir, ip, port, hosts));
        Apache::run("apache2 (mod_qos)", &dir, ip, port, &conf)
    }

    /// Apache with ModSecurity and the OWASP CRS (blocking, anomaly scoring) at
    /// `paranoia` serving `hosts` on `ip`.
    pub fn waf(ip: &str, hosts: &[String], paranoia: u8) -> Apache {
        Apache::crs(ip, hosts, paranoia, "")
    }

    /// Apache with ModSecurity and the OWASP CRS at paranoia 1 with its DoS protection
    /// on (rules 912, as crs-setup.conf's rule 900700 turns them on): a client making
    /// two bursts of `dos.threshold` requests within `dos.slice_s` has its connections
    /// dropped without an answer for `dos.block_s`.
    pub fn waf_dos(ip: &str, hosts: &[String], dos: Dos) -> Apache {
        let setup = format!(
            "SecAction \"id:900700,phase:1,nolog,pass,t:none,\
             setvar:'tx.dos_burst_time_slice={}',setvar:'tx.dos_counter_threshold={}',\
             setvar:'tx.dos_block_timeout={}'\"\n",
            dos.slice_s, dos.threshold, dos.block_s
        );
        Apache::crs(ip, hosts, 1, &setup)
    }

    /// ModSecurity with the CRS at `paranoia`, `setup` (more `SecAction`s of
    /// crs-setup.conf's kind) before the rules.
    fn crs(ip: &str, hosts: &[String], paranoia: u8, setup: &str) -> Apache {
        let dir = scratch("apache-waf");
        let port = free_port();
        let mut conf = head(&dir, ip, port, hosts);
        std::fs::create_dir_all(dir.join("modsec")).expect("modsec dir");
        // Its persistent collections (the DoS counters per client) are written by the
        // child, which runs as www-data.
        {
            use std::os::unix::fs::PermissionsExt;
            let open = std::fs::Permissions::from_mode(0o777);
            std::fs::set_permissions(dir.join("modsec"), open).expect("modsec dir mode");
        }
        conf.push_str(&format!(
            r#"LoadModule unique_id_module {MODULES}/mod_unique_id.so
LoadModule security2_module {MODULES}/mod_security2.so
SecRuleEngine On
SecRequestBodyAccess On
SecResponseBodyAccess Off
SecTmpDir {dir}/modsec
SecDataDir {dir}/modsec
SecAuditEngine RelevantOnly
SecAuditLogParts ABHZ
SecAuditLog {dir}/modsec_audit.log
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}"
{setup}Include /etc/modsecurity/crs/crs-setup.conf
Include /usr/share/modsecurity-crs/rules/*.conf
"#,
            dir = dir.display()
        ));
        Apache::run("apache2 (ModSecurity CRS)", &dir, ip, port, &conf)
    }

    /// Apache on `ip` serving `hosts` from the backend at `backend` (`ip:port`) through
    /// mod_proxy, as a shared host passes its sites to PHP-FPM or an application
    /// server: when the backend is gone, every host answers Apache's own 503.
    pub fn proxy(ip: &str, hosts: &[String], backend: &str) -> Apache {
        let dir = scratch("apache-proxy");
        let port = free_port();
        let mut conf = head(&dir, ip, port, &[]);
        conf.push_str(&format!(
            "LoadModule proxy_module {MODULES}/mod_proxy.so
             LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
"
        ));
        for h in hosts {
            conf.push_str(&format!(
                "<VirtualHost {ip}:{port}>
  ServerName {h}
  ProxyPreserveHost On
  \
                 ProxyPass / http://{backend}/
  ProxyPassReverse / http://{backend}/
\
                 </VirtualHost>
"
            ));
        }
        Apache::run("apache2 (mod_proxy)", &dir, ip, port, &conf)
    }

    /// Apache as a forward proxy (`ProxyRequests On`; CONNECT to ports 443 and 563 only,
    /// mod_proxy_connect's default) that hands every request to the upstream proxy at
    /// `upstream` (`ip:port`, `ProxyRemote`), as a branch office chains to its head
    /// office: when that upstream is gone, Apache answers every URL asked of it by name
    /// with its own bare 503.
    pub fn forward_proxy(ip: &str, upstream: &str) -> Apache {
        Apache::forwarding(ip, &format!("ProxyRemote * http://{upstream}"))
    }

    /// Apache as a forward proxy of its own (CONNECT to ports 443 and 563 only), looking
    /// names up with the system's resolver, which knows none of the tests' names: a URL
    /// asked of it by name gets its own "500 Proxy Error" page.
    pub fn forward_proxy_alone(ip: &str) -> Apache {
        Apache::forwarding(ip, "")
    }

    fn forwarding(ip: &str, remote: &str) -> Apache {
        let dir = scratch("apache-forward");
        let port = free_port();
        let mut conf = head(&dir, ip, port, &[]);
        conf.push_str(&format!(
            "LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
LoadModule proxy_connect_module {MODULES}/mod_proxy_connect.so
ProxyRequests On
AllowCONNECT 443 563
{remote}
<Proxy *>
  Require all granted
</Proxy>
"
        ));
        Apache::run("apache2 (forward proxy)", &dir, ip, port, &conf)
    }

    /// Apache over TLS 1.2 with HTTP/2 serving `host` on `ip`, asking for an optional
    /// client certificate under `/secure/` only, as intranet and e-government sites
    /// ask for smart cards on a login path: mod_http2 cannot renegotiate, so it resets
    /// a request for that path with `HTTP_1_1_REQUIRED`, and browsers ask again over
    /// HTTP/1.1, where mod_ssl renegotiates. `cert` and `key` are the site's (PEM),
    /// `ca` the file of the CA client certificates may come from.
    pub fn tls_h2_client_cert_path(
        ip: &str,
        host: &str,
        (cert, key): (&str, &str),
        ca: &Path,
    ) -> Apache {
        let dir = scratch("apache-h2-client-cert");
        let port = free_port();
        let cert = write(&dir, "site.crt", cert);
        let key = write(&dir, "site.key", key);
        write(&dir, &format!("www/{host}/secure/index.html"), &page(host));
        let mut conf = head(&dir, ip, port, &[]);
        conf.push_str(&format!(
            "LoadModule ssl_module {MODULES}/mod_ssl.so
LoadModule socache_shmcb_module {MODULES}/mod_socache_shmcb.so
LoadModule http2_module {MODULES}/mod_http2.so
SSLSessionCache shmcb:{dir}/ssl_scache(512000)
<VirtualHost {ip}:{port}>
  ServerName {host}
  DocumentRoot {dir}/www/{host}
  Protocols h2 http/1.1
  SSLEngine on
  SSLProtocol -all +TLSv1.2
  SSLCertificateFile {cert}
  SSLCertificateKeyFile {key}
  SSLCACertificateFile {ca}
  <Location /secure/>
    SSLVerifyClient optional
    SSLVerifyDepth 2
  </Location>
</VirtualHost>
",
            dir = dir.display(),
            cert = cert.display(),
            key = key.display(),
            ca = ca.display(),
        ));
        write(&dir, &format!("www/{host}/index.html"), &page(host));
        Apache::run("apache2 (TLS, HTTP/2)", &dir, ip, port, &conf)
    }

    /// What the access log holds.
    pub fn hits(&self) -> Hits {
        Hits::parse(&self.daemon.read("access.log"))
    }

    /// The error log (mod_evasive's and ModSecurity's refusals are written there).
    pub fn errors(&self) -> String {
        self.daemon.read("error.log")
    }
}
