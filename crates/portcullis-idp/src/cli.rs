//! The `portcullis idp` and `portcullis token` commands: argument types (clap) and the two entry
//! points the binary calls. Without `-c` both use [`IdpConfig::default_dev`], so a token minted
//! by `portcullis token` verifies against the JWKS of a `portcullis idp` started in the same
//! directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{IdpConfig, SigningAlg};
use crate::error::IdpError;
use crate::profile::Profile;
use crate::state::{now_unix, Idp, MintRequest};

/// `portcullis idp` arguments.
#[derive(Debug, clap::Args)]
pub struct IdpArgs {
    /// idp.yaml (default: built-in dev config, keys under ./.portcullis/idp-keys).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Rotate the signing keys this often ("10m", "1h"); the previous key stays published for
    /// `rotation-grace`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub rotate_every: Option<Duration>,
}

/// `portcullis token` arguments.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// idp.yaml whose signing key and issuer are used (default: built-in dev config).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// `sub` claim.
    #[arg(long, default_value = "dev-user")]
    pub sub: String,
    /// `aud` claim (default: the first resource's audience, else api://default).
    #[arg(long)]
    pub aud: Option<String>,
    /// Scopes (space- or comma-separated, repeatable).
    #[arg(long, value_delimiter = ',')]
    pub scope: Vec<String>,
    /// Roles (comma-separated, repeatable).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Lifetime ("5m", "1h", "300s").
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Token profile (default: the config's).
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Signing algorithm (RS256, PS256, ES256, ES384, EdDSA; default: the first signing key's).
    /// The config must publish a JWK for it: a key with that alg, or a resource signed with it.
    #[arg(long, value_parser = parse_alg)]
    pub alg: Option<SigningAlg>,
    /// Client id (azp / appid / client_id claims).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Extra claim `name=value`; a value that parses as JSON is used as JSON (numbers, arrays).
    #[arg(long = "claim", value_parser = parse_claim)]
    pub claims: Vec<(String, Value)>,
}

fn parse_alg(s: &str) -> Result<SigningAlg, String> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?}: expected RS256, PS256, ES256, ES384 or EdDSA"))
}

fn parse_claim(s: &str) -> Result<(String, Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected name=value"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

fn load(path: Option<&PathBuf>) -> Result<IdpConfig, IdpError> {
    match path {
        Some(p) => IdpConfig::load(p),
        None => Ok(IdpConfig::default_dev(std::path::Path::new("."))),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// Runs the dev token server until Ctrl-C.
pub fn run_idp(args: IdpArgs) -> ExitCode {
    warn(&[DEVELOPMENT_ONLY.to_owned()]);
    let config = match load(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async move {
        let handle = match crate::start(config).await {
            Ok(h) => h,
            Err(e) => return fail(&e),
        };
        warn(&exposure_warnings(handle.http_addr(), handle.https_addr()));
        print_ready(&handle);
        let rotation = args.rotate_every.map(|every| {
            let idp = handle.idp.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if let Err(e) = idp.rotate() {
                        tracing::error!(error = %e, "key rotation failed");
                    }
                }
            })
        });
        let _ = tokio::signal::ctrl_c().await;
        if let Some(task) = rotation {
            task.abort();
        }
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The first thing `portcullis idp` says (on stderr, before any log line).
const DEVELOPMENT_ONLY: &str = "WARNING: DEVELOPMENT ONLY. `portcullis idp` is a test token \
    server: it signs tokens for any configured client or user, keeps its keys in plain files and \
    is not hardened. Never use it as a real identity provider.";

/// A warning per bound address that is not loopback (`0.0.0.0` included).
fn exposure_warnings(http: Option<SocketAddr>, https: Option<SocketAddr>) -> Vec<String> {
    [http, https]
        .into_iter()
        .flatten()
        .filter(|addr| !addr.ip().is_loopback())
        .map(|addr| {
            format!(
                "WARNING: listening on {addr}, which is not a loopback address: anyone who can \
                 reach it can obtain tokens its keys sign. Prefer 127.0.0.1."
            )
        })
        .collect()
}

/// Lines on stderr (write errors ignored, as for the banner).
fn warn(lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let mut err = std::io::stderr().lock();
    let _ = std::io::Write::write_all(&mut err, text.as_bytes());
    let _ = std::io::Write::flush(&mut err);
}

/// The ready banner on stdout, written as one block. A reader that stops early (`| head -2`, a
/// test that only wants the `http:` line) must not take the server down: `println!` panics on a
/// closed pipe, so write errors are ignored here.
fn print_ready(handle: &crate::IdpHandle) {
    use std::fmt::Write as _;
    let mut banner = String::new();
    let _ = writeln!(banner, "issuer:    {}", handle.issuer());
    if let Some(a) = handle.http_addr() {
        let _ = writeln!(banner, "http:      http://{a}");
    }
    if let Some(a) = handle.https_addr() {
        let _ = writeln!(banner, "https:     https://{a}");
    }
    let _ = writeln!(banner, "discovery: {}", handle.discovery_url());
    let _ = writeln!(banner, "token:     {}", handle.token_endpoint());
    if let Some(h) = &handle.idp.config.https {
        let _ = writeln!(banner, "https CA:  {}", h.ca_file.display());
    }
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, banner.as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

/// Prints a signed token.
pub fn run_token(args: TokenArgs) -> ExitCode {
    match mint(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn mint(args: TokenArgs) -> Result<String, IdpError> {
    let config = load(args.config.as_ref())?;
    let issuer = crate::resolve_issuer(
        config.issuer.as_deref(),
        config.listen,
        config.https.as_ref().map(|h| h.listen),
    );
    let audience = args.aud.unwrap_or_else(|| {
        config
            .resources
            .first()
            .map_or_else(|| "api://default".into(), |r| r.audience.clone())
    });
    let idp = Idp::new(config, issuer)?;
    let request = MintRequest {
        subject: args.sub,
        audience,
        scopes: args
            .scope
            .iter()
            .flat_map(|s| s.split_whitespace().map(str::to_owned))
            .collect(),
        roles: args.roles,
        ttl: args.ttl,
        profile: args.profile,
        alg: args.alg,
        client_id: args.client_id,
        claims: args.claims.into_iter().collect::<Map<_, _>>(),
    };
    idp.mint(&request, now_unix())
}
