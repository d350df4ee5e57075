//! Output that fits where it goes: a table on a terminal (column widths measured in
//! terminal cells, so Chinese text lines up; `comfy-table`), JSON lines in a pipe or
//! with `--json`; colour only on a terminal and never with `NO_COLOR` (`anstream`'s
//! rules: `NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`, `TERM=dumb`). Also the one-line
//! hints added to errors a person can act on.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::{
    Cell, Color, ColumnConstraint, ContentArrangement, Table, TableComponent, Width,
};

use crate::amqp::AmqpError;
use crate::job::{Report, Verdict};

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// A table (stdout is a terminal and `--json` was not given), else JSON lines.
    pub table: bool,
    /// Colours in the table.
    pub colour: bool,
}

impl Style {
    /// Decides from stdout and the environment.
    pub(crate) fn detect(json: bool) -> Style {
        let stdout = std::io::stdout();
        let table = !json && stdout.is_terminal();
        let colour = table && anstream::AutoStream::choice(&stdout) != anstream::ColorChoice::Never;
        Style { table, colour }
    }
}

const HEADER: [&str; 6] = ["verdict", "reason", "http", "time", "url", "detail"];

/// Widths (two cells of padding included) of the verdict, reason, http and time
/// columns: the longest verdict, the longest reason code (`egress_unavailable`), the
/// header `HTTP`, `9999ms`.
const FIXED: [u16; 4] = [10, 20, 6, 8];

/// Width when the terminal's cannot be read.
const FALLBACK_WIDTH: u16 = 120;

fn verdict_colour(v: Verdict) -> Color {
    match v {
        Verdict::Up => Color::Green,
        Verdict::Degraded => Color::Yellow,
        Verdict::Down => Color::Red,
        Verdict::Unknown => Color::Magenta,
        Verdict::Invalid => Color::Blue,
    }
}

