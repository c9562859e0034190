//! End-to-end: the transformation statements of issue 15 (`set-variable`, `set-header` inbound
//! and outbound, `return-response`, `choose`) and their values, through the real gateway (a
//! config read from YAML text), a real JWKS server and the recording backend, over real HTTP: the
//! backend's records say exactly what it received, the client's response what it got.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::{Method, Response};
use serde_json::json;

use crate::pipeline::{header, Setup};
use crate::support;

impl Setup {
    /// A token for `sub` with `roles`.
    fn token_with_roles(&self, sub: &str, roles: &[&str]) -> String {
        self.key
            .sign(&json!({
                "iss": self.idp.issuer(), "aud": "api://orders", "sub": sub, "roles": roles,
                "exp": support::now() + 600,
            }))
            .unwrap()
    }
}

const VALIDATE: &str = r#"
      - validate-jwt:
          openid-config: [{ url: "DISCOVERY" }]
          audiences: [api://orders]"#;

fn config(inbound: &str, outbound: &str) -> String {
    format!(
        "policies:\n  orders:\n    forward-claims: {{ X-User-Id: sub }}\n    inbound:{VALIDATE}\n{inbound}{outbound}routes:\n  - {{ name: orders, match: {{ path-prefix: /api }}, upstream: \"BACKEND\", policy: orders }}\n"
    )
}

/// The one request the backend received since it was last cleared.
fn received(s: &Setup) -> portcullis_testkit::backend::RecordedRequest {
    let requests = s.backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    s.backend.clear();
    requests.into_iter().next().unwrap()
}

#[tokio::test]
async fn set_header_sets_appends_deletes_and_skips_with_values_from_the_request() {
    let inbound = r#"      - set-variable: { name: tenant, value: "${header:X-Tenant|public}" }
      - set-header: { name: X-Api-Version, exists-action: override, value: "2" }
      - set-header: { name: X-Tags, exists-action: append, values: [a, "${var:tenant}"] }
      - set-header: { name: X-Debug, exists-action: delete }
      - set-header: { name: X-Keep, exists-action: skip, value: new }
      - set-header: { name: X-Fill, exists-action: skip, value: filled }
      - set-header: { name: X-From-Query, value: "${query:q}" }
      - set-header: { name: X-Subject, value: "user=${claim:sub}" }
      - set-header: { name: X-Roles, value: "${claim:roles}" }
      - set-header: { name: X-Client, value: "${client-ip}" }
      - set-header: { name: X-Request, value: "${method} ${path} ${host} ${query}" }
      - set-header: { name: X-Fallback, value: "${header:X-Missing|dflt}" }
      - set-header: { name: X-Literal, value: "cost $${price}" }
      - set-header: { name: X-Cookie-Like, values: ["a=1", "b=2"] }
      - set-header: { name: Set-Cookie, values: ["a=1", "b=2"] }
      - set-header: { name: Host, value: backend.internal }
"#;
    let s = Setup::start(&config(inbound, "")).await;
    let token = s.token_with_roles("alice", &["admin", "reader"]);
    let r = s
        .call(
            Method::GET,
            "/api/orders/7?q=hello%20world&x=1",
            &[
                ("Host", "API.Example:8080"),
                ("X-Tenant", "acme"),
                ("X-Tags", "z"),
                ("X-Debug", "1"),
                ("X-Keep", "old"),
                ("X-Api-Version", "1"),
            ],
            Some(&token),
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = received(&s);
    assert_eq!(got.header_values("x-api-version"), ["2"]);
    assert_eq!(got.header_values("x-tags"), ["z,a,acme"]);
    assert!(got.header_values("x-debug").is_empty());
    assert_eq!(got.header_values("x-keep"), ["old"]);
    assert_eq!(got.header_values("x-fill"), ["filled"]);
    assert_eq!(got.header_values("x-from-query"), ["hello world"]);
    assert_eq!(got.header_values("x-subject"), ["user=alice"]);
    assert_eq!(got.header_values("x-roles"), ["admin,reader"]);
    assert_eq!(got.header_values("x-client"), ["127.0.0.1"]);
    assert_eq!(
        got.header_values("x-request"),
        ["GET /api/orders/7 api.example q=hello%20world&x=1"]
    );
    assert_eq!(got.header_values("x-fallback"), ["dflt"]);
    assert_eq!(got.header_values("x-literal"), ["cost ${price}"]);
    // Several values: one line joined with `,`, except the headers APIM keeps apart.
    assert_eq!(got.header_values("x-cookie-like"), ["a=1,b=2"]);
    assert_eq!(got.header_values("set-cookie"), ["a=1", "b=2"]);
    // What the gateway itself forwards is untouched; `Host` is the statement's, the forwarded
    // host the client's.
    assert_eq!(got.header_values("x-user-id"), ["alice"]);
    assert_eq!(got.header_values("host"), ["backend.internal"]);
    assert_eq!(got.header_values("x-forwarded-host"), ["API.Example:8080"]);

    // Without the optional inputs: the fallbacks, and empty values for absent sources.
    let r = s.call(Method::GET, "/api/orders", &[], Some(&token)).await;
    assert_eq!(r.status(), 200);
    let got = received(&s);
    assert_eq!(got.header_values("x-tags"), ["a,public"]);
    assert_eq!(got.header_values("x-from-query"), [""]);
    assert_eq!(got.header_values("x-keep"), ["new"]);
}

#[tokio::test]
async fn outbound_set_header_changes_what_the_client_sees_but_not_the_gateway_errors() {
    let outbound = r#"    outbound:
      - set-header: { name: X-Powered-By, exists-action: delete }
      - set-header: { name: Cache-Control, exists-action: skip, value: no-store }
      - set-header: { name: X-Frame-Options, value: DENY }
      - set-header: { name: X-Caller, value: "${claim:sub}/${var:tier}" }
      - choose:
          - when: { status: [200] }
            steps: [ { set-header: { name: X-Outcome, value: ok } } ]
          - otherwise: [ { set-header: { name: X-Outcome, value: "not ok" } } ]
"#;
    let inbound = "      - set-variable: { name: tier, value: gold }\n";
    let s = Setup::start(&config(inbound, outbound)).await;
    s.backend.set_response_header("X-Powered-By", "Express");
    s.backend
        .set_response_header("X-Frame-Options", "SAMEORIGIN");
    let token = s.token_with_roles("alice", &[]);
    let r = s.call(Method::GET, "/api/x", &[], Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-powered-by"), None);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(header(&r, "x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(header(&r, "x-caller").as_deref(), Some("alice/gold"));
    assert_eq!(header(&r, "x-outcome").as_deref(), Some("ok"));
    // The backend's own status is what `status` reads.
    s.backend
        .set_failure(portcullis_testkit::backend::Failure::Status(503));
    let r = s.call(Method::GET, "/api/x", &[], Some(&token)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-outcome").as_deref(), Some("not ok"));
    // The gateway's own 401 is not a response of the policy: outbound does not run on it.
    let r = s.call(Method::GET, "/api/x", &[], None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "x-frame-options"), None);
    assert_eq!(header(&r, "x-outcome"), None);
}

#[tokio::test]
async fn return_response_answers_without_the_backend_and_runs_outbound() {
    let inbound = r#"      - choose:
          - when: { header-present: X-Blocked }
            steps:
              - return-response:
                  status: 403
                  reason: Go Away
                  headers: { Content-Type: application/json, X-Why: [a, "${header:X-Blocked}"] }
                  body: '{"error":"blocked ${client-ip}","sub":"${claim:sub}"}'
"#;
    let outbound = "    outbound:\n      - set-header: { name: X-Outbound, value: ran }\n";
    let s = Setup::start(&config(inbound, outbound)).await;
    let token = s.token_with_roles("alice", &[]);
    let r = s
        .call(Method::GET, "/api/x", &[("X-Blocked", "b")], Some(&token))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let why: Vec<&str> = r
        .headers()
        .get_all("x-why")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(why, ["a", "b"]);
    assert_eq!(header(&r, "x-outbound").as_deref(), Some("ran"));
    assert!(header(&r, "x-request-id").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"error": "blocked 127.0.0.1", "sub": "alice"}));
    assert_eq!(s.backend.request_count(), 0, "the backend is never called");
    // The reason phrase is sent as written (reqwest does not expose it: read the raw line).
    let line = raw_status_line(&s, &token).await;
    assert_eq!(line, "HTTP/1.1 403 Go Away");
    assert_eq!(s.backend.request_count(), 0);
    // Counted under its own reason.
    let metrics = s.gateway.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_requests_total")
                && l.contains("reason=\"ReturnResponse\"")
                && l.contains("status=\"403\"")),
        "{metrics}"
    );
    // Without the header, the request goes through.
    let r = s.call(Method::GET, "/api/x", &[], Some(&token)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.backend.request_count(), 1);
}

