//! Hostile or broken identity-provider answers: a discovery issuer that differs from the
//! configured one, a JWKS that is not JSON, one of 50 MB, one that never answers. Each is handled
//! as docs/key-lifecycle.md says; nothing panics, the store and other policies stay up.

use portcullis_auth::{check_claims, AuthError, UnixTime};
use portcullis_testkit::jwks_server::{
    EndpointBody, JwksServer, TestKey, DISCOVERY_PATH, JWKS_PATH,
};

use crate::*;

const LONG: Duration = Duration::from_secs(3600);

/// Policy 0 on the broken `server`, policy 1 on a healthy issuer, to show the store keeps
/// serving other policies. The healthy server is returned to keep it alive.
async fn beside_a_healthy_issuer(
    server: &JwksServer,
    lc: KeyLifecycle,
) -> (Running, JwksServer, TestKey) {
    let (good, good_key) = idp_with_key("good").await;
    let run = Running::start(&model(vec![
        policy("broken", &[], vec![jwks_uri(server, lc)]),
        policy("good", &[], vec![jwks_uri(&good, lc)]),
    ]))
    .await;
    (run, good, good_key)
}

fn lc() -> KeyLifecycle {
    lifecycle(ms(100), LONG, LONG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_issuer_differing_from_configured_one() {
    init_logs();
    let (server, key) = idp_with_key("k1").await;
    let configured = "https://configured.example/";
    let discovered = server.issuer().to_owned();
    let m = model(vec![
        // As the config layer makes it: the only openid-config entry speaks for the policy's issuers.
        policy(
            "explicit",
            &[configured],
            vec![openid_speaking_for(&server, lc(), &[configured])],
        ),
        policy("from-discovery", &[], vec![openid(&server, lc())]),
    ]);
    let run = Running::start(&m).await;
    run.wait_ready().await;
    // One source for both policies (same URL): fetched once.
    assert_eq!(server.hits(DISCOVERY_PATH), 1);
    let now = UnixTime(1_700_000_000);
    for (idx, pm) in m.policies.iter().enumerate() {
        let snap = run.store.snapshot(portcullis_config::PolicyId::new(idx));
        assert_eq!(
            &*snap.issuers,
            std::slice::from_ref(&discovered),
            "discovered issuer published"
        );
        let check = |iss: &str| {
            let t = portcullis_auth::verify_token(&token(&key, iss), &snap, true).unwrap();
            check_claims(&std::sync::Arc::new(t), &pm.policy, &snap, now)
        };
        if idx == 0 {
            // The policy's own issuers win; the discovered one is not accepted for it.
            assert!(check(configured).is_ok());
            assert_eq!(
                check(&discovered).unwrap_err(),
                AuthError::TokenIssuerNotAllowed
            );
        } else {
            assert!(check(&discovered).is_ok());
            assert_eq!(
                check(configured).unwrap_err(),
                AuthError::TokenIssuerNotAllowed
            );
        }
    }
    // A discovery document without an issuer is a failed fetch: the last good keys stay.
    server.update(DISCOVERY_PATH, |ep| {
        ep.body = EndpointBody::Fixed(format!(r#"{{"jwks_uri":"{}"}}"#, server.jwks_url()).into())
    });
    run.store
        .refetch_for_unknown_kid(portcullis_config::PolicyId::new(1), "other")
        .await;
    assert_eq!(run.failures("invalid"), 1.0);
    assert!(run.store.is_ready());
    assert_eq!(
        run.store
            .snapshot(portcullis_config::PolicyId::new(1))
            .keys
            .len(),
        1
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_that_is_not_json() {
    init_logs();
    let server = JwksServer::start().await.unwrap();
    server.set_jwks_body("<html><body>Service Unavailable</body></html>");
    let (run, _good, good_key) = beside_a_healthy_issuer(&server, lc()).await;
    let failures = || run.failures("invalid");
    wait_until(ms(5000), "a few failed fetches", || failures() >= 3.0).await;
    assert!(!run.store.is_ready());
    let snap = run.store.snapshot(portcullis_config::PolicyId::new(0));
    assert!(snap.unavailable && snap.keys.is_empty());
    let stray = TestKey::rsa("k1").unwrap();
    assert_eq!(
        verify(&run.store, 0, &token(&stray, "i")).unwrap_err(),
        AuthError::KeysUnavailable
    );
    // The other policy is unaffected.
    let store = run.store.clone();
    wait_until(ms(3000), "good policy has keys", move || {
        !store
            .snapshot(portcullis_config::PolicyId::new(1))
            .unavailable
    })
    .await;
    assert!(verify(&run.store, 1, &token(&good_key, "i")).is_ok());
    // Fixed at the IdP: recovers on the next retry.
    server.set_keys(&[&stray]);
    let store = run.store.clone();
    let after = wait_until(ms(3000), "recovered", move || store.is_ready()).await;
    assert!(verify(&run.store, 0, &token(&stray, "i")).is_ok());
    println!(
        "not JSON: {} failed fetches counted, recovered {after:?} after the fix",
        failures()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_of_50_mb_is_cut_off_while_streaming() {
    init_logs();
    let (server, k1) = idp_with_key("k1").await;
    // No cooldown: each unknown kid below triggers a fetch.
    let no_cooldown = lifecycle(Duration::ZERO, LONG, LONG);
    let (run, _good, _) = beside_a_healthy_issuer(&server, no_cooldown).await;
    run.wait_ready().await;
    let too_large = || run.failures("too_large");
    for announce_length in [false, true] {
        let before = too_large();
        server.update(JWKS_PATH, |ep| {
            ep.body = EndpointBody::Filler {
                len: 50 * 1024 * 1024,
                announce_length,
            }
        });
        let t = Instant::now();
        let snap = run
            .store
            .refetch_for_unknown_kid(
                portcullis_config::PolicyId::new(0),
                &format!("x{announce_length}"),
            )
            .await;
        let took = t.elapsed();
        assert_eq!(too_large(), before + 1.0);
        assert!(took < ms(1000), "rejected early: {took:?}");
        // Last good keys keep serving.
        assert!(portcullis_auth::verify_token(&token(&k1, "i"), &snap, true).is_ok());
        println!("50 MB JWKS (content-length sent: {announce_length}) rejected after {took:?}");
    }
    assert!(run.store.is_ready());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_that_never_answers_times_out() {
    init_logs();
    let server = JwksServer::start().await.unwrap();
    server.update(JWKS_PATH, |ep| ep.hang = true);
    let (run, _good, good_key) = beside_a_healthy_issuer(&server, lc()).await;
    let timeouts = || run.failures("timeout");
    // The fetch's total timeout is 1 s in these tests (10 s by default).
    let first = wait_until(ms(4000), "a timeout", || timeouts() >= 1.0).await;
    assert!(
        first >= ms(900),
        "timed out by the total timeout: {first:?}"
    );
    // Meanwhile the other issuer's policy works; the hanging one answers KeysUnavailable.
    let store = run.store.clone();
    wait_until(ms(3000), "good policy has keys", move || {
        !store
            .snapshot(portcullis_config::PolicyId::new(1))
            .unavailable
    })
    .await;
    assert!(verify(&run.store, 1, &token(&good_key, "i")).is_ok());
    let k = TestKey::rsa("k").unwrap();
    assert_eq!(
        verify(&run.store, 0, &token(&k, "i")).unwrap_err(),
        AuthError::KeysUnavailable
    );
    // An unknown-kid lookup waits at most for the in-flight fetch's timeout.
    let t = Instant::now();
    assert!(
        run.store
            .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "k")
            .await
            .unavailable
    );
    assert!(t.elapsed() < ms(2500), "bounded: {:?}", t.elapsed());
    println!(
        "never answers: first timeout after {first:?}; unknown-kid lookup bounded at {:?}",
        t.elapsed()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_up_to_the_bound() {
    init_logs();
    let (server, key) = idp_with_key("k1").await;
    // /old-jwks redirects to the JWKS: followed.
    let moved = format!("{}/old-jwks", server.base_url);
    server.update("/old-jwks", |ep| {
        ep.status = 302;
        ep.headers = vec![("location".into(), server.jwks_url())];
    });
    // /loop redirects to itself: given up after 5 redirects.
    let looping = format!("{}/loop", server.base_url);
    server.update("/loop", |ep| {
        ep.status = 302;
        ep.headers = vec![("location".into(), looping.clone())];
    });
    let source = |url: &str| KeySource::JwksUri {
        url: url.to_owned(),
        lifecycle: lc(),
    };
    let run = Running::start(&model(vec![
        policy("moved", &[], vec![source(&moved)]),
        policy("loop", &[], vec![source(&looping)]),
    ]))
    .await;
    let store = run.store.clone();
    wait_until(ms(3000), "moved JWKS fetched", move || {
        !store
            .snapshot(portcullis_config::PolicyId::new(0))
            .unavailable
    })
    .await;
    assert!(verify(&run.store, 0, &token(&key, "i")).is_ok());
    wait_until(ms(3000), "redirect loop fails", || {
        run.failures("redirects") >= 1.0
    })
    .await;
    // Each fetch is the request plus at most 5 redirects.
    let hits = server.hits("/loop") as f64;
    let fetches = run.metric("portcullis_jwks_fetches_total", &[("source", &looping)]);
    assert!(
        hits >= 6.0 && hits <= 6.0 * fetches,
        "{hits} hits, {fetches} fetches"
    );
    assert!(
        run.store
            .snapshot(portcullis_config::PolicyId::new(1))
            .unavailable
    );
    run.stop().await;
}
