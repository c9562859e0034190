//! `portcullis import-apim FILE [--route NAME=PATH=UPSTREAM ...] [-o OUT]`: reads the file,
//! converts, writes the YAML (stdout or `-o`), prints every diagnostic on stderr and, last, the
//! summary line (`converted 11/12 statements; dropped: line 34 <send-request>`).
//!
//! `portcullis import-apim --apiops DIR [--map-upstream FROM=TO ...] [-o OUT]`: the same for a
//! whole APIOps extractor folder ([`crate::apiops`]); the report is per API and operation.
//!
//! Exit codes: 0 fully converted, 3 partially converted (something was reported unsupported),
//! 2 invalid XML, JSON or YAML (with file:line:col), 1 a file could not be read or the output
//! written.

use std::path::{Path, PathBuf};
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
    #[arg(required_unless_present = "apiops", conflicts_with = "apiops")]
    pub file: Option<PathBuf>,
    /// An APIOps extractor folder (policy.xml, apis/, products/, named values/, ...): the whole
    /// APIM service, one route per operation.
    #[arg(long, value_name = "DIR")]
    pub apiops: Option<PathBuf>,
    /// Rewrite an upstream origin (`https://api.contoso.com=http://127.0.0.1:3000`) in what is
    /// written (the folder's serviceUrls and backends, `--route` upstreams, set-backend-service
    /// base URLs); repeatable, the first matching one applies.
    #[arg(long = "map-upstream", value_name = "FROM=TO")]
    pub map_upstream: Vec<portcullis_config::UpstreamMap>,
    /// A route using the converted policy; repeatable. PATH is a path prefix, or an operation's URL
    /// template (`/orders/{id}`), matched as the whole path. Without it: one catch-all route `/` to
    /// http://127.0.0.1:3000, to edit.
    #[arg(
        long = "route",
        value_name = "NAME=PATH=UPSTREAM",
        conflicts_with = "apiops"
    )]
    pub routes: Vec<RouteSpec>,
    /// Write the YAML here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: ImportArgs) -> ExitCode {
    let path = match (&args.file, &args.apiops) {
        (_, Some(dir)) => return run_apiops(dir, &args),
        (Some(file), None) => file,
        (None, None) => {
            eprintln!("import-apim needs FILE or --apiops DIR");
            return ExitCode::from(EXIT_IO);
        }
    };
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            return ExitCode::from(EXIT_IO);
        }
    };
    let routes: Vec<RouteSpec> = args
        .routes
        .iter()
        .map(|r| RouteSpec {
            upstream: portcullis_config::map_upstream(&args.map_upstream, &r.upstream)
                .unwrap_or_else(|| r.upstream.clone()),
            ..r.clone()
        })
        .collect();
    let conv = match crate::convert(&text, &file, &routes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{file}:{e}");
            return ExitCode::from(EXIT_INVALID_XML);
        }
    };
    eprint!("{}", conv.stderr(&file));
    finish(args.output.as_deref(), &conv.yaml, conv.is_complete())
}

fn run_apiops(dir: &Path, args: &ImportArgs) -> ExitCode {
    let options = crate::apiops::Options {
        map_upstream: args.map_upstream.clone(),
    };
    match crate::apiops::import(dir, &options) {
        Ok(import) => {
            eprint!("{}", import.report);
            finish(args.output.as_deref(), &import.yaml, import.complete)
        }
        Err(e @ crate::apiops::Error::Io { .. }) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_IO)
        }
        Err(e @ crate::apiops::Error::Invalid(_)) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_INVALID_XML)
        }
    }
}

/// Write the YAML (stdout or `out`); the exit code.
fn finish(out: Option<&Path>, yaml: &str, complete: bool) -> ExitCode {
    let written = match out {
        Some(out) => {
            std::fs::write(out, yaml).map_err(|e| format!("{}: cannot write: {e}", out.display()))
        }
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .map_err(|e| format!("cannot write to stdout: {e}"))
        }
    };
    if let Err(e) = written {
        eprintln!("{e}");
        return ExitCode::from(EXIT_IO);
    }
    ExitCode::from(if complete {
        EXIT_CONVERTED
    } else {
        EXIT_PARTIAL
    })
}
