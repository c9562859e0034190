//! Writing the gateway's own answers (auth failures, no route, upstream errors) to the client.
//!
//! Why not pingora's `respond_error_with_body`: it turns keep-alive off, so every 401 would cost the
//! client a new TCP (and TLS) connection. Here the header and the body are written directly, with a
//! Content-Length, and the connection stays reusable.
//!
//! The request-header size limit lives here too, because its only effect is an answer: pingora
//! itself reads up to 1 MiB of request header (and at most 256 header lines) and refuses more with a
//! bare 400 and a closed connection. Between [`MAX_REQUEST_HEADER_BYTES`] and that bound the gateway
//! answers a proper 431 in the usual JSON shape, before routing or token parsing. The limit sits well
//! above the token limit (`portcullis_auth::MAX_TOKEN_BYTES`, 32 KiB), so a too-large token alone
//! is the token-invalid 401, and both sit near Envoy's 60 KiB default (docs/limits.md).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use portcullis_auth::response::json_error_body;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Largest request header section accepted: the sum over header lines of name, value and the 4
/// bytes of `": "` and CRLF. Larger requests are answered 431.
pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Reason (logs, metrics) of the 431 answer.
pub const REASON_HEADERS_TOO_LARGE: &str = "RequestHeaderFieldsTooLarge";
/// Message of the 431 answer.
pub const HEADERS_TOO_LARGE_MESSAGE: &str = "Request header fields too large.";

/// Whether the request's header section is over [`MAX_REQUEST_HEADER_BYTES`].
pub fn headers_too_large(req: &RequestHeader) -> bool {
    let mut total = 0usize;
    for (name, value) in &req.headers {
        total += name.as_str().len() + value.len() + 4;
        if total > MAX_REQUEST_HEADER_BYTES {
            return true;
        }
    }
    false
}

/// Message of the 404 answer.
pub const NO_ROUTE_MESSAGE: &str = "No route matches the request.";
/// Reason (logs, metrics) of a CORS preflight the gateway answered.
pub const REASON_CORS_PREFLIGHT: &str = "CorsPreflight";
/// Reason of a cross-origin request `terminate-unmatched-request` ended (empty 200).
pub const REASON_CORS_UNMATCHED: &str = "CorsOriginNotAllowed";

