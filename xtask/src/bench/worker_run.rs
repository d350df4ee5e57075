//! Worker runs: the helper prefills N jobs and collects the results while a
//! release worker drains them; the collector times first to last result and
//! samples the worker's (and the servers') CPU time and memory from /proc.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use testbed::procs::Guard;

use super::ceilings::{job_url, Ceilings};
use super::setup::{pick_port, picket_check, Bed};
use super::{BenchArgs, Kv, SITE_HOSTS};
use crate::util::{self, median, say};

/// The in-flight run's targets: the helper's hold server on these addresses
/// (spread so that 10000 connections do not share one destination's source
/// ports), through this many host names, each request held this long.
const HOLD_IPS: usize = 20;
const HOLD_HOSTS: usize = 200;
pub const HOLD_SECS: u64 = 15;

/// What the worker runs found.
pub struct Runs {
    /// Each round's rate (jobs/s) and the collector's figures.
    pub rates: Vec<f64>,
    pub mains: Vec<Kv>,
    /// The median round, which stands for all.
    pub main: Kv,
    pub tls: Kv,
    /// The DNS run of the round whose DNS run ÷ main run is the median.
    pub dns: Kv,
    /// Each round's DNS run CPU ÷ its main run's.
    pub dns_ratios: Vec<f64>,
    pub inflight: Option<Inflight>,
}

pub struct Inflight {
    pub kv: Kv,
    /// Worker start to last result, seconds.
    pub wall: f64,
    /// The most connections the hold server had open at once.
    pub hold_peak: Option<String>,
}

/// One worker run's fixed parts.
struct Spec<'a> {
    name: &'a str,
    config: &'a Path,
    jobs: u64,
    url: &'a str,
    hosts: usize,
    /// The collector's time limit, seconds.
    limit: u64,
    perf: bool,
}

impl<'a> Spec<'a> {
    /// A run that drains its jobs within 240 s, without perf.
    fn new(name: &'a str, config: &'a Path, jobs: u64, url: &'a str, hosts: usize) -> Self {
        Spec {
            name,
            config,
            jobs,
            url,
            hosts,
            limit: 240,
            perf: false,
        }
    }
}

pub fn all(args: &BenchArgs, bed: &mut Bed, c: &mut Ceilings) -> Result<Runs> {
    let watch = watch_args(bed)?;
    let rounds = main_rounds(args, bed, c, &watch)?;
    let main = pick_median(bed, "main", &rounds.rates, &rounds.mains)?;
    let dns_ratios: Vec<f64> = rounds
        .mains
        .iter()
        .zip(&rounds.dnses)
        .map(|(m, d)| d.num("cpu_s_per_1000") / m.num("cpu_s_per_1000"))
        .collect();
    let dns = pick_median(bed, "dns", &dns_ratios, &rounds.dnses)?;
    c.note_load();
    let tls = tls_run(args, bed, &watch)?;
    if args.profile {
        c.note_load();
        profile(args, bed, &watch)?;
    }
    let inflight = match args.inflight {
        0 => None,
        n => {
            c.note_load();
            Some(inflight_run(bed, n, watch)?)
        }
    };
    Ok(Runs {
        rates: rounds.rates,
        mains: rounds.mains,
        main,
        tls,
        dns,
        dns_ratios,
        inflight,
    })
}

/// Each round's figures: the main run's rate, the main run, and the DNS run made right
/// after it (the same jobs with every name through dnsmasq), so that the DNS run's CPU is
/// divided by a `dns.static` run of the same minute: this machine's speed moves from one
/// minute to the next more than the ratio's margin.
struct Rounds {
    rates: Vec<f64>,
    mains: Vec<Kv>,
    dnses: Vec<Kv>,
}

