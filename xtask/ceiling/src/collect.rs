//! `collect`: the results of a worker run, timed from first to last, with the
//! worker's CPU time and peak RSS sampled from `/proc`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;

use crate::{deadline, load, per_second, RunArgs};

pub(crate) struct CollectOptions {
    pub(crate) pid_file: PathBuf,
    pub(crate) ready_file: PathBuf,
    pub(crate) clk_tck: u64,
    pub(crate) idle: Duration,
    pub(crate) metrics: Option<String>,
    pub(crate) watch: Vec<(String, u32)>,
}

pub(crate) fn parse_watch(items: &[String]) -> Result<Vec<(String, u32)>> {
    items
        .iter()
        .map(|item| {
            let (name, pid) = item
                .split_once(':')
                .ok_or_else(|| anyhow!("--watch {item}: expected NAME:PID"))?;
            let pid = pid
                .parse()
                .with_context(|| format!("--watch {item}: bad PID"))?;
            Ok((name.to_string(), pid))
        })
        .collect()
}

/// CPU time of the watched processes and of the whole machine at one moment.
pub(crate) struct CpuSnapshot {
    worker: Option<f64>,
    watched: Vec<Option<f64>>,
    /// (busy, total) jiffies of all CPUs, from /proc/stat.
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    fn take(pid: Option<u32>, opts: &CollectOptions) -> CpuSnapshot {
        CpuSnapshot {
            worker: pid.and_then(|p| cpu_seconds(p, opts.clk_tck)),
            watched: opts
                .watch
                .iter()
                .map(|(_, p)| cpu_seconds(*p, opts.clk_tck))
                .collect(),
            machine: machine_jiffies(),
        }
    }
}

/// Busy and total jiffies over all CPUs (idle and iowait are not busy).
pub(crate) fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// This process's CPU seconds so far. /proc counts in USER_HZ, which is 100 on Linux
/// whatever the kernel's own tick rate.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id(), 100)
}

pub(crate) fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(own_cpu_seconds()? - start?)
}

/// What a ceiling's own client spent: the floor of the same work inside a worker.
pub(crate) fn print_client_cpu(cpu: Option<f64>, n: usize) {
    if let Some(cpu) = cpu {
        println!("cpu_s={cpu:.2}");
        println!("cpu_s_per_1000={:.3}", cpu * 1000.0 / n.max(1) as f64);
    }
}

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
pub(crate) fn cpu_seconds(pid: u32, clk_tck: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck.max(1) as f64)
}

/// A `kB` line of /proc/PID/status, e.g. `VmHWM`.
pub(crate) fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub(crate) fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Polls the worker's metrics for the highest `picket_jobs_in_flight` seen.
pub(crate) async fn watch_in_flight(url: String, peak: Arc<AtomicU64>) {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(text) = resp.text().await else {
            continue;
        };
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix("picket_jobs_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if let Some(v) = value {
            peak.fetch_max(v.max(0.0) as u64, Ordering::Relaxed);
        }
    }
}

/// The results of a run, counted as they arrive.
#[derive(Default)]
struct Tally {
    seen: HashSet<String>,
    kinds: BTreeMap<String, usize>,
    examples: Vec<String>,
    totals_ms: Vec<u64>,
    results: usize,
    duplicates: usize,
    unparsable: usize,
    up: usize,
    bytes: usize,
}

impl Tally {
    /// Counts one result message.
    fn take(&mut self, data: &[u8]) {
        self.results += 1;
        self.bytes += data.len();
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(data) else {
            self.unparsable += 1;
            return;
        };
        let text = |k: &str| report.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        if !self.seen.insert(text("job_id").to_string()) {
            self.duplicates += 1;
            return;
        }
        let verdict = text("verdict");
        *self
            .kinds
            .entry(format!("{verdict}/{}", text("reason")))
            .or_default() += 1;
        if verdict == "up" {
            self.up += 1;
        } else if self.examples.len() < 5 {
            self.examples.push(format!(
                "{} {verdict}/{}: {}",
                text("url"),
                text("reason"),
                text("detail")
            ));
        }
        if let Some(ms) = report
            .get("timing_ms")
            .and_then(|t| t.get("total"))
            .and_then(serde_json::Value::as_u64)
        {
            self.totals_ms.push(ms);
        }
    }

    /// Prints the counts of `n` expected jobs as `key=value` lines.
    fn print_counts(&self, n: usize) {
        let unique = self.seen.len();
        println!("expected={n}");
        println!("results={}", self.results);
        println!("unique={unique}");
        println!("missing={}", n.saturating_sub(unique));
        println!("duplicates={}", self.duplicates);
        println!("unparsable={}", self.unparsable);
        println!("up={}", self.up);
        println!("not_up={}", unique - self.up);
    }

    /// Prints the sizes, probe times and verdicts (and up to five results not up).
    fn print_shape(&mut self) {
        self.totals_ms.sort_unstable();
        let totals = &self.totals_ms;
        println!(
            "result_bytes={}",
            self.bytes.checked_div(self.results).unwrap_or(0)
        );
        println!("probe_ms_p50={}", percentile(totals, 0.5));
        println!("probe_ms_p99={}", percentile(totals, 0.99));
        println!("probe_ms_max={}", totals.last().copied().unwrap_or(0));
    }

    fn print_verdicts(&self) {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!("verdicts={}", kinds.join(","));
        for e in &self.examples {
            eprintln!("collect: not up: {e}");
        }
    }
}