/// Every answer the gateway writes itself, whatever step produced it: status, body (APIM's JSON
/// shape, or none for a preflight), extra headers (WWW-Authenticate, Retry-After...) and the
/// metric reason. [`send`] is the one renderer; `docs/errors.md` lists them all (a test checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Stable reason (logs, metrics).
    pub reason: &'static str,
    /// `{"statusCode":N,"message":"..."}`, or `None` for an empty body.
    pub body: Option<String>,
    /// Headers of this answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Answer {
    /// A JSON answer: `{"statusCode": status, "message": message}`.
    pub fn json(status: u16, reason: &'static str, message: &str) -> Answer {
        Answer {
            status,
            reason,
            body: Some(json_error_body(status, message)),
            headers: Vec::new(),
        }
    }

    /// An answer with no body (CORS preflight and unmatched cross-origin requests).
    pub fn empty(status: u16, reason: &'static str) -> Answer {
        Answer {
            status,
            reason,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Add a header.
    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// Reason of an `ip-filter` refusal.
pub const REASON_CALLER_IP_NOT_ALLOWED: &str = "CallerIpNotAllowed";
/// Message of an `ip-filter` refusal (APIM's status text; APIM does not document its body).
pub const CALLER_IP_FORBIDDEN_MESSAGE: &str = "Forbidden";
/// Reason of a `check-header` refusal: the header is absent.
pub const REASON_HEADER_NOT_FOUND: &str = "HeaderNotFound";
/// Reason of a `check-header` refusal: no listed value.
pub const REASON_HEADER_VALUE_NOT_ALLOWED: &str = "HeaderValueNotAllowed";

/// `ip-filter` refused the caller's address: 403.
pub fn caller_ip_forbidden() -> Answer {
    Answer::json(
        403,
        REASON_CALLER_IP_NOT_ALLOWED,
        CALLER_IP_FORBIDDEN_MESSAGE,
    )
}

/// `check-header` failed: the configured status and message.
pub fn header_check_failed(
    check: &portcullis_config::CheckHeader,
    why: portcullis_config::HeaderCheck,
) -> Answer {
    let reason = match why {
        portcullis_config::HeaderCheck::NotFound => REASON_HEADER_NOT_FOUND,
        _ => REASON_HEADER_VALUE_NOT_ALLOWED,
    };
    Answer::json(
        check.failed_check_httpcode,
        reason,
        &check.failed_check_error_message,
    )
}

/// Reason of a `rate-limit` / `rate-limit-by-key` refusal (APIM's `RateLimitExceeded`).
pub const REASON_RATE_LIMITED: &str = "RateLimitExceeded";
/// Reason of a `quota-by-key` refusal.
pub const REASON_QUOTA_EXCEEDED: &str = "QuotaExceeded";

/// APIM's rate-limit message (`secs` is a number, or `<n>` in the catalogue).
fn rate_limit_message(secs: impl std::fmt::Display) -> String {
    format!("Rate limit is exceeded. Try again in {secs} seconds.")
}

/// 429 for a rate limit, APIM's message, `Retry-After` (or the statement's header name).
pub fn rate_limited(retry_after_secs: u64, header: HeaderName) -> Answer {
    Answer::json(
        429,
        REASON_RATE_LIMITED,
        &rate_limit_message(retry_after_secs),
    )
    .with(header, HeaderValue::from(retry_after_secs))
}

/// The token check failed: the policy's status and message (`failure_response`, the auth core's
/// one mapping), with `WWW-Authenticate`.
pub fn token_rejected(
    err: &portcullis_auth::AuthError,
    policy: &portcullis_auth::Policy,
) -> Answer {
    let rendered = portcullis_auth::failure_response(err, policy);
    let answer = Answer {
        status: rendered.status,
        reason: err.reason(),
        body: Some(rendered.body),
        headers: Vec::new(),
    };
    match HeaderValue::from_str(&rendered.www_authenticate) {
        Ok(v) => answer.with(http::header::WWW_AUTHENTICATE, v),
        Err(_) => answer,
    }
}

/// Reason of a call refused because the rate-limit store could not count it
/// (`rate-limit-store-failure: closed`).
pub const REASON_RATE_LIMIT_STORE_UNAVAILABLE: &str = "RateLimitStoreUnavailable";
/// Message of that answer.
pub const RATE_LIMIT_STORE_UNAVAILABLE_MESSAGE: &str =
    "Rate limit store is unavailable. Try again later.";

/// 503 for a call the rate-limit store could not count under `rate-limit-store-failure: closed`,
/// with `Retry-After: 1`.
pub fn rate_limit_store_unavailable() -> Answer {
    Answer::json(
        503,
        REASON_RATE_LIMIT_STORE_UNAVAILABLE,
        RATE_LIMIT_STORE_UNAVAILABLE_MESSAGE,
    )
    .with(http::header::RETRY_AFTER, HeaderValue::from(1u32))
}

/// What a quota ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// `calls`.
    Calls,
    /// `bandwidth`.
    Bandwidth,
}

/// APIM's quota message (`clock` is `hh:mm:ss`, or `<hh:mm:ss>` in the catalogue).
fn quota_message(quota: Quota, clock: &str) -> String {
    let what = match quota {
        Quota::Calls => "call volume",
        Quota::Bandwidth => "bandwidth",
    };
    format!("Out of {what} quota. Quota will be replenished in {clock}.")
}

/// 403 for a quota, APIM's message (`hh:mm:ss` until the period renews).
pub fn quota_exceeded(quota: Quota, renews_in_ms: u64) -> Answer {
    let secs = renews_in_ms.div_ceil(1000);
    let clock = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    Answer::json(403, REASON_QUOTA_EXCEEDED, &quota_message(quota, &clock))
}

/// The message of a proxy failure's status.
pub fn proxy_failure_message(status: u16) -> &'static str {
    match status {
        502 => "Bad gateway. The upstream could not be reached.",
        504 => "Gateway timeout. The upstream did not answer in time.",
        400 => "Bad request.",
        _ => "The gateway could not process the request.",
    }
}

