//! `picket config check` and `picket config show`: the effective configuration, checked
//! as the worker would check it, each value with where it came from.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use clap::Args;
use comfy_table::Cell;

use super::output::{pad_columns, plain_table, terminal_width, Style};
use super::{ConfigCommand, Exit};
use crate::config::origin::{self, Entry, Source};
use crate::config::Settings;

/// `picket config show` arguments.
#[derive(Args, Debug)]
pub(crate) struct ShowArgs {
    /// JSON lines (`{"key", "value", "source"}`) even on a terminal.
    #[arg(long)]
    pub json: bool,
}

fn environment() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("PICKET__"))
        .collect()
}

/// Runs `picket config check|show` (no runtime needed).
pub(crate) fn run(command: &ConfigCommand, file: Option<&Path>) -> Exit {
    let env = environment();
    for var in origin::stray_env(std::env::vars().map(|(k, _)| k)) {
        say!("picket: warning: {}", origin::stray_env_warning(&var));
    }
    // Validation first: `show` of a configuration the worker would refuse says so.
    if let Err(e) = Settings::load_with_env(file, env.clone()) {
        say!("picket: {e}");
        return Exit::from(&e);
    }
    let entries = match origin::entries(file, &env) {
        Ok(e) => e,
        Err(e) => {
            say!("picket: {e}");
            return Exit::from(&e);
        }
    };
    let written = match command {
        ConfigCommand::Check => check(file, &entries),
        ConfigCommand::Show(args) => show(&entries, Style::detect(args.json)),
    };
    match written {
        Ok(()) => Exit::Success,
        Err(e) => {
            say!("picket: cannot write: {e}");
            Exit::Failure
        }
    }
}

fn check(file: Option<&Path>, entries: &[Entry]) -> std::io::Result<()> {
    let from_env: Vec<&str> = entries
        .iter()
        .filter_map(|e| match &e.source {
            Source::Env(v) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let from_file = entries
        .iter()
        .filter(|e| matches!(e.source, Source::File(_)))
        .count();
    let file = file.map_or_else(
        || "no file".to_string(),
        |p| format!("file {} ({from_file} values)", p.display()),
    );
    let env = if from_env.is_empty() {
        "no environment variables".to_string()
    } else {
        format!("environment {}", from_env.join(", "))
    };
    writeln!(
        std::io::stdout(),
        "configuration is valid: defaults, {file}, {env}"
    )
}

fn show(entries: &[Entry], style: Style) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if !style.table {
        for e in entries {
            let line = serde_json::json!({
                "key": e.key, "value": e.json, "source": e.source.to_string(),
            });
            writeln!(out, "{line}")?;
        }
        return out.flush();
    }
    let mut t = plain_table(style.colour);
    t.set_width(terminal_width());
    t.set_header(["KEY", "VALUE", "SOURCE"]);
    for e in entries {
        let mut source = Cell::new(e.source.to_string());
        if style.colour && e.source != Source::Default {
            source = source.fg(comfy_table::Color::Cyan);
        }
        t.add_row(vec![Cell::new(&e.key), Cell::new(&e.value), source]);
    }
    pad_columns(&mut t);
    writeln!(out, "{t}")?;
    out.flush()
}
