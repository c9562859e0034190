//! Encrypted tokens (JWE) through `evaluate`: every supported alg/enc pair wrapping a signed token,
//! the nested JWS verified as a plain one, and one answer for every way decryption can fail.
//! Tokens are encrypted by the test kit (`portcullis_testkit::jwe`), an implementation independent
//! of the decryptor.

use http::HeaderMap;
use jsonwebtoken::Algorithm;
use portcullis_auth::{
    evaluate, AuthError, ContentEncryption, DecryptionKey, DecryptionKeys, KeyManagement,
    KeySnapshot, Policy,
};
use portcullis_testkit::jwe::{encrypt, EncryptionKey, RsaEncryptionKey};
use serde_json::{json, Value};

use crate::support::*;

/// Every supported content encryption, by its JOSE name.
fn encs() -> impl Iterator<Item = &'static str> {
    portcullis_auth::ContentEncryption::ALL
        .into_iter()
        .map(|e| e.name())
}

fn rsa_enc_key() -> &'static RsaEncryptionKey {
    static KEY: std::sync::OnceLock<RsaEncryptionKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| RsaEncryptionKey::generate().unwrap())
}

fn rsa_decryption_key(alg: Option<KeyManagement>) -> DecryptionKey {
    let pem = rsa_enc_key().private_pem().unwrap();
    DecryptionKey::rsa_from_pem(None, pem.as_bytes(), alg, vec![], "test").unwrap()
}

fn sym(secret: &[u8], alg: Option<KeyManagement>) -> DecryptionKey {
    DecryptionKey::symmetric(None, secret, alg, vec![], "test").unwrap()
}

fn with_keys(keys: Vec<DecryptionKey>) -> Policy {
    let mut p = policy();
    p.decryption_keys = DecryptionKeys::new(keys);
    p
}

fn signed() -> String {
    sign(Algorithm::RS256, Some("sig"), &claims(), &rsa().encoding)
}

fn signing_keys() -> KeySnapshot {
    snapshot(vec![rsa().verifying(Some("sig"))])
}

fn run(token: &str, policy: &Policy) -> Result<portcullis_auth::Verified, AuthError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    evaluate(&request(&headers, None), policy, &signing_keys(), NOW)
}

fn header(alg: &str, enc: &str) -> Value {
    json!({ "alg": alg, "enc": enc, "cty": "JWT" })
}

/// The signed token, encrypted under this header and key.
fn jwe(header: &Value, key: &EncryptionKey<'_>) -> String {
    encrypt(header, key, signed().as_bytes()).unwrap()
}

/// The signed token, encrypted with a symmetric key.
fn sym_jwe(alg: &str, enc: &str, key: &[u8]) -> String {
    jwe(&header(alg, enc), &EncryptionKey::Symmetric(key))
}

const DECRYPTION_FAILED: &str = "TokenDecryptionFailed";

#[test]
fn every_symmetric_alg_and_enc_decrypts_to_the_signed_token() {
    for enc in encs() {
        let cek_len = ContentEncryption::from_name(enc).unwrap().cek_len();
        let dir_key = vec![0x42u8; cek_len];
        let dir = sym_jwe("dir", enc, &dir_key);
        let verified = run(
            &dir,
            &with_keys(vec![sym(&dir_key, Some(KeyManagement::Dir))]),
        )
        .unwrap();
        assert_eq!(
            verified.claims.get("sub").unwrap().as_str(),
            Some("alice"),
            "dir {enc}"
        );
        assert_eq!(verified.alg, Some(portcullis_auth::JoseAlg::RS256));
        for (alg, len) in [("A128KW", 16), ("A192KW", 24), ("A256KW", 32)] {
            let kek: Vec<u8> = (0..len as u8).collect();
            let token = sym_jwe(alg, enc, &kek);
            // with the alg configured, and without (the length decides)
            for configured in [KeyManagement::from_name(alg), None] {
                let verified = run(&token, &with_keys(vec![sym(&kek, configured)]));
                assert!(verified.is_ok(), "{alg} {enc} {configured:?}: {verified:?}");
            }
        }
    }
}

#[test]
fn rsa_oaep_and_oaep_256_decrypt_to_the_signed_token() {
    for alg in ["RSA-OAEP", "RSA-OAEP-256"] {
        for enc in encs() {
            let token = encrypt(
                &header(alg, enc),
                &EncryptionKey::Rsa(rsa_enc_key()),
                signed().as_bytes(),
            )
            .unwrap();
            for configured in [KeyManagement::from_name(alg), None] {
                let verified = run(&token, &with_keys(vec![rsa_decryption_key(configured)]));
                assert!(verified.is_ok(), "{alg} {enc}: {verified:?}");
            }
        }
    }
}

