//! A storm of 1,000 concurrent lookups with random kids causes at most one fetch per cooldown
//! window; the rest wait for that fetch (coalesced) or return at once (cooldown).

use portcullis_testkit::jwks_server::JWKS_PATH;

use crate::*;

async fn storm(store: &Arc<KeyStore>, n: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let store = store.clone();
        let kid = format!("made-up-{:016x}", rand::random::<u64>());
        tasks.spawn(async move { store.refetch_for_unknown_kid(0, &kid).await });
    }
    while let Some(snap) = tasks.join_next().await {
        assert!(!snap.unwrap().unavailable);
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_random_kids_cause_one_fetch_per_cooldown_window() {
    init_logs();
    let (server, k1) = idp_with_key("k1").await;
    // A slow IdP, so many lookups arrive while the first refetch is in flight.
    server.update(JWKS_PATH, |ep| ep.delay = ms(200));
    let cooldown = ms(1500);
    let lc = lifecycle(cooldown, ms(3_600_000), ms(86_400_000));
    let run = Running::ready_with(jwks_uri(&server, lc)).await;
    let initial = server.hits(JWKS_PATH);

    let window1 = Instant::now();
    let took1 = storm(&run.store, 1000).await;
    let after1 = server.hits(JWKS_PATH) - initial;
    assert_eq!(after1, 1, "one fetch for 1,000 unknown kids");
    // Still inside the window: another 1,000 cause nothing.
    let took1b = storm(&run.store, 1000).await;
    assert!(
        window1.elapsed() < cooldown,
        "second storm ran inside the window"
    );
    assert_eq!(server.hits(JWKS_PATH) - initial, 1);

    // The next window allows exactly one more. (Waiting for the window to pass is the point.)
    tokio::time::sleep_until(window1 + cooldown).await;
    let took2 = storm(&run.store, 1000).await;
    assert_eq!(server.hits(JWKS_PATH) - initial, 2);

    let coalesced = run.metric(
        "portcullis_jwks_refetch_suppressed_total",
        &[("why", "coalesced")],
    );
    let cooled = run.metric(
        "portcullis_jwks_refetch_suppressed_total",
        &[("why", "cooldown")],
    );
    assert_eq!(coalesced + cooled, 2998.0);
    assert!(coalesced > 0.0, "callers arriving mid-fetch waited for it");
    // The known key still validates throughout.
    assert!(verify(&run.store, 0, &token(&k1, "iss")).is_ok());
    println!(
        "storm: 3 x 1,000 random kids -> {} JWKS fetches in 2 cooldown windows ({took1:?}, {took1b:?}, {took2:?}); suppressed: {coalesced} coalesced + {cooled} cooldown",
        server.hits(JWKS_PATH) - initial
    );
    run.stop().await;
}