/// The main run and its DNS run, `--rounds` times.
fn main_rounds(args: &BenchArgs, bed: &Bed, c: &mut Ceilings, watch: &[String]) -> Result<Rounds> {
    let url = job_url(bed);
    let mut rounds = Rounds {
        rates: Vec::new(),
        mains: Vec::new(),
        dnses: Vec::new(),
    };
    for r in 1..=args.rounds {
        c.note_load();
        let (jobs, ips) = (args.jobs, bed.site_ips.len());
        say!("worker run ({r}/{}): {jobs} jobs over {SITE_HOSTS} host names on {ips} nginx addresses", args.rounds);
        let name = format!("main{r}");
        let (m, _) = worker_run(
            bed,
            &Spec::new(&name, &bed.conf, jobs, &url, SITE_HOSTS),
            watch,
        )?;
        let (unique, secs, rate) = (m.get("unique"), m.get("secs"), m.get("rate"));
        say!(
            "   {unique} results in {secs} s: {rate} jobs/s; not up: {}; {}",
            m.get("not_up"),
            m.get("verdicts")
        );
        if m.get("stopped_by") != "complete" {
            let (by, missing) = (m.get("stopped_by"), m.get("missing"));
            say!("   WARNING: the collector stopped by {by}: {missing} results missing");
        }
        say!(
            "DNS worker run ({r}/{}): the same jobs, every name through dnsmasq (TTL 0)",
            args.rounds
        );
        let name = format!("dns{r}");
        let (d, _) = worker_run(
            bed,
            &Spec::new(&name, &bed.dns_conf, jobs, &url, SITE_HOSTS),
            watch,
        )?;
        let (rate, cpu) = (d.get("rate"), d.get("cpu_s_per_1000"));
        say!(
            "   {rate} jobs/s, {cpu} CPU-s per 1000 ({:.2} × the main run's); not up: {}",
            d.num("cpu_s_per_1000") / m.num("cpu_s_per_1000"),
            d.get("not_up")
        );
        rounds.rates.push(m.num("rate"));
        rounds.mains.push(m);
        rounds.dnses.push(d);
    }
    Ok(rounds)
}

/// The round with the median of `figures` stands for all: its files (`{run}N.*`)
/// are copied to `{run}.*`.
fn pick_median(bed: &Bed, run: &str, figures: &[f64], kvs: &[Kv]) -> Result<Kv> {
    let mid = median(figures);
    let r = figures.iter().position(|x| *x == mid).unwrap_or(0);
    for ext in ["out", "metrics", "redis"] {
        let from = bed.tmp.join(format!("{run}{}.{ext}", r + 1));
        if from.exists() {
            fs::copy(&from, bed.tmp.join(format!("{run}.{ext}")))?;
        }
    }
    // Rates are whole numbers; ratios need their hundredths.
    let digits = if mid >= 100.0 { 0 } else { 2 };
    let all: Vec<String> = figures.iter().map(|x| format!("{x:.digits$}")).collect();
    say!("   {run}: median {mid:.digits$} ({})", all.join(" "));
    kvs.get(r).cloned().ok_or_else(|| anyhow!("no {run} run"))
}

/// Production's shape: TLS with a full handshake per probe.
fn tls_run(args: &BenchArgs, bed: &Bed, watch: &[String]) -> Result<Kv> {
    say!(
        "HTTPS worker run: {} jobs over https (test CA, RSA-2048, no resumption)",
        args.jobs
    );
    let sample = format!("https://site0.bench.test:{}/page?n=0", bed.tls_port);
    let text = picket_check(&bed.picket, &bed.tls_conf, &sample)
        .context("the HTTPS target is not up for picket")?;
    fs::write(bed.tmp.join("tls-sample.json"), text)?;
    let url = format!("https://site{{k}}.bench.test:{}/page?n={{i}}", bed.tls_port);
    let spec = Spec {
        limit: 900,
        ..Spec::new("tls", &bed.tls_conf, args.jobs, &url, SITE_HOSTS)
    };
    let (t, _) = worker_run(bed, &spec, watch)?;
    say!(
        "   {} jobs/s, {} CPU-s per 1000; not up: {}",
        t.get("rate"),
        t.get("cpu_s_per_1000"),
        t.get("not_up")
    );
    Ok(t)
}

/// The servers whose CPU time over each run is reported beside the worker's.
fn watch_args(bed: &Bed) -> Result<Vec<String>> {
    let beam = bed
        .rabbit
        .beam_pid()
        .context("RabbitMQ's VM has no PID file")?;
    let redis = bed.redis.pid().context("redis-server is not running")?;
    let mut watch = vec![format!("rabbitmq:{beam}"), format!("redis:{redis}")];
    if let Some(nginx) = &bed.nginx {
        watch.extend(
            children_of(nginx.pid())
                .into_iter()
                .map(|p| format!("nginx:{p}")),
        );
    }
    Ok(watch)
}

