//! The only pingora code of Portcullis: routes, per-request policy evaluation, failure responses, admin endpoints, metrics.
#![warn(missing_docs)]

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: RunArgs) -> std::process::ExitCode {
    eprintln!("not implemented yet");
    std::process::ExitCode::from(1)
}
