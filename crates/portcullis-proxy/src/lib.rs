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

pub mod access_log;
mod admin;
pub mod auth;
pub mod cache;
pub mod cors;
mod error;
pub mod explain;
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
pub mod subscriptions;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod values;

use std::path::PathBuf;
use std::process::ExitCode;

pub use error::BuildError;
pub use metrics::count_dropped_log_lines;
pub use server::{
    announce, bind, install_crypto_provider, run_model, Addresses, BoundGateway, RunOptions,
    H2_IDLE_TIMEOUT,
};
pub use shutdown::{ShutdownHandle, Stop};
pub use subscriptions::SubscriptionKeys;

use portcullis_jwks::KeyStore;

/// `portcullis run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Gateway config file (or, with the `portcullis` binary, `--apiops DIR`).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        required_unless_present = "apiops"
    )]
    pub config: Option<PathBuf>,
    /// Proxy worker threads (overrides `server.threads`; default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Plain-HTTP proxy listener `host:port` (repeatable); replaces `server.listen`.
    #[arg(long = "listen", value_name = "ADDR", value_parser = listen_address)]
    pub listen: Vec<String>,
    /// Admin listener `host:port`; replaces `server.admin`.
    #[arg(long = "admin", value_name = "ADDR", value_parser = listen_address)]
    pub admin: Option<String>,
    /// Rewrite an upstream origin at load (repeatable; route upstreams, `backends:` URLs,
    /// `set-backend-service` base URLs), e.g. `https://api.contoso.com=http://127.0.0.1:3000`.
    #[arg(long = "map-upstream", value_name = "FROM=TO")]
    pub map_upstream: Vec<portcullis_config::UpstreamMap>,
    /// `--subscription-key`, `--subscription-keys`.
    #[command(flatten)]
    pub subscriptions: SubscriptionKeyArgs,
}

/// The subscription key flags, shared by `run` and `explain` (one parser for both).
#[derive(Debug, Default, clap::Args)]
pub struct SubscriptionKeyArgs {
    /// A key of a subscription of `subscriptions:` (repeatable; give a subscription twice for
    /// its primary and secondary keys). Prefer `--subscription-keys`: arguments are visible to
    /// other local users.
    #[arg(long = "subscription-key", value_name = "NAME=KEY")]
    pub subscription_key: Vec<KeyArg>,
    /// A file of subscription keys: `NAME=KEY` lines, `#` comments, blank lines.
    #[arg(long = "subscription-keys", value_name = "FILE")]
    pub subscription_keys: Option<PathBuf>,
}

/// A `--subscription-key` argument, kept as given until checked (never shown: its `Debug` and
/// every error leave the key out).
#[derive(Clone)]
pub struct KeyArg(String);

impl std::fmt::Debug for KeyArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.split_once('=').map_or("?", |(n, _)| n);
        write!(f, "KeyArg({name}=***)")
    }
}

impl std::str::FromStr for KeyArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(KeyArg(s.to_owned()))
    }
}

/// `--listen` / `--admin`: `host:port` (checked as the config checks `server.listen`).
fn listen_address(text: &str) -> Result<String, String> {
    if portcullis_config::is_listen_address(text) {
        Ok(text.to_owned())
    } else {
        Err("expected host:port, such as 127.0.0.1:8080 or [::1]:8080".to_owned())
    }
}

impl RunArgs {
    /// The load options the flags ask for.
    pub fn load_options(&self) -> portcullis_config::LoadOptions {
        portcullis_config::LoadOptions {
            map_upstream: self.map_upstream.clone(),
            listen: self.listen.clone(),
            admin: self.admin.clone(),
        }
    }

    /// The subscription keys of `--subscription-key` and `--subscription-keys`; `Err` says what
    /// is wrong without showing a key.
    pub fn subscription_keys(&self) -> Result<SubscriptionKeys, String> {
        self.subscriptions.keys()
    }
}

impl SubscriptionKeyArgs {
    /// The keys of `--subscription-key` and `--subscription-keys`; `Err` says what is wrong
    /// without showing a key.
    pub fn keys(&self) -> Result<SubscriptionKeys, String> {
        let mut keys = SubscriptionKeys::new();
        for arg in &self.subscription_key {
            keys.add_arg(&arg.0)
                .map_err(|e| format!("--subscription-key: {e}"))?;
        }
        if let Some(path) = &self.subscription_keys {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--subscription-keys {}: {e}", path.display()))?;
            keys.add_file(&text)
                .map_err(|e| format!("--subscription-keys {}: {e}", path.display()))?;
        }
        Ok(keys)
    }
}

/// Exit code when the config is invalid (same as `portcullis check`).
pub const EXIT_INVALID_CONFIG: u8 = 2;

/// Runs the command; returns the process exit code. Prints `listening proxy=... admin=...` on
/// stdout once every listener is bound.
pub fn run(args: RunArgs) -> ExitCode {
    let Some(path) = args.config.clone() else {
        eprintln!("error: a config file is needed: -c FILE");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    };
    let load = args.load_options();
    run_loaded(
        &args,
        portcullis_config::load_with(&path, &load),
        Some(path),
    )
}

/// Runs a model the caller loaded with [`RunArgs::load_options`] (`portcullis run -c FILE`, or the
/// binary's `run --apiops DIR`, which imports the folder in memory): warnings logged, errors printed
/// with exit code 2, the subscription keys of the flags checked, then the gateway. `config_path`:
/// the file reloads re-read (`None`: no reload).
pub fn run_loaded(
    args: &RunArgs,
    loaded: portcullis_config::LoadResult,
    config_path: Option<PathBuf>,
) -> ExitCode {
    let subscription_keys = match args.subscription_keys() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let model = match loaded {
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
        config_path,
        load: args.load_options(),
        subscription_keys,
        ..RunOptions::default()
    };
    run_model(&model, &opts)
}
