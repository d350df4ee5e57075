//! The `picket` binary: parses the command line, loads the configuration, and calls into
//! the library. Exit codes: 0 success (for `check`: all up), 1 failure (for `check`: any
//! not up), 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use picket::config::Settings;

#[derive(Parser)]
#[command(
    name = "picket",
    version,
    about = "Tells, without false alarms, whether websites are up"
)]
struct Cli {
    /// Configuration file (TOML); keys it does not name keep their defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume jobs from RabbitMQ, probe, publish results; runs until SIGTERM/SIGINT.
    Worker,
    /// Probe URLs (or job JSON lines) now, without broker or Redis; one JSON result per line.
    Check {
        /// URLs or job JSON; `-` reads lines from stdin.
        urls: Vec<String>,
        /// Read URLs or job JSON lines from this file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        file: Option<String>,
    },
    /// Publish jobs (one URL or one job JSON per line) to the jobs queue, with confirms.
    Enqueue {
        /// File to read, or `-` (the default) for stdin.
        source: Option<String>,
    },
    /// Print results from the results queue (JSON lines, or a table on a terminal).
    Results {
        /// Keep reading until interrupted.
        #[arg(long)]
        follow: bool,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
}

// jemalloc: about 20 % less CPU per probe than the system allocator in scripts/bench,
// for about 10 % more memory per probe in flight (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("picket: {e}");
            return ExitCode::from(2);
        }
    };
    let quiet = !matches!(cli.command, Command::Worker);
    picket::app::init_logging(&settings, quiet);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = settings.worker.threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("picket: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Worker => picket::app::worker(settings)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Check { urls, file } => {
                picket::app::check(settings, urls, file)
                    .await
                    .map(|all_up| {
                        if all_up {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    })
            }
            Command::Enqueue { source } => picket::app::enqueue(settings, source).await.map(|n| {
                println!("published {n} jobs");
                ExitCode::SUCCESS
            }),
            Command::Results { follow, json } => picket::app::results(settings, follow, json)
                .await
                .map(|_| ExitCode::SUCCESS),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("picket: {e:#}");
            // Input and usage errors are 2 for check; everything else failed at run time.
            ExitCode::from(if e.to_string().starts_with("nothing to check") {
                2
            } else {
                1
            })
        }
    }
}
