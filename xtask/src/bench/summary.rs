//! The summary: target/bench/latest.md (the tables docs/BENCHMARKS.md quotes)
//! and the raw figures beside it.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::ceilings::Ceilings;
use super::setup::Bed;
use super::worker_run::{Runs, HOLD_SECS};
use super::{BenchArgs, CONCURRENCY};
use crate::util::{mb, median};

/// Whole numbers, space-separated, as the script listed each round's figures.
fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_ratios(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes latest.md and copies the runs' raw figures to `out`; returns the summary.
pub fn write(args: &BenchArgs, bed: &Bed, c: &Ceilings, runs: &Runs, out: &Path) -> Result<String> {
    let mut s = String::new();
    header(&mut s, args, bed, c);
    main_table(&mut s, args, bed, c, runs);
    production(&mut s, c, runs);
    if let Some(f) = &runs.inflight {
        inflight(&mut s, args, f);
    }
    redis_and_metrics(&mut s, args, bed);
    fs::write(out.join("latest.md"), &s)?;
    for run in ["main", "tls", "dns", "inflight", "profile"] {
        for ext in ["metrics", "out"] {
            let from = bed.tmp.join(format!("{run}.{ext}"));
            if fs::metadata(&from).is_ok_and(|m| m.len() > 0) {
                fs::copy(&from, out.join(format!("{run}.{ext}")))?;
            }
        }
    }
    let _ = fs::copy(bed.tmp.join("wrk.out"), out.join("wrk.out"));
    Ok(s)
}

/// A program's version line, or "?".
fn version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .map_or_else(|| "?".to_string(), |v| v.trim().to_string())
}

fn header(s: &mut String, args: &BenchArgs, bed: &Bed, c: &Ceilings) {
    let now = version("date", &["-u", "+%Y-%m-%dT%H:%MZ"]);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(": ")
                .map(|(_, m)| m.to_string())
        })
        .unwrap_or_default();
    let kernel = version("uname", &["-r"]);
    let rabbit = version("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"]);
    let nginx = version(&bed.nginx_bin.display().to_string(), &["-v"]);
    let nginx = nginx.rsplit('/').next().unwrap_or("?");
    let redis = version("redis-server", &["--version"]);
    let redis = redis
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("?");
    let mut shared = if c.busy_max > 0 {
        format!("up to {} compiler processes (rustc, cc, ld, cargo) seen during the measurements: the machine was shared", c.busy_max)
    } else {
        "no compiler process seen during the measurements".to_string()
    };
    let _ = write!(shared, "; load average before them {}", c.load_start);
    let _ = writeln!(
        s,
        "### Run of {now}: `scripts/bench --jobs {} --inflight {} --rounds {} --threads {}{}{}`\n",
        args.jobs,
        args.inflight,
        args.rounds,
        args.threads,
        if args.ips == 8 {
            String::new()
        } else {
            format!(" --ips {}", args.ips)
        },
        args.picket
            .as_ref()
            .map(|p| format!(" --picket {}", p.display()))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "Machine: {cpus} × {model}; Linux {kernel}; {}; RabbitMQ {rabbit}, nginx {nginx}, Redis {redis}. Other load: {shared}.\n",
        version("rustc", &["-V"])
    );
}

/// `a / b` to `digits` places, or "" when `b` is not positive (as the
/// script's awk printed nothing).
fn ratio(a: f64, b: f64, digits: usize) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.*}", digits, a / b)
    } else {
        String::new()
    }
}

/// A figure, or "-" when it is missing.
fn or_dash(v: &str) -> &str {
    if v.is_empty() {
        "-"
    } else {
        v
    }
}

