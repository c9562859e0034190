//! `portcullis import-apim FILE [--route NAME=PATH=UPSTREAM ...] [-o OUT]`: reads the file,
//! converts, writes the YAML (stdout or `-o`), prints every diagnostic on stderr and, last, the
//! summary line (`converted 11/12 statements; dropped: line 34 <send-request>`).
//!
//! Exit codes: 0 fully converted, 3 partially converted (something was reported unsupported),
//! 2 invalid XML (with file:line:col), 1 the file could not be read or the output written.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::gateway::RouteSpec;

/// Exit code: everything converted.
pub const EXIT_CONVERTED: u8 = 0;
/// Exit code: I/O failure.
pub const EXIT_IO: u8 = 1;
/// Exit code: the document is not well-formed XML.
pub const EXIT_INVALID_XML: u8 = 2;
/// Exit code: converted partially (see the diagnostics).
pub const EXIT_PARTIAL: u8 = 3;

/// Command-line arguments.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 fully converted, 3 partially converted (see stderr), 2 invalid XML, 1 I/O error."
)]
pub struct ImportArgs {
    /// The APIM policy document (XML).
    pub file: PathBuf,
    /// A route using the converted policy; repeatable. PATH is a path prefix, or an operation's URL
    /// template (`/orders/{id}`), matched as the whole path. Without it: one catch-all route `/` to
    /// http://127.0.0.1:3000, to edit.
    #[arg(long = "route", value_name = "NAME=PATH=UPSTREAM")]
    pub routes: Vec<RouteSpec>,
    /// Write the YAML here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: ImportArgs) -> ExitCode {
    let file = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            return ExitCode::from(EXIT_IO);
        }
    };
    let conv = match crate::convert(&text, &file, &args.routes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{file}:{e}");
            return ExitCode::from(EXIT_INVALID_XML);
        }
    };
    eprint!("{}", conv.stderr(&file));
    let written = match &args.output {
        Some(out) => std::fs::write(out, &conv.yaml)
            .map_err(|e| format!("{}: cannot write: {e}", out.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(conv.yaml.as_bytes())
                .map_err(|e| format!("cannot write to stdout: {e}"))
        }
    };
    if let Err(e) = written {
        eprintln!("{e}");
        return ExitCode::from(EXIT_IO);
    }
    ExitCode::from(if conv.is_complete() {
        EXIT_CONVERTED
    } else {
        EXIT_PARTIAL
    })
}
