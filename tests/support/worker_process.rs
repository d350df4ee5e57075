//! A `picket worker` as a separate process, for tests that kill it (as `kill -9` or the
//! `PICKET_TEST_CRASH` hook would) or stop it with SIGTERM: the config file and the log
//! live in a temp dir of its own, and the process is killed when the value is dropped.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A running (or ended) worker process.
pub struct WorkerProcess {
    child: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `picket worker` with `toml` as its config file.
    pub fn plain(toml: &str) -> WorkerProcess {
        WorkerProcess::start::<&str>(toml, &[])
    }

    /// Starts `picket worker` with `toml` as its config file and `env` added.
    pub fn start<V: AsRef<std::ffi::OsStr>>(toml: &str, env: &[(&str, V)]) -> WorkerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("picket.toml");
        std::fs::write(&config, toml).expect("write config");
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).expect("worker log");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"));
        cmd.arg("worker")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start picket worker");
        WorkerProcess {
            child,
            log,
            _dir: dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("worker pid")
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with its log, if the process has already ended.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "worker exited early ({status}); its log:\n{}",
                self.log_tail(40)
            );
        }
    }

    /// SIGKILL, as a crash or the OOM killer would end it; waits for the end.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.start_kill().expect("SIGKILL the worker");
        self.exited(Duration::from_secs(10)).await
    }

    /// Waits for the process to end by itself.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for the worker: {e}"),
            Err(_) => panic!(
                "the worker did not end within {within:?}; its log:\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// Sends `signal` (a name `kill` knows, e.g. `HUP`) once the worker has installed
    /// its handlers.
    pub async fn signal(&mut self, signal: &str) {
        self.started().await;
        let pid = self.child.id().expect("worker pid");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{signal} {pid}");
    }

    /// Waits until the log says the worker started (its signal handlers are in place).
    async fn started(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("picket worker starting")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker never started; its log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit. A worker that has not yet installed its
    /// signal handler would die of the signal, so this first waits for it to start.
    pub async fn terminate(mut self) {
        self.started().await;
        let pid = self.child.id().expect("worker pid");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let status = self.exited(Duration::from_secs(40)).await;
        assert!(
            status.success(),
            "worker exit status {status:?}; log:\n{}",
            self.log_tail(40)
        );
    }
}
