//! zoo-runner: parses the command line, hands it to the library, and turns the result into an
//! exit code.

use std::process::ExitCode;

use zoo_runner::app;
use zoo_runner::cli::Cli;

fn main() -> ExitCode {
    let result = Cli::parse_args().into_command().and_then(app::execute);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(app::EXIT_USAGE)
        }
    }
}
