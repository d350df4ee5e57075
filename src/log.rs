//! Log lines on stderr: text for a person, or one JSON object per line for a log
//! shipper, with `message`, `level`, `worker` and the event's fields at the top level
//! (shippers index top-level keys; a message nested under `fields` is not searchable).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// The levels a filter directive may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why `directives` (`log.level`, `RUST_LOG`) is no filter an operator means, if it is
/// not: one the filter cannot read, an empty one, or a bare word that is no level
/// (`warning`, `err`): the filter takes such a word for the name of a module to log,
/// and every other line, warnings and errors too, goes unlogged. A module path
/// (`picket::http`) or `target=level` is taken as written.
pub(crate) fn filter_problem(directives: &str) -> Option<String> {
    if directives.trim().is_empty() {
        return Some("empty: say a level, such as \"info\"".to_string());
    }
    if let Err(e) = EnvFilter::try_new(directives) {
        return Some(e.to_string());
    }
    let unknown = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.contains('=') && !d.contains("::") && !d.contains('['))
        .find(|d| meant_as_a_level(d))?;
    Some(format!(
        "{unknown:?} is no level (one of {}); as a module's name it would leave every \
         warning and error unlogged",
        LEVELS.join(", ")
    ))
}

/// Other logs' names for levels, which a bare directive is no module's name but meant
/// as one of ours.
const OTHER_LEVELS: &[&str] = &[
    "warning",
    "warnings",
    "err",
    "errors",
    "notice",
    "critical",
    "crit",
    "fatal",
    "verbose",
    "information",
    "informational",
    "emerg",
    "emergency",
    "alert",
    "severe",
    "all",
    "none",
];

/// Whether a bare directive (no `=`, no module path, no span) was meant as a level that
/// is none: another log's name for one (`warning`, `notice`) or a misspelt one
/// (`debugg`). A crate's name (`picket`, `lapin`) and a number (`4`) are read as the
/// filter reads them.
fn meant_as_a_level(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    if w.is_empty() || LEVELS.contains(&w.as_str()) || w.parse::<u8>().is_ok() {
        return false;
    }
    // A level with a letter too many (`debugg`, `infoo`); one a letter off a level
    // may be a crate's name (`warp`), and is read as one.
    OTHER_LEVELS.contains(&w.as_str())
        || LEVELS
            .iter()
            .any(|level| w.len() > level.len() && strsim::levenshtein(&w, level) == 1)
}

/// Sets up logging to stderr: JSON or text as configured; `RUST_LOG` wins over `level`.
/// `worker` is written into every JSON line; `quiet` lowers the default level to warn.
pub(crate) fn init(settings: &LogSettings, worker: &str, quiet: bool) {
    let default = if quiet {
        "warn"
    } else {
        settings.level.as_str()
    };
    // A RUST_LOG set to what no operator means (`warning`, empty) is left aside with
    // a word, rather than logging nothing.
    // An empty one is as good as unset, as shells write it.
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let ignored = rust_log
        .as_deref()
        .and_then(|v| filter_problem(v).map(|why| (v.to_string(), why)));
    let from_env = rust_log
        .filter(|_| ignored.is_none())
        .and_then(|v| EnvFilter::try_new(v).ok());
    // RUST_LOG shows everything it asks for, lapin's duplicates included.
    let everything = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(default).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let not_twice =
        filter_fn(move |meta| !shows_a_message(meta) && (everything || !said_by_picket(meta)));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal: in a file, journald or `docker
        // logs` the escape codes are noise that breaks every grep.
        .with_ansi(std::io::stderr().is_terminal())
        // A line that cannot be written (stderr closed or full) is dropped: reporting
        // it goes through `eprintln!`, which panics on the same stderr (exit 101).
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = if json {
        let inner = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true);
        builder
            .fmt_fields(JsonFields::new())
            .event_format(WithWorker::new(inner, worker))
            .finish()
            .with(not_twice)
            .try_init()
    } else {
        builder.finish().with(not_twice).try_init()
    };
    if let Some((value, why)) = ignored {
        tracing::warn!(rust_log = %value, "RUST_LOG left aside, log.level used: {why}");
    }
}

/// lapin's warning for a message the broker returned, which writes the whole message:
/// a job's body, with the `Authorization` and `Cookie` headers that go to no one but
/// its site (hunt 96). picket says what was returned itself (where, and what it does
/// about it), without the message; not even `RUST_LOG` shows this one.
fn shows_a_message(meta: &Metadata<'_>) -> bool {
    meta.target() == "lapin::returned_messages" && *meta.level() <= Level::WARN
}

/// lapin's error lines for a close the broker sent ("Channel closed", "Connection
/// closed": they carry the broker's `method`), for the connection's end ("Connection
/// error") and for a frame lapin did not expect (its `error` alone: lapin ends the
/// connection for it; a close-ok crossing a close of the broker's after a refusal is
/// one), and lapin's I/O loop giving up on a connection ("aborting recovery") or losing
/// it ("error doing IO", its heartbeat's "haven't received anything"):
/// picket logs each of these itself, with the node, the step and what it does
/// next, at the level it deserves (a refused set-up, a failover, an outage). Left in,
/// they doubled every such line as an ERROR, which alerts on error lines page for even
/// when picket recovers on its own. Matched by their fields, so a lapin that changes
/// them shows its lines again (`worker_e2e` checks the refusal's log).
fn said_by_picket(meta: &Metadata<'_>) -> bool {
    if *meta.level() != Level::ERROR {
        return false;
    }
    let fields = meta.fields();
    match meta.target() {
        "lapin::channel" => {
            fields.field("method").is_some()
                || (fields.field("error").is_some() && fields.len() == 1)
        }
        "lapin::channels" => fields.field("error").is_some() && fields.len() == 2,
        // "Exponential backoff attempts exhausted, aborting recovery" (and a write of
        // nothing, retried), "error doing IO" with its `error` (a connection cut: a
        // proxy's idle timeout in between, hunt T): a connection that could not be made
        // or was lost, which picket reports with the node and what it does next.
        "lapin::io_loop" => {
            fields.len() == 1 || (fields.field("error").is_some() && fields.len() == 2)
        }
        // "We haven't received anything from the server for too long": the connection
        // lost to a silent broker, reported by picket as such.
        "lapin::heartbeat" => fields.len() == 1,
        _ => false,
    }
}

