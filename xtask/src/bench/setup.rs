//! The benchmark's bed: the testbed's RabbitMQ and Redis, nginx with a test
//! CA's certificate, dnsmasq, and the workers' configurations, all on
//! loopback in a temp dir.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use testbed::procs::Guard;
use testbed::{RabbitServer, RedisServer};

use super::{site_ips, BenchArgs, Bins, CONCURRENCY, SITE_HOSTS};
use crate::util::{self, say};

/// dnsmasq's address for the DNS run.
pub const DNS_IP: &str = "127.0.5.1";

pub struct Bed {
    pub tmp: PathBuf,
    pub picket: PathBuf,
    pub ceiling: PathBuf,
    pub threads: u64,
    /// Open files for every process we start: 65536, or the hard limit when
    /// that is lower (raising it needs privileges a container may lack).
    pub nofile: u64,
    /// The sites' addresses (`--ips`).
    pub site_ips: Vec<String>,
    pub site_port: u16,
    pub tls_port: u16,
    pub dns_port: u16,
    pub metrics_port: u16,
    pub page_bytes: usize,
    pub nginx_bin: PathBuf,
    pub conf: PathBuf,
    pub tls_conf: PathBuf,
    pub dns_conf: PathBuf,
    /// The slow server of the in-flight run, once started.
    pub hold: Option<Guard>,
    pub dnsmasq: Option<Guard>,
    pub nginx: Option<Guard>,
    pub redis: RedisServer,
    pub rabbit: RabbitServer,
}

impl Bed {
    pub fn start(args: &BenchArgs, bins: &Bins, tmp: &Path) -> Result<Bed> {
        let nofile = raise_nofile();
        // The broker boots (seconds) while nginx and dnsmasq are set up.
        let rabbit = std::thread::spawn(RabbitServer::launch);
        let redis = RedisServer::launch().map_err(|e| anyhow!("starting redis-server: {e}"))?;
        let ips = site_ips(args.ips);
        let site_ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let site_port = pick_port(&site_ips)?;
        let tls_port = pick_port(&site_ips)?;
        make_certs(tmp)?;
        let (nginx, nginx_bin, page_bytes) =
            start_nginx(tmp, nofile, (site_port, tls_port), &site_ips)?;
        let dns_port = pick_port(&[DNS_IP])?;
        let dnsmasq = start_dnsmasq(tmp, dns_port, &site_ips)?;
        let rabbit = rabbit
            .join()
            .map_err(|_| anyhow!("starting RabbitMQ panicked"))?
            .map_err(|e| anyhow!("starting RabbitMQ: {e}"))?;
        say!(
            "RabbitMQ on 127.0.0.1:{}, Redis on 127.0.0.1:{} (data in {} and {})",
            rabbit.port(),
            redis.port(),
            rabbit.dir().display(),
            tmp.display()
        );
        let bed = Bed {
            tmp: tmp.to_path_buf(),
            picket: bins.picket.clone(),
            ceiling: bins.ceiling.clone(),
            threads: args.threads,
            nofile,
            site_ips: ips,
            site_port,
            tls_port,
            dns_port,
            metrics_port: pick_port(&["127.0.0.1"])?,
            page_bytes,
            nginx_bin,
            conf: tmp.join("bench.toml"),
            tls_conf: tmp.join("bench-tls.toml"),
            dns_conf: tmp.join("bench-dns.toml"),
            hold: None,
            dnsmasq: Some(dnsmasq),
            nginx: Some(nginx),
            redis,
            rabbit,
        };
        bed.write_configs()?;
        bed.check_sample()?;
        Ok(bed)
    }

    /// Stops everything in the reverse order of its start.
    pub fn stop(&mut self) {
        for guard in [&mut self.hold, &mut self.dnsmasq, &mut self.nginx] {
            if let Some(mut g) = guard.take() {
                g.stop(Duration::from_secs(15));
            }
        }
        self.redis.stop();
        self.rabbit.stop();
    }

