//! Test fixtures: keys generated per test run (rcgen over aws-lc-rs), tokens signed with
//! jsonwebtoken's own signer over headers we serialise ourselves (so any header can be crafted).

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_auth::{KeySnapshot, Policy, RequestParts, UnixTime, VerifyingKey};
use rcgen::{KeyPair, SignatureAlgorithm};
use serde_json::{json, Value};

/// The fixed "now" of every test.
pub const NOW: UnixTime = UnixTime(1_700_000_000);

/// A generated signing key and its verifying twin.
pub struct TestKey {
    pub pair: KeyPair,
    pub encoding: EncodingKey,
    pub public_pem: String,
}

impl TestKey {
    fn generate(alg: &'static SignatureAlgorithm) -> TestKey {
        let pair = KeyPair::generate_for(alg).unwrap();
        let pem = pair.serialize_pem();
        let encoding = if alg == &rcgen::PKCS_RSA_SHA256 {
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        } else if alg == &rcgen::PKCS_ED25519 {
            EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()
        } else {
            EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
        };
        let public_pem = pair.public_key_pem();
        TestKey {
            pair,
            encoding,
            public_pem,
        }
    }

    /// The verifying key (from the SPKI PEM), with a kid.
    pub fn verifying(&self, kid: Option<&str>) -> VerifyingKey {
        VerifyingKey::from_pem(kid.map(str::to_owned), self.public_pem.as_bytes(), "test")
            .unwrap()
            .remove(0)
    }
}

macro_rules! cached_key {
    ($name:ident, $alg:expr) => {
        pub fn $name() -> &'static TestKey {
            static KEY: OnceLock<TestKey> = OnceLock::new();
            KEY.get_or_init(|| TestKey::generate($alg))
        }
    };
}

cached_key!(rsa, &rcgen::PKCS_RSA_SHA256);
cached_key!(rsa2, &rcgen::PKCS_RSA_SHA256);
cached_key!(p256, &rcgen::PKCS_ECDSA_P256_SHA256);
cached_key!(p384, &rcgen::PKCS_ECDSA_P384_SHA384);
cached_key!(ed25519, &rcgen::PKCS_ED25519);

/// The HMAC secret of the tests.
pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hmac-secret";

pub fn hmac_key(kid: Option<&str>) -> VerifyingKey {
    VerifyingKey::from_hmac_secret(kid.map(str::to_owned), HMAC_SECRET, "test")
}

pub fn hmac_encoding() -> EncodingKey {
    EncodingKey::from_secret(HMAC_SECRET)
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(claims)` signed with `alg`.
pub fn sign_raw(header: &str, claims: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// A token with header `{"alg":..,"kid":..}` and the given claims.
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = json!({ "alg": format!("{alg:?}"), "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_raw(&header.to_string(), &claims.to_string(), key, alg)
}

/// Claims valid at [`NOW`].
pub fn claims() -> Value {
    json!({
        "iss": "https://issuer.test/",
        "aud": "api://orders",
        "sub": "alice",
        "exp": NOW.0 + 300,
        "nbf": NOW.0 - 10,
        "iat": NOW.0 - 10,
    })
}

pub fn snapshot(keys: Vec<VerifyingKey>) -> KeySnapshot {
    KeySnapshot::new(keys)
}

/// A policy reading `Authorization: Bearer`, with the issuer and audience of [`claims`].
pub fn policy() -> Policy {
    let mut p = Policy::new("test");
    p.issuers = vec!["https://issuer.test/".into()];
    p.audiences = vec!["api://orders".into()];
    p
}

/// Verify and check claims under `policy` at [`NOW`].
pub fn check(
    token: &str,
    keys: &KeySnapshot,
    policy: &Policy,
) -> Result<portcullis_auth::Verified, portcullis_auth::AuthError> {
    let t = portcullis_auth::verify_token(token, keys, policy.require_signed_tokens)?;
    portcullis_auth::check_claims(&std::sync::Arc::new(t), policy, keys, NOW)
}

/// Request parts with the given headers and query.
pub fn request<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> RequestParts<'a> {
    RequestParts { headers, query }
}

/// The reason code of a result.
pub fn reason<T>(r: Result<T, portcullis_auth::AuthError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}
