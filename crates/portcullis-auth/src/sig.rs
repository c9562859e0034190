//! Signature checks with public keys parsed once, when the key is built.
//!
//! Why: `jsonwebtoken::crypto::verify` (aws-lc-rs backend) re-does per call what depends only on
//! the key: it boxes a verifier, clones the key bytes, base64-decodes the signature into a `Vec`,
//! and has aws-lc-rs parse the public key again (for RSA it rebuilds the key from `n` and `e`, so
//! aws-lc recomputes the Montgomery context of the modulus on every verification; for EC it decodes
//! and validates the point and builds an `EVP_PKEY`). aws-lc-rs's [`ParsedPublicKey`] holds the
//! parsed `EVP_PKEY`, and its `verify_sig` runs the same aws-lc verification functions that
//! jsonwebtoken reaches through the unparsed key (`RsaPublicKeyComponents::verify`,
//! `ECDSA_P256_SHA256_FIXED.verify_sig`, `ED25519.verify_sig`): the verdicts are the same, which
//! `tests/it/differential.rs` checks against jsonwebtoken on valid and mutated signatures.
//!
//! Eager, per algorithm: aws-lc-rs ties a parsed key to one verification algorithm, and an RSA key
//! without a declared `alg` may verify any of RS256/384/512 and PS256/384/512. Each key is parsed
//! for every algorithm it may verify (one for EC and Ed25519 keys and for keys that declare an
//! `alg`, six for an RSA key without one) when it is built, i.e. when a JWKS or the configuration is
//! loaded, off the request path. The extra RSA parses cost microseconds per key per load and a few
//! KiB; in exchange there is no lazy slot to fill (no `OnceLock`, no first-request parse) and the
//! snapshot is immutable once shared. aws-lc computes an RSA key's Montgomery context on its first
//! verification and keeps it (under the key's own lock), so each (key, alg) pays it once.
//!
//! HMAC keys, and any key aws-lc-rs would not parse, have no parsed form: they are verified by
//! `jsonwebtoken::crypto::verify` exactly as before (a key that verified before is never refused).
//! The algorithm still comes from the key and the token's header only selects among the
//! algorithms the key allows (`token::verify_with_keys` filters candidates before any of this).

use aws_lc_rs::signature::{self as lc, ParsedPublicKey, RsaPublicKeyComponents};

use crate::keys::{KeyFamily, MAX_RSA_BITS};
use crate::token::JoseAlg;

/// Longest signature any supported key can produce: an RSA signature is as long as the modulus,
/// at most [`MAX_RSA_BITS`] (RSA-8192: 1024 bytes); ECDSA and Ed25519 signatures are shorter. A
/// longer signature segment is not decoded and verifies nothing.
pub(crate) const MAX_SIGNATURE_BYTES: usize = MAX_RSA_BITS / 8;

/// The RSA algorithms, each with the aws-lc-rs parameters jsonwebtoken uses for it.
const RSA_ALGS: [(JoseAlg, &lc::RsaParameters); 6] = [
    (JoseAlg::RS256, &lc::RSA_PKCS1_2048_8192_SHA256),
    (JoseAlg::RS384, &lc::RSA_PKCS1_2048_8192_SHA384),
    (JoseAlg::RS512, &lc::RSA_PKCS1_2048_8192_SHA512),
    (JoseAlg::PS256, &lc::RSA_PSS_2048_8192_SHA256),
    (JoseAlg::PS384, &lc::RSA_PSS_2048_8192_SHA384),
    (JoseAlg::PS512, &lc::RSA_PSS_2048_8192_SHA512),
];

/// A key's parsed forms, one per algorithm it may verify. Empty: verified through jsonwebtoken.
#[derive(Default)]
pub(crate) struct ParsedKeys(Vec<(JoseAlg, ParsedPublicKey)>);

impl ParsedKeys {
    /// An RSA key (big-endian `n` and `e` without leading zeros), for every RS* and PS* algorithm.
    pub(crate) fn rsa(n: &[u8], e: &[u8]) -> ParsedKeys {
        let components = RsaPublicKeyComponents { n, e };
        ParsedKeys(
            RSA_ALGS
                .iter()
                .filter_map(|(alg, params)| {
                    let parsed = components.to_parsed_public_key(params).ok()?;
                    Some((*alg, parsed))
                })
                .collect(),
        )
    }

