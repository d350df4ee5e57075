//! The machine's ceilings, each measured `--rounds` times: B_in and B_out
//! (the helper's lean lapin clients), H and H_tls (wrk against nginx, a new
//! connection per request), H_reqwest (a bare reqwest client doing H's requests) and D (dnsperf against dnsmasq). The clients'
//! own CPU time per 1000 operations is kept beside each rate.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::setup::{Bed, DNS_IP};
use super::{BenchArgs, Kv, CONCURRENCY, SITE_HOSTS};
use crate::util::{self, median, say};

/// Every round's figures, in the order measured.
#[derive(Default)]
pub struct Ceilings {
    pub b_ins: Vec<f64>,
    pub b_outs: Vec<f64>,
    pub hs: Vec<f64>,
    pub hrs: Vec<f64>,
    pub hts: Vec<f64>,
    pub qs: Vec<f64>,
    pub b_in_cpus: Vec<f64>,
    pub b_out_cpus: Vec<f64>,
    pub h_cpus: Vec<f64>,
    pub hr_cpus: Vec<f64>,
    pub ht_cpus: Vec<f64>,
    pub q_cpus: Vec<f64>,
    /// /proc/loadavg's first three fields before the first measurement.
    pub load_start: String,
    /// The most compiler processes seen before any measurement.
    pub busy_max: usize,
}

impl Ceilings {
    /// C = 1 / (1/B_in + 1/B_out + 1/H): the medians' combined ceiling.
    pub fn c(&self) -> f64 {
        1.0 / (1.0 / median(&self.b_ins) + 1.0 / median(&self.b_outs) + 1.0 / median(&self.hs))
    }

    /// What the ceilings' clients spent per 1000 messages or requests (medians).
    pub fn floor_cpu(&self) -> f64 {
        median(&self.b_in_cpus) + median(&self.b_out_cpus) + median(&self.h_cpus)
    }

    /// The same floor with a bare reqwest client in wrk's place: what a worker built on
    /// reqwest and lapin could spend at the least.
    pub fn reqwest_floor_cpu(&self) -> f64 {
        median(&self.b_in_cpus) + median(&self.b_out_cpus) + median(&self.hr_cpus)
    }

    /// Counts compilers running now: they distort the figures, and the
    /// summary says so.
    pub fn note_load(&mut self) {
        self.busy_max = self.busy_max.max(compilers_running());
    }
}

/// The job URLs of the main run; `{k}` is the host's number, `{i}` the job's.
pub fn job_url(bed: &Bed) -> String {
    format!("http://site{{k}}.bench.test:{}/page?n={{i}}", bed.site_port)
}

