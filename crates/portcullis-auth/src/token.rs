//! Token extraction and verification: parse the header and the claims once, pick keys by kid (or by
//! family when there is no kid), check the signature with the key's algorithm.
//!
//! The JOSE header is parsed here, not by jsonwebtoken, because .NET-style STSs name the algorithm by
//! its XML-DSig URI and jsonwebtoken's closed `Algorithm` enum cannot parse such headers. The
//! signature itself is checked by aws-lc-rs with the key parsed once ([`crate::sig`]), HMAC by
//! `jsonwebtoken::crypto::verify` (aws_lc_rs backend).
//!
//! Parsing is deliberately strict: exactly three segments, unpadded canonical base64url, JSON objects
//! without duplicate keys, no `crit`/`b64`, numeric `exp`/`nbf`/`iat`. Anything two parsers could
//! read differently is `JwtInvalid`.

use std::borrow::Cow;
use std::fmt;

use http::header::AUTHORIZATION;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::b64::NotDecoded;
use crate::json::{key_tag, same_key, Claims, StrictIgnored};
use crate::keys::{KeyFamily, VerifyingKey};
use crate::{AuthError, KeySnapshot, TokenSource};

/// Longest token accepted, in bytes (header value or decoded query parameter). Real access tokens
/// are 1-4 KiB; Entra tokens with many groups stay well under this.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// Decoded JOSE headers up to this size are parsed from a stack buffer.
const HEADER_STACK_BYTES: usize = 512;

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

/// XML-DSig algorithm URIs used by .NET-style STSs, and their JOSE equivalents.
const XMLDSIG_ALGS: [(&str, JoseAlg); 8] = [
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        JoseAlg::RS256,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        JoseAlg::RS384,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        JoseAlg::RS512,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        JoseAlg::ES256,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        JoseAlg::ES384,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
        JoseAlg::HS256,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384",
        JoseAlg::HS384,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512",
        JoseAlg::HS512,
    ),
];

impl JoseAlg {
    /// Parse a header `alg`: JOSE names, and the XML-DSig URIs of .NET STSs
    /// (`http://www.w3.org/2001/04/xmldsig-more#rsa-sha256` ...). `none` and unknown names: `None`.
    /// Names are case-sensitive (RFC 7515): `rs256` and `None` are unknown.
    pub fn from_header_name(name: &str) -> Option<JoseAlg> {
        let alg = match name {
            "RS256" => JoseAlg::RS256,
            "RS384" => JoseAlg::RS384,
            "RS512" => JoseAlg::RS512,
            "PS256" => JoseAlg::PS256,
            "PS384" => JoseAlg::PS384,
            "PS512" => JoseAlg::PS512,
            "ES256" => JoseAlg::ES256,
            "ES384" => JoseAlg::ES384,
            "EdDSA" => JoseAlg::EdDSA,
            "HS256" => JoseAlg::HS256,
            "HS384" => JoseAlg::HS384,
            "HS512" => JoseAlg::HS512,
            _ => {
                return XMLDSIG_ALGS
                    .iter()
                    .find(|(uri, _)| *uri == name)
                    .map(|(_, a)| *a)
            }
        };
        Some(alg)
    }

