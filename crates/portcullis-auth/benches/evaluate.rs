//! `evaluate` per token on a warm key snapshot: RS256, ES256, EdDSA, HS256, and the work outside the
//! signature check (an unsigned token through the same pipeline: extract, split, base64, header and
//! claims parsed once, claim rules), which must stay under 2 µs.
//!
//! For an instruction profile, `PORTCULLIS_PROFILE_ITERS=N` runs the non-crypto pipeline N times
//! and exits instead of benchmarking (deterministic under `valgrind --tool=callgrind`; see
//! docs/performance.md, "Auth core profile").
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_auth::{
    check_claims, evaluate, verify_token, KeySnapshot, Match, Policy, RequestParts, ScopesRule,
    UnixTime, VerifyingKey,
};
use serde_json::json;

const NOW: UnixTime = UnixTime(1_700_000_000);

/// Entra-v2-sized claims, shared with the other crate's bench (portcullis-testkit fixtures).
fn claims() -> serde_json::Value {
    portcullis_testkit::fixtures::entra_v2_claims(
        "https://login.microsoftonline.com/3c6b8f1e-7a2d-4f8e-9c1b-2d3e4f5a6b7c/v2.0",
        NOW.0,
    )
}

fn token(alg: &str, kid: &str, key: Option<(&EncodingKey, Algorithm)>) -> String {
    let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" }).to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let sig = key
        .map(|(k, a)| jsonwebtoken::crypto::sign(input.as_bytes(), k, a).unwrap())
        .unwrap_or_default();
    format!("{input}.{sig}")
}

fn policy() -> Policy {
    let mut p = Policy::new("bench");
    p.issuers =
        vec!["https://login.microsoftonline.com/3c6b8f1e-7a2d-4f8e-9c1b-2d3e4f5a6b7c/v2.0".into()];
    p.audiences = vec!["api://orders".into()];
    p.scopes = Some(ScopesRule {
        r#match: Match::Any,
        values: vec!["orders.read".into()],
    });
    p
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, VerifyingKey) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let pem = pair.serialize_pem();
    let enc = if alg == &rcgen::PKCS_RSA_SHA256 {
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
    } else if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()
    } else {
        EncodingKey::from_ec_pem(pem.as_bytes()).unwrap()
    };
    let key = VerifyingKey::from_pem(None, pair.public_key_pem().as_bytes(), "bench")
        .unwrap()
        .remove(0);
    (enc, key)
}

fn bench(c: &mut Criterion) {
    let (rsa_enc, mut rsa_key) = generated(&rcgen::PKCS_RSA_SHA256);
    let (ec_enc, mut ec_key) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (ed_enc, mut ed_key) = generated(&rcgen::PKCS_ED25519);
    rsa_key.kid = Some("rsa".into());
    ec_key.kid = Some("ec".into());
    ed_key.kid = Some("ed".into());
    let secret = b"bench-hmac-secret-of-thirty-two-bytes!!";
    let hs_key = VerifyingKey::from_hmac_secret(Some("hs".into()), secret, "bench");
    let hs_enc = EncodingKey::from_secret(secret);
    // A warm snapshot with a few keys, like a real JWKS.
    let keys = KeySnapshot::new(vec![rsa_key, ec_key, ed_key, hs_key]);
    let policy = policy();

    let cases = [
        (
            "RS256",
            token("RS256", "rsa", Some((&rsa_enc, Algorithm::RS256))),
        ),
        (
            "ES256",
            token("ES256", "ec", Some((&ec_enc, Algorithm::ES256))),
        ),
        (
            "EdDSA",
            token("EdDSA", "ed", Some((&ed_enc, Algorithm::EdDSA))),
        ),
        (
            "HS256",
            token("HS256", "hs", Some((&hs_enc, Algorithm::HS256))),
        ),
    ];
    let mut group = c.benchmark_group("evaluate");
    for (name, token) in &cases {
        let h = headers(token);
        let req = RequestParts {
            headers: &h,
            query: None,
        };
        evaluate(&req, &policy, &keys, NOW).unwrap();
        group.bench_function(*name, |b| {
            b.iter(|| evaluate(black_box(&req), &policy, &keys, NOW).unwrap())
        });
    }

    // Everything but the signature: the same pipeline over an unsigned token.
    let mut unsigned = policy.clone();
    unsigned.require_signed_tokens = false;
    let none = token("none", "hs", None);
    let h = headers(&none);
    let req = RequestParts {
        headers: &h,
        query: None,
    };
    evaluate(&req, &unsigned, &keys, NOW).unwrap();
    group.bench_function("non-crypto (unsigned token, full pipeline)", |b| {
        b.iter(|| evaluate(black_box(&req), &unsigned, &keys, NOW).unwrap())
    });
    group.finish();

    let verified = verify_token(&cases[0].1, &keys, true).unwrap();
    c.bench_function(
        "verify_token (unsigned token: split, base64, header + claims parse)",
        |b| b.iter(|| verify_token(black_box(&none), &keys, false).unwrap()),
    );
    let payload = serde_json::to_vec(&claims()).unwrap();
    c.bench_function(
        "reference: serde_json::from_slice::<Value> of the claims",
        |b| b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&payload)).unwrap()),
    );
    let text = String::from_utf8(payload.clone()).unwrap();
    c.bench_function("Claims::parse (strict, to the tape)", |b| {
        b.iter(|| portcullis_auth::Claims::parse(black_box(text.clone())).unwrap())
    });
    // Machine calibration: measured-facts.md gives 0.54 µs for this on an idle core.
    let kib = vec![7u8; 1024];
    c.bench_function("reference: SHA-256 of 1 KiB", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(&kib)))
    });
    let verified = std::sync::Arc::new(verified);
    c.bench_function("check_claims (cache-hit path)", |b| {
        b.iter(|| check_claims(black_box(&verified), &policy, &keys, NOW).unwrap())
    });
}

/// `PORTCULLIS_PROFILE_ITERS=N`: evaluate the unsigned token N times (for callgrind), no criterion.
fn profile(iters: u64) {
    let keys = KeySnapshot::new(Vec::new());
    let mut unsigned = policy();
    unsigned.require_signed_tokens = false;
    let h = headers(&token("none", "hs", None));
    let req = RequestParts {
        headers: &h,
        query: None,
    };
    for _ in 0..iters {
        black_box(evaluate(black_box(&req), &unsigned, &keys, NOW).unwrap());
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Some(iters) = std::env::var("PORTCULLIS_PROFILE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        profile(iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
