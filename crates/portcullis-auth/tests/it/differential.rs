//! Differential test of the signature check: for every supported algorithm, tokens signed with
//! keys generated here, and mutations of their signatures (bit flips, truncation, extension, too
//! long for any key, empty, non-canonical base64url, a signature of another algorithm or another
//! key, a changed message), the verdict of [`verify_signature`] must equal the verdict of
//! `jsonwebtoken::crypto::verify` on the same signature segment, signing input and key material
//! (built as `keys.rs` built it before keys were parsed once: `from_rsa_raw_components`,
//! `from_ec_der`, `from_ed_der`, `from_secret`). That is the verdict Portcullis gave before the
//! aws-lc-rs parsed-key path (`src/sig.rs`). A key that declares an `alg` verifies only that alg,
//! as before; that filter is applied to the reference too.
//!
//! Keys and signatures come from aws-lc-rs directly (RSA 2048/3072/4096, P-256, P-384, Ed25519,
//! HMAC secrets of many lengths), so longer RSA moduli and PSS are covered as well; plus EC keys
//! whose published point is off the curve, which aws-lc-rs does not parse (they keep jsonwebtoken's
//! path and verify nothing, as before).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self as lc, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use portcullis_auth::{verify_signature, JoseAlg, KeySnapshot, VerifyingKey};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

type Rng64 = rand::rngs::StdRng;

/// Every algorithm Portcullis verifies, with jsonwebtoken's name for it.
const ALGS: [(JoseAlg, Algorithm); 12] = [
    (JoseAlg::RS256, Algorithm::RS256),
    (JoseAlg::RS384, Algorithm::RS384),
    (JoseAlg::RS512, Algorithm::RS512),
    (JoseAlg::PS256, Algorithm::PS256),
    (JoseAlg::PS384, Algorithm::PS384),
    (JoseAlg::PS512, Algorithm::PS512),
    (JoseAlg::ES256, Algorithm::ES256),
    (JoseAlg::ES384, Algorithm::ES384),
    (JoseAlg::EdDSA, Algorithm::EdDSA),
    (JoseAlg::HS256, Algorithm::HS256),
    (JoseAlg::HS384, Algorithm::HS384),
    (JoseAlg::HS512, Algorithm::HS512),
];

fn jwt_alg(alg: JoseAlg) -> Algorithm {
    ALGS.iter().find(|(a, _)| *a == alg).unwrap().1
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Secret {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A generated key: how to sign, its JWK (without `alg`), and the reference decoding key.
struct Key {
    secret: Secret,
    algs: Vec<JoseAlg>,
    jwk: Value,
    reference: DecodingKey,
    /// False for a key whose public half does not match `secret` (nothing it signs verifies).
    sound: bool,
}

impl Key {
    fn rsa(size: aws_lc_rs::rsa::KeySize) -> Key {
        let pair = RsaKeyPair::generate(size).unwrap();
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        Key {
            jwk: json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)}),
            reference: DecodingKey::from_rsa_raw_components(&c.n, &c.e),
            algs: ALGS[..6].iter().map(|(a, _)| *a).collect(),
            secret: Secret::Rsa(pair),
            sound: true,
        }
    }

    fn ec(alg: JoseAlg) -> Key {
        Key::ec_with(alg, false)
    }

    /// `off_curve`: the published point has its last byte changed, so it is (almost surely) not
    /// on the curve: aws-lc-rs does not parse it and the key takes jsonwebtoken's path.
    fn ec_with(alg: JoseAlg, off_curve: bool) -> Key {
        let (signing, crv, coord) = match alg {
            JoseAlg::ES256 => (&lc::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            _ => (&lc::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        };
        let pair = EcdsaKeyPair::generate(signing).unwrap();
        let mut point = pair.public_key().as_ref().to_vec();
        if off_curve {
            *point.last_mut().unwrap() ^= 1;
        }
        let (x, y) = point[1..].split_at(coord);
        Key {
            jwk: json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}),
            reference: DecodingKey::from_ec_der(&point),
            algs: vec![alg],
            secret: Secret::Ec(pair),
            sound: !off_curve,
        }
    }

    fn ed25519() -> Key {
        let pair = Ed25519KeyPair::generate().unwrap();
        let x = pair.public_key().as_ref().to_vec();
        Key {
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)}),
            reference: DecodingKey::from_ed_der(&x),
            algs: vec![JoseAlg::EdDSA],
            secret: Secret::Ed(pair),
            sound: true,
        }
    }

    fn hmac(secret: Vec<u8>) -> Key {
        Key {
            jwk: json!({"kty": "oct", "k": b64(&secret)}),
            reference: DecodingKey::from_secret(&secret),
            algs: vec![JoseAlg::HS256, JoseAlg::HS384, JoseAlg::HS512],
            secret: Secret::Hmac(secret),
            sound: true,
        }
    }

    fn sign(&self, alg: JoseAlg, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.secret {
            Secret::Rsa(pair) => {
                let padding: &'static dyn lc::RsaEncoding = match alg {
                    JoseAlg::RS256 => &lc::RSA_PKCS1_SHA256,
                    JoseAlg::RS384 => &lc::RSA_PKCS1_SHA384,
                    JoseAlg::RS512 => &lc::RSA_PKCS1_SHA512,
                    JoseAlg::PS256 => &lc::RSA_PSS_SHA256,
                    JoseAlg::PS384 => &lc::RSA_PSS_SHA384,
                    _ => &lc::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut sig).unwrap();
                sig
            }
            Secret::Ec(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Secret::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            Secret::Hmac(secret) => {
                let hmac_alg = match alg {
                    JoseAlg::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
                    JoseAlg::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    _ => aws_lc_rs::hmac::HMAC_SHA512,
                };
                let key = aws_lc_rs::hmac::Key::new(hmac_alg, secret);
                aws_lc_rs::hmac::sign(&key, message).as_ref().to_vec()
            }
        }
    }

    /// The Portcullis key, declaring `alg` when given.
    fn verifying(&self, alg: Option<JoseAlg>) -> VerifyingKey {
        let mut jwk = self.jwk.clone();
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg.name());
        }
        VerifyingKey::from_jwk(&jwk, "differential").unwrap()
    }
}

