//! JWE (compact) encryption for tests: the issuer side of the gateway's `decryption-keys`.
//!
//! Independent of `portcullis-auth` (which only decrypts), built on aws-lc-rs primitives: AES-GCM,
//! AES-CBC + HMAC (RFC 7518 §5.2), AES key wrap (RFC 3394; A192KW by hand over AES-192 blocks, which
//! aws-lc-rs does not wrap), RSA-OAEP, RSA-OAEP-256 and, so tests can check that it is refused,
//! RSA1_5. Any header may be given (`zip`, `crit`, a wrong `enc` ...): the header is what is sent.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    EncryptingKey, EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::hmac;
use aws_lc_rs::key_wrap::{AesKek, KeyWrap as _};
use aws_lc_rs::rsa::{
    KeySize, OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use serde_json::Value;

use crate::jwks_server::{b64url, pem_encode};

/// Why a JWE could not be made (a test setup error).
#[derive(Debug, thiserror::Error)]
#[error("jwe: {0}")]
pub struct JweError(pub String);

fn err(msg: impl Into<String>) -> JweError {
    JweError(msg.into())
}

/// An RSA key pair for token encryption: the gateway holds the private key (PEM), the issuer
/// encrypts to the public key.
pub struct RsaEncryptionKey {
    private: PrivateDecryptingKey,
    public: PublicEncryptingKey,
}

impl RsaEncryptionKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> Result<RsaEncryptionKey, JweError> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|e| err(format!("generate: {e}")))?;
        let public = private.public_key();
        Ok(RsaEncryptionKey { private, public })
    }

    /// The private key as PKCS#8 PEM (`PRIVATE KEY`), what `decryption-keys: [{file: ..}]` reads.
    pub fn private_pem(&self) -> Result<String, JweError> {
        let der: Pkcs8V1Der<'static> = self
            .private
            .as_der()
            .map_err(|e| err(format!("pkcs8: {e}")))?;
        Ok(pem_encode("PRIVATE KEY", der.as_ref()))
    }
}

/// The key an issuer encrypts with.
pub enum EncryptionKey<'k> {
    /// A shared symmetric key (`dir` or AES key wrap).
    Symmetric(&'k [u8]),
    /// The public half of an RSA key (RSA-OAEP, RSA-OAEP-256, RSA1_5).
    Rsa(&'k RsaEncryptionKey),
}

/// Content key, IV and tag lengths of an `enc`.
fn enc_params(enc: &str) -> Result<(usize, usize), JweError> {
    Ok(match enc {
        "A128GCM" => (16, 12),
        "A192GCM" => (24, 12),
        "A256GCM" => (32, 12),
        "A128CBC-HS256" => (32, 16),
        "A192CBC-HS384" => (48, 16),
        "A256CBC-HS512" => (64, 16),
        other => return Err(err(format!("unknown enc {other}"))),
    })
}

fn random(len: usize) -> Result<Vec<u8>, JweError> {
    let mut out = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| err("rand"))?;
    Ok(out)
}

/// Encrypt `plaintext` as a compact JWE with this protected header (its `alg` and `enc` decide the
/// algorithms). For `dir` the symmetric key is the content key.
pub fn encrypt(
    header: &Value,
    key: &EncryptionKey<'_>,
    plaintext: &[u8],
) -> Result<String, JweError> {
    let alg = header["alg"]
        .as_str()
        .ok_or_else(|| err("header has no alg"))?;
    let enc = header["enc"]
        .as_str()
        .ok_or_else(|| err("header has no enc"))?;
    let (cek_len, iv_len) = enc_params(enc)?;
    let (cek, encrypted_key) = match (alg, key) {
        ("dir", EncryptionKey::Symmetric(k)) => (k.to_vec(), Vec::new()),
        ("A128KW" | "A192KW" | "A256KW", EncryptionKey::Symmetric(k)) => {
            let cek = random(cek_len)?;
            let wrapped = aes_key_wrap(k, &cek)?;
            (cek, wrapped)
        }
        ("RSA-OAEP" | "RSA-OAEP-256" | "RSA1_5", EncryptionKey::Rsa(k)) => {
            let cek = random(cek_len)?;
            let wrapped = rsa_encrypt(alg, k, &cek)?;
            (cek, wrapped)
        }
        _ => return Err(err(format!("alg {alg} does not fit the key"))),
    };
    let header_b64 = b64url(header.to_string().as_bytes());
    let iv = random(iv_len)?;
    let (ciphertext, tag) = seal(enc, &cek, header_b64.as_bytes(), &iv, plaintext)?;
    Ok(format!(
        "{header_b64}.{}.{}.{}.{}",
        b64url(&encrypted_key),
        b64url(&iv),
        b64url(&ciphertext),
        b64url(&tag)
    ))
}

