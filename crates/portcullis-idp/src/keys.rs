//! Signing keys: generated at first start and persisted as PKCS#8 PEM (or read from files), the
//! published JWKS (prebuilt bytes, so serving it allocates nothing), and rotation with a grace
//! period during which the previous key stays published. A key that signs several algorithms is
//! published once per algorithm (distinct kids, each JWK naming its `alg`): verifiers that honour
//! the JWK's `alg`, as they should (RFC 7517 §4.4), then accept what this server signs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::PublicKeyData;
use serde_json::{json, Value};
use sha1::Digest;

use crate::assertion::KeySet;
use crate::config::{derived_kid, KeyConfig, KeyKind, SigningAlg};
use crate::error::IdpError;

/// The XML-DSig URI .NET-style STSs put in `alg` for RS512.
pub const XMLDSIG_RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";

/// One private key with its published public half: one JWK per algorithm it signs with, each
/// under its own kid and carrying that `alg`, so a verifier that honours the JWK's `alg` accepts
/// exactly the tokens this key signs.
pub struct SigningKey {
    /// `kid` of the JWK for its own algorithm.
    pub id: String,
    /// Its own (configured or PEM-derived) algorithm.
    pub alg: SigningAlg,
    kind: KeyKind,
    encoding: EncodingKey,
    /// (kid, algorithm) pairs it signs and is published under; the first is (`id`, `alg`).
    algs: Vec<(String, SigningAlg)>,
    published: Vec<Value>,
    verify: KeySet,
    /// Upper-case hex SHA-1 thumbprint of the public key (RSA), the dotnet-sts profile's `kid`.
    pub sts_kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algs", &self.algs)
            .finish_non_exhaustive()
    }
}

fn rcgen_alg(kind: KeyKind) -> &'static rcgen::SignatureAlgorithm {
    match kind {
        KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
        KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

fn key_err(what: impl std::fmt::Display) -> IdpError {
    IdpError::Key(what.to_string())
}

/// The kind of a PKCS#8 PEM private key.
pub fn kind_of_pem(pem: &str) -> Result<KeyKind, String> {
    let pair =
        rcgen::KeyPair::from_pem(pem).map_err(|e| format!("not a PKCS#8 PEM private key: {e}"))?;
    kind_of(&pair)
}

fn kind_of(pair: &rcgen::KeyPair) -> Result<KeyKind, String> {
    let alg = pair.algorithm();
    if [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ]
    .contains(&alg)
    {
        return Ok(KeyKind::Rsa);
    }
    [KeyKind::P256, KeyKind::P384, KeyKind::Ed25519]
        .into_iter()
        .find(|k| rcgen_alg(*k) == alg)
        .ok_or_else(|| "not an RSA, EC P-256, EC P-384 or Ed25519 key".into())
}

impl SigningKey {
    /// Generates a fresh key in memory for `algs` (all of one key kind; the first is its own).
    pub fn generate(algs: Vec<(String, SigningAlg)>) -> Result<Self, IdpError> {
        let own = algs
            .first()
            .ok_or_else(|| key_err("a key needs an algorithm"))?
            .1;
        let pair = rcgen::KeyPair::generate_for(rcgen_alg(own.kind())).map_err(key_err)?;
        Self::from_pem(algs, &pair.serialize_pem())
    }

    /// Reads the key file, or generates a key and writes it there (mode 0600) when absent;
    /// without a file the key lives in memory only. `algs` as for [`SigningKey::generate`].
    pub fn load_or_generate(
        config: &KeyConfig,
        algs: Vec<(String, SigningAlg)>,
    ) -> Result<Self, IdpError> {
        let Some(path) = &config.private_key_file else {
            return Self::generate(algs);
        };
        let ctx = |e: &dyn std::fmt::Display| key_err(format!("{}: {e}", path.display()));
        if path.exists() {
            let pem = std::fs::read_to_string(path).map_err(|e| ctx(&e))?;
            return Self::from_pem(algs, &pem).map_err(|e| ctx(&e));
        }
        let pair = rcgen::KeyPair::generate_for(rcgen_alg(config.alg.kind())).map_err(key_err)?;
        let pem = pair.serialize_pem();
        write_private(path, &pem).map_err(|e| ctx(&e))?;
        tracing::info!(kid = %config.id, path = %path.display(), "generated signing key");
        Self::from_pem(algs, &pem)
    }

    /// Builds a key from PKCS#8 PEM text, published under each of `algs` (kid, algorithm).
    pub fn from_pem(algs: Vec<(String, SigningAlg)>, pem: &str) -> Result<Self, IdpError> {
        let (id, alg) = algs
            .first()
            .cloned()
            .ok_or_else(|| key_err("a key needs an algorithm"))?;
        let pair = rcgen::KeyPair::from_pem(pem).map_err(key_err)?;
        let kind = kind_of(&pair).map_err(|e| key_err(format!("key {id}: {e}")))?;
        if let Some((_, a)) = algs.iter().find(|(_, a)| a.kind() != kind) {
            return Err(key_err(format!(
                "key {id} cannot sign {}: it is {}",
                a.name(),
                kind.describe()
            )));
        }
        let bytes = pem.as_bytes();
        let encoding = match kind {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(bytes),
            KeyKind::P256 | KeyKind::P384 => EncodingKey::from_ec_pem(bytes),
            KeyKind::Ed25519 => EncodingKey::from_ed_pem(bytes),
        }
        .map_err(|e| key_err(format!("key {id}: {e}")))?;
        let base = public_jwk(&encoding, &pair, alg)?;
        let jwk = |kid: &str, alg: &str| {
            let mut jwk = base.clone();
            jwk["kid"] = json!(kid);
            jwk["use"] = json!("sig");
            jwk["alg"] = json!(alg);
            jwk
        };
        let sts_kid = (kind == KeyKind::Rsa)
            .then(|| hex::encode_upper(sha1::Sha1::digest(pair.subject_public_key_info())));
        let published: Vec<Value> = algs
            .iter()
            .map(|(kid, a)| jwk(kid, a.name()))
            .chain(sts_kid.as_deref().map(|kid| jwk(kid, "RS512")))
            .collect();
        let verify = KeySet::from_jwks(json!({ "keys": published }))?;
        Ok(Self {
            id,
            alg,
            kind,
            encoding,
            algs,
            published,
            verify,
            sts_kid,
        })
    }

    /// The kid of this key's JWK for `alg`, when it is published for it.
    pub fn kid_for(&self, alg: SigningAlg) -> Option<&str> {
        self.algs
            .iter()
            .find(|(_, a)| *a == alg)
            .map(|(kid, _)| kid.as_str())
    }

    /// The algorithms this key is published for.
    pub fn algs(&self) -> impl Iterator<Item = SigningAlg> + '_ {
        self.algs.iter().map(|(_, a)| *a)
    }

    /// Signs `header.claims` (both serialized here) and returns the compact JWT.
    pub fn sign(&self, header: &Value, claims: &Value, alg: Algorithm) -> Result<String, IdpError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut message = b64.encode(header.to_string());
        message.push('.');
        message.push_str(&b64.encode(claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, alg)
            .map_err(|e| IdpError::Sign(e.to_string()))?;
        message.push('.');
        message.push_str(&signature);
        Ok(message)
    }

    /// A fresh key of the same kind, published for the same algorithms under a new id.
    fn successor(&self) -> Result<Self, IdpError> {
        let id = format!("{}-{:08x}", kind_prefix(self.kind), rand::random::<u32>());
        let algs = self
            .algs
            .iter()
            .map(|(_, a)| {
                let kid = if *a == self.alg {
                    id.clone()
                } else {
                    derived_kid(&id, *a)
                };
                (kid, *a)
            })
            .collect();
        Self::generate(algs)
    }
}

