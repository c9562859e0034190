//! The one place an [`AuthError`] becomes what the client sees: status, JSON body
//! `{"statusCode": N, "message": "..."}` and `WWW-Authenticate` (RFC 6750).

use crate::{AuthError, ClaimKind, Policy};

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
///
/// Status is `insufficient-scope-httpcode` for scope and role failures when the policy sets it,
/// else `failed-validation-httpcode` (also for `KeysUnavailable`). The message is the configured
/// `failed-validation-error-message`, else the per-cause default.
pub fn failure_response(err: &AuthError, policy: &Policy) -> FailureResponse {
    let insufficient_scope = match err {
        AuthError::TokenClaimValueNotAllowed {
            kind: ClaimKind::Scope | ClaimKind::Role,
            ..
        } => policy.insufficient_scope_httpcode,
        _ => None,
    };
    let status = insufficient_scope.unwrap_or(policy.failed_validation_httpcode);
    let www_authenticate = match (err, insufficient_scope) {
        (AuthError::TokenNotPresent, _) => "Bearer",
        (_, Some(_)) => "Bearer error=\"insufficient_scope\"",
        _ => "Bearer error=\"invalid_token\"",
    };
    let body = match &policy.failed_validation_error_message {
        Some(message) => json_error_body(status, message),
        None => json_error_body(status, &err.default_message()),
    };
    FailureResponse {
        status,
        body,
        www_authenticate: www_authenticate.to_owned(),
    }
}

/// The body's shape, fields in this order: `{"statusCode":401,"message":"..."}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'m> {
    status_code: u16,
    message: &'m str,
}

/// The same JSON shape for non-auth failures (502, 504, 404 no route...).
pub fn json_error_body(status: u16, message: &str) -> String {
    let body = ErrorBody {
        status_code: status,
        message,
    };
    // Serialising a u16 and a str cannot fail; the fallback keeps the shape regardless.
    serde_json::to_string(&body).unwrap_or_else(|_| format!("{{\"statusCode\":{status}}}"))
}
