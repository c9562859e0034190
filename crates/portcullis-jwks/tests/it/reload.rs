//! Config reload: a rebuilt store keeps the keys and schedule of sources that still exist, so a
//! reload causes no refetch storm; new sources are fetched; removed ones are dropped.

use portcullis_testkit::jwks_server::{JwksServer, TestKey, DISCOVERY_PATH, JWKS_PATH};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_carries_over_existing_sources() {
    init_logs();
    let (a, b) = (
        JwksServer::start().await.unwrap(),
        JwksServer::start().await.unwrap(),
    );
    let (ka, kb) = (TestKey::rsa("a").unwrap(), TestKey::ec_p256("b").unwrap());
    a.set_keys(&[&ka]);
    b.set_keys(&[&kb]);
    let lc = lifecycle(ms(30_000), ms(3_600_000), ms(86_400_000));
    let first = model(vec![policy("p", &[], vec![jwks_uri(&a, lc)])]);
    let run = Running::start(&first).await;
    run.wait_ready().await;
    assert_eq!(a.hits(JWKS_PATH), 1);

    // Reload: policy renamed and moved to index 1, plus a new openid-config source.
    let second = model(vec![
        policy("new", &[], vec![openid(&b, lc)]),
        policy("p", &[], vec![jwks_uri(&a, lc)]),
    ]);
    let rebuilt = run.store.rebuild(&second);
    // Carried-over keys are there before anything is fetched; the new source is not yet.
    assert_eq!(
        rebuilt.policy_id("p"),
        Some(portcullis_config::PolicyId::new(1))
    );
    assert!(verify(&rebuilt, 1, &token(&ka, "i")).is_ok());
    assert!(
        rebuilt
            .snapshot(portcullis_config::PolicyId::new(0))
            .unavailable
    );
    assert!(!rebuilt.is_ready());

    run.stop().await;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(rebuilt.clone().run(rx));
    let store = rebuilt.clone();
    wait_until(ms(5000), "new source fetched", move || store.is_ready()).await;
    assert!(verify(&rebuilt, 0, &token(&kb, "i")).is_ok());
    assert_eq!(b.hits(DISCOVERY_PATH), 1);
    assert_eq!(
        a.hits(JWKS_PATH),
        1,
        "no refetch of the carried-over source"
    );
    // Out-of-range index fails closed.
    assert!(
        rebuilt
            .snapshot(portcullis_config::PolicyId::new(7))
            .unavailable
    );
    tx.send(true).unwrap();
    task.await.unwrap();
}
