//! End-to-end tests: tokens never reach the logs. The gateway binary runs at `debug` level (what a
//! user turns on to investigate) and at `trace`, in text and in JSON format, and sees valid, expired, tampered and
//! garbage tokens in the header and in the query; afterwards no part of any token's payload or
//! signature appears anywhere in what it wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use portcullis_idp::{IdpConfig, MintRequest};
use portcullis_testkit::backend::Backend;

use crate::support::Gateway;

async fn tokens_stay_out_of_the_logs(global_args: &[&str], rust_log: &str) {
    let idp = portcullis_idp::start(IdpConfig::demo()).await.unwrap();
    let backend = Backend::start().unwrap();
    let config = format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  header:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
    forward-claims: {{ X-User-Id: sub }}
  query:
    validate-jwt:
      query-parameter-name: access_token
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
routes:
  - name: header
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: header
  - name: query
    match: {{ path-prefix: /q }}
    upstream: {backend}
    policy: query
"#,
        discovery = idp.discovery_url(),
        backend = backend.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client = reqwest::Client::new();
    let gw = Gateway::run_with(
        &config,
        &client,
        global_args,
        &[("RUST_LOG", rust_log)],
        Stdio::from(log),
    )
    .await;

    let valid = idp
        .mint(&MintRequest::new("alice", "api://default"))
        .unwrap();
    let mut expired_req = MintRequest::new("alice", "api://default");
    expired_req.ttl = Duration::from_secs(0);
    let expired = idp.mint(&expired_req).unwrap();
    let wrong_aud = idp.mint(&MintRequest::new("alice", "api://other")).unwrap();
    let mut tampered = valid.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let garbage = "eyJzZWNyZXQiOiJnYXJiYWdlLW1hcmtlci0zMTQxNTkifQ.bm90LWpzb24tbWFya2VyLTI3MTgy.c2lnLW1hcmtlcg".to_owned();
    let tokens = [&valid, &expired, &wrong_aud, &tampered, &garbage];

    let mut statuses = Vec::new();
    for token in tokens {
        statuses.push(gw.call("/api/orders", token).await.0);
        let resp = client
            .get(format!("{}/q/orders?access_token={token}", gw.proxy))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    // The decisions are right (so the tokens really went through validation) ...
    assert_eq!(statuses, [200, 200, 401, 401, 401, 401, 401, 401, 401, 401]);
    let _ = gw.stop();

    // ... and no token part is in the log.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logged.contains("status"),
        "the gateway logged no requests: {logged}"
    );
    for token in tokens {
        for (i, part) in token.split('.').enumerate().skip(1) {
            let probe = &part[..part.len().min(24)];
            let line = logged.lines().find(|l| l.contains(probe));
            assert!(
                line.is_none(),
                "token segment {i} ({probe}...) appears in the log: {line:?}"
            );
        }
    }
    assert!(
        !logged.contains("Bearer "),
        "an Authorization value appears in the log"
    );
    assert!(
        !logged.contains("access_token="),
        "a token query string appears in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_text_logs_at_debug_level() {
    tokens_stay_out_of_the_logs(&[], "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_json_logs_at_debug_level() {
    tokens_stay_out_of_the_logs(&["--log-format", "json"], "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_logs_even_when_pingora_is_asked_for_trace() {
    tokens_stay_out_of_the_logs(&[], "trace,pingora_proxy=trace,pingora_core=trace").await;
}
