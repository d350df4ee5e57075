//! Process plumbing for the test servers: free ports, unique names, scratch
//! directories and the watchdog, all from the workspace's `testbed` crate,
//! which `cargo xtask bench|demo` share (testbed/src/procs.rs).

pub use testbed::procs::*;