pub fn measure(args: &BenchArgs, bed: &Bed) -> Result<Ceilings> {
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut c = Ceilings {
        load_start: loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        ..Ceilings::default()
    };
    for r in 1..=args.rounds {
        let round = format!("{r}/{}", args.rounds);
        brokers(args, bed, &round, &mut c)?;
        http_and_dns(bed, &round, &mut c)?;
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (b_in, b_out, h) = (median(&c.b_ins), median(&c.b_outs), median(&c.hs));
    say!(
        "   medians: B_in {b_in:.0} ({}), B_out {b_out:.0} ({}), H {h:.0} ({})",
        list(&c.b_ins),
        list(&c.b_outs),
        list(&c.hs)
    );
    say!("   C = 1 / (1/B_in + 1/B_out + 1/H) = {:.0} jobs/s", c.c());
    let (b_in, b_out, h) = (
        median(&c.b_in_cpus),
        median(&c.b_out_cpus),
        median(&c.h_cpus),
    );
    let sum = c.floor_cpu();
    say!("   clients' CPU-s per 1000: B_in {b_in:.3}, B_out {b_out:.3}, wrk {h:.3}; sum {sum:.3}");
    say!(
        "   a bare reqwest client: {:.0} requests/s ({}), {:.3} CPU-s per 1000",
        median(&c.hrs),
        list(&c.hrs),
        median(&c.hr_cpus)
    );
    Ok(c)
}

/// H and H_tls (wrk against nginx) and D (dnsperf against dnsmasq).
fn http_and_dns(bed: &Bed, round: &str, c: &mut Ceilings) -> Result<()> {
    c.note_load();
    let url = format!("http://{}:{}/page?n=1", bed.site_ips[0], bed.site_port);
    say!("H ({round}): wrk -t2 -c16 -d5s -H 'Connection: close' {url}");
    let (rate, cpu, errors) = wrk(&url, &bed.tmp.join("wrk.out"))?;
    c.hs.push(rate);
    c.h_cpus.push(cpu);
    say!("   H = {rate:.0} requests/s {errors}");
    c.note_load();
    say!("H_reqwest ({round}): a bare reqwest client, 16 at once for 5 s, {url}");
    let out = ceiling(bed, &["h-reqwest", "--url", &url])?;
    if out.get("errors") != "0" {
        bail!("H_reqwest: {} requests failed", out.get("errors"));
    }
    c.hrs.push(out.num("rate"));
    c.hr_cpus.push(out.num("cpu_s_per_1000"));
    say!("   H_reqwest = {} requests/s", out.get("rate"));
    c.note_load();
    let url = format!("https://{}:{}/page?n=1", bed.site_ips[0], bed.tls_port);
    say!("H_tls ({round}): wrk -t2 -c16 -d5s -H 'Connection: close' {url} (a full handshake each)");
    let (rate, cpu, _) = wrk(&url, &bed.tmp.join("wrk-tls.out"))?;
    c.hts.push(rate);
    c.ht_cpus.push(cpu);
    say!("   H_tls = {rate:.0} requests/s");
    c.note_load();
    let port = bed.dns_port;
    say!("D ({round}): dnsperf -c 4 -l 5 against dnsmasq ({DNS_IP}:{port}, TTL 0)");
    let (rate, cpu) = dnsperf(bed)?;
    c.qs.push(rate);
    c.q_cpus.push(cpu);
    say!("   D = {rate:.0} queries/s");
    Ok(())
}

/// B_in and B_out: the helper fills and drains a queue, then publishes with
/// confirms, `--jobs` messages each.
fn brokers(args: &BenchArgs, bed: &Bed, round: &str, c: &mut Ceilings) -> Result<()> {
    let jobs = args.jobs.to_string();
    let conf = bed.conf.display().to_string();
    c.note_load();
    say!("B_in ({round}): {jobs} persistent messages into a durable queue, drained with acks (prefetch {CONCURRENCY})");
    let hosts = SITE_HOSTS.to_string();
    let out = ceiling(
        bed,
        &[
            "b-in",
            "--config",
            &conf,
            "--jobs",
            &jobs,
            "--url",
            &job_url(bed),
            "--hosts",
            &hosts,
        ],
    )?;
    c.b_ins.push(out.num("rate"));
    c.b_in_cpus.push(out.num("cpu_s_per_1000"));
    say!("   B_in = {} msgs/s", out.get("rate"));
    c.note_load();
    say!("B_out ({round}): {jobs} persistent confirmed publishes to a durable topic exchange, {CONCURRENCY} in flight");
    let payload = bed.tmp.join("result.json").display().to_string();
    let inflight = CONCURRENCY.to_string();
    let out = ceiling(
        bed,
        &[
            "b-out",
            "--config",
            &conf,
            "--jobs",
            &jobs,
            "--payload",
            &payload,
            "--inflight",
            &inflight,
        ],
    )?;
    if out.get("unconfirmed") != "0" {
        bail!("B_out: some publishes were not confirmed");
    }
    c.b_outs.push(out.num("rate"));
    c.b_out_cpus.push(out.num("cpu_s_per_1000"));
    say!("   B_out = {} msgs/s", out.get("rate"));
    Ok(())
}

/// Runs the helper to completion and reads its `key=value` lines.
pub fn ceiling(bed: &Bed, args: &[&str]) -> Result<Kv> {
    let out = util::output(
        "the helper (ceiling)",
        Command::new(&bed.ceiling).args(args),
    )?;
    Ok(Kv::parse(&out))
}

/// Runs `CMD... && times` in sh under `timeout 60`, its output to `out`:
/// the shell's `times` (second line: its children) gives the client's own
/// CPU time, which a process of ours could only read with unsafe code.
fn timed(cmd: &[&str], out: &Path) -> Result<String> {
    let script = r#""$@" && times"#;
    let run = Command::new("timeout")
        .args(["60", "sh", "-c", script, "sh"])
        .args(cmd)
        .output()
        .with_context(|| format!("cannot run {}", cmd[0]))?;
    let mut text = String::from_utf8_lossy(&run.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&run.stderr));
    fs::write(out, &text)?;
    if !run.status.success() {
        bail!("{} failed ({}):\n{text}", cmd[0], run.status);
    }
    Ok(text)
}

