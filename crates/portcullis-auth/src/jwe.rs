//! Encrypted tokens (JWE, RFC 7516 compact serialization): APIM's `decryption-keys`.
//!
//! A JWE is decrypted here and its plaintext handed back to [`crate::token`], which verifies the
//! nested JWS exactly as it verifies a plain one (the signature algorithm from the key, never from a
//! header). Decryption proves only that the sender held the encryption key, which for RSA-OAEP is a
//! public key: it never stands in for the signature.
//!
//! Supported (and nothing else): key management `dir`, `A128KW`, `A192KW`, `A256KW`, `RSA-OAEP`,
//! `RSA-OAEP-256`; content encryption `A128GCM`, `A192GCM`, `A256GCM`, `A128CBC-HS256`,
//! `A192CBC-HS384`, `A256CBC-HS512`. Refused: `RSA1_5` (a padding oracle by construction), ECDH-ES,
//! AES-GCM key wrap and PBES2 (not asked for; fewer algorithms, less to attack), `zip`, any `crit`.
//!
//! Built on aws-lc-rs primitives (the workspace's one crypto backend) rather than a JOSE crate: the
//! maintained Rust JWE implementations use OpenSSL (josekit, a second C crypto library) or RustCrypto's
//! `rsa`, whose RSA decryption is not constant time (RUSTSEC-2023-0071), which is exactly the
//! oracle this module must not have. The Wycheproof JWE vectors (`tests/it/wycheproof_jwe.rs`) are
//! the gate for this code.
//!
//! **No decryption oracle.** Every failure to decrypt (wrong key, bad tag, bad wrap, bad padding,
//! RSA-OAEP decoding error) is the one [`AuthError::TokenDecryptionFailed`], and all of them end at
//! the same place: when the content key cannot be unwrapped, a decoy key (an HMAC of the wrapped
//! key under a secret derived from the decryption key) takes its place and content decryption runs
//! and fails at the tag check, as RFC 7516 §11.5 advises. Tags are compared in constant time (GCM
//! inside aws-lc; CBC-HMAC with `CRYPTO_memcmp`), and the MAC is checked before any CBC padding is
//! looked at. What the answer does reveal depends only on public data: a token that is not a
//! well-formed JWE, or names an algorithm no configured key accepts, fails before any key is used.

use std::sync::Arc;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::key_wrap::{AesKek, KeyWrap as _};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{KeyError, MAX_RSA_BITS, MIN_RSA_BITS};
use crate::AuthError;

/// A JWE key management algorithm (`alg`) Portcullis accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyManagement {
    /// The shared symmetric key is the content encryption key.
    Dir,
    /// AES-128 key wrap (RFC 3394).
    A128KW,
    /// AES-192 key wrap.
    A192KW,
    /// AES-256 key wrap.
    A256KW,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
}

impl KeyManagement {
    /// Every supported algorithm.
    pub const ALL: [KeyManagement; 6] = [
        KeyManagement::Dir,
        KeyManagement::A128KW,
        KeyManagement::A192KW,
        KeyManagement::A256KW,
        KeyManagement::RsaOaep,
        KeyManagement::RsaOaep256,
    ];

