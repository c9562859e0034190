//! Verifying keys and immutable key snapshots.
//!
//! A key's algorithm family comes from the key material (JWK kty/crv, certificate, HMAC secret),
//! never from a token. Parsing is pure: callers (config check, the JWKS store) do the I/O and hand
//! bytes in. Parsing is tolerant of real identity providers: keys without `alg`, `x5c`/`x5t` present,
//! unknown `kty` skipped (reported in [`ParsedJwks::skipped`]), not an error.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::sig::ParsedKeys;
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
    /// The issuers this key speaks for: a token it verified is accepted only when its `iss` is one
    /// of these (keys of an `openid-config` source are bound to that document's issuer). `None`:
    /// not bound, the policy's issuer rule alone decides (static keys, `jwks-uri` sources).
    /// Entries may be `{tenantid}` templates ([`crate::issuer_matches`]).
    pub issuers: Option<Arc<[String]>>,
    /// The `any-of` groups whose key sources published this key: bit `g` for group `g` (at most
    /// 64 groups). A key verifies a token for group `g` only when bit `g` is set, so one group's
    /// keys never satisfy another group. `0` in a policy without `any-of` (not consulted).
    pub groups: u64,
    pub(crate) decoding: jsonwebtoken::DecodingKey,
    /// The key parsed once per algorithm it may verify ([`crate::sig`]); empty for HMAC keys,
    /// which `decoding` verifies.
    pub(crate) parsed: Arc<ParsedKeys>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .field("source", &self.source)
            .field("issuers", &self.issuers)
            .field("groups", &self.groups)
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
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| KeyError(format!("JWKS is not JSON: {e}")))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| KeyError("JWKS has no \"keys\" array".to_owned()))?;
    let mut parsed = ParsedJwks::default();
    for jwk in entries {
        match VerifyingKey::from_jwk(jwk, source) {
            Ok(key) => parsed.keys.push(key),
            Err(KeyError(reason)) => parsed.skipped.push(SkippedKey {
                kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
                reason,
            }),
        }
    }
    Ok(parsed)
}

/// Smallest RSA modulus accepted. aws-lc (jsonwebtoken's backend) verifies RS*/PS* only with
/// 2048..=8192-bit moduli, so a shorter key could never verify anything: it is refused up front.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (aws-lc's upper bound).
pub const MAX_RSA_BITS: usize = 8192;

/// Lenient base64url for key material from configuration and JWKS documents: padding optional.
/// (Tokens use the strict engine in `token.rs`; keys come from the operator or the issuer.)
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn key_err(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

fn b64_member(jwk: &Value, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| key_err(format!("missing \"{name}\"")))?;
    KEY_B64
        .decode(text)
        .map_err(|_| key_err(format!("\"{name}\" is not base64url")))
}

fn str_member(jwk: &Value, name: &str) -> Result<Option<String>, KeyError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(key_err(format!("\"{name}\" is not a string"))),
    }
}

/// `use` must be `sig` when present; `key_ops`, when present, must include `verify`.
fn check_usage(jwk: &Value) -> Result<(), KeyError> {
    if let Some(u) = str_member(jwk, "use")? {
        if u != "sig" {
            return Err(key_err(format!("use \"{u}\" is not \"sig\"")));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err(key_err("key_ops does not include \"verify\""));
        }
    }
    Ok(())
}

/// Key material in the form jsonwebtoken's aws-lc verifiers take, parsed for aws-lc-rs, plus its
/// family.
struct Material {
    family: KeyFamily,
    decoding: DecodingKey,
    parsed: ParsedKeys,
    /// Bytes identifying the key (n||e, the EC point, the Ed25519 key, the HMAC secret).
    identity: Vec<u8>,
}

