//! `portcullis explain`: what the gateway would do with one request, step by step, and why.
//!
//! It runs the gateway's own decision ([`Gateway::decide`]: request id, header limit, identity
//! stripping, canonical form, route choice, the policy's pipeline with `validate-jwt`) with a
//! [`Recorder`] in the request's context, on a gateway built from the config like `run` builds
//! one, with three differences that keep it a dry run: upstream host names are not resolved and
//! no backend is called; rate-limit counters start empty in process (a Redis store is never
//! touched: explain cannot know the running gateway's counts); keys are fetched once, through the
//! key store, for the chosen route's policy only. Time is the clock's unless `--at` says.
//! Subscription keys come from the same flags as `run`'s ([`crate::SubscriptionKeyArgs`]): without
//! them every key would be "invalid", which is not what the running gateway says.
//!
//! [`record_token`] is also what a live traced request (`server.trace`) records: one wording for
//! both.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderName;
use pingora_http::RequestHeader;
use portcullis_auth::{
    extract_token, verify_token_decrypting, AuthError, KeySnapshot, Policy, RequestParts,
    TokenSource, UnixTime, Verified,
};
use portcullis_config::{Model, RateLimitStore};
use portcullis_explain::{render_text, token_fix, Explanation, Facts, TokenInput, Verdict};

use crate::auth::unix_now;
use crate::pipeline::Exchange;
use crate::proxy::{Ctx, Gateway};
use crate::reload::Generation;
use crate::trace::{Recorder, Traces};
use crate::{KeyStore, SubscriptionKeys, EXIT_INVALID_CONFIG};

/// Exit code: the request would pass (forwarded, or answered by the policy on purpose).
pub const EXIT_PASS: u8 = 0;
/// Exit code: the request would be refused.
pub const EXIT_REFUSED: u8 = 1;

/// `portcullis explain` arguments.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Gateway config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Request method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// The request URL (`https://api.example.com/orders/1?x=y`), or a path (`/orders/1`).
    pub url: String,
    /// A request header, as curl writes it (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A token, put where the chosen route's policy reads it (`Authorization: Bearer` by default).
    /// Also read from PORTCULLIS_EXPLAIN_TOKEN, which keeps it out of the shell history.
    #[arg(long, env = "PORTCULLIS_EXPLAIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Judge the token at this time (Unix seconds, or RFC 3339 such as 2025-01-31T12:00:00Z)
    /// instead of now: reproducible output.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The client address `ip-filter` and `rate-limit-by-key` on the IP see (default: unknown).
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<IpAddr>,
    /// `--subscription-key NAME=KEY`, `--subscription-keys FILE`: the keys `run` would be given
    /// (a route with `subscription:` checks the request's key against them).
    #[command(flatten)]
    pub subscriptions: crate::SubscriptionKeyArgs,
    /// Print the explanation as JSON (the shape of the admin listener's `/trace/<id>`).
    #[arg(long)]
    pub json: bool,
}

/// One request to explain.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// Method.
    pub method: String,
    /// URL or path.
    pub url: String,
    /// `Name: value` headers.
    pub headers: Vec<String>,
    /// A token to place where the policy reads it.
    pub token: Option<String>,
    /// The time to judge at (`None`: now).
    pub at: Option<UnixTime>,
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// The subscription keys the gateway is given (`--subscription-key`).
    pub subscription_keys: SubscriptionKeys,
}

/// Parses `--at`: Unix seconds or RFC 3339.
pub fn parse_at(text: &str) -> Result<UnixTime, String> {
    if let Ok(secs) = text.trim().parse::<i64>() {
        return Ok(UnixTime(secs));
    }
    let t = humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("--at `{text}`: {e} (give Unix seconds or RFC 3339)"))?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("--at `{text}` is before 1970"))?
        .as_secs();
    Ok(UnixTime(i64::try_from(secs).unwrap_or(i64::MAX)))
}

