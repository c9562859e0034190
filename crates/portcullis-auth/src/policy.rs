//! A compiled validate-jwt policy: plain data the core evaluates. Built by `portcullis-config`
//! from gateway.yaml; defaults follow APIM (require-expiration-time and require-signed-tokens true,
//! clock-skew 0, match all).

use http::HeaderName;

/// Claim used for roles when a policy's `roles` rule names none.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// Where the token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header. `require_scheme` only applies to `Authorization` (as in APIM).
    Header {
        /// Header name (case-insensitive).
        name: HeaderName,
        /// Required scheme, such as `Bearer` (case-insensitive, exactly one space before the token).
        require_scheme: Option<String>,
    },
    /// A query parameter (percent-decoded).
    Query {
        /// Parameter name.
        name: String,
    },
}

/// `match` in required-claims, scopes and roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Match {
    /// Every listed value must be present (APIM default).
    #[default]
    All,
    /// At least one listed value must be present.
    Any,
}

/// One `required-claims` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    /// Claim name as it appears in the token (verbatim; URI names allowed).
    pub name: String,
    /// all | any.
    pub r#match: Match,
    /// Splits a string claim into several values (APIM `separator`).
    pub separator: Option<String>,
    /// Accepted values. Empty means only presence is required.
    pub values: Vec<String>,
}

/// The `scopes` rule: claim `scp`, else `scope`; space-separated string or array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopesRule {
    /// all | any.
    pub r#match: Match,
    /// Required scopes.
    pub values: Vec<String>,
}

/// The `roles` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesRule {
    /// all | any.
    pub r#match: Match,
    /// Required roles.
    pub values: Vec<String>,
    /// Claim name or dotted path (`realm_access.roles`); a claim whose full name exists verbatim wins.
    pub claim: String,
}

/// A compiled policy. Plain data; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Policy name (for logs and metrics).
    pub name: String,
    /// Where the token comes from.
    pub token_source: TokenSource,
    /// `exp` required (APIM default true).
    pub require_expiration_time: bool,
    /// Signature required (APIM default true). `false` accepts `alg: none` tokens: an escape hatch.
    pub require_signed_tokens: bool,
    /// `decryption-keys`: encrypted tokens (JWE) are decrypted with these; empty: refused.
    pub decryption_keys: crate::jwe::DecryptionKeys,
    /// Allowed clock difference in seconds, applied to exp and nbf.
    pub clock_skew: u64,
    /// Allowed issuers (exact match). Empty: the key snapshot's discovered issuers; if those are empty
    /// too, the issuer is not checked (`check` warns).
    pub issuers: Vec<String>,
    /// Allowed audiences; the token's aud (string or array) must contain one. Empty: not checked.
    pub audiences: Vec<String>,
    /// validate-azure-ad-token's client-application-ids, checked against `azp`, else `appid`.
    pub client_application_ids: Vec<String>,
    /// required-claims.
    pub required_claims: Vec<ClaimRule>,
    /// scopes rule.
    pub scopes: Option<ScopesRule>,
    /// roles rule.
    pub roles: Option<RolesRule>,
    /// header -> claim (name or dotted path), in file order.
    pub forward_claims: Vec<(HeaderName, String)>,
    /// Forward the Authorization header to the backend (default true).
    pub forward_token: bool,
    /// Status on failure (default 401).
    pub failed_validation_httpcode: u16,
    /// Replaces the per-cause message when set.
    pub failed_validation_error_message: Option<String>,
    /// Status for scope and role failures (for example 403); `None` uses failed_validation_httpcode.
    pub insufficient_scope_httpcode: Option<u16>,
    /// `mode: report-only`: evaluate and count, but forward.
    pub report_only: bool,
}

impl Policy {
    /// A policy with APIM's defaults reading `Authorization: Bearer <token>`; tests and builders
    /// start from here.
    pub fn new(name: impl Into<String>) -> Self {
        Policy {
            name: name.into(),
            token_source: TokenSource::Header {
                name: http::header::AUTHORIZATION,
                require_scheme: Some("Bearer".to_owned()),
            },
            require_expiration_time: true,
            require_signed_tokens: true,
            decryption_keys: crate::jwe::DecryptionKeys::default(),
            clock_skew: 0,
            issuers: Vec::new(),
            audiences: Vec::new(),
            client_application_ids: Vec::new(),
            required_claims: Vec::new(),
            scopes: None,
            roles: None,
            forward_claims: Vec::new(),
            forward_token: true,
            failed_validation_httpcode: 401,
            failed_validation_error_message: None,
            insufficient_scope_httpcode: None,
            report_only: false,
        }
    }
}