    /// The JOSE name (`RS256` ...).
    pub fn name(self) -> &'static str {
        match self {
            JoseAlg::RS256 => "RS256",
            JoseAlg::RS384 => "RS384",
            JoseAlg::RS512 => "RS512",
            JoseAlg::PS256 => "PS256",
            JoseAlg::PS384 => "PS384",
            JoseAlg::PS512 => "PS512",
            JoseAlg::ES256 => "ES256",
            JoseAlg::ES384 => "ES384",
            JoseAlg::EdDSA => "EdDSA",
            JoseAlg::HS256 => "HS256",
            JoseAlg::HS384 => "HS384",
            JoseAlg::HS512 => "HS512",
        }
    }

    /// Whether a key of this family may verify this algorithm.
    pub fn fits(self, family: KeyFamily) -> bool {
        use JoseAlg::*;
        match family {
            KeyFamily::Rsa => matches!(self, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::EcP256 => self == ES256,
            KeyFamily::EcP384 => self == ES384,
            KeyFamily::Ed25519 => self == EdDSA,
            KeyFamily::Hmac => matches!(self, HS256 | HS384 | HS512),
        }
    }

    /// The jsonwebtoken algorithm used for the signature check.
    pub(crate) fn jwt_alg(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JoseAlg::RS256 => A::RS256,
            JoseAlg::RS384 => A::RS384,
            JoseAlg::RS512 => A::RS512,
            JoseAlg::PS256 => A::PS256,
            JoseAlg::PS384 => A::PS384,
            JoseAlg::PS512 => A::PS512,
            JoseAlg::ES256 => A::ES256,
            JoseAlg::ES384 => A::ES384,
            JoseAlg::EdDSA => A::EdDSA,
            JoseAlg::HS256 => A::HS256,
            JoseAlg::HS384 => A::HS384,
            JoseAlg::HS512 => A::HS512,
        }
    }

    /// Fixed raw signature length (ECDSA `r || s`), when the algorithm has one. DER-encoded ECDSA
    /// signatures, or ones with a byte added, are refused before any crypto runs.
    fn fixed_signature_len(self) -> Option<usize> {
        match self {
            JoseAlg::ES256 => Some(64),
            JoseAlg::ES384 => Some(96),
            JoseAlg::EdDSA => Some(64),
            _ => None,
        }
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
    /// The payload, parsed once (strict JSON object, read in place).
    pub claims: Claims,
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
    /// iat as a NumericDate.
    pub iat: Option<f64>,
    /// Which policy and key snapshot this token last passed the claim rules under (the token
    /// cache's hits skip re-reading the claims then; see [`crate::claims::RulesTag`]). Empty when
    /// made, and a clone starts empty.
    pub rules_passed: crate::claims::RulesMemo,
}

/// A compact JWS whose signature has been checked, payload not yet interpreted. [`verify_token`]
/// builds on it; exposed so signature-level test vectors (whose payloads are not claims) can be run.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    /// Algorithm used (`None`: unsigned token accepted by require-signed-tokens: false).
    pub alg: Option<JoseAlg>,
    /// Header kid.
    pub kid: Option<String>,
    /// Fingerprint of the key that verified it.
    pub key_fingerprint: Option<u64>,
}

fn invalid(detail: &'static str) -> AuthError {
    AuthError::JwtInvalid { detail }
}

/// Extract the token per the policy's source. Several Authorization headers, a wrong scheme, more than
/// one space, or anything after the token: rejected.
pub fn extract_token<'a>(
    req: &RequestParts<'a>,
    source: &TokenSource,
) -> Result<Cow<'a, str>, AuthError> {
    match source {
        TokenSource::Header {
            name,
            require_scheme,
        } => {
            let mut values = req.headers.get_all(name).iter();
            let Some(value) = values.next() else {
                return Err(AuthError::TokenNotPresent);
            };
            if values.next().is_some() {
                return Err(invalid("several token headers"));
            }
            let scheme = (*name == AUTHORIZATION).then_some(require_scheme.as_deref());
            if let Some(token) = usual_token(value.as_bytes(), scheme) {
                return Ok(Cow::Borrowed(token));
            }
            token_from_header(value, scheme).map(Cow::Borrowed)
        }
        TokenSource::Query { name } => token_from_query(req.query, name),
    }
}

/// The usual header in one pass over its token: `<scheme> <token>` with the scheme as
/// [`token_from_authorization`] takes it, or a bare token where that is allowed, the token being
/// 1 to [`MAX_TOKEN_BYTES`] bytes of visible ASCII other than a space. `scheme`: `None` for a
/// header other than `Authorization` (the whole value is the token); `Some(None)`: `Authorization`
/// without a required scheme. What this accepts, [`token_from_header`] accepts with the same
/// token (a test compares the two over every short value of an adversarial alphabet); `None`
/// leaves the value to it, for its exact verdict.
/// Why: a cache hit reads the token three more times otherwise (the visible-ASCII check, the
/// space search, the scheme split): under callgrind extraction took about 1,215 instructions of
/// the 3,100 a hit added to a plain request, and takes 509 this way (`benches/instr-per-request`).
fn usual_token<'v>(value: &'v [u8], scheme: Option<Option<&str>>) -> Option<&'v str> {
    let token = match scheme {
        None => value,
        Some(required) => {
            let want = required.unwrap_or("Bearer").as_bytes();
            match value.split_at_checked(want.len()) {
                Some((s, [b' ', token @ ..]))
                    if s.eq_ignore_ascii_case(want) && all_in(s, 0x21, 0x7e) =>
                {
                    token
                }
                // A bare token: only without a required scheme, and not the scheme alone.
                _ if required.is_none() && !value.eq_ignore_ascii_case(want) => value,
                _ => return None,
            }
        }
    };
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !all_in(token, 0x21, 0x7e) {
        return None;
    }
    // Visible ASCII is UTF-8: this cannot fail, and it is the one other read of the token.
    std::str::from_utf8(token).ok()
}