    /// The JOSE name (`dir`, `A256KW`, `RSA-OAEP` ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyManagement::Dir => "dir",
            KeyManagement::A128KW => "A128KW",
            KeyManagement::A192KW => "A192KW",
            KeyManagement::A256KW => "A256KW",
            KeyManagement::RsaOaep => "RSA-OAEP",
            KeyManagement::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    /// Parse a header `alg` (case-sensitive, as RFC 7516 says). `None`: not supported.
    pub fn from_name(name: &str) -> Option<KeyManagement> {
        KeyManagement::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Parse a configured `alg`, with the reason when refused (for `check`).
    pub fn parse_configured(name: &str) -> Result<KeyManagement, KeyError> {
        if let Some(alg) = KeyManagement::from_name(name) {
            return Ok(alg);
        }
        let names: Vec<&str> = KeyManagement::ALL.iter().map(|a| a.name()).collect();
        Err(KeyError(match name {
            "RSA1_5" => "RSA1_5 is refused: RSAES-PKCS1-v1_5 decryption is a padding oracle \
                         (Bleichenbacher); have the issuer use RSA-OAEP or RSA-OAEP-256"
                .to_owned(),
            _ => format!(
                "unsupported decryption alg `{name}` (supported: {})",
                names.join(", ")
            ),
        }))
    }

    /// The key-encryption key length of an AES key wrap algorithm.
    fn kek_len(self) -> Option<usize> {
        match self {
            KeyManagement::A128KW => Some(16),
            KeyManagement::A192KW => Some(24),
            KeyManagement::A256KW => Some(32),
            _ => None,
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, KeyManagement::RsaOaep | KeyManagement::RsaOaep256)
    }
}

/// A JWE content encryption algorithm (`enc`) Portcullis accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncryption {
    /// AES-128-GCM.
    A128GCM,
    /// AES-192-GCM.
    A192GCM,
    /// AES-256-GCM.
    A256GCM,
    /// AES-128-CBC with HMAC-SHA-256 (RFC 7518 §5.2.3).
    A128CbcHs256,
    /// AES-192-CBC with HMAC-SHA-384.
    A192CbcHs384,
    /// AES-256-CBC with HMAC-SHA-512.
    A256CbcHs512,
}

impl ContentEncryption {
    /// Every supported algorithm.
    pub const ALL: [ContentEncryption; 6] = [
        ContentEncryption::A128GCM,
        ContentEncryption::A192GCM,
        ContentEncryption::A256GCM,
        ContentEncryption::A128CbcHs256,
        ContentEncryption::A192CbcHs384,
        ContentEncryption::A256CbcHs512,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            ContentEncryption::A128GCM => "A128GCM",
            ContentEncryption::A192GCM => "A192GCM",
            ContentEncryption::A256GCM => "A256GCM",
            ContentEncryption::A128CbcHs256 => "A128CBC-HS256",
            ContentEncryption::A192CbcHs384 => "A192CBC-HS384",
            ContentEncryption::A256CbcHs512 => "A256CBC-HS512",
        }
    }

    /// Parse a header `enc`. `None`: not supported.
    pub fn from_name(name: &str) -> Option<ContentEncryption> {
        ContentEncryption::ALL
            .into_iter()
            .find(|e| e.name() == name)
    }

    /// Parse a configured `enc`, with the reason when refused (for `check`).
    pub fn parse_configured(name: &str) -> Result<ContentEncryption, KeyError> {
        ContentEncryption::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = ContentEncryption::ALL.iter().map(|e| e.name()).collect();
            KeyError(format!(
                "unsupported content encryption `{name}` (supported: {})",
                names.join(", ")
            ))
        })
    }

    /// Content encryption key length in bytes.
    pub fn cek_len(self) -> usize {
        match self {
            ContentEncryption::A128GCM => 16,
            ContentEncryption::A192GCM => 24,
            ContentEncryption::A256GCM | ContentEncryption::A128CbcHs256 => 32,
            ContentEncryption::A192CbcHs384 => 48,
            ContentEncryption::A256CbcHs512 => 64,
        }
    }

    /// Initialisation vector length in bytes.
    pub fn iv_len(self) -> usize {
        if self.is_gcm() {
            12
        } else {
            16
        }
    }

    /// Authentication tag length in bytes (CBC-HMAC: half the HMAC output).
    pub fn tag_len(self) -> usize {
        if self.is_gcm() {
            16
        } else {
            self.cek_len() / 2
        }
    }

    fn is_gcm(self) -> bool {
        matches!(
            self,
            ContentEncryption::A128GCM | ContentEncryption::A192GCM | ContentEncryption::A256GCM
        )
    }
}

