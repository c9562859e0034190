//! The only pingora code of Portcullis: routes, per-request policy evaluation, failure responses,
//! admin endpoints, metrics, the key refresher and the upstream health checks as pingora background
//! work.
//!
//! Why one crate: pingora is heavy to build; keeping it here lets the auth core, the config and the
//! key store be built and tested without it. The request path is described in [`proxy`].
//!
//! Entry points: [`run`] for `portcullis run -c gateway.yaml`; [`bind`] + [`BoundGateway::run`] to
//! embed the gateway (`portcullis demo`, in-process tests) and learn its bound addresses first.
#![warn(missing_docs)]

mod admin;
pub mod auth;
pub mod cache;
pub mod cors;
mod error;
pub mod health;
mod identity;
pub mod limits;
mod listeners;
mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod respond;
mod routes;
mod server;
mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod values;

use std::path::PathBuf;
use std::process::ExitCode;

pub use error::BuildError;
pub use metrics::count_dropped_log_lines;
pub use server::{
    announce, bind, install_crypto_provider, run_model, Addresses, BoundGateway, RunOptions,
};
pub use shutdown::{ShutdownHandle, Stop};

use portcullis_jwks::KeyStore;

/// `portcullis run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Gateway config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Proxy worker threads (overrides `server.threads`; default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Exit code when the config is invalid (same as `portcullis check`).
const EXIT_INVALID_CONFIG: u8 = 2;

/// Runs the command; returns the process exit code. Prints `listening proxy=... admin=...` on
/// stdout once every listener is bound.
pub fn run(args: RunArgs) -> ExitCode {
    let model = match portcullis_config::load(&args.config) {
        Ok((model, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            model
        }
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let opts = RunOptions {
        threads: args.threads,
        config_path: Some(args.config.clone()),
        ..RunOptions::default()
    };
    run_model(&model, &opts)
}
