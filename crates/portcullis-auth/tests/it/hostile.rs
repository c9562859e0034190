//! Hostile tokens: alg confusion, alg none, key selection, malformed encodings and JSON.

use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_auth::{verify_token, AuthError, KeySnapshot};
use serde_json::json;

use crate::support::*;

fn rsa_keys() -> KeySnapshot {
    snapshot(vec![rsa().verifying(Some("rsa"))])
}

fn verdict(token: &str, keys: &KeySnapshot) -> &'static str {
    reason(verify_token(token, keys, true))
}

fn valid_rs256() -> String {
    sign(Algorithm::RS256, Some("rsa"), &claims(), &rsa().encoding)
}

#[test]
fn alg_none_in_every_spelling_is_rejected() {
    let body = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({ "alg": alg }).to_string().as_bytes());
        for sig in ["", "c2ln"] {
            let token = format!("{header}.{body}.{sig}");
            assert_eq!(verdict(&token, &rsa_keys()), "JwtInvalid", "{alg} {sig}");
        }
    }
}

#[test]
fn alg_none_only_passes_when_unsigned_tokens_are_allowed() {
    let body = b64(claims().to_string().as_bytes());
    let header = b64(br#"{"alg":"none"}"#);
    let t = verify_token(&format!("{header}.{body}."), &rsa_keys(), false).unwrap();
    assert_eq!(t.alg, None);
    assert_eq!(t.key_fingerprint, None);
    let with_sig = format!("{header}.{body}.c2ln");
    assert_eq!(
        reason(verify_token(&with_sig, &rsa_keys(), false)),
        "JwtInvalid"
    );
    let other_case = format!("{}.{body}.", b64(br#"{"alg":"None"}"#));
    assert_eq!(
        reason(verify_token(&other_case, &rsa_keys(), false)),
        "JwtInvalid"
    );
}

#[test]
fn missing_array_and_unknown_alg_are_invalid() {
    let claims = claims().to_string();
    for header in [
        r#"{"kid":"rsa"}"#,
        r#"{"alg":["RS256"],"kid":"rsa"}"#,
        r#"{"alg":null}"#,
        r#"{"alg":"RS1"}"#,
        r#"{"alg":"rs256"}"#,
        r#"{"alg":"ES512"}"#,
        r#"{"alg":"http://www.w3.org/2000/09/xmldsig#rsa-sha1"}"#,
        r#"{"alg":"RS256","kid":7}"#,
    ] {
        let token = sign_raw(header, &claims, &rsa().encoding, Algorithm::RS256);
        assert_eq!(verdict(&token, &rsa_keys()), "JwtInvalid", "{header}");
    }
}

#[test]
fn crit_and_b64_are_never_accepted() {
    let claims = claims().to_string();
    for header in [
        r#"{"alg":"RS256","kid":"rsa","crit":["exp"],"exp":1}"#,
        r#"{"alg":"RS256","kid":"rsa","crit":[]}"#,
        r#"{"alg":"RS256","kid":"rsa","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"RS256","kid":"rsa","b64":true}"#,
    ] {
        let token = sign_raw(header, &claims, &rsa().encoding, Algorithm::RS256);
        assert_eq!(verdict(&token, &rsa_keys()), "JwtInvalid", "{header}");
    }
}

/// The attacker's real public key as a JWK (`n`, `e` from its SPKI) and as an `x5c` chain (a
/// self-signed certificate of it, standard base64 DER).
fn attacker_header_keys() -> (serde_json::Value, String) {
    use base64::Engine as _;
    use x509_parser::prelude::FromDer as _;
    let attacker = rsa2();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&attacker.pair);
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let x509_parser::public_key::PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("not an RSA key");
    };
    // DER integers carry a sign byte; JWK's are unsigned, without leading zeros.
    let unsigned = |b: &[u8]| b64(&b[b.iter().take_while(|&&x| x == 0).count()..]);
    let jwk = json!({
        "kty": "RSA",
        "n": unsigned(rsa.modulus),
        "e": unsigned(rsa.exponent),
    });
    let cert = rcgen::CertificateParams::new(vec!["attacker.test".to_owned()])
        .unwrap()
        .self_signed(&attacker.pair)
        .unwrap();
    let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
    (jwk, x5c)
}

#[test]
fn header_carried_keys_are_ignored() {
    // The attacker signs with their own key and ships that very key in the header: jwk, x5c (and
    // URLs to it: jku, x5u). A verifier that used any of them would accept.
    let attacker = rsa2();
    let (jwk, x5c) = attacker_header_keys();
    // The header keys are the real signing key: built into a key source, they verify the token.
    let from_jwk = portcullis_auth::VerifyingKey::from_jwk(&jwk, "header").unwrap();
    for extra in [
        json!({ "jwk": jwk }),
        json!({ "jku": "https://evil.test/jwks" }),
        json!({ "x5u": "https://evil.test/cert" }),
        json!({ "x5c": [x5c] }),
        json!({ "jwk": jwk, "x5c": [x5c], "jku": "https://evil.test/jwks" }),
    ] {
        let mut header = json!({ "alg": "RS256" });
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let token = sign_raw(
            &header.to_string(),
            &claims().to_string(),
            &attacker.encoding,
            Algorithm::RS256,
        );
        assert_eq!(
            verdict(&token, &snapshot(vec![from_jwk.clone()])),
            "ok",
            "control: the header's key verifies the token when configured: {header}"
        );
        assert_eq!(
            verdict(&token, &rsa_keys()),
            "TokenSignatureInvalid",
            "{header}"
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_fails() {
    let key = rsa().verifying(Some("rsa"));
    let pem = rsa().public_pem.clone();
    let der = rcgen::PublicKeyData::subject_public_key_info(&rsa().pair);
    let jwk = json!({"kty":"RSA","kid":"rsa"}).to_string();
    for secret in [pem.as_bytes(), &der[..], jwk.as_bytes()] {
        let enc = EncodingKey::from_secret(secret);
        for kid in [Some("rsa"), None] {
            let token = sign(Algorithm::HS256, kid, &claims(), &enc);
            let err = verify_token(&token, &snapshot(vec![key.clone()]), true).unwrap_err();
            assert!(
                matches!(
                    err,
                    AuthError::TokenSignatureInvalid | AuthError::TokenSignatureKeyNotFound { .. }
                ),
                "{err:?}"
            );
        }
    }
}

#[test]
fn a_kid_naming_one_key_never_falls_back_to_another() {
    // Signed by "b"'s key but naming "a": "b" must not be tried.
    let keys = snapshot(vec![
        rsa2().verifying(Some("a")),
        rsa().verifying(Some("b")),
    ]);
    let token = sign(Algorithm::RS256, Some("a"), &claims(), &rsa().encoding);
    assert_eq!(verdict(&token, &keys), "TokenSignatureInvalid");
    let unknown = sign(Algorithm::RS256, Some("zzz"), &claims(), &rsa().encoding);
    assert_eq!(
        verify_token(&unknown, &keys, true).unwrap_err(),
        AuthError::TokenSignatureKeyNotFound {
            kid: Some("zzz".into())
        }
    );
}

/// `try-all-signing-keys` (APIM's key matching, set by import-apim): a kid that names no key tries
/// every key of the right type; a kid that names a key still selects only it; when every key was
/// tried in vain the answer is "key not found" (so the unknown-kid refetch still runs).
#[test]
fn try_all_signing_keys_only_widens_an_unknown_kid() {
    let mut keys = snapshot(vec![
        rsa2().verifying(Some("a")),
        rsa().verifying(Some("b")),
        p256().verifying(Some("c")),
    ]);
    keys.try_all_keys = true;
    let unknown = sign(Algorithm::RS256, Some("zzz"), &claims(), &rsa().encoding);
    assert!(verify_token(&unknown, &keys, true).is_ok());
    // the same key under another key's id: that kid selects "a" only
    let misnamed = sign(Algorithm::RS256, Some("a"), &claims(), &rsa().encoding);
    assert_eq!(verdict(&misnamed, &keys), "TokenSignatureInvalid");
    // no key verifies an unknown kid's token: every key was tried, none is "zzz"
    let mut without_b = snapshot(vec![
        rsa2().verifying(Some("a")),
        p256().verifying(Some("c")),
    ]);
    without_b.try_all_keys = true;
    assert_eq!(
        verify_token(&unknown, &without_b, true).unwrap_err(),
        AuthError::TokenSignatureKeyNotFound {
            kid: Some("zzz".into())
        }
    );
    // the algorithm still comes from the key: an ES256 token under an unknown kid is only tried
    // against the P-256 key
    let es = sign(Algorithm::ES256, Some("zzz"), &claims(), &p256().encoding);
    assert!(verify_token(&es, &keys, true).is_ok());
    // strict (the default): an unknown kid finds nothing
    keys.try_all_keys = false;
    assert_eq!(
        verify_token(&unknown, &keys, true).unwrap_err(),
        AuthError::TokenSignatureKeyNotFound {
            kid: Some("zzz".into())
        }
    );
}

#[test]
fn keys_without_kid_are_candidates_for_any_kid() {
    let keys = snapshot(vec![rsa().verifying(None)]);
    let token = sign(
        Algorithm::RS256,
        Some("whatever"),
        &claims(),
        &rsa().encoding,
    );
    assert!(verify_token(&token, &keys, true).is_ok());
}

#[test]
fn unavailable_keys_are_reported_as_such() {
    let mut keys = snapshot(vec![]);
    keys.unavailable = true;
    assert_eq!(verdict(&valid_rs256(), &keys), "KeysUnavailable");
}

#[test]
fn tampered_truncated_and_extended_signatures_fail() {
    let token = valid_rs256();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut flipped = sig.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        format!("{input}.{flipped}"),
        format!("{input}.{}", &sig[..340]),
        format!("{input}.{sig}AAAA"),
    ] {
        assert_eq!(verdict(&bad, &rsa_keys()), "TokenSignatureInvalid");
    }
    let mut claims = claims();
    claims["sub"] = json!("mallory");
    let forged = format!(
        "{}.{}.{sig}",
        input.split('.').next().unwrap(),
        b64(claims.to_string().as_bytes())
    );
    assert_eq!(verdict(&forged, &rsa_keys()), "TokenSignatureInvalid");
}

#[test]
fn ecdsa_special_signatures_fail() {
    let keys = snapshot(vec![p256().verifying(Some("p256"))]);
    let token = sign(Algorithm::ES256, Some("p256"), &claims(), &p256().encoding);
    let (input, sig) = token.rsplit_once('.').unwrap();
    let raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let n = hex_to_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let der = der_signature(&raw[..32], &raw[32..]);
    let mut extra = raw.clone();
    extra.push(0);
    for bad in [
        vec![0u8; 64],
        [n.clone(), n].concat(),
        der,
        extra,
        raw[..63].to_vec(),
    ] {
        let t = format!("{input}.{}", b64(&bad));
        assert_eq!(verdict(&t, &keys), "TokenSignatureInvalid");
    }
    assert_eq!(verdict(&token, &keys), "ok");
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let int = |v: &[u8]| {
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let body = [int(r), int(s)].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

#[test]
fn segment_structure_is_strict() {
    let token = valid_rs256();
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for bad in [
        String::new(),
        ".".into(),
        "..".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}."),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}.{s}.{s}"),
        ".".repeat(20_000),
        format!("{h}.{p}.{}", ".".repeat(20_000)),
    ] {
        assert_eq!(
            verdict(&bad, &rsa_keys()),
            "JwtInvalid",
            "{}",
            &bad[..bad.len().min(40)]
        );
    }
}

#[test]
fn base64_must_be_canonical_unpadded_base64url() {
    let token = valid_rs256();
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let std_alphabet = |seg: &str| seg.replace('-', "+").replace('_', "/");
    let mut variants = vec![
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}=.{s}"),
        format!("{h}.{p}.{s}="),
        format!("{h}.{p}.{s}=="),
        format!(" {h}.{p}.{s}"),
        format!("{h}.{p} .{s}"),
        format!("{h}.{p}.{s}\n"),
        format!("{h}.{p}.{}", s.replacen(|_: char| true, "%", 1)),
    ];
    if s.contains(['-', '_']) {
        variants.push(format!("{h}.{p}.{}", std_alphabet(s)));
    }
    // Non-canonical: a header whose length leaves unused bits, with those bits set.
    let header = r#"{"alg":"RS256","kid":"rsa"}"#; // 27 bytes: 36 chars, no unused bits
    let header2 = r#"{"alg":"RS256","kid":"rsa" }"#; // 28 bytes: 38 chars, 4 unused bits
    assert_eq!(b64(header.as_bytes()).len() % 4, 0);
    let enc = b64(header2.as_bytes());
    let last = enc.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let tweaked = alphabet.chars().nth(idx | 1).unwrap();
    let noncanonical = format!("{}{tweaked}", &enc[..enc.len() - 1]);
    let t = sign_raw(
        header2,
        &claims().to_string(),
        &rsa().encoding,
        Algorithm::RS256,
    );
    let (_, rest) = t.split_once('.').unwrap();
    variants.push(format!("{noncanonical}.{rest}"));
    let sig_noncanonical = {
        // RSA-2048 signature: 256 bytes = 342 chars + 2 unused bits in the last char.
        let last = s.chars().last().unwrap();
        let idx = alphabet.find(last).unwrap();
        format!(
            "{}{}",
            &s[..s.len() - 1],
            alphabet.chars().nth(idx | 1).unwrap()
        )
    };
    variants.push(format!("{h}.{p}.{sig_noncanonical}"));
    for bad in variants {
        assert_eq!(verdict(&bad, &rsa_keys()), "JwtInvalid", "{bad}");
    }
    assert_eq!(verdict(&t, &rsa_keys()), "ok");
}

#[test]
fn duplicate_json_members_are_invalid() {
    let enc = &rsa().encoding;
    let c = claims().to_string();
    let dup_header = sign_raw(
        r#"{"alg":"RS256","alg":"RS256","kid":"rsa"}"#,
        &c,
        enc,
        Algorithm::RS256,
    );
    let dup_kid = sign_raw(
        r#"{"alg":"RS256","kid":"x","kid":"rsa"}"#,
        &c,
        enc,
        Algorithm::RS256,
    );
    let dup_claim = sign_raw(
        r#"{"alg":"RS256","kid":"rsa"}"#,
        r#"{"sub":"alice","sub":"admin","exp":1700000300}"#,
        enc,
        Algorithm::RS256,
    );
    let nested = sign_raw(
        r#"{"alg":"RS256","kid":"rsa"}"#,
        r#"{"sub":"alice","realm_access":{"roles":["a"],"roles":["admin"]},"exp":1700000300}"#,
        enc,
        Algorithm::RS256,
    );
    for t in [dup_header, dup_kid, dup_claim, nested] {
        assert_eq!(verdict(&t, &rsa_keys()), "JwtInvalid");
    }
}

#[test]
fn payload_must_be_a_json_object() {
    let enc = &rsa().encoding;
    for payload in [
        "[]",
        "\"x\"",
        "1",
        "null",
        "",
        "{",
        "{\"a\":1}x",
        "\u{feff}{}",
    ] {
        let t = sign_raw(
            r#"{"alg":"RS256","kid":"rsa"}"#,
            payload,
            enc,
            Algorithm::RS256,
        );
        assert_eq!(verdict(&t, &rsa_keys()), "JwtInvalid", "{payload}");
    }
    let header_not_object = sign_raw(r#"["RS256"]"#, "{}", enc, Algorithm::RS256);
    assert_eq!(verdict(&header_not_object, &rsa_keys()), "JwtInvalid");
}

#[test]
fn deep_nesting_is_invalid_not_a_crash() {
    let deep = format!(
        r#"{{"exp":1700000300,"a":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let t = sign_raw(
        r#"{"alg":"HS256"}"#,
        &deep,
        &hmac_encoding(),
        Algorithm::HS256,
    );
    assert_eq!(verdict(&t, &snapshot(vec![hmac_key(None)])), "JwtInvalid");
    let deep_header = format!(
        r#"{{"alg":"HS256","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let t = sign_raw(&deep_header, "{}", &hmac_encoding(), Algorithm::HS256);
    assert_eq!(verdict(&t, &snapshot(vec![hmac_key(None)])), "JwtInvalid");
}

#[test]
fn a_400_kb_token_is_rejected_before_any_work() {
    let claims = json!({ "exp": NOW.0 + 60, "pad": "x".repeat(400 * 1024) });
    let t = sign(Algorithm::HS256, None, &claims, &hmac_encoding());
    assert_eq!(
        verify_token(&t, &snapshot(vec![hmac_key(None)]), true).unwrap_err(),
        AuthError::JwtInvalid {
            detail: "token too large"
        }
    );
}

#[test]
fn numeric_dates_must_be_numbers() {
    let keys = snapshot(vec![hmac_key(None)]);
    for claim in ["exp", "nbf", "iat"] {
        for value in [
            json!("1700000300"),
            json!(null),
            json!(true),
            json!([1]),
            json!({}),
        ] {
            let mut c = claims();
            c[claim] = value.clone();
            let t = sign(Algorithm::HS256, None, &c, &hmac_encoding());
            assert_eq!(verdict(&t, &keys), "JwtInvalid", "{claim}={value}");
        }
    }
    let mut c = claims();
    c["exp"] = json!(1_700_000_300.5);
    c["iat"] = json!(1_699_999_999.25);
    let t = sign(Algorithm::HS256, None, &c, &hmac_encoding());
    assert_eq!(
        verify_token(&t, &keys, true).unwrap().exp,
        Some(1_700_000_300.5)
    );
}

#[test]
fn jwe_tokens_are_invalid() {
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn";
    assert_eq!(verdict(jwe, &rsa_keys()), "JwtInvalid");
}