/// Symmetric key lengths a `decryption-keys` value may have: AES key-wrap keys (16/24/32) and
/// direct content keys (16/24/32 for GCM, 32/48/64 for CBC-HMAC).
const SYMMETRIC_LENGTHS: [usize; 5] = [16, 24, 32, 48, 64];

enum Material {
    Symmetric(Zeroizing<Vec<u8>>),
    Rsa(OaepPrivateDecryptingKey),
}

/// One decryption key. The key material is never printed (`Debug` shows kid, algorithms and
/// source only).
pub struct DecryptionKey {
    /// Matched against the JWE header's `kid` (a `kid` selects keys with that id or none).
    pub kid: Option<String>,
    /// The one key management algorithm this key accepts; `None`: every one its material fits.
    pub alg: Option<KeyManagement>,
    /// The content encryption algorithms it accepts; empty: every one that fits.
    pub enc: Vec<ContentEncryption>,
    /// Identifies the key material (part of the token cache's key scope).
    pub fingerprint: u64,
    /// Where it came from (for logs; never secret material).
    pub source: Arc<str>,
    material: Material,
    /// HMAC key for decoy content keys (see the module docs), derived from the material.
    decoy: hmac::Key,
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg.map(KeyManagement::name))
            .field("enc", &self.enc)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn key_err(msg: impl Into<String>) -> KeyError {
    KeyError(msg.into())
}

/// SHA-256 of a domain tag and the material: the fingerprint (first 8 bytes) and the decoy key.
fn derive(tag: &[u8], material: &[u8]) -> (u64, hmac::Key) {
    let fp = Sha256::new()
        .chain_update(b"portcullis jwe key fingerprint")
        .chain_update(tag)
        .chain_update(material)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&fp[..8]);
    let decoy: Zeroizing<[u8; 32]> = Zeroizing::new(
        Sha256::new()
            .chain_update(b"portcullis jwe decoy content key")
            .chain_update(material)
            .finalize()
            .into(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA512, decoy.as_slice());
    (u64::from_be_bytes(first), key)
}

impl DecryptionKey {
    /// A symmetric key (the decoded base64 `value`). Its length must fit `alg` (16/24/32 bytes for
    /// A128KW/A192KW/A256KW; for `dir`, the content key length of the `enc` it is used with).
    pub fn symmetric(
        kid: Option<String>,
        secret: &[u8],
        alg: Option<KeyManagement>,
        enc: Vec<ContentEncryption>,
        source: &str,
    ) -> Result<DecryptionKey, KeyError> {
        let len = secret.len();
        if !SYMMETRIC_LENGTHS.contains(&len) {
            return Err(key_err(format!(
                "a symmetric decryption key is 16, 24, 32, 48 or 64 bytes, this one is {len}"
            )));
        }
        match alg {
            Some(a) if a.is_rsa() => {
                return Err(key_err(format!(
                    "alg {} needs an RSA private key (`file:`), not a symmetric `value`",
                    a.name()
                )))
            }
            Some(a) => {
                if let Some(kek) = a.kek_len().filter(|k| *k != len) {
                    return Err(key_err(format!(
                        "alg {} needs a {kek}-byte key, this one is {len}",
                        a.name()
                    )));
                }
            }
            None => {}
        }
        // Without an alg the key serves every algorithm its length fits: AES key wrap (16, 24 or
        // 32 bytes) or `dir` with a content encryption whose key has its length.
        let key_wrap_fits = alg.is_none_or(|a| a.kek_len().is_some()) && len <= 32;
        for e in &enc {
            if !key_wrap_fits && e.cek_len() != len {
                return Err(key_err(format!(
                    "enc {} needs a {}-byte key with alg dir; this key is {len} bytes",
                    e.name(),
                    e.cek_len()
                )));
            }
        }
        let material = Material::Symmetric(Zeroizing::new(secret.to_vec()));
        Ok(DecryptionKey::new(kid, alg, enc, source, secret, material))
    }

