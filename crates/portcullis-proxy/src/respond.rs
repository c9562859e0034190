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
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

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

/// Write a complete JSON response. `www_authenticate` is set when given; `request_id` is echoed.
pub async fn write_json(
    session: &mut Session,
    status: u16,
    body: String,
    www_authenticate: Option<&str>,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, APPLICATION_JSON)?;
    header.set_content_length(body.len())?;
    if let Some(value) = www_authenticate {
        header.insert_header(http::header::WWW_AUTHENTICATE, value)?;
    }
    if let Some(id) = request_id {
        header.insert_header(crate::identity::X_REQUEST_ID, id.clone())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
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
