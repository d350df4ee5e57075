//! fail2ban watching a server's logs, as operators run it beside nginx: its stock
//! `nginx-limit-req` filter (Debian's `filter.d`) over the error log, or the tutorials'
//! `http-get-dos` jail counting every request in the access log, banning the client with
//! an iptables rule. The rule is narrowed to the test server's address and port, so a
//! ban of 127.0.0.1 (where picket connects from) touches nothing else on the machine.
//!
//! The rules are removed when this value is dropped, by fail2ban's own `actionstop`,
//! and by a watchdog if the test process dies first.

use std::path::Path;
use std::process::Command;

use super::{scratch, write, Daemon, REAL_INSTALL_HINT};
use crate::support::procs::Watchdog;

/// How a ban turns connections away (fail2ban's `blocktype`).
#[derive(Debug, Clone, Copy)]
pub enum Block {
    /// Dropped: our SYN gets no answer, the connection times out.
    Drop,
    /// Rejected with an ICMP port unreachable (fail2ban's default): refused at once.
    Reject,
}

impl Block {
    fn target(self) -> &'static str {
        match self {
            Block::Drop => "DROP",
            Block::Reject => "REJECT --reject-with icmp-port-unreachable",
        }
    }
}

/// A running fail2ban.
pub struct Fail2ban {
    daemon: Daemon,
    cleanup: String,
    _watchdog: Watchdog,
}

/// One jail: the filter it reads the log with, and when and how long it bans.
struct Jail<'a> {
    name: &'a str,
    filter: String,
    log: &'a Path,
    maxretry: u32,
    findtime: u32,
    bantime: u32,
}

impl Fail2ban {
    /// fail2ban's `nginx-limit-req` jail over nginx's `error_log`, banning after
    /// `maxretry` refusals within a minute, for `bantime` seconds; the ban covers
    /// `ip:port` only.
    pub fn nginx_limit_req(
        error_log: &Path,
        ip: &str,
        port: u16,
        block: Block,
        maxretry: u32,
        bantime: u32,
    ) -> Fail2ban {
        let filter = std::fs::read_to_string("/etc/fail2ban/filter.d/nginx-limit-req.conf")
            .unwrap_or_else(|e| {
                panic!("fail2ban's nginx-limit-req filter: {e}: {REAL_INSTALL_HINT}")
            });
        let jail = Jail {
            name: "nginx-limit-req",
            filter,
            log: error_log,
            maxretry,
            findtime: 60,
            bantime,
        };
        Fail2ban::start(&jail, ip, port, block)
    }

    /// The `http-get-dos` jail that tutorials for protecting a web server with fail2ban
    /// have operators add: every GET or POST line of the access log (combined format)
    /// counts, and a client with `maxretry` of them within `findtime` seconds is banned
    /// (the tutorials' 300 in 300 s: one request a second), here for `bantime` seconds.
    pub fn http_get_dos(
        access_log: &Path,
        (ip, port): (&str, u16),
        maxretry: u32,
        findtime: u32,
        bantime: u32,
    ) -> Fail2ban {
        let jail = Jail {
            name: "http-get-dos",
            filter: "[Definition]\nfailregex = ^<HOST> -.*\"(GET|POST).*\nignoreregex =\n".into(),
            log: access_log,
            maxretry,
            findtime,
            bantime,
        };
        Fail2ban::start(&jail, ip, port, Block::Reject)
    }

    /// fail2ban running `jail`, its bans covering `ip:port` only, with `block`.
    fn start(jail: &Jail<'_>, ip: &str, port: u16, block: Block) -> Fail2ban {
        let dir = scratch("fail2ban");
        let d = dir.display().to_string();
        let name = jail.name;
        write(&dir, &format!("filter.d/{name}.conf"), &jail.filter);
        let rule = format!("-d {ip} -p tcp --dport {port} -j {}", block.target());
        // Every rule for this address and port, whoever it bans, as `iptables -D` arguments.
        let cleanup = format!(
            "iptables -w -S INPUT | grep -F -- '-d {ip}/32' | grep -F -- '--dport {port} ' \
             | sed 's/^-A //' | while read -r rule; do eval iptables -w -D $rule; done"
        );
        write(
            &dir,
            "action.d/picket-test.conf",
            &format!(
                "[Definition]\nactionstart =\nactioncheck =\nactionstop = {cleanup}\n\
                 actionban = iptables -w -I INPUT -s <ip> {rule}\n\
                 actionunban = iptables -w -D INPUT -s <ip> {rule}\n"
            ),
        );
        write(
            &dir,
            "fail2ban.conf",
            &format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\n\
                 socket = {d}/fail2ban.sock\npidfile = {d}/fail2ban.pid\ndbfile = :memory:\n\
                 syslogsocket = auto\nallowipv6 = auto\ndbpurgeage = 1d\n"
            ),
        );
        write(
            &dir,
            "jail.conf",
            &format!(
                "[DEFAULT]\nignoreself = false\nignoreip =\nbackend = polling\n\
                 [{name}]\nenabled = true\nfilter = {name}\n\
                 logpath = {}\nmaxretry = {}\nfindtime = {}\nbantime = {}\n\
                 action = picket-test\n",
                jail.log.display(),
                jail.maxretry,
                jail.findtime,
                jail.bantime
            ),
        );
        let watchdog = Watchdog::spawn(
            "fail2ban rules",
            &dir.join("rules-watchdog.log"),
            &cleanup,
            &[],
            &[],
        )
        .unwrap_or_else(|e| panic!("fail2ban: {e}"));
        let log = dir.join("fail2ban.log");
        let started = format!("Jail '{name}' started");
        let daemon = Daemon::start_until(
            "fail2ban",
            "fail2ban-server",
            &[
                "-f".into(),
                "-x".into(),
                "-c".into(),
                d.clone(),
                "-s".into(),
                format!("{d}/fail2ban.sock"),
                "-p".into(),
                format!("{d}/fail2ban.pid"),
            ],
            &dir,
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&started)),
        );
        Fail2ban {
            daemon,
            cleanup,
            _watchdog: watchdog,
        }
    }

    /// The bans fail2ban has made.
    pub fn bans(&self) -> usize {
        self.daemon
            .read("fail2ban.log")
            .lines()
            .filter(|l| l.contains("] Ban "))
            .count()
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(["-c", &self.cleanup]).status();
    }
}
