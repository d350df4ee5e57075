//! `picket check`: the worker's engine on URLs given now, without broker or Redis.
//! Input is read as the probes are ready for it, so a long list is never all in memory
//! and a line from a pipe is checked as soon as it comes.
//! Results come out in input order (probes still run `probe.concurrency` at a time),
//! as a table on a terminal or JSON lines otherwise, followed by a summary line on
//! stderr; the exit code says whether every site was up.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::output::{report_table, Style, Tally};
use super::{Exit, UsageError};
use crate::config::Settings;
use crate::engine::Engine;
use crate::job::{decode, job_for_url, Decoded, Job, Rejected, Report};
use crate::limit::{Limiter, LocalLimiter};
use crate::state::{Delivery, MemoryState};

/// `picket check --help`, after the options.
pub(crate) const HELP: &str =
    "Input: URLs, or job JSON objects ({\"url\": ..., \"expect\": ...}), as \
arguments, one per line from --file, or from stdin with `-`; blank lines and # comments are \
skipped; UTF-8 with or without a byte order mark, UTF-16 with one, and CRLF line ends (files \
saved on Windows) are read as written. Lines are checked as they are read (`tail -f sites | picket check -` works).\n\
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

/// Input lines sent to the probes at a time: a hand-over between threads per chunk, not
/// per line, which cost a fifth of a plain-HTTP probe's CPU (docs/BENCHMARKS.md).
const CHUNK: usize = 256;
/// Chunks read ahead of the probes: enough to keep every probe slot busy, while a list
/// of a million sites is never all in memory.
const CHUNKS_AHEAD: usize = 4;

/// One input line, or why the input could not be read.
type Line = anyhow::Result<Input>;

/// One line of input: its text, or why it has none that can be checked. A bad line is
/// that line's `invalid` result; the lines after it are checked all the same.
enum Input {
    Text(String),
    /// Line `.0` of its file: bytes that are not UTF-8.
    NotUtf8(usize),
    /// Line `.0` of its file: `.1` bytes, longer than a job message may be
    /// (`amqp.max_message_bytes`), skipped unread.
    TooLong(usize, usize),
}

/// Reads the lines of a file, or of stdin for `-`, on a thread of its own (a blocked
/// read of stdin never holds up the probes or the end of the run), skipping blanks and
/// `#` comments. The file is opened now, so a missing one is a usage error at once.
fn read_lines(source: &str, max_bytes: usize) -> anyhow::Result<BoxStream<'static, Line>> {
    let input: Box<dyn std::io::Read + Send> = if source == "-" {
        Box::new(std::io::stdin())
    } else {
        let f = std::fs::File::open(source)
            .map_err(|e| UsageError(format!("{source}: cannot open: {e}")))?;
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(UsageError(format!("{source}: is a directory, not a file of jobs")).into());
        }
        Box::new(f)
    };
    let reader = std::io::BufReader::with_capacity(64 * 1024, input);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Line>>(CHUNKS_AHEAD);
    let name = source.to_string();
    std::thread::spawn(move || match super::input::utf8(reader) {
        Ok(reader) => read_chunks(reader, &name, max_bytes, &tx),
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("{name}: cannot read"));
            let _ = tx.blocking_send(vec![Err(e)]);
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(chunks.flat_map(futures_util::stream::iter).boxed())
}

/// Sends `reader`'s lines in chunks until its end, a read error (sent last), or a
/// closed channel (the run is over: a reader that left, or an error).
fn read_chunks(
    mut reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    name: &str,
    max_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<Vec<Line>>,
) {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut bytes = Vec::new();
    let mut line_no = 0;
    let mut ends = super::input::LineEnds::default();
    // Room for the longest job and its CRLF.
    let cap = max_bytes.saturating_add(2);
    loop {
        bytes.clear();
        line_no += 1;
        let (line, end) = match ends.read(&mut reader, &mut bytes, cap) {
            Ok((0, _)) => (None, true),
            Ok((n, false)) => (Some(Ok(Input::TooLong(line_no, n))), false),
            Ok((_, true)) if super::input::is_comment(&bytes) => (None, false),
            Ok((n, true)) if bytes.trim_ascii_end().len() > max_bytes => {
                (Some(Ok(Input::TooLong(line_no, n))), false)
            }
            Ok((_, true)) => match std::str::from_utf8(&bytes) {
                Ok(text) => (
                    super::input::text(text).map(|t| Ok(Input::Text(t.into()))),
                    false,
                ),
                Err(_) => (Some(Ok(Input::NotUtf8(line_no))), false),
            },
            Err(e) => (
                Some(Err(
                    anyhow::Error::new(e).context(format!("{name}: cannot read"))
                )),
                true,
            ),
        };
        chunk.extend(line);
        // Sent when full, at the end, and before a read that may wait (a pipe's next
        // line): a line is never held back for lines not written yet.
        let full = chunk.len() >= CHUNK || end || reader.buffer().is_empty();
        if full && !chunk.is_empty() && tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
            return;
        }
        if end {
            return;
        }
    }
}

/// The input lines in order (the arguments, with stdin where `-` is, then `--file`),
/// each read when the probes are ready for it.
fn inputs(args: &CheckArgs, max_bytes: usize) -> anyhow::Result<BoxStream<'static, Line>> {
    if args.urls.is_empty() && args.file.is_none() {
        return Err(nothing_to_check());
    }
    let mut parts = Vec::new();
    for u in &args.urls {
        if u == "-" {
            parts.push(read_lines("-", max_bytes)?);
        } else {
            parts.push(futures_util::stream::iter([Ok(Input::Text(u.clone()))]).boxed());
        }
    }
    if let Some(f) = &args.file {
        parts.push(read_lines(f, max_bytes)?);
    }
    Ok(futures_util::stream::iter(parts).flatten().boxed())
}

