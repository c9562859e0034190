//! JWK `alg` honesty and key types read from the PEM: every algorithm the server signs with is
//! published under its own kid with that `alg`, tokens carry the matching kid, and a key file's
//! type decides the algorithm when the config leaves `alg` out.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_idp::{IdpConfig, MintRequest, SigningAlg};
use serde_json::Value;

use portcullis_testkit::idp_keys::{write_key_files, IDP_YAML as CONFIG, RESOURCES};

use crate::{post_form, start_yaml};

fn write_keys(dir: &std::path::Path) {
    write_key_files(dir).unwrap();
}

#[test]
fn key_type_comes_from_the_pem_when_alg_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let config = IdpConfig::from_yaml(CONFIG, dir.path()).unwrap();
    let algs: Vec<SigningAlg> = config.signing_keys.iter().map(|k| k.alg).collect();
    assert_eq!(
        algs,
        [
            SigningAlg::RS256,
            SigningAlg::ES256,
            SigningAlg::ES384,
            SigningAlg::EdDSA
        ]
    );
}

#[test]
fn an_alg_that_does_not_fit_the_key_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
    let cases = [
        (
            "{ id: k, alg: ES256, private-key-file: rsa.pem }",
            "signing-keys[k]: alg: ES256 does not fit",
        ),
        (
            "{ id: k, alg: RS256, private-key-file: p256.pem }",
            "an EC P-256 key (ES256)",
        ),
        (
            "{ id: k, alg: ES256, private-key-file: p384.pem }",
            "an EC P-384 key (ES384)",
        ),
        (
            "{ id: k, alg: PS256, private-key-file: ed.pem }",
            "an Ed25519 key (EdDSA)",
        ),
        (
            "{ id: k, private-key-file: junk.pem }",
            "signing-keys[k]: private-key-file",
        ),
    ];
    for (key, needle) in cases {
        let yaml = format!("signing-keys: [{key}]\n");
        let err = IdpConfig::from_yaml(&yaml, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{key}: {err}");
    }
    // A resource whose algorithm no key can sign, and a kid published twice.
    let err = IdpConfig::from_yaml(
        "signing-keys: [{ id: k, private-key-file: p256.pem }]\nresources: { a: { signing-alg: ES384 } }\n",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("resources.a.signing-alg: ES384 needs a signing key"),
        "{err}"
    );
    let err = IdpConfig::from_yaml(
        "signing-keys: [{ id: k }, { id: k-PS256, alg: ES256 }]\nresources: { a: { signing-alg: PS256 } }\n",
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("kid \"k-PS256\" is published twice"), "{err}");
}

/// The JWK the token's kid names; asserts its `alg` is the token's and verifies with that
/// algorithm only. Returns the kid.
fn verify_against(jwks: &Value, token: &str, aud: &str) -> String {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.clone().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not published"));
    let jwk_alg: Algorithm = jwk["alg"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        jwk_alg, header.alg,
        "{aud}: the JWK's alg is not the token's"
    );
    let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    let mut v = Validation::new(jwk_alg);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap();
    kid
}

async fn token(url: &str, client: &str, resource: &str) -> String {
    let (status, body, _) = post_form(
        url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", "s"),
            ("scope", &format!("{resource}/.default")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{resource}: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_token_verifies_against_its_own_jwk_with_the_jwk_alg() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let handle = start_yaml(CONFIG, dir.path()).await;
    let url = format!("{}/token", handle.issuer());
    let jwks: Value = serde_json::from_str(&handle.jwks()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = kids.iter().copied().collect();
    assert_eq!(distinct.len(), kids.len(), "kids repeat: {kids:?}");
    assert!(keys.iter().all(|k| k["alg"].is_string()), "{jwks}");
    // The RSA key signs RS256 (its own), PS256 (a resource) and RS512 (dotnet-sts): three JWKs.
    for kid in ["rsa", "rsa-PS256", "p256", "p384", "ed"] {
        assert!(kids.contains(&kid), "{kid} missing: {kids:?}");
    }
    let mut used = BTreeSet::new();
    for (resource, alg) in RESOURCES {
        let t = token(&url, "c", resource).await;
        assert_eq!(
            jsonwebtoken::decode_header(&t).unwrap().alg,
            alg.parse().unwrap()
        );
        used.insert(verify_against(&jwks, &t, resource));
        // `portcullis token` / mint for the same audience signs the same way.
        let minted = handle.mint(&MintRequest::new("alice", resource)).unwrap();
        used.insert(verify_against(&jwks, &minted, resource));
    }
    // dotnet-sts: RS512 with the XML-DSig URI in the header; its JWK says RS512.
    let sts = token(&url, "sts", "api://rs256").await;
    let parts: Vec<&str> = sts.split('.').collect();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[0])
            .unwrap(),
    )
    .unwrap();
    let jwk = keys.iter().find(|k| k["kid"] == header["kid"]).unwrap();
    assert_eq!(jwk["alg"], "RS512");
    let key = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).unwrap()).unwrap();
    assert!(jsonwebtoken::crypto::verify(
        parts[2],
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &key,
        Algorithm::RS512
    )
    .unwrap());
    used.insert(header["kid"].as_str().unwrap().to_owned());
    // Every published JWK is one some token uses: nothing is published for an alg never signed.
    assert_eq!(used.len(), kids.len(), "used {used:?} of {kids:?}");

    // An algorithm no JWK is published for is refused, not signed under a mislabelled kid.
    let mut odd = MintRequest::new("alice", "api://rs256");
    odd.alg = Some(SigningAlg::PS256);
    handle.mint(&odd).unwrap();
    let only_rs = tempfile::tempdir().unwrap();
    let plain = start_yaml("listen: \"127.0.0.1:0\"\n", only_rs.path()).await;
    let err = plain.mint(&odd).unwrap_err().to_string();
    assert!(err.contains("no JWK is published for PS256"), "{err}");
    plain.shutdown().await;
    handle.shutdown().await;
}

#[tokio::test]
async fn rotation_keeps_one_jwk_per_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let handle = start_yaml(CONFIG, dir.path()).await;
    let active = handle.rotate().unwrap();
    let rsa = active.iter().find(|k| k.starts_with("rsa-")).unwrap();
    let url = format!("{}/token", handle.issuer());
    let jwks: Value = serde_json::from_str(&handle.jwks()).unwrap();
    for (resource, _) in RESOURCES {
        let t = token(&url, "c", resource).await;
        let kid = verify_against(&jwks, &t, resource);
        assert!(
            active.iter().any(|a| kid.starts_with(a.as_str())),
            "{kid} vs {active:?}"
        );
    }
    let ps = token(&url, "c", "api://ps256").await;
    assert_eq!(
        jsonwebtoken::decode_header(&ps).unwrap().kid.unwrap(),
        format!("{rsa}-PS256")
    );
    handle.shutdown().await;
}