/// Every answer the gateway writes, as (status, reason, message) with `<...>` for the parts that
/// vary: what `docs/errors.md` must list (checked by a test). Token failures show their default
/// status and message.
pub fn catalogue() -> Vec<(u16, &'static str, String)> {
    use portcullis_auth::{AuthError, ClaimKind};
    let mut out: Vec<(u16, &'static str, String)> = Vec::new();
    let auth = [
        AuthError::TokenNotPresent,
        AuthError::TokenExpired,
        AuthError::TokenNotYetValid,
        AuthError::TokenSignatureInvalid,
        AuthError::TokenSignatureKeyNotFound { kid: None },
        AuthError::TokenIssuerNotAllowed,
        AuthError::TokenAudienceNotAllowed,
        AuthError::TokenClaimNotFound {
            claims: vec!["<c1>".to_owned(), "<c2>".to_owned()],
        },
        AuthError::TokenClaimValueNotAllowed {
            claim: "<name>".to_owned(),
            value: "<value>".to_owned(),
            kind: ClaimKind::Claim,
        },
        AuthError::JwtInvalid { detail: "" },
        AuthError::TokenDecryptionFailed { detail: "" },
        AuthError::KeysUnavailable,
    ];
    out.extend(auth.iter().map(|e| (401, e.reason(), e.default_message())));
    // check-header: the configured status and message (listed, like the token answers, under 401).
    out.extend(
        [REASON_HEADER_NOT_FOUND, REASON_HEADER_VALUE_NOT_ALLOWED]
            .iter()
            .map(|r| (401, *r, String::new())),
    );
    out.extend(
        portcullis_route::Refusal::ALL
            .iter()
            .map(|r| (400, r.reason(), r.message().to_owned())),
    );
    let fixed = [
        (404, crate::metrics::REASON_NO_ROUTE, NO_ROUTE_MESSAGE),
        (431, REASON_HEADERS_TOO_LARGE, HEADERS_TOO_LARGE_MESSAGE),
        (
            503,
            REASON_RATE_LIMIT_STORE_UNAVAILABLE,
            RATE_LIMIT_STORE_UNAVAILABLE_MESSAGE,
        ),
        (
            403,
            REASON_CALLER_IP_NOT_ALLOWED,
            CALLER_IP_FORBIDDEN_MESSAGE,
        ),
        (200, REASON_CORS_PREFLIGHT, ""),
        (200, REASON_CORS_UNMATCHED, ""),
    ];
    out.extend(fixed.iter().map(|(s, r, m)| (*s, *r, (*m).to_owned())));
    let proxy_failures = [
        (502, crate::metrics::REASON_UPSTREAM_UNAVAILABLE),
        (504, crate::metrics::REASON_UPSTREAM_TIMEOUT),
        (400, crate::metrics::REASON_PROXY_ERROR),
        (500, crate::metrics::REASON_PROXY_ERROR),
    ];
    out.extend(
        proxy_failures
            .iter()
            .map(|&(s, r)| (s, r, proxy_failure_message(s).to_owned())),
    );
    out.push((429, REASON_RATE_LIMITED, rate_limit_message("<n>")));
    for quota in [Quota::Calls, Quota::Bandwidth] {
        out.push((
            403,
            REASON_QUOTA_EXCEEDED,
            quota_message(quota, "<hh:mm:ss>"),
        ));
    }
    out
}

/// Write `answer`, then `also` (headers every response of this request carries: CORS), and the
/// request id. Keep-alive is kept; `HEAD` gets the header only.
pub async fn send(
    session: &mut Session,
    answer: Answer,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(4 + answer.headers.len()))?;
    let json = answer.body.is_some();
    let body = answer.body.unwrap_or_default();
    if json {
        header.insert_header(http::header::CONTENT_TYPE, APPLICATION_JSON)?;
    }
    header.set_content_length(body.len())?;
    for (name, value) in answer.headers {
        header.append_header(name, value)?;
    }
    for (name, value) in also {
        header.append_header(name.clone(), value.clone())?;
    }
    if let Some(id) = request_id {
        header.insert_header(crate::identity::X_REQUEST_ID, id.clone())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// `docs/errors.md` lists every answer the renderer can write: for each, a table row with its
    /// reason and its message (and its status, for the gateway's own answers).
    #[test]
    fn errors_doc_lists_every_answer() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
                .unwrap();
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with('|')).collect();
        let mut missing = Vec::new();
        for (status, reason, message) in catalogue() {
            let listed = rows.iter().any(|row| {
                let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
                let has_reason = row.contains(&format!("`{reason}`"));
                let has_message = message.is_empty() || row.contains(&format!("`{message}`"));
                let has_status = status == 401
                    || cells
                        .iter()
                        .any(|c| c.trim_start_matches('|').trim() == status.to_string());
                has_reason && has_message && has_status
            });
            if !listed {
                missing.push(format!("{status} {reason} `{message}`"));
            }
        }
        assert!(
            missing.is_empty(),
            "docs/errors.md does not list:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn quota_clock() {
        let message = |ms| quota_exceeded(Quota::Calls, ms).body.unwrap();
        assert!(message(5_000).contains("in 00:00:05."));
        assert!(message(3_661_000).contains("in 01:01:01."));
        assert!(message(1).contains("in 00:00:01."));
    }
}
