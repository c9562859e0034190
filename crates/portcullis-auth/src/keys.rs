//! Verifying keys and immutable key snapshots.
//!
//! A key's algorithm family comes from the key material (JWK kty/crv, certificate, HMAC secret),
//! never from a token. Parsing is pure: callers (config check, the JWKS store) do the I/O and hand
//! bytes in. Parsing is tolerant of real identity providers: keys without `alg`, `x5c`/`x5t` present,
//! unknown `kty` skipped (reported in [`ParsedJwks::skipped`]), not an error.

use std::sync::Arc;

use crate::token::JoseAlg;

/// Family of a key; a token's alg must belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// RSA (RS*, PS*).
    Rsa,
    /// EC P-256 (ES256).
    EcP256,
    /// EC P-384 (ES384).
    EcP384,
    /// Ed25519 (EdDSA).
    Ed25519,
    /// HMAC secret (HS*).
    Hmac,
}

/// A key problem (bad JWK, unreadable PEM, bad n/e ...). Message is for `check` and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// One verifying key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// `kid` (JWK kid, inline key id, or certificate thumbprint when configured so).
    pub kid: Option<String>,
    /// base64url SHA-1 thumbprint of the certificate, when known.
    pub x5t: Option<String>,
    /// Algorithm the key declares (JWK `alg`); when set, only that alg is accepted.
    pub alg: Option<JoseAlg>,
    /// Family from the key material.
    pub family: KeyFamily,
    /// Fingerprint of the key material: identifies the key across snapshots (token-cache eviction).
    pub fingerprint: u64,
    /// Where it came from (source label for logs; never secret material).
    pub source: Arc<str>,
    pub(crate) decoding: jsonwebtoken::DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The outcome of parsing a JWKS document.
#[derive(Debug, Clone, Default)]
pub struct ParsedJwks {
    /// Usable keys.
    pub keys: Vec<VerifyingKey>,
    /// Keys skipped (unknown kty, encryption-only `use: enc`, unsupported curve...), for a log line.
    pub skipped: Vec<SkippedKey>,
}

/// A JWKS entry that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its kid, if any.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// Parse a JWKS document (`{"keys":[...]}`). Errors only when the document itself is unusable
/// (not JSON, no `keys` array); individual bad keys are skipped.
pub fn parse_jwks(bytes: &[u8], source: &str) -> Result<ParsedJwks, KeyError> {
    todo!("{} {}", bytes.len(), source)
}

impl VerifyingKey {
    /// From one JWK (serde_json value).
    pub fn from_jwk(jwk: &serde_json::Value, source: &str) -> Result<VerifyingKey, KeyError> {
        todo!("{jwk} {source}")
    }

    /// RSA from base64url `n` and `e` (APIM's `<key n=".." e=".."/>`).
    pub fn from_rsa_components(
        kid: Option<String>,
        n: &str,
        e: &str,
        source: &str,
    ) -> Result<VerifyingKey, KeyError> {
        todo!("{kid:?} {n} {e} {source}")
    }

    /// Keys from PEM text: X.509 certificates (RSA, EC P-256/P-384, Ed25519) and SPKI public keys.
    /// Each certificate's key gets `x5t` (and kid = x5t unless a kid is given).
    pub fn from_pem(
        kid: Option<String>,
        pem: &[u8],
        source: &str,
    ) -> Result<Vec<VerifyingKey>, KeyError> {
        todo!("{kid:?} {} {source}", pem.len())
    }

    /// HMAC secret (already base64-decoded bytes).
    pub fn from_hmac_secret(kid: Option<String>, secret: &[u8], source: &str) -> VerifyingKey {
        todo!("{kid:?} {} {source}", secret.len())
    }
}

/// An immutable set of keys for one policy, plus what the key store knows about them.
/// Cloning is cheap (Arcs); the request path never locks.
#[derive(Debug, Clone, Default)]
pub struct KeySnapshot {
    /// All keys of all the policy's sources.
    pub keys: Arc<[VerifyingKey]>,
    /// Issuers learned from discovery documents (used when the policy lists none).
    pub issuers: Arc<[String]>,
    /// True when at least one of the policy's sources has no usable keys (never fetched, or stale
    /// beyond max-stale). A token whose key is not found then fails with `KeysUnavailable`.
    pub unavailable: bool,
}

impl KeySnapshot {
    /// A snapshot over fixed keys (tests, static sources).
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        KeySnapshot {
            keys: keys.into(),
            issuers: Arc::from(Vec::new()),
            unavailable: false,
        }
    }

    /// Whether a key with this fingerprint is still present (token-cache hits check this).
    pub fn contains_fingerprint(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}
