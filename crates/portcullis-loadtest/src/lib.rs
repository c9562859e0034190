//! Load driver: mints valid and invalid tokens (or fetches real ones from a token endpoint),
//! drives keep-alive HTTP/1.1 or HTTP/2 load over plain TCP or TLS, counts correctness.
//!
//! `portcullis loadtest` exists so a gateway's speed is never reported without proof that it still
//! validates: every response is checked against what its token deserves.
#![warn(missing_docs)]

pub mod client;
pub mod driver;
pub mod keys;
pub mod mint;
pub mod plot;
pub mod report;
pub mod stats;
pub mod tls;
pub mod token;

use std::io::IsTerminal;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustls::pki_types::ServerName;

use crate::client::{Endpoint, H2Request};
use crate::driver::{Live, Load, RequestSet, Requests, Wire};
use crate::keys::{Alg, Identity, KeyError, KeySource};
use crate::mint::{ExtraClaims, Kind, Minted, Plan};
use crate::report::{Report, Setup, EXIT_USAGE};
use crate::token::{Credential, Fetched, TokenEndpoint};

/// Command-line arguments of `portcullis loadtest`.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    /// Target URL: http:// or https://host:port/path?query.
    #[arg(long)]
    pub url: String,
    /// Also trust the CA certificates in this PEM file (https target and token endpoint), besides
    /// the platform's trust store.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the https target's certificate. Development only: a warning is printed and
    /// the report says so. The token endpoint is verified regardless.
    #[arg(long)]
    pub insecure: bool,
    /// Speak HTTP/2: negotiated by ALPN (`h2`, required) for https, with prior knowledge (h2c)
    /// for http.
    #[arg(long)]
    pub http2: bool,
    /// Get real tokens from this OAuth 2.0 token endpoint (client credentials grant) instead of
    /// minting them; refreshed before they expire.
    #[arg(long, value_name = "URL", requires = "client_id",
        conflicts_with_all = ["idp_config", "key", "kid", "iss", "aud", "alg", "scope", "roles", "claims"])]
    pub token_endpoint: Option<String>,
    /// `client_id` for the token endpoint.
    #[arg(long, requires = "token_endpoint")]
    pub client_id: Option<String>,
    /// Client secret (prefer the environment variable: a flag shows in the process list).
    #[arg(
        long,
        env = "PORTCULLIS_LOADTEST_CLIENT_SECRET",
        hide_env_values = true,
        requires = "token_endpoint",
        conflicts_with = "client_cert"
    )]
    pub client_secret: Option<String>,
    /// Client certificate (PEM): authenticate with a client assertion signed by --client-key.
    #[arg(long, value_name = "PEM", requires_all = ["token_endpoint", "client_key"])]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// `scope` of the token request (Entra v2: `<resource>/.default`).
    #[arg(long, value_name = "SCOPE", requires = "token_endpoint")]
    pub token_scope: Option<String>,
    /// `resource` of the token request (Entra v1, ADFS).
    #[arg(long, value_name = "RESOURCE", requires = "token_endpoint")]
    pub token_resource: Option<String>,
    /// The dev token server's idp.yaml: issuer, first signing key (and its id as kid), first
    /// resource's audience.
    #[arg(short = 'c', long = "config", value_name = "IDP_YAML")]
    pub idp_config: Option<PathBuf>,
    /// Private key (PKCS#8 or PKCS#1 PEM), or the HMAC secret file for HS*.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// `kid` header value.
    #[arg(long)]
    pub kid: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
    /// Signing algorithm (default: from idp.yaml, else from the key type).
    #[arg(long, value_enum)]
    pub alg: Option<Alg>,
    /// `scope` claim (space-separated string).
    #[arg(long)]
    pub scope: Option<String>,
    /// `roles` claim entries (comma-separated, repeatable).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Extra claim `name=value` (value as JSON when it parses, else a string); repeatable.
    #[arg(long = "claim", value_name = "K=V", value_parser = parse_claim)]
    pub claims: Vec<(String, serde_json::Value)>,
    /// Run length.
    #[arg(short = 'd', long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Distinct valid tokens.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub tokens: u32,
    /// Share of invalid tokens in the request set (`10%` or `10`).
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    pub invalid: f64,
    /// Open loop: total requests per second, spread over the connections (default: closed loop).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Load threads, each with its own event loop (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Extra request header `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Header that carries the token.
    #[arg(long, default_value = "Authorization")]
    pub header_name: String,
    /// Scheme before the token in that header (empty for none).
    #[arg(long, default_value = "Bearer")]
    pub scheme: String,
    /// Send the token in this query parameter instead of a header.
    #[arg(long, value_name = "NAME")]
    pub query_param: Option<String>,
    /// A request still unanswered this long when the run ends counts as a timeout error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Transport errors allowed, as a share of requests, before exit code 3.
    #[arg(long, default_value = "0.1%", value_parser = parse_percent)]
    pub max_errors: f64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write a latency plot: FILE.svg or FILE.html.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs the command; returns the process exit code (see docs/loadtest.md).
