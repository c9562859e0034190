//! End-to-end tests: the proxy's worker runtime (`server.threads`, `server.work-stealing`), through
//! the gateway binary and in process. pingora's no-steal runtime (the default) once could not run
//! twice in one process (vendor/README.md): the in-process test here pins the fix, and the rest of
//! the in-process suite now runs the default runtime too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_idp::{IdpConfig, MintRequest};
use portcullis_testkit::backend::Backend;

use crate::support::{metric_value, model, route, Gateway, InProcess};

/// `server.work-stealing: false` (pingora's no-steal runtime: a current-thread runtime per worker)
/// through the binary, as shipped. Two workers, keys from discovery (a background fetch),
/// the token cache on, and eight clients on their own connections at once: every valid token
/// passes, every forged one is refused, the hits are counted, and the process stops cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn work_stealing_off_serves_concurrent_clients_from_the_binary() {
    let idp = portcullis_idp::start(IdpConfig::demo()).await.unwrap();
    let backend = Backend::start().unwrap();
    let config = format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  threads: 2
  work-stealing: false
  token-cache: {{ max-entries: 1000 }}
policies:
  api:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
routes:
  - name: api
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: api
"#,
        discovery = idp.discovery_url(),
        backend = backend.url(),
    );
    let client = reqwest::Client::new();
    let gw = Gateway::run(&config, &client).await;
    let valid = idp
        .mint(&MintRequest::new("alice", "api://default"))
        .unwrap();
    let mut forged = valid.clone();
    forged.replace_range(forged.len() - 6.., "AAAAAA");
    let mut clients = Vec::new();
    for _ in 0..8 {
        // A client each: its own connections, so the workers share them out.
        let c = reqwest::Client::new();
        let (proxy, valid, forged) = (gw.proxy.clone(), valid.clone(), forged.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..25 {
                let token = if i % 5 == 4 { &forged } else { &valid };
                let resp = c
                    .get(format!("{proxy}/api/orders"))
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                seen.push((i % 5 == 4, resp.status().as_u16()));
            }
            seen
        }));
    }
    for c in clients {
        for (forged, status) in c.await.unwrap() {
            assert_eq!(status, if forged { 401 } else { 200 });
        }
    }
    let hits = metric_value(&gw.metrics().await, "portcullis_token_cache_hits_total");
    assert!(hits >= 150.0, "the cache served the repeats: {hits} hits");
    let status = gw.stop();
    assert!(status.success(), "the gateway exited with {status}");
}

/// No-steal gateways one after another in one process, each with two workers, each serving a
/// burst of requests on fresh connections. Against pingora-runtime 0.9.1 as released, a later
/// gateway's workers could take a thread id recycled from an earlier one's, find that stopped
/// runtime's handles in pingora's `ThreadLocal`, and never answer (the whole in-process suite
/// failed from its second gateway on); the patched copy in vendor/ keeps them in a std
/// thread-local.
#[tokio::test(flavor = "multi_thread")]
async fn no_steal_gateways_one_after_another_in_one_process() {
    let backend = Backend::start().unwrap();
    for round in 0..4 {
        let mut m = model(
            "no-steal",
            vec![],
            vec![route("open", "/open", backend.addr(), None)],
        );
        m.server.work_stealing = false;
        m.server.threads = Some(2);
        let gw = InProcess::start(&m).await;
        for i in 0..8 {
            // A client each: new connections, which pingora hands to a worker at random.
            let resp = reqwest::Client::new()
                .get(format!("http://{}/open/{round}/{i}", gw.proxy()))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap_or_else(|e| panic!("gateway {round}, request {i}: {e}"));
            assert_eq!(resp.status(), 200, "gateway {round}, request {i}");
        }
        gw.stop_gracefully();
    }
}
