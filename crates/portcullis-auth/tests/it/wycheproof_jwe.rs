//! Wycheproof JWE vectors (tests/vectors/json_web_encryption_test.json, see SOURCE.md there) run
//! against the decryptor (`portcullis_auth::jwe::decrypt`): the gate for the JWE code, which is
//! built on aws-lc-rs primitives rather than a JOSE library.
//!
//! Each group's private JWK becomes a decryption key with the JWK's declared `alg` (binding, as a
//! configured `alg` is). Every vector whose key and token use supported algorithms must get its
//! verdict, and a valid one must decrypt to its plaintext. Out of scope, and asserted rejected:
//! - `RSA1_5` (refused on purpose: a padding oracle): its keys cannot be configured, and its tokens
//!   are also refused by an OAEP-capable key made of the same RSA key;
//! - ECDH-ES (+A*KW) and AES-GCM key wrap (`A*GCMKW`): not supported (no EC decryption keys; an
//!   oct key declared for GCMKW cannot be configured), so their tokens are refused, also by the
//!   same oct key configured without an `alg`;
//! - `zip` (RFC 7520 figure 170): compressed plaintext is refused by design (decompression bombs,
//!   CRIME-style length leaks); the vector is valid, we reject it;
//! - the JSON serialization (tcId 22): only the compact form is a bearer token.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_auth::jwe::{decrypt, DecryptionKey};
use portcullis_auth::{ContentEncryption, KeyManagement};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/json_web_encryption_test.json"
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn b64(jwk: &Value, name: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()
}

/// A DER INTEGER (unsigned big-endian magnitude).
fn der_int(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len() - 1);
    let mut body = magnitude[start..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    out.push(0x02);
    der_len(out, body.len());
    out.extend_from_slice(&body);
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// The RSA private JWK as PKCS#1 PEM (`RSA PRIVATE KEY`).
fn rsa_pem(jwk: &Value) -> String {
    let mut body = Vec::new();
    der_int(&mut body, &[0]);
    for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
        der_int(&mut body, &b64(jwk, name));
    }
    let mut der = vec![0x30];
    der_len(&mut der, body.len());
    der.extend_from_slice(&body);
    pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der))
}

/// The group's key with its declared alg, or why it cannot be configured; and the same material
/// with no alg (for the refusal checks of out-of-scope tokens), when the material is supported.
fn group_key(jwk: &Value) -> (Result<DecryptionKey, String>, Option<DecryptionKey>) {
    let kid = jwk["kid"].as_str().map(str::to_owned);
    let declared = jwk["alg"].as_str().unwrap_or("");
    // An oct JWK whose alg is a content encryption is a `dir` key for it (RFC 7520 figure 136).
    let (alg, enc) = match ContentEncryption::from_name(declared) {
        Some(enc) => (Ok(KeyManagement::Dir), vec![enc]),
        None => (
            KeyManagement::parse_configured(declared).map_err(|e| e.0),
            vec![],
        ),
    };
    match jwk["kty"].as_str().unwrap() {
        "oct" => {
            let k = b64(jwk, "k");
            let make =
                |alg| DecryptionKey::symmetric(kid.clone(), &k, alg, enc.clone(), "wycheproof");
            let declared = alg.and_then(|a| make(Some(a)).map_err(|e| e.0));
            (declared, make(None).ok())
        }
        "RSA" => {
            let pem = rsa_pem(jwk);
            let make = |alg| {
                DecryptionKey::rsa_from_pem(kid.clone(), pem.as_bytes(), alg, vec![], "wycheproof")
            };
            let declared = alg.and_then(|a| make(Some(a)).map_err(|e| e.0));
            (declared, Some(make(None).unwrap()))
        }
        other => (Err(format!("kty {other} (no EC decryption keys)")), None),
    }
}

fn header_alg(jwe: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(jwe.split('.').next()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header["alg"].as_str().map(str::to_owned)
}

/// Vectors valid by the suite that we refuse by design, and why.
const REFUSED_BY_DESIGN: [(u64, &str); 1] = [(135, "zip")];

#[test]
fn every_vector_gets_its_verdict() {
    let doc = vectors();
    let mut checked = 0;
    let mut out_of_scope: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let (declared, alg_less) = group_key(&group["private"]);
        for test in group["tests"].as_array().unwrap() {
            let id = test["tcId"].as_u64().unwrap();
            let jwe = match &test["jwe"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let expect_valid = test["result"] == "valid";
            let by_design = REFUSED_BY_DESIGN.iter().find(|(i, _)| *i == id);
            let key = match (&declared, by_design) {
                (Ok(key), None) => key,
                (Ok(key), Some((_, why))) => {
                    assert!(
                        decrypt(&jwe, std::slice::from_ref(key)).is_err(),
                        "tcId {id}"
                    );
                    *out_of_scope
                        .entry(format!("refused by design: {why}"))
                        .or_default() += 1;
                    continue;
                }
                (Err(why), _) => {
                    // Out of scope: refused with no key, and by the same material without an alg
                    // when the token's own alg is one we do not support.
                    assert!(decrypt(&jwe, &[]).is_err(), "tcId {id}");
                    let unsupported_alg =
                        header_alg(&jwe).is_none_or(|a| KeyManagement::from_name(&a).is_none());
                    if let (Some(key), true) = (&alg_less, unsupported_alg) {
                        assert!(
                            decrypt(&jwe, std::slice::from_ref(key)).is_err(),
                            "tcId {id} decrypted by an alg-less key"
                        );
                    }
                    *out_of_scope.entry(why.clone()).or_default() += 1;
                    continue;
                }
            };
            checked += 1;
            let got = decrypt(&jwe, std::slice::from_ref(key));
            match (&got, expect_valid) {
                (Ok(d), true) => {
                    let pt = hex::decode(test["pt"].as_str().unwrap()).unwrap();
                    if d.plaintext.as_slice() != pt.as_slice() {
                        mismatches.push(format!("tcId {id}: wrong plaintext"));
                    }
                }
                (Err(e), false) => assert_eq!(e.reason(), "TokenDecryptionFailed", "tcId {id}"),
                _ => mismatches.push(format!("tcId {id} {}: got {got:?}", test["comment"])),
            }
        }
    }
    println!(
        "wycheproof JWE: {checked} verdicts matched; out of scope (rejected): {out_of_scope:?}"
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(checked, 66, "in-scope vectors");
    assert_eq!(checked + out_of_scope.values().sum::<usize>(), 139);
}