impl Material {
    fn rsa(n: &[u8], e: &[u8]) -> Result<Material, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        // An empty (or all-zero) modulus has 0 bits; `len * 8 - 8` would underflow.
        let bits = n
            .first()
            .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(key_err(format!(
                "RSA modulus of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
            )));
        }
        if e.is_empty() || e.len() > 4 {
            return Err(key_err("RSA exponent is empty or too large"));
        }
        let mut identity = Vec::with_capacity(n.len() + e.len() + 1);
        identity.extend_from_slice(n);
        identity.push(0);
        identity.extend_from_slice(e);
        Ok(Material {
            family: KeyFamily::Rsa,
            decoding: DecodingKey::from_rsa_raw_components(n, e),
            parsed: ParsedKeys::rsa(n, e),
            identity,
        })
    }

    /// An uncompressed EC point (`04 || x || y`).
    fn ec(family: KeyFamily, point: Vec<u8>) -> Result<Material, KeyError> {
        let coord = if family == KeyFamily::EcP256 { 32 } else { 48 };
        if point.len() != 1 + 2 * coord || point.first() != Some(&4) {
            return Err(key_err(
                "EC public key is not an uncompressed point of its curve",
            ));
        }
        Ok(Material {
            family,
            decoding: DecodingKey::from_ec_der(&point),
            parsed: ParsedKeys::public(family, &point),
            identity: point,
        })
    }

    fn ed25519(x: Vec<u8>) -> Result<Material, KeyError> {
        if x.len() != 32 {
            return Err(key_err("Ed25519 public key is not 32 bytes"));
        }
        Ok(Material {
            family: KeyFamily::Ed25519,
            decoding: DecodingKey::from_ed_der(&x),
            parsed: ParsedKeys::public(KeyFamily::Ed25519, &x),
            identity: x,
        })
    }

    fn hmac(secret: &[u8]) -> Result<Material, KeyError> {
        if secret.is_empty() {
            return Err(key_err("HMAC secret is empty"));
        }
        Ok(Material {
            family: KeyFamily::Hmac,
            decoding: DecodingKey::from_secret(secret),
            parsed: ParsedKeys::default(),
            identity: secret.to_vec(),
        })
    }

    fn from_jwk(jwk: &Value) -> Result<Material, KeyError> {
        let kty = str_member(jwk, "kty")?.ok_or_else(|| key_err("missing \"kty\""))?;
        match kty.as_str() {
            "RSA" => Material::rsa(&b64_member(jwk, "n")?, &b64_member(jwk, "e")?),
            "EC" => {
                let family = match str_member(jwk, "crv")?.as_deref() {
                    Some("P-256") => KeyFamily::EcP256,
                    Some("P-384") => KeyFamily::EcP384,
                    other => return Err(key_err(format!("unsupported EC curve {other:?}"))),
                };
                let mut point = vec![4];
                point.extend(b64_member(jwk, "x")?);
                point.extend(b64_member(jwk, "y")?);
                Material::ec(family, point)
            }
            "OKP" => match str_member(jwk, "crv")?.as_deref() {
                Some("Ed25519") => Material::ed25519(b64_member(jwk, "x")?),
                other => Err(key_err(format!("unsupported OKP curve {other:?}"))),
            },
            "oct" => Material::hmac(&b64_member(jwk, "k")?),
            other => Err(key_err(format!("unsupported kty \"{other}\""))),
        }
    }

    /// The key of a SubjectPublicKeyInfo (from a certificate or a `PUBLIC KEY` block).
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Material, KeyError> {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_SIG_ED25519 {
            return Material::ed25519(spki.subject_public_key.data.to_vec());
        }
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Material::rsa(rsa.modulus, rsa.exponent),
            Ok(PublicKey::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                let family = match curve {
                    Some(c) if c == OID_EC_P256 => KeyFamily::EcP256,
                    Some(c) if c == OID_NIST_EC_P384 => KeyFamily::EcP384,
                    _ => return Err(key_err("unsupported EC curve in public key")),
                };
                Material::ec(family, point.data().to_vec())
            }
            Ok(_) => Err(key_err(format!("unsupported public key algorithm {oid}"))),
            Err(e) => Err(key_err(format!("unreadable public key: {e}"))),
        }
    }

    fn into_key(
        self,
        kid: Option<String>,
        x5t: Option<String>,
        alg: Option<JoseAlg>,
        source: &str,
    ) -> Result<VerifyingKey, KeyError> {
        if let Some(alg) = alg {
            if !alg.fits(self.family) {
                return Err(key_err(format!(
                    "alg {} does not fit a {:?} key",
                    alg.name(),
                    self.family
                )));
            }
        }
        Ok(VerifyingKey {
            kid,
            x5t,
            alg,
            family: self.family,
            fingerprint: fingerprint(self.family, &self.identity),
            source: Arc::from(source),
            issuers: None,
            groups: 0,
            decoding: self.decoding,
            parsed: Arc::new(match alg {
                Some(alg) => self.parsed.restricted_to(alg),
                None => self.parsed,
            }),
        })
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A stable identifier of key material: the first 8 bytes of SHA-256(family tag || material).
fn fingerprint(family: KeyFamily, identity: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update([family as u8]);
    hasher.update(identity);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl VerifyingKey {
    /// From one JWK (serde_json value).
    pub fn from_jwk(jwk: &serde_json::Value, source: &str) -> Result<VerifyingKey, KeyError> {
        if !jwk.is_object() {
            return Err(key_err("JWK is not an object"));
        }
        check_usage(jwk)?;
        let alg = match str_member(jwk, "alg")? {
            None => None,
            Some(name) => Some(
                JoseAlg::from_header_name(&name)
                    .ok_or_else(|| key_err(format!("unsupported alg \"{name}\"")))?,
            ),
        };
        let kid = str_member(jwk, "kid")?;
        let x5t = str_member(jwk, "x5t")?;
        Material::from_jwk(jwk)?.into_key(kid, x5t, alg, source)
    }

    /// RSA from base64url `n` and `e` (APIM's `<key n=".." e=".."/>`).
    pub fn from_rsa_components(
        kid: Option<String>,
        n: &str,
        e: &str,
        source: &str,
    ) -> Result<VerifyingKey, KeyError> {
        let n = KEY_B64
            .decode(n)
            .map_err(|_| key_err("RSA modulus n is not base64url"))?;
        let e = KEY_B64
            .decode(e)
            .map_err(|_| key_err("RSA exponent e is not base64url"))?;
        Material::rsa(&n, &e)?.into_key(kid, None, None, source)
    }

    /// Keys from PEM text: X.509 certificates (RSA, EC P-256/P-384, Ed25519) and SPKI public keys.
    /// Each certificate's key gets `x5t` (and kid = x5t unless a kid is given).
    pub fn from_pem(
        kid: Option<String>,
        pem: &[u8],
        source: &str,
    ) -> Result<Vec<VerifyingKey>, KeyError> {
        let blocks = pem::parse_many(pem).map_err(|e| key_err(format!("unreadable PEM: {e}")))?;
        if blocks.is_empty() {
            return Err(key_err("no PEM block found"));
        }
        blocks
            .iter()
            .map(|block| pem_block_key(kid.clone(), block, source))
            .collect()
    }

    /// HMAC secret (already base64-decoded bytes). An empty secret yields a key that never
    /// verifies (the config layer reports empty secrets).
    pub fn from_hmac_secret(kid: Option<String>, secret: &[u8], source: &str) -> VerifyingKey {
        VerifyingKey {
            kid,
            x5t: None,
            alg: None,
            family: KeyFamily::Hmac,
            fingerprint: fingerprint(KeyFamily::Hmac, secret),
            source: Arc::from(source),
            issuers: None,
            groups: 0,
            decoding: DecodingKey::from_secret(secret),
            parsed: Arc::default(),
        }
    }

    /// This key, bound to `issuers` (see [`VerifyingKey::issuers`]).
    pub fn bound_to(self, issuers: Arc<[String]>) -> VerifyingKey {
        VerifyingKey {
            issuers: Some(issuers),
            ..self
        }
    }

    /// Whether a token verified by this key may claim `iss` (with `tid`, for `{tenantid}`
    /// templates among the issuers it is bound to).
    pub fn speaks_for(&self, iss: Option<&str>, tid: Option<&str>) -> bool {
        match &self.issuers {
            None => true,
            Some(bound) => {
                iss.is_some_and(|iss| bound.iter().any(|b| crate::issuer_matches(b, iss, tid)))
            }
        }
    }

    /// Whether this key was published by a key source of `any-of` group `group`.
    pub fn in_group(&self, group: usize) -> bool {
        u32::try_from(group)
            .ok()
            .and_then(|g| 1u64.checked_shl(g))
            .is_some_and(|bit| self.groups & bit != 0)
    }

    /// Whether `signature` signs `message` with this key under `alg` (a family the key fits, which
    /// the caller has checked). `decoded` is the signature segment decoded (`None`: longer than
    /// [`crate::sig::MAX_SIGNATURE_BYTES`], so no key's signature). Through the key parsed for
    /// `alg` when there is one, else through jsonwebtoken (HMAC, or a key aws-lc-rs did not
    /// parse), with the same verdicts.
    pub(crate) fn verifies(
        &self,
        alg: JoseAlg,
        message: &[u8],
        signature: &str,
        decoded: Option<&[u8]>,
    ) -> bool {
        match self.parsed.get(alg) {
            Some(parsed) => {
                decoded.is_some_and(|sig| crate::sig::verify(parsed, alg, message, sig))
            }
            None => jsonwebtoken::crypto::verify(signature, message, &self.decoding, alg.jwt_alg())
                .unwrap_or(false),
        }
    }

    /// False for an empty HMAC secret: HMAC accepts empty keys, so anyone could sign with one; such a
    /// key never verifies anything.
    pub(crate) fn can_verify(&self) -> bool {
        self.family != KeyFamily::Hmac
            || self
                .decoding
                .try_get_as_bytes()
                .is_ok_and(|secret| !secret.is_empty())
    }
}

fn pem_block_key(
    kid: Option<String>,
    block: &pem::Pem,
    source: &str,
) -> Result<VerifyingKey, KeyError> {
    match block.tag() {
        "CERTIFICATE" => {
            let der = block.contents();
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| key_err(format!("unreadable certificate: {e}")))?;
            let x5t = URL_SAFE_NO_PAD.encode(Sha1::digest(der));
            let kid = kid.or_else(|| Some(x5t.clone()));
            Material::from_spki(cert.public_key())?.into_key(kid, Some(x5t), None, source)
        }
        "PUBLIC KEY" => {
            let (_, spki) = SubjectPublicKeyInfo::from_der(block.contents())
                .map_err(|e| key_err(format!("unreadable public key: {e}")))?;
            Material::from_spki(&spki)?.into_key(kid, None, None, source)
        }
        other => Err(key_err(format!(
            "PEM block \"{other}\" is not a CERTIFICATE or PUBLIC KEY"
        ))),
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
    /// True while at least one of the policy's discovery (`openid-config`) sources has not yet
    /// told its issuer. A policy that lists no `issuers` then fails closed (`KeysUnavailable`)
    /// for any token whose `iss` is not among the issuers already known.
    pub issuers_pending: bool,
    /// Per `any-of` group (in order): the issuers its discovery documents named, and whether one
    /// of them has not answered yet (the group-level `issuers` and `issuers_pending`). Empty for
    /// a policy without `any-of`.
    pub groups: Arc<[DiscoveredIssuers]>,
    /// The policy's `try-all-signing-keys` (APIM's key matching): a token whose `kid` names no key
    /// of the snapshot is tried against every key of the right type, instead of only the keys
    /// without a kid. See [`KeySnapshot::kid_rule`].
    pub try_all_keys: bool,
    /// This snapshot's number, unique in the process: what the claim rules' memo
    /// ([`crate::claims::RulesTag`]) is tied to, so that what the issuer rule decided under one
    /// snapshot (discovered issuers, key bindings) is never reused under another.
    pub generation: Generation,
}

/// A key snapshot's number ([`KeySnapshot::generation`]). [`Generation::fresh`] hands out a
/// number no other snapshot of the process has; `Default` is none (a snapshot without one gets no
/// memo). A clone gets a fresh number, so a snapshot copied and then changed can never share the
/// memo of the original. (A snapshot changed in place keeps its number: the key store publishes
/// each snapshot behind an `Arc` and never changes it.)
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Generation(u64);

/// The last number [`Generation::fresh`] handed out.
static LAST_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Generation {
    /// A number no other snapshot of this process has (never 0).
    pub fn fresh() -> Generation {
        Generation(LAST_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }

    /// The number; `0` for none.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl Clone for Generation {
    fn clone(&self) -> Generation {
        if self.0 == 0 {
            Generation(0)
        } else {
            Generation::fresh()
        }
    }
}

/// What a group's discovery documents told about their issuers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveredIssuers {
    /// Issuers learned (used when the group lists none).
    pub issuers: Vec<String>,
    /// At least one of the group's discovery sources has not told its issuer yet.
    pub pending: bool,
}

impl KeySnapshot {
    /// A snapshot over fixed keys (tests, static sources).
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        KeySnapshot {
            keys: keys.into(),
            issuers: Arc::from(Vec::new()),
            unavailable: false,
            issuers_pending: false,
            groups: Arc::from(Vec::new()),
            try_all_keys: false,
            generation: Generation::fresh(),
        }
    }

    /// Which keys a token's `kid` lets be tried; the verifier and the token cache's hit check both
    /// use it, so a cached token is kept exactly when the verifier could have accepted it.
    ///
    /// Strict (the default, and what RFC 7515 implies): a `kid` selects the keys with that kid and
    /// the keys without any; no `kid` selects every key. With `try_all_keys` (APIM's decision,
    /// Microsoft.IdentityModel's `TryAllIssuerSigningKeys`): a `kid` that names no key of the
    /// snapshot selects every key; a `kid` that names one still selects only it (and kid-less keys).
    pub fn kid_rule<'a>(&'a self, kid: Option<&'a str>) -> impl Fn(&VerifyingKey) -> bool + 'a {
        let unmatched_tries_all = self.try_all_keys
            && kid.is_some_and(|kid| !self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        move |k: &VerifyingKey| {
            unmatched_tries_all
                || match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        }
    }

    /// Whether a key with this fingerprint is still present (token-cache hits check this).
    pub fn contains_fingerprint(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}
