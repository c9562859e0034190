//! End-to-end: a key fetch that an https key URL redirects to plain http is refused (issue 13,
//! step 4). The https key URL is served by a second gateway (the dev IdP's generated certificate
//! on a `tls` listener, an anonymous route to a server answering 302 to an http JWKS); the gateway
//! under test trusts that certificate's CA through `SSL_CERT_FILE`, as an operator would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use portcullis_testkit::jwks_server::{JwksServer, TestKey, JWKS_PATH};
use serde_json::json;

use crate::support::{idp_with_generated_tls, read_banner, spawn, Gateway};

#[tokio::test(flavor = "multi_thread")]
async fn an_https_key_url_redirecting_to_http_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    // Only its generated certificate is used.
    let _idp = idp_with_generated_tls(dir.path()).await;
    let tls = dir.path().join("tls");

    // The plain-http JWKS the redirect points at, and the server that answers with the redirect.
    let target = JwksServer::start().await.unwrap();
    let key = TestKey::rsa("k1").unwrap();
    target.set_keys(&[&key]);
    let redirector = JwksServer::start().await.unwrap();
    redirector.update(JWKS_PATH, |ep| {
        ep.status = 302;
        ep.headers = vec![("location".into(), target.jwks_url())];
    });

    // The https front: a gateway whose tls listener passes /jwks (and its 302) through.
    let front_yaml = format!(
        r#"server:
  listen:
    - {{ addr: "127.0.0.1:0", tls: {{ cert: "{cert}", key: "{key}" }} }}
  admin: "127.0.0.1:0"
routes:
  - name: keys
    match: {{ path-prefix: /jwks }}
    upstream: {upstream}
    policy: none
"#,
        cert = tls.join("cert.pem").display(),
        key = tls.join("key.pem").display(),
        upstream = redirector.base_url,
    );
    let front = Gateway::run(&front_yaml, &reqwest::Client::new()).await;
    assert!(front.proxy.starts_with("https://"), "{}", front.proxy);

    // The gateway under test: its only key source is the https URL.
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  p:
    validate-jwt:
      issuer-signing-keys: [{{ jwks-uri: "{front}/jwks" }}]
      issuers: [https://issuer.example/]
      audiences: [api://test]
routes:
  - {{ name: api, match: {{ path-prefix: /api }}, upstream: "http://127.0.0.1:9", policy: p }}
"#,
            front = front.proxy
        ),
    )
    .unwrap();
    let ca = tls.join("ca.pem");
    let mut child = spawn(
        &config,
        &[],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        Stdio::null(),
    );
    let banner = read_banner(&mut child, || "gateway under test".into());
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let resp = client.get(path).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    // Wait until the fetch has either been refused or (the old behaviour) succeeded.
    let mut refused = false;
    for _ in 0..1000 {
        let (_, metrics) = get(format!("{}/metrics", banner.admin)).await;
        refused = metrics.lines().any(|l| {
            l.starts_with("portcullis_jwks_fetch_failures_total{")
                && l.contains(r#"reason="insecure_redirect""#)
        });
        let (ready, _) = get(format!("{}/readyz", banner.admin)).await;
        if refused || ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // No key was loaded: a token the http JWKS's key signed is refused for want of keys.
    let token = key
        .sign(&json!({ "iss": "https://issuer.example/", "aud": "api://test", "exp": 4_102_444_800u64 }))
        .unwrap();
    let resp = client
        .get(format!("{}/api/x", banner.proxies))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(redirector.hits(JWKS_PATH) >= 1, "the https URL was asked");
    assert!(refused, "the https -> http redirect was not refused");
    assert_eq!(target.hits(JWKS_PATH), 0, "the http JWKS was fetched");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Signing keys are unavailable"), "{body}");
}
