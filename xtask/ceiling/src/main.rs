//! The benchmark's helper: the parts of `cargo xtask bench` that measure the broker and
//! time a worker run, built in release mode beside the worker so that its own cost is
//! a lean client's.
//!
//! - `b-in`: the broker's delivery ceiling. Fills a durable queue with persistent
//!   job-sized messages, then drains it with manual acks at the worker's prefetch.
//! - `b-out`: the broker's confirmed-publish ceiling. Publishes result-sized persistent
//!   messages to a durable topic exchange the way the worker does (one confirmed publish
//!   per result through `picket::amqp::publish_confirmed`, many in flight on one channel).
//! - `prefill`: declares picket's topology (`picket::amqp::declare`, so the arguments are
//!   the worker's own) and fills the jobs queue.
//! - `collect`: reads the results of a worker run, times first to last result, checks the
//!   verdicts, and samples the worker's CPU time and peak RSS from `/proc`.
//! - `hold`: a slow HTTP server for the in-flight run: it reads the request, waits, then
//!   answers 200 with a small page.
//!
//! Everything it talks to is on loopback; every wait is bounded. Each subcommand prints
//! `key=value` lines on stdout for `cargo xtask bench` (and `scripts/bench-probe`) to
//! read. By hand: `cargo run --release -p ceiling -- b-in --config bench.toml --jobs 20000`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use picket::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// Confirms awaited together when filling a queue.
const WINDOW: usize = 1000;
/// The queue `b-in` fills and drains.
const IN_QUEUE: &str = "picket.bench.in";
/// The exchange and queue `b-out` publishes to.
const OUT_NAME: &str = "picket.bench.out";
/// A result as the worker publishes it, for `b-out` when no `--payload` is given.
const SAMPLE_RESULT: &str = r#"{"job_id":"bench-1234567","url":"http://site123.bench.test:8080/page?n=1234567","verdict":"up","reason":"ok","detail":"200 OK, 16384 bytes in 3 ms","http":{"status":200,"body_bytes":16384,"final_url":"http://site123.bench.test:8080/page?n=1234567","redirects":0,"charset":"utf-8"},"timing_ms":{"total":3,"dns":0,"first_byte":2,"queue":0},"ip":"127.0.3.4","egress":"direct","attempts":1,"attempt_log":[{"egress":"direct","verdict":"up","reason":"ok","detail":"200 OK, 16384 bytes in 3 ms","ip":"127.0.3.4","total_ms":3}],"checked_at":"2026-01-01T00:00:00.000Z","cached":false,"previous_verdict":null,"changed":true,"worker":"bench-host-12345","meta":null}"#;

#[derive(Parser)]
#[command(
    name = "ceiling",
    about = "cargo xtask bench's helper: broker ceilings, prefill, result timing, a slow server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// B_in: fill a durable queue with N persistent job-sized messages, then drain it
    /// with manual acks at prefetch = amqp.prefetch.
    BIn {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        shape: JobShape,
    },
    /// B_out: publish N persistent result-sized messages with confirms to a durable
    /// topic exchange, `--inflight` at a time on one channel.
    BOut {
        #[command(flatten)]
        run: RunArgs,
        /// A result message (JSON file) to publish; default: a built-in sample.
        #[arg(long, value_name = "FILE")]
        payload: Option<PathBuf>,
        /// Publishes awaiting their confirm at once (the worker: probe.concurrency).
        #[arg(long, default_value_t = 512)]
        inflight: usize,
    },
    /// Declare picket's topology and publish N jobs to the jobs queue, with confirms.
    Prefill {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        shape: JobShape,
    },
    /// Read N results of a worker run from the results queue and time them.
    Collect {
        #[command(flatten)]
        run: RunArgs,
        /// File the script writes the worker's PID to once it started it.
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
        /// Created once consuming, so the worker is started after the collector listens.
        #[arg(long, value_name = "FILE")]
        ready_file: PathBuf,
        /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
        #[arg(long, default_value_t = 100)]
        clk_tck: u64,
        /// After the first result, give up when no result came for this many seconds.
        #[arg(long, default_value_t = 60)]
        idle: u64,
        /// The worker's metrics URL, polled for the peak of picket_jobs_in_flight.
        #[arg(long, value_name = "URL")]
        metrics: Option<String>,
        /// Another process whose CPU time over the same window is reported as
        /// `cpu_NAME` (repeat; a name given several times is summed).
        #[arg(long, value_name = "NAME:PID")]
        watch: Vec<String>,
    },
    /// Serve slow pages: read the request head, wait, answer 200 with a small page.
    Hold {
        /// Loopback addresses to listen on, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ips: Vec<IpAddr>,
        #[arg(long)]
        port: u16,
        /// Seconds each request is held before the answer.
        #[arg(long, default_value_t = 15)]
        hold: u64,
        /// Seconds the server runs at most.
        #[arg(long, default_value_t = 900)]
        lifetime: u64,
        /// Connections served at once at most; more are closed at once.
        #[arg(long, default_value_t = 30_000)]
        max_conns: usize,
        /// Size of the page's body.
        #[arg(long, default_value_t = 1024)]
        body_bytes: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// picket configuration file: its [amqp] section names the broker and queues.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Messages.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

#[derive(Args)]
struct JobShape {
    /// Job URL; `{k}` becomes the host number (i mod --hosts), `{i}` the job number.
    #[arg(
        long,
        default_value = "http://site{k}.bench.test:8080/page?n={i}",
        value_name = "TEMPLATE"
    )]
    url: String,
    /// Host numbers `{k}` cycles through.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
}