/// The PIDs whose parent is `parent` (nginx's workers), from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| util::parent_of(pid) == Some(parent))
        .collect()
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Prefills the jobs, starts the collector, then the release worker; waits
/// for every result (or the collector's time limit) and leaves the figures
/// in NAME.out, the worker's metrics in NAME.metrics and Redis's command
/// counts in NAME.redis. Returns the figures and when the worker started.
fn worker_run(bed: &Bed, spec: &Spec, watch: &[String]) -> Result<(Kv, u128)> {
    let (tmp, name) = (&bed.tmp, spec.name);
    let config = spec.config.display().to_string();
    let (jobs, hosts) = (spec.jobs.to_string(), spec.hosts.to_string());
    let prefill = util::output(
        "the helper's prefill",
        Command::new(&bed.ceiling).args([
            "prefill", "--config", &config, "--jobs", &jobs, "--url", spec.url, "--hosts", &hosts,
        ]),
    )?;
    fs::write(tmp.join(format!("{name}.prefill")), prefill)?;
    let listen = format!("127.0.0.1:{}", listen_port(spec.config)?);
    let mut collect = collector(bed, spec, watch, &listen)?;
    // Redis's command counters from zero: the run's round trips per job are read after it.
    redis_cli(bed, &["config", "resetstat"])?;
    let start_ms = epoch_ms();
    let log = tmp.join(format!("worker-{name}.log"));
    let mut cmd = Command::new(&bed.picket);
    cmd.args(["worker", "--config", &config]);
    let needle = bed.picket.display().to_string();
    let mut worker = Guard::spawn(&format!("worker-{name}"), &mut cmd, &log, &needle)
        .map_err(anyhow::Error::msg)?;
    fs::write(tmp.join(format!("{name}.pid")), worker.pid().to_string())?;
    let perf = match spec.perf {
        true => Some(start_perf(bed, worker.pid())?),
        false => None,
    };
    drain(&mut collect, &mut worker, &log)?;
    if let Some(mut perf) = perf {
        perf.signal("INT");
        perf.wait(Duration::from_secs(30));
    }
    after_run(bed, name, &listen, worker, &log)?;
    Ok((Kv::read(&tmp.join(format!("{name}.out"))), start_ms))
}