fn millis(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn cells(r: &Report, colour: bool) -> Vec<Cell> {
    let mut verdict = Cell::new(r.verdict.as_str());
    if colour {
        verdict = verdict.fg(verdict_colour(r.verdict));
    }
    let status = r
        .http
        .as_ref()
        .map_or_else(|| "-".to_string(), |h| h.status.to_string());
    vec![
        verdict,
        Cell::new(r.reason.as_str()),
        Cell::new(status),
        Cell::new(millis(r.timing_ms.total)),
        Cell::new(visible(&display_url(&r.url))),
        Cell::new(visible(&r.detail)),
    ]
}

/// `text` with its control characters written out (`\u{1b}`): a result's words come
/// from whoever published it, and an escape sequence reaching the terminal could clear
/// it or rename its window (hunt U).
fn visible(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A URL as a person wrote it: the host in Unicode (not `xn--`), the path and query
/// percent-decoded where that gives UTF-8 text. For display only; JSON keeps the URL.
pub(crate) fn display_url(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let host = parsed.host_str().unwrap_or_default();
    let (unicode_host, ok) = idna::domain_to_unicode(host);
    let mut shown = url.to_string();
    if ok.is_ok() && unicode_host != host {
        shown = shown.replacen(host, &unicode_host, 1);
    }
    match percent_encoding::percent_decode_str(&shown).decode_utf8() {
        Ok(decoded) if !decoded.chars().any(char::is_control) => decoded.into_owned(),
        _ => shown,
    }
}

/// A borderless table: columns separated by spaces, like `ls -l` or `kubectl get`.
pub(crate) fn plain_table(colour: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    for c in [
        TableComponent::LeftBorder,
        TableComponent::RightBorder,
        TableComponent::TopBorder,
        TableComponent::BottomBorder,
        TableComponent::VerticalLines,
        TableComponent::HorizontalLines,
        TableComponent::MiddleIntersections,
        TableComponent::LeftBorderIntersections,
        TableComponent::RightBorderIntersections,
        TableComponent::TopBorderIntersections,
        TableComponent::BottomBorderIntersections,
        TableComponent::TopLeftCorner,
        TableComponent::TopRightCorner,
        TableComponent::BottomLeftCorner,
        TableComponent::BottomRightCorner,
        TableComponent::HeaderLines,
        TableComponent::MiddleHeaderIntersections,
        TableComponent::LeftHeaderIntersection,
        TableComponent::RightHeaderIntersection,
    ] {
        t.remove_style(c);
    }
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if colour {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t
}

fn header_row(colour: bool) -> Vec<Cell> {
    HEADER
        .iter()
        .map(|h| {
            let c = Cell::new(h.to_uppercase());
            if colour {
                c.add_attribute(comfy_table::Attribute::Bold)
            } else {
                c
            }
        })
        .collect()
}

/// Two cells between columns, none before the first.
pub(crate) fn pad_columns(t: &mut Table) {
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
}

/// The terminal's width in cells.
pub(crate) fn terminal_width() -> u16 {
    Table::new()
        .width()
        .filter(|w| *w >= 40)
        .unwrap_or(FALLBACK_WIDTH)
}

/// All reports in one table, columns as wide as they need within the terminal.
pub(crate) fn report_table(reports: &[Report], colour: bool) -> String {
    let mut t = plain_table(colour);
    t.set_width(terminal_width());
    t.set_header(header_row(colour));
    for r in reports {
        t.add_row(cells(r, colour));
    }
    pad_columns(&mut t);
    t.to_string()
}

/// Prints reports one at a time (they arrive over time) as rows of fixed widths, so
/// that every row lines up with the header printed first.
pub(crate) struct RowPrinter {
    constraints: Vec<ColumnConstraint>,
    width: u16,
    colour: bool,
}

impl RowPrinter {
    /// Widths from the terminal: the fixed columns, then the URL and the detail sharing
    /// the rest (nearly half for the URL).
    pub(crate) fn new(colour: bool) -> RowPrinter {
        let width = terminal_width();
        let fixed: u16 = FIXED.iter().sum();
        let rest = width.saturating_sub(fixed).max(30);
        let url = rest * 9 / 20;
        let mut constraints: Vec<ColumnConstraint> = FIXED
            .iter()
            .map(|w| ColumnConstraint::Absolute(Width::Fixed(*w)))
            .collect();
        constraints.push(ColumnConstraint::Absolute(Width::Fixed(url)));
        constraints.push(ColumnConstraint::Absolute(Width::Fixed(rest - url)));
        RowPrinter {
            constraints,
            width: fixed + rest,
            colour,
        }
    }

    fn render(&self, row: Vec<Cell>) -> String {
        let mut t = plain_table(self.colour);
        t.set_width(self.width);
        t.add_row(row);
        pad_columns(&mut t);
        t.set_constraints(self.constraints.clone());
        t.to_string()
    }

    /// The header line.
    pub(crate) fn header(&self) -> String {
        self.render(header_row(self.colour))
    }

    /// One report's row (several lines when a cell wraps).
    pub(crate) fn row(&self, r: &Report) -> String {
        self.render(cells(r, self.colour))
    }
}

/// Counts per verdict, in the contract's order.
#[derive(Debug, Default)]
pub(crate) struct Tally(BTreeMap<u8, (Verdict, u64)>);

impl Tally {
    /// Counts one verdict.
    pub(crate) fn add(&mut self, v: Verdict) {
        let order = match v {
            Verdict::Up => 0,
            Verdict::Degraded => 1,
            Verdict::Down => 2,
            Verdict::Unknown => 3,
            Verdict::Invalid => 4,
        };
        self.0.entry(order).or_insert((v, 0)).1 += 1;
    }

    /// How many were counted.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().map(|(_, n)| n).sum()
    }

    /// Whether every one was `up` (and there was one).
    pub(crate) fn all_up(&self) -> bool {
        self.total() > 0 && self.0.len() == 1 && self.0.contains_key(&0)
    }

    /// `3 checked in 1.2 s: 2 up, 1 down`.
    pub(crate) fn summary(&self, what: &str, took: Duration) -> String {
        let parts: Vec<String> = self
            .0
            .values()
            .map(|(v, n)| format!("{n} {}", v.as_str()))
            .collect();
        format!(
            "{} {what} in {:.1} s: {}",
            self.total(),
            took.as_secs_f64(),
            if parts.is_empty() {
                "nothing".to_string()
            } else {
                parts.join(", ")
            }
        )
    }
}

/// What to try, for errors a person can act on.
pub(crate) fn hint(e: &anyhow::Error) -> Option<String> {
    let amqp = e.chain().find_map(|c| c.downcast_ref::<AmqpError>());
    let amqp = amqp.or_else(|| {
        e.chain()
            .find_map(|c| c.downcast_ref::<crate::amqp::commands::ReadError>())
            .and_then(|r| match r {
                crate::amqp::commands::ReadError::Broker(b) => Some(b),
                crate::amqp::commands::ReadError::Write(_) => None,
            })
    });
    match amqp {
        Some(e) if e.ended_in_tls() => Some(format!("hint: {}", crate::amqp::TLS_HINT)),
        // The broker answered: it is running, and refused who we said we are.
        Some(AmqpError::Connect { message, .. }) if message.contains("ACCESS_REFUSED") => Some(
            "hint: RabbitMQ refused the login: check the user name and password in amqp.url \
             (`picket config show` prints the URL in use, password hidden, and where it came \
             from)."
                .to_string(),
        ),
        Some(AmqpError::Connect { message, .. })
            if message.contains("NOT_ALLOWED") && message.contains("not found") =>
        {
            Some(
                "hint: the virtual host named at the end of amqp.url does not exist on this \
                 broker (%2f is the default, \"/\"): `rabbitmqctl list_vhosts` lists those it has."
                    .to_string(),
            )
        }
        Some(AmqpError::Connect { message, .. }) if message.contains("NOT_ALLOWED") => Some(
            "hint: RabbitMQ refused this user the virtual host named at the end of amqp.url \
             (%2f is the default, \"/\"): grant it with rabbitmqctl set_permissions."
                .to_string(),
        ),
        Some(AmqpError::Connect { .. }) => Some(
            "hint: is RabbitMQ running and reachable there? Set the broker with amqp.url in the \
             configuration file (--config or PICKET_CONFIG) or PICKET__AMQP__URL; \
             `picket config show` prints the URL in use and where it came from."
                .to_string(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hunt U: a result's `detail` or `url` carrying escape sequences (anything that can
    /// publish to the results exchange writes them) reached the operator's terminal as
    /// they came: `ESC]0;title BEL` renamed the window, `ESC[2J` cleared the screen.
    #[test]
    fn a_table_shows_control_characters_and_never_sends_them() {
        let json = r#"{"job_id":"j","url":"http://a.example/\u001b[2J","verdict":"down",
            "reason":"connect","detail":"refused\u001b]0;pwned\u0007 here","http":null,
            "timing_ms":{"total":3},"ip":null,"egress":null,"attempts":1,
            "checked_at":"2026-12-02T00:00:00Z","cached":false,"previous_verdict":null,
            "changed":false,"streak":1,"since":null,"key":null,"worker":"w"}"#;
        let report: Report = serde_json::from_str(json).expect("a result");
        let table = report_table(&[report], false);
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{7}'),
            "{table:?}"
        );
        assert!(table.contains("refused"), "{table}");
    }

    #[test]
    fn a_tls_connection_the_broker_ended_is_hinted_at_certificates() {
        let connect = |url: &str, message: &str| {
            anyhow::Error::from(AmqpError::Connect {
                url: url.into(),
                message: message.into(),
            })
        };
        let reset = "IO error: Connection reset by peer (os error 104)";
        let tls = hint(&connect("amqps://guest:***@mq:5671/%2f", reset)).expect("a hint");
        assert!(
            tls.contains("amqp.client_cert_file") && tls.contains("amqp.ca_file"),
            "{tls}"
        );
        let plain = hint(&connect("amqp://guest:***@mq:5672/%2f", reset)).expect("a hint");
        assert!(plain.contains("is RabbitMQ running"), "{plain}");
        let refused = "IO error: Connection refused (os error 111)";
        let down = hint(&connect("amqps://guest:***@mq:5671/%2f", refused)).expect("a hint");
        assert!(down.contains("is RabbitMQ running"), "{down}");
    }

    #[test]
    fn tally_counts_in_order_and_knows_all_up() {
        let mut t = Tally::default();
        assert!(!t.all_up(), "nothing checked is not all up");
        t.add(Verdict::Up);
        assert!(t.all_up());
        t.add(Verdict::Down);
        t.add(Verdict::Up);
        assert!(!t.all_up());
        assert_eq!(
            t.summary("checked", Duration::from_millis(1234)),
            "3 checked in 1.2 s: 2 up, 1 down"
        );
    }

    #[test]
    fn urls_are_shown_as_written() {
        assert_eq!(
            display_url("http://xn--fsqu00a.xn--0zwm56d/%E6%96%B0%E9%97%BB/?q=%E5%9B%BE"),
            "http://例子.测试/新闻/?q=图"
        );
        assert_eq!(display_url("http://a.example/%0A"), "http://a.example/%0A");
        assert_eq!(display_url("not a url"), "not a url");
    }

    #[test]
    fn times_stay_short() {
        assert_eq!(millis(412), "412ms");
        assert_eq!(millis(30_000), "30.0s");
    }
}
