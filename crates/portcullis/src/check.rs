//! `portcullis check -c FILE`: every problem at once, `file:line:col: severity: message` on stderr.
//! Exit 0 valid (warnings allowed), 2 invalid.

use std::path::PathBuf;
use std::process::ExitCode;

/// `check` arguments.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Gateway config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs `check`.
pub fn run(args: CheckArgs) -> ExitCode {
    match portcullis_config::load(&args.config) {
        Ok((model, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: ok ({} policies, {} routes, {} warnings)",
                args.config.display(),
                model.policies.len(),
                model.routes.len(),
                warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            ExitCode::from(2)
        }
    }
}
