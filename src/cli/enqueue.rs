//! `picket enqueue`: streams its input (a file or stdin) line by line, validates each
//! line as a job before publishing it, publishes with confirms in windows, shows
//! progress on a terminal, and on any exit says how many jobs the broker confirmed and
//! from which line to resume. Memory stays bounded whatever the input's length: one
//! line and one window of confirms are held at a time. The broker is dialled only
//! when there is a first job to publish.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{Exit, UsageError};
use crate::amqp::commands::JobPublisher;
use crate::config::Settings;
use crate::job::{decode, Decoded};

/// `picket enqueue --help`, after the options.
pub(crate) const HELP: &str = "Input: one URL or one job JSON object per line; blank lines and # \
comments are skipped; UTF-8 with or without a byte order mark, UTF-16 with one, and CRLF line \
ends (files saved on Windows) are read as written. Each line is checked as a job before it is published: a bad line stops \
the run there (its number is printed; the lines before it are published), or is skipped with \
--skip-invalid. The job options (--key, --expect-status, ...) apply to plain URL lines; JSON \
lines are published as they are.\n\
On any exit (done, bad line, broker failure, Ctrl-C) it prints how many jobs the broker \
confirmed and the --from-line to resume from. Jobs published but not yet confirmed when the \
broker failed may or may not be queued: resuming may enqueue those few twice.\n\
Exit codes: 0 all published; 1 the broker failed or the run was interrupted; 2 usage, \
configuration or a bad input line.";

/// Longest `key` the contract allows.
const MAX_KEY_BYTES: usize = 200;

/// `picket enqueue` arguments.
#[derive(Args, Debug, Default)]
pub(crate) struct EnqueueArgs {
    /// File to read, or `-` (the default) for stdin.
    pub source: Option<String>,
    /// Start at this line of the input (1 = the first): resume an interrupted run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub from_line: u64,
    /// Skip lines that are not valid jobs (each is reported on stderr) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// For URL lines: the job's `key` (identity of the monitored check).
    #[arg(long, value_parser = parse_key)]
    pub key: Option<String>,
    /// For URL lines: expected HTTP status codes (repeat, or comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub expect_status: Vec<u16>,
    /// For URL lines: text the page must contain (in any charset).
    #[arg(long, value_name = "TEXT")]
    pub body_contains: Option<String>,
    /// For URL lines: the whole request's timeout, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// For URL lines: a cached verdict younger than this is served, e.g. `60s` (whole
    /// seconds: the job's `max_age_s`).
    #[arg(long, value_parser = whole_seconds, value_name = "DURATION")]
    pub max_age: Option<Duration>,
    /// For URL lines: `meta` entries echoed back in results (repeat: `--meta team=web`).
    #[arg(long, value_parser = parse_meta, value_name = "KEY=VALUE")]
    pub meta: Vec<(String, String)>,
}

/// A duration of whole seconds (`60s`, `10m`): the job's `max_age_s` counts no less.
fn whole_seconds(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{text} is not whole seconds, which the job's max_age_s counts"
        ));
    }
    Ok(d)
}

