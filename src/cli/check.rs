//! `picket check`: the worker's engine on URLs given now, without broker or Redis.
//! Results come out in input order (probes still run `probe.concurrency` at a time),
//! as a table on a terminal or JSON lines otherwise, followed by a summary line on
//! stderr; the exit code says whether every site was up.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;

use super::output::{report_table, Style, Tally};
use super::{Exit, UsageError};
use crate::config::Settings;
use crate::engine::Engine;
use crate::job::{decode, job_for_url, Decoded, Rejected, Report};
use crate::limit::{Limiter, LocalLimiter};
use crate::state::{Delivery, MemoryState};

/// `picket check --help`, after the options.
pub(crate) const HELP: &str =
    "Input: URLs, or job JSON objects ({\"url\": ..., \"expect\": ...}), as \
arguments, one per line from --file, or from stdin with `-`; blank lines and # comments are \
skipped.\n\
Output: a table on a terminal, one result JSON per line when piped or with --json; in input \
order; a summary line (counts per verdict, time) on stderr.\n\
Exit codes: 0 all up; 1 any not up; 2 usage or configuration error (nothing to check, a bad \
option or key).";

/// `picket check` arguments.
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// URLs or job JSON; `-` reads lines from stdin.
    pub urls: Vec<String>,
    /// Read URLs or job JSON lines from this file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub file: Option<String>,
    /// JSON lines even on a terminal.
    #[arg(long)]
    pub json: bool,
}

/// Reads the lines of a file, or of stdin for `-`, skipping blanks and `#` comments.
fn read_lines(source: &str) -> anyhow::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(source)
            .map_err(|e| UsageError(format!("{source}: cannot open: {e}")))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("{source}: cannot read"))?;
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

fn inputs(args: &CheckArgs) -> anyhow::Result<Vec<String>> {
    let mut inputs = Vec::new();
    for u in &args.urls {
        if u == "-" {
            inputs.extend(read_lines("-")?);
        } else {
            inputs.push(u.clone());
        }
    }
    if let Some(f) = &args.file {
        inputs.extend(read_lines(f)?);
    }
    if inputs.is_empty() {
        return Err(
            UsageError("nothing to check: give URLs, --file FILE, or - for stdin".into()).into(),
        );
    }
    Ok(inputs)
}

/// Probes one input line: a job JSON object or a URL.
async fn check_one(engine: &Engine, line: String, n: usize, max_bytes: usize) -> Report {
    let id = format!("check-{n}");
    let delivery = Delivery {
        id: &id,
        redelivered: false,
    };
    let rejected = |url: String, detail: String| Rejected {
        id: id.clone(),
        url,
        key: None,
        meta: None,
        detail,
    };
    if line.starts_with('{') {
        match decode(line.as_bytes(), &id, max_bytes) {
            Ok(Decoded::Job(j)) => engine.run(&j).await,
            Ok(Decoded::Rejected(r)) => engine.rejected(&r, delivery).await,
            Err(e) => {
                engine
                    .rejected(&rejected(String::new(), e.0), delivery)
                    .await
            }
        }
    } else {
        match job_for_url(&line, &id) {
            Ok(j) => engine.run(&j).await,
            Err(detail) => engine.rejected(&rejected(line, detail), delivery).await,
        }
    }
}

fn progress(total: usize, style: Style) -> indicatif::ProgressBar {
    if !style.table {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(s) =
        indicatif::ProgressStyle::with_template("checking {pos}/{len} {wide_bar} {elapsed}")
    {
        bar.set_style(s);
    }
    bar
}

/// Runs `picket check`.
///
/// # Errors
/// Nothing to check, unreadable input ([`UsageError`]), set-up failures, or stdout
/// that cannot be written.
pub(crate) async fn run(settings: Settings, args: CheckArgs) -> anyhow::Result<Exit> {
    let lines = inputs(&args)?;
    let style = Style::detect(args.json);
    let limiter: Arc<dyn Limiter> = Arc::new(LocalLimiter::new(&settings.rate_limit));
    let engine = Arc::new(crate::app::engine(
        &settings,
        Arc::new(MemoryState::new(settings.redis.verdict_ttl)),
        limiter,
    )?);
    let started = Instant::now();
    let bar = progress(lines.len(), style);
    let max = settings.amqp.max_message_bytes;
    let mut results = futures_util::stream::iter(lines.into_iter().enumerate())
        .map(|(i, line)| {
            let engine = engine.clone();
            async move { check_one(&engine, line, i + 1, max).await }
        })
        // In input order: a slow site holds back the lines after it, never reorders them.
        .buffered(settings.probe.concurrency);
    let mut tally = Tally::default();
    let mut table = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(report) = results.next().await {
        tally.add(report.verdict);
        bar.inc(1);
        if style.table {
            table.push(report);
        } else {
            let line = serde_json::to_string(&report).context("encoding a result")?;
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
        }
    }
    bar.finish_and_clear();
    if style.table {
        writeln!(out, "{}", report_table(&table, style.colour)).context("writing to stdout")?;
    }
    eprintln!("{}", tally.summary("checked", started.elapsed()));
    Ok(if tally.all_up() {
        Exit::Success
    } else {
        Exit::Failure
    })
}
