//! The failure response: status, exact JSON body, WWW-Authenticate, for every reason code.

use portcullis_auth::{failure_response, AuthError, ClaimKind};

use crate::support::*;

fn all_errors() -> Vec<(AuthError, &'static str)> {
    vec![
        (AuthError::TokenNotPresent, "JWT not present."),
        (
            AuthError::TokenExpired,
            "Lifetime validation failed. The token is expired. Access denied.",
        ),
        (
            AuthError::TokenNotYetValid,
            "Lifetime validation failed. The token is not yet valid. Access denied.",
        ),
        (
            AuthError::TokenSignatureInvalid,
            "Signature validation failed. Access denied.",
        ),
        (
            AuthError::TokenSignatureKeyNotFound {
                kid: Some("k".into()),
            },
            "Signature validation failed. Unable to match key. Access denied.",
        ),
        (
            AuthError::TokenIssuerNotAllowed,
            "Issuer validation failed. Access denied.",
        ),
        (
            AuthError::TokenAudienceNotAllowed,
            "Audience validation failed. Access denied.",
        ),
        (
            AuthError::TokenClaimNotFound {
                claims: vec!["a".into(), "b".into()],
            },
            "JWT token is missing the following claims: a, b. Access denied.",
        ),
        (
            AuthError::TokenClaimValueNotAllowed {
                claim: "tid".into(),
                value: "x".into(),
                kind: ClaimKind::Claim,
            },
            "Claim tid value of x is not allowed. Access denied.",
        ),
        (AuthError::JwtInvalid { detail: "d" }, "Invalid JWT."),
        (
            AuthError::KeysUnavailable,
            "Signing keys are unavailable. Access denied.",
        ),
    ]
}

#[test]
fn every_reason_has_its_default_message_and_a_401() {
    for (err, message) in all_errors() {
        let r = failure_response(&err, &policy());
        assert_eq!(r.status, 401, "{}", err.reason());
        let expected = format!(r#"{{"statusCode":401,"message":"{message}"}}"#);
        assert_eq!(r.body, expected);
        let www = if err == AuthError::TokenNotPresent {
            "Bearer"
        } else {
            "Bearer error=\"invalid_token\""
        };
        assert_eq!(r.www_authenticate, www, "{}", err.reason());
    }
}

#[test]
fn configured_status_and_message_replace_the_defaults() {
    let mut p = policy();
    p.failed_validation_httpcode = 403;
    p.failed_validation_error_message =
        Some("Unauthorized. Access token is missing or invalid.".into());
    let r = failure_response(&AuthError::TokenExpired, &p);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        r#"{"statusCode":403,"message":"Unauthorized. Access token is missing or invalid."}"#
    );
    let quoted = {
        p.failed_validation_error_message = Some("say \"no\"".into());
        failure_response(&AuthError::TokenExpired, &p).body
    };
    assert_eq!(quoted, r#"{"statusCode":403,"message":"say \"no\""}"#);
}

#[test]
fn scope_and_role_failures_use_insufficient_scope_httpcode() {
    let mut p = policy();
    p.insufficient_scope_httpcode = Some(403);
    for kind in [ClaimKind::Scope, ClaimKind::Role] {
        let err = AuthError::TokenClaimValueNotAllowed {
            claim: "scp".into(),
            value: "a".into(),
            kind,
        };
        let r = failure_response(&err, &p);
        assert_eq!(r.status, 403);
        assert_eq!(r.www_authenticate, "Bearer error=\"insufficient_scope\"");
        assert_eq!(failure_response(&err, &policy()).status, 401);
    }
    let claim = AuthError::TokenClaimValueNotAllowed {
        claim: "tid".into(),
        value: "a".into(),
        kind: ClaimKind::Claim,
    };
    assert_eq!(failure_response(&claim, &p).status, 401);
    assert_eq!(
        failure_response(&AuthError::KeysUnavailable, &p).status,
        401
    );
}
