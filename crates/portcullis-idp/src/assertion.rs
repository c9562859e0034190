//! Verification of JWTs the server receives: private_key_jwt client assertions and jwt-bearer
//! grant assertions. Written here rather than borrowed from the gateway's verifier so the two
//! implementations check each other. Keys come from a certificate (thumbprints computed) or a JWKS
//! and are matched by `kid`, else `x5t` / `x5t#S256` (MSAL sends no `kid`), else tried in turn;
//! a JWK that names an `alg` verifies that algorithm only. The same code checks on-behalf-of
//! assertions against this server's own published keys.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::Digest;

use crate::config::{KeyKind, KeySource};
use crate::error::IdpError;

/// Clock skew tolerated on `exp` / `nbf` of received assertions.
const LEEWAY_SECS: f64 = 60.0;

/// base64url that accepts both padded and unpadded input.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`: when present, the only algorithm this key verifies.
    alg: Option<Algorithm>,
    x5t: Option<Vec<u8>>,
    x5t_s256: Option<Vec<u8>>,
    kind: KeyKind,
    key: DecodingKey,
}

/// The public keys a client's assertions are checked against.
pub struct KeySet(Vec<VerifyKey>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| (&k.kid, k.kind)))
            .finish()
    }
}

impl KeySet {
    /// Loads keys from a certificate file or a JWKS (inline or file).
    pub fn load(source: &KeySource) -> Result<Self, IdpError> {
        match source {
            KeySource::Certificate(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| IdpError::Key(format!("{}: {e}", path.display())))?;
                Self::from_certificates(&bytes)
                    .map_err(|e| IdpError::Key(format!("{}: {e}", path.display())))
            }
            KeySource::Jwks(value) => Self::from_jwks(value.clone()),
            KeySource::JwksFile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| IdpError::Key(format!("{}: {e}", path.display())))?;
                let value = serde_json::from_str(&text)
                    .map_err(|e| IdpError::Key(format!("{}: {e}", path.display())))?;
                Self::from_jwks(value)
            }
        }
    }

    /// Every CERTIFICATE block of a PEM file (private keys in the same file are ignored).
    pub fn from_certificates(pem: &[u8]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
            let block = block.map_err(|e| format!("bad PEM: {e}"))?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            let cert = block
                .parse_x509()
                .map_err(|e| format!("bad certificate: {e}"))?;
            let spki = cert.public_key();
            let data = spki.subject_public_key.data.as_ref();
            let (kind, key) = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(_)) => {
                    (KeyKind::Rsa, DecodingKey::from_rsa_der(data))
                }
                // The uncompressed point's length tells the curve: 1 + 2 * 32 or 1 + 2 * 48.
                Ok(x509_parser::public_key::PublicKey::EC(point)) => {
                    let kind = match point.data().len() {
                        65 => KeyKind::P256,
                        97 => KeyKind::P384,
                        _ => return Err("certificate EC key is not P-256 or P-384".into()),
                    };
                    (kind, DecodingKey::from_ec_der(data))
                }
                _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
                    (KeyKind::Ed25519, DecodingKey::from_ed_der(data))
                }
                _ => return Err("certificate key is not RSA, EC or Ed25519".into()),
            };
            keys.push(VerifyKey {
                kid: None,
                alg: None,
                x5t: Some(sha1::Sha1::digest(&block.contents).to_vec()),
                x5t_s256: Some(sha2::Sha256::digest(&block.contents).to_vec()),
                kind,
                key,
            });
        }
        if keys.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        Ok(Self(keys))
    }

    /// Keys of a JWKS document (`{"keys": [...]}`); symmetric keys are refused.
    pub fn from_jwks(value: Value) -> Result<Self, IdpError> {
        let set: JwkSet =
            serde_json::from_value(value).map_err(|e| IdpError::Key(format!("jwks: {e}")))?;
        let thumb = |s: &Option<String>| s.as_deref().and_then(|t| B64_LENIENT.decode(t).ok());
        set.keys
            .iter()
            .map(|jwk| {
                let kind = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                    AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                        EllipticCurve::P256 => KeyKind::P256,
                        EllipticCurve::P384 => KeyKind::P384,
                        _ => {
                            return Err(IdpError::Key(
                                "jwks: EC keys must be on P-256 or P-384".into(),
                            ))
                        }
                    },
                    AlgorithmParameters::OctetKeyPair(_) => KeyKind::Ed25519,
                    _ => {
                        return Err(IdpError::Key(
                            "jwks: only RSA, EC and OKP keys are accepted".into(),
                        ))
                    }
                };
                // A key whose `alg` names no signature algorithm this accepts (RSA-OAEP, ...)
                // verifies nothing: it is left out.
                let alg = match jwk.common.key_algorithm.map(Algorithm::try_from) {
                    None => None,
                    Some(Ok(a)) => Some(a),
                    Some(Err(_)) => return Ok(None),
                };
                Ok(Some(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    x5t: thumb(&jwk.common.x509_sha1_fingerprint),
                    x5t_s256: thumb(&jwk.common.x509_sha256_fingerprint),
                    kind,
                    key: DecodingKey::from_jwk(jwk)
                        .map_err(|e| IdpError::Key(format!("jwks: {e}")))?,
                }))
            })
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// One set holding the keys of all `sets`.
    pub fn concat<'a>(sets: impl Iterator<Item = &'a KeySet>) -> Self {
        Self(sets.flat_map(|s| s.0.iter().cloned()).collect())
    }

    /// The keys to try for a JWS: of the algorithm's key kind, whose JWK `alg` (if any) is the
    /// JWS `alg`; by kid, else thumbprint, else all of them when the header names no kid.
    fn candidates<'a>(
        &'a self,
        header: &'a Map<String, Value>,
        alg: Algorithm,
        kind: KeyKind,
    ) -> Vec<&'a VerifyKey> {
        let of_kind = self
            .0
            .iter()
            .filter(move |k| k.kind == kind && k.alg.is_none_or(|a| a == alg));
        let text = |name: &str| header.get(name).and_then(Value::as_str);
        if let Some(kid) = text("kid") {
            let by_kid: Vec<_> = of_kind
                .clone()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if !by_kid.is_empty() {
                return by_kid;
            }
        }
        let by_thumb =
            |name: &str, pick: fn(&VerifyKey) -> Option<&Vec<u8>>| -> Option<Vec<&VerifyKey>> {
                let wanted = B64_LENIENT.decode(text(name)?).ok()?;
                Some(
                    of_kind
                        .clone()
                        .filter(|k| pick(k) == Some(&wanted))
                        .collect(),
                )
            };
        if let Some(found) = by_thumb("x5t#S256", |k| k.x5t_s256.as_ref()) {
            return found;
        }
        if let Some(found) = by_thumb("x5t", |k| k.x5t.as_ref()) {
            return found;
        }
        if text("kid").is_some() {
            return Vec::new();
        }
        of_kind.collect()
    }
}

