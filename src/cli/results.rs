//! `picket results`: prints results without taking them from anyone.
//!
//! - default: the results waiting on `amqp.results_queue` are printed and left there
//!   (peek; see `amqp::commands` for what that does to the queue);
//! - `--follow`: new results as they are published, through a private queue bound to
//!   the results exchange (or with `--changes` the changes exchange) by verdict;
//! - `--drain`: takes the results off the queue, acking each only after it was
//!   written; a write error hands it back and exits 1.

use std::collections::BTreeSet;
use std::io::{self, Write};

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::output::{RowPrinter, Style};
use super::Exit;
use crate::amqp::commands::{self, Binding, Written};
use crate::config::Settings;
use crate::job::{Report, Verdict};

/// `picket results --help`, after the options.
pub(crate) const HELP: &str = "Without --follow or --drain it prints the results waiting on the \
results queue and leaves every one of them there, in order (the broker marks them \
redelivered). --follow prints new results until Ctrl-C through a private queue of its own, \
so no other subscriber loses any. --drain takes results off the queue: each is acked only \
after it was written, and a write error (closed pipe, full disk) hands it back and exits 1.\n\
Output: a table on a terminal, JSON lines when piped or with --json.\n\
Exit codes: 0 done; 1 the broker failed or the output could not be written; 2 usage or \
configuration error.";

/// A verdict to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum VerdictArg {
    /// The site works.
    Up,
    /// Reachable but not right.
    Degraded,
    /// Not available.
    Down,
    /// Could not tell (our problem).
    Unknown,
    /// The job was wrong.
    Invalid,
}

impl VerdictArg {
    fn verdict(self) -> Verdict {
        match self {
            VerdictArg::Up => Verdict::Up,
            VerdictArg::Degraded => Verdict::Degraded,
            VerdictArg::Down => Verdict::Down,
            VerdictArg::Unknown => Verdict::Unknown,
            VerdictArg::Invalid => Verdict::Invalid,
        }
    }
}

/// `picket results` arguments.
#[derive(Args, Debug, Default)]
pub(crate) struct ResultsArgs {
    /// Keep printing new results until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Take the results off the results queue (acked once written).
    #[arg(long, conflicts_with_all = ["verdict", "changes", "url"])]
    pub drain: bool,
    /// Only results with this verdict (repeat for several).
    #[arg(long, value_enum)]
    pub verdict: Vec<VerdictArg>,
    /// Only changes of verdict (with --follow: from the changes exchange).
    #[arg(long)]
    pub changes: bool,
    /// Only results whose URL contains this text.
    #[arg(long, value_name = "TEXT")]
    pub url: Option<String>,
    /// Stop after printing this many.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// JSON lines even on a terminal.
    #[arg(long)]
    pub json: bool,
}

impl ResultsArgs {
    /// The exchange and binding keys `--follow` listens with.
    pub(crate) fn binding(&self, settings: &Settings) -> Binding {
        let verdicts: BTreeSet<&str> = self.verdict.iter().map(|v| v.verdict().as_str()).collect();
        let (exchange, keys) = if self.changes {
            // Routing key of a change: PREVIOUS.VERDICT, e.g. `up.down`.
            let keys = if verdicts.is_empty() {
                vec!["#".to_string()]
            } else {
                verdicts.iter().map(|v| format!("*.{v}")).collect()
            };
            (settings.amqp.changes_exchange.clone(), keys)
        } else {
            let keys = if verdicts.is_empty() {
                vec!["#".to_string()]
            } else {
                verdicts.iter().map(|v| (*v).to_string()).collect()
            };
            (settings.amqp.results_exchange.clone(), keys)
        };
        Binding { exchange, keys }
    }

    /// Whether a result passes the filters (the bindings already chose by verdict when
    /// following; checking again costs nothing).
    fn wanted(&self, r: &Filtered) -> bool {
        (self.verdict.is_empty()
            || self
                .verdict
                .iter()
                .any(|v| v.verdict().as_str() == r.verdict))
            && (!self.changes || r.changed)
            && self.url.as_ref().is_none_or(|u| r.url.contains(u.as_str()))
    }
}

/// The fields the filters read, and only those: a result from a newer worker (a reason
/// code or a field this build does not know) is still filtered by what it says, where
/// reading it as a whole [`Report`] would fail and drop it.
#[derive(serde::Deserialize)]
struct Filtered {
    verdict: String,
    #[serde(default)]
    changed: bool,
    #[serde(default)]
    url: String,
}