fn public_jwk(
    encoding: &EncodingKey,
    pair: &rcgen::KeyPair,
    alg: SigningAlg,
) -> Result<Value, IdpError> {
    if alg.kind() == KeyKind::Ed25519 {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
        return Ok(json!({"kty": "OKP", "crv": "Ed25519", "x": x}));
    }
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(encoding, alg.jose()).map_err(key_err)?;
    let mut value = serde_json::to_value(jwk).map_err(key_err)?;
    if let Some(map) = value.as_object_mut() {
        map.retain(|k, _| matches!(k.as_str(), "kty" | "n" | "e" | "crv" | "x" | "y"));
    }
    Ok(value)
}

/// Writes a private file, creating parent directories, readable by the owner only.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())
}

/// The keys published and used for signing at one moment (replaced whole on rotation).
#[derive(Debug)]
pub struct KeyRing {
    active: Vec<Arc<SigningKey>>,
    retired: Vec<(Arc<SigningKey>, Instant)>,
    jwks: Bytes,
    verify: KeySet,
}

impl KeyRing {
    /// Builds a ring from the configured keys.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self::assemble(keys.into_iter().map(Arc::new).collect(), Vec::new())
    }

    fn assemble(active: Vec<Arc<SigningKey>>, retired: Vec<(Arc<SigningKey>, Instant)>) -> Self {
        let all = || active.iter().chain(retired.iter().map(|(k, _)| k));
        let keys: Vec<&Value> = all().flat_map(|k| k.published.iter()).collect();
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        let verify = KeySet::concat(all().map(|k| &k.verify));
        Self {
            active,
            retired,
            jwks,
            verify,
        }
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// The published keys as a verification key set (tokens this server issued: on-behalf-of).
    pub fn verify_keys(&self) -> &KeySet {
        &self.verify
    }

    /// The key that signs for this kind (the first configured of that kind).
    pub fn signer(&self, kind: KeyKind) -> Option<&Arc<SigningKey>> {
        self.active.iter().find(|k| k.kind == kind)
    }

    /// A new ring where each kind's signer is replaced by a fresh key; the old signers stay
    /// published until `now + grace`. Keys whose grace has passed are dropped.
    pub fn rotated(&self, now: Instant, grace: Duration) -> Result<Self, IdpError> {
        let mut active = Vec::with_capacity(self.active.len());
        let mut retired = self.live_retired(now);
        for (i, key) in self.active.iter().enumerate() {
            let is_signer = self.active[..i].iter().all(|k| k.kind != key.kind);
            if is_signer {
                active.insert(0, Arc::new(key.successor()?));
                retired.push((key.clone(), now + grace));
            } else {
                active.push(key.clone());
            }
        }
        Ok(Self::assemble(active, retired))
    }

    /// A ring without the retired keys whose grace has passed (`None` when nothing changed).
    pub fn pruned(&self, now: Instant) -> Option<Self> {
        let live = self.live_retired(now);
        (live.len() != self.retired.len()).then(|| Self::assemble(self.active.clone(), live))
    }

    fn live_retired(&self, now: Instant) -> Vec<(Arc<SigningKey>, Instant)> {
        self.retired
            .iter()
            .filter(|(_, until)| *until > now)
            .cloned()
            .collect()
    }

    /// Ids of the active keys, signers first.
    pub fn active_ids(&self) -> Vec<String> {
        self.active.iter().map(|k| k.id.clone()).collect()
    }
}

fn kind_prefix(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa => "rsa",
        KeyKind::P256 | KeyKind::P384 => "ec",
        KeyKind::Ed25519 => "ed",
    }
}
