//! The command line: what a person types (`clap` definitions, with the exit codes in
//! `--help`), and the dispatch to each command. Output that fits the terminal and the
//! pipe is in [`output`]; each command has its own module.
//!
//! Exit codes, for every command: 0 success, 1 failure at run time (for `check`: some
//! site is not up), 2 usage, configuration or input error. Each command returns an
//! [`Exit`], and an error that ends one gets its exit by its type ([`exit`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{RuntimeShape, Settings};

/// `eprintln!` that never panics: a closed or full standard error (`2>&1 | head -1`, a
/// full disk) made `eprintln!` panic, every command exited 101, and an `enqueue` stopped
/// half-way. What cannot be said there is dropped; the exit code still tells.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) mod check;
pub(crate) mod config_cmd;
pub(crate) mod enqueue;
pub(crate) mod exit;
pub(crate) mod input;
pub(crate) mod output;
pub(crate) mod results;

pub(crate) use exit::{Exit, UsageError};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 failure at run time (check: a site is not up); \
2 usage, configuration or input error.\n\
Configuration: built-in defaults, then --config FILE (or $PICKET_CONFIG; without either, \
config/default.toml in the working directory if there is one), then \
PICKET__SECTION__KEY environment variables; `picket config show` says which set what.";

/// The exit codes of the commands that print what picket carries.
const PRINT_EXIT_CODES: &str = "Exit codes: 0 printed; 1 the output could not be written; \
2 usage error.";

/// The `picket` command line.
#[derive(Parser, Debug)]
#[command(
    name = "picket",
    version,
    about = "Tells, without false alarms, whether websites are up",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// Configuration file (TOML); keys it does not name keep their defaults.
    #[arg(long, global = true, value_name = "FILE", env = "PICKET_CONFIG")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Consume jobs from RabbitMQ, probe, publish results; runs until SIGTERM/SIGINT.
    #[command(
        after_help = "Exit codes: 0 stopped by SIGTERM or SIGINT (jobs still running \
are handed back after worker.shutdown_grace); 1 could not set up (the http.listen port \
taken, a TLS file unreadable) or failed at run time; 2 configuration error. A broker or \
Redis that is down is no error: the worker keeps trying, /readyz says 503."
    )]
    Worker,
    /// Probe URLs (or job JSON lines) now, without broker or Redis.
    #[command(after_help = check::HELP)]
    Check(check::CheckArgs),
    /// Publish jobs (one URL or one job JSON per line) to the jobs queue, with confirms.
    #[command(after_help = enqueue::HELP)]
    Enqueue(enqueue::EnqueueArgs),
    /// Print results: those waiting on the results queue (left there), or new ones.
    #[command(after_help = results::HELP)]
    Results(results::ResultsArgs),
    /// Check the configuration, or show every effective value and where it came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (e.g. `picket completions bash > /etc/bash_completion.d/picket`).
    #[command(after_help = PRINT_EXIT_CODES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. `picket man | man -l -`.
    #[command(after_help = PRINT_EXIT_CODES)]
    Man,
}

/// `picket config ...`
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Load and validate the configuration; exit 0 when it is valid, 2 with the reason.
    #[command(
        after_help = "Exit codes: 0 the configuration is valid; 2 it is not (the \
key and the reason on stderr)."
    )]
    Check,
    /// Print every effective value (secrets redacted) and where it came from.
    #[command(
        after_help = "Exit codes: 0 printed; 1 the output could not be written; 2 \
the configuration is not valid."
    )]
    Show(config_cmd::ShowArgs),
}

/// `picket completions SHELL`
#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The clap command (for completions, the man page and tests).
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

/// Parses the command line and runs the command; the whole `main`.
pub fn main() -> ExitCode {
    // redis-rs builds its TLS configuration with rustls's process-wide provider: name
    // it, so that a second provider compiled in later cannot make that choice fail.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    unset_if_empty("PICKET_CONFIG");
    let exit = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => {
            // A closed stdout or stderr leaves nothing to tell; the exit code still says it.
            let _ = e.print();
            Exit::of_clap(&e)
        }
    };
    exit.into()
}

/// An empty variable names nothing, as for most tools (`PICKET_CONFIG=` in a unit file
/// or a compose file): clap would take it for an empty `--config` the user never typed.
/// Called before any thread is started, so the environment is not read meanwhile.
fn unset_if_empty(name: &str) {
    if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
        std::env::remove_var(name);
    }
}

