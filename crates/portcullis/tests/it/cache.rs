//! End-to-end tests: the verified-token cache.
//!
//! The real gateway (in process through `portcullis_proxy::bind`), the recording backend and a JWKS
//! server on loopback port 0. Each test reads the cache's own counters from `/metrics`, so a test
//! that expects a hit fails when the cache is bypassed, and each rejection test fails if the cache
//! lets a token through that verification would refuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use portcullis_auth::{Match, Policy, ScopesRule};
use portcullis_config::{KeyLifecycle, KeySource};
use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use serde_json::{json, Value};

use crate::support::{self, route, InProcess};

const ORDERS: &str = "api://orders";

/// `orders`: audience api://orders, scope orders.read. `admin`: same issuer and key source (so it
/// shares cache entries with `orders`), but scope orders.admin, answered with 403.
fn policy(name: &str, issuer: &str, scope: &str) -> Policy {
    let mut p = Policy::new(name);
    p.issuers = vec![issuer.to_owned()];
    p.audiences = vec![ORDERS.to_owned()];
    p.scopes = Some(ScopesRule {
        r#match: Match::Any,
        values: vec![scope.to_owned()],
    });
    p.insufficient_scope_httpcode = Some(403);
    p.forward_claims = vec![(
        reqwest::header::HeaderName::from_static("x-user-id"),
        "sub".to_owned(),
    )];
    p
}

struct Fixture {
    backend: Backend,
    idp: JwksServer,
    key: TestKey,
    gw: InProcess,
    client: reqwest::Client,
}

async fn fixture(max_entries: u64) -> Fixture {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let key = TestKey::rsa("rsa-1").unwrap();
    idp.set_keys(&[&key]);
    let source = || KeySource::JwksUri {
        url: idp.jwks_url(),
        lifecycle: KeyLifecycle {
            // the key-removal test publishes a new kid right away
            unknown_kid_cooldown: Duration::from_millis(1),
            ..KeyLifecycle::default()
        },
    };
    let policies = [("orders", "orders.read"), ("admin", "orders.admin")]
        .into_iter()
        .map(|(name, scope)| (policy(name, idp.issuer(), scope), vec![source()]))
        .collect();
    let routes = vec![
        route("orders", "/api/orders", backend.addr(), Some("orders")),
        route("admin", "/api/admin", backend.addr(), Some("admin")),
    ];
    let mut model = support::model("cache-test.yaml", policies, routes);
    model.server.token_cache_max_entries = max_entries;
    model.server.threads = Some(2);
    let gw = InProcess::start(&model).await;
    Fixture {
        backend,
        idp,
        key,
        gw,
        client: reqwest::Client::new(),
    }
}

