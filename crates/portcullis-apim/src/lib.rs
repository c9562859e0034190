//! APIM policy XML -> gateway YAML (pure conversion, every unsupported piece reported with its line).
#![warn(missing_docs)]

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {}

/// Runs the command; returns the process exit code.
pub fn run(_args: ImportArgs) -> std::process::ExitCode {
    eprintln!("not implemented yet");
    std::process::ExitCode::from(1)
}
