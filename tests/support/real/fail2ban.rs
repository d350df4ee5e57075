//! fail2ban watching a server's error log, as operators run it beside nginx: its stock
//! `nginx-limit-req` filter (Debian's `filter.d`), banning the client nginx blames with
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
        let dir = scratch("fail2ban");
        let d = dir.display().to_string();
        let filter = std::fs::read_to_string("/etc/fail2ban/filter.d/nginx-limit-req.conf")
            .unwrap_or_else(|e| {
                panic!("fail2ban's nginx-limit-req filter: {e}: {REAL_INSTALL_HINT}")
            });
        write(&dir, "filter.d/nginx-limit-req.conf", &filter);
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
                 [nginx-limit-req]\nenabled = true\nfilter = nginx-limit-req\n\
                 logpath = {}\nmaxretry = {maxretry}\nfindtime = 60\nbantime = {bantime}\n\
                 action = picket-test\n",
                error_log.display()
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
            || {
                std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Jail 'nginx-limit-req' started"))
            },
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
