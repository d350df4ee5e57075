//! A private RabbitMQ node on 127.0.0.1, separate from any system broker,
//! that a test can restart on the same port while keeping its data (durable
//! queues and persistent messages survive, as they would in production).
//!
//! We run Debian's inner script `/usr/lib/rabbitmq/bin/rabbitmq-server` as
//! the current user rather than the `/usr/sbin` wrapper: the wrapper `su`s to
//! the `rabbitmq` user and shares `/var/lib/rabbitmq`'s Erlang cookie, which
//! would need chowned directories and would not work for a non-root
//! developer. With HOME in our scratch dir the node and `rabbitmqctl` share a
//! cookie of their own.
//!
//! The node also gets its own epmd (the Erlang port mapper) on a private
//! port, started by us so we know its PID. Otherwise Erlang would start a
//! daemon epmd on 4369 that outlives the tests, and a system RabbitMQ or a
//! second test binary would share it.
//!
//! [`RabbitCluster`] joins several such nodes into one cluster (`rabbitmqctl
//! join_cluster`): they share one private epmd and one Erlang cookie, each with
//! its own name, ports and data. A node can be killed with SIGKILL and started
//! again, and rejoins the cluster from its own data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::procs::{self, Watchdog};

mod cluster;

pub use cluster::RabbitCluster;

/// Seen here: about 4 s on an idle machine. Cargo building on both cores
/// can make it several times slower, hence the margin.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where Debian's package puts the scripts that run as the calling user;
/// the ones on PATH (/usr/sbin) are the wrappers that switch user.
pub const RABBIT_DIR: &str = "/usr/lib/rabbitmq/bin";

pub struct RabbitServer {
    node: String,
    amqp_port: u16,
    url: String,
    /// The AMQP-over-TLS port, when the node has one.
    amqps_port: Option<u16>,
    dir: PathBuf,
    server_bin: PathBuf,
    ctl_bin: PathBuf,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    _watchdog: Watchdog,
}

/// What a node shares with others of its cluster.
#[derive(Default, Clone)]
pub struct NodeSetup {
    /// The cluster's epmd port (the cluster started it); `None` = a private epmd.
    pub epmd_port: Option<u16>,
    /// The cluster's Erlang cookie; `None` = the node makes its own.
    pub cookie: Option<String>,
    /// Also serve AMQP over TLS with these PEM files.
    pub tls: Option<TlsFiles>,
}

pub use crate::tls::TlsFiles;

impl TlsFiles {
    /// The lines of `rabbitmq.conf` for a TLS listener on 127.0.0.1:`port`.
    fn conf(&self, port: u16) -> String {
        format!(
            "listeners.ssl.1 = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = {}\n\
             ssl_options.fail_if_no_peer_cert = {}\n",
            self.ca.display(),
            self.cert.display(),
            self.key.display(),
            if self.verify_clients {
                "verify_peer"
            } else {
                "verify_none"
            },
            self.verify_clients,
        )
    }
}

/// Where a private node lives and which ports it takes: what the tests' nodes,
/// `cargo xtask bench` and `cargo xtask demo` (whose node outlives it) share.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// The node's directory: `home/`, `mnesia/`, `log/` and its config files.
    pub dir: PathBuf,
    /// The Erlang node name, `NAME@localhost`.
    pub node: String,
    pub amqp_port: u16,
    /// The Erlang distribution port.
    pub dist_port: u16,
    /// The port of the node's own epmd (the Erlang port mapper).
    pub epmd_port: u16,
}

