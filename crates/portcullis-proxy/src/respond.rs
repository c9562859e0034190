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
use pingora_core::protocols::http::ServerSession;
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
    /// Written by a policy statement (`return-response`) rather than the gateway: the body is
    /// sent as written (no JSON content type), and the policy's outbound statements run on it.
    pub from_statement: bool,
    /// The reason phrase (`None`: the status's standard one).
    pub phrase: Option<String>,
}

impl Answer {
    /// A JSON answer: `{"statusCode": status, "message": message}`.
    pub fn json(status: u16, reason: &'static str, message: &str) -> Answer {
        Answer {
            status,
            reason,
            body: Some(json_error_body(status, message)),
            headers: Vec::new(),
            from_statement: false,
            phrase: None,
        }
    }

    /// An answer with no body (CORS preflight and unmatched cross-origin requests).
    pub fn empty(status: u16, reason: &'static str) -> Answer {
        Answer {
            status,
            reason,
            body: None,
            headers: Vec::new(),
            from_statement: false,
            phrase: None,
        }
    }

    /// Add a header.
    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }
}

/// APIM's message for a missing subscription key.
pub const SUBSCRIPTION_KEY_MISSING_MESSAGE: &str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
/// APIM's message for an invalid subscription key.
pub const SUBSCRIPTION_KEY_INVALID_MESSAGE: &str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";

/// 401, no subscription key on a route that requires one (APIM's body).
pub fn subscription_key_missing() -> Answer {
    Answer::json(
        401,
        crate::subscriptions::REASON_SUBSCRIPTION_KEY_MISSING,
        SUBSCRIPTION_KEY_MISSING_MESSAGE,
    )
}

/// 401, a subscription key that belongs to no active subscription whose scope covers the route
/// (APIM's body).
pub fn subscription_key_invalid() -> Answer {
    Answer::json(
        401,
        crate::subscriptions::REASON_SUBSCRIPTION_KEY_INVALID,
        SUBSCRIPTION_KEY_INVALID_MESSAGE,
    )
}

/// Reason of a `mock-response` answer.
pub const REASON_MOCK_RESPONSE: &str = "MockResponse";
/// Reason of a `rewrite-uri` whose result cannot be made canonical (400, never forwarded).
pub const REASON_INVALID_REWRITE: &str = "InvalidRewrite";
/// Message of that answer.
pub const INVALID_REWRITE_MESSAGE: &str =
    "Bad request. The rewritten request target is not a valid path.";

/// `mock-response`: the status, the content type, and the route's OpenAPI example (or nothing).
pub fn mock_response(status: u16, content_type: HeaderValue, example: Option<&str>) -> Answer {
    Answer {
        status,
        reason: REASON_MOCK_RESPONSE,
        body: Some(example.unwrap_or_default().to_owned()),
        headers: vec![(http::header::CONTENT_TYPE, content_type)],
        from_statement: true,
        phrase: None,
    }
}