pub fn run(args: LoadtestArgs) -> ExitCode {
    match execute(&args).and_then(|report| publish(&args, &report).map(|()| report)) {
        Ok(report) => ExitCode::from(report.verdict.exit_code),
        Err(e) => {
            eprintln!("portcullis loadtest: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Why the load test could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// Bad flags or URL.
    #[error("{0}")]
    Usage(String),
    /// Keys could not be loaded or used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The token endpoint did not give a token.
    #[error("{0}")]
    Token(String),
    /// The load threads could not start.
    #[error(transparent)]
    Drive(#[from] driver::DriveError),
    /// The report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

enum PlotFormat {
    Svg,
    Html,
}

/// Mints (or fetches) the tokens, drives the load and judges it; nothing is printed but progress
/// and the `--insecure` warning.
pub fn execute(args: &LoadtestArgs) -> Result<Report, LoadtestError> {
    let target = Target::parse(args)?;
    plot_format(args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let show = !args.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    if args.insecure && target.endpoint.tls.is_some() {
        eprintln!(
            "WARNING: --insecure: the certificate of {} is NOT verified; anyone on the path can \
             read and answer these requests. For development only.",
            args.url
        );
    }
    let load = Load {
        endpoint: target.endpoint.clone(),
        connections: args.connections,
        threads,
        duration: args.duration,
        rate: args.rate,
        timeout: args.timeout,
    };
    let (plan, source, stats, elapsed) = match token_endpoint(args)? {
        None => {
            let identity = keys::load(&KeySource {
                idp_config: args.idp_config.clone(),
                key_file: args.key.clone(),
                kid: args.kid.clone(),
                issuer: args.iss.clone(),
                audience: args.aud.clone(),
                alg: args.alg,
            })?;
            let plan = Plan::new(args.tokens as usize, args.invalid);
            let minted = mint(args, &identity, &plan, threads, show)?;
            let requests = Arc::new(RequestSet::new(target.requests(args, &minted)?));
            drop(minted);
            let (stats, elapsed) = drive(&load, requests, show)?;
            let source = Source {
                name: "minted".to_owned(),
                alg: identity.alg.name().to_owned(),
                fetches: 0,
            };
            (plan, source, stats, elapsed)
        }
        Some(endpoint) => {
            let first = fetch(&endpoint)?;
            let plan = Plan::with_kinds(
                args.tokens as usize,
                args.invalid,
                token::derivable(&first.token),
            );
            let build =
                |fetched: &Fetched| target.requests(args, &token::tokens(&fetched.token, &plan));
            let requests = Arc::new(RequestSet::new(build(&first)?));
            let alg = token::alg_of(&first.token);
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let (driven, fetches) = std::thread::scope(|s| {
                let refresher = s.spawn(|| refresh(&endpoint, first, &requests, &build, stopped));
                let driven = drive(&load, requests.clone(), show);
                drop(stop);
                (driven, refresher.join().unwrap_or(1))
            });
            let (stats, elapsed) = driven?;
            let source = Source {
                name: endpoint.url.clone(),
                alg,
                fetches,
            };
            (plan, source, stats, elapsed)
        }
    };
    let setup = Setup {
        url: args.url.clone(),
        connections: args.connections,
        threads: threads.clamp(1, args.connections.max(1)),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        target_rate: args.rate,
        protocol: match (args.http2, target.endpoint.tls.is_some()) {
            (false, _) => "http/1.1",
            (true, true) => "h2",
            (true, false) => "h2c",
        },
        tls: match (&target.endpoint.tls, args.insecure) {
            (None, _) => "none",
            (Some(_), false) => "verified",
            (Some(_), true) => "insecure",
        },
        token_source: source.name,
        token_fetches: source.fetches,
        alg: source.alg,
        valid_tokens: plan.valid,
        invalid_tokens: plan.invalid,
        kinds_produced: Kind::ALL
            .iter()
            .filter(|k| plan.produces(**k))
            .map(|k| k.name())
            .collect(),
        max_errors_percent: args.max_errors,
    };
    Ok(Report::new(setup, &stats, elapsed))
}

/// Where the run's tokens came from (report).
struct Source {
    name: String,
    alg: String,
    fetches: u64,
}

/// The token endpoint the flags describe, if any.
fn token_endpoint(args: &LoadtestArgs) -> Result<Option<TokenEndpoint>, LoadtestError> {
    let Some(url) = &args.token_endpoint else {
        return Ok(None);
    };
    let credential =
        match (&args.client_secret, &args.client_cert, &args.client_key) {
            (Some(secret), None, _) => Credential::Secret(secret.clone()),
            (None, Some(cert), Some(key)) => {
                Credential::certificate(cert, key).map_err(LoadtestError::Usage)?
            }
            _ => return Err(LoadtestError::Usage(
                "--token-endpoint needs --client-secret (or PORTCULLIS_LOADTEST_CLIENT_SECRET), \
                 or --client-cert with --client-key"
                    .into(),
            )),
        };
    Ok(Some(TokenEndpoint {
        url: url.clone(),
        client_id: args.client_id.clone().unwrap_or_default(),
        credential,
        scope: args.token_scope.clone(),
        resource: args.token_resource.clone(),
        cacert: args.cacert.clone(),
    }))
}

/// One token request, on a runtime of its own (the caller is a plain thread).
fn fetch(endpoint: &TokenEndpoint) -> Result<Fetched, LoadtestError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadtestError::Token(e.to_string()))?;
    runtime
        .block_on(endpoint.fetch(unix_now()))
        .map_err(LoadtestError::Token)
}

/// Fetches a new token before the current one expires and swaps it into the request set, until
/// `stop` is dropped. A failed fetch is logged and retried every second (the old token is sent
/// meanwhile; once it expires the gateway's refusals show in the report). Returns the number of
/// tokens fetched, the first included.
fn refresh(
    endpoint: &TokenEndpoint,
    first: Fetched,
    requests: &RequestSet,
    build: &dyn Fn(&Fetched) -> Result<Requests, LoadtestError>,
    stop: std::sync::mpsc::Receiver<()>,
) -> u64 {
    let mut fetches = 1;
    let mut next = Instant::now() + token::refresh_after(first.lifetime);
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        if stop.recv_timeout(wait) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            return fetches;
        }
        match fetch(endpoint).and_then(|f| build(&f).map(|r| (f, r))) {
            Ok((fetched, built)) => {
                requests.replace(built);
                fetches += 1;
                next = Instant::now() + token::refresh_after(fetched.lifetime);
                tracing::info!(lifetime_s = fetched.lifetime.as_secs(), "token refreshed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresh failed; retrying in 1s");
                next = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

/// Prints the report (text or `--json`) and writes `--report FILE`.
fn publish(args: &LoadtestArgs, report: &Report) -> Result<(), LoadtestError> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", report.text());
    }
    if let (Some(path), Some(format)) = (&args.report, plot_format(args)?) {
        let body = match format {
            PlotFormat::Svg => plot::svg(report),
            PlotFormat::Html => plot::html(report),
        };
        std::fs::write(path, body).map_err(|e| LoadtestError::Write {
            path: path.clone(),
            source: e,
        })?;
    }
    Ok(())
}

fn plot_format(args: &LoadtestArgs) -> Result<Option<PlotFormat>, LoadtestError> {
    let Some(path) = &args.report else {
        return Ok(None);
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Ok(Some(PlotFormat::Svg)),
        Some("html" | "htm") => Ok(Some(PlotFormat::Html)),
        _ => Err(LoadtestError::Usage(format!(
            "--report {}: the file name must end in .svg or .html",
            path.display()
        ))),
    }
}

fn mint(
    args: &LoadtestArgs,
    identity: &Identity,
    plan: &Plan,
    threads: usize,
    show: bool,
) -> Result<Vec<Minted>, LoadtestError> {
    let bar = progress_bar(
        show,
        plan.total() as u64,
        "minting {pos}/{len} tokens {bar:30} {per_sec}",
    );
    let extra = ExtraClaims {
        scope: args.scope.clone(),
        roles: args.roles.clone(),
        claims: args.claims.clone(),
    };
    let lifetime = args.duration.as_secs().saturating_add(600).max(3600);
    let started = Instant::now();
    let minted = mint::mint_all(
        identity,
        &extra,
        plan,
        unix_now(),
        lifetime,
        threads,
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    tracing::info!(
        tokens = minted.len(),
        alg = identity.alg.name(),
        ms = started.elapsed().as_millis() as u64,
        "minted tokens"
    );
    Ok(minted)
}

fn drive(
    load: &Load,
    requests: Arc<RequestSet>,
    show: bool,
) -> Result<(stats::Stats, Duration), LoadtestError> {
    let bar = progress_bar(
        show,
        load.duration.as_millis() as u64,
        "{bar:30} {elapsed}/{duration} {msg}",
    );
    let mut last = (Duration::ZERO, 0u64);
    let mut tick = |elapsed: Duration, live: &Live| {
        let (responses, errors) = live.totals();
        if elapsed.saturating_sub(last.0) >= Duration::from_millis(500) {
            let rate = (responses - last.1) as f64 / (elapsed - last.0).as_secs_f64();
            bar.set_message(format!(
                "{rate:.0} req/s  {responses} responses  {errors} errors"
            ));
            last = (elapsed, responses);
        }
        bar.set_position(elapsed.as_millis() as u64);
    };
    let result = driver::drive(load, requests, &mut tick)?;
    bar.finish_and_clear();
    Ok(result)
}

fn progress_bar(show: bool, len: u64, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// The wall clock in Unix seconds: the one place this crate reads it (token `iat`/`exp`).
#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where requests go and what each looks like apart from its token.
struct Target {
    endpoint: Endpoint,
    scheme: &'static str,
    host: String,
    path: String,
}

impl Target {
    fn parse(args: &LoadtestArgs) -> Result<Target, LoadtestError> {
        let usage = |m: String| LoadtestError::Usage(format!("--url {}: {m}", args.url));
        let url = url::Url::parse(&args.url).map_err(|e| usage(e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => "http",
            "https" => "https",
            _ => return Err(usage("only http:// and https:// are supported".into())),
        };
        let host = url.host_str().ok_or_else(|| usage("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| usage(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| usage("resolves to no address".into()))?;
        let tls = if scheme == "https" {
            let name = match url.host() {
                Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
                Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
                _ => ServerName::try_from(host.to_owned()).map_err(|e| usage(e.to_string()))?,
            };
            let cacert = match &args.cacert {
                Some(path) => tls::read_cacert(path).map_err(LoadtestError::Usage)?,
                None => Vec::new(),
            };
            let alpn: &[&[u8]] = if args.http2 { &[b"h2"] } else { &[b"http/1.1"] };
            let config =
                tls::client_config(&cacert, args.insecure, alpn).map_err(LoadtestError::Usage)?;
            Some((config, name))
        } else {
            None
        };
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Ok(Target {
            endpoint: Endpoint {
                addr,
                tls,
                http2: args.http2,
            },
            scheme,
            host,
            path,
        })
    }

    /// One request per token: pre-serialised HTTP/1.1 bytes, or HTTP/2 heads.
    fn requests(&self, args: &LoadtestArgs, minted: &[Minted]) -> Result<Requests, LoadtestError> {
        let scheme = if args.scheme.is_empty() {
            String::new()
        } else {
            format!("{} ", args.scheme)
        };
        // (path with the token when it goes in the query, the token header's value)
        let per_token = |m: &Minted| {
            let mut path = self.path.clone();
            let mut auth = None;
            match (&m.token, &args.query_param) {
                (Some(t), Some(param)) => {
                    path.push(if path.contains('?') { '&' } else { '?' });
                    path.push_str(&format!("{param}={t}"));
                }
                (Some(t), None) => auth = Some(format!("{scheme}{t}")),
                (None, _) => {}
            }
            (path, auth)
        };
        let wire = if args.http2 {
            Wire::Http2(
                minted
                    .iter()
                    .map(|m| {
                        let (path, auth) = per_token(m);
                        self.h2_request(args, &path, auth.as_deref())
                    })
                    .collect::<Result<_, _>>()?,
            )
        } else {
            let mut fixed = String::new();
            if !args
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("host"))
            {
                fixed.push_str(&format!("Host: {}\r\n", self.host));
            }
            for (name, value) in &args.headers {
                fixed.push_str(&format!("{name}: {value}\r\n"));
            }
            fixed.push_str("User-Agent: portcullis-loadtest\r\n");
            Wire::Http1(
                minted
                    .iter()
                    .map(|m| {
                        let (path, auth) = per_token(m);
                        let auth = auth
                            .map(|a| format!("{}: {a}\r\n", args.header_name))
                            .unwrap_or_default();
                        format!("{} {path} HTTP/1.1\r\n{fixed}{auth}\r\n", args.method)
                            .into_bytes()
                            .into_boxed_slice()
                    })
                    .collect(),
            )
        };
        Ok(Requests {
            wire,
            kinds: minted.iter().map(|m| m.kind).collect(),
            head: args.method.eq_ignore_ascii_case("HEAD"),
        })
    }

    /// An HTTP/2 request head: a `Host` from `-H` becomes the `:authority`.
    fn h2_request(
        &self,
        args: &LoadtestArgs,
        path: &str,
        auth: Option<&str>,
    ) -> Result<H2Request, LoadtestError> {
        use http::header::{HeaderName, HeaderValue};
        let usage = |m: String| LoadtestError::Usage(m);
        let authority = args
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map_or(self.host.as_str(), |(_, v)| v.as_str());
        let uri: http::Uri = format!("{}://{authority}{path}", self.scheme)
            .parse()
            .map_err(|e| usage(format!("request URI: {e}")))?;
        let method = http::Method::from_bytes(args.method.as_bytes())
            .map_err(|e| usage(format!("--method {}: {e}", args.method)))?;
        let mut headers = http::HeaderMap::new();
        let mut add = |name: &str, value: &str| -> Result<(), LoadtestError> {
            let n = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| usage(format!("header {name}: {e}")))?;
            let v =
                HeaderValue::from_str(value).map_err(|e| usage(format!("header {name}: {e}")))?;
            headers.append(n, v);
            Ok(())
        };
        for (name, value) in &args.headers {
            if !name.eq_ignore_ascii_case("host") {
                add(name, value)?;
            }
        }
        add("user-agent", "portcullis-loadtest")?;
        if let Some(auth) = auth {
            add(&args.header_name, auth)?;
        }
        Ok(H2Request {
            method,
            uri,
            headers,
        })
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if (0.0..100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` must be at least 0% and below 100%"))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "`{s}` is not a positive number of requests per second"
        )),
    }
}

fn parse_claim(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not name=value"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((k.to_string(), value))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let bad = |t: &str| t.contains(['\r', '\n']) || t.is_empty();
    if bad(k.trim()) || v.contains(['\r', '\n']) {
        return Err(format!("`{s}` is not a valid header"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn flag_values_parse() {
        assert_eq!(parse_percent("10%").unwrap(), 10.0);
        assert_eq!(parse_percent("2.5").unwrap(), 2.5);
        assert!(parse_percent("100%").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_claim("tid=tenant-a").unwrap().1, "tenant-a");
        assert_eq!(parse_claim("n=3").unwrap().1, 3);
        assert_eq!(
            parse_header("Host: api.local").unwrap(),
            ("Host".into(), "api.local".into())
        );
        assert!(parse_header("X: a\r\nY: b").is_err());
        assert!(parse_rate("0").is_err());
    }
}