/// Runs a parsed command line.
fn run(cli: Cli) -> Exit {
    let file = crate::config::file_to_read(cli.config.as_deref());
    let settings = match &cli.command {
        Command::Completions(a) => return completions(a.shell),
        Command::Man => return man(),
        Command::Config(c) => return config_cmd::run(c, file.as_deref()),
        _ => match Settings::load(file.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                say!("picket: {e}");
                return Exit::from(&e);
            }
        },
    };
    let quiet = !matches!(cli.command, Command::Worker);
    crate::app::init_logging(&settings, quiet);
    for var in crate::config::origin::stray_env(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!("{}", crate::config::origin::stray_env_warning(&var));
    }
    let proxy_vars = crate::config::origin::proxy_env(std::env::vars().map(|(k, _)| k));
    if !proxy_vars.is_empty() && settings.egress.iter().all(|e| e.proxy.is_none()) {
        tracing::warn!(
            "{} set, but picket reads no proxy from the environment: probes go out \
             directly; configure the proxy as an egress ([[egress]] proxy = \"...\") if \
             this host reaches the web only through it",
            proxy_vars.join(", ")
        );
    }
    if matches!(cli.command, Command::Worker) {
        warn_of_waiting_deliveries(&settings);
    }
    crate::app::raise_file_limit(settings.probe.concurrency);
    let runtime = match runtime(&settings, &cli.command) {
        Ok(r) => r,
        Err(e) => {
            say!("picket: cannot start the runtime: {e}");
            return Exit::Failure;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Worker => crate::app::worker(settings).await.map(|()| Exit::Success),
            Command::Check(args) => check::run(settings, args).await,
            Command::Enqueue(args) => enqueue::run(settings, args).await,
            Command::Results(args) => results::run(settings, args).await,
            Command::Config(_) | Command::Completions(_) | Command::Man => Ok(Exit::Success),
        }
    });
    // tokio reads stdin on a blocking thread whose read cannot be cancelled: dropping
    // the runtime would wait for it, so a command interrupted while its input pipe
    // stays open (a producer not done yet) would print its count and hang. Everything
    // the command had to say is said by now.
    runtime.shutdown_timeout(RUNTIME_EXIT);
    match outcome {
        Ok(exit) => exit,
        Err(e) if exit::reader_left(&e) => Exit::Failure,
        Err(e) => {
            report_error(&e);
            Exit::of(&e)
        }
    }
}

/// Prints an error, and what to try when there is a hint for it.
pub(crate) fn report_error(e: &anyhow::Error) {
    say!("picket: {e:#}");
    if let Some(hint) = output::hint(e) {
        say!("{hint}");
    }
}

/// How long the end of a command waits for blocking threads (a read of stdin) to return.
const RUNTIME_EXIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The async runtime for `command`. `picket check` runs on one thread by default
/// (`probe.runtime`): each probe's future, hyper's connection task and the I/O driver
/// then share that thread, where on the work-stealing pool every response crossed
/// threads (futex wake-ups, context switches) — about a fifth of a plain-HTTP probe's
/// CPU (docs/BENCHMARKS.md). The worker keeps the pool, to use every core, unless
/// `worker.threads = 1` asks for one thread: then there is no pool at all, which saves
/// the hand-offs as for `picket check` (a worker per core).
fn runtime(settings: &Settings, command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let shape = match command {
        Command::Check(_) => settings.probe.runtime,
        _ if settings.worker.threads == Some(1) => RuntimeShape::CurrentThread,
        _ => RuntimeShape::MultiThread,
    };
    let mut builder = match shape {
        RuntimeShape::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        RuntimeShape::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = settings.worker.threads {
                b.worker_threads(n);
            }
            b
        }
    };
    builder.enable_all().build()
}

fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = command();
    // Into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "picket", &mut script);
    print_generated(&script, "the completions")
}

fn man() -> Exit {
    let mut page = Vec::new();
    match clap_mangen::Man::new(command()).render(&mut page) {
        Ok(()) => print_generated(&page, "the manual page"),
        Err(e) => {
            say!("picket: cannot render the manual page: {e}");
            Exit::Failure
        }
    }
}

/// Writes generated text to stdout; a reader that left early ends it without a
/// message, with 1 like every command whose output could not all be written.
fn print_generated(text: &[u8], what: &str) -> Exit {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => Exit::Success,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Failure,
        Err(e) => {
            say!("picket: cannot write {what}: {e}");
            Exit::Failure
        }
    }
}

/// Deliveries the broker pushes ahead beyond four times the jobs a worker runs at once
/// wait in it before their probe starts, and RabbitMQ's `consumer_timeout` (30 min by
/// default) counts that wait: a backlog of slow sites then outlasts it, the channel is
/// closed under the worker and its jobs are answered twice (hunt T). Said at start.
fn warn_of_waiting_deliveries(settings: &Settings) {
    let (prefetch, concurrency) = (settings.amqp.prefetch, settings.probe.concurrency);
    if usize::from(prefetch) > 4 * concurrency {
        tracing::warn!(
            "amqp.prefetch ({prefetch}) is more than four times probe.concurrency \
             ({concurrency}): deliveries wait in this worker before their probe starts, and \
             RabbitMQ's consumer_timeout counts that wait; keep amqp.prefetch near \
             probe.concurrency (OPERATIONS, consumer_timeout)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = command().render_long_help().to_string();
        assert!(help.contains("Exit codes: 0"), "{help}");
        let mut cmd = command();
        let check = cmd
            .find_subcommand_mut("check")
            .expect("check")
            .render_long_help()
            .to_string();
        assert!(
            check.contains("0 all up") && check.contains("2 usage"),
            "{check}"
        );
    }

    /// Hunt N: COMMANDS says each command's `--help` gives its exit codes; `worker`,
    /// `config check`, `config show`, `completions` and `man` did not.
    #[test]
    fn every_commands_help_gives_its_exit_codes() {
        let mut cmd = command();
        let mut missing = Vec::new();
        for path in [
            vec!["worker"],
            vec!["check"],
            vec!["enqueue"],
            vec!["results"],
            vec!["config", "check"],
            vec!["config", "show"],
            vec!["completions"],
            vec!["man"],
        ] {
            let mut sub = &mut cmd;
            for name in &path {
                sub = sub.find_subcommand_mut(name).expect("a command");
            }
            let help = sub.render_long_help().to_string();
            if !help.contains("Exit codes: 0") {
                missing.push(path.join(" "));
            }
        }
        assert!(
            missing.is_empty(),
            "no exit codes in the help of {missing:?}"
        );
    }
}
