//! HTTP fetching of discovery documents and JWKS, with every bound set in one place.
//!
//! Why it exists: an identity provider is an untrusted, sometimes broken network peer. Every fetch
//! has a connect timeout, a total timeout (covering the body), a redirect limit and a body size
//! limit enforced while the body streams in, so a hanging, huge or misbehaving endpoint costs a
//! bounded amount of time and memory and ends as a typed [`FetchError`], never a panic. With
//! tracing on (the gateway's `server.telemetry`), each fetch is a span.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{SpanKind, Tracer as _};
use opentelemetry::{Context, KeyValue};
use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL};
use serde::Deserialize;

/// Bounds for every HTTP request the key store makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// TCP + TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Whole request timeout, body included (default 10 s).
    pub total_timeout: Duration,
    /// Largest accepted response body in bytes (default 1 MiB); larger answers fail as `too_large`.
    pub max_body_bytes: usize,
    /// Redirects followed before failing (default 5).
    pub max_redirects: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// Why a fetch (discovery or JWKS) failed. The last good keys keep serving up to max-stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Could not connect (refused, DNS, TLS handshake).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Connect or total timeout elapsed.
    #[error("timed out")]
    Timeout,
    /// Too many redirects.
    #[error("too many redirects")]
    Redirects,
    /// A redirect from https to plain http (never followed: it would hand the key fetch to
    /// anyone on the path).
    #[error("redirect from https to http refused")]
    InsecureRedirect,
    /// Any other transport failure (connection reset mid-body, bad HTTP).
    #[error("request failed: {0}")]
    Transport(String),
    /// The server answered with a non-2xx status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body exceeded the size limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The document is not a usable discovery document or JWKS.
    #[error("invalid document: {0}")]
    Invalid(String),
    /// The JWKS parsed but held no usable key.
    #[error("JWKS has no usable keys")]
    NoKeys,
}

impl FetchError {
    /// Stable short code for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Timeout => "timeout",
            FetchError::Redirects => "redirects",
            FetchError::InsecureRedirect => "insecure_redirect",
            FetchError::Transport(_) => "transport",
            FetchError::Status(_) => "status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Invalid(_) => "invalid",
            FetchError::NoKeys => "no_keys",
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> FetchError {
        if err.is_timeout() {
            FetchError::Timeout
        } else if err.is_redirect() && caused_by::<InsecureRedirect>(err) {
            FetchError::InsecureRedirect
        } else if err.is_redirect() {
            FetchError::Redirects
        } else if err.is_connect() {
            FetchError::Connect(error_chain(err))
        } else {
            FetchError::Transport(error_chain(err))
        }
    }
}

/// The error the redirect policy stops an https -> http redirect with.
#[derive(Debug, thiserror::Error)]
#[error("redirect from https to http")]
struct InsecureRedirect;

/// Whether `E` is somewhere in the error's source chain.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Follow at most `max` redirects, and never one from https to http.
fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error(InsecureRedirect)
        } else if attempt.previous().len() > max {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// reqwest's Display is terse ("error sending request"); the cause is in the source chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A fetched body and what the server said about caching it.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) body: Vec<u8>,
    /// `Cache-Control: max-age` (`no-cache`/`no-store` read as zero), unclamped.
    pub(crate) max_age: Option<Duration>,
}

/// The HTTP client with the bounds of [`FetchOptions`] applied. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    max_body_bytes: usize,
    /// Traces each fetch once set (`server.telemetry`); shared by the stores a reload makes.
    tracer: Arc<OnceLock<BoxedTracer>>,
}

impl Fetcher {
    /// Build the client (rustls, platform roots).
    pub(crate) fn new(opts: &FetchOptions) -> Result<Fetcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.total_timeout)
            .redirect(redirect_policy(opts.max_redirects))
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher {
            client,
            max_body_bytes: opts.max_body_bytes,
            tracer: Arc::new(OnceLock::new()),
        })
    }

    /// Trace fetches from now on (the first tracer set stays).
    pub(crate) fn trace_with(&self, tracer: BoxedTracer) {
        let _ = self.tracer.set(tracer);
    }

    /// A CLIENT span for one fetch of `url` when tracing is on: a child of the request that waits
    /// for it (its context is current then), a new trace for a background refresh.
    pub(crate) fn span(
        &self,
        url: &str,
        kind: &'static str,
        trigger: &'static str,
    ) -> Option<BoxedSpan> {
        let tracer = self.tracer.get()?;
        let span = tracer
            .span_builder("key fetch")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("url.full", url.to_owned()),
                KeyValue::new("portcullis.key_source.kind", kind),
                KeyValue::new("portcullis.key_fetch.trigger", trigger),
            ])
            .start_with_context(tracer, &Context::current());
        Some(span)
    }

    /// GET `url`, stream the body up to the size limit.
    pub(crate) async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let mut resp = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(&e))?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let limit = self.max_body_bytes;
        let announced = resp.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(FetchError::TooLarge(limit));
        }
        let max_age = max_age(resp.headers());
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(&e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

/// `Cache-Control: max-age=N` as a duration; `no-cache` and `no-store` count as zero (the caller
/// clamps to its minimum). Absent or unparsable: `None` (the refresh interval applies).
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split(',') {
            let directive = directive.trim();
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                if let Ok(secs) = secs.trim_matches('"').parse::<u64>() {
                    found = Some(Duration::from_secs(secs));
                }
            }
        }
    }
    found
}

/// What the key store uses from an OpenID discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: Option<String>,
    jwks_uri: Option<String>,
}

/// Parse a discovery document: `issuer` and `jwks_uri` must be present and non-empty, and
/// `jwks_uri` an absolute http(s) URL. Anything else is a failed fetch.
pub(crate) fn parse_discovery(bytes: &[u8]) -> Result<Discovery, FetchError> {
    let doc: DiscoveryDoc = serde_json::from_slice(bytes)
        .map_err(|e| FetchError::Invalid(format!("discovery document is not JSON: {e}")))?;
    let issuer = doc
        .issuer
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| FetchError::Invalid("discovery document has no issuer".into()))?;
    let jwks_uri = doc
        .jwks_uri
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| FetchError::Invalid("discovery document has no jwks_uri".into()))?;
    match url::Url::parse(&jwks_uri) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            Ok(Discovery { issuer, jwks_uri })
        }
        _ => Err(FetchError::Invalid(format!(
            "discovery jwks_uri is not an absolute http(s) URL: {jwks_uri}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn max_age_parsing() {
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["public, max-age=3600"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["Max-Age=\"60\""])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(&headers(&["max-age=abc"])), None);
        assert_eq!(
            max_age(&headers(&["max-age=600", "no-store"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["no-cache"])), Some(Duration::ZERO));
    }

    #[test]
    fn discovery_requires_issuer_and_http_jwks_uri() {
        let ok = parse_discovery(br#"{"issuer":"https://i/","jwks_uri":"https://i/keys"}"#);
        assert_eq!(
            ok.unwrap(),
            Discovery {
                issuer: "https://i/".into(),
                jwks_uri: "https://i/keys".into()
            }
        );
        for bad in [
            &br#"{"jwks_uri":"https://i/keys"}"#[..],
            br#"{"issuer":"","jwks_uri":"https://i/keys"}"#,
            br#"{"issuer":"https://i/"}"#,
            br#"{"issuer":"https://i/","jwks_uri":"/keys"}"#,
            br#"{"issuer":"https://i/","jwks_uri":"file:///etc/passwd"}"#,
            b"<html>",
        ] {
            assert!(matches!(parse_discovery(bad), Err(FetchError::Invalid(_))));
        }
    }
}
