//! Inputs the fuzz/ targets found (docs/fuzzing.md), kept as regression tests.

use portcullis_auth::{parse_jwks, VerifyingKey};
use serde_json::json;

/// An RSA key whose modulus is empty or all zeros: the bit count `len * 8 - 8` underflowed, a
/// panic in debug builds (in release it wrapped and reported an 18-quintillion-bit modulus).
/// Reachable from a fetched JWKS, from `n:`/`e:` in gateway.yaml and from APIM `<key n=.. e=..>`.
/// Found by the `keys` target; its input is tests/fuzz/crash-empty-rsa-modulus.bin (first byte:
/// the target's mode).
#[test]
fn an_empty_rsa_modulus_is_refused_not_a_panic() {
    let found = include_bytes!("../fuzz/crash-empty-rsa-modulus.bin");
    let parsed = parse_jwks(&found[1..], "fuzz").unwrap();
    assert!(parsed
        .skipped
        .iter()
        .any(|s| s.reason.contains("RSA modulus of 0 bits")));

    for n in ["", "AA", "AAAA"] {
        let jwk = json!({ "kty": "RSA", "n": n, "e": "AQAB" });
        let err = VerifyingKey::from_jwk(&jwk, "test").unwrap_err();
        assert!(err.0.contains("RSA modulus of 0 bits"), "{n:?}: {err}");
        let err = VerifyingKey::from_rsa_components(None, n, "AQAB", "test").unwrap_err();
        assert!(err.0.contains("RSA modulus of 0 bits"), "{n:?}: {err}");
    }
}
