//! `cargo xtask demo` (and `scripts/demo`): picket on this machine, offline,
//! with a private RabbitMQ and Redis (the testbed's, on fixed ports), a demo
//! website and a worker; it enqueues three checks and prints their results.
//!
//! Unlike the tests' servers, the demo's outlive the command: each runs in
//! its own session with its PID in `.picket-run/NAME.pid`, and `demo stop`
//! stops them by those PIDs (a PID whose command line no longer holds what we
//! started is never signalled). Everything lives in `.picket-run/`:
//!
//!   AMQP 127.0.0.1:18672   (Erlang distribution 18673, its port mapper 18674)
//!   Redis 127.0.0.1:18379
//!   demo website http://127.0.0.1:18080/   (/broken answers 500)
//!   worker metrics http://127.0.0.1:18464/metrics

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use testbed::procs;
use testbed::rabbitmq::{self, NodeLayout};
use testbed::redis_server;

use crate::util::{self, say};

const AMQP_PORT: u16 = 18672;
const DIST_PORT: u16 = 18673;
const EPMD_PORT: u16 = 18674;
const REDIS_PORT: u16 = 18379;
const SITE_PORT: u16 = 18080;
const HTTP_PORT: u16 = 18464;
/// The worker's /metrics, /healthz and /readyz (HTTP_PORT).
const HTTP_LISTEN: &str = "127.0.0.1:18464";
const NODE: &str = "picket-demo@localhost";

#[derive(Subcommand, Clone, Copy, Default)]
pub enum Action {
    /// Build, start everything, enqueue a few checks and print the results
    /// (the default; a running demo is stopped first).
    #[default]
    Start,
    /// What is running.
    Status,
    /// Stop everything the demo started.
    Stop,
}

pub fn run(action: Action) -> Result<()> {
    let demo = Demo::new();
    match action {
        Action::Stop => {
            demo.stop_all();
            Ok(())
        }
        Action::Status => {
            demo.status();
            Ok(())
        }
        Action::Start => demo.start().map_err(|e| {
            e.context("logs are in .picket-run/*.log; scripts/demo stop stops what was started")
        }),
    }
}

struct Demo {
    run: PathBuf,
    picket: PathBuf,
    config: PathBuf,
    layout: NodeLayout,
}

impl Demo {
    fn new() -> Demo {
        let run = util::root().join(".picket-run");
        Demo {
            picket: util::target_dir().join("release").join("picket"),
            config: run.join("picket.toml"),
            layout: NodeLayout {
                dir: run.join("rabbitmq"),
                node: NODE.to_string(),
                amqp_port: AMQP_PORT,
                dist_port: DIST_PORT,
                epmd_port: EPMD_PORT,
            },
            run,
        }
    }

    /// What each PID file's process holds on its command line, so a recycled
    /// PID is never taken for ours. In stopping order.
    fn needles(&self) -> Vec<(&'static str, String)> {
        vec![
            ("worker", "picket worker".to_string()),
            ("site", self.run.join("site.py").display().to_string()),
            ("redis", format!("127.0.0.1:{REDIS_PORT}")),
            (
                "rabbitmq",
                format!("{}/rabbitmq-server", rabbitmq::RABBIT_DIR),
            ),
            (
                "rabbitmq-beam",
                self.layout.dir.join("home").display().to_string(),
            ),
            ("epmd", format!("-port {EPMD_PORT}")),
        ]
    }

    /// The PID recorded for `name`, if that process still runs `needle`.
    fn pid_of(&self, name: &str, needle: &str) -> Option<u32> {
        let pid = fs::read_to_string(self.run.join(format!("{name}.pid"))).ok()?;
        let pid = pid.trim().parse().ok()?;
        procs::pid_matches(pid, needle).then_some(pid)
    }

    fn status(&self) {
        for (name, needle) in self.needles() {
            match self.pid_of(name, &needle) {
                Some(pid) => println!("   {name:<14} running (pid {pid})"),
                None => println!("   {name:<14} not running"),
            }
        }
    }

