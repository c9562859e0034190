//! Key parsing: JWKS tolerance, certificates and SPKI PEM, n/e, HMAC, fingerprints, Debug.

use jsonwebtoken::Algorithm;
use portcullis_auth::{parse_jwks, KeyFamily, VerifyingKey};
use serde_json::json;

use crate::support::*;

fn rsa_jwk(kid: &str) -> serde_json::Value {
    // n and e of the test RSA key, via its SPKI.
    let der = rcgen::PublicKeyData::subject_public_key_info(&rsa().pair);
    let (_, spki) =
        <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(
            &der,
        )
        .unwrap();
    let x509_parser::public_key::PublicKey::RSA(k) = spki.parsed().unwrap() else {
        panic!()
    };
    json!({ "kty": "RSA", "kid": kid, "n": b64(k.modulus), "e": b64(k.exponent) })
}

#[test]
fn jwks_is_tolerant_of_real_identity_providers() {
    let mut entra = rsa_jwk("entra");
    entra["x5t"] = json!("abc");
    entra["x5c"] = json!(["MIIB"]);
    entra["issuer"] = json!("https://login.microsoftonline.com/t/v2.0");
    let doc = json!({ "keys": [
        entra,
        { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
        { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
        { "kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "AA" },
        { "kty": "weird", "kid": "w" },
        { "kty": "oct", "kid": "hs", "alg": "A128KW", "k": "AAAA" },
        { "kty": "RSA", "kid": "short", "n": b64(&[0xff; 128]), "e": "AQAB" },
        { "kty": "oct", "kid": "hs-ok", "k": b64(HMAC_SECRET) },
    ]});
    let parsed = parse_jwks(doc.to_string().as_bytes(), "idp").unwrap();
    let kids: Vec<_> = parsed.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["entra", "hs-ok"]);
    assert_eq!(parsed.keys[0].x5t.as_deref(), Some("abc"));
    let skipped: Vec<_> = parsed
        .skipped
        .iter()
        .map(|s| s.kid.clone().unwrap())
        .collect();
    assert_eq!(skipped, ["enc", "p521", "x25519", "w", "hs", "short"]);
    assert!(parsed.skipped.iter().all(|s| !s.reason.is_empty()));
    assert!(parse_jwks(b"{}", "idp").is_err());
    assert!(parse_jwks(b"not json", "idp").is_err());
}

#[test]
fn rsa_from_n_and_e_verifies() {
    let jwk = rsa_jwk("k");
    let key = VerifyingKey::from_rsa_components(
        Some("k".into()),
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
        "inline",
    )
    .unwrap();
    assert_eq!(key.family, KeyFamily::Rsa);
    assert_eq!(key.fingerprint, rsa().verifying(None).fingerprint);
    let token = sign(Algorithm::RS256, Some("k"), &claims(), &rsa().encoding);
    assert!(check(&token, &snapshot(vec![key]), &policy()).is_ok());
    assert!(VerifyingKey::from_rsa_components(None, "!!", "AQAB", "x").is_err());
}

#[test]
fn certificates_get_x5t_and_kid_defaults_to_it() {
    for (pair, family) in [
        (&rsa().pair, KeyFamily::Rsa),
        (&p256().pair, KeyFamily::EcP256),
        (&p384().pair, KeyFamily::EcP384),
        (&ed25519().pair, KeyFamily::Ed25519),
    ] {
        let cert = rcgen::CertificateParams::new(vec!["k.test".to_owned()])
            .unwrap()
            .self_signed(pair)
            .unwrap();
        let keys = VerifyingKey::from_pem(None, cert.pem().as_bytes(), "cert").unwrap();
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(key.family, family);
        let x5t = b64(&sha1::Digest::finalize(sha1::Digest::chain_update(
            <sha1::Sha1 as sha1::Digest>::new(),
            cert.der(),
        )));
        assert_eq!(key.x5t.as_deref(), Some(x5t.as_str()));
        assert_eq!(key.kid.as_deref(), Some(x5t.as_str()));
        let named =
            VerifyingKey::from_pem(Some("mine".into()), cert.pem().as_bytes(), "c").unwrap();
        assert_eq!(named[0].kid.as_deref(), Some("mine"));
    }
}

#[test]
fn pem_errors_are_reported() {
    assert!(VerifyingKey::from_pem(None, b"", "x").is_err());
    assert!(VerifyingKey::from_pem(None, b"garbage", "x").is_err());
    let private = rsa().pair.serialize_pem();
    let err = VerifyingKey::from_pem(None, private.as_bytes(), "x").unwrap_err();
    assert!(err.0.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let a = rsa().verifying(Some("a"));
    let b = rsa().verifying(Some("b"));
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(a.fingerprint, rsa2().verifying(None).fingerprint);
    assert_ne!(
        hmac_key(None).fingerprint,
        p256().verifying(None).fingerprint
    );
    assert!(snapshot(vec![a.clone()]).contains_fingerprint(a.fingerprint));
}

#[test]
fn debug_never_prints_secret_material() {
    let key = hmac_key(Some("k"));
    let text = format!("{key:?} {:?}", snapshot(vec![key.clone()]));
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(!text.contains(&format!("{:?}", HMAC_SECRET)), "{text}");
}

#[test]
fn an_empty_hmac_secret_never_verifies() {
    let key = VerifyingKey::from_hmac_secret(None, b"", "x");
    let token = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b""),
    );
    assert_eq!(
        reason(check(&token, &snapshot(vec![key]), &policy())),
        "TokenSignatureKeyNotFound"
    );
}