    /// An RSA private key from PEM text: one `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY`
    /// (PKCS#1) block; `CERTIFICATE` blocks beside it are ignored (a PFX exported to PEM has both).
    pub fn rsa_from_pem(
        kid: Option<String>,
        pem: &[u8],
        alg: Option<KeyManagement>,
        enc: Vec<ContentEncryption>,
        source: &str,
    ) -> Result<DecryptionKey, KeyError> {
        if let Some(a) = alg.filter(|a| !a.is_rsa()) {
            return Err(key_err(format!(
                "alg {} needs a symmetric `value`, not an RSA private key",
                a.name()
            )));
        }
        let blocks = pem::parse_many(pem).map_err(|e| key_err(format!("unreadable PEM: {e}")))?;
        let mut keys = blocks.iter().filter(|b| b.tag() != "CERTIFICATE");
        let (Some(block), None) = (keys.next(), keys.next()) else {
            return Err(key_err(
                "expected exactly one `PRIVATE KEY` or `RSA PRIVATE KEY` PEM block",
            ));
        };
        let pkcs8 = match block.tag() {
            "PRIVATE KEY" => Zeroizing::new(block.contents().to_vec()),
            "RSA PRIVATE KEY" => pkcs1_to_pkcs8(block.contents()),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(key_err(
                    "the private key is password-protected; store it unencrypted (file permissions protect it)",
                ))
            }
            other => {
                return Err(key_err(format!(
                    "PEM block `{other}` is not an RSA private key"
                )))
            }
        };
        let private =
            PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|e| match e.to_string() {
                small if small == "TooSmall" => {
                    key_err(format!("the RSA key is shorter than {MIN_RSA_BITS} bits"))
                }
                other => key_err(format!("not a usable RSA private key: {other}")),
            })?;
        let bits = private.key_size_bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(key_err(format!(
                "RSA key of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
            )));
        }
        let oaep = OaepPrivateDecryptingKey::new(private)
            .map_err(|_| key_err("not a usable RSA-OAEP private key"))?;
        Ok(DecryptionKey::new(
            kid,
            alg,
            enc,
            source,
            &pkcs8,
            Material::Rsa(oaep),
        ))
    }

    /// `identity`: the bytes the fingerprint and the decoy key are derived from (the secret, or
    /// the PKCS#8 private key).
    fn new(
        kid: Option<String>,
        alg: Option<KeyManagement>,
        enc: Vec<ContentEncryption>,
        source: &str,
        identity: &[u8],
        material: Material,
    ) -> DecryptionKey {
        let tag: &[u8] = match material {
            Material::Symmetric(_) => b"oct",
            Material::Rsa(_) => b"RSA",
        };
        let (fingerprint, decoy) = derive(tag, identity);
        DecryptionKey {
            kid,
            alg,
            enc,
            fingerprint,
            source: Arc::from(source),
            material,
            decoy,
        }
    }

    /// Whether this key may decrypt a token with these header algorithms.
    fn accepts(&self, alg: KeyManagement, enc: ContentEncryption) -> bool {
        let material_fits = match (&self.material, alg) {
            (Material::Rsa(_), a) => a.is_rsa(),
            (Material::Symmetric(k), KeyManagement::Dir) => k.len() == enc.cek_len(),
            (Material::Symmetric(k), a) => a.kek_len() == Some(k.len()),
        };
        material_fits
            && self.alg.is_none_or(|a| a == alg)
            && (self.enc.is_empty() || self.enc.contains(&enc))
    }

    /// The content key, or a decoy of the right length when it cannot be recovered.
    fn content_key(
        &self,
        alg: KeyManagement,
        enc: ContentEncryption,
        encrypted_key: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        let want = enc.cek_len();
        let recovered = match (&self.material, alg) {
            (Material::Symmetric(k), KeyManagement::Dir) => {
                encrypted_key.is_empty().then(|| k.clone())
            }
            (Material::Symmetric(k), _) => aes_key_unwrap(k, encrypted_key),
            (Material::Rsa(rsa), KeyManagement::RsaOaep) => {
                rsa_oaep(rsa, &OAEP_SHA1_MGF1SHA1, encrypted_key)
            }
            (Material::Rsa(rsa), _) => rsa_oaep(rsa, &OAEP_SHA256_MGF1SHA256, encrypted_key),
        };
        match recovered {
            Some(cek) if cek.len() == want => cek,
            _ => {
                let tag = hmac::sign(&self.decoy, encrypted_key);
                Zeroizing::new(tag.as_ref()[..want].to_vec())
            }
        }
    }
}