    /// The worker configurations of the three runs: dns.static, HTTPS with
    /// the test CA, and names through dnsmasq.
    fn write_configs(&self) -> Result<()> {
        let site = self.config(
            CONCURRENCY,
            self.metrics_port,
            1000,
            CONCURRENCY,
            "site",
            SITE_HOSTS,
            &self.site_ips,
        );
        fs::write(&self.conf, &site)?;
        let ca = self.tmp.join("ca.pem");
        fs::write(
            &self.tls_conf,
            format!("{site}\n[tls]\nextra_ca_file = \"{}\"\n", ca.display()),
        )?;
        let dns = self.config(
            CONCURRENCY,
            self.metrics_port,
            1000,
            CONCURRENCY,
            "site",
            0,
            &self.site_ips,
        );
        fs::write(
            &self.dns_conf,
            format!(
                "{dns}\n[dns]\nnameservers = [\"{DNS_IP}:{}\"]\n",
                self.dns_port
            ),
        )?;
        Ok(())
    }

    /// A worker configuration; names PREFIX0.bench.test... map round-robin
    /// onto `ips`.
    #[allow(clippy::too_many_arguments)]
    pub fn config(
        &self,
        conc: u64,
        listen: u16,
        burst: u64,
        max_inflight: u64,
        prefix: &str,
        hosts: usize,
        ips: &[String],
    ) -> String {
        let mut text = format!(
            r#"# Written by cargo xtask bench. Keys not set here keep their defaults.
[amqp]
url = "{amqp}"
prefetch = {conc}

[redis]
url = "{redis}"

[probe]
concurrency = {conc}

[rate_limit.per_ip]
# High enough never to throttle the benchmark (every target is one of a few IPs).
rate = 100000.0
burst = {burst}
max_inflight = {max_inflight}

[targets]
# The targets are on loopback, which picket refuses by default.
allow_private = true

[http]
listen = "127.0.0.1:{listen}"

[log]
# The default level: a job span per job; results that are "up" are logged at debug.
level = "info"
format = "json"

[worker]
name = "bench"
threads = {threads}

[dns.static]
"#,
            amqp = self.rabbit.url(),
            redis = self.redis.url(),
            threads = self.threads,
        );
        for k in 0..hosts {
            let _ = writeln!(
                text,
                "\"{prefix}{k}.bench.test\" = \"{}\"",
                ips[k % ips.len()]
            );
        }
        text
    }