    /// SIGTERM to each process we recorded, SIGKILL after a grace period.
    /// SIGTERM to RabbitMQ's launcher script makes it stop the VM cleanly
    /// and wait for it; the VM's own PID is the fallback.
    fn stop_all(&self) {
        say!("stopping the demo");
        for (name, needle) in self.needles() {
            let grace = if name == "rabbitmq-beam" { 30 } else { 15 };
            if let Some(pid) = self.pid_of(name, &needle) {
                procs::signal(pid, "TERM", &needle);
                if !wait_gone(pid, &needle, grace) {
                    eprintln!("   {name} ({pid}) ignored SIGTERM for {grace} s; killing it");
                    procs::signal(pid, "KILL", &needle);
                    wait_gone(pid, &needle, 5);
                }
                eprintln!("   stopped {name} ({pid})");
            }
            let _ = fs::remove_file(self.run.join(format!("{name}.pid")));
        }
    }
}

/// True once `pid` no longer runs `needle` (exited, or a zombie whose
/// command line is gone), within `secs` seconds.
fn wait_gone(pid: u32, needle: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while procs::pid_matches(pid, needle) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

impl Demo {
    fn start(&self) -> Result<()> {
        say!("scripts/deps");
        util::run(
            "scripts/deps",
            &mut Command::new(util::root().join("scripts/deps")),
        )?;
        if self.run.is_dir() {
            self.stop_all();
        }
        // Something still listening would mean a demo we did not record, or
        // another program, owns a port: starting on top of it would only confuse.
        for port in [
            AMQP_PORT, DIST_PORT, EPMD_PORT, REDIS_PORT, SITE_PORT, HTTP_PORT,
        ] {
            if util::listening("127.0.0.1", port) {
                bail!("port {port} on 127.0.0.1 is in use; stop what uses it (or run scripts/demo stop) and try again");
            }
            // epmd and RabbitMQ cannot listen on a port some connection
            // left in TIME_WAIT; it is free again within a minute.
            if procs::port_used(port) {
                bail!("port {port} on 127.0.0.1 is held by a closing connection (TIME_WAIT); try again in a minute");
            }
        }
        say!("cargo build --release --locked (the first build takes several minutes)");
        util::run(
            "cargo build",
            util::cargo().args(["build", "--release", "--locked", "--package", "picket"]),
        )?;
        if self.run.exists() {
            fs::remove_dir_all(&self.run)
                .with_context(|| format!("cannot remove {}", self.run.display()))?;
        }
        fs::create_dir_all(self.run.join("redis"))?;
        self.layout.prepare("50MB").map_err(anyhow::Error::msg)?;
        self.start_servers()?;
        self.start_worker()?;
        self.enqueue_and_show()?;
        self.print_hints();
        Ok(())
    }

    fn start_servers(&self) -> Result<()> {
        say!("starting RabbitMQ on 127.0.0.1:{AMQP_PORT}");
        let epmd = rabbitmq::find_epmd()
            .context("epmd not found (it comes with rabbitmq-server, in erlang-base)")?;
        let env = self.layout.env();
        let mut epmd = self.spawn(
            "epmd",
            Command::new(epmd)
                .args(["-port", &EPMD_PORT.to_string()])
                .envs(env.clone()),
        )?;
        self.wait_for("epmd", "epmd", &mut epmd, 10, || {
            util::listening("127.0.0.1", EPMD_PORT)
        })?;
        let server = Path::new(rabbitmq::RABBIT_DIR).join("rabbitmq-server");
        let mut rabbit = self.spawn("rabbitmq", Command::new(server).envs(env))?;

        say!("starting Redis on 127.0.0.1:{REDIS_PORT}");
        let redis_bin = redis_server::find_server()
            .context("redis-server not found (scripts/deps installs it)")?;
        let mut redis = self.spawn(
            "redis",
            &mut redis_server::server_command(&redis_bin, REDIS_PORT, &self.run.join("redis")),
        )?;
        self.wait_for("redis-server", "redis", &mut redis, 30, || {
            redis_server::answers_ping(REDIS_PORT)
        })?;

        say!("starting the demo website on http://127.0.0.1:{SITE_PORT}/");
        let site = self.run.join("site.py");
        fs::write(&site, include_str!("demo_site.py"))?;
        let mut site = self.spawn(
            "site",
            Command::new("python3")
                .arg(&site)
                .arg(SITE_PORT.to_string()),
        )?;
        let addr = format!("127.0.0.1:{SITE_PORT}");
        self.wait_for("the demo website", "site", &mut site, 10, || {
            util::http_ok(&addr, "/")
        })?;

        self.wait_for("RabbitMQ", "rabbitmq", &mut rabbit, 120, || {
            rabbitmq::speaks_amqp(AMQP_PORT)
        })?;
        fs::copy(
            self.layout.beam_pid_file(),
            self.run.join("rabbitmq-beam.pid"),
        )
        .context("RabbitMQ wrote no PID file")?;
        Ok(())
    }

    fn start_worker(&self) -> Result<()> {
        fs::write(&self.config, demo_config())?;
        say!("starting the worker: picket worker --config .picket-run/picket.toml");
        let mut worker = self.spawn(
            "worker",
            Command::new(&self.picket)
                .arg("worker")
                .arg("--config")
                .arg(&self.config),
        )?;
        self.wait_for("the worker", "worker", &mut worker, 30, || {
            util::http_ok(HTTP_LISTEN, "/readyz")
        })
    }

    /// Starts `cmd` in a session of its own (it outlives us and no Ctrl-C
    /// or hang-up of this terminal reaches it), output to NAME.log, its PID
    /// in NAME.pid.
    fn spawn(&self, name: &str, cmd: &mut Command) -> Result<Child> {
        let log = fs::File::create(self.run.join(format!("{name}.log")))?;
        let mut setsid = Command::new("setsid");
        setsid.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => setsid.env(k, v),
                None => setsid.env_remove(k),
            };
        }
        let child = setsid
            .current_dir(&self.run)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        fs::write(self.run.join(format!("{name}.pid")), child.id().to_string())?;
        Ok(child)
    }

    /// Polls `ready`; fails early, with the end of the log, if `child` exited.
    fn wait_for(
        &self,
        what: &str,
        name: &str,
        child: &mut Child,
        secs: u64,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let log = self.run.join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if ready() {
                return Ok(());
            }
            if !matches!(child.try_wait(), Ok(None)) {
                bail!(
                    "{what} exited; the end of .picket-run/{name}.log:\n{}",
                    util::tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{what} not ready after {secs} s; the end of .picket-run/{name}.log:\n{}",
            util::tail(&log, 30)
        )
    }
}

