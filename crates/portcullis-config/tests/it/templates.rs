//! URL templates in routes, `backends:`, and the statements of issue 15 that shape the request
//! (`set-query-parameter`, `rewrite-uri`, `set-backend-service`, `mock-response`, route key
//! `openapi:`): what a valid file becomes, and every mistake reported at its `line:col`.

use std::path::Path;

use portcullis_config::{Diagnostic, Model, Piece, Severity, Statement};
use portcullis_route::query::QueryEdit;

fn load(yaml: &str) -> Result<(Model, Vec<Diagnostic>), Vec<Diagnostic>> {
    let text = format!("server:\n  listen: \"127.0.0.1:8080\"\n{yaml}");
    portcullis_config::load_str_with(&text, Path::new("t.yaml"), &|_| None)
}

/// The errors as `line:col: message` (the server block is lines 1-2).
fn errors(yaml: &str) -> Vec<String> {
    let diags = load(yaml).expect_err("the config should be refused");
    diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect()
}

fn has(errors: &[String], at: &str, text: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(at) && e.contains(text)),
        "no `{at} ...{text}...` in {errors:#?}"
    );
}

#[test]
fn templates_are_parsed_and_checked_with_positions() {
    let ok = r#"routes:
  - { name: a, match: { path: "/orders/{id}/lines/{line}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: b, match: { path-prefix: "/tenants/{tenant}/api" }, strip-prefix: true, upstream: "http://127.0.0.1:1", policy: none }
  - { name: c, match: { path: "/files/{*rest}" }, upstream: "http://127.0.0.1:1", policy: none }
"#;
    let (m, w) = load(ok).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let names = |i: usize| -> Vec<String> {
        m.routes[i]
            .matcher
            .template
            .as_ref()
            .unwrap()
            .names()
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(names(0), ["id", "line"]);
    assert_eq!(names(1), ["tenant"]);
    assert_eq!(names(2), ["rest"]);

    let bad = r#"routes:
  - { name: a, match: { path: "/orders/x{id}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: b, match: { path: "/o/{id}/{id}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: c, match: { path-prefix: "/o/{*rest}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: d, match: { path: "/o/{1x}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: e, match: { path: "/p/{id}/../x" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: f, match: { path: "/q/{id}", path-prefix: /q }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: g, match: { path-prefix: /r }, rewrite-prefix: "/v/{id}", upstream: "http://127.0.0.1:1", policy: none }
"#;
    let e = errors(bad);
    has(&e, "4:31:", "whole path segment");
    has(&e, "5:31:", "parameter `id` appears twice");
    has(&e, "6:38:", "`{*rest}` matches the rest of the path");
    has(&e, "7:31:", "`1x` is not a parameter name");
    has(&e, "8:31:", "not in canonical form");
    has(&e, "9:31:", "not with both");
    has(&e, "10:60:", "`rewrite-prefix` is a literal path");
}

#[test]
fn a_template_that_comes_first_shadows_a_literal_route() {
    let yaml = r#"routes:
  - { name: any-order, match: { path: "/orders/{id}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: special, match: { path: /orders/special }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: lines, match: { path: "/orders/{id}/lines" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: tenant, match: { path-prefix: "/t/{t}" }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: tenant-x, match: { path: "/t/a/{x}" }, upstream: "http://127.0.0.1:1", policy: none }
"#;
    let e = errors(yaml);
    assert_eq!(e.len(), 2, "{e:#?}");
    has(
        &e,
        "5:13:",
        "route `special` can never match: route `any-order` (line 4)",
    );
    has(
        &e,
        "8:13:",
        "route `tenant-x` can never match: route `tenant` (line 7)",
    );
}

const STATEMENTS: &str = r#"backends:
  legacy: { url: "http://127.0.0.1:3001/legacy/", timeout: 7s }
policies:
  p:
    inbound:
      - set-query-parameter: { name: api-version, exists-action: skip, value: "2024-01-01" }
      - set-query-parameter: { name: debug, exists-action: delete }
      - set-query-parameter: { name: tag, exists-action: append, values: [a, b] }
      - rewrite-uri: { template: "/v2/orders/{id}?expand=lines", copy-unmatched-params: false }
      - set-backend-service: { backend-id: legacy }
      - set-backend-service: { base-url: "http://127.0.0.1:3002/base" }
      - set-backend-service: { base-url: "http://127.0.0.1:3002/base" }
      - mock-response: { status-code: 201 }
routes:
  - { name: r, match: { path: "/orders/{id}" }, upstream: "http://127.0.0.1:1", policy: p }
"#;

#[test]
fn statements_become_the_model() {
    let (m, w) = load(STATEMENTS).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(m.backends.len(), 2, "the same base-url is one backend");
    assert_eq!(m.backends[0].name, "legacy");
    assert_eq!(m.backends[0].base_path, "/legacy");
    assert_eq!(
        m.backends[0].timeout,
        Some(std::time::Duration::from_secs(7))
    );
    assert_eq!(m.backends[1].base_path, "/base");
    assert_eq!(m.backends[1].upstream.port, 3002);
    let s = &m.policies[0].inbound;
    let Statement::SetQueryParameter(q) = &s[0] else {
        panic!("{s:?}")
    };
    assert_eq!(
        (q.name.as_str(), q.exists_action, q.values.clone()),
        (
            "api-version",
            QueryEdit::Skip,
            vec![portcullis_config::Value::literal("2024-01-01")]
        )
    );
    let Statement::RewriteUri(r) = &s[3] else {
        panic!("{s:?}")
    };
    assert_eq!(
        r.path,
        [Piece::Text("/v2/orders/".into()), Piece::Param("id".into())]
    );
    assert_eq!(r.named, ["expand"]);
    assert!(!r.copy_unmatched_params);
    assert!(matches!(&s[4], Statement::SetBackendService(id) if id.index() == 0));
    assert!(matches!(&s[5], Statement::SetBackendService(id) if id.index() == 1));
    assert!(matches!(&s[6], Statement::SetBackendService(id) if id.index() == 1));
    assert!(
        matches!(&s[7], Statement::MockResponse(mr) if mr.status_code == 201 && mr.content_type == "application/json")
    );
}

#[test]
fn statement_mistakes_are_reported_where_they_are() {
    let yaml = r#"backends:
  legacy: { url: "http://127.0.0.1:3001/legacy?x=1" }
  other: { timeout: 5s }
policies:
  p:
    inbound:
      - set-query-parameter: { name: a, exists-action: delete, value: x }
      - set-query-parameter: { name: a, exists-action: replace, value: x }
      - set-query-parameter: { name: a }
      - rewrite-uri: { template: "v2/{id}" }
      - rewrite-uri: { template: "/v2/{id" }
      - rewrite-uri: { template: "/v2/../../x" }
      - set-backend-service: { backend-id: legacyy }
      - set-backend-service: { base-url: "http://h", backend-id: other }
      - mock-response: { status-code: 700 }
      - mock-response: {}
      - set-query-parameter: { name: z, value: "1" }
routes:
  - { name: r, match: { path: /x }, upstream: "http://127.0.0.1:1", policy: p }
"#;
    let e = errors(yaml);
    has(&e, "4:18:", "no query or credentials");
    has(&e, "5:10:", "backend `other` needs `url`");
    has(&e, "9:71:", "`delete` takes no value");
    has(&e, "10:56:", "`exists-action` must be");
    has(&e, "11:30:", "needs `value`");
    has(&e, "12:34:", "a path starting with `/`");
    has(&e, "13:34:", "unclosed `{`");
    has(&e, "14:34:", "would be refused (PathTraversal)");
    has(&e, "15:44:", "unknown backend `legacyy`");
    has(&e, "16:30:", "exactly one of `base-url` and `backend-id`");
    has(&e, "17:39:", "`status-code`");
    has(
        &e,
        "18:9:",
        "is never reached: the mock-response at line 17",
    );
}

#[test]
fn a_parameter_the_route_does_not_capture_is_warned_about() {
    let yaml = r#"policies:
  p:
    inbound:
      - rewrite-uri: { template: "/v2/{id}/{line}" }
routes:
  - { name: a, match: { path: "/o/{id}/{line}" }, upstream: "http://127.0.0.1:1", policy: p }
  - { name: b, match: { path: "/p/{id}" }, upstream: "http://127.0.0.1:1", policy: p }
"#;
    let (_, w) = load(yaml).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].line, w[0].severity), (9, Severity::Warning));
    assert!(w[0].message.contains("`line`"), "{w:?}");
}

#[test]
fn openapi_examples_are_read_at_load_and_mistakes_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("v2.json"),
        r#"{"swagger":"2.0","paths":{"/o":{"get":{"operationId":"getO","responses":{"200":{"description":"ok","examples":{"application/json":{"a":[1, 2]},"text/plain":"hi"}}}}}}}"#,
    )
    .unwrap();
    let text = |op: &str, file: &str| {
        format!("server:\n  listen: \"127.0.0.1:8080\"\nroutes:\n  - name: r\n    match: {{ path: /o }}\n    openapi: {{ spec: {file}, operation: {op} }}\n    upstream: \"http://127.0.0.1:1\"\n    policy: none\n")
    };
    let path = dir.path().join("g.yaml");
    let (m, _) = portcullis_config::load_str(&text("getO", "v2.json"), &path).unwrap();
    let ex = m.routes[0].openapi.as_ref().unwrap();
    assert_eq!(ex.find(200, "application/json"), Some(r#"{"a":[1,2]}"#));
    assert_eq!(ex.find(200, "text/plain"), Some("hi"));
    let e = portcullis_config::load_str(&text("nope", "v2.json"), &path).unwrap_err();
    assert!(
        e.iter()
            .any(|d| d.line == 6 && d.message.contains("no operation with operationId `nope`")),
        "{e:?}"
    );
    let e = portcullis_config::load_str(&text("getO", "absent.yaml"), &path).unwrap_err();
    assert!(
        e.iter()
            .any(|d| d.line == 6 && d.message.contains("cannot read OpenAPI document")),
        "{e:?}"
    );
}

#[test]
fn sources_in_templates_and_query_values_follow_the_order_rules() {
    let yaml = r#"policies:
  p:
    inbound:
      - rewrite-uri: { template: "/v2/${var:tenant}/{id}" }
      - set-query-parameter: { name: sub, value: "${claim:sub}" }
      - set-variable: { name: tenant, value: "${header:X-Tenant|public}" }
      - rewrite-uri: { template: "/v2/${var:tenant}/{id}?t=${query:t|x}" }
      - set-query-parameter: { name: t, value: "${var:tenant}" }
      - rewrite-uri: { template: "/v2/${nope:x}" }
routes:
  - { name: r, match: { path: "/o/{id}" }, upstream: "http://127.0.0.1:1", policy: p }
"#;
    let e = errors(yaml);
    assert_eq!(e.len(), 3, "{e:#?}");
    has(
        &e,
        "6:34:",
        "reads variable `tenant` before any set-variable",
    );
    has(&e, "7:50:", "reads claim `sub` before validate-jwt");
    has(&e, "11:34:", "nope");
}
