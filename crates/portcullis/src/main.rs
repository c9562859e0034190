//! The `portcullis` binary: clap owns every flag (pingora's own option parser never sees them),
//! each subcommand hands its typed arguments to the crate that does the work.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod check;
mod demo;

/// Portcullis: an API gateway that validates JWTs the way APIM's validate-jwt does.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per process and matched at once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Dev token server + recording echo backend + gateway with examples/demo.yaml, on loopback.
    Demo(demo::DemoArgs),
    /// Run the gateway.
    Run(portcullis_proxy::RunArgs),
    /// Check a gateway config: every problem at once, as file:line:col. Exit 0 valid, 2 invalid.
    Check(check::CheckArgs),
    /// Run the dev token server.
    Idp(portcullis_idp::IdpArgs),
    /// Mint a token with the dev token server's key.
    Token(portcullis_idp::TokenArgs),
    /// Convert an APIM policy document to gateway YAML.
    ImportApim(portcullis_apim::ImportArgs),
    /// Drive load through a gateway with valid and invalid tokens; report throughput and correctness.
    Loadtest(portcullis_loadtest::LoadtestArgs),
}

/// Library log targets whose `debug`/`trace` lines print whole request or response headers
/// (pingora's "Sending header to upstream RequestHeader { .. authorization: Bearer .. }", its
/// wire-level header traces). Tokens must never reach the logs, so these are held at `info`
/// whatever `RUST_LOG` asks for; the gateway's own lines carry route, status, reason and request id
/// instead. Checked by the binary's `logs` end-to-end tests at `debug` and `trace`.
const HEADER_DUMPING_TARGETS: [&str; 2] = ["pingora_proxy", "pingora_core::protocols"];

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in HEADER_DUMPING_TARGETS {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => portcullis_proxy::run(args),
        Command::Check(args) => check::run(args),
        Command::Idp(args) => portcullis_idp::run_idp(args),
        Command::Token(args) => portcullis_idp::run_token(args),
        Command::ImportApim(args) => portcullis_apim::run(args),
        Command::Loadtest(args) => portcullis_loadtest::run(args),
    }
}
