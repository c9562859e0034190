//! End-to-end: `ip-filter` and `check-header` (issue 15, item 5) through the real gateway (a
//! config read from YAML text) and a recording backend, over loopback. The client is always
//! 127.0.0.1; a trusted proxy's `X-Forwarded-For` stands in for other callers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use portcullis_testkit::backend::Backend;
use reqwest::{Client, Response};
use serde_json::{json, Value};

use crate::support::InProcess;

const APP: &str = "http://app.local:8000";

struct Setup {
    gateway: InProcess,
    backend: Backend,
    client: Client,
}

impl Setup {
    /// `server_extra`: more `server:` keys (indented two spaces); `rest`: policies and routes.
    async fn start(server_extra: &str, rest: &str) -> Setup {
        let backend = Backend::start().unwrap();
        let text = format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  threads: 1\n{server_extra}{}",
            rest.replace("BACKEND", &backend.url())
        );
        let (model, _) = portcullis_config::load_str(&text, Path::new("checks.yaml"))
            .unwrap_or_else(|d| panic!("config rejected: {d:?}\n{text}"));
        let gateway = InProcess::start(&model).await;
        Setup {
            gateway,
            backend,
            client: Client::new(),
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = self
            .client
            .get(format!("http://{}{path}", self.gateway.proxy()))
            .timeout(Duration::from_secs(10));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send().await.unwrap()
    }
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Status, body as JSON, and the CORS origin header of a refusal.
async fn refusal(r: Response) -> (u16, Value, Option<String>) {
    let status = r.status().as_u16();
    let cors = header(&r, "access-control-allow-origin");
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let body: Value = r.json().await.unwrap();
    (status, body, cors)
}

const IP_CONFIG: &str = r#"
policies:
  # Keyed form: loopback is in the allowed range.
  internal:
    ip-filter:
      action: allow
      addresses: ["10.1.2.3", "2001:db8::/32"]
      address-ranges: [{ from: 127.0.0.1, to: 127.0.0.9 }]
  # Ordered form: 127.0.0.1 is just outside the allowed range, and the cors statement after it
  # still decorates the refusal.
  partners:
    inbound:
      - ip-filter:
          action: allow
          address-ranges: [{ from: 127.0.0.2, to: 127.255.255.255 }, { from: "::1", to: "::2" }]
      - cors: { allowed-origins: ["http://app.local:8000"] }
  # forbid: loopback is listed.
  banned:
    ip-filter: { action: forbid, addresses: ["127.0.0.0/8"] }
routes:
  - { name: internal, match: { path-prefix: /internal }, upstream: "BACKEND", policy: internal }
  - { name: partners, match: { path-prefix: /partners }, upstream: "BACKEND", policy: partners }
  - { name: banned, match: { path-prefix: /banned }, upstream: "BACKEND", policy: banned }
"#;

#[tokio::test]
async fn ip_filter_allows_and_forbids_the_connection_address() {
    let s = Setup::start("", IP_CONFIG).await;
    let ok = s.get("/internal/a", &[]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(s.backend.request_count(), 1);

    // An X-Forwarded-For from an untrusted peer is not believed: loopback is still the caller.
    let spoofed = s
        .get(
            "/partners/a",
            &[("Origin", APP), ("X-Forwarded-For", "127.0.0.5")],
        )
        .await;
    let (status, body, cors) = refusal(spoofed).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"statusCode": 403, "message": "Forbidden"}));
    assert_eq!(cors.as_deref(), Some(APP));

    let banned = s.get("/banned/a", &[]).await;
    let (status, body, cors) = refusal(banned).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({"statusCode": 403, "message": "Forbidden"}));
    assert_eq!(cors, None);
    assert_eq!(
        s.backend.request_count(),
        1,
        "refusals never reach the backend"
    );
}

#[tokio::test]
async fn ip_filter_reads_the_client_behind_a_trusted_proxy() {
    let s = Setup::start("  trusted-proxies: [\"127.0.0.1\"]\n", IP_CONFIG).await;
    // The peer (127.0.0.1) is a trusted proxy: the caller is the address it forwarded.
    let outside = s
        .get("/partners/a", &[("X-Forwarded-For", "192.0.2.7")])
        .await;
    assert_eq!(outside.status(), 403);
    let inside = s
        .get("/partners/a", &[("X-Forwarded-For", "127.0.0.5")])
        .await;
    assert_eq!(inside.status(), 200);
    let v6 = s.get("/partners/a", &[("X-Forwarded-For", "::2")]).await;
    assert_eq!(v6.status(), 200);
    let cidr_v6 = s
        .get("/internal/a", &[("X-Forwarded-For", "2001:db8:ffff::1")])
        .await;
    assert_eq!(cidr_v6.status(), 200);
    let other_v6 = s
        .get("/internal/a", &[("X-Forwarded-For", "2001:db9::1")])
        .await;
    assert_eq!(other_v6.status(), 403);
    // forbid lists 127.0.0.0/8: a caller forwarded from elsewhere passes.
    let elsewhere = s.get("/banned/a", &[("X-Forwarded-For", "10.9.9.9")]).await;
    assert_eq!(elsewhere.status(), 200);
    let forwarded: Vec<String> = s
        .backend
        .requests()
        .iter()
        .map(|r| r.header_values("x-forwarded-for").join(","))
        .collect();
    assert_eq!(
        forwarded.len(),
        4,
        "only the allowed calls reach the backend"
    );
    assert!(forwarded[0].starts_with("127.0.0.5"), "{forwarded:?}");
}

