//! The `skiff` command: skopeo's `copy`, with composefs storage as a transport.

use std::process::ExitCode;
use std::time::Duration;

use skiff::cli;

/// How long the exit waits for blocking work still running (importers seeing their input close
/// after an error end within milliseconds). Exiting while such threads still use zstd, OpenSSL
/// or the allocator corrupts the heap in the exit handlers; only work that `--command-timeout`
/// abandoned (a store command blocked on a lock) outlives this.
const BLOCKING_WORK_GRACE: Duration = Duration::from_secs(10);

/// Limits glibc's malloc to one arena per core. By default it keeps up to eight per core, and
/// every blocking thread that writes objects allocates in one of them: a copy of the realistic
/// benchmark image peaked at 76 MiB with the default and 60 MiB with two arenas on two cores, in
/// the same time (`make bench` with `SKIFF_BENCH_RSS=1`; cfsctl: 63 MiB). Called before any
/// thread starts. (The workspace denies unsafe code; this FFI call is its one exception.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a malloc tunable; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    cli::logger::init();
    let cli = cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {}", cli::message(&e));
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
