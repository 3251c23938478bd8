//! The `skiff` command: skopeo's `copy`, with composefs storage as a transport.

use std::process::ExitCode;

mod cli;

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
    // Work that --command-timeout abandoned (a blocked store command) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