/// Every byte in `lo..=hi`. Each byte minus `lo` (wrapping, so a byte under `lo` becomes large)
/// is at most `hi - lo` exactly when it is in range, so the largest of them decides: a max
/// reduction, which the loop vectoriser turns into one subtract and one max per 16 bytes (about
/// 0.25 instructions a byte). Written as blocks whose lanes were kept by hand, the same test
/// was left to the SLP vectoriser and came out at 1.5 instructions a byte in the gateway's build
/// (2,600 with an OR of range tests): `benches/instr-per-request` shows which.
fn all_in(bytes: &[u8], lo: u8, hi: u8) -> bool {
    bytes.iter().fold(0u8, |m, &b| m.max(b.wrapping_sub(lo))) <= hi.wrapping_sub(lo)
}

/// Any header value, with the exact verdict: not visible ASCII (tabs allowed, as
/// `HeaderValue::to_str`), a wrong scheme, whitespace in the token, too large, or absent.
/// `scheme` as in [`usual_token`].
fn token_from_header<'v>(
    value: &'v http::HeaderValue,
    scheme: Option<Option<&str>>,
) -> Result<&'v str, AuthError> {
    let value = value
        .to_str()
        .map_err(|_| invalid("token header is not visible ASCII"))?;
    let token = match scheme {
        Some(required) => token_from_authorization(value, required)?,
        None => value,
    };
    check_extracted(token)
}

/// The token of an `Authorization` value: `<scheme> <token>` with exactly one space; without a
/// required scheme, `Bearer <token>` or a bare token.
fn token_from_authorization<'v>(
    value: &'v str,
    require_scheme: Option<&str>,
) -> Result<&'v str, AuthError> {
    if value.is_empty() {
        return Err(AuthError::TokenNotPresent);
    }
    let scheme = require_scheme.unwrap_or("Bearer");
    if value.eq_ignore_ascii_case(scheme) {
        return Err(AuthError::TokenNotPresent);
    }
    match value.split_once(' ') {
        Some((s, token)) if s.eq_ignore_ascii_case(scheme) => {
            if token.is_empty() {
                Err(AuthError::TokenNotPresent)
            } else {
                Ok(token)
            }
        }
        None if require_scheme.is_none() => Ok(value),
        _ if require_scheme.is_some() => Err(invalid("wrong authorization scheme")),
        _ => Err(invalid("malformed authorization header")),
    }
}

/// The percent-decoded value of the first query parameter `name`; several: rejected.
fn token_from_query<'a>(query: Option<&'a str>, name: &str) -> Result<Cow<'a, str>, AuthError> {
    let mut found: Option<&'a str> = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Ok(name) {
            if found.is_some() {
                return Err(invalid("several token parameters"));
            }
            found = Some(v);
        }
    }
    let raw = found.ok_or(AuthError::TokenNotPresent)?;
    let token = percent_decode(raw).map_err(|()| invalid("token parameter is not UTF-8"))?;
    check_extracted(&token)?;
    Ok(token)
}

/// The query string without every `name` parameter (matched as [`extract_token`] matches it: the
/// percent-decoded key), the other parameters kept byte for byte and in order; `None` when no
/// parameter is named `name` (nothing to change). Used by `forward-token: false`.
pub fn query_without_param(query: &str, name: &str) -> Option<String> {
    let is_token = |pair: &&str| {
        let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
        percent_decode(key).as_deref() == Ok(name)
    };
    if !query.split('&').any(|pair| is_token(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|pair| !is_token(pair)).collect();
    Some(kept.join("&"))
}

fn percent_decode(s: &str) -> Result<Cow<'_, str>, ()> {
    if !s.contains(['%', '+']) {
        return Ok(Cow::Borrowed(s));
    }
    let plus_as_space = s.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map_err(|_| ())?;
    Ok(Cow::Owned(decoded.into_owned()))
}

