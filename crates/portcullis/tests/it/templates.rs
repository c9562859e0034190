//! End-to-end: URL templates in routes, `rewrite-uri`, `set-query-parameter`,
//! `set-backend-service` (`base-url`, `backend-id`) and `mock-response` (issue 15), through the
//! real gateway (a config read from YAML text), over real HTTP, with recording backends that show
//! exactly the method, path, query and headers they received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_testkit::backend::{Backend, RecordedRequest};
use reqwest::{Client, Method};

use crate::support::InProcess;

const SPEC: &str = r#"
openapi: 3.0.1
info: { title: orders, version: "1" }
paths:
  /orders/{id}:
    get:
      operationId: getOrder
      responses:
        "200":
          description: ok
          content:
            application/json:
              example: { id: 7, lines: [ { sku: "a b" } ] }
            text/plain:
              examples:
                first: { value: "order 7" }
        "404":
          description: missing
          content:
            application/json:
              schema: { type: object, example: { error: missing } }
"#;

const CONFIG: &str = r#"
backends:
  legacy:
    url: "SECOND/legacy"
    timeout: 5s
policies:
  rewrite-v2:
    inbound:
      - rewrite-uri: { template: "/v2/orders/{id}/items/{line}?expand=lines" }
  rewrite-strict:
    inbound:
      - rewrite-uri: { template: "/v2/{id}?x={id}", copy-unmatched-params: false }
  query-edits:
    inbound:
      - set-query-parameter: { name: a, exists-action: override, value: "new val" }
      - set-query-parameter: { name: b, exists-action: skip, value: ignored }
      - set-query-parameter: { name: c, exists-action: skip, value: added }
      - set-query-parameter: { name: d, exists-action: append, values: ["1", "2&3"] }
      - set-query-parameter: { name: e, exists-action: delete }
  to-legacy:
    inbound:
      - set-backend-service: { backend-id: legacy }
  to-base-url:
    inbound:
      - set-backend-service: { base-url: "SECOND/base" }
      - rewrite-uri: { template: "/r/{id}", copy-unmatched-params: false }
  rewrite-src:
    inbound:
      - rewrite-uri: { template: "/${query:seg}/{id}?who=${header:X-User|anon}" }
  query-src:
    inbound:
      - set-query-parameter: { name: who, exists-action: append, value: "${header:X-User|anon}" }
  mock:
    inbound:
      - mock-response: { status-code: 200, content-type: application/json }
  mock-text:
    inbound:
      - mock-response: { content-type: text/plain }
  mock-404:
    inbound:
      - mock-response: { status-code: 404 }
  mock-none:
    inbound:
      - mock-response: { status-code: 201, content-type: application/xml }
routes:
  - { name: special, match: { path: /orders/special }, upstream: "FIRST", policy: none }
  - { name: order-line, match: { path: "/orders/{id}/lines/{line}", methods: [GET] }, upstream: "FIRST", policy: rewrite-v2 }
  - { name: order, match: { path: "/orders/{id}" }, upstream: "FIRST", policy: rewrite-strict }
  - { name: tenant-api, match: { path-prefix: "/tenants/{tenant}/api" }, strip-prefix: true, upstream: "FIRST", policy: none }
  - { name: tenant-v1, match: { path-prefix: "/t/{tenant}" }, rewrite-prefix: /v1, upstream: "FIRST", policy: none }
  - { name: files, match: { path: "/files/{*rest}" }, upstream: "FIRST", policy: none }
  - { name: query, match: { path: /q }, upstream: "FIRST", policy: query-edits }
  - { name: legacy, match: { path-prefix: /old }, strip-prefix: true, upstream: "FIRST", policy: to-legacy }
  - { name: base, match: { path: "/b/{id}" }, upstream: "FIRST", policy: to-base-url }
  - { name: src, match: { path: "/src/{id}" }, upstream: "FIRST", policy: rewrite-src }
  - { name: qs, match: { path: /qs }, upstream: "FIRST", policy: query-src }
  - { name: mock, match: { path: "/mock/{id}" }, openapi: { spec: spec.yaml, operation: getOrder }, upstream: "FIRST", policy: mock }
  - { name: mock-text, match: { path: /mock-text }, openapi: { spec: spec.yaml, operation: getOrder }, upstream: "FIRST", policy: mock-text }
  - { name: mock-404, match: { path: /mock-404 }, openapi: { spec: spec.yaml, operation: getOrder }, upstream: "FIRST", policy: mock-404 }
  - { name: mock-none, match: { path: /mock-none }, openapi: { spec: spec.yaml, operation: getOrder }, upstream: "FIRST", policy: mock-none }
"#;

