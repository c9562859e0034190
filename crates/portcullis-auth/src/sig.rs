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
//! ECDSA keys are parsed for aws-lc-rs's ASN.1 (DER) signature format, and the JWS signature (the
//! fixed `r || s` of RFC 7518 3.4) is re-encoded as DER here, on the stack ([`fixed_to_der`]).
//! aws-lc-rs's `*_FIXED` algorithms do the same re-encoding through aws-lc: two `BIGNUM`s, an
//! `ECDSA_SIG` and a `CBB`, six heap allocations and their frees per verification, before
//! `EVP_DigestVerify` parses the DER back. The encoding is the canonical one aws-lc writes (each
//! integer minimal, a zero byte before a high bit), so aws-lc's check that the DER it parsed
//! re-encodes to the same bytes passes, and the verdict is the one `*_FIXED` gives: a unit test
//! compares both on valid, mutated and edge-case signatures, besides `tests/it/differential.rs`.
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
            KeyFamily::EcP256 => (JoseAlg::ES256, &lc::ECDSA_P256_SHA256_ASN1),
            KeyFamily::EcP384 => (JoseAlg::ES384, &lc::ECDSA_P384_SHA384_ASN1),
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

/// Whether the decoded JWS `signature` signs `message` under `alg` with `parsed`, the key's form
/// parsed for `alg` ([`ParsedKeys::get`]). ECDSA signatures are re-encoded as DER first.
pub(crate) fn verify(
    parsed: &ParsedPublicKey,
    alg: JoseAlg,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let half = match alg {
        JoseAlg::ES256 => 32,
        JoseAlg::ES384 => 48,
        _ => return parsed.verify_sig(message, signature).is_ok(),
    };
    let mut der = [0u8; MAX_DER_SIGNATURE];
    fixed_to_der(signature, half, &mut der)
        .is_some_and(|der| parsed.verify_sig(message, der).is_ok())
}

/// The longest DER ECDSA signature [`fixed_to_der`] writes: P-384's, a SEQUENCE of two INTEGERs
/// of at most 49 bytes (48 and a leading zero), each with a 2-byte header.
const MAX_DER_SIGNATURE: usize = 2 + 2 * (2 + 49);