/// The status line of a blocked request, over a plain socket.
async fn raw_status_line(s: &Setup, token: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(s.gateway.proxy())
        .await
        .unwrap();
    let request = format!(
        "GET /api/x HTTP/1.1\r\nHost: t\r\nX-Blocked: b\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.unwrap();
    line.trim_end().to_owned()
}

#[tokio::test]
async fn choose_runs_the_first_branch_that_holds_nested_and_otherwise() {
    let inbound = r#"      - set-variable: { name: plan, value: "${query:plan|free}" }
      - choose:
          - when: { method: [POST, PUT] }
            steps: [ { set-header: { name: X-Branch, value: write } } ]
          - when: { header-present: X-Internal }
            steps:
              - set-header: { name: X-Branch, value: internal }
              - choose:
                  - when: { query: { name: v, equals: "2" } }
                    steps: [ { set-header: { name: X-Inner, value: v2 } } ]
                  - otherwise: [ { set-header: { name: X-Inner, value: other } } ]
          - when: { claim: { name: roles, contains: admin } }
            steps: [ { set-header: { name: X-Branch, value: admin } } ]
          - when: { all: [ { variable: { name: plan, in: [gold, silver], ignore-case: true } }, { not: { path-prefix: /api/free } } ] }
            steps: [ { set-header: { name: X-Branch, value: paid } } ]
          - when: { any: [ { header: { name: X-Mode, equals: test, ignore-case: true } }, { path: "/api/items/{id}" } ] }
            steps: [ { set-header: { name: X-Branch, value: test-or-item } } ]
          - otherwise:
              - set-header: { name: X-Branch, value: none }
"#;
    let s = Setup::start(&config(inbound, "")).await;
    let user = &*s.token_with_roles("bob", &["reader"]);
    let admin = &*s.token_with_roles("ann", &["reader", "admin"]);
    // method, path, headers, token, the branch taken, the nested choose's branch.
    type Case<'a> = (
        Method,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        (
            Method::POST,
            "/api/x",
            &[("X-Internal", "1")],
            user,
            "write",
            None,
        ),
        (
            Method::GET,
            "/api/x?v=2",
            &[("X-Internal", "1")],
            admin,
            "internal",
            Some("v2"),
        ),
        (
            Method::GET,
            "/api/x?v=3",
            &[("X-Internal", "1")],
            user,
            "internal",
            Some("other"),
        ),
        (Method::GET, "/api/x", &[], admin, "admin", None),
        (Method::GET, "/api/x?plan=GOLD", &[], user, "paid", None),
        (
            Method::GET,
            "/api/free/x?plan=gold",
            &[],
            user,
            "none",
            None,
        ),
        (
            Method::GET,
            "/api/x",
            &[("X-Mode", "TEST")],
            user,
            "test-or-item",
            None,
        ),
        (
            Method::GET,
            "/API/ITEMS/42",
            &[],
            user,
            "test-or-item",
            None,
        ),
        (Method::GET, "/api/items/42/more", &[], user, "none", None),
        (Method::GET, "/api/x", &[], user, "none", None),
    ];
    for (method, path, headers, token, branch, inner) in cases {
        let r = s.call(method.clone(), path, headers, Some(*token)).await;
        assert_eq!(r.status(), 200, "{method} {path}");
        let got = received(&s);
        assert_eq!(
            got.header_values("x-branch"),
            [*branch],
            "{method} {path} {headers:?}"
        );
        let want: Vec<&str> = inner.iter().copied().collect();
        assert_eq!(got.header_values("x-inner"), want, "{method} {path}");
    }
}