struct Setup {
    gateway: InProcess,
    first: Backend,
    second: Backend,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let first = Backend::start().unwrap();
        let second = Backend::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spec.yaml"), SPEC).unwrap();
        let text = format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  threads: 1\n{}",
            CONFIG
                .replace("FIRST", &first.url())
                .replace("SECOND", &second.url())
        );
        let path = dir.path().join("templates.yaml");
        let (model, warnings) = portcullis_config::load_str(&text, &path)
            .unwrap_or_else(|d| panic!("config rejected: {d:?}\n{text}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        let gateway = InProcess::start(&model).await;
        Setup {
            gateway,
            first,
            second,
            client: Client::new(),
            _dir: dir,
        }
    }

    async fn call(&self, method: Method, target: &str) -> (u16, Option<String>, String) {
        self.call_with(method, target, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, String) {
        let mut req = self
            .client
            .request(method, format!("http://{}{target}", self.gateway.proxy()));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.timeout(Duration::from_secs(10)).send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, ct, resp.text().await.unwrap())
    }

    /// GET `target`: it must reach `backend` exactly once; what the backend received.
    async fn forwarded(&self, target: &str, backend: &Backend) -> RecordedRequest {
        self.forwarded_with(target, &[], backend).await
    }

    async fn forwarded_with(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        backend: &Backend,
    ) -> RecordedRequest {
        self.first.clear();
        self.second.clear();
        let (status, _, body) = self.call_with(Method::GET, target, headers).await;
        assert_eq!(status, 200, "{target}: {body}");
        let mut got = backend.requests();
        assert_eq!(got.len(), 1, "{target}: {got:?}");
        assert_eq!(
            self.first.request_count() + self.second.request_count(),
            1,
            "{target} reached both backends"
        );
        got.remove(0)
    }
}

fn target(r: &RecordedRequest) -> (String, Option<String>) {
    (r.path.clone(), r.query.clone())
}

fn pair(path: &str, query: Option<&str>) -> (String, Option<String>) {
    (path.to_owned(), query.map(str::to_owned))
}

#[tokio::test]
async fn templates_match_and_rewrite_uri_inserts_the_parameters() {
    let s = Setup::start().await;
    // Specific before generic: `/orders/special` is its own route, forwarded untouched.
    let r = s.forwarded("/orders/special?z=1", &s.first).await;
    assert_eq!(target(&r), pair("/orders/special", Some("z=1")));
    // Both parameters inserted as their canonical text (the request's spelling, still encoded);
    // the template's query first, then the request's unmatched parameters, byte for byte.
    let r = s
        .forwarded("/Orders/A%20b/LINES/3?expand=x&keep=%7e&flag", &s.first)
        .await;
    assert_eq!(r.method, "GET");
    assert_eq!(
        target(&r),
        pair(
            "/v2/orders/A%20b/items/3",
            Some("expand=lines&keep=%7e&flag")
        )
    );
    // copy-unmatched-params: false drops the request's query; a parameter in the template's
    // query is encoded for a query (`&` escaped).
    let r = s.forwarded("/orders/a&b?y=2", &s.first).await;
    assert_eq!(target(&r), pair("/v2/a&b", Some("x=a%26b")));
    // The method list of the templated route holds: POST is not `order-line`, and `order`
    // (one segment) does not match three segments.
    s.first.clear();
    let (status, _, _) = s.call(Method::POST, "/orders/1/lines/2").await;
    assert_eq!(status, 404);
    assert_eq!(s.first.request_count(), 0);
}

#[tokio::test]
async fn strip_and_rewrite_prefix_work_below_a_templated_prefix() {
    let s = Setup::start().await;
    let r = s.forwarded("/tenants/acme/api/orders/1?x", &s.first).await;
    assert_eq!(target(&r), pair("/orders/1", Some("x")));
    let r = s.forwarded("/tenants/acme/api", &s.first).await;
    assert_eq!(target(&r), pair("/", None));
    let r = s.forwarded("/t/acme/a/b", &s.first).await;
    assert_eq!(target(&r), pair("/v1/a/b", None));
    // `{*rest}` takes one or more segments.
    let r = s.forwarded("/files/a/b/c.txt", &s.first).await;
    assert_eq!(target(&r), pair("/files/a/b/c.txt", None));
    s.first.clear();
    let (status, _, _) = s.call(Method::GET, "/files/").await;
    assert_eq!(status, 404);
    let (status, _, _) = s.call(Method::GET, "/tenants/acme/apix").await;
    assert_eq!(status, 404);
    assert_eq!(s.first.request_count(), 0);
}

#[tokio::test]
async fn set_query_parameter_applies_each_exists_action_and_keeps_the_rest() {
    let s = Setup::start().await;
    let r = s
        .forwarded("/q?a=1&b=2&a=3&e=x&keep=%7e+1&e=y", &s.first)
        .await;
    assert_eq!(
        target(&r),
        pair("/q", Some("a=new%20val&b=2&keep=%7e+1&c=added&d=1&d=2%263"))
    );
    // Without a query at all: override, skip and append add theirs, delete has nothing to do.
    let r = s.forwarded("/q", &s.first).await;
    assert_eq!(
        target(&r),
        pair("/q", Some("a=new%20val&b=ignored&c=added&d=1&d=2%263"))
    );
}

