//! Rotation: a token signed by a newly published key is accepted on its first request, without a
//! restart; a key removed from the JWKS stops validating after the next refresh.

use portcullis_auth::AuthError;
use portcullis_testkit::jwks_server::{JwksServer, TestKey, DISCOVERY_PATH, JWKS_PATH};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_key_is_accepted_on_its_first_request() {
    init_logs();
    let (server, k1) = idp_with_key("k1").await;
    let lc = lifecycle(ms(30_000), ms(3_600_000), ms(86_400_000));
    let started = Instant::now();
    let run = Running::ready_with(openid(&server, lc)).await;
    let ready_in = started.elapsed();
    let issuer = server.issuer().to_owned();
    assert_eq!(
        &*run
            .store
            .snapshot(portcullis_config::PolicyId::new(0))
            .issuers,
        std::slice::from_ref(&issuer)
    );
    assert!(verify(&run.store, 0, &token(&k1, &issuer)).is_ok());

    // Rotate at the identity provider: publish k2 (an EC key) next to k1.
    let k2 = TestKey::ec_p256("k2").unwrap();
    server.set_keys(&[&k1, &k2]);
    let t2 = token(&k2, &issuer);
    let (disc_before, jwks_before) = (server.hits(DISCOVERY_PATH), server.hits(JWKS_PATH));

    // The proxy's flow on the first request carrying k2: not in the snapshot -> refetch -> verify.
    assert_eq!(
        verify(&run.store, 0, &t2).unwrap_err(),
        AuthError::TokenSignatureKeyNotFound {
            kid: Some("k2".into())
        }
    );
    let started = Instant::now();
    let snap = run
        .store
        .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "k2")
        .await;
    let took = started.elapsed();
    let verified = portcullis_auth::verify_token(&t2, &snap, true).expect("k2 accepted");
    assert_eq!(verified.kid.as_deref(), Some("k2"));
    assert_eq!(server.hits(DISCOVERY_PATH), disc_before + 1);
    assert_eq!(server.hits(JWKS_PATH), jwks_before + 1);
    // k1 still validates, and the published snapshot now has both keys.
    assert!(verify(&run.store, 0, &token(&k1, &issuer)).is_ok());
    assert_eq!(
        run.store
            .snapshot(portcullis_config::PolicyId::new(0))
            .keys
            .len(),
        2
    );
    // A second request with k2 needs no fetch at all.
    run.store
        .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "k2")
        .await;
    assert_eq!(server.hits(JWKS_PATH), jwks_before + 1);
    println!("rotation: ready in {ready_in:?}; k2 accepted on first request after one refetch of {took:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_key_stops_validating_after_the_next_refresh() {
    init_logs();
    let server = JwksServer::start().await.unwrap();
    let (k1, k2) = (TestKey::rsa("k1").unwrap(), TestKey::rsa("k2").unwrap());
    server.set_keys(&[&k1, &k2]);
    // max-age=1 is honoured (the test's lower bound is 200 ms; refresh-interval is an hour).
    server.update(JWKS_PATH, |ep| {
        ep.cache_control = Some("public, max-age=1".into())
    });
    let lc = lifecycle(ms(30_000), ms(3_600_000), ms(86_400_000));
    let run = Running::ready_with(jwks_uri(&server, lc)).await;
    let t1 = token(&k1, "iss");
    let fp1 = verify(&run.store, 0, &t1).unwrap().key_fingerprint.unwrap();

    let fetched_before = server.hits(JWKS_PATH);
    server.set_keys(&[&k2]);
    let removed_at = Instant::now();
    let store = run.store.clone();
    // The refresh-interval is an hour: only max-age=1 can bring a refresh within this generous
    // deadline. What matters is that k1 leaves with a refresh, not how fast the machine is.
    wait_until(ms(20_000), "k1 removed from the snapshot", move || {
        !store
            .snapshot(portcullis_config::PolicyId::new(0))
            .contains_fingerprint(fp1)
    })
    .await;
    assert!(
        server.hits(JWKS_PATH) > fetched_before,
        "k1 left without a refresh"
    );
    assert!(matches!(
        verify(&run.store, 0, &t1),
        Err(AuthError::TokenSignatureKeyNotFound { .. })
    ));
    assert!(verify(&run.store, 0, &token(&k2, "iss")).is_ok());
    println!(
        "removal: k1 gone {:?} after it left the JWKS (Cache-Control max-age=1); JWKS hits {}",
        removed_at.elapsed(),
        server.hits(JWKS_PATH)
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_refetch_does_not_start_a_cooldown() {
    init_logs();
    let (server, k1) = idp_with_key("k1").await;
    let lc = lifecycle(ms(30_000), ms(3_600_000), ms(86_400_000));
    let run = Running::ready_with(jwks_uri(&server, lc)).await;
    let k2 = TestKey::rsa("k2").unwrap();
    server.set_keys(&[&k1, &k2]);
    server.update(JWKS_PATH, |ep| ep.delay = ms(300));
    // The first request with k2 is dropped mid-fetch (its client went away).
    let abandoned = tokio::time::timeout(
        ms(50),
        run.store
            .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "k2"),
    )
    .await;
    assert!(abandoned.is_err());
    // The next one still refetches (no 30 s cooldown was left behind) and gets k2.
    let snap = run
        .store
        .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "k2")
        .await;
    assert!(portcullis_auth::verify_token(&token(&k2, "i"), &snap, true).is_ok());
    assert_eq!(
        run.metric("portcullis_jwks_refetch_suppressed_total", &[]),
        0.0
    );
    run.stop().await;
}
