//! Process plumbing shared by the server helpers: finding the server binaries,
//! scratch directories, readiness polling, and the watchdog that stops a
//! server once the test process is gone.
//!
//! The Rust test harness never runs destructors of statics and a test binary
//! can be killed at any moment, so nothing here relies on `Drop` for the
//! shared servers: each server gets a watchdog shell whose stdin is a pipe
//! held open by this process. The kernel closes that pipe however we die, the
//! watchdog's `read` sees end-of-file, and it runs its cleanup script.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The message every missing-binary panic carries, so that whoever reads a
/// failed run knows the one command that fixes it.
pub const INSTALL_HINT: &str =
    "run scripts/test (it installs the test dependencies) or apt-get install rabbitmq-server redis-server redis-sentinel openssl";

/// Scratch directories carry this prefix; the watchdog refuses to delete
/// anything else, as a guard against a bad path reaching `rm -rf`.
pub const DIR_PREFIX: &str = "picket-test-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test, test binary or earlier run uses:
/// `prefix-PID-COUNTER-MILLIS` (the time part keeps names unique across runs
/// even when PIDs are reused and durable queues survive in a broker).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{millis:x}", std::process::id())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on
/// Linux): a server restarted "on the same port" must not find its port taken
/// by some test's outgoing connection in the seconds it was down, which is
/// what happens to a port the kernel handed out with `bind(:0)`. Every port
/// handed out is remembered, so two callers in this process never get the
/// same one even though the probe socket is closed before the caller binds.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_768;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = lock(&GIVEN);
    let given = given.get_or_insert_with(HashSet::new);
    // Each test binary starts at its own place so concurrent binaries rarely
    // probe the same ports; the bind below is what guarantees freeness.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let span = HIGH - LOW;
    for i in 0..span {
        // 7919 is prime and shares no factor with the span, so the walk visits
        // every port in the range once.
        let step = (u64::from(seed) + u64::from(i) * 7919) % u64::from(span);
        let port = (u64::from(LOW) + step) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 between {LOW} and {HIGH}");
}

/// True if some local TCP socket has `port`, in any state. A port left in
/// TIME_WAIT by an earlier connection is free to connect to but, without
/// SO_REUSEADDR (epmd's and RabbitMQ's listeners), not to listen on.
pub fn port_used(port: u16) -> bool {
    let local = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            text.lines()
                .filter_map(|line| line.split_whitespace().nth(1))
                .any(|addr| format!("{addr} ").ends_with(&local))
        })
    })
}

