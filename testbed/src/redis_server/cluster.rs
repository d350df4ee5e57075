//! A private Redis Cluster on 127.0.0.1, nothing persisted, whose primaries a test
//! can kill to see a replica take over.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use super::{answers_ping, STARTUP_TIMEOUT};
use crate::procs::{self, Watchdog};
use crate::tls::RedisTls;

/// A private Redis Cluster of `n` masters (and optionally replicas) on
/// 127.0.0.1, nothing persisted, stopped when dropped or when the test process
/// dies.
pub struct RedisCluster {
    ports: Vec<u16>,
    /// With TLS: each node's TLS port, in the order of `ports`, which then serve only
    /// this launcher's `redis-cli`; the nodes' bus is TLS too (`tls-cluster yes`).
    tls_ports: Vec<u16>,
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
        Self::launch_with(masters, replicas, None)
    }

    /// [`RedisCluster::launch`] whose nodes also serve TLS and speak TLS to each other:
    /// a client reaching them over TLS is told their TLS ports ([`RedisCluster::urls`]).
    pub fn launch_tls(n: usize, tls: &RedisTls) -> Result<RedisCluster, String> {
        Self::launch_with(n, 0, Some(tls))
    }

    fn launch_with(
        masters: usize,
        replicas: usize,
        tls: Option<&RedisTls>,
    ) -> Result<RedisCluster, String> {
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
        let watchdog = super::watch_pid_files("redis-cluster", &dir)?;
        let tls_ports = match tls {
            Some(_) => (0..n).map(|_| procs::free_port()).collect(),
            None => Vec::new(),
        };
        let cluster = RedisCluster {
            ports,
            tls_ports,
            dir,
            cli,
            children: Mutex::new(Vec::new()),
            _watchdog: watchdog,
        };
        for (i, &port) in cluster.ports.iter().enumerate() {
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
            if let (Some(tls), Some(&tls_port)) = (tls, cluster.tls_ports.get(i)) {
                cmd.args(tls.args(tls_port)).args(["--tls-cluster", "yes"]);
            }
            procs::background(&mut cmd, &log)?;
            let child = super::spawn_watched(&mut cmd, &cluster.dir, port)?;
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

    /// The nodes as `redis://127.0.0.1:PORT` URLs, or `rediss://` ones on their TLS
    /// ports.
    pub fn urls(&self) -> Vec<String> {
        if !self.tls_ports.is_empty() {
            return self
                .tls_ports
                .iter()
                .map(|p| format!("rediss://127.0.0.1:{p}"))
                .collect();
        }
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
        super::redis_cli(&self.cli, port, args)
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