const HEADER_CONFIG: &str = r#"
policies:
  tenant:
    inbound:
      - cors: { allowed-origins: ["http://app.local:8000"] }
      - check-header:
          name: X-Tenant
          values: [contoso, fabrikam]
          failed-check-httpcode: 401
          failed-check-error-message: "Tenant not allowed"
  tenant-any-case:
    check-header:
      name: x-tenant
      values: [Contoso]
      ignore-case: true
      failed-check-httpcode: 403
      failed-check-error-message: "Tenant not allowed"
  present:
    check-header:
      name: x-api-version
      failed-check-httpcode: 400
      failed-check-error-message: "Missing X-Api-Version"
routes:
  - { name: tenant, match: { path-prefix: /tenant }, upstream: "BACKEND", policy: tenant }
  - { name: any-case, match: { path-prefix: /any-case }, upstream: "BACKEND", policy: tenant-any-case }
  - { name: present, match: { path-prefix: /present }, upstream: "BACKEND", policy: present }
"#;

#[tokio::test]
async fn check_header_answers_with_the_configured_status_and_message() {
    let s = Setup::start("", HEADER_CONFIG).await;
    let expected = json!({"statusCode": 401, "message": "Tenant not allowed"});
    let missing = s.get("/tenant/a", &[("Origin", APP)]).await;
    assert_eq!(
        refusal(missing).await,
        (401, expected.clone(), Some(APP.to_owned()))
    );
    let wrong = s
        .get("/tenant/a", &[("Origin", APP), ("X-Tenant", "northwind")])
        .await;
    assert_eq!(
        refusal(wrong).await,
        (401, expected.clone(), Some(APP.to_owned()))
    );
    // Case matters without ignore-case.
    let case = s.get("/tenant/a", &[("X-Tenant", "Contoso")]).await;
    assert_eq!(refusal(case).await, (401, expected, None));
    assert_eq!(
        s.backend.request_count(),
        0,
        "refusals never reach the backend"
    );

    let right = s.get("/tenant/a", &[("X-Tenant", "fabrikam")]).await;
    assert_eq!(right.status(), 200);
    assert_eq!(s.backend.requests()[0].header("x-tenant"), Some("fabrikam"));

    let any_case = s.get("/any-case/a", &[("X-Tenant", "CONTOSO")]).await;
    assert_eq!(any_case.status(), 200);
    let other = s.get("/any-case/a", &[("X-Tenant", "fabrikam")]).await;
    assert_eq!(
        refusal(other).await,
        (
            403,
            json!({"statusCode": 403, "message": "Tenant not allowed"}),
            None
        )
    );

    let present = s.get("/present/a", &[("X-Api-Version", "anything")]).await;
    assert_eq!(present.status(), 200);
    let absent = s.get("/present/a", &[]).await;
    assert_eq!(
        refusal(absent).await,
        (
            400,
            json!({"statusCode": 400, "message": "Missing X-Api-Version"}),
            None
        )
    );
    assert_eq!(s.backend.request_count(), 3);
}

/// An APIM policy with both statements, converted by `import-apim`, decides the same calls through
/// the gateway: the caller (127.0.0.1) is inside the allowed range, the forbidden address is
/// another, and the header needs one of the listed values.
#[tokio::test]
async fn imported_apim_checks_decide_the_same_end_to_end() {
    let backend = Backend::start().unwrap();
    let xml = r#"<policies><inbound>
        <ip-filter action="allow">
            <address-range from="127.0.0.1" to="127.0.0.3" />
        </ip-filter>
        <ip-filter action="forbid"><address>127.0.0.2</address></ip-filter>
        <check-header name="X-Tenant" failed-check-httpcode="403" failed-check-error-message="Unknown tenant" ignore-case="true">
            <value>contoso</value>
        </check-header>
    </inbound></policies>"#;
    let route: portcullis_apim::RouteSpec = format!("api=/api={}", backend.url()).parse().unwrap();
    let conv = portcullis_apim::convert(xml, "admin.xml", &[route]).unwrap();
    assert!(
        conv.diagnostics
            .iter()
            .all(|d| d.kind != portcullis_apim::Kind::Unsupported),
        "{:?}",
        conv.diagnostics
    );
    let text = conv
        .yaml
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"");
    let (model, _) = portcullis_config::load_str(&text, Path::new("admin.yaml"))
        .unwrap_or_else(|d| panic!("config rejected: {d:?}\n{text}"));
    let s = Setup {
        gateway: InProcess::start(&model).await,
        backend,
        client: Client::new(),
    };
    let ok = s.get("/api/x", &[("X-Tenant", "CONTOSO")]).await;
    assert_eq!(ok.status(), 200);
    let wrong = s.get("/api/x", &[("X-Tenant", "fabrikam")]).await;
    assert_eq!(
        refusal(wrong).await,
        (
            403,
            json!({"statusCode": 403, "message": "Unknown tenant"}),
            None
        )
    );
    assert_eq!(s.backend.request_count(), 1);
    assert_eq!(s.backend.requests()[0].header("x-tenant"), Some("CONTOSO"));
}
