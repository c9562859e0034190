//! End-to-end tests: gateway.
//!
//! The real gateway (pingora, in this process through `portcullis_proxy::bind`, or the built binary
//! with `run -c`), the recording backend and a JWKS server, all on loopback port 0. Readiness is
//! awaited on `/readyz` or the printed `listening ...` line, never on fixed sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use portcullis_auth::{ClaimRule, Match, Policy, ScopesRule};
use portcullis_config::{KeyLifecycle, KeySource, Model, Route};
use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{JwksServer, TestKey, JWKS_PATH};
use portcullis_testkit::wait::poll_text;
use reqwest::header::HeaderName;
use serde_json::{json, Value};

use crate::support::{self, route, InProcess};

const NAME_URI: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const AUDIENCE: &str = "api://orders";

// ---------------------------------------------------------------- model building

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// The orders policy: issuer and audience, required tid, scope orders.read (403 on scope failure),
/// four forwarded claims (scalar, array, number, URI-named).
fn orders_policy(name: &str, issuer: &str, report_only: bool) -> Policy {
    let mut p = Policy::new(name);
    p.issuers = vec![issuer.to_owned()];
    p.audiences = vec![AUDIENCE.to_owned()];
    p.required_claims = vec![ClaimRule {
        name: "tid".to_owned(),
        r#match: Match::All,
        separator: None,
        values: vec!["tenant-a".to_owned()],
    }];
    p.scopes = Some(ScopesRule {
        r#match: Match::Any,
        values: vec!["orders.read".to_owned()],
    });
    p.insufficient_scope_httpcode = Some(403);
    p.forward_claims = vec![
        (header("x-user-id"), "sub".to_owned()),
        (header("x-user-roles"), "roles".to_owned()),
        (header("x-user-level"), "level".to_owned()),
        (header("x-user-name"), NAME_URI.to_owned()),
    ];
    p.report_only = report_only;
    p
}

fn jwks_source(url: String) -> KeySource {
    KeySource::JwksUri {
        url,
        lifecycle: KeyLifecycle::default(),
    }
}

fn model(policies: Vec<(Policy, KeySource)>, routes: Vec<Route>) -> Model {
    let policies = policies.into_iter().map(|(p, s)| (p, vec![s])).collect();
    support::model("gateway-test.yaml", policies, routes)
}

// ---------------------------------------------------------------- running gateway

struct Gateway {
    gw: InProcess,
    client: reqwest::Client,
}

impl Gateway {
    fn start(model: &Model) -> Gateway {
        Gateway {
            gw: InProcess::bind(model),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.proxy())
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin())
    }

    async fn readyz(&self) -> u16 {
        let resp = self.client.get(self.admin("/readyz")).send().await.unwrap();
        resp.status().as_u16()
    }

    async fn wait_ready(&self) {
        self.gw.wait_ready().await;
    }

    async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.admin("/metrics"))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// `/metrics` once `done` holds for it (polled, bounded): counters move in the `logging`
    /// hook, which pingora runs after the response is on its way, so a test that reads them right
    /// after a response would race it. Returns the last text either way; callers assert on it.
    async fn metrics_until(&self, done: impl Fn(&str) -> bool) -> String {
        poll_text(500, || self.metrics(), done).await
    }

    async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self.client.get(self.url(path));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }
}

struct Fixture {
    backend: Backend,
    idp: JwksServer,
    key: TestKey,
    gateway: Gateway,
}

async fn fixture() -> Fixture {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let key = TestKey::rsa("rsa-1").unwrap();
    idp.set_keys(&[&key]);
    let issuer = idp.issuer().to_owned();
    let model = model(
        vec![
            (
                orders_policy("orders", &issuer, false),
                jwks_source(idp.jwks_url()),
            ),
            (
                orders_policy("audit", &issuer, true),
                jwks_source(idp.jwks_url()),
            ),
        ],
        vec![
            route("orders", "/api/orders", backend.addr(), Some("orders")),
            route("audit", "/api/audit", backend.addr(), Some("audit")),
            route("public", "/public", backend.addr(), None),
        ],
    );
    let gateway = Gateway::start(&model);
    gateway.wait_ready().await;
    Fixture {
        backend,
        idp,
        key,
        gateway,
    }
}

