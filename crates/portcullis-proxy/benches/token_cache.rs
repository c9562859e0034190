//! The verified-token cache through the function the proxy calls per request
//! (`TokenCache::key` + `auth::verify_and_check`), per algorithm:
//! - `hit`: the token is cached (one map lookup: a foldhash of scope and token, then a byte
//!   comparison with the stored token; the key-still-present check; the lifetime check; the other
//!   claim rules are remembered from the first call under the same policy and key snapshot, see
//!   `portcullis_auth::check_claims_memo`);
//! - `miss`: the entry is dropped before each call (untimed), so each call hashes, misses,
//!   verifies the signature, checks the claims and inserts;
//! - `off`: `max-entries: 0`, every request verified (no hashing, no insert);
//! - `ES256/hit-10k`: hits over 10,000 distinct cached tokens in turn, as under load
//!   (`benches/compare-envoy` rotates as many): each lookup touches an entry that is not in the
//!   CPU's caches, which the single-token `hit` never shows. The cache holds 40,000 units, so
//!   all 10,000 fit (an Entra-sized token weighs 1.5-2 units): every call is a hit.
//!
//! Run: `cargo bench -p portcullis-proxy --bench token_cache`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::Algorithm;
use portcullis_auth::{KeySnapshot, Match, Policy, ScopesRule, UnixTime, VerifyingKey};
use portcullis_proxy::auth::verify_and_check;
use portcullis_proxy::cache::{CacheMetrics, KeyScope, TokenCache};
use portcullis_testkit::jwks_server::{b64url, hmac_signature, TestKey};
use prometheus::{IntCounter, IntCounterVec, Opts};
use serde_json::json;

const NOW: UnixTime = UnixTime(1_700_000_000);
const ISSUER: &str = "https://login.microsoftonline.com/3c6b8f1e-7a2d-4f8e-9c1b-2d3e4f5a6b7c/v2.0";

/// Entra-v2-sized claims, shared with the other crate's bench (portcullis-testkit fixtures).
fn claims() -> serde_json::Value {
    portcullis_testkit::fixtures::entra_v2_claims(ISSUER, NOW.0)
}

fn policy() -> Policy {
    let mut p = Policy::new("bench");
    p.issuers = vec![ISSUER.into()];
    p.audiences = vec!["api://orders".into()];
    p.scopes = Some(ScopesRule {
        r#match: Match::Any,
        values: vec!["orders.read".into()],
    });
    p
}

fn metrics() -> CacheMetrics {
    CacheMetrics {
        hits: IntCounter::new("hits", "hits").unwrap(),
        misses: IntCounter::new("misses", "misses").unwrap(),
        evictions: IntCounterVec::new(Opts::new("evictions", "evictions"), &["cause"]).unwrap(),
    }
}

fn hs256_token(kid: &str, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"}).to_string();
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims().to_string().as_bytes())
    );
    let sig = hmac_signature(secret, input.as_bytes(), Algorithm::HS256).unwrap();
    format!("{input}.{}", b64url(&sig))
}

fn bench(c: &mut Criterion) {
    let rsa = TestKey::rsa("rsa").unwrap();
    let ec = TestKey::ec_p256("ec").unwrap();
    let secret = b"bench-hmac-secret-of-thirty-two-bytes!!";
    // A warm snapshot with a few keys, like a real JWKS.
    let keys = KeySnapshot::new(vec![
        VerifyingKey::from_jwk(rsa.jwk(), "bench").unwrap(),
        VerifyingKey::from_jwk(ec.jwk(), "bench").unwrap(),
        VerifyingKey::from_hmac_secret(Some("hs".into()), secret, "bench"),
    ]);
    let policy = policy();
    let scope = KeyScope::of(&[], &[], true);
    let counts = metrics();
    let cache = TokenCache::with_scopes(40_000, vec![scope], counts.clone());
    let off = TokenCache::with_scopes(0, vec![scope], metrics());
    let cases = [
        ("RS256", rsa.sign(&claims()).unwrap()),
        ("ES256", ec.sign(&claims()).unwrap()),
        ("HS256", hs256_token("hs", secret)),
    ];
    let mut group = c.benchmark_group("token_cache");
    for (alg, token) in &cases {
        let check = |cache: &TokenCache| {
            let key = cache.key(portcullis_config::PolicyId::new(0), black_box(token));
            verify_and_check(token, &policy, &keys, NOW, cache, key.as_ref()).unwrap()
        };
        check(&cache);
        group.bench_function(format!("{alg}/hit"), |b| b.iter(|| check(&cache)));
        group.bench_function(format!("{alg}/miss"), |b| {
            b.iter_custom(|iters| {
                let key = cache
                    .key(portcullis_config::PolicyId::new(0), token)
                    .unwrap();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    cache.invalidate(&key);
                    let start = Instant::now();
                    black_box(check(&cache));
                    total += start.elapsed();
                }
                total
            })
        });
        group.bench_function(format!("{alg}/off"), |b| b.iter(|| check(&off)));
    }
    let tokens: Vec<String> = (0..10_000)
        .map(|i| {
            let mut claims = claims();
            claims["uti"] = json!(format!("rotating-{i:05}"));
            ec.sign(&claims).unwrap()
        })
        .collect();
    let policy_id = portcullis_config::PolicyId::new(0);
    for token in &tokens {
        let key = cache.key(policy_id, token);
        verify_and_check(token, &policy, &keys, NOW, &cache, key.as_ref()).unwrap();
    }
    let misses = counts.misses.get();
    let mut next = tokens.iter().cycle();
    group.bench_function("ES256/hit-10k", |b| {
        b.iter(|| {
            let token = next.next().unwrap();
            let key = cache.key(policy_id, black_box(token));
            verify_and_check(token, &policy, &keys, NOW, &cache, key.as_ref()).unwrap()
        })
    });
    assert_eq!(counts.misses.get(), misses, "a rotating token missed");
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