#[tokio::test]
async fn set_backend_service_sends_the_request_to_another_backend_under_its_base_path() {
    let s = Setup::start().await;
    // backend-id: the `backends:` entry's base path before the (stripped) path; query kept.
    let r = s.forwarded("/old/x/y?q=1", &s.second).await;
    assert_eq!(target(&r), pair("/legacy/x/y", Some("q=1")));
    assert_eq!(r.method, "GET");
    let r = s.forwarded("/old", &s.second).await;
    assert_eq!(target(&r), pair("/legacy/", None));
    // base-url, with a rewrite-uri after it: the rewritten path under the base path.
    let r = s.forwarded("/b/42?drop=1", &s.second).await;
    assert_eq!(target(&r), pair("/base/r/42", None));
}

#[tokio::test]
async fn mock_response_answers_from_the_openapi_example_without_the_backend() {
    let s = Setup::start().await;
    s.first.clear();
    let (status, ct, body) = s.call(Method::GET, "/mock/7").await;
    assert_eq!(status, 200);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(body, r#"{"id":7,"lines":[{"sku":"a b"}]}"#);
    // A string example of `examples`, as is.
    let (status, ct, body) = s.call(Method::GET, "/mock-text").await;
    assert_eq!((status, ct.as_deref()), (200, Some("text/plain")));
    assert_eq!(body, "order 7");
    // The schema's example.
    let (status, _, body) = s.call(Method::GET, "/mock-404").await;
    assert_eq!(status, 404);
    assert_eq!(body, r#"{"error":"missing"}"#);
    // No example for that status and type: an empty body with the status and type asked for.
    let (status, ct, body) = s.call(Method::GET, "/mock-none").await;
    assert_eq!((status, ct.as_deref()), (201, Some("application/xml")));
    assert_eq!(body, "");
    assert_eq!(
        s.first.request_count(),
        0,
        "a mocked request reached the backend"
    );
    assert_eq!(s.second.request_count(), 0);
    let metrics = s.gateway.metrics().await;
    assert!(
        metrics.contains(r#"{reason="MockResponse",route="mock",status="200"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_parameter_cannot_climb_out_of_the_rewrite() {
    let s = Setup::start().await;
    s.first.clear();
    // Captures are canonical segments: an encoded `..` is resolved before matching, so it never
    // reaches the rewrite as a parameter (here the path no longer matches the template).
    let (status, _, _) = s.call(Method::GET, "/orders/%2e%2e/lines/1").await;
    assert_eq!(status, 404);
    let (status, _, body) = s.call(Method::GET, "/orders/..%2f..%2fadmin").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(s.first.request_count(), 0);
}

#[tokio::test]
async fn sources_in_rewrites_and_query_values_are_encoded_and_a_climbing_value_is_refused() {
    let s = Setup::start().await;
    // A `${...}` source is one percent-encoded path segment / query value.
    let r = s
        .forwarded_with("/src/7?seg=v%202&z=1", &[("X-User", "a b&c=d")], &s.first)
        .await;
    assert_eq!(
        target(&r),
        pair("/v%202/7", Some("who=a%20b%26c%3Dd&seg=v%202&z=1"))
    );
    let r = s.forwarded("/src/7?seg=ok", &s.first).await;
    assert_eq!(target(&r), pair("/ok/7", Some("who=anon&seg=ok")));
    // A value that climbs above the root, or that holds a slash, is answered 400 and never
    // forwarded.
    s.first.clear();
    for bad in [
        "/src/7?seg=..",
        "/src/7?seg=%2e%2e",
        "/src/7?seg=a%2F..%2F..",
        "/src/7?seg=a/b",
    ] {
        let (status, ct, body) = s.call(Method::GET, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert!(
            body.contains("The rewritten request target is not a valid path."),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        s.first.request_count(),
        0,
        "a refused rewrite was forwarded"
    );
    let metrics = s.gateway.metrics().await;
    assert!(
        metrics.contains(r#"{reason="InvalidRewrite",route="src",status="400"} 4"#),
        "{metrics}"
    );
    // set-query-parameter with a source: encoded, appended after the rest.
    let r = s
        .forwarded_with("/qs?who=x&k", &[("X-User", "b&c")], &s.first)
        .await;
    assert_eq!(target(&r), pair("/qs", Some("who=x&k&who=b%26c")));
    let r = s.forwarded("/qs", &s.first).await;
    assert_eq!(target(&r), pair("/qs", Some("who=anon")));
}