impl Demo {
    fn enqueue_and_show(&self) -> Result<()> {
        say!("enqueueing 3 checks");
        let jobs = format!(
            "http://127.0.0.1:{SITE_PORT}/\nhttp://127.0.0.1:{SITE_PORT}/broken\n\
             {{\"id\": \"demo-1\", \"url\": \"http://127.0.0.1:{SITE_PORT}/\", \"expect\": {{\"body_contains\": \"picket demo site\"}}, \"meta\": {{\"from\": \"scripts/demo\"}}}}\n"
        );
        let mut enqueue = Command::new(&self.picket)
            .args(["enqueue", "--config"])
            .arg(&self.config)
            .arg("-")
            .stdin(Stdio::piped())
            .spawn()
            .context("cannot run picket enqueue")?;
        if let Some(mut stdin) = enqueue.stdin.take() {
            stdin.write_all(jobs.as_bytes())?;
        }
        let status = enqueue.wait()?;
        if !status.success() {
            bail!("picket enqueue failed ({status})");
        }
        // Results are read (and so removed) from the queue: wait until all
        // three are there, so one `picket results` shows them together.
        say!("waiting for the results");
        let mut waited = 0;
        while self.results_waiting() < 3 {
            if waited == 59 {
                eprintln!("   not all 3 results after 30 s; showing what is there (see .picket-run/worker.log)");
                break;
            }
            waited += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        say!("picket results --config .picket-run/picket.toml");
        util::run(
            "picket results",
            Command::new(&self.picket)
                .arg("results")
                .arg("--config")
                .arg(&self.config),
        )
    }

    /// Messages in picket.results, from `rabbitmqctl list_queues` (0 when
    /// it cannot tell).
    fn results_waiting(&self) -> u64 {
        let ctl = Path::new(rabbitmq::RABBIT_DIR).join("rabbitmqctl");
        let listed = util::output(
            "rabbitmqctl",
            Command::new(ctl).envs(self.layout.env()).args([
                "-n",
                NODE,
                "list_queues",
                "-q",
                "--no-table-headers",
                "name",
                "messages",
            ]),
        );
        listed
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next() == Some("picket.results")).then(|| cols.next()?.parse().ok())?
            })
            .max()
            .unwrap_or(0)
    }

    fn print_hints(&self) {
        let picket = self
            .picket
            .strip_prefix(util::root())
            .unwrap_or(&self.picket)
            .display()
            .to_string();
        println!(
            "
The demo is running (scripts/demo status). Try:

  enqueue more:   printf 'http://127.0.0.1:{SITE_PORT}/\\n' | {picket} enqueue --config .picket-run/picket.toml -
  read results:   {picket} results --config .picket-run/picket.toml            (--follow to keep reading, --json for JSON lines)
  check directly: {picket} check --config .picket-run/picket.toml http://127.0.0.1:{SITE_PORT}/broken
  metrics:        http://{HTTP_LISTEN}/metrics   (also /healthz, /readyz)
  logs:           .picket-run/worker.log, .picket-run/rabbitmq/log/, .picket-run/redis.log
  stop it all:    scripts/demo stop"
        );
    }
}

