//! A private redis-server on 127.0.0.1, with nothing persisted, that a test
//! can stop and start again on the same port to see how picket behaves while
//! its cache is gone; a private Redis Cluster (with replicas, whose primaries
//! can be killed); and a primary with a replica watched by three Sentinels.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use crate::procs::{self, Watchdog};

mod cluster;
mod sentinels;

pub use cluster::RedisCluster;
pub use sentinels::{RedisSentinels, SENTINEL_MASTER};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RedisServer {
    port: u16,
    url: String,
    /// The TLS port and the server's TLS arguments, when it has one.
    tls: Option<(u16, Vec<String>)>,
    dir: PathBuf,
    bin: PathBuf,
    child: Mutex<Option<Child>>,
    _watchdog: Watchdog,
}

impl RedisServer {
    /// Starts a new server on a free port and waits until it answers PING.
    ///
    /// Panics with the install hint if redis-server is not installed: a test
    /// that needs Redis must never pass by skipping.
    pub fn launch() -> Result<RedisServer, String> {
        Self::launch_with(None)
    }

    /// [`RedisServer::launch`], also serving TLS on a port of its own with the PEM
    /// files given (clients are not asked for certificates): [`RedisServer::tls_url`].
    pub fn launch_tls(cert: &Path, key: &Path, ca: &Path) -> Result<RedisServer, String> {
        Self::launch_tls_asking(cert, key, ca, false)
    }

    /// [`RedisServer::launch_tls`] that also asks every client for a certificate
    /// signed by `ca` (`tls-auth-clients yes`, redis-server's own default with TLS).
    pub fn launch_mutual_tls(cert: &Path, key: &Path, ca: &Path) -> Result<RedisServer, String> {
        Self::launch_tls_asking(cert, key, ca, true)
    }

    fn launch_tls_asking(
        cert: &Path,
        key: &Path,
        ca: &Path,
        clients: bool,
    ) -> Result<RedisServer, String> {
        let port = procs::free_port();
        let file = |p: &Path| p.display().to_string();
        let args = vec![
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            file(cert),
            "--tls-key-file".to_string(),
            file(key),
            "--tls-ca-cert-file".to_string(),
            file(ca),
            "--tls-auth-clients".to_string(),
            if clients { "yes" } else { "no" }.to_string(),
        ];
        Self::launch_with(Some((port, args)))
    }

    fn launch_with(tls: Option<(u16, Vec<String>)>) -> Result<RedisServer, String> {
        let bin = find_server()
            .unwrap_or_else(|| panic!("redis-server not found: {}", procs::INSTALL_HINT));
        let dir = procs::scratch_dir("redis")?;
        let port = procs::free_port();
        // The cleanup reads the PID file we write after each start, because a
        // restart gives the server a new PID the watchdog cannot know ahead.
        let watchdog = Watchdog::spawn(
            "redis",
            &dir.join("watchdog.log"),
            r#"
pid=$(cat "$1/redis.pid" 2>/dev/null)
if ours "$pid" "$2"; then kill -KILL "$pid"; fi
tidy "$1"
"#,
            &[dir.display().to_string(), format!("127.0.0.1:{port}")],
            &[],
        )?;
        let server = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            tls,
            dir,
            bin,
            child: Mutex::new(None),
            _watchdog: watchdog,
        };
        server.try_start()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:TLS_PORT/0`, for a server made by [`RedisServer::launch_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}/0"))
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        procs::lock(&self.child).as_ref().map(Child::id)
    }

    /// True if the server process is running (it may still be booting).
    pub fn is_running(&self) -> bool {
        let mut child = procs::lock(&self.child);
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server abruptly, as a crash or an OOM kill would, and waits
    /// until it is gone. Does nothing if it is already stopped.
    pub fn stop(&self) {
        let mut guard = procs::lock(&self.child);
        if let Some(mut child) = guard.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("redis.pid"));
    }

    /// Starts the server again on the same port (empty: nothing is saved)
    /// and waits until it answers PING. Does nothing if it is running.
    pub fn start(&self) {
        self.try_start()
            .unwrap_or_else(|e| panic!("restarting redis-server failed: {e}"));
    }

    /// Freezes the server with SIGSTOP, as a host that hangs does: its connections stay
    /// open and carry nothing until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a [`freeze`](Self::freeze)d server run again.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            // redis-server rewrites its command line to its address.
            procs::signal(pid, signal, &format!("127.0.0.1:{}", self.port));
        }
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn try_start(&self) -> Result<(), String> {
        let mut guard = procs::lock(&self.child);
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let log = self.dir.join("redis.log");
        let mut cmd = server_command(&self.bin, self.port, &self.dir);
        if let Some((_, args)) = &self.tls {
            cmd.args(args);
        }
        procs::background(&mut cmd, &log)?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        std::fs::write(self.dir.join("redis.pid"), child.id().to_string())
            .map_err(|e| format!("cannot write redis.pid in {}: {e}", self.dir.display()))?;
        let port = self.port;
        let ready = procs::wait_ready("redis-server", &mut child, &log, STARTUP_TIMEOUT, || {
            answers_ping(port)
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        *guard = Some(child);
        Ok(())
    }
}

/// The redis-server executable, from PATH or the usual directories.
pub fn find_server() -> Option<PathBuf> {
    procs::find_binary("redis-server", &["/usr/bin", "/usr/sbin", "/usr/local/bin"])
}

/// A private redis-server on 127.0.0.1:`port` that persists nothing: what the
/// tests, `cargo xtask bench` and `cargo xtask demo` all run.
pub fn server_command(bin: &Path, port: u16, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir);
    cmd
}

impl Drop for RedisServer {
    /// A private server made by a test stops when the test drops it; the
    /// watchdog then only removes the directory.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Speaks just enough RESP to know the server serves commands, not merely
/// that the port accepts connections.
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A watchdog for servers that each write `DIR/redis-PORT.pid`: the cleanup kills each
/// only if that PID still runs a redis-server (or Sentinel) on that port.
/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` without following redirects and
/// returns its output (empty on failure).
fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> String {
    Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn watch_pid_files(name: &str, dir: &Path) -> Result<Watchdog, String> {
    Watchdog::spawn(
        name,
        &dir.join("watchdog.log"),
        r#"
for f in "$1"/redis-*.pid; do
  [ -e "$f" ] || continue
  port=${f##*/redis-}; port=${port%.pid}
  pid=$(cat "$f" 2>/dev/null)
  if ours "$pid" "127.0.0.1:$port"; then kill -KILL "$pid"; fi
done
tidy "$1"
"#,
        &[dir.display().to_string()],
        &[],
    )
}

/// Starts `cmd` (a server on `port`) and records its PID in `DIR/redis-PORT.pid`, where
/// the watchdog of [`watch_pid_files`] finds it.
fn spawn_watched(cmd: &mut Command, dir: &Path, port: u16) -> Result<Child, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let pid_file = dir.join(format!("redis-{port}.pid"));
    if let Err(e) = std::fs::write(&pid_file, child.id().to_string()) {
        // Unrecorded, the watchdog could not stop it: stop it now.
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("cannot write {}: {e}", pid_file.display()));
    }
    Ok(child)
}
