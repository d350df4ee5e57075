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
//! - `h-reqwest`: the HTTP step by a bare reqwest client (a new connection per request),
//!   beside wrk's: what the worker's HTTP crate costs at the least.
//! - `hold`: a slow HTTP server for the in-flight run: it reads the request, waits, then
//!   answers 200 with a small page.
//!
//! Everything it talks to is on loopback; every wait is bounded. Each subcommand prints
//! `key=value` lines on stdout for `cargo xtask bench` (and `scripts/bench-probe`) to
//! read. By hand: `cargo run --release -p ceiling -- b-in --config bench.toml --jobs 20000`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use picket::config::Settings;

mod broker;
mod collect;
mod hold;
mod http;

use broker::{b_in, b_out, prefill};
use collect::{collect, parse_watch, CollectOptions};
use hold::{serve_hold, HoldOptions};
use http::{h_reqwest, HttpOptions};

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
    /// H_reqwest: GET a URL with a bare reqwest client, `--conns` at once, a new
    /// connection per request, for `--secs` seconds.
    HReqwest {
        /// A loopback URL (the benchmark's nginx page).
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
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
            Command::HReqwest { url, conns, secs } => {
                h_reqwest(&HttpOptions { url, conns, secs }).await
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

pub(crate) fn deadline(run: &RunArgs) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(run.timeout)
}

pub(crate) fn per_second(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