/// A policy's decryption keys, in configuration order (cheap to clone; empty by default: then
/// encrypted tokens are refused as invalid).
#[derive(Debug, Clone, Default)]
pub struct DecryptionKeys(Arc<[DecryptionKey]>);

impl DecryptionKeys {
    /// These keys.
    pub fn new(keys: Vec<DecryptionKey>) -> DecryptionKeys {
        DecryptionKeys(keys.into())
    }
}

impl std::ops::Deref for DecryptionKeys {
    type Target = [DecryptionKey];

    fn deref(&self) -> &[DecryptionKey] {
        &self.0
    }
}

/// The plaintext of a JWE and what its header said.
#[derive(Debug)]
pub struct Decrypted {
    /// The decrypted payload (for a JWT: a nested compact JWS, or a claims set).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Key management algorithm used.
    pub alg: KeyManagement,
    /// Content encryption used.
    pub enc: ContentEncryption,
    /// Header `kid`.
    pub kid: Option<String>,
    /// Header `cty` said `JWT`: the plaintext must be a nested JWS.
    pub nested_jwt: bool,
}

fn failed(detail: &'static str) -> AuthError {
    AuthError::TokenDecryptionFailed { detail }
}

/// Whether `token` has the five segments of a compact JWE (four dots).
pub fn is_compact_jwe(token: &str) -> bool {
    memchr::memchr_iter(b'.', token.as_bytes()).count() == 4
}