impl NodeLayout {
    /// Creates the directories and config files; `disk_free_limit` is RabbitMQ's
    /// `disk_free_limit.absolute` (e.g. "50MB").
    ///
    /// # Errors
    /// A directory or file that cannot be written.
    pub fn prepare(&self, disk_free_limit: &str) -> Result<(), String> {
        for d in ["home", "mnesia", "log"] {
            let d = self.dir.join(d);
            std::fs::create_dir_all(&d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        write(&self.dir.join("enabled_plugins"), "[].\n")?;
        // Keeps /etc/rabbitmq/rabbitmq-env.conf (meant for the system node)
        // from changing our node's name or paths.
        write(
            &self.dir.join("rabbitmq-env.conf"),
            "# private node: nothing from /etc\n",
        )?;
        write(
            &self.dir.join("rabbitmq.conf"),
            &format!("disk_free_limit.absolute = {disk_free_limit}\n"),
        )
    }

    /// The environment of every command for this node (server, rabbitmqctl,
    /// epmd). HOME gives the node and rabbitmqctl their own Erlang cookie.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        [
            ("HOME", path("home")),
            ("ERL_EPMD_PORT", self.epmd_port.to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".to_string()),
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_string()),
            ("RABBITMQ_NODE_PORT", self.amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The file in which RabbitMQ writes its Erlang VM's PID at every start.
    pub fn beam_pid_file(&self) -> PathBuf {
        self.dir.join("mnesia").join(format!("{}.pid", self.node))
    }
}

impl RabbitServer {
    /// Starts a new node on free ports and waits until it accepts AMQP.
    ///
    /// Panics with the install hint if RabbitMQ is not installed: a test
    /// that needs the broker must never pass by skipping.
    pub fn launch() -> Result<RabbitServer, String> {
        RabbitServer::launch_with(&NodeSetup::default())
    }

    /// [`launch`](Self::launch) with what the node shares with its cluster.
    pub fn launch_with(setup: &NodeSetup) -> Result<RabbitServer, String> {
        let server_bin = Path::new(RABBIT_DIR).join("rabbitmq-server");
        let ctl_bin = Path::new(RABBIT_DIR).join("rabbitmqctl");
        if !procs::is_executable(&server_bin) || !procs::is_executable(&ctl_bin) {
            panic!("rabbitmq-server not found: {}", procs::INSTALL_HINT);
        }
        let epmd_bin = find_epmd().unwrap_or_else(|| {
            panic!(
                "epmd (part of erlang-base) not found: {}",
                procs::INSTALL_HINT
            )
        });

        let dir = procs::scratch_dir("rabbitmq")?;
        let layout = NodeLayout {
            node: format!("{}@localhost", procs::unique("picket-test")),
            amqp_port: procs::free_port(),
            // Set explicitly: the default (AMQP port + 20000) overflows for
            // ports above 45535.
            dist_port: procs::free_port(),
            epmd_port: setup.epmd_port.unwrap_or_else(procs::free_port),
            dir: dir.clone(),
        };
        // A nearly full test disk must not make the broker block publishers,
        // which would look like a picket bug.
        layout.prepare("1MB")?;
        let amqps_port = match &setup.tls {
            None => None,
            Some(tls) => {
                let port = procs::free_port();
                let conf = dir.join("rabbitmq.conf");
                let mut text = std::fs::read_to_string(&conf)
                    .map_err(|e| format!("cannot read {}: {e}", conf.display()))?;
                text.push_str(&tls.conf(port));
                write(&conf, &text)?;
                Some(port)
            }
        };
        let home = dir.join("home");
        let mnesia = dir.join("mnesia");
        if let Some(cookie) = &setup.cookie {
            write_cookie(&home, cookie)?;
        }
        let env = layout.env();
        let NodeLayout {
            node,
            amqp_port,
            epmd_port,
            ..
        } = layout;

        // A node of a cluster uses the cluster's epmd, which the cluster started.
        let mut epmd = match setup.epmd_port {
            Some(_) => None,
            None => Some(start_epmd(
                &epmd_bin,
                epmd_port,
                &env,
                &dir.join("epmd.log"),
            )?),
        };
        let epmd_pid = epmd
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default();

        // The watchdog exists before the node does, so that a panic from here
        // on still leaves nothing running. The node's PID comes from the PID
        // file RabbitMQ rewrites at every start; the `-home DIR/home`
        // argument on the Erlang VM's command line proves a PID is ours, and
        // finds a VM still booting when we died.
        let pid_file = mnesia.join(format!("{node}.pid"));
        let watchdog = Watchdog::spawn(
            "rabbitmq",
            &dir.join("watchdog.log"),
            r#"
pid=$(cat "$4" 2>/dev/null)
if ours "$pid" "$1/home"; then
  timeout 60 "$2" -n "$3" stop "$4" || kill -KILL "$pid"
fi
i=0
while [ $i -lt 10 ]; do sweep "$1/home"; sleep 0.3; i=$((i + 1)); done
if ours "$5" "-port $6"; then kill "$5"; fi
tidy "$1"
"#,
            &[
                dir.display().to_string(),
                ctl_bin.display().to_string(),
                node.clone(),
                pid_file.display().to_string(),
                epmd_pid,
                epmd_port.to_string(),
            ],
            &env,
        )?;

        // Erlang starts a daemon epmd of its own if ours is not listening
        // yet; that one would outlive the tests.
        if let Some(epmd) = epmd.as_mut() {
            procs::wait_ready(
                "epmd",
                epmd,
                &dir.join("epmd.log"),
                Duration::from_secs(10),
                || TcpStream::connect(("127.0.0.1", epmd_port)).is_ok(),
            )?;
        }

        let server = RabbitServer {
            node,
            amqp_port,
            url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"),
            amqps_port,
            dir,
            server_bin,
            ctl_bin,
            env,
            child: Mutex::new(None),
            _watchdog: watchdog,
        };
        server.try_start()?;
        Ok(server)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (guest may log in only from
    /// loopback, which is where the tests are).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `amqps://guest:guest@127.0.0.1:TLS_PORT/%2f`, for a node launched with
    /// [`NodeSetup::tls`].
    pub fn amqps_url(&self) -> Option<String> {
        self.amqps_port
            .map(|port| format!("amqps://guest:guest@127.0.0.1:{port}/%2f"))
    }

    pub fn port(&self) -> u16 {
        self.amqp_port
    }

    /// The Erlang node name, for `rabbitmqctl -n` by hand while debugging.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the node's logs and data live (deleted when the tests end,
    /// unless PICKET_TEST_KEEP_DIRS=1).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `rabbitmqctl -n NODE ARGS...` against this node and returns its
    /// stdout, e.g. `ctl(&["list_queues", "name", "messages"])`.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .ctl_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.ctl_bin.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the node cleanly (as `systemctl stop` would: connections are
    /// closed by the broker) and waits until the VM has exited. Does nothing
    /// if it is already stopped.
    pub fn stop(&self) {
        let mut guard = procs::lock(&self.child);
        let Some(mut child) = guard.take() else {
            return;
        };
        let pid_file = self.pid_file();
        let beam_pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        // With the PID file as argument, rabbitmqctl waits for the VM to
        // exit rather than returning as soon as the node agreed to stop.
        let stopped = self
            .ctl_command()
            .arg("stop")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|mut ctl| {
                let done = procs::wait_exit(&mut ctl, STOP_TIMEOUT);
                if !done {
                    let _ = ctl.kill();
                    let _ = ctl.wait();
                }
                done
            })
            .unwrap_or(false);
        // The child is the launcher script, which exits right after the VM.
        if !stopped || !procs::wait_exit(&mut child, STOP_TIMEOUT) {
            if let Some(pid) = beam_pid {
                procs::signal(pid, "KILL", &self.dir.join("home").display().to_string());
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Starts the node again on the same port with the same data, and waits
    /// until it accepts AMQP. Does nothing if it is running.
    pub fn start(&self) {
        self.try_start()
            .unwrap_or_else(|e| panic!("restarting RabbitMQ failed: {e}"));
    }

    /// Kills the node's Erlang VM with SIGKILL, as a crash or a power loss
    /// would, and waits until it is gone. Does nothing if it is stopped.
    pub fn kill(&self) {
        let mut guard = procs::lock(&self.child);
        let Some(mut child) = guard.take() else {
            return;
        };
        let beam_pid = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = beam_pid {
            procs::signal(pid, "KILL", &self.dir.join("home").display().to_string());
        }
        // The launcher script exits right after its VM.
        if !procs::wait_exit(&mut child, STOP_TIMEOUT) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Whether the node's launcher is running (the node may still be booting).
    pub fn is_running(&self) -> bool {
        let mut child = procs::lock(&self.child);
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// [`stop`](Self::stop) then [`start`](Self::start): about 5 s.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// The PID of the node's Erlang VM (from the PID file RabbitMQ writes at
    /// every start), e.g. to read its CPU time from /proc.
    pub fn beam_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("mnesia").join(format!("{}.pid", self.node))
    }

    fn ctl_command(&self) -> Command {
        let mut cmd = Command::new(&self.ctl_bin);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.args(["-n", &self.node]);
        cmd
    }

    fn try_start(&self) -> Result<(), String> {
        let mut guard = procs::lock(&self.child);
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let log = self.dir.join("server.log");
        let mut cmd = Command::new(&self.server_bin);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.current_dir(&self.dir);
        procs::background(&mut cmd, &log)?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.server_bin.display()))?;
        let port = self.amqp_port;
        let what = format!("RabbitMQ node {}", self.node);
        let ready = procs::wait_ready(&what, &mut child, &log, STARTUP_TIMEOUT, || {
            speaks_amqp(port)
        });
        if let Err(e) = ready {
            // Put the child where stop() finds it, so the VM is taken down.
            *guard = Some(child);
            drop(guard);
            self.stop();
            return Err(e);
        }
        *guard = Some(child);
        Ok(())
    }
}

/// Opens an AMQP 0-9-1 connection far enough to receive the broker's
/// `Connection.Start` method frame: the listener is up and the broker is
/// answering, not merely a port that accepts TCP.
pub fn speaks_amqp(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    // Frame header: type 1 (method) on channel 0.
    let mut header = [0u8; 3];
    s.read_exact(&mut header).is_ok() && header == [1, 0, 0]
}

/// Starts an epmd on `port` (its output to `log`).
pub fn start_epmd(
    bin: &Path,
    port: u16,
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["-port", &port.to_string()]);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    procs::background(&mut cmd, log)?;
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Erlang reads the cookie from `HOME/.erlang.cookie` and refuses one that
/// others may read.
fn write_cookie(home: &Path, cookie: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = home.join(".erlang.cookie");
    write(&path, cookie)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

pub fn find_epmd() -> Option<PathBuf> {
    if let Some(p) = procs::find_binary("epmd", &["/usr/bin", "/usr/lib/erlang/bin"]) {
        return Some(p);
    }
    let erts = std::fs::read_dir("/usr/lib/erlang").ok()?;
    erts.filter_map(Result::ok)
        .map(|e| e.path().join("bin").join("epmd"))
        .find(|p| procs::is_executable(p))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_writes_its_files_and_names_them_in_the_environment() {
        let dir = procs::scratch_dir("layout").unwrap();
        let layout = NodeLayout {
            dir: dir.clone(),
            node: "n@localhost".into(),
            amqp_port: 1,
            dist_port: 2,
            epmd_port: 3,
        };
        layout.prepare("50MB").unwrap();
        let env: std::collections::HashMap<_, _> = layout.env().into_iter().collect();
        assert_eq!(env["RABBITMQ_NODE_PORT"], "1");
        assert_eq!(env["ERL_EPMD_PORT"], "3");
        let conf = std::fs::read_to_string(&env["RABBITMQ_CONFIG_FILE"]).unwrap();
        assert_eq!(conf, "disk_free_limit.absolute = 50MB\n");
        assert!(Path::new(&env["HOME"]).is_dir());
        assert_eq!(layout.beam_pid_file(), dir.join("mnesia/n@localhost.pid"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
