//! Key-store side of the security review (issue 13, step 4): keys bound to the issuer of their
//! discovery document, no HMAC secrets from fetched JWKS, a fail-closed issuer check while a
//! discovery issuer is unknown, and a removed key gone within a short `max-age`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_auth::{check_claims, AuthError, UnixTime};
use portcullis_testkit::jwks_server::{JwksServer, TestKey, JWKS_PATH};
use serde_json::json;

use crate::*;

const LONG: Duration = Duration::from_secs(3600);
const NOW: UnixTime = UnixTime(1_700_000_000);

fn lc() -> KeyLifecycle {
    lifecycle(ms(100), LONG, LONG)
}

/// Verify against policy `idx`'s snapshot, then its claim rules: what the proxy does.
fn evaluate(run: &Running, m: &Model, idx: usize, token: &str) -> Result<(), AuthError> {
    let snap = run.store.snapshot(portcullis_config::PolicyId::new(idx));
    let t = portcullis_auth::verify_token(token, &snap, true)?;
    check_claims(&std::sync::Arc::new(t), &m.policies[idx].policy, &snap, NOW).map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_one_discovery_document_cannot_mint_tokens_of_another() {
    init_logs();
    let (a, key_a) = idp_with_key("a").await;
    let (b, key_b) = idp_with_key("b").await;
    b.set_issuer("https://idp-b.example/");
    let (iss_a, iss_b) = (a.issuer().to_owned(), "https://idp-b.example/".to_owned());
    let m = model(vec![
        // Issuers from the documents.
        policy("discovered", &[], vec![openid(&a, lc()), openid(&b, lc())]),
        // Issuers listed in the policy (several entries: none is attributed to a document).
        policy(
            "listed",
            &[&iss_a, &iss_b],
            vec![openid(&a, lc()), openid(&b, lc())],
        ),
    ]);
    let run = Running::start(&m).await;
    run.wait_ready().await;
    for idx in 0..2 {
        assert_eq!(evaluate(&run, &m, idx, &token(&key_a, &iss_a)), Ok(()));
        assert_eq!(evaluate(&run, &m, idx, &token(&key_b, &iss_b)), Ok(()));
        // IdP B's key signing a token that claims to come from IdP A.
        assert_eq!(
            evaluate(&run, &m, idx, &token(&key_b, &iss_a)),
            Err(AuthError::TokenIssuerNotAllowed),
            "policy {idx}"
        );
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_published_by_two_documents_speaks_for_both() {
    init_logs();
    // Entra's v1 and v2 documents publish the same keys under two issuers.
    let (v1, key) = idp_with_key("shared").await;
    let v2 = JwksServer::start().await.unwrap();
    v2.set_keys(&[&key]);
    v2.set_issuer("https://v2.example/");
    let m = model(vec![policy(
        "entra",
        &[],
        vec![openid(&v1, lc()), openid(&v2, lc())],
    )]);
    let run = Running::start(&m).await;
    run.wait_ready().await;
    assert_eq!(evaluate(&run, &m, 0, &token(&key, v1.issuer())), Ok(()));
    assert_eq!(
        evaluate(&run, &m, 0, &token(&key, "https://v2.example/")),
        Ok(())
    );
    run.stop().await;
}

/// A JWKS with an RSA key and a symmetric one, and an HS256 token signed with the symmetric one.
fn jwks_with_a_secret(rsa: &TestKey, iss: &str) -> (String, String) {
    let secret = b"0123456789abcdef0123456789abcdef-published";
    let jwks = json!({ "keys": [
        rsa.jwk(),
        { "kty": "oct", "kid": "h1", "k": URL_SAFE_NO_PAD.encode(secret) },
    ]});
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"h1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(iss).to_string());
    let input = format!("{header}.{payload}");
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    (jwks.to_string(), format!("{input}.{sig}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_keys_in_a_fetched_jwks_are_ignored() {
    init_logs();
    let server = JwksServer::start().await.unwrap();
    let rsa = TestKey::rsa("r1").unwrap();
    let (jwks, hs_token) = jwks_with_a_secret(&rsa, server.issuer());
    server.set_jwks_body(jwks);
    let m = model(vec![
        policy("by-uri", &[], vec![jwks_uri(&server, lc())]),
        policy("by-discovery", &[], vec![openid(&server, lc())]),
    ]);
    let run = Running::start(&m).await;
    run.wait_ready().await;
    for idx in 0..2 {
        let snap = run.store.snapshot(portcullis_config::PolicyId::new(idx));
        assert_eq!(snap.keys.len(), 1, "only the RSA key is served");
        assert!(verify(&run.store, idx, &token(&rsa, server.issuer())).is_ok());
        assert_eq!(
            verify(&run.store, idx, &hs_token).unwrap_err(),
            AuthError::TokenSignatureKeyNotFound {
                kid: Some("h1".into())
            },
            "policy {idx}"
        );
    }
    // A JWKS of secrets only has no usable key: a failed fetch.
    let (only_secret, _) = jwks_with_a_secret(&rsa, "");
    let mut doc: serde_json::Value = serde_json::from_str(&only_secret).unwrap();
    doc["keys"].as_array_mut().unwrap().remove(0);
    let lone = JwksServer::start().await.unwrap();
    lone.set_jwks_body(doc.to_string());
    let run2 = Running::start(&model(vec![policy("p", &[], vec![jwks_uri(&lone, lc())])])).await;
    wait_until(ms(3000), "fetch fails with no_keys", || {
        run2.failures("no_keys") >= 1.0
    })
    .await;
    assert!(!run2.store.is_ready());
    run.stop().await;
    run2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_check_fails_closed_until_the_discovery_issuer_is_known() {
    init_logs();
    // A discovery document that cannot be reached yet, beside a JWKS that can.
    let down = JwksServer::start().await.unwrap();
    down.stop_listening();
    let (up, key) = idp_with_key("k1").await;
    let m = model(vec![policy(
        "p",
        &[],
        vec![openid(&down, lc()), jwks_uri(&up, lc())],
    )]);
    let run = Running::start(&m).await;
    let store = run.store.clone();
    wait_until(ms(3000), "the JWKS keys are served", move || {
        !store
            .snapshot(portcullis_config::PolicyId::new(0))
            .keys
            .is_empty()
    })
    .await;
    assert!(run
        .store
        .snapshot(portcullis_config::PolicyId::new(0))
        .issuers
        .is_empty());
    // The key verifies the signature, but no issuer can be checked yet: refused, not let through.
    assert_eq!(
        evaluate(&run, &m, 0, &token(&key, "https://anyone.example/")),
        Err(AuthError::KeysUnavailable)
    );
    // Once the document answers, its issuer is the one accepted.
    down.resume_listening().unwrap();
    down.set_keys(&[&key]);
    run.wait_ready().await;
    assert_eq!(evaluate(&run, &m, 0, &token(&key, down.issuer())), Ok(()));
    assert_eq!(
        evaluate(&run, &m, 0, &token(&key, "https://anyone.example/")),
        Err(AuthError::TokenIssuerNotAllowed)
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_stops_verifying_within_max_age_above_the_floor() {
    init_logs();
    let server = JwksServer::start().await.unwrap();
    let (k1, k2) = (TestKey::rsa("k1").unwrap(), TestKey::rsa("k2").unwrap());
    server.set_keys(&[&k1, &k2]);
    // The identity provider asks for no caching at all; the source's floor is 1 s.
    server.update(JWKS_PATH, |ep| ep.cache_control = Some("no-store".into()));
    let floor = KeyLifecycle {
        min_refresh_interval: Duration::from_secs(1),
        ..lc()
    };
    let run = Running::ready_with(jwks_uri(&server, floor)).await;
    let hits = server.hits(JWKS_PATH);
    let t1 = token(&k1, "iss");
    assert!(verify(&run.store, 0, &t1).is_ok());
    server.set_keys(&[&k2]);
    let store = run.store.clone();
    let gone_after = wait_until(ms(5000), "k1 removed", move || {
        verify(&store, 0, &t1).is_err()
    })
    .await;
    assert!(gone_after <= ms(2500), "{gone_after:?}");
    // The floor holds: `no-store` does not turn the refresher into a busy loop.
    assert!(
        server.hits(JWKS_PATH) - hits <= 3,
        "{}",
        server.hits(JWKS_PATH) - hits
    );
    run.stop().await;
}