#[tokio::test]
async fn a_value_that_would_break_a_header_is_refused_and_counted() {
    let inbound = r#"      - set-header: { name: X-Echo, value: "${query:e}" }
      - set-header: { name: X-Tenant, value: "${query:e}" }
      - set-header: { name: X-After, value: fine }
"#;
    let s = Setup::start(&config(inbound, "")).await;
    let token = s.token_with_roles("alice", &[]);
    for (query, reason) in [
        ("a%0D%0AX-Evil:%201", "ControlCharacter"),
        ("caf%C3%A9", "NonAscii"),
    ] {
        let path = format!("/api/x?e={query}");
        let r = s
            .call(Method::GET, &path, &[("X-Tenant", "spoofed")], Some(&token))
            .await;
        assert_eq!(r.status(), 200);
        let got = received(&s);
        assert!(got.header_values("x-echo").is_empty(), "{got:?}");
        assert!(got.header_values("x-evil").is_empty(), "{got:?}");
        // `override` with a refused value leaves the header unset: the client's own value
        // never stands in for it.
        assert!(got.header_values("x-tenant").is_empty(), "{got:?}");
        assert_eq!(got.header_values("x-after"), ["fine"]);
        let metrics = s.gateway.metrics().await;
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("portcullis_transform_values_refused_total")
                    && l.contains("policy=\"orders\"")
                    && l.contains("statement=\"set-header x-echo\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    // A value a header can carry is set.
    let r = s
        .call(Method::GET, "/api/x?e=ok%20fine", &[], Some(&token))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(received(&s).header_values("x-echo"), ["ok fine"]);
}

#[tokio::test]
async fn a_policy_without_transformations_forwards_as_before() {
    let s = Setup::start(&config("", "")).await;
    let token = s.token_with_roles("alice", &[]);
    let r: Response = s
        .call(Method::GET, "/api/x?q=1", &[("X-Debug", "1")], Some(&token))
        .await;
    assert_eq!(r.status(), 200);
    let got = received(&s);
    assert_eq!(got.header_values("x-debug"), ["1"]);
    assert_eq!(got.query.as_deref(), Some("q=1"));
}

/// A policy may set the forwarding headers the gateway sets itself (APIM policies set
/// `X-Forwarded-Host` to the public host): the statement applies after the gateway's own, so
/// `override` wins, `skip` keeps the gateway's value, `append` adds to it, `delete` removes it;
/// the client's copies never reach the backend either way.
#[tokio::test]
async fn set_header_of_forwarding_headers_has_the_last_word() {
    let inbound = r#"      - set-header: { name: X-Forwarded-Host, exists-action: override, value: api.contoso.example }
      - set-header: { name: X-Forwarded-Proto, exists-action: skip, value: https }
      - set-header: { name: X-Forwarded-For, exists-action: append, value: "${header:X-Edge-Ip|none}" }
      - set-header: { name: X-Forwarded-Port, exists-action: delete }
      - set-header: { name: X-Real-IP, exists-action: override, value: "${client-ip}" }
"#;
    let s = Setup::start(&config(inbound, "")).await;
    let token = s.token_with_roles("alice", &[]);
    let spoofed = [
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Port", "1"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Edge-Ip", "10.1.2.3"),
    ];
    let r: Response = s.call(Method::GET, "/api/x", &spoofed, Some(&token)).await;
    assert_eq!(r.status(), 200);
    let got = received(&s);
    assert_eq!(
        got.header_values("x-forwarded-host"),
        ["api.contoso.example"]
    );
    assert_eq!(
        got.header_values("x-forwarded-proto"),
        ["http"],
        "skip keeps the gateway's"
    );
    assert_eq!(
        got.header_values("x-forwarded-for"),
        ["127.0.0.1,10.1.2.3"],
        "append adds to the gateway's value, never the client's"
    );
    assert!(got.header_values("x-forwarded-port").is_empty());
    assert_eq!(got.header_values("x-real-ip"), ["127.0.0.1"]);
}

/// A HEAD served by a route listing GET (not HEAD) sees `GET` in `method` conditions: a check
/// guarded by `{ method: GET }` runs for it as for the GET it mirrors (it was skipped: GET 401,
/// HEAD 200 from the backend). A route listing HEAD itself sees HEAD.
#[tokio::test]
async fn a_head_served_by_a_get_route_evaluates_method_conditions_as_get() {
    let text = r#"policies:
  keyed:
    inbound:
      - choose:
          - when: { method: GET }
            steps:
              - check-header: { name: X-Key, values: [k1], failed-check-httpcode: 401, failed-check-error-message: "no key" }
          - when: { not: { method: GET } }
            steps: [ { set-header: { name: X-Not-Get, value: "1" } } ]
routes:
  - { name: get, match: { path: /get, methods: [GET] }, upstream: "BACKEND", policy: keyed }
  - { name: head, match: { path: /head, methods: [GET, HEAD] }, upstream: "BACKEND", policy: keyed }
"#;
    let s = Setup::start(text).await;
    let send = |method: Method, path: &str, key: Option<&str>| {
        let mut req = s
            .client
            .request(method, format!("http://{}{path}", s.gateway.proxy()));
        if let Some(k) = key {
            req = req.header("X-Key", k);
        }
        req.send()
    };
    for method in [Method::GET, Method::HEAD] {
        let r = send(method.clone(), "/get", None).await.unwrap();
        assert_eq!(r.status(), 401, "{method} without the key");
        assert!(s.backend.requests().is_empty(), "{method}");
        let r = send(method.clone(), "/get", Some("k1")).await.unwrap();
        assert_eq!(r.status(), 200, "{method} with the key");
        let got = received(&s);
        assert_eq!(got.method, method.as_str());
        assert_eq!(got.header("x-not-get"), None, "{method}");
    }
    // a route that lists HEAD: the HEAD is not a GET there
    let r = send(Method::HEAD, "/head", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(received(&s).header("x-not-get"), Some("1"));
}