/// Length and whitespace checks on an extracted token.
fn check_extracted(token: &str) -> Result<&str, AuthError> {
    if token.is_empty() {
        return Err(AuthError::TokenNotPresent);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too large"));
    }
    if has_ascii_whitespace(token.as_bytes()) {
        return Err(invalid("whitespace in token"));
    }
    Ok(token)
}

/// `u8::is_ascii_whitespace` over the token, in blocks without an early exit per byte (vectorised).
fn has_ascii_whitespace(bytes: &[u8]) -> bool {
    bytes.chunks(32).any(|chunk| {
        chunk
            .iter()
            .fold(false, |found, &b| found | b.is_ascii_whitespace())
    })
}

/// Parse and verify a compact JWS against the snapshot. An encrypted token (five segments) is
/// refused as invalid: see [`verify_token_decrypting`] for a policy with `decryption-keys`.
pub fn verify_token(
    token: &str,
    keys: &KeySnapshot,
    require_signed_tokens: bool,
) -> Result<VerifiedToken, AuthError> {
    verify_token_decrypting(token, keys, &[], require_signed_tokens)
}

/// [`verify_token`], and a compact JWE is first decrypted with `decryption` (see [`crate::jwe`]):
/// its plaintext must then be a nested compact JWS, verified exactly like a plain one (the same
/// key selection, the algorithm from the key). A plaintext that is a bare claims set is accepted
/// only when `require_signed_tokens` is false, and is then an unsigned token. A plain JWS is
/// accepted as before: decryption keys do not make encryption mandatory (as in APIM).
pub fn verify_token_decrypting(
    token: &str,
    keys: &KeySnapshot,
    decryption: &[crate::jwe::DecryptionKey],
    require_signed_tokens: bool,
) -> Result<VerifiedToken, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too large"));
    }
    if !crate::jwe::is_compact_jwe(token) {
        return verify_jws_token(token, keys, require_signed_tokens);
    }
    if decryption.is_empty() {
        return Err(invalid(
            "encrypted token (JWE) but the policy has no decryption-keys",
        ));
    }
    let decrypted = crate::jwe::decrypt(token, decryption)?;
    let inner = std::str::from_utf8(&decrypted.plaintext)
        .map_err(|_| invalid("decrypted payload is not text"))?;
    if inner.starts_with('{') && !decrypted.nested_jwt {
        if require_signed_tokens {
            return Err(invalid(
                "encrypted token carries no signed JWT (require-signed-tokens)",
            ));
        }
        return verified_claims(VerifiedJws {
            payload: inner.as_bytes().to_vec(),
            alg: None,
            kid: None,
            key_fingerprint: None,
        });
    }
    verify_jws_token(inner, keys, require_signed_tokens)
}

/// A compact JWS: an empty payload is refused before the signature is looked at.
fn verify_jws_token(
    token: &str,
    keys: &KeySnapshot,
    require_signed_tokens: bool,
) -> Result<VerifiedToken, AuthError> {
    let seg = split_compact(token)?;
    if seg.payload.is_empty() {
        return Err(invalid("empty payload"));
    }
    verified_claims(verify_segments(&seg, keys, require_signed_tokens)?)
}

/// The claims of a verified JWS: a strict JSON object with numeric `exp`/`nbf`/`iat`.
fn verified_claims(jws: VerifiedJws) -> Result<VerifiedToken, AuthError> {
    let text =
        String::from_utf8(jws.payload).map_err(|_| invalid("claims are not a JSON object"))?;
    let claims = Claims::parse(text).map_err(|_| invalid("claims are not a JSON object"))?;
    let exp = numeric_date(&claims, "exp")?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    Ok(VerifiedToken {
        claims,
        alg: jws.alg,
        kid: jws.kid,
        key_fingerprint: jws.key_fingerprint,
        exp,
        nbf,
        iat,
        rules_passed: crate::claims::RulesMemo::default(),
    })
}

/// A NumericDate claim: absent, or a JSON number (never a string, null or bool).
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, AuthError> {
    let Some(claim) = claims.get(name) else {
        return Ok(None);
    };
    match claim.as_number() {
        Some(n) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid("NumericDate out of range")),
        None => Err(invalid("NumericDate claim is not a number")),
    }
}

/// The three segments of a compact JWS.
struct Segments<'t> {
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
    /// `header.payload`, the signed bytes.
    signing_input: &'t str,
}

