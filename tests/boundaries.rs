//! Boundaries the compiler does not keep for us (picket is one crate, docs/DESIGN.md
//! says why), checked by reading the source: the probe core does no I/O.

use std::path::{Path, PathBuf};

/// Crates and paths that mean I/O, a clock or a runtime: none belongs in `src/probe/`.
const IO: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "lapin",
    "redis",
    "deadpool",
    "hickory",
    "rustls",
    "std::fs",
    "std::io",
    "std::net::Tcp",
    "std::net::Udp",
    "std::process",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant::now",
    "tracing",
    "metrics",
];

/// The rooms of picket the probe core may use: wire types and settings, both plain data.
const ALLOWED_ROOMS: &[&str] = &["crate::job", "crate::config", "crate::probe"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/probe") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file before its unit tests (tests may use a runtime).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Words of `code` (outside comments) that name I/O or a room the core may not use.
fn trespasses(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for word in IO {
            let at_word_start = line
                .match_indices(word)
                .any(|(i, _)| !line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
            if at_word_start {
                found.push(format!("line {}: {word}: {}", n + 1, line.trim()));
            }
        }
        for (i, _) in line.match_indices("crate::") {
            if !ALLOWED_ROOMS.iter().any(|room| line[i..].starts_with(room)) {
                found.push(format!("line {}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_probe_core_does_no_io_and_uses_only_data_rooms() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/probe"),
        &mut files,
    );
    assert!(files.len() >= 4, "src/probe has its files: {files:?}");
    let mut bad = Vec::new();
    for file in &files {
        for t in trespasses(&code_of(file)) {
            bad.push(format!("{}: {t}", file.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "the probe core reaches outside:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_sees_io_and_foreign_rooms() {
    let code = "use tokio::time::sleep;\nuse crate::http::HttpProber;\n// tokio in a comment\nuse crate::job::Job;\nlet my_tokio = 1;\n";
    let found = trespasses(code);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("tokio") && found[1].contains("crate::http"));
}