impl JobShape {
    /// Job `i`: `{"url": ..., "id": "bench-i"}`.
    fn job(&self, i: usize) -> Vec<u8> {
        let url = self
            .url
            .replace("{k}", &(i % self.hosts.max(1)).to_string())
            .replace("{i}", &i.to_string());
        serde_json::json!({ "url": url, "id": format!("bench-{i}") })
            .to_string()
            .into_bytes()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ceiling: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::BIn { run, shape } => b_in(&run, &shape).await,
            Command::BOut {
                run,
                payload,
                inflight,
            } => b_out(&run, payload.as_deref(), inflight).await,
            Command::Prefill { run, shape } => prefill(&run, &shape).await,
            Command::Collect {
                run,
                pid_file,
                ready_file,
                clk_tck,
                idle,
                metrics,
                watch,
            } => {
                let opts = CollectOptions {
                    pid_file,
                    ready_file,
                    clk_tck,
                    idle: Duration::from_secs(idle),
                    metrics,
                    watch: parse_watch(&watch)?,
                };
                collect(&run, &opts).await
            }
            Command::Hold {
                ips,
                port,
                hold,
                lifetime,
                max_conns,
                body_bytes,
            } => {
                let opts = HoldOptions {
                    hold: Duration::from_secs(hold),
                    lifetime: Duration::from_secs(lifetime),
                    max_conns,
                    body_bytes,
                };
                serve_hold(&ips, port, &opts).await
            }
        }
    });
    // The runtime may hold tasks blocked on sockets; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Settings> {
    let settings = Settings::load(Some(path))?;
    let url = url::Url::parse(&settings.amqp.url).context("amqp.url")?;
    // For a non-special scheme like amqp the host is not parsed as an address: parse it.
    let host = url.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("amqp.url must be on loopback for a benchmark, not {host:?}");
    }
    Ok(settings)
}

async fn connect(settings: &Settings, name: &str) -> Result<(Connection, Channel)> {
    let conn = picket::amqp::connect(&settings.amqp, name).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Publishes `n` messages made by `body`, awaiting confirms in windows of [`WINDOW`].
async fn publish_all(
    ch: &Channel,
    queue: &str,
    n: usize,
    deadline: tokio::time::Instant,
    body: impl Fn(usize) -> Vec<u8>,
) -> Result<()> {
    let mut start = 0;
    while start < n {
        let end = (start + WINDOW).min(n);
        let mut pending = Vec::with_capacity(end - start);
        for i in start..end {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body(i),
                    persistent().with_message_id(format!("bench-{i}").as_str().into()),
                )
                .await?;
            pending.push(confirm);
        }
        for confirm in pending {
            let confirmation =
                tokio::time::timeout_at(deadline, confirm)
                    .await
                    .map_err(|_| {
                        anyhow!("publishing to {queue}: out of time after {start} messages")
                    })??;
            if confirmation.is_nack() {
                bail!("the broker refused a message for {queue} (nack)");
            }
        }
        start = end;
    }
    Ok(())
}

