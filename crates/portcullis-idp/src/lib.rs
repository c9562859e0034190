//! Dev token server (`portcullis idp`) and `portcullis token`. Independent of portcullis-auth on
//! purpose: a second implementation catches verifier bugs.
#![warn(missing_docs)]

/// `portcullis idp` arguments.
#[derive(Debug, clap::Args)]
pub struct IdpArgs {}

/// `portcullis token` arguments.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {}

/// Runs the dev token server.
pub fn run_idp(_args: IdpArgs) -> std::process::ExitCode {
    eprintln!("not implemented yet");
    std::process::ExitCode::from(1)
}

/// Prints a signed token.
pub fn run_token(_args: TokenArgs) -> std::process::ExitCode {
    eprintln!("not implemented yet");
    std::process::ExitCode::from(1)
}