fn split_compact(token: &str) -> Result<Segments<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too large"));
    }
    // One pass over the token for its dots (memchr: SIMD), not one per segment.
    let bytes = token.as_bytes();
    let mut dots = memchr::memchr_iter(b'.', bytes);
    let (Some(first), Some(second)) = (dots.next(), dots.next()) else {
        return Err(invalid("not a compact JWS"));
    };
    if dots.next().is_some() {
        return Err(invalid("more than three segments (JWE or garbage)"));
    }
    // The dots are ASCII, so these are char boundaries.
    let (Some(header), Some(payload), Some(signature), Some(signing_input)) = (
        token.get(..first),
        token.get(first + 1..second),
        token.get(second + 1..),
        token.get(..second),
    ) else {
        return Err(invalid("not a compact JWS"));
    };
    if header.is_empty() {
        return Err(invalid("empty header"));
    }
    Ok(Segments {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// A header or payload segment, decoded (strict base64url, see [`crate::b64`]).
fn b64_decode(segment: &str, detail: &'static str) -> Result<Vec<u8>, AuthError> {
    crate::b64::decode(segment).ok_or(invalid(detail))
}

/// The signature segment is only checked here (`verify_with_keys` decodes it, or jsonwebtoken for
/// HMAC keys), with the same strictness as the other segments.
fn check_b64(segment: &str) -> Result<(), AuthError> {
    if crate::b64::is_valid(segment) {
        Ok(())
    } else {
        Err(invalid("signature is not canonical base64url"))
    }
}

/// The JOSE header fields we act on.
pub(crate) struct JoseHeader<'h> {
    pub(crate) alg: Cow<'h, str>,
    pub(crate) kid: Option<String>,
    /// JWE content encryption (`enc`).
    pub(crate) enc: Option<Cow<'h, str>>,
    /// Content type (`cty`).
    pub(crate) cty: Option<Cow<'h, str>>,
    /// A `zip` member is present (JWE compression: refused).
    pub(crate) zip: bool,
}

/// Largest decoded JOSE header accepted, in bytes. Real headers (`alg`, `kid`, `typ`, `x5t`, perhaps
/// an `x5c` chain) are under 1 KiB; anything larger is refused before it is decoded.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most members a JOSE header may have. Real headers have two to five; the bound keeps the
/// duplicate check (each name compared with the earlier ones, as integer tags) a fixed, small cost.
pub const MAX_HEADER_MEMBERS: usize = 64;

/// The longest base64url header segment that can decode to [`MAX_HEADER_BYTES`].
const MAX_HEADER_SEGMENT: usize = (MAX_HEADER_BYTES * 4).div_ceil(3);

/// A JWE's protected header, owned (for [`crate::jwe`]); the error is a log detail.
pub(crate) struct JweHeader {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) enc: Option<String>,
    pub(crate) cty: Option<String>,
    pub(crate) zip: bool,
}

/// Decode and parse a JWE's protected header segment with the JWS header's strictness (size bound,
/// strict base64url, no duplicate members, no `crit`).
pub(crate) fn parse_jwe_header(segment: &str) -> Result<JweHeader, &'static str> {
    if segment.len() > MAX_HEADER_SEGMENT {
        return Err("header too large");
    }
    let bytes = crate::b64::decode(segment).ok_or("header is not base64url")?;
    let header = parse_header(&bytes).map_err(|e| match e {
        AuthError::JwtInvalid { detail } => detail,
        _ => "header is not a valid JOSE header",
    })?;
    Ok(JweHeader {
        alg: header.alg.into_owned(),
        kid: header.kid,
        enc: header.enc.map(Cow::into_owned),
        cty: header.cty.map(Cow::into_owned),
        zip: header.zip,
    })
}

/// Parse the header JSON: an object with a string `alg`, optional string `kid`, no `crit` or `b64`,
/// no duplicate member names, at most [`MAX_HEADER_MEMBERS`] members. Header-carried keys (`jku`,
/// `x5u`, `jwk`, `x5c`) are ignored.
fn parse_header(bytes: &[u8]) -> Result<JoseHeader<'_>, AuthError> {
    let mut too_many = false;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let header = de
        .deserialize_map(HeaderVisitor {
            too_many: &mut too_many,
        })
        .map_err(|_| {
            invalid(if too_many {
                "header has too many members"
            } else {
                "header is not a valid JOSE header"
            })
        })?;
    de.end()
        .map_err(|_| invalid("trailing bytes after header"))?;
    Ok(header)
}