/// Decrypt a compact JWE with the first of `keys` that accepts its header and authenticates it.
/// Every failure is [`AuthError::TokenDecryptionFailed`] (the detail is for logs).
pub fn decrypt(token: &str, keys: &[DecryptionKey]) -> Result<Decrypted, AuthError> {
    if token.len() > crate::MAX_TOKEN_BYTES {
        return Err(failed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(header_seg), Some(ek), Some(iv), Some(ct), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(failed("not a compact JWE"));
    };
    if header_seg.is_empty() {
        return Err(failed("empty header"));
    }
    let header = crate::token::parse_jwe_header(header_seg).map_err(failed)?;
    if header.zip {
        return Err(failed("compressed (zip) JWE refused"));
    }
    let alg = KeyManagement::from_name(&header.alg).ok_or(failed("unsupported JWE alg"))?;
    let enc_name = header.enc.ok_or(failed("JWE header has no enc"))?;
    let enc = ContentEncryption::from_name(&enc_name).ok_or(failed("unsupported JWE enc"))?;
    let nested_jwt = match header.cty.as_deref() {
        None => false,
        Some(cty)
            if cty.eq_ignore_ascii_case("JWT") || cty.eq_ignore_ascii_case("application/jwt") =>
        {
            true
        }
        Some(_) => return Err(failed("JWE cty is not JWT")),
    };
    let kid = header.kid;
    let kid_matches = |k: &DecryptionKey| match (kid.as_deref(), k.kid.as_deref()) {
        (Some(want), Some(have)) => want == have,
        _ => true,
    };
    let mut candidates = keys
        .iter()
        .filter(|k| kid_matches(k) && k.accepts(alg, enc))
        .peekable();
    if candidates.peek().is_none() {
        return Err(failed("no decryption key accepts this kid, alg and enc"));
    }
    let decode = |s: &str| crate::b64::decode(s).ok_or(failed("JWE segment is not base64url"));
    let (encrypted_key, iv, ciphertext, tag) =
        (decode(ek)?, decode(iv)?, decode(ct)?, decode(tag)?);
    if iv.len() != enc.iv_len() || tag.len() != enc.tag_len() {
        return Err(failed("JWE iv or tag has the wrong length"));
    }
    let aad = header_seg.as_bytes();
    for key in candidates {
        let cek = key.content_key(alg, enc, &encrypted_key);
        if let Some(plaintext) = open(enc, &cek, aad, &iv, &ciphertext, &tag) {
            return Ok(Decrypted {
                plaintext,
                alg,
                enc,
                kid,
                nested_jwt,
            });
        }
    }
    Err(failed("decryption failed"))
}

/// Authenticated decryption of the content. `None` for every failure.
fn open(
    enc: ContentEncryption,
    cek: &[u8],
    aad: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if enc.is_gcm() {
        let algorithm = match enc {
            ContentEncryption::A128GCM => &aead::AES_128_GCM,
            ContentEncryption::A192GCM => &aead::AES_192_GCM,
            _ => &aead::AES_256_GCM,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, cek).ok()?);
        let nonce = Nonce::try_assume_unique_for_key(iv).ok()?;
        let mut in_out = Zeroizing::new(Vec::with_capacity(ciphertext.len() + tag.len()));
        in_out.extend_from_slice(ciphertext);
        in_out.extend_from_slice(tag);
        let len = key
            .open_in_place(nonce, Aad::from(aad), in_out.as_mut_slice())
            .ok()?
            .len();
        in_out.truncate(len);
        return Some(in_out);
    }
    let (mac_alg, cipher) = match enc {
        ContentEncryption::A128CbcHs256 => (hmac::HMAC_SHA256, &aws_lc_rs::cipher::AES_128),
        ContentEncryption::A192CbcHs384 => (hmac::HMAC_SHA384, &aws_lc_rs::cipher::AES_192),
        _ => (hmac::HMAC_SHA512, &aws_lc_rs::cipher::AES_256),
    };
    let (mac_key, enc_key) = cek.split_at(cek.len() / 2);
    // RFC 7518 §5.2.2.2: MAC over AAD || IV || ciphertext || AL (AAD length in bits, 64-bit BE),
    // truncated to half; compared in constant time before anything is decrypted.
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(mac_alg, mac_key));
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(ciphertext);
    ctx.update(&(aad.len() as u64).wrapping_mul(8).to_be_bytes());
    let mac = ctx.sign();
    verify_slices_are_equal(mac.as_ref().get(..tag.len())?, tag).ok()?;
    let key =
        PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(cipher, enc_key).ok()?).ok()?;
    let iv: [u8; 16] = iv.try_into().ok()?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .decrypt(in_out.as_mut_slice(), DecryptionContext::Iv128(iv.into()))
        .ok()?
        .len();
    in_out.truncate(len);
    Some(in_out)
}

/// RFC 3394 AES key unwrap. AES-128 and AES-256 use aws-lc's implementation; aws-lc-rs exposes no
/// AES-192 key wrap, so A192KW runs RFC 3394's unwrap over AES-192 block decryptions
/// ([`rfc3394_unwrap`], checked against aws-lc's for the other sizes by the unit tests).
fn aes_key_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let cipher = match kek.len() {
        16 => &aws_lc_rs::key_wrap::AES_128,
        32 => &aws_lc_rs::key_wrap::AES_256,
        24 => return rfc3394_unwrap(kek, wrapped),
        _ => return None,
    };
    let len = AesKek::new(cipher, kek)
        .ok()?
        .unwrap(wrapped, out.as_mut_slice())
        .ok()?
        .len();
    out.truncate(len);
    Some(out)
}