fn parse_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the key is empty".into());
    }
    if s.len() > MAX_KEY_BYTES {
        return Err(format!("the key is longer than {MAX_KEY_BYTES} bytes"));
    }
    Ok(s.to_string())
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl EnqueueArgs {
    /// The job for a plain URL line, with the options given as flags.
    fn job_for_url(&self, url: &str) -> Value {
        let mut job = Map::new();
        job.insert("url".into(), json!(url));
        let mut expect = Map::new();
        if !self.expect_status.is_empty() {
            expect.insert("status".into(), json!(self.expect_status));
        }
        if let Some(t) = &self.body_contains {
            expect.insert("body_contains".into(), json!(t));
        }
        if !expect.is_empty() {
            job.insert("expect".into(), Value::Object(expect));
        }
        if let Some(t) = self.timeout {
            job.insert("timeout_ms".into(), json!(t.as_millis() as u64));
        }
        if let Some(a) = self.max_age {
            job.insert("max_age_s".into(), json!(a.as_secs()));
        }
        if !self.meta.is_empty() {
            let meta: Map<String, Value> = self
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            job.insert("meta".into(), Value::Object(meta));
        }
        if let Some(k) = &self.key {
            job.insert("key".into(), json!(k));
        }
        Value::Object(job)
    }

    /// Turns one input line into the payload to publish, checked as the worker would.
    ///
    /// # Errors
    /// What is wrong with the line, for the message naming its number.
    pub(crate) fn payload(&self, line: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
        let (payload, check) = if line.starts_with('{') {
            (line.as_bytes().to_vec(), line.as_bytes().to_vec())
        } else {
            let job = self.job_for_url(line);
            // `key` was checked when the flag was parsed; the rest is checked as the
            // worker's decoder sees it (without `key`, which older workers refuse).
            let mut without_key = job.clone();
            if let Value::Object(m) = &mut without_key {
                m.remove("key");
            }
            (
                job.to_string().into_bytes(),
                without_key.to_string().into_bytes(),
            )
        };
        match decode(&check, "enqueue", max_bytes) {
            Ok(Decoded::Job(_)) => Ok(payload),
            Ok(Decoded::Rejected(r)) => Err(r.detail),
            Err(e) => Err(e.0),
        }
    }
}

/// What a run did, printed on every exit.
#[derive(Debug, Default)]
struct Progress {
    read: u64,
    skipped: u64,
}

async fn open_input(
    source: &str,
) -> anyhow::Result<(Box<dyn AsyncBufRead + Unpin + Send>, Option<u64>)> {
    let (input, lines): (Box<dyn AsyncBufRead + Unpin + Send>, _) = if source == "-" {
        (Box::new(BufReader::new(tokio::io::stdin())), None)
    } else {
        let file = tokio::fs::File::open(source)
            .await
            .map_err(|e| UsageError(format!("{source}: cannot open: {e}")))?;
        if file.metadata().await.is_ok_and(|m| m.is_dir()) {
            return Err(UsageError(format!("{source}: is a directory, not a file of jobs")).into());
        }
        (
            Box::new(BufReader::new(file)),
            count_lines(source).await.ok(),
        )
    };
    let input = super::input::utf8_async(input)
        .await
        .map_err(|e| UsageError(format!("{source}: cannot read: {e}")))?;
    Ok((input, lines))
}

/// Lines in a regular file, for the progress bar's ETA (one quick pass, bounded memory).
async fn count_lines(source: &str) -> std::io::Result<u64> {
    let mut r = BufReader::new(tokio::fs::File::open(source).await?);
    let mut n = 0;
    let mut ends = super::input::LineEnds::default();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += ends.count(buf);
        let len = buf.len();
        r.consume(len);
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "{pos}/{len} lines {per_sec} ETA {eta} {wide_bar} {msg}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {pos} lines {per_sec} {msg}",
        ),
    };
    if let Ok(s) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(s);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs `picket enqueue`; a failure midway is reported here (with the count), so only
/// set-up errors are returned.
///
/// # Errors
/// An unreadable input ([`UsageError`]).
pub(crate) async fn run(settings: Settings, args: EnqueueArgs) -> anyhow::Result<Exit> {
    let source = args.source.clone().unwrap_or_else(|| "-".to_string());
    let (input, total) = open_input(&source).await?;
    let bar = progress_bar(total);
    let started = Instant::now();
    let mut publisher = None;
    let mut progress = Progress::default();
    let outcome = tokio::select! {
        r = publish_all(&settings, &args, input, &bar, &mut publisher, &mut progress) => r,
        () = crate::app::termination() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened, settle what is in flight so the count printed is exact.
    let settled = match publisher.as_mut() {
        Some(p) if outcome.is_ok() => p.finish().await.map_err(anyhow::Error::from),
        Some(p) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.finish()).await;
            Ok(())
        }
        None => Ok(()),
    };
    bar.finish_and_clear();
    let outcome = outcome.and(settled);
    // The error first, then what was done and where to resume: the last lines on the
    // screen are the ones to act on.
    let exit = match &outcome {
        Ok(()) => Exit::Success,
        Err(e) => {
            super::report_error(e);
            Exit::of(e)
        }
    };
    report(
        &args,
        publisher.as_ref(),
        &progress,
        started,
        outcome.is_ok(),
    );
    if let Some(p) = publisher {
        p.close().await;
    }
    Ok(exit)
}