fn main_table(s: &mut String, args: &BenchArgs, bed: &Bed, c: &Ceilings, runs: &Runs) {
    let m = &runs.main;
    let rate = median(&runs.rates);
    let cpu_all: Vec<&str> = runs.mains.iter().map(|k| k.get("cpu_s_per_1000")).collect();
    let (b_in_cpu, b_out_cpu, h_cpu) = (
        median(&c.b_in_cpus),
        median(&c.b_out_cpus),
        median(&c.h_cpus),
    );
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let rows = [
        ("N (jobs, and messages per ceiling)".to_string(), args.jobs.to_string()),
        (
            format!("worker throughput, first → last result (median of {} runs: {})", args.rounds, list(&runs.rates)),
            format!("**{rate:.0} jobs/s** ({} results in {} s)", m.get("unique"), m.get("secs")),
        ),
        (
            format!("B_in: broker delivery ceiling (persistent, manual acks, prefetch {CONCURRENCY}; median of {})", list(&c.b_ins)),
            format!("{:.0} msgs/s", median(&c.b_ins)),
        ),
        (
            format!("B_out: confirmed publish ceiling (persistent, {CONCURRENCY} in flight; median of {})", list(&c.b_outs)),
            format!("{:.0} msgs/s", median(&c.b_outs)),
        ),
        (
            format!("H: nginx, new connection per request (wrk -t2 -c16 -d5s, {}-byte page; median of {})", bed.page_bytes, list(&c.hs)),
            format!("{:.0} req/s", median(&c.hs)),
        ),
        (
            format!("H_reqwest: a bare reqwest client doing H's requests (16 at once, 5 s; median of {})", list(&c.hrs)),
            format!("{:.0} req/s, {:.3} CPU-s per 1000 requests", median(&c.hrs), median(&c.hr_cpus)),
        ),
        ("C = 1 / (1/B_in + 1/B_out + 1/H)".to_string(), format!("{:.0} jobs/s", c.c())),
        ("jobs/s ÷ C (target ≥ 0.8)".to_string(), format!("**{}**", ratio(rate, c.c(), 2))),
        (
            format!("worker CPU-s per 1000 probes (the median run; all runs: {})", cpu_all.join(" ")),
            format!("**{}** ({} CPU-s over the run)", or_dash(m.get("cpu_s_per_1000")), m.get("cpu_s")),
        ),
        (
            "the ceilings' own clients, CPU-s per 1000: B_in consumer + B_out publisher + wrk (medians)".to_string(),
            format!("{b_in_cpu:.3} + {b_out_cpu:.3} + {h_cpu:.3} = {:.3}", c.floor_cpu()),
        ),
        (
            "worker CPU ÷ the ceilings' clients (target ≤ 2)".to_string(),
            format!("**{}**", ratio(m.num("cpu_s_per_1000"), c.floor_cpu(), 1)),
        ),
        (
            "the same floor with the bare reqwest client in wrk's place; worker ÷ it".to_string(),
            format!(
                "{:.3}; {}",
                c.reqwest_floor_cpu(),
                ratio(m.num("cpu_s_per_1000"), c.reqwest_floor_cpu(), 1)
            ),
        ),
        ("worker peak RSS (VmHWM)".to_string(), mb(m.get("hwm_kb"))),
        ("results not up".to_string(), format!("{} of {} ({})", m.get("not_up"), m.get("unique"), m.get("verdicts"))),
        (
            "probe time (timing_ms.total) p50 / p99 / max".to_string(),
            format!("{} / {} / {} ms", m.get("probe_ms_p50"), m.get("probe_ms_p99"), m.get("probe_ms_max")),
        ),
        ("peak picket_jobs_in_flight (sampled every 250 ms)".to_string(), m.get("peak_in_flight").to_string()),
        (
            "CPU-s during the run: worker / RabbitMQ / Redis / nginx; machine busy".to_string(),
            format!(
                "{} / {} / {} / {}; {} % of {cpus} cores",
                m.get("cpu_s"), m.get("cpu_rabbitmq"), m.get("cpu_redis"), m.get("cpu_nginx"), m.get("machine_busy_pct")
            ),
        ),
    ];
    table(s, &rows);
}

fn table(s: &mut String, rows: &[(String, String)]) {
    s.push_str("| figure | value |\n| --- | --- |\n");
    for (figure, value) in rows {
        let _ = writeln!(s, "| {figure} | {value} |");
    }
}

fn production(s: &mut String, c: &Ceilings, runs: &Runs) {
    let (t, d) = (&runs.tls, &runs.dns);
    let (ht, ht_cpu, q, q_cpu) = (
        median(&c.hts),
        median(&c.ht_cpus),
        median(&c.qs),
        median(&c.q_cpus),
    );
    let tls_floor = median(&c.b_in_cpus) + median(&c.b_out_cpus) + ht_cpu;
    s.push_str("\nProduction's shape: the HTTPS run once, the DNS run in every round right after its main run (N jobs each; the round with the median ratio shown), against ceilings measured in every round.\n\n");
    let rows = [
        (
            format!(
                "H_tls: nginx over TLS 1.3, full handshake per request (wrk; median of {})",
                list(&c.hts)
            ),
            format!("{ht:.0} req/s, {ht_cpu:.3} CPU-s per 1000 requests"),
        ),
        (
            "HTTPS worker run: throughput; not up".to_string(),
            format!(
                "{} jobs/s; {} of {} ({})",
                t.get("rate"),
                t.get("not_up"),
                t.get("unique"),
                t.get("verdicts")
            ),
        ),
        (
            "HTTPS worker CPU-s per 1000 probes; ÷ (B_in + B_out clients + wrk over TLS)"
                .to_string(),
            format!(
                "**{}**; {} × {tls_floor:.3}",
                t.get("cpu_s_per_1000"),
                ratio(t.num("cpu_s_per_1000"), tls_floor, 2)
            ),
        ),
        (
            format!(
                "D: dnsperf against dnsmasq, TTL 0 (median of {})",
                list(&c.qs)
            ),
            format!("{q:.0} queries/s, {q_cpu:.4} CPU-s per 1000 queries"),
        ),
        (
            "DNS worker run (the median round): throughput; not up".to_string(),
            format!(
                "{} jobs/s; {} of {} ({})",
                d.get("rate"),
                d.get("not_up"),
                d.get("unique"),
                d.get("verdicts")
            ),
        ),
        (
            format!(
                "DNS worker CPU-s per 1000 probes; ÷ the dns.static run of its round (target ≤ 1.3; median of {})",
                list_ratios(&runs.dns_ratios)
            ),
            format!(
                "**{}**; {:.2} ×",
                d.get("cpu_s_per_1000"),
                median(&runs.dns_ratios)
            ),
        ),
    ];
    table(s, &rows);
}

