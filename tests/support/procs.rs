//! Process plumbing for the test servers: free ports, unique names, scratch
//! directories and the watchdog, all from the workspace's `testbed` crate,
//! which `cargo xtask bench|demo` share (testbed/src/procs.rs).

pub use testbed::procs::*;

/// libfaketime's library for multithreaded programs, which `FAKETIME` sets the wall clock
/// of (the monotonic clock left alone with `FAKETIME_DONT_FAKE_MONOTONIC=1`, so timers
/// and timeouts stay true).
pub fn libfaketime() -> std::path::PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists());
    found.expect("libfaketime not found: install Debian's faketime (scripts/deps does)")
}
