//! Signing keys: generated at first start and persisted as PKCS#8 PEM (or read from files), the
//! published JWKS (prebuilt bytes, so serving it allocates nothing), and rotation with a grace
//! period during which the previous key stays published.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::PublicKeyData;
use serde_json::{json, Value};
use sha1::Digest;

use crate::config::{KeyConfig, KeyKind, SigningAlg};
use crate::error::IdpError;

/// The XML-DSig URI .NET-style STSs put in `alg` for RS512.
pub const XMLDSIG_RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";

/// One private key with its published public half.
pub struct SigningKey {
    /// `kid`.
    pub id: String,
    /// Default algorithm.
    pub alg: SigningAlg,
    encoding: EncodingKey,
    jwk: Value,
    /// Upper-case hex SHA-1 thumbprint of the public key (RSA), the dotnet-sts profile's `kid`.
    pub sts_kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn rcgen_alg(alg: SigningAlg) -> &'static rcgen::SignatureAlgorithm {
    match alg.kind() {
        KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
        KeyKind::Ec => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Ed => &rcgen::PKCS_ED25519,
    }
}

fn key_err(what: impl std::fmt::Display) -> IdpError {
    IdpError::Key(what.to_string())
}

impl SigningKey {
    /// Generates a fresh key in memory.
    pub fn generate(id: String, alg: SigningAlg) -> Result<Self, IdpError> {
        let pair = rcgen::KeyPair::generate_for(rcgen_alg(alg)).map_err(key_err)?;
        Self::from_pem(id, alg, &pair.serialize_pem())
    }

    /// Reads the key file, or generates a key and writes it there (mode 0600) when absent;
    /// without a file the key lives in memory only.
    pub fn load_or_generate(config: &KeyConfig) -> Result<Self, IdpError> {
        let Some(path) = &config.private_key_file else {
            return Self::generate(config.id.clone(), config.alg);
        };
        let ctx = |e: &dyn std::fmt::Display| key_err(format!("{}: {e}", path.display()));
        if path.exists() {
            let pem = std::fs::read_to_string(path).map_err(|e| ctx(&e))?;
            return Self::from_pem(config.id.clone(), config.alg, &pem).map_err(|e| ctx(&e));
        }
        let pair = rcgen::KeyPair::generate_for(rcgen_alg(config.alg)).map_err(key_err)?;
        let pem = pair.serialize_pem();
        write_private(path, &pem).map_err(|e| ctx(&e))?;
        tracing::info!(kid = %config.id, path = %path.display(), "generated signing key");
        Self::from_pem(config.id.clone(), config.alg, &pem)
    }

    /// Builds a key from PKCS#8 PEM text.
    pub fn from_pem(id: String, alg: SigningAlg, pem: &str) -> Result<Self, IdpError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(key_err)?;
        if pair.algorithm() != rcgen_alg(alg) && !(alg.kind() == KeyKind::Rsa && is_rsa(&pair)) {
            return Err(key_err(format!("key {id} is not a {alg:?} key")));
        }
        let bytes = pem.as_bytes();
        let encoding = match alg.kind() {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(bytes),
            KeyKind::Ec => EncodingKey::from_ec_pem(bytes),
            KeyKind::Ed => EncodingKey::from_ed_pem(bytes),
        }
        .map_err(|e| key_err(format!("key {id}: {e}")))?;
        let mut jwk = public_jwk(&encoding, &pair, alg)?;
        jwk["kid"] = json!(id);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(alg_name(alg.jose()));
        let sts_kid = (alg.kind() == KeyKind::Rsa)
            .then(|| hex::encode_upper(sha1::Sha1::digest(pair.subject_public_key_info())));
        Ok(Self {
            id,
            alg,
            encoding,
            jwk,
            sts_kid,
        })
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

    fn published(&self) -> impl Iterator<Item = Value> + '_ {
        let alias = self.sts_kid.as_ref().map(|kid| {
            let mut jwk = self.jwk.clone();
            jwk["kid"] = json!(kid);
            jwk["alg"] = json!("RS512");
            jwk
        });
        std::iter::once(self.jwk.clone()).chain(alias)
    }
}

fn is_rsa(pair: &rcgen::KeyPair) -> bool {
    [
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ]
    .contains(&pair.algorithm())
}

/// The JOSE name of an algorithm.
pub fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn public_jwk(
    encoding: &EncodingKey,
    pair: &rcgen::KeyPair,
    alg: SigningAlg,
) -> Result<Value, IdpError> {
    if alg.kind() == KeyKind::Ed {
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
}

impl KeyRing {
    /// Builds a ring from the configured keys.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self::assemble(keys.into_iter().map(Arc::new).collect(), Vec::new())
    }

    fn assemble(active: Vec<Arc<SigningKey>>, retired: Vec<(Arc<SigningKey>, Instant)>) -> Self {
        let keys: Vec<Value> = active
            .iter()
            .chain(retired.iter().map(|(k, _)| k))
            .flat_map(|k| k.published().collect::<Vec<_>>())
            .collect();
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        Self {
            active,
            retired,
            jwks,
        }
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// The key that signs for this kind (the first configured of that kind).
    pub fn signer(&self, kind: KeyKind) -> Option<&Arc<SigningKey>> {
        self.active.iter().find(|k| k.alg.kind() == kind)
    }

    /// A new ring where each kind's signer is replaced by a fresh key; the old signers stay
    /// published until `now + grace`. Keys whose grace has passed are dropped.
    pub fn rotated(&self, now: Instant, grace: Duration) -> Result<Self, IdpError> {
        let mut active = Vec::with_capacity(self.active.len());
        let mut retired = self.live_retired(now);
        for (i, key) in self.active.iter().enumerate() {
            let is_signer = self.active[..i]
                .iter()
                .all(|k| k.alg.kind() != key.alg.kind());
            if is_signer {
                let id = format!("{}-{:08x}", kind_prefix(key.alg), rand::random::<u32>());
                active.insert(0, Arc::new(SigningKey::generate(id, key.alg)?));
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

fn kind_prefix(alg: SigningAlg) -> &'static str {
    match alg.kind() {
        KeyKind::Rsa => "rsa",
        KeyKind::Ec => "ec",
        KeyKind::Ed => "ed",
    }
}
