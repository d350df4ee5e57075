//! picket's developer commands, run as `cargo xtask COMMAND` (the alias is in
//! .cargo/config.toml; `scripts/bench` and `scripts/demo` call them too):
//!
//! - `bench`: the worker benchmark (docs/BENCHMARKS.md, "Worker runs").
//! - `demo`: picket on this machine with a private broker, Redis and website.
//!
//! Both start their servers with the launcher the integration tests use
//! (the `testbed` crate), and shell out only to the programs they measure or
//! need (cargo, wrk, dnsperf, nginx, redis-cli, openssl, perf).

mod bench;
mod demo;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "picket's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the worker against this machine's ceilings (docs/BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Run picket offline with a private RabbitMQ, Redis and demo website.
    Demo {
        #[command(subcommand)]
        action: Option<demo::Action>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (what, result) = match cli.command {
        Command::Bench(args) => ("bench", bench::run(&args)),
        Command::Demo { action } => ("demo", demo::run(action.unwrap_or_default())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
