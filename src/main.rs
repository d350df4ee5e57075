//! The `picket` binary: the command line lives in the library (`picket::cli`, so the
//! completions, the man page and the tests see the same definitions); this file only
//! chooses the allocator and calls it. Exit codes: 0 success (for `check`: all up),
//! 1 failure (for `check`: any not up), 2 usage, configuration or input error, each
//! chosen by type in `picket::cli::exit`.

use std::process::ExitCode;

// jemalloc: about 20 % less CPU per probe than the system allocator in scripts/bench,
// for about 10 % more memory per probe in flight (docs/BENCHMARKS.md). The
// `system-alloc` feature leaves it out, so that valgrind's heap profilers see every
// allocation.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    picket::cli::main()
}