fn inflight(s: &mut String, args: &BenchArgs, f: &super::worker_run::Inflight) {
    let k = &f.kv;
    let _ = writeln!(
        s,
        "\nIn-flight run: each request held {HOLD_SECS} s by the helper's server on 20 addresses; probe.concurrency = amqp.prefetch = {}.\n",
        args.inflight
    );
    let rows = [
        ("N (jobs)".to_string(), args.inflight.to_string()),
        (
            "peak picket_jobs_in_flight (sampled) / peak open connections at the server"
                .to_string(),
            format!(
                "{} / {}",
                k.get("peak_in_flight"),
                f.hold_peak.as_deref().unwrap_or("-")
            ),
        ),
        (
            "worker peak RSS (VmHWM) (target ≤ 150 MB)".to_string(),
            format!("**{}**", mb(k.get("hwm_kb"))),
        ),
        (
            "completed up".to_string(),
            format!(
                "{} of {} ({})",
                k.get("up"),
                args.inflight,
                k.get("verdicts")
            ),
        ),
        (
            "wall time, worker start → last result".to_string(),
            format!("{:.1} s", f.wall),
        ),
        (
            "worker CPU-s, start → last result (per 1000 probes)".to_string(),
            format!(
                "{} ({:.3})",
                k.get("cpu_total_s"),
                k.num("cpu_total_s") * 1000.0 / args.inflight as f64
            ),
        ),
    ];
    table(s, &rows);
}

/// Redis commands per job over a run, in all and by command, from INFO
/// commandstats (`cmdstat_evalsha:calls=N,...`; EVALSHA is one round trip
/// running one script).
fn redis_per_job(text: &str, jobs: f64) -> String {
    let mut calls: Vec<(&str, f64)> = text
        .lines()
        .filter_map(|l| {
            let (cmd, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let n = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((cmd, n.parse().ok()?))
        })
        .collect();
    calls.sort_by(|a, b| a.0.cmp(b.0));
    let total: f64 = calls.iter().map(|(_, n)| n).sum();
    let each: Vec<String> = calls
        .iter()
        .map(|(cmd, n)| format!("{cmd} {:.2}", n / jobs))
        .collect();
    format!("{:.2} ({})", total / jobs, each.join(", "))
}

/// A metric's value, summed over its labels (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let key = cols.next()?;
            let matches = key == name || key.starts_with(&format!("{name}{{"));
            matches.then(|| cols.next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// Lines at level WARN or ERROR in the logs of the worker runs named RUN*.
fn warnings(tmp: &Path, run: &str) -> usize {
    let Ok(entries) = fs::read_dir(tmp) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("worker-{run}"))
                && name.ends_with(".log")
                && !name.ends_with(".watchdog.log")
        })
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .map(|log| {
            log.lines()
                .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
                .count()
        })
        .sum()
}

fn redis_and_metrics(s: &mut String, args: &BenchArgs, bed: &Bed) {
    let read = |name: &str| fs::read_to_string(bed.tmp.join(name)).unwrap_or_default();
    for run in ["main", "tls", "dns"] {
        let text = read(&format!("{run}.redis"));
        if !text.trim().is_empty() {
            let _ = writeln!(
                s,
                "\nRedis commands per job in the {run} run: {}.",
                redis_per_job(&text, args.jobs as f64)
            );
        }
    }
    for run in ["main", "inflight"] {
        let m = read(&format!("{run}.metrics"));
        if m.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\nWorker metrics after the {run} run: warnings or errors logged {}, jobs_deferred {}, throttle_waits {}, redis_errors {}, publish_failures {}, limiter_fallback {}.",
            warnings(&bed.tmp, run),
            metric(&m, "picket_jobs_deferred_total"),
            metric(&m, "picket_throttle_waits_total"),
            metric(&m, "picket_redis_errors_total"),
            metric(&m, "picket_publish_failures_total"),
            metric(&m, "picket_limiter_fallback"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_per_job_sums_calls_by_command() {
        let info = "# Commandstats\r\ncmdstat_zrem:calls=50,usec=9\r\ncmdstat_evalsha:calls=200,usec=1,usec_per_call=0.1\r\n";
        assert_eq!(redis_per_job(info, 100.0), "2.50 (evalsha 2.00, zrem 0.50)");
    }

    #[test]
    fn metric_sums_over_labels() {
        let text = "# HELP x\npicket_x_total{a=\"1\"} 2\npicket_x_total{a=\"2\"} 3\npicket_x_total_other 7\n";
        assert_eq!(metric(text, "picket_x_total"), 5.0);
        assert_eq!(metric(text, "picket_absent"), 0.0);
    }

    #[test]
    fn ratio_is_empty_without_a_divisor() {
        assert_eq!(ratio(1.0, 4.0, 2), "0.25");
        assert_eq!(ratio(1.0, 0.0, 2), "");
    }
}
