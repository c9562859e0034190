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

impl TokenSource {
    /// Whether the request carries no token at all where this source reads one: no such header
    /// (not even an empty one), or no query parameter of that name (matched as
    /// [`crate::extract_token`] matches it, percent-decoded). Decides `token-optional`: a present
    /// but empty or malformed token is not absent, it is a bad token.
    pub fn absent(&self, req: &crate::RequestParts<'_>) -> bool {
        match self {
            TokenSource::Header { name, .. } => !req.headers.contains_key(name),
            TokenSource::Query { name } => req
                .query
                .is_none_or(|q| crate::query_without_param(q, name).is_none()),
        }
    }
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

/// One alternative of `any-of` (Envoy's `requires_any`): its own issuers, audiences, tenants and
/// claim rules, checked together. A token passes the policy's token check when it satisfies one
/// group entirely, with a key of that group (see [`crate::VerifyingKey::groups`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    /// Allowed issuers (exact match, or a `{tenantid}` template). Empty: the issuers of the
    /// group's discovery documents.
    pub issuers: Vec<String>,
    /// Allowed audiences. Empty: not checked.
    pub audiences: Vec<String>,
    /// Allowed tenants (lower-case GUIDs) for the token's `tid`. Empty: any.
    pub tenants: Vec<String>,
    /// required-claims.
    pub required_claims: Vec<ClaimRule>,
    /// Which of the policy's key sources (indexes into the config model's list) are this group's:
    /// the key store tags their keys with the group. The auth core does not read it.
    pub key_sources: std::ops::Range<usize>,
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
    /// `try-all-signing-keys`: a token `kid` that names no key tries every key (APIM's
    /// decision); default false (the kid selects). See [`crate::KeySnapshot::kid_rule`].
    pub try_all_signing_keys: bool,
    /// `decryption-keys`: encrypted tokens (JWE) are decrypted with these; empty: refused.
    pub decryption_keys: crate::jwe::DecryptionKeys,
    /// Allowed clock difference in seconds, applied to exp and nbf.
    pub clock_skew: u64,
    /// Allowed issuers: exact match, or a template holding `{tenantid}`, which matches when the
    /// token's `tid` (a lower-case GUID) put in its place gives `iss` exactly (see
    /// [`crate::issuer_matches`]). Empty: the key snapshot's discovered issuers; if those are
    /// empty too, the issuer is not checked (`check` warns).
    pub issuers: Vec<String>,
    /// `tenants`: when not empty, the token's `tid` must be one of these lower-case GUIDs (else
    /// `TokenIssuerNotAllowed`). Restricts multi-tenant (`{tenantid}`) issuers to known tenants.
    pub tenants: Vec<String>,
    /// Allowed audiences; the token's aud (string or array) must contain one. Empty: not checked.
    pub audiences: Vec<String>,
    /// validate-azure-ad-token's client-application-ids, checked against `azp`, else `appid`.
    pub client_application_ids: Vec<String>,
    /// required-claims.
    pub required_claims: Vec<ClaimRule>,
    /// `any-of`: requirement groups. Empty: the single group above (`issuers`, `tenants`,
    /// `audiences`, `client_application_ids`, `required_claims`). Not empty: those are empty and
    /// a token must satisfy one of these entirely.
    pub any_of: Vec<Requirements>,
    /// `token-optional` (Envoy's `allow_missing`): a request that carries no token at all (no
    /// token header, or no token query parameter) passes without an identity; a token that is
    /// present is checked as always. Absence: [`TokenSource::absent`].
    pub token_optional: bool,
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
            try_all_signing_keys: false,
            decryption_keys: crate::jwe::DecryptionKeys::default(),
            clock_skew: 0,
            issuers: Vec::new(),
            tenants: Vec::new(),
            audiences: Vec::new(),
            client_application_ids: Vec::new(),
            required_claims: Vec::new(),
            any_of: Vec::new(),
            token_optional: false,
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
