//! What the commands share: the repository's paths, cargo, progress lines,
//! a minimal HTTP GET for readiness and metrics, and small number helpers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A progress line on stderr, as the scripts printed them.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("==> {}", format_args!($($arg)*)) };
}
pub(crate) use say;

/// The repository's root: xtask/ lives one level below it.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where cargo puts build output (CARGO_TARGET_DIR, as cargo reads it).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo that runs us (`cargo xtask` sets CARGO), else the one on PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` in the repository's root, its output on our terminal.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails with its stderr.
pub fn output(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET http://ADDR/PATH` over HTTP/1.0: the status and the body. Enough for
/// the worker's /readyz and /metrics and the demo site (all on loopback).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let sock = addr
        .parse()
        .with_context(|| format!("not an address: {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&*text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status from {addr}"))?;
    Ok((status, body.to_string()))
}

/// True if GET answers below 400 (what `urllib.request.urlopen` accepts).
pub fn http_ok(addr: &str, path: &str) -> bool {
    matches!(http_get(addr, path), Ok((status, _)) if status < 400)
}

/// True if something accepts TCP connections on `ip:port`.
pub fn listening(ip: &str, port: u16) -> bool {
    format!("{ip}:{port}")
        .parse()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The middle value (the lower middle for an even count; the shared 2-core
/// machine is noisy, so each figure is the median of several measurements).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n => v[n.div_ceil(2) - 1],
    }
}

/// Kilobytes as "N MB".
pub fn mb(kb: &str) -> String {
    format!("{:.0} MB", kb.parse::<f64>().unwrap_or(0.0) / 1024.0)
}

/// The last `lines` lines of a file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    testbed::procs::tail(path, lines)
}

/// The parent of process `pid`, from `/proc/PID/stat` (the field after the command
/// name, which may itself hold spaces and parentheses: hence the last `") "`).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process_is_the_one_the_kernel_names() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        assert_eq!(parent_of(u32::MAX), None);
    }

    #[test]
    fn median_takes_the_lower_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 1.0);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert_eq!(median(&[]), 0.0);
    }
}
