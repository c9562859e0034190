//! The one place an [`AuthError`] becomes what the client sees: status, JSON body
//! `{"statusCode": N, "message": "..."}` and `WWW-Authenticate` (RFC 6750).

use crate::{AuthError, Policy};

/// A rendered failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// `WWW-Authenticate` value.
    pub www_authenticate: String,
}

/// Render the response for a failed evaluation under a policy.
pub fn failure_response(err: &AuthError, policy: &Policy) -> FailureResponse {
    todo!("{err:?} {policy:?}")
}

/// The same JSON shape for non-auth failures (502, 504, 404 no route...).
pub fn json_error_body(status: u16, message: &str) -> String {
    serde_json::json!({ "statusCode": status, "message": message }).to_string()
}