/// Locks a mutex even if a panicking test poisoned it: the state it guards
/// (child handles) stays meaningful after a panic elsewhere.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Finds an executable on PATH or in `extra_dirs` (sbin directories are often
/// missing from a non-root PATH).
pub fn find_binary(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A fresh private directory under the system temp dir.
pub fn scratch_dir(kind: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(unique(&format!("{DIR_PREFIX}{kind}")));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// An append-mode log file, so a restarted server keeps the earlier history.
pub fn log_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// Prepares a command for a background server: no terminal input, output to
/// a log file, and its own process group.
///
/// Its own group keeps a Ctrl-C aimed at `cargo test` from reaching the
/// server directly (the watchdog stops it in an orderly way instead), and
/// redirected output keeps a server from holding cargo's stdout open after
/// the tests end, which would make `cargo test | tee` hang.
pub fn background(cmd: &mut Command, log: &Path) -> Result<(), String> {
    let out = log_file(log)?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot duplicate {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    Ok(())
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Polls `ready` until it returns true, the child dies, or `timeout` passes.
/// Errors name what we waited for and show the end of its log.
pub fn wait_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited during startup ({status}); last lines of {}:\n{}",
                log.display(),
                tail(log, 40)
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} was not ready after {timeout:?}; last lines of {}:\n{}",
                log.display(),
                tail(log, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a child to exit, up to `timeout`; true if it did.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// True if the live process `pid` has `needle` in its command line.
///
/// Every kill goes through this check so that a PID that was recycled after
/// our server died is never signalled.
pub fn pid_matches(pid: u32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle)
        })
        .unwrap_or(false)
}

/// Waits, up to `timeout`, until the child's command line holds `needle` or
/// the child has exited. `spawn` returns once the kernel has closed the
/// parent's side of the exec, which is before it writes the new program's
/// arguments: until then `/proc/PID/cmdline` is empty, and every PID check
/// (ours, the watchdog's) would take the process for someone else's.
pub fn await_exec(child: &mut Child, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !pid_matches(child.id(), needle)
        && matches!(child.try_wait(), Ok(None))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `signal` (e.g. "KILL", "TERM") to `pid` if it is still ours.
pub fn signal(pid: u32, signal: &str, needle: &str) {
    if pid_matches(pid, needle) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Shell helpers the cleanup scripts share: `ours PID NEEDLE` is the shell
/// twin of [`pid_matches`]; `sweep NEEDLE` kills every process but itself
/// whose command line holds NEEDLE (a path inside our scratch dir), for a
/// server that was still booting, with no PID file yet, when we died; `tidy
/// DIR` removes a scratch dir unless the developer asked to keep it
/// (PICKET_TEST_KEEP_DIRS=1) to read its logs.
const SHELL_PRELUDE: &str = r#"
ours() { [ -n "$1" ] && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }
sweep() {
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    if ours "$pid" "$1"; then kill -KILL "$pid" 2>/dev/null; fi
  done
}
tidy() {
  [ -n "$PICKET_TEST_KEEP_DIRS" ] && return 0
  case "$1" in */DIRPREFIX*) rm -rf -- "$1" ;; esac
}
"#;

/// The write end of a watchdog's stdin. While this value lives the watchdog
/// waits; when it is dropped, or this process dies, the watchdog runs its
/// cleanup script.
pub struct Watchdog {
    _pipe: ChildStdin,
}

impl Watchdog {
    /// Starts `sh -c` with the shared prelude and `cleanup`, which sees
    /// `args` as `$1`, `$2`, ... and `envs` in its environment.
    pub fn spawn(
        name: &str,
        log: &Path,
        cleanup: &str,
        args: &[String],
        envs: &[(String, String)],
    ) -> Result<Watchdog, String> {
        let script = format!(
            "{}\nread -r _ || :\n{cleanup}\n",
            SHELL_PRELUDE.replace("DIRPREFIX", DIR_PREFIX)
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(format!("picket-test-watchdog-{name}"));
        cmd.args(args);
        cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        background(&mut cmd, log)?;
        // `background` set stdin to null; the pipe is the whole point here.
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {name} watchdog (sh): {e}"))?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| format!("the {name} watchdog has no stdin pipe"))?;
        // The Child handle is dropped without waiting: the watchdog must
        // outlive us, and dropping a Child neither kills nor waits for it.
        Ok(Watchdog { _pipe: pipe })
    }
}

/// A background process that is stopped by PID when this value is dropped,
/// and by its watchdog if this process dies first (SIGKILL included).
///
/// For the helpers `cargo xtask bench` starts beside the testbed's servers
/// (nginx, dnsmasq, the worker, the hold server): every kill checks that the
/// PID still runs `needle`, so a recycled PID is never signalled.
pub struct Guard {
    name: String,
    child: Child,
    needle: String,
    _watchdog: Watchdog,
}

impl Guard {
    /// Starts `cmd` in the background (output to `log`, its own process
    /// group) under a watchdog; `needle` is a string of its command line.
    ///
    /// # Errors
    /// The log cannot be opened or the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, needle: &str) -> Result<Guard, String> {
        background(cmd, log)?;
        Guard::start(name, cmd, &log.with_extension("watchdog.log"), needle)
    }

    /// [`spawn`](Self::spawn) for a command whose input and output the
    /// caller has set up (e.g. stdout to one file, stderr to another).
    ///
    /// # Errors
    /// The program or its watchdog cannot be started.
    pub fn start(
        name: &str,
        cmd: &mut Command,
        watchdog_log: &Path,
        needle: &str,
    ) -> Result<Guard, String> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        await_exec(&mut child, needle, Duration::from_secs(5));
        let watchdog = Watchdog::spawn(
            name,
            watchdog_log,
            r#"
if ours "$1" "$2"; then kill -TERM "$1"; sleep 5; if ours "$1" "$2"; then kill -KILL "$1"; fi; fi
"#,
            &[child.id().to_string(), needle.to_string()],
            &[],
        )?;
        Ok(Guard {
            name: name.to_string(),
            child,
            needle: needle.to_string(),
            _watchdog: watchdog,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs (an exited child is reaped here, so a
    /// zombie does not count as running).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `ready` until it is true; fails, with the end of `log`, if the
    /// process exits or `timeout` passes.
    ///
    /// # Errors
    /// The process exited or was not ready in time.
    pub fn wait_ready(
        &mut self,
        log: &Path,
        timeout: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        wait_ready(&self.name, &mut self.child, log, timeout, ready)
    }

    /// Sends `sig` (e.g. "INT") if the process is still ours.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig, &self.needle);
    }

    /// Waits up to `timeout` for the process to exit by itself; true if it did.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        wait_exit(&mut self.child, timeout)
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit. Returns false
    /// if SIGTERM was not enough.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if !self.is_alive() {
            return true;
        }
        signal(self.pid(), "TERM", &self.needle);
        if wait_exit(&mut self.child, grace) {
            return true;
        }
        eprintln!(
            "{} ({}) ignored SIGTERM for {grace:?}; killing it",
            self.name,
            self.pid()
        );
        signal(self.pid(), "KILL", &self.needle);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(15));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_not_handed_out_twice() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!((20_000..32_768).contains(&a));
    }

    #[test]
    fn a_listening_port_is_used_and_a_free_one_is_not() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_used(port));
    }

    /// The kernel closes the spawn pipe (and ends a vfork) before it writes
    /// the new program's arguments, so `/proc/PID/cmdline` can be empty for a
    /// moment after `spawn` returns; a guard is whole only once it is not.
    #[test]
    fn a_guard_runs_its_needle_as_soon_as_it_is_spawned() {
        let dir = scratch_dir("guard-exec").unwrap();
        for round in 0..40 {
            let log = dir.join(format!("sleep{round}.log"));
            let mut cmd = Command::new("sleep");
            cmd.arg("38.5");
            let mut guard = Guard::spawn("sleep", &mut cmd, &log, "sleep 38.5").unwrap();
            assert!(
                pid_matches(guard.pid(), "sleep 38.5"),
                "round {round}: the guard returned before its process ran `sleep 38.5`"
            );
            guard.stop(Duration::from_secs(5));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_guard_stops_its_process_by_pid() {
        let dir = scratch_dir("guard").unwrap();
        let log = dir.join("sleep.log");
        let mut cmd = Command::new("sleep");
        cmd.arg("37.5");
        let mut guard = Guard::spawn("sleep", &mut cmd, &log, "sleep 37.5").unwrap();
        let pid = guard.pid();
        assert!(guard.is_alive());
        assert!(pid_matches(pid, "sleep 37.5"));
        assert!(guard.stop(Duration::from_secs(5)), "sleep ignored SIGTERM");
        assert!(!guard.is_alive());
        assert!(!pid_matches(pid, "sleep 37.5"));
        drop(guard);
        let _ = fs::remove_dir_all(dir);
    }
}
