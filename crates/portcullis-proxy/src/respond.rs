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

/// Write `answer`, then `also` (headers every response of this request carries: CORS), and the
/// request id. Keep-alive is kept; `HEAD` gets the header only.
pub async fn send(
    session: &mut Session,
    answer: &Answer,
    also: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(4 + answer.headers.len()))?;
    let body = answer.body.as_deref().unwrap_or("");
    if answer.body.is_some() {
        header.insert_header(http::header::CONTENT_TYPE, APPLICATION_JSON)?;
    }
    header.set_content_length(body.len())?;
    for (name, value) in answer.headers.iter().chain(also) {
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
            .write_response_body(Some(Bytes::copy_from_slice(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}