fn deadline(run: &RunArgs) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(run.timeout)
}

fn per_second(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

async fn b_in(run: &RunArgs, shape: &JobShape) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let (conn, ch) = connect(&settings, "picket bench b-in").await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    ch.queue_declare(IN_QUEUE.into(), durable(), args).await?;
    ch.queue_purge(IN_QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    let n = run.jobs;
    let size = shape.job(n / 2).len();
    publish_all(&ch, IN_QUEUE, n, deadline, |i| shape.job(i)).await?;

    let consume = conn.create_channel().await?;
    consume
        .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            IN_QUEUE.into(),
            "picket-bench-in".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Acked from their own tasks, as the worker does.
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicUsize::new(0));
    let mut first = None;
    let mut cpu_first = None;
    let mut last = Instant::now();
    for got in 0..n {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .map_err(|_| anyhow!("b-in: {got} of {n} delivered before the timeout"))?;
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("b-in: the consumer ended after {got} of {n}"),
        };
        last = Instant::now();
        if first.is_none() {
            first = Some(last);
            cpu_first = own_cpu_seconds();
        }
        let failed = failed.clone();
        tracker.spawn(async move {
            if delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .is_err()
            {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tracker.close();
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .map_err(|_| anyhow!("b-in: acks still pending at the timeout"))?;
    let cpu = cpu_since(cpu_first);
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let _ = ch
        .queue_delete(IN_QUEUE.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    println!("messages={n}");
    println!("message_bytes={size}");
    println!("secs={secs:.3}");
    println!("rate={:.0}", per_second(n.saturating_sub(1), secs));
    println!("ack_failures={}", failed.load(Ordering::Relaxed));
    print_client_cpu(cpu, n);
    Ok(())
}

async fn b_out(run: &RunArgs, payload: Option<&Path>, inflight: usize) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let payload = match payload {
        Some(p) => std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?,
        None => SAMPLE_RESULT.as_bytes().to_vec(),
    };
    let payload = Arc::new(payload);
    let (conn, ch) = connect(&settings, "picket bench b-out").await?;
    ch.exchange_declare(
        OUT_NAME.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(OUT_NAME.into(), durable(), FieldTable::default())
        .await?;
    ch.queue_purge(OUT_NAME.into(), QueuePurgeOptions::default())
        .await?;
    ch.queue_bind(
        OUT_NAME.into(),
        OUT_NAME.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;

    let n = run.jobs;
    let permits = Arc::new(Semaphore::new(inflight.max(1)));
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let cpu_start = own_cpu_seconds();
    for i in 0..n {
        let permit = tokio::time::timeout_at(deadline, permits.clone().acquire_owned())
            .await
            .map_err(|_| anyhow!("b-out: {i} of {n} published before the timeout"))??;
        let ch = ch.clone();
        let payload = payload.clone();
        let failed = failed.clone();
        tracker.spawn(async move {
            let props = persistent().with_message_id(format!("bench-{i}").as_str().into());
            let to = (OUT_NAME, "up");
            let route = picket::amqp::Route::Optional;
            if picket::amqp::publish_confirmed(&ch, to, route, &payload, props)
                .await
                .is_err()
            {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    tracker.close();
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .map_err(|_| anyhow!("b-out: confirms still pending at the timeout"))?;
    let cpu = cpu_since(cpu_start);
    let secs = start.elapsed().as_secs_f64();
    let _ = ch
        .queue_delete(OUT_NAME.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(OUT_NAME.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    let failed = failed.load(Ordering::Relaxed);
    println!("messages={n}");
    println!("message_bytes={}", payload.len());
    println!("inflight={inflight}");
    println!("secs={secs:.3}");
    println!("rate={:.0}", per_second(n - failed, secs));
    println!("unconfirmed={failed}");
    print_client_cpu(cpu, n);
    Ok(())
}

async fn prefill(run: &RunArgs, shape: &JobShape) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let (conn, ch) = connect(&settings, "picket bench prefill").await?;
    picket::amqp::declare(&conn, &settings.amqp).await?;
    let a = &settings.amqp;
    for q in [&a.jobs_queue, &a.results_queue] {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }
    let start = Instant::now();
    publish_all(&ch, &a.jobs_queue, run.jobs, deadline, |i| shape.job(i)).await?;
    let secs = start.elapsed().as_secs_f64();
    let _ = conn.close(200, "done".into()).await;
    println!("messages={}", run.jobs);
    println!("message_bytes={}", shape.job(run.jobs / 2).len());
    println!("secs={secs:.3}");
    Ok(())
}

struct CollectOptions {
    pid_file: PathBuf,
    ready_file: PathBuf,
    clk_tck: u64,
    idle: Duration,
    metrics: Option<String>,
    watch: Vec<(String, u32)>,
}

fn parse_watch(items: &[String]) -> Result<Vec<(String, u32)>> {
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
struct CpuSnapshot {
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
fn machine_jiffies() -> Option<(u64, u64)> {
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
fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id(), 100)
}

fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(own_cpu_seconds()? - start?)
}

/// What a ceiling's own client spent: the floor of the same work inside a worker.
fn print_client_cpu(cpu: Option<f64>, n: usize) {
    if let Some(cpu) = cpu {
        println!("cpu_s={cpu:.2}");
        println!("cpu_s_per_1000={:.3}", cpu * 1000.0 / n.max(1) as f64);
    }
}

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32, clk_tck: u64) -> Option<f64> {
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
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Polls the worker's metrics for the highest `picket_jobs_in_flight` seen.
async fn watch_in_flight(url: String, peak: Arc<AtomicU64>) {
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

async fn collect(run: &RunArgs, opts: &CollectOptions) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let n = run.jobs;
    let conn = picket::amqp::connect(&settings.amqp, "picket bench collect").await?;
    let ch = conn.create_channel().await?;
    picket::amqp::declare(&conn, &settings.amqp).await?;
    ch.basic_qos(4096, BasicQosOptions::default()).await?;
    // No acks: the collector must never be what limits the rate it measures.
    let mut consumer = ch
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

    let peak_in_flight = Arc::new(AtomicU64::new(0));
    let watcher = opts
        .metrics
        .clone()
        .map(|url| tokio::spawn(watch_in_flight(url, peak_in_flight.clone())));

    let mut seen: HashSet<String> = HashSet::with_capacity(n);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: Vec<String> = Vec::new();
    let mut totals_ms: Vec<u64> = Vec::with_capacity(n);
    let (mut results, mut duplicates, mut unparsable, mut up, mut bytes) = (0, 0, 0, 0, 0);
    let mut first: Option<(Instant, u128, CpuSnapshot)> = None;
    let mut last = (Instant::now(), 0u128);
    let mut pid = None;
    let mut stopped_by = "complete";
    while seen.len() < n {
        let wait_until = match first {
            None => deadline,
            Some(_) => deadline.min(tokio::time::Instant::now() + opts.idle),
        };
        let Ok(next) = tokio::time::timeout_at(wait_until, consumer.next()).await else {
            stopped_by = if first.is_some() && wait_until < deadline {
                "idle"
            } else {
                "timeout"
            };
            break;
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("collect: the consumer ended after {results} results"),
        };
        let now = Instant::now();
        if first.is_none() {
            pid = read_pid(&opts.pid_file);
            first = Some((now, epoch_ms(), CpuSnapshot::take(pid, opts)));
        }
        last = (now, epoch_ms());
        results += 1;
        bytes += delivery.data.len();
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&delivery.data) else {
            unparsable += 1;
            continue;
        };
        let text = |k: &str| report.get(k).and_then(|v| v.as_str()).unwrap_or("?");
        if !seen.insert(text("job_id").to_string()) {
            duplicates += 1;
            continue;
        }
        let verdict = text("verdict");
        *kinds
            .entry(format!("{verdict}/{}", text("reason")))
            .or_default() += 1;
        if verdict == "up" {
            up += 1;
        } else if examples.len() < 5 {
            examples.push(format!(
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
            totals_ms.push(ms);
        }
    }
    let cpu_last = CpuSnapshot::take(pid, opts);
    let hwm_kb = pid.and_then(|p| status_kb(p, "VmHWM"));
    let rss_kb = pid.and_then(|p| status_kb(p, "VmRSS"));
    if let Some(w) = watcher {
        w.abort();
    }
    let _ = conn.close(200, "done".into()).await;

    let unique = seen.len();
    totals_ms.sort_unstable();
    let (secs, first_ms, cpu_first) = match first {
        Some((at, ms, cpu)) => ((last.0 - at).as_secs_f64(), ms, Some(cpu)),
        None => (0.0, 0, None),
    };
    println!("stopped_by={stopped_by}");
    println!("expected={n}");
    println!("results={results}");
    println!("unique={unique}");
    println!("missing={}", n.saturating_sub(unique));
    println!("duplicates={duplicates}");
    println!("unparsable={unparsable}");
    println!("up={up}");
    println!("not_up={}", unique - up);
    println!("first_ms={first_ms}");
    println!("last_ms={}", last.1);
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
    println!("result_bytes={}", bytes.checked_div(results).unwrap_or(0));
    println!("probe_ms_p50={}", percentile(&totals_ms, 0.5));
    println!("probe_ms_p99={}", percentile(&totals_ms, 0.99));
    println!("probe_ms_max={}", totals_ms.last().copied().unwrap_or(0));
    if opts.metrics.is_some() {
        println!("peak_in_flight={}", peak_in_flight.load(Ordering::Relaxed));
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!("verdicts={}", kinds.join(","));
    for e in examples {
        eprintln!("collect: not up: {e}");
    }
    Ok(())
}

/// CPU used between two snapshots: the worker's (also per 1000 results), each watched
/// name's, and how busy the whole machine was.
fn print_cpu(a: &CpuSnapshot, b: &CpuSnapshot, unique: usize, opts: &CollectOptions) {
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

struct HoldOptions {
    hold: Duration,
    lifetime: Duration,
    max_conns: usize,
    body_bytes: usize,
}

#[derive(Default)]
struct HoldStats {
    open: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicUsize,
    refused: AtomicUsize,
}

/// A page with a title and enough text to be a real page to picket's judge.
fn held_page(bytes: usize) -> Vec<u8> {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Harbour Street Library: opening hours</title></head>\n<body>\
         <h1>Harbour Street Library</h1>\n",
    );
    let line = "<p>The reading room is open from nine to five on weekdays; \
                the archive answers letters within a week.</p>\n";
    while page.len() + line.len() + 16 < bytes {
        page.push_str(line);
    }
    page.push_str("</body></html>\n");
    page.into_bytes()
}

async fn serve_hold(ips: &[IpAddr], port: u16, opts: &HoldOptions) -> Result<()> {
    let page = Arc::new(held_page(opts.body_bytes));
    let permits = Arc::new(Semaphore::new(opts.max_conns));
    let stats = Arc::new(HoldStats::default());
    for ip in ips {
        if !ip.is_loopback() {
            bail!("hold: {ip} is not a loopback address");
        }
        let addr = SocketAddr::new(*ip, port);
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("hold: cannot bind {addr}"))?;
        let listener = socket.listen(8192)?;
        let (page, permits, stats, hold) =
            (page.clone(), permits.clone(), stats.clone(), opts.hold);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors: let connections finish, then go on.
                        eprintln!("hold: accept on {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (page, stats) = (page.clone(), stats.clone());
                tokio::spawn(async move {
                    let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
                    stats.peak.fetch_max(open, Ordering::Relaxed);
                    if answer_held(stream, &page, hold).await.is_ok() {
                        stats.served.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
    }
    println!("listening={}", ips.len());
    let report = |stats: &HoldStats| {
        eprintln!(
            "hold: open={} peak={} served={} refused={}",
            stats.open.load(Ordering::Relaxed),
            stats.peak.load(Ordering::Relaxed),
            stats.served.load(Ordering::Relaxed),
            stats.refused.load(Ordering::Relaxed)
        );
    };
    let end = tokio::time::Instant::now() + opts.lifetime;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => report(&stats),
        }
    }
    report(&stats);
    Ok(())
}

/// Reads the request head (bounded), waits `hold`, answers 200 and closes.
async fn answer_held(mut stream: tokio::net::TcpStream, page: &[u8], hold: Duration) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                bail!("request head too large");
            }
            let got = stream.read(&mut buf).await?;
            if got == 0 {
                bail!("closed before the request head ended");
            }
            head.extend_from_slice(&buf[..got]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| anyhow!("request head not read in 30 s"))??;
    tokio::time::sleep(hold).await;
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        page.len()
    );
    let write = async {
        stream.write_all(header.as_bytes()).await?;
        stream.write_all(page).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .map_err(|_| anyhow!("answer not written in 30 s"))??;
    Ok(())
}