struct HeaderVisitor<'a> {
    /// Set when the header is refused for its member count (a distinct log detail).
    too_many: &'a mut bool,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = JoseHeader<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = SeenNames::new();
        let mut alg: Option<Cow<'de, str>> = None;
        let mut kid = None;
        let (mut enc, mut cty, mut zip) = (None, None, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if seen.len == MAX_HEADER_MEMBERS {
                *self.too_many = true;
                return Err(de::Error::custom("too many header members"));
            }
            let tag = key_tag(key.as_bytes());
            if seen.contains(tag, &key) {
                return Err(de::Error::custom("duplicate header member"));
            }
            match key.as_ref() {
                "alg" => alg = Some(map.next_value::<Cow<'de, str>>()?),
                "kid" => kid = Some(map.next_value::<String>()?),
                "enc" => enc = Some(map.next_value::<Cow<'de, str>>()?),
                "cty" => cty = Some(map.next_value::<Cow<'de, str>>()?),
                "zip" => {
                    zip = true;
                    map.next_value::<StrictIgnored>()?;
                }
                "crit" | "b64" => return Err(de::Error::custom("crit/b64 not supported")),
                // Parsed, not skipped: keeps the nesting limit and duplicate checks in force.
                _ => {
                    map.next_value::<StrictIgnored>()?;
                }
            }
            seen.push(tag, key);
        }
        let alg = alg.ok_or_else(|| de::Error::custom("missing alg"))?;
        Ok(JoseHeader {
            alg,
            kid,
            enc,
            cty,
            zip,
        })
    }
}

/// Header member names seen so far (duplicate check), as packed integer tags (see
/// [`crate::json`]): a new name is compared with at most [`MAX_HEADER_MEMBERS`] integers, and its
/// bytes only on an equal tag of a name of eight bytes or more. Names are kept (inline for the
/// usual header, so it costs no allocation) only for that byte comparison.
struct SeenNames<'de> {
    len: usize,
    tags: [u64; MAX_HEADER_MEMBERS],
    inline: [Option<Cow<'de, str>>; 8],
    spill: Vec<Cow<'de, str>>,
}

impl<'de> SeenNames<'de> {
    fn new() -> Self {
        SeenNames {
            len: 0,
            tags: [0; MAX_HEADER_MEMBERS],
            inline: Default::default(),
            spill: Vec::new(),
        }
    }

    fn contains(&self, tag: u64, name: &str) -> bool {
        let seen = self.tags.get(..self.len).unwrap_or_default();
        seen.iter().enumerate().any(|(i, &t)| {
            t == tag
                && self
                    .name(i)
                    .is_some_and(|n| same_key(t, n.as_bytes(), tag, name.as_bytes()))
        })
    }

    fn name(&self, i: usize) -> Option<&str> {
        match self.inline.get(i) {
            Some(slot) => slot.as_deref(),
            None => self.spill.get(i - self.inline.len()).map(|n| n.as_ref()),
        }
    }

    fn push(&mut self, tag: u64, name: Cow<'de, str>) {
        if let Some(slot) = self.tags.get_mut(self.len) {
            *slot = tag;
        }
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(name),
            None => self.spill.push(name),
        }
        self.len += 1;
    }
}

/// Parse a compact JWS and check its signature against the snapshot (the payload is only
/// base64url-decoded, not interpreted). `alg: none` is accepted only when `require_signed_tokens`
/// is false, and then only with an empty signature segment.
pub fn verify_signature(
    token: &str,
    keys: &KeySnapshot,
    require_signed_tokens: bool,
) -> Result<VerifiedJws, AuthError> {
    verify_segments(&split_compact(token)?, keys, require_signed_tokens)
}