/// The children's user + system seconds from `times`' last line
/// ("0m1.234s 0m2.345s").
fn times_cpu(text: &str) -> Option<f64> {
    let secs = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    text.lines().rev().find_map(|line| {
        let (user, sys) = line.trim().split_once(' ')?;
        Some(secs(user)? + secs(sys)?)
    })
}

/// wrk with a new connection per request: requests/s, CPU-s per 1000
/// requests, and its error lines (socket errors, non-2xx).
fn wrk(url: &str, out: &Path) -> Result<(f64, f64, String)> {
    let text = timed(
        &["wrk", "-t2", "-c16", "-d5s", "-H", "Connection: close", url],
        out,
    )?;
    let field = |prefix: &str, i: usize| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(prefix))?;
        line.split_whitespace().nth(i)?.parse().ok()
    };
    let Some(rate) = field("Requests/sec:", 1) else {
        bail!("no Requests/sec in wrk's output:\n{text}");
    };
    let n = field(" requests in ", 0).unwrap_or(0.0);
    let cpu = match times_cpu(&text) {
        Some(cpu) if n > 0.0 => cpu * 1000.0 / n,
        _ => f64::NAN,
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .collect();
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!("({})", errors.join(" "))
    };
    Ok((rate.round(), cpu, errors))
}

/// dnsperf against dnsmasq: queries/s and CPU-s per 1000 queries.
fn dnsperf(bed: &Bed) -> Result<(f64, f64)> {
    let port = bed.dns_port.to_string();
    let queries = bed.tmp.join("dns.queries").display().to_string();
    let text = timed(
        &[
            "dnsperf", "-s", DNS_IP, "-p", &port, "-d", &queries, "-l", "5", "-c", "4", "-Q",
            "200000",
        ],
        &bed.tmp.join("dnsperf.out"),
    )?;
    let field = |prefix: &str, i: usize| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(prefix))?;
        line.split_whitespace().nth(i)?.parse().ok()
    };
    let rate = field("Queries per second:", 3).context("no queries/s in dnsperf's output")?;
    let n = field("Queries completed:", 2).unwrap_or(0.0);
    let cpu = match times_cpu(&text) {
        Some(cpu) if n > 0.0 => cpu * 1000.0 / n,
        _ => f64::NAN,
    };
    Ok((rate.round(), cpu))
}

/// Processes named rustc, cc1, cc1plus, ld or cargo (as `ps -C` counted
/// them), except the cargo that runs us (`cargo xtask bench`).
fn compilers_running() -> usize {
    const NAMES: [&str; 5] = ["rustc", "cc1", "cc1plus", "ld", "cargo"];
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let ours = ancestors();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
            pid.is_some_and(|pid| !ours.contains(&pid))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .filter(|comm| NAMES.contains(&comm.trim()))
        .count()
}

/// This process and its parents, up to init.
fn ancestors() -> Vec<u32> {
    let mut chain = vec![std::process::id()];
    while let Some(&pid) = chain.last() {
        match util::parent_of(pid) {
            Some(p) if p > 1 && !chain.contains(&p) => chain.push(p),
            _ => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_reads_the_childrens_line() {
        let text = "Requests/sec: 1.0\n0m0.010s 0m0.020s\n1m1.500s 0m2.250s\n";
        assert_eq!(times_cpu(text), Some(63.75));
        assert_eq!(times_cpu("no times here"), None);
    }
}
