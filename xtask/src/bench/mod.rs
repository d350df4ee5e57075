//! `cargo xtask bench` (and `scripts/bench`): the worker benchmark of
//! docs/BENCHMARKS.md, "What runs" and "Worker runs".
//!
//! It installs what is missing (`scripts/deps --bench`), builds picket and
//! the helper (xtask/ceiling) in release mode, and starts the testbed's
//! private RabbitMQ and Redis plus nginx and dnsmasq on loopback. Then it
//! measures the machine's ceilings with N messages each (B_in: broker
//! deliveries with acks, B_out: confirmed publishes, H: nginx with a new
//! connection per request; H_tls and D for the production-shaped runs), runs
//! a release worker over N prefilled jobs against nginx, an HTTPS run and a
//! DNS run, then a worker with many jobs held open at once by a slow server.
//! It prints a summary and writes it to target/bench/latest.md. Everything
//! it started is stopped on exit (and by the watchdogs, should it be killed).

mod ceilings;
mod setup;
mod summary;
mod worker_run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::util::{self, say};

/// The command line, as `scripts/bench` took it.
#[derive(Args, Clone)]
pub struct BenchArgs {
    /// N messages for the ceilings and jobs for the worker run (2 to 1000000).
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub jobs: u64,
    /// Jobs of the in-flight run, all held open at once (0 skips it).
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub inflight: u64,
    /// Measure each ceiling and the worker run this many times and report the medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub rounds: u64,
    /// The workers' worker.threads (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub threads: u64,
    /// Also profile a second drain with perf (target/bench/profile.txt).
    #[arg(long)]
    pub profile: bool,
    /// Keep the temp dir (configs, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// The picket binary whose worker is measured, e.g. an older build for a
    /// before/after run (default: target/release/picket, built first).
    #[arg(long, value_name = "PATH")]
    pub picket: Option<PathBuf>,
    /// The loopback addresses the sites are spread over (1 to 1000): 8 by default,
    /// a fleet's shape (each IP asked a few times, its limiter state fresh) with more.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub ips: u64,
}

/// Targets of the worker run: nginx on `n` loopback addresses, reached through
/// `SITE_HOSTS` host names (dns.static), each name one address: 127.0.3.1 to
/// 127.0.3.8 for up to 8, else 127.10.x.y (clear of the hold run's 127.0.4.x and
/// dnsmasq's 127.0.5.1).
fn site_ips(n: u64) -> Vec<String> {
    if n <= 8 {
        return (1..=n).map(|i| format!("127.0.3.{i}")).collect();
    }
    (0..n)
        .map(|i| format!("127.10.{}.{}", i / 250, i % 250 + 1))
        .collect()
}
const SITE_HOSTS: usize = 1000;
/// The worker's concurrency in the main run; probe.concurrency = amqp.prefetch.
const CONCURRENCY: u64 = 512;

/// The `key=value` lines the helper prints (the last value of a key wins).
#[derive(Default, Clone)]
pub struct Kv(HashMap<String, String>);

impl Kv {
    pub fn parse(text: &str) -> Kv {
        Kv(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    pub fn read(path: &Path) -> Kv {
        Kv::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// The value, or "" (as the script's `kv` printed nothing).
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    pub fn num(&self, key: &str) -> f64 {
        self.get(key).parse().unwrap_or(f64::NAN)
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.keep {
        // The testbed's watchdogs leave the servers' directories in place too.
        std::env::set_var("PICKET_TEST_KEEP_DIRS", "1");
    }
    // nginx, dnsmasq and perf's helpers live in sbin, often missing from a
    // non-root PATH.
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{path}:/usr/sbin:/sbin"));
    let root = util::root();
    say!("scripts/deps --bench");
    util::run(
        "scripts/deps --bench",
        Command::new(root.join("scripts/deps")).arg("--bench"),
    )?;
    say!("cargo build --release (picket) and the helper xtask/ceiling");
    util::run(
        "cargo build",
        util::cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "picket",
            "-p",
            "ceiling",
        ]),
    )?;
    let release = util::target_dir().join("release");
    let bins = Bins {
        picket: args
            .picket
            .clone()
            .unwrap_or_else(|| release.join("picket")),
        ceiling: release.join("ceiling"),
    };
    let out = root.join("target").join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let tmp = std::env::temp_dir().join(testbed::unique("picket-bench"));
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = measure(args, &bins, &tmp, &out);
    if args.keep || result.is_err() {
        eprintln!("bench: logs and configs kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The two release programs the benchmark runs.
pub struct Bins {
    pub picket: PathBuf,
    pub ceiling: PathBuf,
}

/// Everything after the build: the servers live exactly as long as this call
/// (dropping them stops them, in reverse order of their start).
fn measure(args: &BenchArgs, bins: &Bins, tmp: &Path, out: &Path) -> Result<()> {
    let mut bed = setup::Bed::start(args, bins, tmp)?;
    let mut ceilings = ceilings::measure(args, &bed)?;
    let runs = worker_run::all(args, &mut bed, &mut ceilings)?;
    let summary = summary::write(args, &bed, &ceilings, &runs, out)?;
    bed.stop();
    println!();
    println!("{summary}");
    say!("written to target/bench/latest.md (raw figures: target/bench/*.out)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keeps_the_last_value_of_a_key() {
        let kv = Kv::parse("rate=10\nnoise\nrate=12\nverdicts=up:3,down:1\n");
        assert_eq!(kv.get("rate"), "12");
        assert_eq!(kv.num("rate"), 12.0);
        assert_eq!(kv.get("verdicts"), "up:3,down:1");
        assert_eq!(kv.get("absent"), "");
        assert!(kv.num("absent").is_nan());
    }
}