impl Question {
    /// The request as the gateway would receive it: origin-form target, `Host` from the URL
    /// (unless a `-H Host:` says otherwise), the headers in order.
    fn request(&self) -> Result<RequestHeader, String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("URL `{}`: {e}", self.url))?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = RequestHeader::build(self.method.as_bytes(), target.as_bytes(), None)
            .map_err(|e| format!("method `{}` / target `{target}`: {e}", self.method))?;
        let given_host = self.headers.iter().any(|h| {
            h.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("host"))
        });
        if let (Some(authority), false) = (uri.authority(), given_host) {
            req.insert_header(http::header::HOST, authority.as_str())
                .map_err(|e| format!("host `{authority}`: {e}"))?;
        }
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("header `{h}`: write it as `Name: value`"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("header `{h}`: `{}` is not a header name", name.trim()))?;
            req.append_header(name, value.trim()).map_err(|_| {
                format!(
                    "header `{}`: the value is not valid",
                    h.split(':').next().unwrap_or("")
                )
            })?;
        }
        Ok(req)
    }
}

/// Puts `--token` where the policy reads tokens.
fn place_token(req: &mut RequestHeader, source: &TokenSource, token: &str) -> Result<(), String> {
    let bad = |_| "--token: not a valid header value".to_owned();
    match source {
        TokenSource::Header {
            name,
            require_scheme,
        } => {
            let value = match (name == http::header::AUTHORIZATION, require_scheme) {
                (true, Some(scheme)) => format!("{scheme} {token}"),
                (true, None) => format!("Bearer {token}"),
                (false, _) => token.to_owned(),
            };
            req.insert_header(name.clone(), value).map_err(bad)
        }
        TokenSource::Query { name } => {
            let path = req.uri.path().to_owned();
            let encoded: String =
                percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let uri = match req.uri.query() {
                Some(q) => format!("{path}?{q}&{name}={encoded}"),
                None => format!("{path}?{name}={encoded}"),
            };
            let uri = http::Uri::try_from(uri).map_err(|e| format!("--token: {e}"))?;
            req.set_uri(uri);
            Ok(())
        }
    }
}

/// The explanation of one request under `model`: the gateway's own decision, recorded.
pub async fn explain(model: &Model, q: &Question) -> Result<Explanation, String> {
    crate::install_crypto_provider();
    let metrics = crate::metrics::Metrics::new().map_err(|e| e.to_string())?;
    let keys = KeyStore::with_options(model, metrics.registry(), Default::default())
        .map_err(|e| e.to_string())?;
    // A key for a subscription the config does not name is refused, as `run` refuses it.
    q.subscription_keys.check(model)?;
    let generation = Arc::new(Generation::build_unresolved(
        model,
        keys.clone(),
        &metrics,
        &q.subscription_keys,
    ));
    let limits = crate::limits::Store::build(
        &RateLimitStore::InProcess,
        metrics.rate_limit_store_errors.clone(),
    )
    .map_err(|e| e.to_string())?;
    let gw = Gateway {
        current: Arc::new(ArcSwap::new(generation.clone())),
        metrics,
        inflight: Arc::new(AtomicUsize::new(0)),
        limits: Arc::new(limits),
        traces: Arc::new(Traces::new(1, Duration::ZERO)),
        // A dry run exports no spans.
        telemetry: None,
    };
    let mut req = q.request()?;
    // The route the request reaches (the real route choice, on a copy): its policy's keys are
    // fetched and the token goes where that policy reads it.
    let mut probe = req.clone();
    let policy = generation
        .routes
        .route_request(&mut probe, None)
        .ok()
        .flatten()
        .and_then(|i| generation.routes.get(i))
        .and_then(|r| r.policy);
    if let Some(id) = policy {
        keys.fetch_now(id).await;
    }
    if let Some(token) = &q.token {
        let default = TokenSource::Header {
            name: http::header::AUTHORIZATION,
            require_scheme: Some("Bearer".to_owned()),
        };
        let source = policy
            .and_then(|id| generation.policy(id))
            .map_or(&default, |p| &p.policy.token_source);
        place_token(&mut req, source, token)?;
    }
    let mut ctx = Ctx::new(generation, &gw.inflight);
    let at = q.at.unwrap_or_else(unix_now);
    ctx.trace = Some(Box::new(Recorder::new(&req, String::new(), Some(at))));
    let mut x = Exchange {
        req: &mut req,
        peer: q.client_ip,
    };
    let answer = gw
        .decide(&mut x, &mut ctx)
        .await
        .map_err(|e| e.to_string())?;
    let mut recorder = ctx.trace.take().ok_or("the recorder went missing")?;
    recorder.finish(answer.as_ref(), ctx.reason);
    // The id explain generated is noise (it changes on every run).
    recorder.explanation.request.request_id = None;
    Ok(recorder.explanation)
}

