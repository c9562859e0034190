//! A short, deterministic slice of the fuzz/ token_raw target for every `cargo test`: thousands of
//! byte mutations of valid tokens (HMAC, RSA, EC) must never panic, and none may be accepted
//! unless it is byte-for-byte the original (segments are strict, canonical base64url, so any other
//! accepted spelling would be a second encoding of a signed token or a forgery). The long,
//! coverage-guided runs are scripts/fuzz (docs/fuzzing.md); crashes they found are below.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use portcullis_auth::{evaluate, verify_token, KeySnapshot};

use crate::support::*;

/// Seeded: the same mutations on every run.
type Rng = rand::rngs::StdRng;

/// An index below `n` (`n` > 0).
fn below(rng: &mut Rng, n: usize) -> usize {
    rand::Rng::gen_range(rng, 0..n)
}

/// Bytes a mutation writes: the token alphabet, its separators, padding and the standard alphabet.
const ALPHABET: &[u8] = b"AQgwz_-+/=.. \t\0eyJ0123456789";

fn mutate(rng: &mut Rng, token: &str) -> Vec<u8> {
    let mut t = token.as_bytes().to_vec();
    for _ in 0..=below(rng, 3) {
        let at = below(rng, t.len() + 1);
        let byte = ALPHABET[below(rng, ALPHABET.len())];
        match below(rng, 4) {
            0 if at < t.len() => t[at] = byte,
            1 => t.insert(at, byte),
            2 if at < t.len() => {
                t.remove(at);
            }
            _ => {
                let cut = below(rng, t.len() + 1);
                t.truncate(cut.max(at));
            }
        }
    }
    t
}

fn keys() -> KeySnapshot {
    snapshot(vec![
        rsa().verifying(Some("rsa")),
        p256().verifying(Some("ec")),
        hmac_key(Some("hs")),
    ])
}

#[test]
fn mutated_tokens_are_rejected_unless_unchanged() {
    let keys = keys();
    let policy = policy();
    let originals = [
        sign(Algorithm::HS256, Some("hs"), &claims(), &hmac_encoding()),
        sign(Algorithm::HS512, None, &claims(), &hmac_encoding()),
        sign(Algorithm::RS256, Some("rsa"), &claims(), &rsa().encoding),
        sign(Algorithm::ES256, Some("ec"), &claims(), &p256().encoding),
    ];
    let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(0x5eed_cafe_f00d_0001);
    let mut accepted = 0;
    for original in &originals {
        assert!(check(original, &keys, &policy).is_ok(), "{original}");
        for _ in 0..1500 {
            let bytes = mutate(&mut rng, original);
            let Ok(token) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if check(token, &keys, &policy).is_ok() {
                assert_eq!(token, original, "a mutated token was accepted");
                accepted += 1;
            }
            let _ = verify_token(token, &keys, false);
            if let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ", bytes.as_slice()].concat()) {
                let mut headers = HeaderMap::new();
                headers.insert(AUTHORIZATION, value);
                if evaluate(&request(&headers, None), &policy, &keys, NOW).is_ok() {
                    assert_eq!(token, original, "a mutated bearer token was accepted");
                }
            }
        }
    }
    // Some mutations are no-ops (truncating past the end), so the property is not vacuous.
    assert!(accepted > 0);
}