fn key_kind(alg: Algorithm) -> Option<KeyKind> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyKind::Rsa),
        ES256 => Some(KeyKind::P256),
        ES384 => Some(KeyKind::P384),
        EdDSA => Some(KeyKind::Ed25519),
        _ => None,
    }
}

/// Why a received JWT was refused. Callers map the variants to their OAuth errors (on-behalf-of
/// distinguishes a malformed token, a bad signature and an expired one, as Entra does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a compact JWS with JSON parts, or an algorithm that is not accepted.
    #[error("{0}")]
    Malformed(String),
    /// No registered key verifies the signature.
    #[error("assertion signature does not verify with any registered key")]
    Signature,
    /// `exp` is missing.
    #[error("assertion has no numeric exp")]
    NoExpiry,
    /// `exp` has passed (beyond the leeway).
    #[error("assertion is expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("assertion is not yet valid")]
    NotYetValid,
}

fn decode_json(part: &str) -> Result<Map<String, Value>, AssertionError> {
    let bytes = B64_LENIENT
        .decode(part)
        .map_err(|_| AssertionError::Malformed("assertion is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AssertionError::Malformed("assertion part is not a JSON object".into()))
}

/// Checks the signature, `exp` (required) and `nbf` of an assertion; returns its claims.
/// `exp` / `nbf` may be non-integer numbers. The caller checks `iss`, `sub` and `aud`.
pub fn verify(token: &str, keys: &KeySet, now: f64) -> Result<Map<String, Value>, AssertionError> {
    let malformed = |m: String| AssertionError::Malformed(m);
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("assertion is not a compact JWS".into()));
    };
    let header = decode_json(h)?;
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| malformed(format!("assertion alg {alg_name:?} is not supported")))?;
    let kind = key_kind(alg)
        .ok_or_else(|| malformed(format!("assertion alg {alg_name:?} is not accepted")))?;
    let message = &token[..h.len() + 1 + p.len()];
    let verified = keys.candidates(&header, alg, kind).into_iter().any(|k| {
        jsonwebtoken::crypto::verify(sig, message.as_bytes(), &k.key, alg).unwrap_or(false)
    });
    if !verified {
        return Err(AssertionError::Signature);
    }
    let claims = decode_json(p)?;
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);
    match number("exp") {
        None => return Err(AssertionError::NoExpiry),
        Some(exp) if exp + LEEWAY_SECS < now => return Err(AssertionError::Expired),
        Some(_) => {}
    }
    if number("nbf").is_some_and(|nbf| nbf - LEEWAY_SECS > now) {
        return Err(AssertionError::NotYetValid);
    }
    Ok(claims)
}
