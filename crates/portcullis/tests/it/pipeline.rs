//! End-to-end: the ordered inbound pipeline (issue 14): `cors`, `rate-limit-by-key` before and
//! after `validate-jwt`, `quota-by-key` with an increment condition, through the real gateway (a
//! config read from YAML text), a real JWKS server and a recording backend, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use portcullis_testkit::backend::{Backend, Failure};
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use reqwest::{Client, Method, Response};
use serde_json::{json, Value};

use crate::support::{self, InProcess};

const APP: &str = "http://app.local:8000";

/// A gateway started from YAML text (`DISCOVERY` and `BACKEND` replaced by the JWKS server's
/// discovery URL and the recording backend's URL), with a key to sign tokens.
pub(crate) struct Setup {
    pub gateway: InProcess,
    pub backend: Backend,
    pub key: TestKey,
    pub idp: JwksServer,
    pub client: Client,
}

impl Setup {
    pub async fn start(policies_and_routes: &str) -> Setup {
        let idp = JwksServer::start().await.unwrap();
        let key = TestKey::rsa("k1").unwrap();
        idp.set_keys(&[&key]);
        let backend = Backend::start().unwrap();
        let text = format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  threads: 1\n{}",
            policies_and_routes
                .replace("DISCOVERY", &idp.discovery_url())
                .replace("BACKEND", &backend.url())
        );
        let (model, _) = portcullis_config::load_str(&text, Path::new("pipeline.yaml"))
            .unwrap_or_else(|d| panic!("config rejected: {d:?}\n{text}"));
        let gateway = InProcess::start(&model).await;
        Setup {
            gateway,
            backend,
            key,
            idp,
            client: Client::new(),
        }
    }

    fn token(&self, sub: &str) -> String {
        self.key
            .sign(&json!({
                "iss": self.idp.issuer(), "aud": "api://orders", "sub": sub,
                "exp": support::now() + 600,
            }))
            .unwrap()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.gateway.proxy()))
            .timeout(Duration::from_secs(10));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

pub(crate) fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