/// Runs `portcullis explain`; exit 0 when the request would pass, 1 when refused, 2 for a bad
/// config or arguments.
pub fn run(args: ExplainArgs) -> ExitCode {
    let model = match portcullis_config::load(&args.config) {
        Ok((model, _warnings)) => model,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let at = match args.at.as_deref().map(parse_at).transpose() {
        Ok(at) => at,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let subscription_keys = match args.subscriptions.keys() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let q = Question {
        method: args.method,
        url: args.url,
        headers: args.headers,
        token: args.token,
        at,
        client_ip: args.client_ip,
        subscription_keys,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let explanation = match runtime.block_on(explain(&model, &q)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&explanation).unwrap_or_default() + "\n"
    } else {
        render_text(&explanation)
    };
    print!("{text}");
    ExitCode::from(if explanation.outcome.passed {
        EXIT_PASS
    } else {
        EXIT_REFUSED
    })
}

/// The `validate-jwt` step of a recorded request: the token report (header, claims, signature,
/// rules) and the verdict with its fix sentence. The token is extracted again and, when it was
/// refused, its signature checked again against the same keys (the auth core's own functions,
/// pure), so the claims shown are trusted whenever the signature holds.
pub fn record_token(
    t: &mut Recorder,
    parts: &RequestParts<'_>,
    policy: &Policy,
    snapshot: &KeySnapshot,
    now: UnixTime,
    outcome: &Result<Verified, AuthError>,
) {
    if let TokenSource::Query { name } = &policy.token_source {
        t.hide_query_parameter(name);
    }
    let step = if policy.report_only {
        "validate-jwt (report-only)"
    } else {
        "validate-jwt"
    };
    let raw = match extract_token(parts, &policy.token_source) {
        Ok(raw) => raw,
        Err(err) => {
            let facts = Facts {
                policy,
                claims: None,
                kid: None,
                alg: None,
                kids: Vec::new(),
                now: now.secs(),
                headers: parts.headers,
                query: parts.query,
            };
            let fix = token_fix(&err, &facts);
            t.failed(
                step,
                err.reason(),
                format!("{}: {}", err.reason(), err),
                Some(fix),
            );
            return;
        }
    };
    let verified = match outcome {
        Ok(v) => Some(v.token().clone()),
        Err(_) => verify_token_decrypting(
            &raw,
            snapshot,
            &policy.decryption_keys,
            policy.require_signed_tokens,
        )
        .ok()
        .map(Arc::new),
    };
    let error = outcome.as_ref().err();
    let (report, fix) = portcullis_explain::report(&TokenInput {
        raw: &raw,
        policy,
        keys: snapshot,
        now,
        verified: verified.as_deref(),
        error,
        headers: parts.headers,
        query: parts.query,
    });
    match error {
        None => t.step(
            step,
            Verdict::Pass,
            format!(
                "token accepted: signature {}; every claim rule passed",
                report.signature
            ),
        ),
        Some(e) => t.failed(step, e.reason(), format!("{}: {e}", e.reason()), fix),
    }
    t.explanation.token = Some(report);
}
