//! The `skiff` command: skopeo's `copy`, with composefs storage as a transport.

use std::process::ExitCode;
use std::time::Duration;

use skiff::cli;

/// How long the exit waits for blocking work still running (importers seeing their input close
/// after an error end within milliseconds). Exiting while such threads still use zstd, OpenSSL
/// or the allocator corrupts the heap in the exit handlers; only work that `--command-timeout`
/// abandoned (a store command blocked on a lock) outlives this.
const BLOCKING_WORK_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
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
