//! The identity provider down: known keys keep validating up to max-stale, then KeysUnavailable;
//! when it comes back, keys recover without a restart.

use portcullis_auth::AuthError;
use portcullis_testkit::jwks_server::JWKS_PATH;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_serve_until_max_stale_then_unavailable_then_recover() {
    init_logs();
    let (server, k1) = idp_with_key("k1").await;
    let max_stale = ms(2000);
    // Refresh every 300 ms so the outage is noticed at once.
    let lc = lifecycle(ms(30_000), ms(300), max_stale);
    let run = Running::ready_with(openid(&server, lc)).await;
    let t1 = token(&k1, server.issuer());

    // Phase 1: the IdP stops listening (connection refused), just after a refresh reached it, so
    // the last good fetch is at most one poll (10 ms) before `down_at`.
    let hits = server.hits(JWKS_PATH);
    wait_until(ms(10_000), "a refresh", || server.hits(JWKS_PATH) > hits).await;
    server.stop_listening();
    let down_at = Instant::now();
    let (store, tok) = (run.store.clone(), t1.clone());
    let mut served_while_down = 0u32;
    // Generous deadline (20 s for a 2 s max-stale): it only has to happen.
    let unavailable_after = wait_until(ms(20_000), "keys unavailable after max-stale", || {
        let snap = store.snapshot(portcullis_config::PolicyId::new(0));
        if snap.unavailable {
            return true;
        }
        portcullis_auth::verify_token(&tok, &snap, true).expect("last good key still validates");
        served_while_down += 1;
        false
    })
    .await;
    // Never early: the keys were fetched at most one poll before `down_at`, so they cannot be
    // older than max-stale before this (the margin covers that poll and the refresh's own reply).
    // Late is only slow, not wrong: the deadline above is the bound.
    assert!(
        unavailable_after >= max_stale - ms(400),
        "unavailable before max-stale: {unavailable_after:?}"
    );
    // Every poll until then verified the token (the loop above); at 10 ms a poll, a 2 s window
    // sees far more than 10 even on a loaded machine.
    assert!(
        served_while_down >= 10,
        "validated all along: {served_while_down}"
    );
    assert!(!run.store.is_ready());
    assert_eq!(
        verify(&run.store, 0, &t1).unwrap_err(),
        AuthError::KeysUnavailable
    );
    // An unknown kid during the outage: one refetch attempt, refused at once (counted as a connect
    // failure, not a timeout), still unavailable.
    let (connect_before, timeouts_before) = (run.failures("connect"), run.failures("timeout"));
    assert!(
        run.store
            .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), "nope")
            .await
            .unavailable
    );
    assert_eq!(run.failures("connect"), connect_before + 1.0);
    assert_eq!(run.failures("timeout"), timeouts_before);
    let refused = run.failures("connect");
    assert!(refused >= 3.0, "failures counted: {refused}");
    assert_eq!(run.metric("portcullis_jwks_keys", &[]), 0.0);

    // Phase 2: it comes back answering 500: still unavailable, counted as status failures.
    server.update(JWKS_PATH, |ep| ep.status = 500);
    server.resume_listening().unwrap();
    let store = run.store.clone();
    let metric_500 = || run.failures("status");
    wait_until(ms(10_000), "a 500 is seen", || metric_500() >= 1.0).await;
    assert!(!store.is_ready());
    assert_eq!(
        verify(&run.store, 0, &t1).unwrap_err(),
        AuthError::KeysUnavailable
    );

    // Phase 3: healthy again: keys recover without a restart.
    server.update(JWKS_PATH, |ep| ep.status = 200);
    let healthy_at = Instant::now();
    let recovered_after = wait_until(ms(10_000), "keys recovered", move || store.is_ready()).await;
    assert!(verify(&run.store, 0, &t1).is_ok());
    assert!(
        !run.store
            .snapshot(portcullis_config::PolicyId::new(0))
            .unavailable
    );
    assert_eq!(run.metric("portcullis_jwks_keys", &[]), 1.0);
    println!(
        "outage: token validated {served_while_down} times while the IdP was down; unavailable {unavailable_after:?} after it went down (max-stale {max_stale:?}); recovered {recovered_after:?} after it was healthy (total outage {:?}, since healthy {:?})",
        down_at.elapsed(),
        healthy_at.elapsed()
    );
    run.stop().await;
}