/// The line printed on every exit.
fn report(
    args: &EnqueueArgs,
    publisher: Option<&JobPublisher>,
    progress: &Progress,
    started: Instant,
    ok: bool,
) {
    if publisher.is_none() && ok && progress.skipped == 0 {
        say!(
            "picket: nothing to enqueue ({} lines read, no jobs among them)",
            progress.read
        );
        return;
    }
    let confirmed = publisher.map_or(0, JobPublisher::confirmed);
    let last = publisher.and_then(JobPublisher::last_confirmed_line);
    let skipped = if progress.skipped > 0 {
        format!(", {} invalid lines skipped", progress.skipped)
    } else {
        String::new()
    };
    let span = match last {
        Some(l) => format!(" (through line {l})"),
        None => String::new(),
    };
    say!(
        "picket: {confirmed} {} confirmed{span}{skipped}, {} lines read in {:.1} s",
        if confirmed == 1 { "job" } else { "jobs" },
        progress.read,
        started.elapsed().as_secs_f64()
    );
    // Nothing read from `--from-line` on (it is past the end): no place to resume from.
    if !ok && progress.read > 0 {
        let resume = last.map_or(args.from_line, |l| l + 1);
        say!("picket: to resume, run again with --from-line {resume}");
    }
}

/// Says on stderr (above the progress bar) why the count stopped, and when it goes on.
fn blocked_notice(bar: &indicatif::ProgressBar) -> crate::amqp::commands::BlockedNotice {
    let bar = bar.clone();
    Box::new(move |blocked: Option<&str>| {
        let said = match blocked {
            Some(reason) => format!(
                "the broker blocks publishing ({reason}): a memory or disk alarm; waiting for it to clear (Ctrl-C stops; the count printed then says where to resume)"
            ),
            None => "the broker unblocked publishing; going on".to_string(),
        };
        bar.suspend(|| say!("picket: {said}"));
    })
}

/// Resuming right after the last line leaves nothing to do; a `--from-line` further on
/// names a line the input does not have: a mistake, not a run that queued everything.
fn past_the_end(from_line: u64, lines: u64) -> anyhow::Result<()> {
    if from_line > lines.saturating_add(1) {
        let noun = if lines == 1 { "line" } else { "lines" };
        return Err(UsageError(format!(
            "--from-line {from_line} is past the end of the input ({lines} {noun}): nothing was published"
        ))
        .into());
    }
    Ok(())
}

/// One line of the input, as read.
struct Line<'a> {
    bytes: &'a [u8],
    /// How many bytes it had (more than `bytes` holds when it was too long).
    read: usize,
    /// It fit: `bytes` is all of it.
    whole: bool,
}

impl Line<'_> {
    /// The job it asks to publish: `None` for a blank line or a comment, else its
    /// payload or why it is no job.
    fn payload(&self, args: &EnqueueArgs, max: usize) -> Option<Result<Vec<u8>, String>> {
        if super::input::is_comment(self.bytes) {
            return None;
        }
        let text = match std::str::from_utf8(self.bytes) {
            Ok(t) => Some(super::input::text(t)?),
            Err(_) => None,
        };
        Some(match text {
            _ if !self.whole => Err(format!(
                "the line is {} bytes, longer than a job may be ({max} bytes, amqp.max_message_bytes)",
                self.read
            )),
            None => Err("the line is not UTF-8".to_string()),
            Some(text) => args.payload(text, max),
        })
    }
}