const CORS_CONFIG: &str = r#"
policies:
  spa:
    cors:
      allowed-origins: ["http://app.local:8000"]
      allowed-methods: [GET, POST]
      preflight-result-max-age: 600
      allowed-headers: [authorization, content-type]
      expose-headers: [x-request-id]
    validate-jwt:
      openid-config: [{ url: "DISCOVERY" }]
      audiences: [api://orders]
routes:
  - { name: orders, match: { path-prefix: /api/orders, methods: [GET, POST] }, upstream: "BACKEND", policy: spa }
"#;

#[tokio::test]
async fn cors_preflights_never_need_a_token_and_errors_are_readable() {
    let s = Setup::start(CORS_CONFIG).await;
    // A preflight is answered by the gateway (the route lists no OPTIONS: it is matched by the
    // method the preflight asks about), without a token, and never forwarded.
    let pre = s
        .call(
            Method::OPTIONS,
            "/api/orders",
            &[
                ("Origin", APP),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(pre.status(), 200);
    assert_eq!(
        header(&pre, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&pre, "access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        header(&pre, "access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    assert_eq!(
        header(&pre, "access-control-max-age").as_deref(),
        Some("600")
    );
    assert!(header(&pre, "vary").unwrap().contains("Origin"));
    // Not allowed: another origin or a header not listed: the cors statement answers an empty
    // 200 without CORS headers; a method no route serves: no route (404), no CORS headers either.
    for (origin, method, hdrs, status) in [
        ("http://evil.local", "GET", "authorization", 200),
        (APP, "DELETE", "authorization", 404),
        (APP, "GET", "x-secret", 200),
    ] {
        let r = s
            .call(
                Method::OPTIONS,
                "/api/orders",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", method),
                    ("Access-Control-Request-Headers", hdrs),
                ],
                None,
            )
            .await;
        assert_eq!(r.status(), status, "{origin} {method} {hdrs}");
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        if status == 200 {
            assert!(r.text().await.unwrap().is_empty());
        }
    }
    assert_eq!(
        s.backend.request_count(),
        0,
        "preflights never reach the backend"
    );

    // The gateway's own 401 carries the CORS headers, so the browser app can read it.
    let r = s
        .call(Method::GET, "/api/orders", &[("Origin", APP)], None)
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&r, "access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    assert_eq!(header(&r, "www-authenticate").as_deref(), Some("Bearer"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"statusCode": 401, "message": "JWT not present."})
    );
    // With a token, the backend's answer carries them too; its own Vary is kept, Origin added.
    s.backend.set_response_header("vary", "Accept-Encoding");
    let token = s.token("alice");
    let r = s
        .call(Method::GET, "/api/orders", &[("Origin", APP)], Some(&token))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    let vary: Vec<&str> = r
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        vary,
        ["Accept-Encoding", "Origin"],
        "the backend's Vary kept"
    );
    assert_eq!(s.backend.request_count(), 1);
    // From an origin that is not allowed: a GET ends with an empty 200, never forwarded
    // (terminate-unmatched-request); a POST goes on without CORS headers (the browser will not
    // let the page read it).
    for (method, forwarded) in [(Method::GET, 1), (Method::POST, 2)] {
        let origin = [("Origin", "http://evil.local")];
        let r = s
            .call(method.clone(), "/api/orders", &origin, Some(&token))
            .await;
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{method}");
        assert_eq!(s.backend.request_count(), forwarded, "{method}");
    }
}

const LIMIT_CONFIG: &str = r#"
policies:
  limited:
    inbound:
      - rate-limit-by-key: { calls: 5, renewal-period: 60, counter-key: client-ip }
      - validate-jwt:
          openid-config: [{ url: "DISCOVERY" }]
          audiences: [api://orders]
      - rate-limit-by-key:
          calls: 2
          renewal-period: 60
          counter-key: { claim: sub }
          remaining-calls-header-name: X-Remaining
          total-calls-header-name: X-Total
  quota:
    quota-by-key: { calls: 2, renewal-period: 3600, counter-key: { header: X-Client }, increment-condition: 2xx }
  fast:
    rate-limit: { calls: 2, renewal-period: 1 }
routes:
  - { name: limited, match: { path-prefix: /limited }, upstream: "BACKEND", policy: limited }
  - { name: quota, match: { path-prefix: /quota }, upstream: "BACKEND", policy: quota }
  - { name: fast, match: { path-prefix: /fast }, upstream: "BACKEND", policy: fast }
"#;

#[tokio::test]
async fn rate_limits_run_in_document_order_with_exact_counts() {
    let s = Setup::start(LIMIT_CONFIG).await;
    let alice = s.token("alice");
    let bob = s.token("bob");
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let r = s.call(Method::GET, "/limited", &[], Some(&alice)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-total").as_deref(), Some("2"));
        remaining.push(header(&r, "x-remaining").unwrap());
    }
    assert_eq!(remaining, ["1", "0"]);
    // The third call of alice: 429 in APIM's shape, with Retry-After, never forwarded.
    let r = s.call(Method::GET, "/limited", &[], Some(&alice)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"statusCode": 429, "message": format!("Rate limit is exceeded. Try again in {retry} seconds.")})
    );
    assert_eq!(s.backend.request_count(), 2);
    // Keys are isolated: bob has his own counter (the IP counter is now at 4 of 5).
    let r = s.call(Method::GET, "/limited", &[], Some(&bob)).await;
    assert_eq!(r.status(), 200);
    // The fifth call from this IP still reaches validate-jwt (401 without a token)...
    let r = s.call(Method::GET, "/limited", &[], None).await;
    assert_eq!(r.status(), 401);
    // ...the sixth is refused by the IP limit that runs before validate-jwt: no token needed.
    let r = s.call(Method::GET, "/limited", &[], None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(s.backend.request_count(), 3);
}

#[tokio::test]
async fn quotas_count_only_what_the_increment_condition_says() {
    let s = Setup::start(LIMIT_CONFIG).await;
    // Failed responses (5xx) do not count against a `2xx` quota.
    s.backend.set_failure(Failure::Status(503));
    for _ in 0..4 {
        let r = s
            .call(Method::GET, "/quota", &[("X-Client", "c1")], None)
            .await;
        assert_eq!(r.status(), 503);
    }
    s.backend.set_failure(Failure::None);
    for _ in 0..2 {
        let r = s
            .call(Method::GET, "/quota", &[("X-Client", "c1")], None)
            .await;
        assert_eq!(r.status(), 200);
    }
    // The counts are made after the response; wait (bounded) until both are in.
    let mut refused = None;
    for _ in 0..100 {
        let r = s
            .call(Method::GET, "/quota", &[("X-Client", "c1")], None)
            .await;
        if r.status() == 403 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = refused.expect("the third 2xx call is refused");
    assert_eq!(
        s.backend.request_count(),
        6,
        "4 failures and exactly 2 successes were forwarded"
    );
    assert_eq!(body["statusCode"], 403);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Out of call volume quota. Quota will be replenished in ")
            && message.ends_with('.'),
        "{message}"
    );
    // Another client has its own quota.
    let r = s
        .call(Method::GET, "/quota", &[("X-Client", "c2")], None)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_window_renews() {
    let s = Setup::start(LIMIT_CONFIG).await;
    // Two calls per second: start right after a second boundary so all three land in one window.
    let ms = u64::try_from(support::now_ms() % 1000).unwrap();
    if ms > 500 {
        tokio::time::sleep(Duration::from_millis(1000 - ms + 10)).await;
    }
    let statuses = [
        s.call(Method::GET, "/fast", &[], None).await.status(),
        s.call(Method::GET, "/fast", &[], None).await.status(),
        s.call(Method::GET, "/fast", &[], None).await.status(),
    ];
    assert_eq!(statuses, [200, 200, 429]);
    // Within two periods the sliding window has room again (bounded poll).
    let mut renewed = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.call(Method::GET, "/fast", &[], None).await.status() == 200 {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the window never renewed");
}