fn keys() -> Vec<Key> {
    let mut rng = Rng64::seed_from_u64(0xd1ff);
    let mut keys = vec![
        Key::rsa(aws_lc_rs::rsa::KeySize::Rsa2048),
        Key::rsa(aws_lc_rs::rsa::KeySize::Rsa2048),
        Key::rsa(aws_lc_rs::rsa::KeySize::Rsa3072),
        Key::rsa(aws_lc_rs::rsa::KeySize::Rsa4096),
    ];
    for _ in 0..3 {
        keys.push(Key::ec(JoseAlg::ES256));
        keys.push(Key::ec(JoseAlg::ES384));
        keys.push(Key::ed25519());
    }
    keys.push(Key::ec_with(JoseAlg::ES256, true));
    keys.push(Key::ec_with(JoseAlg::ES384, true));
    for len in [1, 16, 32, 64, 65, 128, 129, 200] {
        keys.push(Key::hmac((0..len).map(|_| rng.gen()).collect()));
    }
    keys
}

/// A signing input `b64(header).b64(payload)` with the given header alg.
fn signing_input(alg: &str, n: usize) -> String {
    let header = json!({"alg": alg, "typ": "JWT"}).to_string();
    let payload = json!({"sub": format!("user-{n}"), "n": n}).to_string();
    format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()))
}

/// The signature segments to try for one valid signature `sig` of `alg` over `input`.
fn mutations(rng: &mut Rng64, sig: &[u8], other_sigs: &[Vec<u8>]) -> Vec<String> {
    let mut out = vec![b64(sig), String::new()];
    for _ in 0..4 {
        let mut flipped = sig.to_vec();
        let at = rng.gen_range(0..flipped.len());
        flipped[at] ^= 1 << rng.gen_range(0..8);
        out.push(b64(&flipped));
    }
    for at in [0, sig.len() - 1, sig.len() / 2] {
        let mut flipped = sig.to_vec();
        flipped[at] ^= 0x80;
        out.push(b64(&flipped));
    }
    out.push(b64(&sig[..sig.len() - 1]));
    out.push(b64(&sig[1..]));
    out.push(b64(&sig[..sig.len() / 2]));
    out.push(b64(&[sig, &[0]].concat()));
    out.push(b64(&[&[0], sig].concat()));
    out.push(b64(&[sig, sig].concat()));
    // Longer than any key's signature (RSA-8192: 1024 bytes): not decoded by the fast path.
    out.push(b64(&sig.repeat(1025 / sig.len() + 1)));
    out.push(b64(&vec![0; sig.len()]));
    out.push(b64(&vec![0xff; sig.len()]));
    // Non-canonical: the same bytes with non-zero trailing bits, when the length leaves some.
    let canonical = b64(sig);
    if !sig.len().is_multiple_of(3) {
        let mut text = canonical.clone().into_bytes();
        let last = text.last_mut().unwrap();
        *last = if *last == b'_' { b'A' } else { b'B' };
        out.push(String::from_utf8(text).unwrap());
    }
    // Padded, and standard-alphabet spellings.
    out.push(base64::engine::general_purpose::URL_SAFE.encode(sig));
    out.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(sig));
    for other in other_sigs {
        out.push(b64(other));
    }
    out
}

