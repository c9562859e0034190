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
        tasks.spawn(async move {
            store
                .refetch_for_unknown_kid(portcullis_config::PolicyId::new(0), &kid)
                .await
        });
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

    // The property, by counts: at most one fetch per cooldown window begun since `window1` (a
    // slow machine only lets more windows pass, never more fetches per window), and one fetch
    // once unknown kids arrive in a window that has none yet.
    let window1 = Instant::now();
    let fetches = || server.hits(JWKS_PATH) - initial;
    let windows_begun = || 1 + (window1.elapsed().as_millis() / cooldown.as_millis()) as u64;
    let took1 = storm(&run.store, 1000).await;
    assert!(fetches() >= 1, "the storm fetched");
    assert!(
        fetches() <= windows_begun(),
        "{} fetches in {} windows",
        fetches(),
        windows_begun()
    );
    // Still inside the window (unless the machine is very slow): another 1,000 cause nothing.
    let took1b = storm(&run.store, 1000).await;
    if window1.elapsed() < cooldown {
        assert_eq!(
            fetches(),
            1,
            "one fetch for 2,000 unknown kids in one window"
        );
    }
    assert!(fetches() <= windows_begun());

    // The next window allows one more. (Waiting for the window to pass is the point.)
    tokio::time::sleep_until(window1 + cooldown).await;
    let before2 = fetches();
    let took2 = storm(&run.store, 1000).await;
    assert!(
        fetches() >= 2 && fetches() <= before2 + 1 && fetches() <= windows_begun(),
        "{} fetches ({before2} before the third storm) in {} windows",
        fetches(),
        windows_begun()
    );
    let total_fetches = fetches();

    let coalesced = run.metric(
        "portcullis_jwks_refetch_suppressed_total",
        &[("why", "coalesced")],
    );
    let cooled = run.metric(
        "portcullis_jwks_refetch_suppressed_total",
        &[("why", "cooldown")],
    );
    // Every lookup that did not fetch was suppressed, and said why.
    assert_eq!(coalesced + cooled, (3000 - total_fetches) as f64);
    assert!(coalesced > 0.0, "callers arriving mid-fetch waited for it");
    // The known key still validates throughout.
    assert!(verify(&run.store, 0, &token(&k1, "iss")).is_ok());
    println!(
        "storm: 3 x 1,000 random kids -> {} JWKS fetches in 2 cooldown windows ({took1:?}, {took1b:?}, {took2:?}); suppressed: {coalesced} coalesced + {cooled} cooldown",
        server.hits(JWKS_PATH) - initial
    );
    run.stop().await;
}
