//! Claims to header values for `forward-claims`: arrays joined with ",", numbers and booleans as
//! text, objects as compact JSON; values a header cannot carry (CR, LF, other controls) are rejected.
//!
//! Why this is strict: the backend trusts these headers to say who is calling, so a claim value
//! must never be able to smuggle a second header (CR/LF) or be cut short (NUL). Control characters
//! other than tab make the whole value rejected (the header is not set). Non-ASCII UTF-8 is passed
//! as its bytes (HTTP `obs-text`), which every backend framework reads back as UTF-8.

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::{Policy, VerifiedToken};

/// Look a claim up by verbatim name first, then as a dotted path (`realm_access.roles`).
pub fn lookup_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.as_object()?.get(part))
}

/// Render a claim as header text; `None` for null.
fn render(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(_) => Some(value.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(render_element)
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// An array element: scalars as in [`render`], nested arrays and objects as compact JSON.
fn render_element(value: &Value) -> Option<String> {
    match value {
        Value::Array(_) => Some(value.to_string()),
        other => render(other),
    }
}

/// Whether a byte may appear in a forwarded header value: no controls except tab, no DEL.
fn header_safe(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// One claim value as a header value; `None` when it cannot be carried safely.
pub fn claim_to_header_value(value: &Value) -> Option<HeaderValue> {
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
            let value = claim_to_header_value(lookup_claim(&token.claims, claim)?)?;
            Some((header.clone(), value))
        })
        .collect()
}