fn seal(
    enc: &str,
    cek: &[u8],
    aad: &[u8],
    iv: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), JweError> {
    if enc.ends_with("GCM") {
        let algorithm = match cek.len() {
            16 => &aead::AES_128_GCM,
            24 => &aead::AES_192_GCM,
            _ => &aead::AES_256_GCM,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, cek).map_err(|_| err("gcm key"))?);
        let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| err("nonce"))?;
        let mut in_out = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut in_out)
            .map_err(|_| err("gcm seal"))?;
        return Ok((in_out, tag.as_ref().to_vec()));
    }
    let half = cek.len() / 2;
    let (mac_key, enc_key) = cek.split_at(half);
    let (mac_alg, cipher) = match half {
        16 => (hmac::HMAC_SHA256, &aws_lc_rs::cipher::AES_128),
        24 => (hmac::HMAC_SHA384, &aws_lc_rs::cipher::AES_192),
        _ => (hmac::HMAC_SHA512, &aws_lc_rs::cipher::AES_256),
    };
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(cipher, enc_key).map_err(|_| err("cbc key"))?,
    )
    .map_err(|_| err("cbc"))?;
    let iv16: [u8; 16] = iv.try_into().map_err(|_| err("iv"))?;
    let mut ciphertext = plaintext.to_vec();
    key.less_safe_encrypt(&mut ciphertext, EncryptionContext::Iv128(iv16.into()))
        .map_err(|_| err("cbc encrypt"))?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(mac_alg, mac_key));
    ctx.update(aad);
    ctx.update(iv);
    ctx.update(&ciphertext);
    ctx.update(&((aad.len() as u64) * 8).to_be_bytes());
    let tag = ctx.sign().as_ref()[..half].to_vec();
    Ok((ciphertext, tag))
}

/// RFC 3394 AES key wrap (aws-lc for 128/256-bit KEKs, by hand over AES-192 blocks otherwise).
pub fn aes_key_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, JweError> {
    let mut out = vec![0u8; key.len() + 8];
    let cipher = match kek.len() {
        16 => &aws_lc_rs::key_wrap::AES_128,
        32 => &aws_lc_rs::key_wrap::AES_256,
        24 => return aes192_key_wrap(kek, key),
        n => return Err(err(format!("no AES key wrap with a {n}-byte key"))),
    };
    AesKek::new(cipher, kek)
        .and_then(|k| k.wrap(key, &mut out).map(|_| ()))
        .map_err(|_| err("key wrap"))?;
    Ok(out)
}

/// RFC 3394 §2.2.1 with AES-192.
fn aes192_key_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, JweError> {
    let aes = EncryptingKey::ecb(
        UnboundCipherKey::new(&aws_lc_rs::cipher::AES_192, kek).map_err(|_| err("aes-192 key"))?,
    )
    .map_err(|_| err("ecb"))?;
    let n = key.len() / 8;
    let mut a = [0xa6u8; 8];
    let mut r = key.to_vec();
    for j in 0..6u64 {
        for i in 1..=n {
            let mut block = [0u8; 16];
            block[..8].copy_from_slice(&a);
            block[8..].copy_from_slice(&r[(i - 1) * 8..i * 8]);
            aes.less_safe_encrypt(&mut block, EncryptionContext::None)
                .map_err(|_| err("aes block"))?;
            let t = (n as u64) * j + i as u64;
            a.copy_from_slice(&block[..8]);
            for (byte, t_byte) in a.iter_mut().zip(t.to_be_bytes()) {
                *byte ^= t_byte;
            }
            r[(i - 1) * 8..i * 8].copy_from_slice(&block[8..]);
        }
    }
    let mut out = a.to_vec();
    out.extend_from_slice(&r);
    Ok(out)
}

fn rsa_encrypt(alg: &str, key: &RsaEncryptionKey, cek: &[u8]) -> Result<Vec<u8>, JweError> {
    let mut out = vec![0u8; key.public.key_size_bytes()];
    let len = if alg == "RSA1_5" {
        let pkcs1 = Pkcs1PublicEncryptingKey::new(key.public.clone()).map_err(|_| err("pkcs1"))?;
        pkcs1
            .encrypt(cek, &mut out)
            .map_err(|_| err("pkcs1 encrypt"))?
            .len()
    } else {
        let oaep = OaepPublicEncryptingKey::new(key.public.clone()).map_err(|_| err("oaep"))?;
        let algorithm = if alg == "RSA-OAEP" {
            &OAEP_SHA1_MGF1SHA1
        } else {
            &OAEP_SHA256_MGF1SHA256
        };
        oaep.encrypt(algorithm, cek, &mut out, None)
            .map_err(|_| err("oaep encrypt"))?
            .len()
    };
    out.truncate(len);
    Ok(out)
}
