//! Typed failures. `reason()` is the stable code used by logs, metrics and the response; the client
//! sees only the message (the configured one, or the per-cause default that follows APIM's wording).

/// What kind of claim rule rejected a value (decides 401 vs insufficient-scope-httpcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A required-claims rule (or client-application-ids).
    Claim,
    /// The scopes rule.
    Scope,
    /// The roles rule.
    Role,
}

/// Why a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where the policy looks for one.
    #[error("JWT not present.")]
    TokenNotPresent,
    /// exp (plus clock skew) is in the past. (A missing exp while required is `JwtInvalid`.)
    #[error("Lifetime validation failed. The token is expired. Access denied.")]
    TokenExpired,
    /// nbf (minus clock skew) is in the future.
    #[error("Lifetime validation failed. The token is not yet valid. Access denied.")]
    TokenNotYetValid,
    /// No key verified the signature.
    #[error("Signature validation failed. Access denied.")]
    TokenSignatureInvalid,
    /// The token's kid names no key in the snapshot.
    #[error("Signature validation failed. Unable to match key. Access denied.")]
    TokenSignatureKeyNotFound {
        /// The kid the token named (never the token itself).
        kid: Option<String>,
    },
    /// iss not allowed.
    #[error("Issuer validation failed. Access denied.")]
    TokenIssuerNotAllowed,
    /// aud not allowed.
    #[error("Audience validation failed. Access denied.")]
    TokenAudienceNotAllowed,
    /// Required claims absent.
    #[error("JWT token is missing the following claims: {}. Access denied.", .claims.join(", "))]
    TokenClaimNotFound {
        /// Names of the missing claims.
        claims: Vec<String>,
    },
    /// A claim (or scope, or role) value not allowed.
    #[error("Claim {claim} value of {value} is not allowed. Access denied.")]
    TokenClaimValueNotAllowed {
        /// Claim name.
        claim: String,
        /// The offending value as text (joined with "," for arrays).
        value: String,
        /// Which rule.
        kind: ClaimKind,
    },
    /// Anything else wrong with the token: malformed, bad alg, crit, oversized...
    #[error("Invalid JWT.")]
    JwtInvalid {
        /// Short internal detail for logs (never contains the token).
        detail: &'static str,
    },
    /// An encrypted token (JWE) could not be decrypted: malformed, an algorithm no decryption key
    /// accepts, `zip`, `crit`, or any cryptographic failure (wrong key, tag, wrap, padding). One
    /// reason and one message for all of them, so the answer is no decryption oracle.
    #[error("Token decryption failed. Access denied.")]
    TokenDecryptionFailed {
        /// Short internal detail for logs (never key material or token bytes).
        detail: &'static str,
    },
    /// The issuer's keys could not be obtained (never fetched, or stale beyond max-stale).
    #[error("Signing keys are unavailable. Access denied.")]
    KeysUnavailable,
}

impl AuthError {
    /// Stable reason code for logs, metrics and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::TokenNotPresent => "TokenNotPresent",
            AuthError::TokenExpired => "TokenExpired",
            AuthError::TokenNotYetValid => "TokenNotYetValid",
            AuthError::TokenSignatureInvalid => "TokenSignatureInvalid",
            AuthError::TokenSignatureKeyNotFound { .. } => "TokenSignatureKeyNotFound",
            AuthError::TokenIssuerNotAllowed => "TokenIssuerNotAllowed",
            AuthError::TokenAudienceNotAllowed => "TokenAudienceNotAllowed",
            AuthError::TokenClaimNotFound { .. } => "TokenClaimNotFound",
            AuthError::TokenClaimValueNotAllowed { .. } => "TokenClaimValueNotAllowed",
            AuthError::JwtInvalid { .. } => "JwtInvalid",
            AuthError::TokenDecryptionFailed { .. } => "TokenDecryptionFailed",
            AuthError::KeysUnavailable => "KeysUnavailable",
        }
    }

    /// The per-cause default message (APIM wording).
    pub fn default_message(&self) -> String {
        self.to_string()
    }
}
