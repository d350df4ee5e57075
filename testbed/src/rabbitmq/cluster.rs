//! A RabbitMQ cluster of private nodes on 127.0.0.1, joined with
//! `rabbitmqctl join_cluster`, whose nodes a test kills and restarts.

use std::net::TcpStream;
use std::time::Duration;

use super::{find_epmd, start_epmd, NodeSetup, RabbitServer, STARTUP_TIMEOUT};
use crate::procs::{self, Watchdog};

/// A RabbitMQ cluster of private nodes on 127.0.0.1, joined with
/// `rabbitmqctl join_cluster`, sharing one epmd and one cookie.
pub struct RabbitCluster {
    nodes: Vec<RabbitServer>,
    _epmd_watchdog: Watchdog,
}

/// Joins the stopped `node` to `seed`'s cluster and starts it; a join whose start
/// fails is undone (`reset`) and tried again, twice at most.
fn join(node: &RabbitServer, seed: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let joined = node
            .ctl(&["join_cluster", seed])
            .and_then(|_| node.ctl(&["start_app"]));
        match joined {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        let _ = node.ctl(&["stop_app"]);
        node.ctl(&["reset"])?;
    }
    Err(format!("{} did not join {seed}: {last}", node.node()))
}

impl RabbitCluster {
    /// Starts `n` nodes (the joiners boot in parallel), joins them to the
    /// first, and waits until every node lists all `n` as running.
    pub fn launch(n: usize) -> Result<RabbitCluster, String> {
        let epmd_bin = find_epmd().unwrap_or_else(|| {
            panic!(
                "epmd (part of erlang-base) not found: {}",
                procs::INSTALL_HINT
            )
        });
        let dir = procs::scratch_dir("rabbitmq-cluster")?;
        let epmd_port = procs::free_port();
        let env = vec![
            ("ERL_EPMD_PORT".to_string(), epmd_port.to_string()),
            ("ERL_EPMD_ADDRESS".to_string(), "127.0.0.1".to_string()),
        ];
        let mut epmd = start_epmd(&epmd_bin, epmd_port, &env, &dir.join("epmd.log"))?;
        // Stops epmd once the test process is gone (after the nodes' own
        // watchdogs, which need it to stop their nodes, had a moment).
        let epmd_watchdog = Watchdog::spawn(
            "rabbitmq-epmd",
            &dir.join("watchdog.log"),
            r#"
sleep 20
if ours "$2" "-port $3"; then kill "$2"; fi
tidy "$1"
"#,
            &[
                dir.display().to_string(),
                epmd.id().to_string(),
                epmd_port.to_string(),
            ],
            &[],
        )?;
        procs::wait_ready(
            "epmd",
            &mut epmd,
            &dir.join("epmd.log"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", epmd_port)).is_ok(),
        )?;
        let setup = NodeSetup {
            epmd_port: Some(epmd_port),
            cookie: Some(procs::unique("cookie").replace('-', "")),
            tls: None,
        };
        let first = RabbitServer::launch_with(&setup)?;
        // The joiners boot in parallel (the slow part) and join one by one.
        let joiners: Vec<_> = (1..n)
            .map(|_| {
                let setup = setup.clone();
                std::thread::spawn(move || -> Result<RabbitServer, String> {
                    let node = RabbitServer::launch_with(&setup)?;
                    node.ctl(&["stop_app"])?;
                    Ok(node)
                })
            })
            .collect();
        let seed = first.node().to_string();
        let mut nodes = vec![first];
        for j in joiners {
            let node = j
                .join()
                .map_err(|_| "a joining node panicked".to_string())??;
            // One at a time: two nodes joining the seed at once can leave one whose
            // Mnesia will not start (`start_app` fails with `mnesia_app`, seen in CI).
            join(&node, &seed)?;
            nodes.push(node);
        }
        let cluster = RabbitCluster {
            nodes,
            _epmd_watchdog: epmd_watchdog,
        };
        cluster.wait_running(n, STARTUP_TIMEOUT)?;
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[RabbitServer] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &RabbitServer {
        &self.nodes[i]
    }

    /// Every node's `amqp://` URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_string()).collect()
    }

    /// The index of the node whose AMQP port `text` names (`:PORT/`), e.g.
    /// from a worker's `/readyz`.
    pub fn index_in(&self, text: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| text.contains(&format!(":{}/", n.port())))
    }

    /// Runs `rabbitmqctl ARGS` on the first running node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut last = Err("no node is running".to_string());
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            last = node.ctl(args);
            if last.is_ok() {
                return last;
            }
        }
        last
    }

    /// The index of the node leading quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> Result<usize, String> {
        let out = self.ctl(&["-q", "--no-table-headers", "list_queues", "name", "leader"])?;
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(queue))
            .ok_or_else(|| format!("{queue} not listed:\n{out}"))?;
        let leader = line.split_whitespace().nth(1).unwrap_or_default();
        self.nodes
            .iter()
            .position(|n| n.node() == leader)
            .ok_or_else(|| format!("leader {leader:?} of {queue} is none of ours"))
    }

    /// Waits until a running node lists `n` running nodes in the cluster.
    pub fn wait_running(&self, n: usize, within: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let status = self.ctl(&["-q", "cluster_status", "--formatter", "json"]);
            let running = status
                .as_ref()
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            if running == n {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{running} of {n} RabbitMQ nodes running after {within:?}: {status:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
