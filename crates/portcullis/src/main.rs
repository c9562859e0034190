//! The `portcullis` binary: clap owns every flag (pingora's own option parser never sees them),
//! each subcommand hands its typed arguments to the crate that does the work.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The process' allocator. pingora, tokio and `http` allocate about 110 times per proxied request
/// (a 64 KiB body buffer among them), and glibc's malloc family was 15 % of the proxy's CPU under
/// load (perf, issue 17). This build against a glibc build of the same source, alternating: plain
/// 1.22x, cached-token 1.40x, verify-every 1.14x the requests per second, for about 20 MiB more
/// peak RSS (docs/performance.md). Build with `--no-default-features` for the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check;
mod demo;
mod log_format;
mod log_writer;
mod run;

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
    /// Run the gateway: a config file (-c FILE) or an APIOps export of an APIM service (--apiops DIR).
    Run(run::RunCommand),
    /// Check a gateway config: every problem at once, as file:line:col. Exit 0 valid, 2 invalid.
    Check(check::CheckArgs),
    /// Why a request would pass or be refused, step by step. Exit 0 pass, 1 refused, 2 bad config.
    Explain(portcullis_proxy::explain::ExplainArgs),
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

/// Logs go to stderr through [`log_writer::LogSink`]: lines are batched in memory and one writer
/// thread writes each batch, so a request never waits on a write and the access line (one per
/// request, on by default) costs its formatting ([`log_format`]: tracing's text line without
/// `core::fmt` on the common path) and a copy into the batch. In the text format without colour
/// the access line skips tracing altogether ([`write_access_line`], the same bytes; the filter
/// still decides). A full batch drops
/// lines and counts them (`portcullis_log_lines_dropped_total`) rather than slowing requests.
/// Colour codes only when stderr is a terminal. The returned guard writes out what is pending.
fn init_logging(format: LogFormat) -> Option<log_writer::FlushGuard> {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in HEADER_DUMPING_TARGETS {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    let (sink, guard) = log_writer::LogSink::stderr("portcullis-log");
    let counted = sink.clone();
    portcullis_proxy::count_dropped_log_lines(move || counted.dropped());
    let ansi = std::io::stderr().is_terminal();
    if matches!(format, LogFormat::Text) && !ansi {
        let direct = sink.clone();
        portcullis_proxy::access_log::write_directly(move |line| write_access_line(line, &direct));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(sink);
    match format {
        LogFormat::Text => builder
            .fmt_fields(log_format::FastFields)
            .event_format(log_format::FastText::default())
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// The access line as [`log_format::access_line`] writes it, into the log's batch; through
/// tracing when that cannot write it.
fn write_access_line(
    line: &portcullis_proxy::access_log::AccessLine<'_>,
    sink: &log_writer::LogSink,
) {
    thread_local! {
        static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
    }
    let written = LINE.with_borrow_mut(|buf| {
        let ok = log_format::access_line(line, log_format::wall_clock(), buf);
        if ok {
            sink.push(buf.as_bytes());
        }
        ok
    });
    if !written {
        portcullis_proxy::access_log::via_tracing(line);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _flush_logs_at_exit = init_logging(cli.log_format);
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Explain(args) => portcullis_proxy::explain::run(args),
        Command::Idp(args) => portcullis_idp::run_idp(args),
        Command::Token(args) => portcullis_idp::run_token(args),
        Command::ImportApim(args) => portcullis_apim::run(args),
        Command::Loadtest(args) => portcullis_loadtest::run(args),
    }
}
