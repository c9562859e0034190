//! Encrypted tokens (JWE): raw bytes as a compact JWE, decrypted with the fixture's decryption
//! keys and then, as a bearer token, verified under a policy with those keys.
//!
//! Properties besides "never panics":
//! - `jwe::decrypt` has one failure: every error is `TokenDecryptionFailed` (no oracle by reason);
//! - what it decrypts is a canonical compact JWE (five segments, strict base64url, a header plain
//!   serde_json reads, naming the alg and enc used, without `zip` or `crit`), and flipping any bit
//!   of its IV, ciphertext or tag (the input's first byte chooses which) makes it fail;
//! - what the token core accepts from a JWE went through decryption and its nested token passes
//!   the plain-token oracle (`check_accepted`: HMAC-signed with the fixture secret, claims, time).
//!
//! The keys are fixed (`SYMMETRIC`, and the throw-away RSA key `jwe-fuzz-rsa.pem`, test material
//! only) so `fuzz/make-jwe-seeds.py` can write seeds that decrypt: without them the fuzzer would
//! never get past the tag check.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_auth::jwe::decrypt;
use portcullis_auth::{verify_token_decrypting, DecryptionKey, DecryptionKeys, Policy};
use serde_json::Value;

use crate::token::{canonical_segment, check_accepted, fixture, NOW};

/// The symmetric decryption keys: byte `i` of the key of length `n` is `n + i` (no `alg`: each
/// serves AES key wrap and `dir` as its length allows). make-jwe-seeds.py uses the same rule.
const SYMMETRIC: [usize; 5] = [16, 24, 32, 48, 64];

/// The fixture's decryption keys, and its `bearer` policy with them.
fn keys() -> &'static (DecryptionKeys, Policy) {
    static KEYS: OnceLock<(DecryptionKeys, Policy)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys: Vec<DecryptionKey> = SYMMETRIC
            .iter()
            .map(|&n| {
                let secret: Vec<u8> = (0..n).map(|i| (n + i) as u8).collect();
                DecryptionKey::symmetric(None, &secret, None, vec![], "fuzz").expect("fuzz key")
            })
            .collect();
        let pem = include_bytes!("jwe-fuzz-rsa.pem");
        keys.push(DecryptionKey::rsa_from_pem(None, pem, None, vec![], "fuzz").expect("fuzz RSA key"));
        let keys = DecryptionKeys::new(keys);
        let mut policy = fixture().bearer.clone();
        policy.decryption_keys = keys.clone();
        (keys, policy)
    })
}

/// The JWE target: the first byte picks the bit flipped by the mutation check, the rest is the
/// token.
pub fn run_jwe(data: &[u8]) {
    let Some((&flip, rest)) = data.split_first() else {
        return;
    };
    let Ok(token) = std::str::from_utf8(rest) else {
        return;
    };
    let (keys, policy) = keys();
    match decrypt(token, keys) {
        Err(e) => assert_eq!(e.reason(), "TokenDecryptionFailed", "{e:?}: {token:?}"),
        Ok(decrypted) => {
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 5, "decrypted a token without five segments");
            let header: Value = serde_json::from_slice(&canonical_segment(parts[0], "JWE header", token))
                .unwrap_or_else(|e| panic!("decrypted a header serde_json cannot read ({e})"));
            assert_eq!(header["alg"], decrypted.alg.name(), "{token:?}");
            assert_eq!(header["enc"], decrypted.enc.name(), "{token:?}");
            assert!(header.get("zip").is_none() && header.get("crit").is_none());
            for part in &parts[1..] {
                canonical_segment(part, "JWE segment", token);
            }
            // Flip one bit of the IV, ciphertext or tag: authentication must fail.
            let segment = 2 + usize::from(flip % 3);
            let mut bytes = canonical_segment(parts[segment], "JWE segment", token);
            if !bytes.is_empty() {
                let at = usize::from(flip / 3) % bytes.len();
                bytes[at] ^= 1 << (flip % 8);
                let mut mutated: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
                mutated[segment] = URL_SAFE_NO_PAD.encode(&bytes);
                assert!(
                    decrypt(&mutated.join("."), keys).is_err(),
                    "a JWE with segment {segment} modified still decrypts: {token:?}"
                );
            }
        }
    }
    let fx = fixture();
    let verified = verify_token_decrypting(token, &fx.keys, keys, true).and_then(|v| {
        portcullis_auth::check_claims(&std::sync::Arc::new(v), policy, &fx.keys, NOW)
    });
    if std::env::var_os("PORTCULLIS_FUZZ_TRACE").is_some() {
        eprintln!("jwe: {:?}", verified.as_ref().map(|_| "accepted").map_err(|e| e.reason()));
    }
    if let Ok(verified) = verified {
        let inner = decrypt(token, keys).unwrap_or_else(|e| {
            panic!("accepted a JWE that does not decrypt ({e:?}): {token:?}")
        });
        let inner = std::str::from_utf8(&inner.plaintext).expect("accepted plaintext is text");
        check_accepted(inner, &verified, policy);
    }
}