fn now() -> i64 {
    #[allow(clippy::disallowed_methods)] // tests mint tokens relative to the real clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-42",
        "tid": "tenant-a",
        "scp": "orders.read orders.write",
        "roles": ["Orders.Reader", "Orders.Admin"],
        "level": 7,
        NAME_URI: "Alice Example",
        "iat": now(),
        "exp": now() + 300,
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn valid_token_forwards_identity_headers_and_drops_spoofed_ones() {
    let f = fixture().await;
    let token = f.key.sign(&claims(f.idp.issuer())).unwrap();
    let auth = bearer(&token);
    let (status, _, body) = f
        .gateway
        .get(
            "/api/orders/1",
            &[
                ("Authorization", &auth),
                ("X-User-Id", "spoofed"),
                ("X_User_Id", "spoofed"),
                ("x_user_roles", "Admin"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reqs = f.backend.requests();
    assert_eq!(reqs.len(), 1);
    let seen = &reqs[0];
    assert_eq!(seen.header_values("x-user-id"), vec!["user-42"]);
    assert_eq!(
        seen.header("x-user-roles"),
        Some("Orders.Reader,Orders.Admin")
    );
    assert_eq!(seen.header("x-user-level"), Some("7"));
    assert_eq!(seen.header("x-user-name"), Some("Alice Example"));
    assert!(seen.header_values("x_user_id").is_empty());
    assert!(seen.header_values("x_user_roles").is_empty());
    assert_eq!(seen.header("authorization"), Some(auth.as_str()));
    assert!(seen.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_routes_drop_spoofed_identity_headers_too() {
    let f = fixture().await;
    let (status, _, _) = f
        .gateway
        .get(
            "/public/x",
            &[
                ("X-User-Id", "spoofed"),
                ("X_USER_ID", "spoofed"),
                ("X-User_Name", "spoofed"),
                ("X-Kept", "yes"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = &f.backend.requests()[0];
    for name in ["x-user-id", "x_user_id", "x-user_name", "x-user-name"] {
        assert!(
            seen.header_values(name).is_empty(),
            "{name} reached the backend"
        );
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reason_code_answers_its_status_and_body_and_never_reaches_the_backend() {
    let f = fixture().await;
    let iss = f.idp.issuer().to_owned();
    let good = claims(&iss);
    let sign = |c: &Value| f.key.sign(c).unwrap();
    let other_key = TestKey::rsa("rsa-1").unwrap();
    let unknown_kid = TestKey::rsa("nobody").unwrap();
    let valid = sign(&good);
    let (head, _) = valid.rsplit_once('.').unwrap();
    let tampered = format!("{head}.{}", "A".repeat(342));

    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("TokenNotPresent", None, 401, "JWT not present."),
        (
            "TokenExpired",
            Some(sign(&with(good.clone(), "exp", json!(now() - 60)))),
            401,
            "Lifetime validation failed. The token is expired. Access denied.",
        ),
        (
            "TokenNotYetValid",
            Some(sign(&with(good.clone(), "nbf", json!(now() + 600)))),
            401,
            "Lifetime validation failed. The token is not yet valid. Access denied.",
        ),
        (
            "TokenSignatureInvalid",
            Some(other_key.sign(&good).unwrap()),
            401,
            "Signature validation failed. Access denied.",
        ),
        (
            "TokenSignatureInvalid (tampered)",
            Some(tampered),
            401,
            "Signature validation failed. Access denied.",
        ),
        (
            "TokenSignatureKeyNotFound",
            Some(unknown_kid.sign(&good).unwrap()),
            401,
            "Signature validation failed. Unable to match key. Access denied.",
        ),
        (
            "TokenIssuerNotAllowed",
            Some(sign(&with(
                good.clone(),
                "iss",
                json!("https://evil.example/"),
            ))),
            401,
            "Issuer validation failed. Access denied.",
        ),
        (
            "TokenAudienceNotAllowed",
            Some(sign(&with(good.clone(), "aud", json!("api://other")))),
            401,
            "Audience validation failed. Access denied.",
        ),
        (
            "TokenClaimNotFound",
            Some(sign(&without(good.clone(), "tid"))),
            401,
            "JWT token is missing the following claims: tid. Access denied.",
        ),
        (
            "TokenClaimValueNotAllowed",
            Some(sign(&with(good.clone(), "tid", json!("tenant-b")))),
            401,
            "Claim tid value of tenant-b is not allowed. Access denied.",
        ),
        (
            "TokenClaimValueNotAllowed (scope)",
            Some(sign(&with(good.clone(), "scp", json!("orders.write")))),
            403,
            "",
        ),
        (
            "JwtInvalid",
            Some("not-a-jwt".to_owned()),
            401,
            "Invalid JWT.",
        ),
    ];
    for (reason, token, status, message) in cases {
        let auth = token.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (got, resp_headers, body) = f.gateway.get("/api/orders", &headers).await;
        assert_eq!(got, status, "{reason}: {body}");
        assert_eq!(resp_headers["content-type"], "application/json", "{reason}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["statusCode"], status, "{reason}");
        if !message.is_empty() {
            assert_eq!(body["message"], message, "{reason}");
        }
        let www = resp_headers["www-authenticate"].to_str().unwrap();
        let expected_www = match (token.is_some(), status) {
            (false, _) => "Bearer",
            (true, 403) => "Bearer error=\"insufficient_scope\"",
            (true, _) => "Bearer error=\"invalid_token\"",
        };
        assert_eq!(www, expected_www, "{reason}");
        assert_eq!(f.backend.request_count(), 0, "{reason} reached the backend");
    }
    let metrics = f
        .gateway
        .metrics_until(|m| {
            m.contains(r#"reason="JwtInvalid",route="orders",status="401"} 1"#)
                && m.contains(r#"reason="TokenSignatureInvalid",route="orders",status="401"} 2"#)
                && m.matches(r#"route="orders",status="401"}"#).count() >= 9
        })
        .await;
    for reason in [
        "TokenNotPresent",
        "TokenExpired",
        "TokenNotYetValid",
        "TokenSignatureKeyNotFound",
        "TokenIssuerNotAllowed",
        "TokenAudienceNotAllowed",
        "TokenClaimNotFound",
        "JwtInvalid",
    ] {
        let line = format!(
            r#"portcullis_requests_total{{reason="{reason}",route="orders",status="401"}} 1"#
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.contains(
        r#"portcullis_requests_total{reason="TokenSignatureInvalid",route="orders",status="401"} 2"#
    ));
    assert!(metrics.contains(
        r#"portcullis_requests_total{reason="TokenClaimValueNotAllowed",route="orders",status="403"} 1"#
    ));
    assert!(metrics.contains("portcullis_token_validation_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_unavailable_answers_401_and_readyz_waits_for_keys() {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let key = TestKey::rsa("rsa-1").unwrap();
    idp.update(JWKS_PATH, |e| e.status = 503);
    let issuer = idp.issuer().to_owned();
    let gateway = Gateway::start(&model(
        vec![(
            orders_policy("orders", &issuer, false),
            jwks_source(idp.jwks_url()),
        )],
        vec![route(
            "orders",
            "/api/orders",
            backend.addr(),
            Some("orders"),
        )],
    ));
    assert_eq!(gateway.readyz().await, 503);
    let token = key.sign(&claims(&issuer)).unwrap();
    let (status, _, body) = gateway
        .get("/api/orders", &[("Authorization", &bearer(&token))])
        .await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["message"],
        "Signing keys are unavailable. Access denied."
    );
    assert_eq!(backend.request_count(), 0);

    idp.set_keys(&[&key]);
    gateway.wait_ready().await;
    let (status, _, _) = gateway
        .get("/api/orders", &[("Authorization", &bearer(&token))])
        .await;
    assert_eq!(status, 200);
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_picked_up_by_the_unknown_kid_refetch() {
    let f = fixture().await;
    let rotated = TestKey::rsa("rsa-2").unwrap();
    f.idp.set_keys(&[&f.key, &rotated]);
    let token = rotated.sign(&claims(f.idp.issuer())).unwrap();
    let (status, _, body) = f
        .gateway
        .get("/api/orders", &[("Authorization", &bearer(&token))])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.backend.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn report_only_forwards_and_counts_the_would_be_failure() {
    let f = fixture().await;
    let expired = f
        .key
        .sign(&with(claims(f.idp.issuer()), "exp", json!(now() - 60)))
        .unwrap();
    let (status, _, _) = f
        .gateway
        .get(
            "/api/audit",
            &[
                ("Authorization", &bearer(&expired)),
                ("X-User-Id", "spoofed"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let seen = &f.backend.requests()[0];
    assert!(
        seen.header_values("x-user-id").is_empty(),
        "no identity from a failed token"
    );
    let metrics = f
        .gateway
        .metrics_until(|m| {
            m.contains(
                r#"portcullis_requests_total{reason="TokenExpired",route="audit",status="200"} 1"#,
            )
        })
        .await;
    assert!(
        metrics.contains(
            r#"portcullis_report_only_failures_total{policy="audit",reason="TokenExpired",route="audit"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"portcullis_requests_total{reason="TokenExpired",route="audit",status="200"} 1"#
    ));
}

/// Read one HTTP/1.1 response with a Content-Length body; returns (status line, body).
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
            assert!(
                !(n.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")),
                "gateway asked to close the connection"
            );
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_survives_a_401() {
    let f = fixture().await;
    let addr = f.gateway.gw.proxy();
    let token = f.key.sign(&claims(f.idp.issuer())).unwrap();
    let result = tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        writer
            .write_all(b"GET /api/orders HTTP/1.1\r\nHost: gw\r\n\r\n")
            .unwrap();
        let first = read_response(&mut reader);
        let second_req = format!(
            "GET /api/orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        writer.write_all(second_req.as_bytes()).unwrap();
        let second = read_response(&mut reader);
        (first, second)
    })
    .await
    .unwrap();
    assert!(result.0 .0.starts_with("HTTP/1.1 401"), "{:?}", result.0);
    assert!(result.1 .0.starts_with("HTTP/1.1 200"), "{:?}", result.1);
    assert_eq!(f.backend.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_runs_a_config_file_and_stops_on_sigterm() {
    let backend = Backend::start().unwrap();
    let config = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\nroutes:\n  - name: public\n    match: {{ path-prefix: / }}\n    upstream: {}\n    policy: none\n",
        backend.url()
    );
    let gw = support::Gateway::run(&config, &reqwest::Client::new()).await;
    let (status, body) = gw.call("/hello", "unused-on-an-anonymous-route").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend.requests()[0].path, "/hello");
    let status = tokio::task::spawn_blocking(move || gw.stop())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A client that hangs up in the middle of its request body: nothing can be answered, and it is
/// neither the gateway's nor the upstream's failure, so it is recorded as `ClientClosedRequest`
/// with status 499 (as nginx records it; or the status already written), not as a `ProxyError`.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_hanging_up_mid_body_is_recorded_as_client_closed() {
    let backend = Backend::start().unwrap();
    let mut m = support::model(
        "anon",
        vec![],
        vec![route("open", "/", backend.addr(), None)],
    );
    m.server.token_cache_max_entries = 0;
    let gw = InProcess::start(&m).await;
    let mut conn = TcpStream::connect(gw.proxy()).unwrap();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: api.local\r\nContent-Length: 1000\r\n\r\nonly-part-of-it",
    )
    .unwrap();
    conn.flush().unwrap();
    drop(conn);
    // 499 when nothing was answered yet; the status already written when the backend answered
    // before the gateway found the body cut short (it may: a backend need not read it all).
    let counted = |text: &str| {
        text.lines().any(|l| {
            l.starts_with(r#"portcullis_requests_total{reason="ClientClosedRequest",route="open","#)
                && (l.ends_with(r#"status="499"} 1"#) || l.ends_with(r#"status="200"} 1"#))
        })
    };
    let metrics = poll_text(500, || gw.metrics(), |text| counted(text)).await;
    assert!(counted(&metrics), "{metrics}");
    assert!(!metrics.contains(r#"reason="ProxyError""#), "{metrics}");
}