    /// One real result, from the same engine, for B_out's message size; it
    /// also proves the target is up before anything is measured.
    fn check_sample(&self) -> Result<()> {
        let url = format!("http://site0.bench.test:{}/page?n=0", self.site_port);
        say!("picket check {url}");
        let sample = picket_check(&self.picket, &self.conf, &url)
            .context("the benchmark's target is not up for picket")?;
        fs::write(self.tmp.join("sample.json"), &sample)?;
        fs::write(self.tmp.join("result.json"), sample.replace('\n', ""))?;
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `picket check --config CONFIG URL`: its JSON result, or an error that shows it.
pub fn picket_check(picket: &Path, config: &Path, url: &str) -> Result<String> {
    let out = Command::new(picket)
        .arg("check")
        .arg("--config")
        .arg(config)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{url}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// Raises this process's soft limit of open files (its children inherit it).
fn raise_nofile() -> u64 {
    let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return 1024;
    };
    let want = hard.min(65536);
    match rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard) {
        Ok(()) => want,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
    }
}

/// A port below the ephemeral range that no one listens on at `ips`.
pub fn pick_port(ips: &[&str]) -> Result<u16> {
    for _ in 0..200 {
        let port = testbed::free_port();
        if !ips.iter().any(|ip| util::listening(ip, port)) {
            return Ok(port);
        }
    }
    bail!("no free port found on {}", ips.join(" "))
}

/// A test CA and an RSA-2048 leaf for *.bench.test, trusted by the HTTPS
/// run through tls.extra_ca_file.
fn make_certs(tmp: &Path) -> Result<()> {
    fs::write(
        tmp.join("leaf.ext"),
        "subjectAltName=DNS:*.bench.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    // No argument holds a space, so each step is one string.
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 365 \
         -subj /CN=picket-bench-ca -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign",
        "req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj /CN=bench.test",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
         -days 365 -extfile leaf.ext",
    ];
    for step in steps {
        util::output(
            "openssl",
            Command::new("openssl")
                .args(step.split_whitespace())
                .current_dir(tmp),
        )?;
    }
    // nginx's workers run as nobody when started by root: they must read these.
    for f in ["ca.pem", "leaf.pem", "ca.key", "leaf.key"] {
        chmod(&tmp.join(f), 0o644)?;
    }
    chmod(tmp, 0o755)
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// A real-looking page of about 16 KB: a title, navigation, articles. None
/// of it matches picket's soft-failure or bot-wall patterns
/// (src/probe/judge.rs). Cut to 16 KB, then the document is closed properly.
fn page() -> String {
    let mut full = String::from(include_str!("page_head.html"));
    for n in 1..=40 {
        full.push_str(&include_str!("page_article.html").replace("$n", &n.to_string()));
    }
    full.push_str(include_str!("page_foot.html"));
    let mut cut = 16384.min(full.len());
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n</article></main></body></html>\n", &full[..cut])
}

/// nginx on every site address, plain HTTP and TLS with a full handshake on
/// every connection (no session cache, no tickets), for picket and wrk alike.
fn start_nginx(
    tmp: &Path,
    nofile: u64,
    (site_port, tls_port): (u16, u16),
    ips: &[&str],
) -> Result<(Guard, PathBuf, usize)> {
    let last = ips.last().copied().context("no site address")?;
    let ng = tmp.join("nginx");
    fs::create_dir_all(ng.join("html"))?;
    fs::create_dir_all(ng.join("tmp"))?;
    chmod(&ng, 0o755)?;
    chmod(&ng.join("html"), 0o755)?;
    let page = page();
    fs::write(ng.join("html/page.html"), &page)?;
    chmod(&ng.join("html/page.html"), 0o644)?;
    let listen: String = ips
        .iter()
        .map(|ip| format!("        listen {ip}:{site_port}; listen {ip}:{tls_port} ssl;\n"))
        .collect();
    let conf = include_str!("nginx.conf")
        .replace("$nofile", &nofile.to_string())
        .replace("$listen_lines", &listen)
        .replace("$ng", &ng.display().to_string())
        .replace("$tmp", &tmp.display().to_string());
    fs::write(ng.join("nginx.conf"), conf)?;
    let bin = testbed::procs::find_binary("nginx", &["/usr/sbin"])
        .context("nginx not found (scripts/deps --bench installs it)")?;
    say!(
        "starting nginx on {} addresses, {}..{}:{site_port} (page: {} bytes)",
        ips.len(),
        ips[0],
        last,
        page.len()
    );
    let log = ng.join("nginx.log");
    let mut cmd = Command::new(&bin);
    cmd.arg("-p")
        .arg(&ng)
        .arg("-e")
        .arg(ng.join("error.log"))
        .arg("-c")
        .arg(ng.join("nginx.conf"));
    let mut nginx = Guard::spawn("nginx", &mut cmd, &log, &ng.display().to_string())
        .map_err(anyhow::Error::msg)?;
    nginx
        .wait_ready(&log, Duration::from_secs(15), || {
            util::listening(last, site_port)
        })
        .map_err(anyhow::Error::msg)?;
    Ok((nginx, bin, page.len()))
}

/// dnsmasq for the DNS run: authoritative for bench.test (AAAA gets NODATA,
/// as from a real server), TTL 0 so that every probe's name is asked.
fn start_dnsmasq(tmp: &Path, port: u16, ips: &[&str]) -> Result<Guard> {
    let hosts: String = (0..SITE_HOSTS)
        .map(|k| format!("{} site{k}.bench.test\n", ips[k % ips.len()]))
        .collect();
    let hosts_file = tmp.join("dns.hosts");
    fs::write(&hosts_file, hosts)?;
    chmod(&hosts_file, 0o644)?;
    let queries: String = (0..SITE_HOSTS)
        .map(|k| format!("site{k}.bench.test A\n"))
        .collect();
    fs::write(tmp.join("dns.queries"), queries)?;
    let user = util::output("id -un", Command::new("id").arg("-un"))?;
    let bin = testbed::procs::find_binary("dnsmasq", &["/usr/sbin", "/sbin"])
        .context("dnsmasq not found (scripts/deps --bench installs it)")?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--local=/bench.test/",
        "--local-ttl=0",
        "--bind-interfaces",
    ])
    .arg(format!("--addn-hosts={}", hosts_file.display()))
    .arg(format!("--listen-address={DNS_IP}"))
    .arg(format!("--port={port}"))
    .arg(format!("--pid-file={}", tmp.join("dnsmasq.pid").display()))
    .arg(format!("--user={}", user.trim()))
    .arg(format!(
        "--log-facility={}",
        tmp.join("dnsmasq.qlog").display()
    ));
    Guard::spawn(
        "dnsmasq",
        &mut cmd,
        &tmp.join("dnsmasq.log"),
        &hosts_file.display().to_string(),
    )
    .map_err(anyhow::Error::msg)
}
