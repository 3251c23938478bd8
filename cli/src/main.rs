//! The `skiff` command: skopeo's `copy`, with composefs storage as a transport.

use std::process::ExitCode;
use std::time::Duration;

use skiff::cli;

/// How long the exit waits for blocking work still running (importers seeing their input close
/// after an error end within milliseconds). Exiting while such threads still use zstd, OpenSSL
/// or the allocator corrupts the heap in the exit handlers; only work that `--command-timeout`
/// abandoned (a store command blocked on a lock) outlives this.
const BLOCKING_WORK_GRACE: Duration = Duration::from_secs(10);

/// Allocations of this size or more get pages of their own from the kernel, returned when
/// freed (glibc's initial threshold, which it otherwise raises to the largest block freed so
/// far; from then on such blocks stay in the heap, and a copy's buffers of 64 to 256 KiB kept
/// 2 to 8 MiB of freed memory resident).
const MALLOC_MMAP_THRESHOLD: usize = 128 * 1024;

/// Tunes glibc's malloc for a copy's many threads and short-lived buffers:
///
/// - one arena per core: by default glibc keeps up to eight per core, and every blocking thread
///   that writes objects allocates in one of them: a copy of the realistic benchmark image
///   peaked at 76 MiB with the default and 60 MiB with two arenas on two cores, in the same time
///   (`make bench` with `SKIFF_BENCH_RSS=1`; cfsctl: 63 MiB);
/// - a fixed mmap threshold ([`MALLOC_MMAP_THRESHOLD`]): the same copy then peaks at 51 MiB
///   instead of 55 to 60, in the same time.
///
/// Called before any thread starts. (The workspace denies unsafe code; these FFI calls are its
/// one exception.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    let threshold = libc::c_int::try_from(MALLOC_MMAP_THRESHOLD).expect("128 KiB fits");
    // SAFETY: mallopt only sets malloc tunables; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
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
