//! Real server software from Debian packages, started by the tests as their own child
//! processes on loopback addresses and free ports, with every file in a scratch dir:
//! Apache with mod_evasive at its defaults and Apache with ModSecurity + the OWASP CRS
//! (`apache`), nginx with `limit_req`/`limit_conn` (`nginx`), haproxy with a dead backend
//! (`haproxy`), squid, tinyproxy, Privoxy and dante as egresses (`squid`, `tinyproxy`,
//! `privoxy`, `dante`; `microsocks` asking for a login), and fail2ban banning
//! with iptables what a server's log blames (`fail2ban`).
//!
//! Each server runs in its own process group; dropping its [`Daemon`] stops the whole
//! group, and a watchdog does the same if the test process dies first. The servers'
//! access logs carry microsecond arrival times, read back by [`Hits`] to tell what
//! picket sent at most per second and how often it was refused.

pub mod apache;
pub mod dante;
pub mod dnsmasq;
pub mod fail2ban;
pub mod haproxy;
pub mod microsocks;
pub mod nginx;
pub mod php;
pub mod privoxy;
pub mod recent;
pub mod squid;
pub mod tinyproxy;
pub mod way_out;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::procs::{self, Watchdog};

/// What to install when a server binary is missing.
pub const REAL_INSTALL_HINT: &str =
    "run scripts/deps (it installs apache2, libapache2-mod-evasive, \
     libapache2-mod-security2, modsecurity-crs, nginx-light, haproxy, squid-openssl, tinyproxy, \
     privoxy, dante-server, microsocks, fail2ban, iptables)";

/// A server process (and its children) of ours.
pub struct Daemon {
    /// What it is, for messages.
    pub what: String,
    /// Its scratch dir (config, logs).
    pub dir: PathBuf,
    child: Child,
    _watchdog: Watchdog,
}

impl Daemon {
    /// Starts `bin args` in `dir` (made by [`scratch`]) in its own process group and
    /// waits until `ready` accepts TCP connections.
    pub fn start(what: &str, bin: &str, args: &[String], dir: &Path, ready: &str) -> Daemon {
        let addr = ready.parse().expect("ready address");
        Daemon::start_until(what, bin, args, dir, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
    }

    /// [`start`](Self::start) for a server that listens on no TCP port: ready once
    /// `ready` says so.
    pub fn start_until(
        what: &str,
        bin: &str,
        args: &[String],
        dir: &Path,
        ready: impl FnMut() -> bool,
    ) -> Daemon {
        let bin = procs::find_binary(bin, &["/usr/sbin", "/usr/bin", "/sbin"])
            .unwrap_or_else(|| panic!("{bin} not found: {REAL_INSTALL_HINT}"));
        let log = dir.join("stdout.log");
        // The group of the server (its PID) is killed, workers included, when the test
        // process is gone; the needle (our scratch dir) keeps a recycled PID safe. Then
        // whatever still runs in the dir ([`stop_strays`]).
        let watchdog = Watchdog::spawn(
            what,
            &dir.join("watchdog.log"),
            r#"
pid=$(cat "$1/daemon.pid" 2>/dev/null)
if ours "$pid" "$2"; then kill -KILL -- "-$pid" 2>/dev/null; fi
sweep "$2"
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  [ "$(readlink "$p/cwd" 2>/dev/null)" = "$1" ] && kill -KILL "${p#/proc/}" 2>/dev/null
done
tidy "$1"
"#,
            &[dir.display().to_string(), dir.display().to_string()],
            &[],
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut cmd = Command::new(&bin);
        cmd.args(args).current_dir(dir);
        procs::background(&mut cmd, &log).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        std::fs::write(dir.join("daemon.pid"), child.id().to_string())
            .unwrap_or_else(|e| panic!("{what}: daemon.pid: {e}"));
        if let Err(e) = procs::wait_ready(what, &mut child, &log, Duration::from_secs(30), ready) {
            let _ = child.kill();
            panic!("{e}\nother logs in {}", dir.display());
        }
        Daemon {
            what: what.to_string(),
            dir: dir.to_path_buf(),
            child,
            _watchdog: watchdog,
        }
    }

    /// Stops every process of the server (SIGSTOP to its group): the kernel still
    /// accepts connections on its ports, and nothing answers them, as a hung server.
    pub fn freeze(&self) {
        self.signal_group("STOP");
    }

    /// Lets a [`freeze`](Self::freeze)d server run again.
    pub fn thaw(&self) {
        self.signal_group("CONT");
    }

    fn signal_group(&self, signal: &str) {
        let pid = self.child.id();
        assert!(
            procs::pid_matches(pid, &self.dir.display().to_string()),
            "{}: its process {pid} is gone",
            self.what
        );
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{pid}")])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "{}: kill -{signal} failed",
            self.what
        );
    }

    /// The text of a file in its dir (a log), or "" when absent.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id();
        let needle = self.dir.display().to_string();
        if procs::pid_matches(pid, &needle) {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
            // A frozen server takes its TERM only once it runs again.
            let _ = Command::new("kill")
                .args(["-CONT", "--", &format!("-{pid}")])
                .status();
        }
        if !procs::wait_exit(&mut self.child, Duration::from_secs(5)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = self.child.wait();
        }
        stop_strays(&self.dir);
    }
}