#[test]
fn the_nested_token_is_verified_as_a_plain_one() {
    let kek = [7u8; 32];
    let keys = with_keys(vec![sym(&kek, None)]);
    let seal = |inner: &str| {
        encrypt(
            &header("A256KW", "A256GCM"),
            &EncryptionKey::Symmetric(&kek),
            inner.as_bytes(),
        )
        .unwrap()
    };
    // signed by a key the policy does not have
    let foreign = sign(Algorithm::RS256, Some("sig"), &claims(), &rsa2().encoding);
    assert_eq!(reason(run(&seal(&foreign), &keys)), "TokenSignatureInvalid");
    // alg: none inside, signed tokens required
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(reason(run(&seal(&none), &keys)), "JwtInvalid");
    // expired inside
    let mut old = claims();
    old["exp"] = json!(NOW.0 - 100);
    let expired = sign(Algorithm::RS256, Some("sig"), &old, &rsa().encoding);
    assert_eq!(reason(run(&seal(&expired), &keys)), "TokenExpired");
    // a bare claims set (no signature) while signed tokens are required
    let mut h = header("A256KW", "A256GCM");
    h.as_object_mut().unwrap().remove("cty");
    let bare = encrypt(
        &h,
        &EncryptionKey::Symmetric(&kek),
        claims().to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(reason(run(&bare, &keys)), "JwtInvalid");
    // ... accepted (unsigned) only under require-signed-tokens: false
    let mut lax = with_keys(vec![sym(&kek, None)]);
    lax.require_signed_tokens = false;
    let unsigned = run(&bare, &lax).unwrap();
    assert_eq!(unsigned.alg, None);
    // a JWE inside a JWE is not a JWT
    let double = seal(&seal(&signed()));
    assert_eq!(reason(run(&double, &keys)), "JwtInvalid");
    // the inner header's alg never overrides the key's: HS256 signed with the RSA public key bytes
    let confusion = sign_raw(
        r#"{"alg":"HS256","kid":"sig"}"#,
        &claims().to_string(),
        &jsonwebtoken::EncodingKey::from_secret(rsa().public_pem.as_bytes()),
        Algorithm::HS256,
    );
    assert_ne!(reason(run(&seal(&confusion), &keys)), "ok");
}

#[test]
fn a_plain_signed_token_still_validates_with_decryption_keys() {
    let p = with_keys(vec![sym(&[1u8; 32], None)]);
    assert!(run(&signed(), &p).is_ok());
}

#[test]
fn without_decryption_keys_an_encrypted_token_is_invalid() {
    let kek = [7u8; 16];
    let token = sym_jwe("A128KW", "A128GCM", &kek);
    assert_eq!(reason(run(&token, &policy())), "JwtInvalid");
}

/// Tamper with one segment (0..5) of a compact JWE: flip the low bit of its first decoded byte.
fn tamper(token: &str, segment: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = portcullis_testkit::jwks_server::b64url_decode(&parts[segment]).unwrap();
    bytes[0] ^= 1;
    parts[segment] = b64(&bytes);
    parts.join(".")
}

#[test]
fn every_decryption_failure_is_the_same_answer() {
    let kek = [7u8; 32];
    let keys = with_keys(vec![sym(&kek, None), rsa_decryption_key(None)]);
    let mut failures: Vec<(String, String)> = Vec::new();
    for enc in encs() {
        for (alg, key) in [
            ("A256KW", EncryptionKey::Symmetric(&kek)),
            ("RSA-OAEP-256", EncryptionKey::Rsa(rsa_enc_key())),
            ("RSA-OAEP", EncryptionKey::Rsa(rsa_enc_key())),
        ] {
            let good = encrypt(&header(alg, enc), &key, signed().as_bytes()).unwrap();
            assert!(run(&good, &keys).is_ok(), "{alg} {enc}");
            for (segment, what) in [
                (0, "header"),
                (1, "encrypted key"),
                (2, "iv"),
                (3, "ciphertext"),
                (4, "tag"),
            ] {
                failures.push((format!("{alg} {enc} {what}"), tamper(&good, segment)));
            }
            // the right shape under a key the gateway does not have
            let other = [8u8; 32];
            let wrong = match alg {
                "A256KW" => encrypt(
                    &header(alg, enc),
                    &EncryptionKey::Symmetric(&other),
                    signed().as_bytes(),
                ),
                _ => encrypt(
                    &header(alg, enc),
                    &EncryptionKey::Rsa(&RsaEncryptionKey::generate().unwrap()),
                    signed().as_bytes(),
                ),
            }
            .unwrap();
            failures.push((format!("{alg} {enc} wrong key"), wrong));
        }
        let rsa1_5 = encrypt(
            &header("RSA1_5", enc),
            &EncryptionKey::Rsa(rsa_enc_key()),
            signed().as_bytes(),
        )
        .unwrap();
        failures.push((format!("RSA1_5 {enc}"), rsa1_5));
        let mut zip = header("A256KW", enc);
        zip["zip"] = json!("DEF");
        failures.push((
            format!("zip {enc}"),
            jwe(&zip, &EncryptionKey::Symmetric(&kek)),
        ));
        let mut crit = header("A256KW", enc);
        crit["crit"] = json!(["exp"]);
        crit["exp"] = json!(1);
        failures.push((
            format!("crit {enc}"),
            jwe(&crit, &EncryptionKey::Symmetric(&kek)),
        ));
    }
    // dir with the wrong key, and a wrapped key sent with alg dir
    let dir_key = [3u8; 32];
    let dir = sym_jwe("dir", "A256GCM", &dir_key);
    failures.push(("dir wrong key".into(), dir));
    let unknown = sym_jwe("A128KW", "A128GCM", &[1u8; 16]);
    failures.push(("alg no key accepts".into(), unknown));
    let p = keys;
    let expected = AuthError::TokenDecryptionFailed { detail: "" }.default_message();
    for (name, token) in &failures {
        let got = run(token, &p);
        assert_eq!(reason(run(token, &p)), DECRYPTION_FAILED, "{name}: {got:?}");
        let response = portcullis_auth::failure_response(&got.unwrap_err(), &p);
        assert!(
            response.body.contains(&expected),
            "{name}: {}",
            response.body
        );
    }
    assert!(failures.len() > 100, "{}", failures.len());
}

#[test]
fn a_key_refuses_algorithms_it_is_not_configured_for() {
    let kek = [5u8; 32];
    let dir_only = DecryptionKey::symmetric(
        None,
        &kek,
        Some(KeyManagement::Dir),
        vec![ContentEncryption::A256GCM],
        "t",
    )
    .unwrap();
    let p = with_keys(vec![dir_only]);
    let wrapped = sym_jwe("A256KW", "A256GCM", &kek);
    assert_eq!(reason(run(&wrapped, &p)), DECRYPTION_FAILED);
    let cbc = sym_jwe("dir", "A128CBC-HS256", &kek);
    assert_eq!(reason(run(&cbc, &p)), DECRYPTION_FAILED);
    let gcm = sym_jwe("dir", "A256GCM", &kek);
    assert!(run(&gcm, &p).is_ok());
    // kid: a JWE kid selects keys with that id (or none)
    let named = DecryptionKey::symmetric(Some("k1".into()), &kek, None, vec![], "t").unwrap();
    let p = with_keys(vec![named]);
    let mut h = header("A256KW", "A256GCM");
    h["kid"] = json!("k2");
    let other_kid = jwe(&h, &EncryptionKey::Symmetric(&kek));
    assert_eq!(reason(run(&other_kid, &p)), DECRYPTION_FAILED);
    h["kid"] = json!("k1");
    let same_kid = jwe(&h, &EncryptionKey::Symmetric(&kek));
    assert!(run(&same_kid, &p).is_ok());
}

#[test]
fn keys_are_tried_in_order_until_one_decrypts() {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let p = with_keys(vec![sym(&a, None), sym(&b, None)]);
    let token = sym_jwe("A256KW", "A128CBC-HS256", &b);
    assert!(run(&token, &p).is_ok());
}

#[test]
fn rsa_private_keys_in_pkcs1_pem_are_read_too() {
    // PKCS#8 PEM from the kit, re-encoded as PKCS#1 via the rsaEncryption OCTET STRING inside it.
    let pem8 = rsa_enc_key().private_pem().unwrap();
    let der8 = pem::parse(pem8.as_bytes()).unwrap().into_contents();
    // PrivateKeyInfo: SEQUENCE { INTEGER 0, AlgorithmIdentifier, OCTET STRING { RSAPrivateKey } }
    let pkcs1_at = der8.windows(2).position(|w| w == [0x04, 0x82]).unwrap() + 4;
    let pem1 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der8[pkcs1_at..].to_vec()));
    let key = DecryptionKey::rsa_from_pem(None, pem1.as_bytes(), None, vec![], "t").unwrap();
    let token = encrypt(
        &header("RSA-OAEP-256", "A256GCM"),
        &EncryptionKey::Rsa(rsa_enc_key()),
        signed().as_bytes(),
    )
    .unwrap();
    assert!(run(&token, &with_keys(vec![key])).is_ok());
    // a certificate alone is no private key; an RSA1_5-only key is refused at load
    assert!(DecryptionKey::rsa_from_pem(
        None,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        None,
        vec![],
        "t"
    )
    .is_err());
    assert!(KeyManagement::parse_configured("RSA1_5").is_err());
}