async fn publish_all(
    settings: &Settings,
    args: &EnqueueArgs,
    mut input: Box<dyn AsyncBufRead + Unpin>,
    bar: &indicatif::ProgressBar,
    publisher: &mut Option<JobPublisher>,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let run_id = crate::worker::make_id("enqueue");
    let max = settings.amqp.max_message_bytes;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut ends = super::input::LineEnds::default();
    loop {
        buf.clear();
        // Room for the longest job and its CRLF; a longer line is read past, not held.
        let (n, whole) = ends
            .read_async(&mut input, &mut buf, max.saturating_add(2))
            .await
            .context("reading the input")?;
        if n == 0 {
            return past_the_end(args.from_line, line_no);
        }
        line_no += 1;
        bar.inc(1);
        if line_no < args.from_line {
            continue;
        }
        progress.read += 1;
        let line = Line {
            bytes: &buf,
            read: n,
            whole,
        };
        let payload = match line.payload(args, max) {
            None => continue,
            Some(Ok(p)) => p,
            Some(Err(why)) if args.skip_invalid => {
                progress.skipped += 1;
                bar.suspend(|| say!("picket: line {line_no}: skipped: {why}"));
                continue;
            }
            Some(Err(why)) => return Err(UsageError(format!("line {line_no}: {why}")).into()),
        };
        if publisher.is_none() {
            *publisher = Some(JobPublisher::open(&settings.amqp, blocked_notice(bar)).await?);
        }
        if let Some(p) = publisher.as_mut() {
            p.publish(line_no, &payload, &format!("{run_id}-{line_no}"))
                .await?;
            bar.set_message(format!("{} confirmed", p.confirmed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: EnqueueArgs,
    }

    fn args(a: &[&str]) -> EnqueueArgs {
        let mut v = vec!["enqueue"];
        v.extend_from_slice(a);
        T::try_parse_from(v).expect("arguments").a
    }

    #[test]
    fn url_lines_get_the_flags_and_json_lines_pass_as_they_are() {
        let a = args(&[
            "--key",
            "home",
            "--expect-status",
            "200,301",
            "--body-contains",
            "欢迎",
            "--timeout",
            "10s",
            "--max-age",
            "1m",
            "--meta",
            "team=web",
            "--meta",
            "n=1",
        ]);
        let p = a.payload("https://a.example/", 65536).expect("valid");
        let v: Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(
            v,
            json!({"url": "https://a.example/", "key": "home",
                   "expect": {"status": [200, 301], "body_contains": "欢迎"},
                   "timeout_ms": 10000, "max_age_s": 60,
                   "meta": {"team": "web", "n": "1"}})
        );
        let line = r#"{"url":"http://b.example/","meta":{"x":1}}"#;
        assert_eq!(a.payload(line, 65536).expect("valid"), line.as_bytes());
    }

    #[test]
    fn bad_lines_say_why() {
        let a = args(&[]);
        assert!(a.payload("ftp://x/", 65536).is_err());
        assert!(a
            .payload("{not json", 65536)
            .expect_err("bad")
            .contains("JSON"));
        assert!(a.payload(r#"{"url": 5}"#, 65536).is_err());
        let big = format!(
            r#"{{"url":"http://a.example/","meta":"{}"}}"#,
            "x".repeat(2000)
        );
        assert!(a.payload(&big, 1024).is_err());
    }

    #[test]
    fn flags_are_checked_when_parsed() {
        let mut v = vec!["enqueue", "--meta", "novalue"];
        assert!(T::try_parse_from(&v).is_err());
        let long = "k".repeat(201);
        v = vec!["enqueue", "--key", &long];
        assert!(T::try_parse_from(&v).is_err());
        assert!(T::try_parse_from(["enqueue", "--from-line", "0"]).is_err());
        assert!(T::try_parse_from(["enqueue", "--timeout", "soon"]).is_err());
    }
}