fn verify_segments(
    seg: &Segments<'_>,
    keys: &KeySnapshot,
    require_signed_tokens: bool,
) -> Result<VerifiedJws, AuthError> {
    // Bounded before any decoding: a header of thousands of members costs nothing to refuse.
    if seg.header.len() > MAX_HEADER_SEGMENT {
        return Err(invalid("header too large"));
    }
    // Headers are small: decoded on the stack, a heap buffer only for an unusually long one.
    let mut stack = [0u8; HEADER_STACK_BYTES];
    let heap;
    let header_bytes: &[u8] = match crate::b64::decode_into(seg.header, &mut stack) {
        Ok(decoded) => decoded,
        Err(NotDecoded::TooLong) => {
            heap = b64_decode(seg.header, "header is not base64url")?;
            &heap
        }
        Err(NotDecoded::Invalid) => return Err(invalid("header is not base64url")),
    };
    let header = parse_header(header_bytes)?;
    let payload = b64_decode(seg.payload, "payload is not base64url")?;
    let kid = header.kid;
    if header.alg == "none" && !require_signed_tokens {
        if !seg.signature.is_empty() {
            return Err(invalid("unsigned token with a signature"));
        }
        return Ok(VerifiedJws {
            payload,
            alg: None,
            kid,
            key_fingerprint: None,
        });
    }
    let alg = JoseAlg::from_header_name(&header.alg).ok_or(invalid("unsupported alg"))?;
    if seg.signature.is_empty() {
        return Err(invalid("missing signature"));
    }
    check_b64(seg.signature)?;
    let key = verify_with_keys(seg, alg, kid.as_deref(), keys)?;
    Ok(VerifiedJws {
        payload,
        alg: Some(alg),
        kid,
        key_fingerprint: Some(key.fingerprint),
    })
}

/// Key selection and the signature check. A token `kid` selects keys with that kid plus keys
/// without any kid; without a `kid`, every key is a candidate (under `try-all-signing-keys`, a
/// `kid` that names no key also makes every key a candidate: [`KeySnapshot::kid_rule`]). Only
/// candidates whose family fits the algorithm (and whose declared `alg`, if any, is the token's)
/// are tried. When every candidate of an unknown `kid` failed the answer is "key not found", so
/// the unknown-kid refetch still runs for a rotated key.
fn verify_with_keys<'k>(
    seg: &Segments<'_>,
    alg: JoseAlg,
    kid: Option<&str>,
    keys: &'k KeySnapshot,
) -> Result<&'k VerifyingKey, AuthError> {
    let kid_matches = keys.kid_rule(kid);
    let usable = |k: &&VerifyingKey| {
        kid_matches(k) && alg.fits(k.family) && k.alg.is_none_or(|a| a == alg) && k.can_verify()
    };
    let mut candidates = keys.keys.iter().filter(usable).peekable();
    if candidates.peek().is_none() {
        return Err(no_candidate(kid, keys));
    }
    if let Some(len) = alg.fixed_signature_len() {
        if seg.signature.len() != base64::encoded_len(len, false).unwrap_or(0) {
            return Err(AuthError::TokenSignatureInvalid);
        }
    }
    let message = seg.signing_input.as_bytes();
    // Decoded once for every candidate, on the stack (the segment is known to be strict base64url:
    // `check_b64`); one too long for any key's signature is not decoded and verifies nothing.
    // HMAC keys verify through jsonwebtoken, which decodes it itself.
    let mut buf: [u8; crate::sig::MAX_SIGNATURE_BYTES];
    let decoded = if alg.fits(KeyFamily::Hmac) {
        None
    } else {
        buf = [0; crate::sig::MAX_SIGNATURE_BYTES];
        crate::b64::decode_into(seg.signature, &mut buf).ok()
    };
    candidates
        .find(|k| k.verifies(alg, message, seg.signature, decoded))
        .ok_or_else(|| {
            let unknown_kid_tried_all = keys.try_all_keys
                && kid.is_some_and(|kid| !keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
            if unknown_kid_tried_all {
                no_candidate(kid, keys)
            } else {
                AuthError::TokenSignatureInvalid
            }
        })
}