/// Waits while the collector runs: it ends by itself (every result, or its
/// time limit); a worker that dies meanwhile ends the run at once.
fn drain(collect: &mut Guard, worker: &mut Guard, log: &Path) -> Result<()> {
    while collect.is_alive() {
        if !worker.is_alive() {
            bail!("the worker exited during the run:\n{}", util::tail(log, 30));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Saves the worker's metrics and Redis's command counts, stops the worker,
/// and checks that the collector left its figures.
fn after_run(bed: &Bed, name: &str, listen: &str, mut worker: Guard, log: &Path) -> Result<()> {
    let tmp = &bed.tmp;
    let (status, metrics) = util::http_get(listen, "/metrics").unwrap_or((0, String::new()));
    if status == 200 {
        fs::write(tmp.join(format!("{name}.metrics")), metrics)?;
    }
    let counts = redis_cli(bed, &["info", "commandstats"])?;
    fs::write(tmp.join(format!("{name}.redis")), counts)?;
    if !worker.is_alive() {
        bail!("the worker died during the run:\n{}", util::tail(log, 30));
    }
    worker.stop(Duration::from_secs(30));
    let err = tmp.join(format!("{name}.err"));
    eprint!("{}", fs::read_to_string(&err).unwrap_or_default());
    if Kv::read(&tmp.join(format!("{name}.out")))
        .get("stopped_by")
        .is_empty()
    {
        bail!("the collector failed: {}", util::tail(&err, 30));
    }
    Ok(())
}

/// Starts the helper's `collect` (stdout to NAME.out, stderr to NAME.err)
/// and waits until it consumes the results queue.
fn collector(bed: &Bed, spec: &Spec, watch: &[String], listen: &str) -> Result<Guard> {
    let (tmp, name) = (&bed.tmp, spec.name);
    let ready = tmp.join(format!("{name}.ready"));
    let _ = fs::remove_file(tmp.join(format!("{name}.pid")));
    let _ = fs::remove_file(&ready);
    let clk_tck = util::output("getconf CLK_TCK", Command::new("getconf").arg("CLK_TCK"))?;
    let mut cmd = Command::new(&bed.ceiling);
    cmd.arg("collect")
        .arg("--config")
        .arg(spec.config)
        .args([
            "--jobs",
            &spec.jobs.to_string(),
            "--timeout",
            &spec.limit.to_string(),
            "--idle",
            "60",
        ])
        .arg("--pid-file")
        .arg(tmp.join(format!("{name}.pid")))
        .arg("--ready-file")
        .arg(tmp.join(format!("{name}.ready")))
        .args([
            "--clk-tck",
            clk_tck.trim(),
            "--metrics",
            &format!("http://{listen}/metrics"),
        ]);
    for w in watch {
        cmd.args(["--watch", w]);
    }
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(tmp.join(format!("{name}.out")))?)
        .stderr(fs::File::create(tmp.join(format!("{name}.err")))?);
    let needle = bed.ceiling.display().to_string();
    let watchdog_log = tmp.join(format!("collect-{name}.watchdog.log"));
    let mut collect = Guard::start(&format!("collect-{name}"), &mut cmd, &watchdog_log, &needle)
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if !collect.is_alive() || Instant::now() >= deadline {
            let err = util::tail(&tmp.join(format!("{name}.err")), 30);
            bail!("the collector is not consuming: {err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(collect)
}

/// `listen = "HOST:PORT"` of a configuration we wrote: its port.
fn listen_port(config: &Path) -> Result<u16> {
    let text = fs::read_to_string(config)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("listen = \"127.0.0.1:")?
                .strip_suffix('"')?
                .parse()
                .ok()
        })
        .context("no http.listen in the worker's configuration")
}

fn redis_cli(bed: &Bed, args: &[&str]) -> Result<String> {
    util::output(
        "redis-cli",
        Command::new("redis-cli")
            .args(["-p", &bed.redis.port().to_string()])
            .args(args),
    )
}

/// perf record on the worker, attached once the runtime's threads exist
/// (perf -p follows the threads present).
fn start_perf(bed: &Bed, pid: u32) -> Result<Guard> {
    std::thread::sleep(Duration::from_millis(300));
    let data = bed.tmp.join("perf.data");
    let mut cmd = Command::new("perf");
    cmd.args([
        "record",
        "-F",
        "499",
        "--call-graph",
        "dwarf,16384",
        "-p",
        &pid.to_string(),
        "-o",
    ])
    .arg(&data);
    Guard::spawn(
        "perf",
        &mut cmd,
        &bed.tmp.join("perf.log"),
        &data.display().to_string(),
    )
    .map_err(anyhow::Error::msg)
}

/// `--profile`: a second drain under perf record, its report in
/// target/bench/profile.txt.
fn profile(args: &BenchArgs, bed: &Bed, watch: &[String]) -> Result<()> {
    let works = Command::new("perf")
        .args(["record", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        say!("profile: perf record does not work here (perf_event_paranoid?); skipped");
        return Ok(());
    }
    say!(
        "profile: a second drain of {} jobs under perf record -g",
        args.jobs
    );
    let url = job_url(bed);
    let spec = Spec {
        perf: true,
        ..Spec::new("profile", &bed.conf, args.jobs, &url, SITE_HOSTS)
    };
    let (p, _) = worker_run(bed, &spec, watch)?;
    let text = perf_report(&bed.tmp.join("perf.data"), args.jobs);
    fs::write(util::root().join("target/bench/profile.txt"), text)?;
    say!(
        "   perf report: target/bench/profile.txt ({} jobs/s under perf)",
        p.get("rate")
    );
    Ok(())
}

/// What target/bench/profile.txt holds: perf report's views of the drain.
fn perf_report(data: &Path, jobs: u64) -> String {
    let report = |extra: &str| -> String {
        let out = Command::new("perf")
            .arg("report")
            .arg("-i")
            .arg(data)
            .arg("--stdio")
            .args(extra.split_whitespace())
            .stderr(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    // Only the symbol lines (as `grep -E '^ +[0-9]'`), not perf's header.
    let children: String = report("--children --sort sym --percent-limit 4 -g none")
        .lines()
        .filter(|l| l.starts_with(' ') && l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        "# scripts/bench --profile: the worker draining {jobs} jobs under perf record -F 499 --call-graph dwarf\n\
         # Inclusive (children) time of the functions at 4 % and more: where the worker's CPU goes by subsystem:\n{children}\
         # Flat (self time, symbols at 0.5 % and more):\n{}\
         # By shared object:\n{}\
         # With call graphs (perf report --no-children --percent-limit 3 --stdio, callers):\n{}",
        report("--no-children --percent-limit 0.5 -g none"),
        report("--no-children --sort dso -g none"),
        report("--no-children --percent-limit 3 -g caller,0.5,callee --max-stack 24"),
    )
}

/// The in-flight run: every job held open at once by the helper's slow
/// server; the worker's peak memory is the figure.
fn inflight_run(bed: &mut Bed, n: u64, mut watch: Vec<String>) -> Result<Inflight> {
    if bed.nofile < n + 1000 {
        let nofile = bed.nofile;
        say!("WARNING: open files are limited to {nofile} here; {n} connections at once may fail");
    }
    let ips: Vec<String> = (1..=HOLD_IPS).map(|i| format!("127.0.4.{i}")).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let port = pick_port(&ip_refs)?;
    let hold = start_hold(bed, &ips, port, n)?;
    watch.push(format!("hold:{}", hold.pid()));
    bed.hold = Some(hold);
    let listen = pick_port(&["127.0.0.1"])?;
    let config = bed.tmp.join("inflight.toml");
    fs::write(
        &config,
        bed.config(n, listen, n, n, "hold", HOLD_HOSTS, &ips),
    )?;
    let url = format!("http://hold{{k}}.bench.test:{port}/hold?n={{i}}");
    let spec = Spec::new("inflight", &config, n, &url, HOLD_HOSTS);
    let (f, start_ms) = worker_run(bed, &spec, &watch)?;
    let wall = (f.num("last_ms") - start_ms as f64) / 1000.0;
    if let Some(mut hold) = bed.hold.take() {
        hold.stop(Duration::from_secs(10));
    }
    let hold_peak = last_peak(&fs::read_to_string(bed.tmp.join("hold.log")).unwrap_or_default());
    let (up, rss) = (f.get("up"), util::mb(f.get("hwm_kb")));
    say!(
        "   {up} of {n} up in {wall:.1} s; worker peak RSS {rss}; peak in flight {}",
        f.get("peak_in_flight")
    );
    Ok(Inflight {
        kv: f,
        wall,
        hold_peak,
    })
}

/// The helper's hold server on `ips`, for `n` connections at once.
fn start_hold(bed: &Bed, ips: &[String], port: u16, n: u64) -> Result<Guard> {
    let last = &ips[ips.len() - 1];
    say!(
        "in-flight run: hold server on {}..{last}:{port} holds each request {HOLD_SECS} s",
        ips[0]
    );
    let log = bed.tmp.join("hold.log");
    let mut cmd = Command::new(&bed.ceiling);
    cmd.args(["hold", "--ips", &ips.join(","), "--port", &port.to_string()])
        .args(["--hold", &HOLD_SECS.to_string(), "--lifetime", "600"])
        .args(["--max-conns", &(n + 1000).to_string()]);
    let needle = bed.ceiling.display().to_string();
    let mut hold = Guard::spawn("hold", &mut cmd, &log, &needle).map_err(anyhow::Error::msg)?;
    hold.wait_ready(&log, Duration::from_secs(15), || {
        util::listening(last, port)
    })
    .map_err(anyhow::Error::msg)?;
    Ok(hold)
}

/// The last `peak=N` the hold server logged: the most connections it had open.
fn last_peak(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| {
            let digits = l.split_once("peak=")?.1;
            digits
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .map(str::to_string)
        })
        .rfind(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_peak_of_the_hold_log_counts() {
        let log = "listening=20\nhold: open=3 peak=150 served=9 refused=0\nhold: open=0 peak=200 served=200 refused=0\n";
        assert_eq!(last_peak(log).as_deref(), Some("200"));
        assert_eq!(last_peak("nothing"), None);
    }
}