/// Writes results as they come: a row of a table, or the message's own JSON line.
struct Writer<'a> {
    args: &'a ResultsArgs,
    style: Style,
    rows: Option<RowPrinter>,
    header_done: bool,
}

impl Writer<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<Written> {
        let filtering =
            !self.args.verdict.is_empty() || self.args.changes || self.args.url.is_some();
        if filtering {
            match serde_json::from_slice::<Filtered>(bytes) {
                Ok(r) if self.args.wanted(&r) => {}
                // Not a result at all: nothing to match a filter against.
                _ => return Ok(Written::Skipped),
            }
        }
        // A result this build cannot read whole is printed as its own JSON line.
        let report = serde_json::from_slice::<Report>(bytes).ok();
        let mut out = io::stdout().lock();
        match (&self.rows, report) {
            (Some(rows), Some(r)) => {
                if !self.header_done {
                    writeln!(out, "{}", rows.header())?;
                    self.header_done = true;
                }
                writeln!(out, "{}", rows.row(&r))?;
            }
            _ => {
                out.write_all(bytes)?;
                out.write_all(b"\n")?;
            }
        }
        // Flushed before the caller acks: a result is only "written" once it left us.
        out.flush()?;
        Ok(Written::Printed)
    }
}

/// Runs `picket results`.
///
/// # Errors
/// The broker, or writing the output.
pub(crate) async fn run(settings: Settings, args: ResultsArgs) -> anyhow::Result<Exit> {
    let style = Style::detect(args.json);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::app::termination().await;
        stop.cancel();
    });
    let mut writer = Writer {
        args: &args,
        style,
        rows: style.table.then(|| RowPrinter::new(style.colour)),
        header_done: false,
    };
    let write = |b: &[u8]| writer.write(b);
    let a = &settings.amqp;
    let (n, what) = if args.drain {
        let n = commands::drain(a, args.follow, args.limit, shutdown, write).await?;
        (n, format!("taken from the queue {}", a.results_queue))
    } else if args.follow {
        let binding = args.binding(&settings);
        let declared = |setting: &str| {
            say!(
                "picket: the exchange {} did not exist: declared it, but no worker has published there yet; if workers run, is {setting} theirs?",
                binding.exchange
            );
        };
        let n = commands::follow(a, &binding, args.limit, shutdown, declared, write).await?;
        (n, format!("followed on the exchange {}", binding.exchange))
    } else {
        if a.queue_type == crate::config::QueueType::Quorum {
            // Only a classic queue takes a result back where it was (hunt U).
            say!(
                "picket: {} is a quorum queue (amqp.queue_type): a look hands each result back behind the others and counts a delivery of it, and a delivery limit drops results looked at too often; read them with --follow (a queue of its own) or take them with --drain",
                a.results_queue
            );
        }
        let n = commands::peek(a, args.limit, write).await?;
        (n, format!("left on the queue {}", a.results_queue))
    };
    if writer.style.table || n == 0 {
        say!("{n} results {what}");
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::from_toml("").expect("defaults")
    }

    /// `--limit 0` printed nothing, and on a terminal "0 results left on the queue"
    /// about a queue it had not looked at.
    #[test]
    fn a_limit_of_none_is_a_usage_error() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct T {
            #[command(flatten)]
            a: ResultsArgs,
        }
        let e = T::try_parse_from(["results", "--limit", "0"]).expect_err("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        let one = T::try_parse_from(["results", "--limit", "1"]).expect("one");
        assert_eq!(one.a.limit, Some(1));
    }

    #[test]
    fn follow_binds_by_verdict_on_the_right_exchange() {
        let s = settings();
        let all = ResultsArgs::default().binding(&s);
        assert_eq!(all.exchange, "picket.results");
        assert_eq!(all.keys, ["#"]);
        let down = ResultsArgs {
            verdict: vec![VerdictArg::Down, VerdictArg::Degraded],
            ..ResultsArgs::default()
        }
        .binding(&s);
        assert_eq!(down.keys, ["degraded", "down"]);
        let changes = ResultsArgs {
            changes: true,
            verdict: vec![VerdictArg::Down],
            ..ResultsArgs::default()
        }
        .binding(&s);
        assert_eq!(changes.exchange, "picket.changes");
        assert_eq!(changes.keys, ["*.down"]);
    }
}
