//! Load driver: mints valid and invalid tokens, drives keep-alive HTTP/1.1 load, counts correctness.
#![warn(missing_docs)]

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: LoadtestArgs) -> std::process::ExitCode {
    eprintln!("not implemented yet");
    std::process::ExitCode::from(1)
}
