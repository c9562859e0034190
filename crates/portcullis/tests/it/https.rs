//! End-to-end tests: the https proxy listener. The dev token server generates a CA and a
//! certificate for 127.0.0.1/localhost; the gateway serves that certificate on a `tls` listener
//! (rustls) next to a plain one; a client that trusts the CA gets the same policy decisions as over
//! http, and the backend learns the original scheme from `X-Forwarded-Proto`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_idp::MintRequest;
use portcullis_testkit::backend::Backend;

use crate::support::{idp_with_generated_tls, Gateway};

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_validates_tokens_and_tells_the_backend_the_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let idp = idp_with_generated_tls(dir.path()).await;
    let tls = dir.path().join("tls");
    let backend = Backend::start().unwrap();
    let gateway_yaml = format!(
        r#"server:
  listen:
    - {{ addr: "127.0.0.1:0", tls: {{ cert: "{cert}", key: "{key}" }} }}
    - "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  p:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://default]
    forward-claims: {{ X-User-Id: sub }}
routes:
  - name: api
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: p
"#,
        cert = tls.join("cert.pem").display(),
        key = tls.join("key.pem").display(),
        discovery = idp.discovery_url(),
        backend = backend.url(),
    );
    let client = crate::support::client_trusting(&tls.join("ca.pem"));
    let gw = Gateway::run(&gateway_yaml, &client).await;
    assert!(gw.proxy.starts_with("https://"), "{}", gw.proxy);

    let token = idp
        .mint(&MintRequest::new("alice", "api://default"))
        .unwrap();
    let (status, body) = gw.call("/api/orders", &token).await;
    assert_eq!(status, 200, "{body}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("alice"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));

    let (status, body) = gw.call("/api/orders", "not-a-token").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"statusCode\""), "{body}");
    assert_eq!(
        backend.request_count(),
        1,
        "a rejected request reached the backend"
    );

    // A client that does not trust the CA cannot talk to it: the listener really is TLS.
    let untrusting = reqwest::Client::new();
    assert!(untrusting
        .get(format!("{}/api/orders", gw.proxy))
        .send()
        .await
        .is_err());
}