/// Why no key could even be tried: the kid names a key of another type (signature invalid), names
/// nothing (key not found), or the key source is down (keys unavailable).
fn no_candidate(kid: Option<&str>, keys: &KeySnapshot) -> AuthError {
    let named = kid.is_some_and(|kid| keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
    if named {
        AuthError::TokenSignatureInvalid
    } else if keys.unavailable {
        AuthError::KeysUnavailable
    } else {
        AuthError::TokenSignatureKeyNotFound {
            kid: kid.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a header can ask for its token: another header, `Authorization` without a
    /// required scheme, and with schemes including an empty one and one with a space.
    const SCHEMES: [Option<Option<&str>>; 6] = [
        None,
        Some(None),
        Some(Some("Bearer")),
        Some(Some("DPoP")),
        Some(Some("")),
        Some(Some("Foo Bar")),
    ];

    /// What the exact path makes of `bytes`, if a header may hold them.
    fn exact(bytes: &[u8], scheme: Option<Option<&str>>) -> Option<Result<String, AuthError>> {
        let value = http::HeaderValue::from_bytes(bytes).ok()?;
        Some(token_from_header(&value, scheme).map(str::to_owned))
    }

    /// The one-pass path accepts only what the exact path accepts, with the same token.
    fn agrees(bytes: &[u8], scheme: Option<Option<&str>>) -> bool {
        let Some(exact) = exact(bytes, scheme) else {
            return true;
        };
        match usual_token(bytes, scheme) {
            Some(fast) => exact.as_deref() == Ok(fast),
            None => true,
        }
    }

    #[test]
    fn the_one_pass_path_agrees_with_the_exact_one_on_every_short_value() {
        // Letters of the schemes, both separators, the edges of visible ASCII and beyond.
        let alphabet: &[u8] = b"aBeRr. \t~\x7f\x80\xff\x21\x1f";
        let prefixes: [&[u8]; 7] = [
            b"",
            b"Bearer",
            b"Bearer ",
            b"bEARER ",
            b"Bearer  ",
            b"DPoP ",
            b"Foo Bar ",
        ];
        let mut values = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = values
                .iter()
                .filter(|v| v.len() == values.last().map_or(0, Vec::len))
                .flat_map(|v| {
                    alphabet.iter().map(move |&b| {
                        let mut w = v.clone();
                        w.push(b);
                        w
                    })
                })
                .collect();
            values.extend(longer);
        }
        let mut checked = 0;
        // Without filler the value's bytes are at the start of a short value (the vectorised loop
        // leaves short values to its scalar tail); after 20 bytes, where the vector loop runs.
        for filler in [&b""[..], &[b'a'; 20][..]] {
            for prefix in prefixes {
                for v in &values {
                    let bytes = [prefix, filler, v.as_slice()].concat();
                    for scheme in SCHEMES {
                        assert!(agrees(&bytes, scheme), "{bytes:?} under {scheme:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1_000_000, "{checked}");
    }

    #[test]
    fn the_one_pass_path_sees_a_bad_byte_in_every_lane_and_the_size_limit() {
        for len in [1, 31, 32, 33, 63, 64, 65, 100, MAX_TOKEN_BYTES] {
            let good = vec![b'a'; len];
            for scheme in SCHEMES {
                let bytes = match scheme {
                    Some(_) => [b"Bearer ".as_slice(), &good].concat(),
                    None => good.clone(),
                };
                if scheme.is_some_and(|s| s.is_some_and(|s| s != "Bearer")) {
                    continue;
                }
                assert_eq!(usual_token(&bytes, scheme).map(str::len), Some(len));
            }
            for at in (0..len).step_by(1 + len / 70) {
                for bad in [b' ', b'\t', 0x7f, 0x80, 0x1f] {
                    let mut bytes = good.clone();
                    bytes[at] = bad;
                    assert_eq!(usual_token(&bytes, None), None, "{bad:#x} at {at} of {len}");
                    assert!(agrees(&bytes, None));
                }
            }
        }
        let too_long = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert_eq!(usual_token(&too_long, None), None);
        assert!(exact(&too_long, None).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn the_usual_headers_take_the_one_pass_path() {
        let bearer = Some(Some("Bearer"));
        assert_eq!(usual_token(b"Bearer a.b.c", bearer), Some("a.b.c"));
        assert_eq!(usual_token(b"bearer a.b.c", bearer), Some("a.b.c"));
        assert_eq!(usual_token(b"Bearer a.b.c", Some(None)), Some("a.b.c"));
        assert_eq!(usual_token(b"a.b.c", Some(None)), Some("a.b.c"));
        assert_eq!(usual_token(b"a.b.c", None), Some("a.b.c"));
        assert_eq!(
            usual_token(b"DPoP a.b.c", Some(Some("DPoP"))),
            Some("a.b.c")
        );
        // Left to the exact path, for its verdict.
        assert_eq!(usual_token(b"Bearer", Some(None)), None);
        assert_eq!(usual_token(b"Bearer a b", bearer), None);
        assert_eq!(usual_token(b"a.b.c", bearer), None);
    }
}