impl Fixture {
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin())
    }

    /// Status and JSON body (`Null` for the backend's echo) of `GET path` with `token`.
    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.gw.proxy());
        let resp = self
            .client
            .get(url)
            .header("Authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A counter's value on `/metrics` (the whole sample name, labels included); 0 when absent.
    async fn counter(&self, sample: &str) -> u64 {
        let text = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn hits(&self) -> u64 {
        self.counter("portcullis_token_cache_hits_total").await
    }

    async fn misses(&self) -> u64 {
        self.counter("portcullis_token_cache_misses_total").await
    }

    fn claims(&self, lifetime: i64) -> Value {
        json!({
            "iss": self.idp.issuer(),
            "aud": ORDERS,
            "sub": "user-42",
            "scp": "orders.read",
            "iat": now(),
            "exp": now() + lifetime,
        })
    }
}

fn now() -> i64 {
    #[allow(clippy::disallowed_methods)] // tests mint tokens relative to the real clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_second_request_with_a_token_is_a_hit_and_still_forwards_identity() {
    let f = fixture(1000).await;
    let token = f.key.sign(&f.claims(300)).unwrap();
    assert_eq!((f.hits().await, f.misses().await), (0, 0));
    for round in 1..=3 {
        let (status, body) = f.get("/api/orders/1", &token).await;
        assert_eq!(status, 200, "round {round}: {body}");
    }
    assert_eq!((f.hits().await, f.misses().await), (2, 1));
    let seen = f.backend.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.header("x-user-id") == Some("user-42")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_payload_under_a_cached_signature_is_rejected() {
    let f = fixture(1000).await;
    let token = f.key.sign(&f.claims(300)).unwrap();
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    let hits = f.hits().await;
    assert_eq!(hits, 1);
    // The prototype's bug: same header and signature, payload swapped for another subject.
    let (header, rest) = token.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    // The other payload is taken from a token the same key signed for another subject, so it is
    // well-formed and its claims pass every rule: only the signature check can refuse it.
    let mut claims = f.claims(300);
    claims["sub"] = json!("admin");
    let other = f.key.sign(&claims).unwrap();
    let payload = other.split('.').nth(1).unwrap();
    let forged = format!("{header}.{payload}.{signature}");
    let (status, body) = f.get("/api/orders", &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"],
        "Signature validation failed. Access denied."
    );
    assert_eq!(f.hits().await, hits, "the forged token must not be a hit");
    assert_eq!(f.backend.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_token_still_faces_each_routes_rules() {
    let f = fixture(1000).await;
    let token = f.key.sign(&f.claims(300)).unwrap();
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    // Same key sources: the admin route finds the entry, and its scope rule still runs on it.
    let (status, body) = f.get("/api/admin", &token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(f.hits().await, 1, "the admin route's lookup was a hit");
    // Each policy's rules, whichever ran last on the entry (its claim-rule memo is per policy).
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    assert_eq!(f.get("/api/admin", &token).await.0, 403);
    assert_eq!(f.get("/api/admin", &token).await.0, 403);
    assert_eq!(f.hits().await, 4);
    // ... and the audience rule, on a token whose signature is as good as the first one's.
    let mut claims = f.claims(300);
    claims["aud"] = json!("api://billing");
    let other = f.key.sign(&claims).unwrap();
    let (status, body) = f.get("/api/orders", &other).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"],
        "Audience validation failed. Access denied."
    );
    assert_eq!(f.backend.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_while_cached_is_rejected() {
    let f = fixture(1000).await;
    // 4 s of life: long enough for a loaded CI machine to send a second request before exp (2 s
    // was seen failing under a parallel release build), short enough to keep the test quick.
    let claims = f.claims(4);
    let exp = claims["exp"].as_i64().unwrap();
    let token = f.key.sign(&claims).unwrap();
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    // Poll (bounded) until the gateway refuses it; every 200 on the way is a cache hit, and none
    // may come from a request sent at or after exp.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let sent = now();
        let (status, body) = f.get("/api/orders", &token).await;
        assert!(status != 200 || sent < exp, "accepted at {sent}, exp {exp}");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"],
        "Lifetime validation failed. The token is expired. Access denied."
    );
    assert!(now() >= exp, "rejected before exp");
    assert!(f.hits().await >= 1, "served from the cache while valid");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_removed_from_the_jwks_fails_its_cached_tokens() {
    let f = fixture(1000).await;
    let old = f.key.sign(&f.claims(300)).unwrap();
    assert_eq!(f.get("/api/orders", &old).await.0, 200);
    assert_eq!(f.get("/api/orders", &old).await.0, 200);
    assert_eq!(f.hits().await, 1);
    // Rotation: the issuer drops rsa-1; a token with the new kid makes the gateway refetch.
    let new_key = TestKey::rsa("rsa-2").unwrap();
    f.idp.set_keys(&[&new_key]);
    let fresh = new_key.sign(&f.claims(300)).unwrap();
    let (status, body) = f.get("/api/orders", &fresh).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = f.get("/api/orders", &old).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"],
        "Signature validation failed. Unable to match key. Access denied."
    );
    assert_eq!(
        f.hits().await,
        1,
        "the old token's entry did not count as a hit"
    );
    assert_eq!(
        f.counter("portcullis_token_cache_evictions_total{cause=\"key_removed\"}")
            .await,
        1
    );
    assert_eq!(f.backend.request_count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_entries_zero_turns_the_cache_off() {
    let f = fixture(0).await;
    let token = f.key.sign(&f.claims(300)).unwrap();
    for _ in 0..3 {
        assert_eq!(f.get("/api/orders", &token).await.0, 200);
    }
    assert_eq!((f.hits().await, f.misses().await), (0, 0));
    assert_eq!(f.backend.request_count(), 3);
}