fn nothing_to_check() -> anyhow::Error {
    UsageError("nothing to check: give URLs, --file FILE, or - for stdin".into()).into()
}

/// Each key's turn: the checks of one key run one after another, in input order, so
/// that each steps the key's state after the one before it. Run side by side, a later
/// line that ended first was told it had no previous check, and the earlier one was
/// told of the later's. Lines of other keys run beside them.
#[derive(Default)]
struct Turns(std::sync::Mutex<Keys>);

#[derive(Default)]
struct Keys {
    turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// How many are kept before those nobody waits for are let go: at least
    /// [`TURNS_KEPT`], and twice those still waited for after the last sweep, so a sweep
    /// comes once per as many lines as it looks at.
    sweep_at: usize,
}

const TURNS_KEPT: usize = 256;

impl Turns {
    /// Waits for `key`'s turn, held until the guard goes. The queue is fair, and each
    /// line joins it in its first poll, which `buffered` gives in input order.
    async fn take(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if keys.turns.len() >= keys.sweep_at.max(TURNS_KEPT) {
                keys.turns.retain(|_, turn| Arc::strong_count(turn) > 1);
                keys.sweep_at = 2 * keys.turns.len();
            }
            keys.turns.entry(key.to_string()).or_default().clone()
        };
        turn.lock_owned().await
    }
}

/// Runs `job` in its key's turn.
async fn in_turn(engine: &Engine, turns: &Turns, job: &Job) -> Report {
    let _turn = turns.take(&job.key).await;
    engine.run(job).await
}

/// Probes one input line: a job JSON object or a URL.
async fn check_one(
    engine: &Engine,
    turns: &Turns,
    input: Input,
    n: usize,
    max_bytes: usize,
) -> Report {
    let id = format!("check-{n}");
    let delivery = Delivery {
        id: &id,
        redelivered: false,
    };
    // The URL as the worker echoes a refused one: its password masked (hunt U).
    let rejected = |url: String, detail: String| Rejected {
        id: id.clone(),
        url: crate::job::without_password(&url),
        key: None,
        meta: None,
        detail,
    };
    let line = match input {
        Input::Text(line) => line,
        Input::NotUtf8(line) => {
            let r = rejected(String::new(), format!("line {line}: the line is not UTF-8"));
            return engine.rejected(&r, delivery).await;
        }
        Input::TooLong(line, len) => {
            let why = format!("line {line}: the line is {len} bytes, longer than {max_bytes}");
            return engine
                .rejected(&rejected(String::new(), why), delivery)
                .await;
        }
    };
    if line.starts_with('{') {
        match decode(line.as_bytes(), &id, max_bytes) {
            Ok(Decoded::Job(j)) => in_turn(engine, turns, &j).await,
            Ok(Decoded::Rejected(r)) => engine.rejected(&r, delivery).await,
            Err(e) => {
                engine
                    .rejected(&rejected(String::new(), e.0), delivery)
                    .await
            }
        }
    } else {
        match job_for_url(&line, &id) {
            Ok(j) => in_turn(engine, turns, &j).await,
            Err(detail) => engine.rejected(&rejected(line, detail), delivery).await,
        }
    }
}

/// The progress bar on a terminal; its length grows as lines are read.
fn progress(style: Style) -> indicatif::ProgressBar {
    if !style.table {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
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
    let max = settings.amqp.max_message_bytes;
    let lines = inputs(&args, max)?;
    let style = Style::detect(args.json);
    let bar = progress(style);
    let limiter: Arc<dyn Limiter> = Arc::new(LocalLimiter::new(&settings.rate_limit));
    let engine = Arc::new(crate::app::engine(
        &settings,
        Arc::new(MemoryState::new(settings.redis.verdict_ttl)),
        limiter,
    )?);
    let started = Instant::now();
    let counted = bar.clone();
    let turns = Arc::new(Turns::default());
    let mut results =
        lines
            .enumerate()
            .map(|(i, line)| {
                let (engine, turns) = (engine.clone(), turns.clone());
                counted.inc_length(1);
                async move {
                    Ok::<_, anyhow::Error>(check_one(&engine, &turns, line?, i + 1, max).await)
                }
            })
            // In input order: a slow site holds back the lines after it, never reorders them.
            .buffered(settings.probe.concurrency);
    let mut tally = Tally::default();
    let mut table = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(report) = results.next().await {
        let report = report?;
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
    if tally.total() == 0 {
        return Err(nothing_to_check());
    }
    if style.table {
        writeln!(out, "{}", report_table(&table, style.colour)).context("writing to stdout")?;
    }
    say!("{}", tally.summary("checked", started.elapsed()));
    Ok(if tally.all_up() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_keys_turns_come_in_the_order_taken_and_idle_keys_are_let_go() {
        let turns = Arc::new(Turns::default());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = turns.take("k").await;
        let mut waiting = Vec::new();
        for n in 1..=3 {
            let (turns, order) = (turns.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _turn = turns.take("k").await;
                order.lock().expect("order").push(n);
            }));
        }
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // Another key is not held back by this one's.
        let other = tokio::time::timeout(Duration::from_millis(100), turns.take("other")).await;
        assert!(other.is_ok(), "another key waited");
        assert!(order.lock().expect("order").is_empty());
        drop(first);
        for w in waiting {
            w.await.expect("joined");
        }
        assert_eq!(*order.lock().expect("order"), [1, 2, 3]);
        for i in 0..TURNS_KEPT + 10 {
            drop(turns.take(&format!("k{i}")).await);
        }
        let kept = turns.0.lock().expect("turns").turns.len();
        assert!(kept < TURNS_KEPT, "{kept} keys kept");
    }
}