/// A JWS ECDSA signature (`r || s`, each `half` bytes, the curve's size, big-endian) as the DER
/// `ECDSA-Sig-Value` aws-lc writes for it: each INTEGER without leading zero bytes (zero itself
/// as one zero byte), with a zero byte before a high bit. `None` unless `fixed` is two halves of
/// `half` bytes, `half` at most P-384's 48.
fn fixed_to_der<'a>(
    fixed: &[u8],
    half: usize,
    out: &'a mut [u8; MAX_DER_SIGNATURE],
) -> Option<&'a [u8]> {
    if half > 48 || fixed.len() != 2 * half {
        return None;
    }
    let (r, s) = fixed.split_at(half);
    let mut len = 2;
    for integer in [r, s] {
        let first = integer
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(integer.len());
        let digits = integer
            .get(first..)
            .filter(|d| !d.is_empty())
            .unwrap_or(&[0]);
        let pad = usize::from(digits[0] & 0x80 != 0);
        let body = pad + digits.len();
        out[len] = 0x02;
        out[len + 1] = u8::try_from(body).ok()?;
        out[len + 2] = 0;
        out[len + 2 + pad..len + 2 + body].copy_from_slice(digits);
        len += 2 + body;
    }
    out[0] = 0x30;
    // At most 2 x 51 = 102 bytes of content: the short form of the length.
    out[1] = u8::try_from(len - 2).ok()?;
    Some(&out[..len])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_lc_rs::signature::{self as lc, KeyPair as _};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde_json::json;

    use crate::keys::KeyFamily;
    use crate::token::JoseAlg;
    use crate::VerifyingKey;

    fn algs_parsed(key: &VerifyingKey) -> Vec<JoseAlg> {
        key.parsed.0.iter().map(|(alg, _)| *alg).collect()
    }

    /// DER `ECDSA-Sig-Value` back to the fixed `r || s` of `half` bytes each (test reference).
    fn der_to_fixed(der: &[u8], half: usize) -> Vec<u8> {
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        let mut at = 2;
        let mut fixed = Vec::new();
        for _ in 0..2 {
            assert_eq!(der[at], 0x02);
            let len = usize::from(der[at + 1]);
            let digits = &der[at + 2..at + 2 + len];
            let digits = if digits.len() > half {
                &digits[1..]
            } else {
                digits
            };
            fixed.extend(std::iter::repeat_n(0, half - digits.len()));
            fixed.extend_from_slice(digits);
            at += 2 + len;
        }
        assert_eq!(at, der.len());
        fixed
    }

    /// `fixed_to_der` writes exactly the DER aws-lc writes: signatures aws-lc signs as DER, taken
    /// apart to `r || s` and encoded again, come back byte for byte (over 3,000 signatures of
    /// each curve, so integers with leading zero bytes, which need dropping, and with a high bit,
    /// which need a zero byte, are among them: each about 1 in 256 and 1 in 2).
    #[test]
    fn fixed_to_der_writes_the_der_aws_lc_writes() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let curves: [(&lc::EcdsaSigningAlgorithm, usize); 2] = [
            (&lc::ECDSA_P256_SHA256_ASN1_SIGNING, 32),
            (&lc::ECDSA_P384_SHA384_ASN1_SIGNING, 48),
        ];
        for (signing, half) in curves {
            let pair = lc::EcdsaKeyPair::generate(signing).unwrap();
            let (mut short, mut high) = (0, 0);
            for i in 0u32..3000 {
                let der = pair.sign(&rng, &i.to_be_bytes()).unwrap();
                let fixed = der_to_fixed(der.as_ref(), half);
                short += usize::from(fixed[0] == 0 || fixed[half] == 0);
                high += usize::from(fixed[0] & 0x80 != 0);
                let mut out = [0u8; super::MAX_DER_SIGNATURE];
                assert_eq!(
                    super::fixed_to_der(&fixed, half, &mut out).unwrap(),
                    der.as_ref(),
                    "signature {i} of P-{}",
                    half * 8
                );
            }
            assert!(
                short > 0 && high > 0,
                "edge cases drawn: {short} short, {high} high"
            );
        }
        // Zero, which aws-lc writes as a single zero byte (and then refuses as a signature).
        let mut out = [0u8; super::MAX_DER_SIGNATURE];
        let zero = super::fixed_to_der(&[0; 64], 32, &mut out).unwrap();
        assert_eq!(zero, [0x30, 6, 2, 1, 0, 2, 1, 0]);
        let mut out = [0u8; super::MAX_DER_SIGNATURE];
        assert_eq!(
            super::fixed_to_der(&[0xff; 96], 48, &mut out)
                .unwrap()
                .len(),
            super::MAX_DER_SIGNATURE
        );
        let mut out = [0u8; super::MAX_DER_SIGNATURE];
        assert!(super::fixed_to_der(&[1; 97], 48, &mut out).is_none());
        assert!(super::fixed_to_der(&[1; 98], 49, &mut out).is_none());
        assert!(super::fixed_to_der(&[1; 96], 32, &mut out).is_none());
        assert!(super::fixed_to_der(&[1; 63], 32, &mut out).is_none());
    }

    /// The DER path gives aws-lc-rs's `*_FIXED` verdict on valid signatures, on every single-bit
    /// flip of some, and on the integers at the edges (zero, one, all ones, the group order and
    /// its neighbours), for both curves.
    #[test]
    fn der_path_verdicts_are_the_fixed_ones() {
        use aws_lc_rs::signature::UnparsedPublicKey;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // The group orders n of P-256 and P-384, big-endian.
        let n256 = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let n384 = hex("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973");
        let curves: [(
            &lc::EcdsaSigningAlgorithm,
            &lc::EcdsaVerificationAlgorithm,
            JoseAlg,
            Vec<u8>,
        ); 2] = [
            (
                &lc::ECDSA_P256_SHA256_FIXED_SIGNING,
                &lc::ECDSA_P256_SHA256_FIXED,
                JoseAlg::ES256,
                n256,
            ),
            (
                &lc::ECDSA_P384_SHA384_FIXED_SIGNING,
                &lc::ECDSA_P384_SHA384_FIXED,
                JoseAlg::ES384,
                n384,
            ),
        ];
        for (signing, fixed_alg, alg, n) in curves {
            let pair = lc::EcdsaKeyPair::generate(signing).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let family = if alg == JoseAlg::ES256 {
                KeyFamily::EcP256
            } else {
                KeyFamily::EcP384
            };
            let parsed = super::ParsedKeys::public(family, &point);
            let ours = parsed.get(alg).unwrap();
            let reference = UnparsedPublicKey::new(fixed_alg, &point);
            let half = n.len();
            let check = |msg: &[u8], sig: &[u8]| {
                assert_eq!(
                    super::verify(ours, alg, msg, sig),
                    reference.verify(msg, sig).is_ok(),
                    "{alg:?} signature {sig:02x?}"
                );
            };
            let mut accepted = 0;
            for i in 0u32..200 {
                let msg = i.to_be_bytes();
                let sig = pair.sign(&rng, &msg).unwrap().as_ref().to_vec();
                check(&msg, &sig);
                accepted += usize::from(super::verify(ours, alg, &msg, &sig));
                if i < 4 {
                    for bit in 0..sig.len() * 8 {
                        let mut bad = sig.clone();
                        bad[bit / 8] ^= 1 << (bit % 8);
                        check(&msg, &bad);
                    }
                    check(&msg, &sig[..sig.len() - 1]);
                    check(&msg, &[sig.as_slice(), &[0]].concat());
                }
            }
            assert_eq!(accepted, 200);
            let msg = b"edge";
            let sig = pair.sign(&rng, msg).unwrap().as_ref().to_vec();
            let (r, s) = sig.split_at(half);
            let mut one = vec![0u8; half];
            one[half - 1] = 1;
            let mut n_minus_1 = n.clone();
            n_minus_1[half - 1] -= 1;
            let mut n_plus_1 = n.clone();
            n_plus_1[half - 1] += 1;
            let edges = [
                vec![0u8; half],
                one,
                vec![0xff; half],
                n.clone(),
                n_minus_1,
                n_plus_1,
            ];
            for edge in &edges {
                check(msg, &[edge.as_slice(), s].concat());
                check(msg, &[r, edge.as_slice()].concat());
            }
            // r and s swapped.
            check(msg, &[s, r].concat());
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
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
