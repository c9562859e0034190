//! Claims to header values for `forward-claims`: arrays joined with ",", numbers and booleans as
//! text, objects as compact JSON; values a header cannot carry (CR, LF, other controls) are rejected.
//!
//! Why this is strict: the backend trusts these headers to say who is calling, so a claim value
//! must never be able to smuggle a second header (CR/LF) or be cut short (NUL). Control characters
//! other than tab make the whole value rejected (the header is not set). Non-ASCII UTF-8 is passed
//! as its bytes (HTTP `obs-text`), which every backend framework reads back as UTF-8.

use http::{HeaderName, HeaderValue};

use crate::json::Claim;
use crate::{Policy, VerifiedToken};

/// Render a claim as header text; `None` for null.
fn render(value: Claim<'_>) -> Option<String> {
    if value.is_null() {
        return None;
    }
    if let Some(s) = value.as_str() {
        return Some(s.to_owned());
    }
    if let Some(n) = value.as_number() {
        return Some(n.to_string());
    }
    if let Some(b) = value.as_bool() {
        return Some(b.to_string());
    }
    if value.is_array() {
        let items: Vec<String> = value.elements().filter_map(render_element).collect();
        return Some(items.join(","));
    }
    // An object: compact JSON with sorted keys (serde_json's `Map` order).
    Some(value.to_value().to_string())
}

/// An array element: scalars as in [`render`], nested arrays and objects as compact JSON.
fn render_element(value: Claim<'_>) -> Option<String> {
    if value.is_array() {
        return Some(value.to_value().to_string());
    }
    render(value)
}

/// Whether a byte may appear in a forwarded header value: no controls except tab, no DEL.
fn header_safe(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// One claim value as a header value; `None` when it cannot be carried safely.
pub fn claim_to_header_value(value: Claim<'_>) -> Option<HeaderValue> {
    let text = render(value)?;
    if !text.bytes().all(header_safe) {
        return None;
    }
    HeaderValue::from_bytes(text.as_bytes()).ok()
}

/// The headers to set on the upstream request for a verified token (claims absent: header not set).
pub fn forward_headers(token: &VerifiedToken, policy: &Policy) -> Vec<(HeaderName, HeaderValue)> {
    policy
        .forward_claims
        .iter()
        .filter_map(|(header, claim)| {
            let value = claim_to_header_value(token.claims.lookup(claim)?)?;
            Some((header.clone(), value))
        })
        .collect()
}
