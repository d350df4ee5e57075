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

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RedisServer {
    port: u16,
    url: String,
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

/// A private Redis Cluster of `n` masters (and optionally replicas) on
/// 127.0.0.1, nothing persisted, stopped when dropped or when the test process
/// dies.
pub struct RedisCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    cli: PathBuf,
    children: Mutex<Vec<Child>>,
    _watchdog: Watchdog,
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers on free ports, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// Panics with the install hint if redis-server or redis-cli is missing.
    pub fn launch(n: usize) -> Result<RedisCluster, String> {
        RedisCluster::launch_with_replicas(n, 0)
    }

    /// `masters` primaries, each with `replicas` replicas that take over
    /// (after `cluster-node-timeout`, 2 s) when their primary dies.
    pub fn launch_with_replicas(masters: usize, replicas: usize) -> Result<RedisCluster, String> {
        let n = masters * (1 + replicas);
        let dirs = &["/usr/bin", "/usr/sbin", "/usr/local/bin"];
        let bin = procs::find_binary("redis-server", dirs)
            .unwrap_or_else(|| panic!("redis-server not found: {}", procs::INSTALL_HINT));
        let cli = procs::find_binary("redis-cli", dirs)
            .unwrap_or_else(|| panic!("redis-cli not found: {}", procs::INSTALL_HINT));
        let dir = procs::scratch_dir("redis-cluster")?;
        let ports: Vec<u16> = (0..n).map(|_| procs::free_port()).collect();
        // One PID file per node, named by its port: the cleanup kills each
        // node only if that PID still runs a redis-server on that port.
        let watchdog = Watchdog::spawn(
            "redis-cluster",
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
        )?;
        let cluster = RedisCluster {
            ports,
            dir,
            cli,
            children: Mutex::new(Vec::new()),
            _watchdog: watchdog,
        };
        for &port in &cluster.ports {
            let log = cluster.dir.join(format!("redis-{port}.log"));
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .args(["--cluster-enabled", "yes"])
                // The bus port defaults to port + 10000, which can fall in the kernel's
                // ephemeral range and be taken by any outgoing connection: pick one.
                .args(["--cluster-port", &procs::free_port().to_string()])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&cluster.dir);
            procs::background(&mut cmd, &log)?;
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let pid_file = cluster.dir.join(format!("redis-{port}.pid"));
            std::fs::write(&pid_file, child.id().to_string())
                .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
            let mut children = procs::lock(&cluster.children);
            children.push(child);
            let child = children.last_mut().expect("just pushed");
            procs::wait_ready(
                "redis-server (cluster)",
                child,
                &log,
                STARTUP_TIMEOUT,
                || answers_ping(port),
            )?;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let create = Command::new(&cluster.cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !create.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                create.status,
                String::from_utf8_lossy(&create.stdout),
                String::from_utf8_lossy(&create.stderr)
            ));
        }
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        // Every node serving, and every replica in sync with its primary: a replica
        // that never synced refuses to take over ("disconnected from master for longer
        // than allowed").
        while !cluster.ports.iter().all(|&p| {
            let replication = cluster.cli(p, &["info", "replication"]);
            cluster
                .cli(p, &["cluster", "info"])
                .contains("cluster_state:ok")
                && (replication.contains("role:master")
                    || replication.contains("master_link_status:up"))
        }) {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the cluster in {} did not reach cluster_state:ok",
                    cluster.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// Kills the node on `port` with SIGKILL and waits until it is gone.
    pub fn kill(&self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        let mut children = procs::lock(&self.children);
        if let Some(child) = children.get_mut(i) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every node but `dead` says `cluster_state:ok` and the
    /// slot of `key` is served by a live primary; returns that primary.
    pub fn wait_failover(&self, key: &str, dead: u16, within: Duration) -> Result<u16, String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let ok = self.ports.iter().filter(|&&p| p != dead).all(|&p| {
                self.cli(p, &["cluster", "info"])
                    .contains("cluster_state:ok")
            });
            if let Some(owner) = self.owner(key).filter(|&o| o != dead) {
                if ok {
                    return Ok(owner);
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("no failover of {key}'s slot within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes as `redis://127.0.0.1:PORT` URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The port of the node that owns `key`'s hash slot.
    pub fn owner(&self, key: &str) -> Option<u16> {
        // Any live node computes the slot (the first may have been killed).
        let slot: u16 = self.ports.iter().find_map(|&p| {
            self.cli(p, &["cluster", "keyslot", key])
                .trim()
                .parse()
                .ok()
        })?;
        self.ports.iter().copied().find(|&p| {
            let nodes = self.cli(p, &["cluster", "nodes"]);
            let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
                return false;
            };
            // Fields 9 on are the node's slots: "N" or "A-B".
            me.split_whitespace().skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            })
        })
    }

    /// Runs `redis-cli -p PORT ARGS...` against one node, without following
    /// redirects, and returns its output (empty on failure).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new(&self.cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for mut child in procs::lock(&self.children).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for port in &self.ports {
            let _ = std::fs::remove_file(self.dir.join(format!("redis-{port}.pid")));
        }
    }
}

