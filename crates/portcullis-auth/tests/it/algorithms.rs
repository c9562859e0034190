//! Table-driven vectors over every key type and algorithm, and cross-family rejections.

use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_auth::{JoseAlg, VerifyingKey};

use crate::support::*;

struct Case {
    alg: Algorithm,
    jose: JoseAlg,
    encoding: fn() -> EncodingKey,
    verifying: fn() -> VerifyingKey,
}

fn cases() -> Vec<Case> {
    let rsa_v = || rsa().verifying(Some("rsa"));
    let rsa_e = || rsa().encoding.clone();
    let hs_v = || hmac_key(Some("hs"));
    vec![
        Case {
            alg: Algorithm::RS256,
            jose: JoseAlg::RS256,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::RS384,
            jose: JoseAlg::RS384,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::RS512,
            jose: JoseAlg::RS512,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::PS256,
            jose: JoseAlg::PS256,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::PS384,
            jose: JoseAlg::PS384,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::PS512,
            jose: JoseAlg::PS512,
            encoding: rsa_e,
            verifying: rsa_v,
        },
        Case {
            alg: Algorithm::ES256,
            jose: JoseAlg::ES256,
            encoding: || p256().encoding.clone(),
            verifying: || p256().verifying(Some("p256")),
        },
        Case {
            alg: Algorithm::ES384,
            jose: JoseAlg::ES384,
            encoding: || p384().encoding.clone(),
            verifying: || p384().verifying(Some("p384")),
        },
        Case {
            alg: Algorithm::EdDSA,
            jose: JoseAlg::EdDSA,
            encoding: || ed25519().encoding.clone(),
            verifying: || ed25519().verifying(Some("ed")),
        },
        Case {
            alg: Algorithm::HS256,
            jose: JoseAlg::HS256,
            encoding: hmac_encoding,
            verifying: hs_v,
        },
        Case {
            alg: Algorithm::HS384,
            jose: JoseAlg::HS384,
            encoding: hmac_encoding,
            verifying: hs_v,
        },
        Case {
            alg: Algorithm::HS512,
            jose: JoseAlg::HS512,
            encoding: hmac_encoding,
            verifying: hs_v,
        },
    ]
}

#[test]
fn every_algorithm_verifies_with_and_without_kid() {
    for case in cases() {
        let key = (case.verifying)();
        let kid = key.kid.clone();
        let keys = snapshot(vec![key.clone()]);
        for token_kid in [kid.as_deref(), None] {
            let token = sign(case.alg, token_kid, &claims(), &(case.encoding)());
            let t = check(&token, &keys, &policy())
                .unwrap_or_else(|e| panic!("{:?} kid {token_kid:?}: {e:?}", case.alg));
            assert_eq!(t.alg, Some(case.jose));
            assert_eq!(t.key_fingerprint, Some(key.fingerprint));
            assert_eq!(t.claims.get("sub").unwrap().as_str(), Some("alice"));
        }
    }
}

#[test]
fn tokens_never_verify_with_keys_of_another_family() {
    let all = cases();
    for case in &all {
        let token = sign(case.alg, None, &claims(), &(case.encoding)());
        let own = (case.verifying)().family;
        let others: Vec<_> = all
            .iter()
            .map(|c| (c.verifying)())
            .filter(|k| k.family != own)
            .collect();
        let err = check(&token, &snapshot(others), &policy()).unwrap_err();
        assert_eq!(err.reason(), "TokenSignatureKeyNotFound", "{:?}", case.alg);
    }
}

#[test]
fn a_key_declaring_an_alg_accepts_only_that_alg() {
    let jwk = serde_json::json!({
        "kty": "oct", "kid": "hs", "alg": "HS256", "k": b64(HMAC_SECRET)
    });
    let key = VerifyingKey::from_jwk(&jwk, "test").unwrap();
    let keys = snapshot(vec![key]);
    let ok = sign(Algorithm::HS256, Some("hs"), &claims(), &hmac_encoding());
    assert!(check(&ok, &keys, &policy()).is_ok());
    let other = sign(Algorithm::HS512, Some("hs"), &claims(), &hmac_encoding());
    assert_eq!(
        reason(check(&other, &keys, &policy())),
        "TokenSignatureInvalid"
    );
}

#[test]
fn a_wrong_key_of_the_right_family_fails_the_signature() {
    let keys = snapshot(vec![rsa2().verifying(Some("rsa"))]);
    let token = sign(Algorithm::RS256, Some("rsa"), &claims(), &rsa().encoding);
    assert_eq!(
        reason(check(&token, &keys, &policy())),
        "TokenSignatureInvalid"
    );
}

#[test]
fn without_kid_every_key_of_the_family_is_tried() {
    let keys = snapshot(vec![
        rsa2().verifying(Some("a")),
        rsa().verifying(Some("b")),
    ]);
    let token = sign(Algorithm::RS256, None, &claims(), &rsa().encoding);
    let t = check(&token, &keys, &policy()).unwrap();
    assert_eq!(t.key_fingerprint, Some(rsa().verifying(None).fingerprint));
}
