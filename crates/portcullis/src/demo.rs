//! `portcullis demo`: the dev token server, a recording echo backend and the gateway with the
//! embedded examples/demo.yaml, in one process on loopback.

use std::process::ExitCode;

/// `demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo.
pub fn run(_args: DemoArgs) -> ExitCode {
    eprintln!("not implemented yet");
    ExitCode::from(1)
}