/// A Redis primary with one replica, watched by three Sentinels (quorum 2,
/// `down-after-milliseconds` 1000), all on 127.0.0.1 with nothing persisted.
pub struct RedisSentinels {
    primary: u16,
    replica: u16,
    sentinels: Vec<u16>,
    dir: PathBuf,
    cli: PathBuf,
    children: Mutex<Vec<(u16, Child)>>,
    _watchdog: Watchdog,
}

/// The name the Sentinels monitor the primary under.
pub const SENTINEL_MASTER: &str = "picket-primary";

impl RedisSentinels {
    /// Starts the primary, the replica (and waits until it is in sync), then
    /// the Sentinels (and waits until each sees the replica and the others).
    ///
    /// Panics with the install hint if redis-server, redis-sentinel or
    /// redis-cli is missing.
    pub fn launch() -> Result<RedisSentinels, String> {
        let dirs = &["/usr/bin", "/usr/sbin", "/usr/local/bin"];
        let find = |name: &str| {
            procs::find_binary(name, dirs)
                .unwrap_or_else(|| panic!("{name} not found: {}", procs::INSTALL_HINT))
        };
        let (server, sentinel, cli) = (
            find("redis-server"),
            find("redis-sentinel"),
            find("redis-cli"),
        );
        let dir = procs::scratch_dir("redis-sentinel")?;
        let watchdog = Watchdog::spawn(
            "redis-sentinel",
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
        )?;
        let set = RedisSentinels {
            primary: procs::free_port(),
            replica: procs::free_port(),
            sentinels: (0..3).map(|_| procs::free_port()).collect(),
            dir,
            cli,
            children: Mutex::new(Vec::new()),
            _watchdog: watchdog,
        };
        let primary = set.primary.to_string();
        set.spawn(&server, set.primary, &[])?;
        set.spawn(
            &server,
            set.replica,
            &["--replicaof", "127.0.0.1", &primary],
        )?;
        set.wait("the replica in sync", || {
            set.cli(set.replica, &["info", "replication"])
                .contains("master_link_status:up")
        })?;
        for &port in &set.sentinels {
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                dir = set.dir.display()
            );
            std::fs::write(&conf, text)
                .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
            set.spawn_with(&sentinel, port, &[conf.display().to_string()])?;
        }
        set.wait(
            "every Sentinel seeing the replica and the other two",
            || {
                set.sentinels.iter().all(|&p| {
                    let info = set.cli(p, &["sentinel", "master", SENTINEL_MASTER]);
                    let field = |name: &str| {
                        let lines: Vec<&str> = info.lines().map(str::trim).collect();
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(0)
                    };
                    field("num-slaves") >= 1 && field("num-other-sentinels") >= 2
                })
            },
        )?;
        Ok(set)
    }

    /// The Sentinels as `redis://127.0.0.1:PORT` URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn primary_port(&self) -> u16 {
        self.primary
    }

    pub fn replica_port(&self) -> u16 {
        self.replica
    }

    /// The port the Sentinels name as the primary now.
    pub fn current_primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|&p| {
            let out = self.cli(p, &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER]);
            out.lines().nth(1).and_then(|l| l.trim().parse().ok())
        })
    }

    /// Kills the server on `port` with SIGKILL and waits until it is gone.
    pub fn kill(&self, port: u16) {
        let mut children = procs::lock(&self.children);
        if let Some((_, child)) = children.iter_mut().find(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `redis-cli -p PORT ARGS...` (empty output on failure).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new(&self.cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn spawn(&self, bin: &std::path::Path, port: u16, extra: &[&str]) -> Result<(), String> {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--dir".into());
        args.push(self.dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_with(bin, port, &args)
    }

    fn spawn_with(&self, bin: &std::path::Path, port: u16, args: &[String]) -> Result<(), String> {
        let log = self.dir.join(format!("redis-{port}.log"));
        let mut cmd = Command::new(bin);
        cmd.args(args);
        procs::background(&mut cmd, &log)?;
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid_file = self.dir.join(format!("redis-{port}.pid"));
        std::fs::write(&pid_file, child.id().to_string())
            .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
        let mut children = procs::lock(&self.children);
        children.push((port, child));
        let (_, child) = children.last_mut().expect("just pushed");
        procs::wait_ready("redis (sentinel set)", child, &log, STARTUP_TIMEOUT, || {
            answers_ping(port)
        })
    }

    fn wait(&self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        while !ready() {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "no {what} within {STARTUP_TIMEOUT:?} (logs in {})",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, mut child) in procs::lock(&self.children).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