/// `rewrite-uri` produced a target that cannot be made canonical (a `..` above the root from a
/// value, an encoded slash...): 400, never forwarded.
pub fn invalid_rewrite() -> Answer {
    Answer::json(400, REASON_INVALID_REWRITE, INVALID_REWRITE_MESSAGE)
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
        from_statement: false,
        phrase: None,
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
            .map(|r| (r.status(), r.reason(), r.message().to_owned())),
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
        (200, REASON_MOCK_RESPONSE, ""),
        (400, REASON_INVALID_REWRITE, INVALID_REWRITE_MESSAGE),
        (200, REASON_RETURN_RESPONSE, ""),
        (200, REASON_CORS_UNMATCHED, ""),
        (
            401,
            crate::subscriptions::REASON_SUBSCRIPTION_KEY_MISSING,
            SUBSCRIPTION_KEY_MISSING_MESSAGE,
        ),
        (
            401,
            crate::subscriptions::REASON_SUBSCRIPTION_KEY_INVALID,
            SUBSCRIPTION_KEY_INVALID_MESSAGE,
        ),
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

/// Reason (logs, metrics) of a `return-response` answer.
pub const REASON_RETURN_RESPONSE: &str = "ReturnResponse";

/// A `return-response` statement's answer: its status, reason phrase, headers and body (already
/// rendered for the request).
pub fn statement_answer(
    status: u16,
    phrase: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: String,
) -> Answer {
    Answer {
        status,
        reason: REASON_RETURN_RESPONSE,
        body: Some(body),
        headers,
        from_statement: true,
        phrase,
    }
}

/// Write `answer`, then `also` (headers every response of this request carries: CORS), and the
/// request id. Keep-alive is kept; `HEAD` gets the header only. A failure answer to a gRPC
/// request is written the way gRPC clients read failures ([`grpc_failure`]).
pub async fn send(
    session: &mut Session,
    answer: Answer,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    if answer.status >= 400 && !answer.from_statement && is_grpc(session.req_header()) {
        let header = Box::new(grpc_failure(answer, also, request_id)?);
        // Trailers-only means one HEADERS frame that ends the stream. pingora's session writer
        // drops the end flag for HTTP/2 and ends the stream later with an empty DATA frame, which
        // gRPC clients read as a response without a status ("Stream removed"): write to the h2
        // stream directly. (No downstream modules are configured whose filters this skips.)
        return match &mut *session.downstream_session {
            ServerSession::H2(h2) => h2.write_response_header(header, true),
            _ => session.write_response_header(header, true).await,
        };
    }
    let (header, body) = render(answer, also, request_id)?;
    write(session, header, body).await
}

/// The response header and body of `answer` (see [`send`]).
pub fn render(
    answer: Answer,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<(ResponseHeader, String)> {
    let mut header = ResponseHeader::build(answer.status, Some(4 + answer.headers.len()))?;
    let json = answer.body.is_some() && !answer.from_statement;
    let body = answer.body.unwrap_or_default();
    if json {
        header.insert_header(http::header::CONTENT_TYPE, APPLICATION_JSON)?;
    }
    if let Some(phrase) = &answer.phrase {
        header.set_reason_phrase(Some(phrase))?;
    }
    // 204 and 304 carry no Content-Length (RFC 9110 8.6); every other answer says its length.
    if !matches!(answer.status, 204 | 304) {
        header.set_content_length(body.len())?;
    }
    add_headers(&mut header, answer.headers, also, request_id)?;
    Ok((header, body))
}

/// Write a rendered answer (see [`render`]).
pub async fn write(session: &mut Session, header: ResponseHeader, body: String) -> Result<()> {
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

/// An answer's own headers, then `also`, then the request id.
fn add_headers(
    header: &mut ResponseHeader,
    own: Vec<(HeaderName, HeaderValue)>,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    for (name, value) in own {
        header.append_header(name, value)?;
    }
    for (name, value) in also {
        header.append_header(name.clone(), value.clone())?;
    }
    if let Some(id) = request_id {
        header.insert_header(crate::identity::wire::X_REQUEST_ID, id.clone())?;
    }
    Ok(())
}

/// A gRPC request (`application/grpc`, `application/grpc+proto`, `application/grpc-web`...).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for a failure answer's HTTP status. gRPC's HTTP mapping
/// (`doc/http-grpc-status-mapping.md`), except where the gateway knows more than a status code:
/// its 429 is a rate limit or quota (`RESOURCE_EXHAUSTED`, not the retry-inviting `UNAVAILABLE`),
/// its 400 a malformed request (`INVALID_ARGUMENT`), its 504 an upstream timeout
/// (`DEADLINE_EXCEEDED`).
pub fn grpc_status(http_status: u16) -> u16 {
    match http_status {
        400 => 3,             // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED: no route for this method
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        504 => 4,             // DEADLINE_EXCEEDED
        _ => 2,               // UNKNOWN
    }
}

/// `grpc-message`: the text percent-encoded as gRPC requires (bytes outside printable ASCII, and
/// `%`).
fn grpc_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A failure answer as a gRPC "trailers-only" response: HTTP 200, `content-type:
/// application/grpc`, `grpc-status` and `grpc-message` in the one header block that ends the
/// stream. A gRPC client cannot read a 401 with a JSON body (it reports "unexpected HTTP status"
/// or a missing status); this it reads as `UNAUTHENTICATED` with the gateway's message. The
/// answer's own headers (`WWW-Authenticate`, `Retry-After`) and `also` are kept.
fn grpc_failure(
    answer: Answer,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<ResponseHeader> {
    let message = answer
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut header = ResponseHeader::build(200, Some(5 + answer.headers.len()))?;
    header.insert_header(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    )?;
    header.insert_header("grpc-status", HeaderValue::from(grpc_status(answer.status)))?;
    header.insert_header("grpc-message", grpc_message(&message))?;
    // No body; over HTTP/1.1 this keeps the connection reusable (Envoy's gRPC local replies
    // carry it too).
    header.set_content_length(0)?;
    add_headers(&mut header, answer.headers, also, request_id)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// `portcullis explain` has a fix sentence for every answer the gateway can write: a reason
    /// added to the catalogue without one fails here.
    #[test]
    fn every_reason_of_the_catalogue_has_an_explanation() {
        for (_, reason, _) in catalogue() {
            let fix = portcullis_explain::fix_for(reason);
            assert!(
                fix.is_some_and(|f| f.len() > 20),
                "reason `{reason}` has no fix sentence in portcullis_explain::advice::fix_for"
            );
        }
        assert!(portcullis_explain::fix_for(crate::metrics::REASON_OK).is_some());
    }

    #[test]
    fn grpc_failures_carry_the_status_a_grpc_client_reads() {
        let answer = token_missing_like();
        let header = grpc_failure(answer, &[], None).unwrap();
        assert_eq!(header.status, 200);
        assert_eq!(header.headers["content-type"], "application/grpc");
        assert_eq!(header.headers["grpc-status"], "16");
        assert_eq!(
            header.headers["grpc-message"],
            "JWT 100%25 missing%0A%C3%A9"
        );
        assert_eq!(header.headers["www-authenticate"], "Bearer");
        assert_eq!(header.headers["content-length"], "0");
        let codes: Vec<u16> = [400, 401, 403, 404, 429, 431, 502, 503, 504, 500, 418]
            .into_iter()
            .map(grpc_status)
            .collect();
        assert_eq!(codes, [3, 16, 7, 12, 8, 8, 14, 14, 4, 2, 2]);
    }

    fn token_missing_like() -> Answer {
        let mut answer = Answer::json(401, "TokenMissing", "JWT 100% missing\né");
        answer.headers.push((
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        ));
        answer
    }

    #[test]
    fn grpc_requests_are_recognised_by_content_type() {
        let mut req = RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        assert!(!is_grpc(&req));
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web+proto",
        ] {
            req.insert_header("content-type", ct).unwrap();
            assert!(is_grpc(&req), "{ct}");
        }
        req.insert_header("content-type", "application/json")
            .unwrap();
        assert!(!is_grpc(&req));
    }

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
