//! Writing the gateway's own answers (auth failures, no route, upstream errors) to the client.
//!
//! Why not pingora's `respond_error_with_body`: it turns keep-alive off, so every 401 would cost the
//! client a new TCP (and TLS) connection. Here the header and the body are written directly, with a
//! Content-Length, and the connection stays reusable.

use bytes::Bytes;
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

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
