//! Claims to header values for `forward-claims`: arrays joined with ",", numbers and booleans as
//! text, objects as compact JSON; values a header cannot carry (CR, LF, other controls) are rejected.

use http::{HeaderName, HeaderValue};

use crate::{Policy, VerifiedToken};

/// Look a claim up by verbatim name first, then as a dotted path (`realm_access.roles`).
pub fn lookup_claim<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    todo!("{claims:?} {name}")
}

/// One claim value as a header value; `None` when it cannot be carried safely.
pub fn claim_to_header_value(value: &serde_json::Value) -> Option<HeaderValue> {
    todo!("{value}")
}

/// The headers to set on the upstream request for a verified token (claims absent: header not set).
pub fn forward_headers(token: &VerifiedToken, policy: &Policy) -> Vec<(HeaderName, HeaderValue)> {
    todo!("{token:?} {policy:?}")
}