/// A warning said at most once a period, with how many times it went unsaid meanwhile:
/// a fault every job meets (Redis gone through a backlog) writes a line every few
/// seconds, not one per job (hunt T: 3,400 lines a second), while its metric counts
/// each. A `static` beside the line it guards.
pub(crate) struct Rarely {
    period: std::time::Duration,
    /// When it was last said, and how many times it went unsaid since.
    said: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Rarely {
    pub(crate) const fn every(period: std::time::Duration) -> Rarely {
        Rarely {
            period,
            said: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(times it went unsaid since it was last said)` when it is to be said now.
    pub(crate) fn now(&self) -> Option<u64> {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        let (last, unsaid) = &mut *said;
        if last.is_some_and(|at| at.elapsed() < self.period) {
            *unsaid += 1;
            return None;
        }
        *last = Some(std::time::Instant::now());
        Some(std::mem::take(unsaid))
    }
}

/// A JSON event format with a `worker` key first in every object.
struct WithWorker<F> {
    inner: F,
    /// The worker's name, already a JSON string.
    worker: String,
}

impl<F> WithWorker<F> {
    fn new(inner: F, worker: &str) -> WithWorker<F> {
        let worker = serde_json::Value::from(worker).to_string();
        WithWorker { inner, worker }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithWorker<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The inner format writes one object; the key goes in after its brace, which
        // costs one copy of a line and no parsing.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"worker\":{},{rest}", self.worker),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("sink").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_worker_message_and_fields_at_the_top() {
        let sink = Sink::default();
        let out = sink.clone();
        let inner = tracing_subscriber::fmt::format().json().flatten_event(true);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(JsonFields::new())
            .event_format(WithWorker::new(inner, "w\"1"))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(jobs = 3, "drained");
        });
        let text = String::from_utf8(out.0.lock().expect("sink").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["worker"], "w\"1");
        assert_eq!(line["message"], "drained");
        assert_eq!(line["jobs"], 3);
        assert_eq!(line["level"], "INFO");
    }

    #[test]
    fn a_rare_warning_is_said_once_a_period_with_the_times_it_went_unsaid() {
        let rarely = Rarely::every(std::time::Duration::from_millis(50));
        assert_eq!(rarely.now(), Some(0), "the first time");
        assert_eq!(rarely.now(), None);
        assert_eq!(rarely.now(), None);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(rarely.now(), Some(2), "then with the two unsaid");
        assert_eq!(rarely.now(), None);
    }

    /// The events lapin logs, by their callsites' shapes, against what is left out.
    #[test]
    fn only_lapins_lines_for_what_picket_logs_itself_are_left_out() {
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .finish()
            .with(filter_fn(|meta| !said_by_picket(meta)));
        let (method, error) = ("Close", "ACCESS_REFUSED");
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "lapin::channel", channel = 1, ?method, %error, "Channel closed");
            tracing::error!(target: "lapin::channels", %error, "Connection error");
            // A protocol violation: lapin ends the connection for it, and picket logs
            // that end with the same error ("broker connection failed").
            tracing::error!(target: "lapin::channel", %error);
            // A connection that could not be made: picket says so, with a hint, and
            // lapin's line ("aborting recovery") read as if something had been lost.
            tracing::error!(target: "lapin::io_loop", "Exponential backoff attempts exhausted, aborting recovery");
            // Hunt T: a connection cut (an idle timeout of a proxy in between) or a broker
            // gone silent, which picket reports as the connection lost and recovers from.
            let io = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
            tracing::error!(target: "lapin::io_loop", error = ?io, "error doing IO");
            tracing::error!(target: "lapin::heartbeat", "We haven't received anything from the server for too long, closing connection.");
            tracing::error!(target: "lapin::channel", "Got a bad acknowledgement from server");
            tracing::warn!(target: "lapin::channel", %error);
        });
        let text = String::from_utf8(out.0.lock().expect("sink").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("bad acknowledgement"), "{text}");
        assert!(lines[1].contains("WARN"), "{text}");
    }

    /// reviewT: `filter_problem` (log.rs:27-44) refuses any directive with no `=` and
    /// no `::` that is not a level word, so a bare crate or module name (`picket`,
    /// `lapin`, the most common RUST_LOG an operator writes: "everything picket logs"),
    /// a span directive (`[probe]`) and a numeric level (`4`, debug) are refused, though
    /// EnvFilter reads each exactly as meant. `log.level = "picket"` in a config that
    /// started before now stops the worker ("log.level: ... is no level"), and
    /// RUST_LOG=picket is silently (a warn line) replaced by log.level.
    #[test]
    fn review_t_valid_directives_operators_use_are_no_problem() {
        let refused: Vec<(&str, String)> = [
            "picket",
            "warn,picket",
            "info,[probe]",
            "4",
            // Review U: crates' names a letter or two off a level.
            "warp",
            "tracing",
            "errno",
        ]
        .into_iter()
        .inspect(|d| assert!(EnvFilter::try_new(*d).is_ok(), "{d}"))
        .filter_map(|d| filter_problem(d).map(|why| (d, why)))
        .collect();
        assert!(refused.is_empty(), "refused: {refused:#?}");
    }
}