/// When the first and the last result came, and why taking stopped.
struct Span {
    first: Option<(Instant, u128, CpuSnapshot)>,
    last: (Instant, u128),
    stopped_by: &'static str,
    pid: Option<u32>,
}

/// Takes results until `n` distinct jobs are answered, the deadline passes, or none came
/// for `opts.idle` after the first. The worker's CPU is sampled at the first result.
async fn drain(
    consumer: &mut lapin::Consumer,
    n: usize,
    deadline: tokio::time::Instant,
    opts: &CollectOptions,
    tally: &mut Tally,
) -> Result<Span> {
    let mut span = Span {
        first: None,
        last: (Instant::now(), 0),
        stopped_by: "complete",
        pid: None,
    };
    while tally.seen.len() < n {
        let wait_until = match span.first {
            None => deadline,
            Some(_) => deadline.min(tokio::time::Instant::now() + opts.idle),
        };
        let Ok(next) = tokio::time::timeout_at(wait_until, consumer.next()).await else {
            span.stopped_by = if span.first.is_some() && wait_until < deadline {
                "idle"
            } else {
                "timeout"
            };
            break;
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => bail!(
                "collect: the consumer ended after {} results",
                tally.results
            ),
        };
        let now = Instant::now();
        if span.first.is_none() {
            span.pid = read_pid(&opts.pid_file);
            span.first = Some((now, epoch_ms(), CpuSnapshot::take(span.pid, opts)));
        }
        span.last = (now, epoch_ms());
        tally.take(&delivery.data);
    }
    Ok(span)
}

/// Consumes the results queue (no acks: the collector must never be what limits the
/// rate it measures), and says it is ready in `opts.ready_file`.
async fn results_consumer(
    conn: &Connection,
    settings: &picket::config::Settings,
    opts: &CollectOptions,
) -> Result<lapin::Consumer> {
    let ch = conn.create_channel().await?;
    picket::amqp::declare(conn, &settings.amqp).await?;
    ch.basic_qos(4096, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            settings.amqp.results_queue.as_str().into(),
            "picket-bench-collect".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    std::fs::write(&opts.ready_file, "ready\n")
        .with_context(|| format!("{}: cannot write", opts.ready_file.display()))?;
    Ok(consumer)
}

pub(crate) async fn collect(run: &RunArgs, opts: &CollectOptions) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let n = run.jobs;
    let conn = picket::amqp::connect(&settings.amqp, "picket bench collect").await?;
    let mut consumer = results_consumer(&conn, &settings, opts).await?;
    let peak_in_flight = Arc::new(AtomicU64::new(0));
    let watcher = opts
        .metrics
        .clone()
        .map(|url| tokio::spawn(watch_in_flight(url, peak_in_flight.clone())));
    let mut tally = Tally::default();
    let span = drain(&mut consumer, n, deadline, opts, &mut tally).await?;
    let cpu_last = CpuSnapshot::take(span.pid, opts);
    let hwm_kb = span.pid.and_then(|p| status_kb(p, "VmHWM"));
    let rss_kb = span.pid.and_then(|p| status_kb(p, "VmRSS"));
    if let Some(w) = watcher {
        w.abort();
    }
    let _ = conn.close(200, "done".into()).await;

    let unique = tally.seen.len();
    let (secs, first_ms, cpu_first) = match span.first {
        Some((at, ms, cpu)) => ((span.last.0 - at).as_secs_f64(), ms, Some(cpu)),
        None => (0.0, 0, None),
    };
    println!("stopped_by={}", span.stopped_by);
    tally.print_counts(n);
    println!("first_ms={first_ms}");
    println!("last_ms={}", span.last.1);
    println!("secs={secs:.3}");
    println!("rate={:.0}", per_second(unique.saturating_sub(1), secs));
    if let Some(a) = &cpu_first {
        print_cpu(a, &cpu_last, unique, opts);
    }
    if let Some(kb) = hwm_kb {
        println!("hwm_kb={kb}");
    }
    if let Some(kb) = rss_kb {
        println!("rss_kb={kb}");
    }
    tally.print_shape();
    if opts.metrics.is_some() {
        println!("peak_in_flight={}", peak_in_flight.load(Ordering::Relaxed));
    }
    tally.print_verdicts();
    Ok(())
}

/// CPU used between two snapshots: the worker's (also per 1000 results), each watched
/// name's, and how busy the whole machine was.
pub(crate) fn print_cpu(a: &CpuSnapshot, b: &CpuSnapshot, unique: usize, opts: &CollectOptions) {
    if let Some(y) = b.worker {
        // Since the worker started: includes its start and what came before the first result.
        println!("cpu_total_s={y:.2}");
    }
    if let (Some(x), Some(y)) = (a.worker, b.worker) {
        let cpu = y - x;
        println!("cpu_s={cpu:.2}");
        if unique > 1 {
            println!("cpu_s_per_1000={:.3}", cpu * 1000.0 / (unique - 1) as f64);
        }
    }
    let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
    for (i, (name, _)) in opts.watch.iter().enumerate() {
        if let (Some(Some(x)), Some(Some(y))) = (a.watched.get(i), b.watched.get(i)) {
            *by_name.entry(name).or_default() += y - x;
        }
    }
    for (name, cpu) in by_name {
        println!("cpu_{name}={cpu:.2}");
    }
    if let (Some((busy0, total0)), Some((busy1, total1))) = (a.machine, b.machine) {
        let total = total1.saturating_sub(total0).max(1);
        let busy = busy1.saturating_sub(busy0);
        println!("machine_busy_pct={:.0}", busy as f64 * 100.0 / total as f64);
    }
}