/// RFC 3394 §2.2.2 (index-based unwrap) with an AES block cipher of any key size.
pub(crate) fn rfc3394_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    const DEFAULT_IV: [u8; 8] = [0xa6; 8];
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return None;
    }
    let cipher = match kek.len() {
        16 => &aws_lc_rs::cipher::AES_128,
        24 => &aws_lc_rs::cipher::AES_192,
        32 => &aws_lc_rs::cipher::AES_256,
        _ => return None,
    };
    let key = DecryptingKey::ecb(UnboundCipherKey::new(cipher, kek).ok()?).ok()?;
    let n = wrapped.len() / 8 - 1;
    let mut a = [0u8; 8];
    a.copy_from_slice(&wrapped[..8]);
    let mut r = Zeroizing::new(wrapped[8..].to_vec());
    let mut block = Zeroizing::new([0u8; 16]);
    for j in (0..6u64).rev() {
        for i in (1..=n).rev() {
            let t = (n as u64) * j + i as u64;
            for (byte, t_byte) in a.iter_mut().zip(t.to_be_bytes()) {
                *byte ^= t_byte;
            }
            let ri = &mut r[(i - 1) * 8..i * 8];
            block[..8].copy_from_slice(&a);
            block[8..].copy_from_slice(ri);
            key.decrypt(block.as_mut_slice(), DecryptionContext::None)
                .ok()?;
            a.copy_from_slice(&block[..8]);
            ri.copy_from_slice(&block[8..]);
        }
    }
    verify_slices_are_equal(&a, &DEFAULT_IV).ok()?;
    Some(r)
}