/// The worker's configuration: the demo's servers; everything else keeps
/// its built-in defaults.
fn demo_config() -> String {
    format!(
        r#"# Written by scripts/demo: a worker against the demo's private RabbitMQ and
# Redis. Keys not set here keep their built-in defaults (see config/default.toml).

[amqp]
url = "amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f"

[redis]
url = "redis://127.0.0.1:{REDIS_PORT}/0"

[probe]
attempts = 2
retry_delay = "500ms"

[targets]
# The demo website is on loopback, which picket refuses by default.
allow_private = true

[http]
listen = "{HTTP_LISTEN}"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's fixed ports must lie below the kernel's range for outgoing
    /// connections: a port in that range is taken now and then as the local end of
    /// some connection, and left in TIME_WAIT it keeps epmd and RabbitMQ from
    /// listening ("try again in a minute"). Below it sits the tests' own range
    /// (`testbed::procs`, 20000 and up), which the demo stays out of as well.
    #[test]
    fn fixed_ports_stay_out_of_the_ephemeral_and_the_tests_ranges() {
        let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("the kernel's local port range");
        let low: u16 = range
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("its lower end");
        let listen: std::net::SocketAddr = HTTP_LISTEN.parse().expect("HTTP_LISTEN");
        assert_eq!(listen.port(), HTTP_PORT);
        for port in [
            AMQP_PORT, DIST_PORT, EPMD_PORT, REDIS_PORT, SITE_PORT, HTTP_PORT,
        ] {
            assert!(
                port < low,
                "port {port} is in the ephemeral range ({low} and up)"
            );
            assert!(
                port < 20_000,
                "port {port} is in the tests' range (20000 and up)"
            );
        }
    }
}
