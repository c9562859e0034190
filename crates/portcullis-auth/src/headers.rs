//! Claims to header values for `forward-claims`: arrays joined with ",", numbers and booleans as
//! text, objects as compact JSON; a value that a header cannot carry unambiguously is refused (the
//! header is not set, and the caller logs and counts why).
//!
//! Why this is strict: the backend trusts these headers to say who is calling, so a claim value
//! must never be able to smuggle a second header (CR/LF), be cut short (NUL), or read as something
//! else once the backend has parsed it:
//! - control characters other than tab, and DEL, anywhere: [`Unforwardable::ControlCharacter`];
//! - an array element containing the join separator `,` (`["a,b"]` would read as `["a", "b"]`),
//!   nested arrays and objects included: [`Unforwardable::SeparatorInElement`];
//! - leading or trailing spaces or tabs, of the value or of an array element: HTTP parsers trim
//!   them (RFC 9110 5.5) and list parsers trim around each `,`, so `" admin"` would arrive as
//!   `admin`: [`Unforwardable::SurroundingWhitespace`].
//!
//! Non-ASCII UTF-8 is passed as its bytes (HTTP `obs-text`), which every backend framework reads
//! back as UTF-8; no byte of a multi-byte sequence is a control character, so it cannot end a line.

use http::{HeaderName, HeaderValue};

use crate::json::Claim;
use crate::{Policy, Verified};

/// Why a claim present in the token is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unforwardable {
    /// CR, LF, NUL, another control character (tab excepted) or DEL.
    ControlCharacter,
    /// An array element containing `,`, the separator elements are joined with.
    SeparatorInElement,
    /// Leading or trailing space or tab (of the value or an array element), which parsers drop.
    SurroundingWhitespace,
}

impl Unforwardable {
    /// Stable code for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Unforwardable::ControlCharacter => "ControlCharacter",
            Unforwardable::SeparatorInElement => "SeparatorInElement",
            Unforwardable::SurroundingWhitespace => "SurroundingWhitespace",
        }
    }
}

/// Render a claim as header text; `Ok(None)` for null.
fn render(value: Claim<'_>) -> Result<Option<String>, Unforwardable> {
    if value.is_null() {
        return Ok(None);
    }
    let text = if let Some(s) = value.as_str() {
        s.to_owned()
    } else if let Some(n) = value.as_number() {
        n.to_string()
    } else if let Some(b) = value.as_bool() {
        b.to_string()
    } else if value.is_array() {
        let mut items = Vec::new();
        for element in value.elements() {
            if let Some(text) = render_element(element)? {
                if text.contains(',') {
                    return Err(Unforwardable::SeparatorInElement);
                }
                trimmed(&text)?;
                items.push(text);
            }
        }
        items.join(",")
    } else {
        // An object: compact JSON with sorted keys (serde_json's `Map` order).
        value.to_value().to_string()
    };
    Ok(Some(text))
}

/// An array element: scalars as in [`render`], nested arrays and objects as compact JSON.
fn render_element(value: Claim<'_>) -> Result<Option<String>, Unforwardable> {
    if value.is_array() {
        return Ok(Some(value.to_value().to_string()));
    }
    render(value)
}

/// `Err` when the text starts or ends with a space or tab.
fn trimmed(text: &str) -> Result<(), Unforwardable> {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if edge(text.as_bytes().first()) || edge(text.as_bytes().last()) {
        return Err(Unforwardable::SurroundingWhitespace);
    }
    Ok(())
}

/// Whether a byte may appear in a forwarded header value: no controls except tab, no DEL.
fn header_safe(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// One claim value as a header value: `Ok(None)` for null (treated as absent), `Err` when it
/// cannot be carried unambiguously.
pub fn claim_header_value(value: Claim<'_>) -> Result<Option<HeaderValue>, Unforwardable> {
    let Some(text) = render(value)? else {
        return Ok(None);
    };
    if !text.bytes().all(header_safe) {
        return Err(Unforwardable::ControlCharacter);
    }
    trimmed(&text)?;
    // The rendered text's buffer becomes the value: checked as `from_bytes` checks, not copied.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .map(Some)
        .map_err(|_| Unforwardable::ControlCharacter)
}

/// One claim value as a header value; `None` when null or refused (see [`claim_header_value`]).
pub fn claim_to_header_value(value: Claim<'_>) -> Option<HeaderValue> {
    claim_header_value(value).ok().flatten()
}

/// Every `forward-claims` header whose claim the token holds (not null): the value to set, or
/// why it is refused (the header is then not set).
pub fn claim_headers<'a>(
    verified: &'a Verified,
    policy: &'a Policy,
) -> impl Iterator<Item = (&'a HeaderName, Result<HeaderValue, Unforwardable>)> + 'a {
    let claims = &verified.token().claims;
    policy
        .forward_claims
        .iter()
        .filter_map(move |(header, claim)| {
            let value = claim_header_value(claims.lookup(claim)?).transpose()?;
            Some((header, value))
        })
}

/// The headers to set on the upstream request for a verified token (claims absent or refused:
/// header not set).
pub fn forward_headers(verified: &Verified, policy: &Policy) -> Vec<(HeaderName, HeaderValue)> {
    claim_headers(verified, policy)
        .filter_map(|(header, value)| Some((header.clone(), value.ok()?)))
        .collect()
}
