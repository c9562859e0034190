//! Token extraction and verification: parse the header and the claims once, pick keys by kid (or by
//! family when there is no kid), check the signature with the key's algorithm.
//!
//! The JOSE header is parsed here, not by jsonwebtoken, because .NET-style STSs name the algorithm by
//! its XML-DSig URI and jsonwebtoken's closed `Algorithm` enum cannot parse such headers. The
//! signature itself is checked with `jsonwebtoken::crypto::verify` (aws_lc_rs backend).

use std::borrow::Cow;

use crate::{AuthError, KeySnapshot, TokenSource};

/// A JOSE signature algorithm Portcullis accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoseAlg {
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
}

impl JoseAlg {
    /// Parse a header `alg`: JOSE names, and the XML-DSig URIs of .NET STSs
    /// (`http://www.w3.org/2001/04/xmldsig-more#rsa-sha256` ...). `none` and unknown names: `None`.
    pub fn from_header_name(name: &str) -> Option<JoseAlg> {
        todo!("{name}")
    }
}

/// The parts of a request the core looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// Raw query string (without `?`), if any.
    pub query: Option<&'a str>,
}

/// A token whose signature has been checked (or which was accepted unsigned because the policy has
/// `require-signed-tokens: false`). Claims are parsed once; time and claim rules are not yet applied.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The payload.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Algorithm used (`None`: unsigned token accepted by require-signed-tokens: false).
    pub alg: Option<JoseAlg>,
    /// Header kid.
    pub kid: Option<String>,
    /// Fingerprint of the key that verified it.
    pub key_fingerprint: Option<u64>,
    /// exp as a NumericDate (validated to be a JSON number at verify time).
    pub exp: Option<f64>,
    /// nbf as a NumericDate.
    pub nbf: Option<f64>,
}

/// Extract the token per the policy's source. Several Authorization headers, a wrong scheme, more than
/// one space, or anything after the token: rejected.
pub fn extract_token<'a>(
    req: &RequestParts<'a>,
    source: &TokenSource,
) -> Result<Cow<'a, str>, AuthError> {
    todo!("{req:?} {source:?}")
}

/// Parse and verify a compact JWS against the snapshot.
pub fn verify_token(
    token: &str,
    keys: &KeySnapshot,
    require_signed_tokens: bool,
) -> Result<VerifiedToken, AuthError> {
    todo!("{} {keys:?} {require_signed_tokens}", token.len())
}
