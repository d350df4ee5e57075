//! A Redis primary with a replica, watched by three Sentinels, on 127.0.0.1: a test
//! kills the primary to see the Sentinels promote the replica.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use super::{answers_ping, STARTUP_TIMEOUT};
use crate::procs::{self, Watchdog};
use crate::tls::RedisTls;

/// A Redis primary with one replica, watched by three Sentinels (quorum 2,
/// `down-after-milliseconds` 1000), all on 127.0.0.1 with nothing persisted.
pub struct RedisSentinels {
    primary: u16,
    replica: u16,
    sentinels: Vec<u16>,
    /// With TLS: each server's and Sentinel's TLS port beside its plain one, as
    /// (plain, TLS). The servers name each other by their TLS ports then, and the
    /// plain ones serve only this launcher's `redis-cli`.
    tls: Option<(RedisTls, Vec<(u16, u16)>)>,
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
        Self::launch_with(None)
    }

    /// [`RedisSentinels::launch`] with every server and Sentinel serving TLS too, and
    /// reaching the others over TLS only: the Sentinels name the TLS ports.
    pub fn launch_tls(tls: &RedisTls) -> Result<RedisSentinels, String> {
        Self::launch_with(Some(tls.clone()))
    }

    fn launch_with(tls: Option<RedisTls>) -> Result<RedisSentinels, String> {
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
        let watchdog = super::watch_pid_files("redis-sentinel", &dir)?;
        let primary = procs::free_port();
        let replica = procs::free_port();
        let sentinels: Vec<u16> = (0..3).map(|_| procs::free_port()).collect();
        let tls = tls.map(|t| {
            let all = [primary, replica]
                .into_iter()
                .chain(sentinels.iter().copied());
            (t, all.map(|p| (p, procs::free_port())).collect())
        });
        let set = RedisSentinels {
            primary,
            replica,
            sentinels,
            tls,
            dir,
            cli,
            children: Mutex::new(Vec::new()),
            _watchdog: watchdog,
        };
        let primary = set.announced(set.primary).to_string();
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
            let mut args = vec![conf.display().to_string()];
            args.extend(set.tls_args(port));
            set.spawn_with(&sentinel, port, &args)?;
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

    /// The Sentinels as `redis://127.0.0.1:PORT` URLs, or `rediss://` ones on their TLS
    /// ports.
    pub fn sentinel_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.sentinels
            .iter()
            .map(|&p| format!("{scheme}://127.0.0.1:{}", self.announced(p)))
            .collect()
    }

    /// The Sentinels' plain ports, for [`RedisSentinels::cli`].
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.clone()
    }

    /// The first primary's port, as the Sentinels name it.
    pub fn primary_port(&self) -> u16 {
        self.announced(self.primary)
    }

    /// The replica's port, as the Sentinels name it.
    pub fn replica_port(&self) -> u16 {
        self.announced(self.replica)
    }

    /// The port the servers and Sentinels give for `plain`: its TLS port with TLS.
    fn announced(&self, plain: u16) -> u16 {
        self.tls
            .as_ref()
            .and_then(|(_, ports)| ports.iter().find(|(p, _)| *p == plain))
            .map_or(plain, |&(_, tls)| tls)
    }

    /// The plain port of the server that `port` (plain or TLS) belongs to.
    fn plain(&self, port: u16) -> u16 {
        self.tls
            .as_ref()
            .and_then(|(_, ports)| ports.iter().find(|(_, t)| *t == port))
            .map_or(port, |&(plain, _)| plain)
    }

    /// The TLS arguments of the server or Sentinel on plain port `port`, if any.
    fn tls_args(&self, port: u16) -> Vec<String> {
        match &self.tls {
            Some((tls, _)) => tls.args(self.announced(port)),
            None => Vec::new(),
        }
    }

    /// The port the Sentinels name as the primary now.
    pub fn current_primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|&p| {
            let out = self.cli(p, &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER]);
            out.lines().nth(1).and_then(|l| l.trim().parse().ok())
        })
    }

    /// Kills the server on `port` (plain or TLS) with SIGKILL and waits until it is gone.
    pub fn kill(&self, port: u16) {
        let port = self.plain(port);
        let mut children = procs::lock(&self.children);
        if let Some((_, child)) = children.iter_mut().find(|(p, _)| *p == port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server on `port` (plain or TLS) with SIGSTOP, as a host that hangs
    /// or loses power does: its connections stay open and carry nothing. SIGKILL (its
    /// stop at the end) still ends it.
    pub fn freeze(&self, port: u16) {
        let port = self.plain(port);
        let children = procs::lock(&self.children);
        if let Some((_, child)) = children.iter().find(|(p, _)| *p == port) {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status();
        }
    }

    /// Runs `redis-cli -p PORT ARGS...` on the server's plain port (empty output on
    /// failure).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        super::redis_cli(&self.cli, self.plain(port), args)
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
        args.extend(self.tls_args(port));
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn_with(bin, port, &args)
    }

    fn spawn_with(&self, bin: &std::path::Path, port: u16, args: &[String]) -> Result<(), String> {
        let log = self.dir.join(format!("redis-{port}.log"));
        let mut cmd = Command::new(bin);
        cmd.args(args);
        procs::background(&mut cmd, &log)?;
        let child = super::spawn_watched(&mut cmd, &self.dir, port)?;
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