fn rsa_oaep(
    key: &OaepPrivateDecryptingKey,
    algorithm: &'static OaepAlgorithm,
    encrypted_key: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if encrypted_key.len() != key.key_size_bytes() {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let len = key
        .decrypt(algorithm, encrypted_key, out.as_mut_slice(), None)
        .ok()?
        .len();
    out.truncate(len);
    Some(out)
}

/// Wrap a PKCS#1 `RSAPrivateKey` in a PKCS#8 `PrivateKeyInfo` (rsaEncryption, NULL parameters):
/// aws-lc-rs reads RSA decryption keys from PKCS#8 only.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
    const VERSION_AND_ALGORITHM: [u8; 18] = [
        0x02, 0x01, 0x00, // version 0
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
        0x00, // rsaEncryption, NULL
    ];
    let mut octets = vec![0x04];
    der_len(&mut octets, pkcs1.len());
    let mut body = Zeroizing::new(Vec::with_capacity(pkcs1.len() + 32));
    body.extend_from_slice(&VERSION_AND_ALGORITHM);
    body.extend_from_slice(&octets);
    body.extend_from_slice(pkcs1);
    let mut out = Zeroizing::new(vec![0x30]);
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// A DER length (short form below 128, else long form).
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rfc3394_vectors() {
        // RFC 3394 §4.1 (128-bit KEK), §4.2 (192-bit KEK) and §4.6 (256-bit KEK, 256-bit data).
        let cases = [
            (
                "000102030405060708090A0B0C0D0E0F",
                "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
                "00112233445566778899AABBCCDDEEFF",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
                "00112233445566778899AABBCCDDEEFF",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
                "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
            ),
        ];
        for (kek, wrapped, key) in cases {
            let (kek, wrapped, key) = (
                hex::decode(kek).unwrap(),
                hex::decode(wrapped).unwrap(),
                hex::decode(key).unwrap(),
            );
            assert_eq!(rfc3394_unwrap(&kek, &wrapped).unwrap().as_slice(), key);
            assert_eq!(aes_key_unwrap(&kek, &wrapped).unwrap().as_slice(), key);
            let mut bad = wrapped.clone();
            bad[3] ^= 1;
            assert!(rfc3394_unwrap(&kek, &bad).is_none());
            assert!(aes_key_unwrap(&kek, &bad).is_none());
        }
    }

    /// The hand-rolled unwrap agrees with aws-lc's on the sizes aws-lc has, over random inputs
    /// and their mutations.
    #[test]
    fn rfc3394_unwrap_agrees_with_aws_lc() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3394);
        for _ in 0..300 {
            let kek_len = if rng.gen() { 16 } else { 32 };
            let kek: Vec<u8> = (0..kek_len).map(|_| rng.gen()).collect();
            let cek: Vec<u8> = (0..8 * rng.gen_range(2..9)).map(|_| rng.gen()).collect();
            let cipher = if kek_len == 16 {
                &aws_lc_rs::key_wrap::AES_128
            } else {
                &aws_lc_rs::key_wrap::AES_256
            };
            let mut wrapped = vec![0u8; cek.len() + 8];
            AesKek::new(cipher, &kek)
                .unwrap()
                .wrap(&cek, &mut wrapped)
                .unwrap();
            if rng.gen_bool(0.5) {
                let i = rng.gen_range(0..wrapped.len());
                wrapped[i] ^= 1 << rng.gen_range(0..8);
            }
            let ours = rfc3394_unwrap(&kek, &wrapped).map(|k| k.to_vec());
            let theirs = aes_key_unwrap(&kek, &wrapped).map(|k| k.to_vec());
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn pkcs1_wrapping_has_the_right_der_lengths() {
        let mut out = Vec::new();
        der_len(&mut out, 5);
        der_len(&mut out, 200);
        der_len(&mut out, 1190);
        assert_eq!(out, [5, 0x81, 200, 0x82, 0x04, 0xa6]);
    }

    #[test]
    fn symmetric_key_lengths_and_algorithms() {
        let k =
            |len: usize, alg, enc| DecryptionKey::symmetric(None, &vec![7u8; len], alg, enc, "t");
        assert!(k(32, None, vec![]).is_ok());
        assert!(k(48, None, vec![]).is_ok());
        assert!(k(20, None, vec![]).is_err());
        assert!(k(16, Some(KeyManagement::A256KW), vec![]).is_err());
        assert!(k(24, Some(KeyManagement::A192KW), vec![]).is_ok());
        assert!(k(32, Some(KeyManagement::RsaOaep), vec![]).is_err());
        assert!(k(
            64,
            Some(KeyManagement::Dir),
            vec![ContentEncryption::A256CbcHs512]
        )
        .is_ok());
        assert!(k(
            64,
            Some(KeyManagement::Dir),
            vec![ContentEncryption::A256GCM]
        )
        .is_err());
        assert!(k(48, Some(KeyManagement::A256KW), vec![]).is_err());
        assert!(KeyManagement::parse_configured("RSA1_5")
            .unwrap_err()
            .0
            .contains("oracle"));
        let key = k(16, None, vec![]).unwrap();
        assert!(key.accepts(KeyManagement::A128KW, ContentEncryption::A256CbcHs512));
        assert!(key.accepts(KeyManagement::Dir, ContentEncryption::A128GCM));
        assert!(!key.accepts(KeyManagement::Dir, ContentEncryption::A256GCM));
        assert!(!key.accepts(KeyManagement::A256KW, ContentEncryption::A128GCM));
        assert!(!key.accepts(KeyManagement::RsaOaep, ContentEncryption::A128GCM));
        let debug = format!("{key:?}");
        assert!(!debug.contains("7, 7"), "{debug}");
    }

    #[test]
    fn a_decoy_key_has_the_content_key_length_and_depends_on_the_wrapped_key() {
        let key = DecryptionKey::symmetric(None, &[9u8; 16], None, vec![], "t").unwrap();
        for enc in ContentEncryption::ALL {
            let a = key.content_key(KeyManagement::A128KW, enc, &[1u8; 40]);
            let b = key.content_key(KeyManagement::A128KW, enc, &[2u8; 40]);
            assert_eq!(a.len(), enc.cek_len());
            assert_ne!(a, b);
        }
    }
}
