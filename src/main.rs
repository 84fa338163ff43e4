//! zoo-runner: parses the command line, hands it to the library, and turns the result into an
//! exit code.

use std::process::ExitCode;

use zoo_runner::app;
use zoo_runner::cli::Cli;

/// Usage and input errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match app::run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