/// Kills the processes still running in `dir` (their working directory) once its
/// server's master is gone: a worker finishing a request outlives it, or one ignoring
/// SIGTERM, and nginx's workers rename themselves ("nginx: worker process"), so only
/// where they run says they are ours. Two were found still listening after a run.
fn stop_strays(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// A scratch dir for a server, readable by the unprivileged users the servers switch
/// to (www-data, nobody, proxy).
pub fn scratch(kind: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = procs::scratch_dir(kind).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
    dir
}

/// A [`scratch`] dir that no [`Daemon`] owns (a daemon's watchdog removes its own):
/// removed when dropped, unless `PICKET_TEST_KEEP_DIRS` asks to keep it.
pub struct Loose(pub PathBuf);

impl Loose {
    pub fn new(kind: &str) -> Loose {
        Loose(scratch(kind))
    }
}

impl Drop for Loose {
    fn drop(&mut self) {
        if std::env::var_os("PICKET_TEST_KEEP_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Writes `text` to `dir/name`, world-readable.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A page comfortably over picket's `min_body_bytes`, naming `host`.
pub fn page(host: &str) -> String {
    format!(
        "<!doctype html><html><head><title>{host}</title></head><body><h1>{host}</h1>\
         <p>Welcome to the county office. Opening hours, forms and services are listed \
         below; call us during office hours.</p></body></html>\n"
    )
}

/// Requests as a server logged them: arrival (Unix seconds, microsecond precision),
/// status and Host, one line each as `<time> <status> <host>` (time in µs, or in
/// seconds with a fraction).
#[derive(Debug, Clone, Default)]
pub struct Hits {
    /// (arrival in µs since the epoch, status, host)
    pub all: Vec<(u64, u16, String)>,
}

impl Hits {
    /// Parses an access log written with the `<usec> <status> <host>` format.
    pub fn parse(log: &str) -> Hits {
        let all = log
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                // Apache's %{usec}t is whole µs; nginx's $msec is seconds with a fraction.
                let raw = f.next()?;
                let t = match raw.parse::<u64>() {
                    Ok(us) => us,
                    Err(_) => (raw.parse::<f64>().ok()? * 1e6) as u64,
                };
                let status = f.next()?.parse::<u16>().ok()?;
                let host = f.next().unwrap_or("").to_string();
                Some((t, status, host))
            })
            .collect();
        Hits { all }
    }

    /// Hits at or after `since_us`.
    pub fn since(&self, since_us: u64) -> Hits {
        Hits {
            all: self
                .all
                .iter()
                .filter(|h| h.0 >= since_us)
                .cloned()
                .collect(),
        }
    }

    /// Hits for one of `hosts`.
    pub fn for_hosts(&self, hosts: &[String]) -> Hits {
        Hits {
            all: self
                .all
                .iter()
                .filter(|h| hosts.iter().any(|n| h.2.eq_ignore_ascii_case(n)))
                .cloned()
                .collect(),
        }
    }

    /// Requests answered with `status`.
    pub fn with_status(&self, status: u16) -> usize {
        self.all.iter().filter(|h| h.1 == status).count()
    }

    /// Most requests that arrived within one calendar second (what mod_evasive counts).
    pub fn max_per_calendar_second(&self) -> usize {
        let mut per: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        for h in &self.all {
            *per.entry(h.0 / 1_000_000).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(0)
    }

    /// Most requests within any sliding window of `window`.
    pub fn max_in_window(&self, window: Duration) -> usize {
        let mut t: Vec<u64> = self.all.iter().map(|h| h.0).collect();
        t.sort_unstable();
        let w = window.as_micros() as u64;
        (0..t.len())
            .map(|i| t[i..].iter().take_while(|x| **x - t[i] < w).count())
            .max()
            .unwrap_or(0)
    }

    /// The shortest gap between two consecutive arrivals.
    pub fn min_gap(&self) -> Option<Duration> {
        let mut t: Vec<u64> = self.all.iter().map(|h| h.0).collect();
        t.sort_unstable();
        t.windows(2)
            .map(|w| Duration::from_micros(w[1] - w[0]))
            .min()
    }
}

/// Now, in µs since the epoch (to cut a log at a test's start).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The hits since `since_us` once at least `expected` are logged, or what is logged
/// after 3 s: a server writes its access-log line after it sent the answer, so the last
/// one may land a moment after the client has read it.
pub async fn settled_hits(read: impl Fn() -> Hits, since_us: u64, expected: usize) -> Hits {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let hits = read().since(since_us);
        if hits.all.len() >= expected || tokio::time::Instant::now() >= deadline {
            return hits;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