/// The verdict before the parsed-key path: the key's declared alg filter, then jsonwebtoken.
fn reference(key: &Key, declared: Option<JoseAlg>, alg: JoseAlg, input: &str, sig: &str) -> bool {
    declared.is_none_or(|d| d == alg)
        && jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key.reference, jwt_alg(alg))
            .unwrap_or(false)
}

#[test]
fn verdicts_equal_jsonwebtokens() {
    let mut rng = Rng64::seed_from_u64(0x5167_0017);
    let keys = keys();
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut check = |ki: usize,
                     key: &Key,
                     snapshots: &[(Option<JoseAlg>, KeySnapshot)],
                     alg: JoseAlg,
                     input: &str,
                     segment: &str| {
        let token = format!("{input}.{segment}");
        for (declared, snapshot) in snapshots {
            let want = reference(key, *declared, alg, input, segment);
            let got = verify_signature(&token, snapshot, true);
            assert_eq!(
                got.is_ok(),
                want,
                "key {ki} header alg {alg:?} declared {declared:?} sig {segment:?}: got {got:?}"
            );
            if want {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    };
    for (ki, key) in keys.iter().enumerate() {
        let plain = key.verifying(None);
        for &alg in &key.algs {
            // The key without `alg`, declaring this alg, and declaring its family's last alg.
            let snapshots: Vec<(Option<JoseAlg>, KeySnapshot)> =
                [None, Some(alg), key.algs.last().copied()]
                    .into_iter()
                    .map(|d| {
                        let k = d.map_or_else(|| plain.clone(), |d| key.verifying(Some(d)));
                        (d, KeySnapshot::new(vec![k]))
                    })
                    .collect();
            for n in 0..3 {
                let input = signing_input(alg.name(), n);
                let sig = key.sign(alg, input.as_bytes());
                // Signatures valid for something else: another message, another key.
                let mut others = vec![key.sign(alg, signing_input(alg.name(), n + 100).as_bytes())];
                let neighbour = &keys[(ki + 1) % keys.len()];
                others.push(neighbour.sign(neighbour.algs[0], input.as_bytes()));
                for segment in mutations(&mut rng, &sig, &others) {
                    check(ki, key, &snapshots, alg, &input, &segment);
                }
            }
            // A signature made with `alg` over a header naming another alg (same family or not).
            for &(header_alg, _) in ALGS.iter().filter(|(a, _)| *a != alg) {
                let input = signing_input(header_alg.name(), 0);
                let sig = key.sign(alg, input.as_bytes());
                check(ki, key, &snapshots, header_alg, &input, &b64(&sig));
            }
        }
    }
    println!("differential: {accepted} accepted, {refused} refused, all as jsonwebtoken");
    // Not vacuous: every valid signature was accepted (3 messages per key and alg, under the key
    // without `alg` and the key declaring that alg), and mutations were refused.
    let valid: usize = keys
        .iter()
        .filter(|k| k.sound)
        .map(|k| k.algs.len() * 3 * 2)
        .sum();
    assert!(accepted >= valid, "{accepted} < {valid}");
    assert!(refused > 10 * accepted, "{refused}");
}

/// One snapshot holding every key: the verdict is "some usable key verifies", as before.
#[test]
fn verdicts_over_a_snapshot_of_many_keys_equal_jsonwebtokens() {
    let keys = keys();
    let snapshot = KeySnapshot::new(keys.iter().map(|k| k.verifying(None)).collect());
    let mut rng = Rng64::seed_from_u64(0x5167_0018);
    let mut accepted = 0;
    for key in &keys {
        for &alg in &key.algs {
            let input = signing_input(alg.name(), 7);
            let sig = key.sign(alg, input.as_bytes());
            for candidate in mutations(&mut rng, &sig, &[]) {
                let token = format!("{input}.{candidate}");
                let want = keys
                    .iter()
                    .any(|k| reference(k, None, alg, &input, &candidate));
                let got = verify_signature(&token, &snapshot, true);
                assert_eq!(got.is_ok(), want, "alg {alg:?} sig {candidate:?}: {got:?}");
                accepted += usize::from(want);
            }
        }
    }
    // At least every valid signature (a padded or standard-alphabet spelling that equals the
    // canonical one, for some lengths and bytes, is the same token and counts again).
    let valid: usize = keys.iter().filter(|k| k.sound).map(|k| k.algs.len()).sum();
    assert!(accepted >= valid, "{accepted} < {valid}");
}