    /// An EC key (uncompressed point) or an Ed25519 key (32 bytes), for its family's algorithm.
    pub(crate) fn public(family: KeyFamily, bytes: &[u8]) -> ParsedKeys {
        let (alg, algorithm): (JoseAlg, &'static dyn lc::VerificationAlgorithm) = match family {
            KeyFamily::EcP256 => (JoseAlg::ES256, &lc::ECDSA_P256_SHA256_FIXED),
            KeyFamily::EcP384 => (JoseAlg::ES384, &lc::ECDSA_P384_SHA384_FIXED),
            KeyFamily::Ed25519 => (JoseAlg::EdDSA, &lc::ED25519),
            KeyFamily::Rsa | KeyFamily::Hmac => return ParsedKeys::default(),
        };
        ParsedKeys(
            ParsedPublicKey::new(algorithm, bytes)
                .map(|parsed| vec![(alg, parsed)])
                .unwrap_or_default(),
        )
    }

    /// Only the parsed form for `alg` (a key that declares its algorithm never verifies another).
    pub(crate) fn restricted_to(mut self, alg: JoseAlg) -> ParsedKeys {
        self.0.retain(|(a, _)| *a == alg);
        self
    }

    /// The parsed key for `alg`, if the key has one.
    pub(crate) fn get(&self, alg: JoseAlg) -> Option<&ParsedPublicKey> {
        self.0
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, parsed)| parsed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_lc_rs::signature::{self as lc, KeyPair as _};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    use crate::token::JoseAlg;
    use crate::VerifyingKey;

    fn algs_parsed(key: &VerifyingKey) -> Vec<JoseAlg> {
        key.parsed.0.iter().map(|(alg, _)| *alg).collect()
    }

    /// The parsed path is the one taken (the differential test alone would also pass if every
    /// key fell back to jsonwebtoken).
    #[test]
    fn keys_are_parsed_for_the_algorithms_they_may_verify() {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let rsa = lc::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let c = lc::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
        let rsa_jwk = json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)});
        let key = VerifyingKey::from_jwk(&rsa_jwk, "t").unwrap();
        assert_eq!(
            algs_parsed(&key),
            super::RSA_ALGS.map(|(alg, _)| alg).to_vec(),
            "an RSA key without alg: all six"
        );
        let mut declared = rsa_jwk.clone();
        declared["alg"] = json!("PS384");
        let key = VerifyingKey::from_jwk(&declared, "t").unwrap();
        assert_eq!(algs_parsed(&key), [JoseAlg::PS384]);

        let ec = lc::EcdsaKeyPair::generate(&lc::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let point = ec.public_key().as_ref();
        let jwk =
            json!({"kty": "EC", "crv": "P-384", "x": b64(&point[1..49]), "y": b64(&point[49..])});
        let key = VerifyingKey::from_jwk(&jwk, "t").unwrap();
        assert_eq!(algs_parsed(&key), [JoseAlg::ES384]);

        let ed = lc::Ed25519KeyPair::generate().unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())});
        let key = VerifyingKey::from_jwk(&jwk, "t").unwrap();
        assert_eq!(algs_parsed(&key), [JoseAlg::EdDSA]);

        let key = VerifyingKey::from_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"}), "t").unwrap();
        assert!(algs_parsed(&key).is_empty(), "HMAC stays on jsonwebtoken");

        // A point not on the curve: aws-lc-rs does not parse it, so the key falls back to
        // jsonwebtoken (which refuses every signature with it, as before).
        let mut off_curve = point.to_vec();
        off_curve[96] ^= 1;
        let jwk = json!({"kty": "EC", "crv": "P-384", "x": b64(&off_curve[1..49]), "y": b64(&off_curve[49..])});
        let key = VerifyingKey::from_jwk(&jwk, "t").unwrap();
        assert!(algs_parsed(&key).is_empty());
    }
}
