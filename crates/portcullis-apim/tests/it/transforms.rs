//! The issue-15 statements (set-header in and out, set-query-parameter, rewrite-uri,
//! set-backend-service, return-response, mock-response, set-variable, choose): each realistic corpus
//! document 24-33 is converted, its summary checked against the one its header comment promises, and
//! the emitted policy (parsed back from the YAML, comments aside) compared with what APIM does,
//! statement by statement and in order. What each expectation encodes is in the XML's comment.

use serde_json::{json, Value};

use crate::corpus;

/// The converted policy (the only one in these documents), parsed back from the YAML.
fn policy(conv: &portcullis_apim::Conversion, name: &str) -> Value {
    let value: Value = serde_saphyr::from_str(&conv.yaml)
        .unwrap_or_else(|e| panic!("{name}: emitted YAML does not parse: {e}\n{}", conv.yaml));
    let policies = value["policies"].as_object().expect("policies");
    assert_eq!(policies.len(), 1, "{name}: {policies:?}");
    let (pname, policy) = policies.iter().next().unwrap();
    assert_eq!(value["routes"][0]["policy"], json!(pname), "{name}");
    policy.clone()
}

/// The summary promised in the document's header comment (`Expected: ... .`).
fn expected_summary(name: &str) -> String {
    let xml = corpus::read(name);
    let start = xml
        .find("Expected: ")
        .unwrap_or_else(|| panic!("{name}: no Expected:"))
        + 10;
    let end = start + xml[start..].find(". -->").unwrap();
    xml[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Convert `name`, check its summary (and the exit status it implies) and its statements.
fn check(name: &str, want: Value) {
    let conv = corpus::convert(name);
    let summary = conv.summary.to_string();
    assert_eq!(summary, expected_summary(name), "{}", conv.stderr(name));
    assert_eq!(
        conv.is_complete(),
        conv.summary.dropped.is_empty() && conv.summary.incomplete.is_empty(),
        "{name}: exit status and summary disagree\n{}",
        conv.stderr(name)
    );
    assert!(
        conv.stderr(name).ends_with(&format!("{name}: {summary}\n")),
        "{}",
        conv.stderr(name)
    );
    let got = policy(&conv, name);
    assert_eq!(
        got,
        want,
        "{name}:\n got {}\nwant {}",
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap()
    );
}

#[test]
fn the_corpus_has_ten_realistic_documents() {
    let docs: Vec<String> = corpus::documents()
        .into_iter()
        .filter(|n| n.as_str() >= "24" && n.as_str() < "34")
        .collect();
    assert_eq!(docs.len(), 10, "{docs:?}");
    for d in docs {
        let xml = corpus::read(&d);
        assert!(xml.starts_with("<!-- "), "{d}: not commented at the top");
        expected_summary(&d);
    }
}

#[test]
fn backend_ids_become_backends_to_fill_in() {
    for (name, id) in [
        ("24-bff-legacy.xml", "legacy-crm"),
        ("29-multi-tenant-routing.xml", "fabrikam-pool"),
    ] {
        let conv = corpus::convert(name);
        let value: Value = serde_saphyr::from_str(&conv.yaml).unwrap();
        assert_eq!(
            value["backends"],
            json!({ id: { "url": "http://127.0.0.1:3000" } }),
            "{}",
            conv.yaml
        );
        assert!(
            conv.yaml.contains(&format!("# APIM backend \"{id}\"")),
            "{}",
            conv.yaml
        );
    }
}

#[test]
fn url_template_parameters_are_pointed_out_on_the_route() {
    let conv = corpus::convert("25-versioned-rewrite.xml");
    assert!(
        conv.yaml
            .contains("# The policy reads the URL-template parameters {orderId}: give the route a template path"),
        "{}",
        conv.yaml
    );
}

#[test]
fn bff_legacy() {
    check(
        "24-bff-legacy.xml",
        json!({
            "forward-claims": {"X-User-Id": "sub"},
            "inbound": [
                {"validate-jwt": {"audiences": ["crm-bff"], "failed-validation-error-message": "Unauthorized", "failed-validation-httpcode": 401, "header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}]}},
                {"set-header": {"exists-action": "delete", "name": "Cookie"}},
                {"set-header": {"exists-action": "override", "name": "X-Legacy-Client", "value": "crm-bff"}},
                {"set-header": {"exists-action": "skip", "name": "X-Correlation-Id", "value": "${header:X-Request-Id}"}},
                {"set-query-parameter": {"exists-action": "override", "name": "format", "value": "json"}},
                {"set-backend-service": {"backend-id": "legacy-crm"}},
                {"rewrite-uri": {"copy-unmatched-params": true, "template": "/crm/api/v1/customers/{customerId}"}}
            ],
            "outbound": [
                {"set-header": {"exists-action": "delete", "name": "X-Powered-By"}},
                {"set-header": {"exists-action": "delete", "name": "X-AspNet-Version"}},
                {"set-header": {"exists-action": "delete", "name": "Server"}},
                {"set-header": {"exists-action": "override", "name": "Cache-Control", "value": "no-store"}}
            ]
        }),
    );
}

#[test]
fn versioned_rewrite() {
    check(
        "25-versioned-rewrite.xml",
        json!({
            "inbound": [
                {"set-variable": {"name": "apiVersion", "value": "${header:Api-Version|2023-01-01}"}},
                {"choose": [{"steps": [{"rewrite-uri": {"template": "/v3/orders/{orderId}"}}], "when": {"header": {"equals": "2024-05-01", "name": "Api-Version"}}}, {"otherwise": [{"rewrite-uri": {"copy-unmatched-params": false, "template": "/v2/orders/{orderId}"}}]}]},
                {"set-query-parameter": {"exists-action": "override", "name": "api-version", "value": "${var:apiVersion}"}},
                {"set-header": {"exists-action": "delete", "name": "Api-Version"}},
                {"set-header": {"exists-action": "override", "name": "X-Forwarded-Path", "value": "${path}"}}
            ],
            "outbound": [
                {"set-header": {"exists-action": "override", "name": "Api-Supported-Versions", "values": ["2023-01-01", "2024-05-01"]}},
                {"set-header": {"exists-action": "override", "name": "X-Served-Version", "value": "${var:apiVersion}"}}
            ]
        }),
    );
}

#[test]
fn mocked_operation() {
    check(
        "26-mocked-operation.xml",
        json!({
            "inbound": [
                {"cors": {"allow-credentials": false, "allowed-methods": ["GET"], "allowed-origins": ["http://localhost:5173"]}},
                {"mock-response": {"content-type": "application/json", "status-code": 200}}
            ],
            "outbound": [
                {"set-header": {"exists-action": "override", "name": "X-Mocked", "value": "true"}}
            ]
        }),
    );
}

#[test]
fn internal_admin() {
    check(
        "27-internal-admin.xml",
        json!({
            "forward-claims": {"X-Admin-Oid": "oid"},
            "inbound": [
                {"ip-filter": {"action": "allow", "address-ranges": [{"from": "10.8.0.0", "to": "10.8.255.255"}, {"from": "fd00::", "to": "fd00::ffff"}], "addresses": ["10.20.0.10"]}},
                {"check-header": {"failed-check-error-message": "Not an admin client", "failed-check-httpcode": 403, "ignore-case": false, "name": "X-Admin-Client", "values": ["ops-console"]}},
                {"validate-azure-ad-token": {"audiences": ["api://admin"], "tenant-id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}},
                {"choose": [{"steps": [{"return-response": {"body": "{\"error\":\"write access denied for ${client-ip}\"}", "headers": {"Content-Type": "application/json"}, "reason": "Forbidden", "status": 403}}], "when": {"all": [{"not": {"method": "GET"}}, {"not": {"claim": {"contains": "Admin.Write", "name": "roles"}}}]}}]},
                {"set-backend-service": {"base-url": "http://127.0.0.1:3001/admin"}}
            ]
        }),
    );
}

#[test]
fn spa_cors_jwt_ratelimit() {
    check(
        "28-spa-cors-jwt-ratelimit.xml",
        json!({
            "forward-claims": {"X-User-Id": "sub"},
            "inbound": [
                {"cors": {"allow-credentials": true, "allowed-headers": ["Authorization", "Content-Type"], "allowed-methods": ["GET", "POST"], "allowed-origins": ["https://app.contoso.example"], "preflight-result-max-age": 600}},
                {"rate-limit-by-key": {"calls": 300, "counter-key": "client-ip", "renewal-period": 60}},
                {"validate-jwt": {"failed-validation-httpcode": 401, "header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}], "require-scheme": "Bearer"}},
                {"rate-limit-by-key": {"calls": 30, "counter-key": {"claim": "sub"}, "renewal-period": 60}},
                {"set-header": {"exists-action": "override", "name": "X-Calling-App", "value": "spa/${claim:azp|unknown}"}}
            ],
            "outbound": [
                {"set-header": {"exists-action": "override", "name": "Strict-Transport-Security", "value": "max-age=31536000; includeSubDomains"}},
                {"set-header": {"exists-action": "override", "name": "X-Content-Type-Options", "value": "nosniff"}},
                {"set-header": {"exists-action": "delete", "name": "Server"}},
                {"set-header": {"exists-action": "append", "name": "Vary", "value": "Origin"}}
            ]
        }),
    );
}

#[test]
fn multi_tenant_routing() {
    check(
        "29-multi-tenant-routing.xml",
        json!({
            "inbound": [
                {"set-variable": {"name": "tenant", "value": "${header:X-Tenant-Id|shared}"}},
                {"choose": [{"steps": [{"set-backend-service": {"base-url": "http://127.0.0.1:3101/contoso"}}], "when": {"variable": {"equals": "contoso", "name": "tenant"}}}, {"steps": [{"set-backend-service": {"backend-id": "fabrikam-pool"}}, {"set-header": {"exists-action": "override", "name": "X-Dedicated", "value": "true"}}], "when": {"variable": {"equals": "fabrikam", "name": "tenant"}}}, {"steps": [{"set-backend-service": {"base-url": "http://127.0.0.1:3100"}}], "when": {"variable": {"equals": "shared", "name": "tenant"}}}, {"otherwise": [{"return-response": {"body": "unknown tenant ${var:tenant}", "headers": {"Content-Type": "text/plain"}, "reason": "Bad Request", "status": 400}}]}]},
                {"set-header": {"exists-action": "override", "name": "X-Tenant", "value": "${var:tenant}"}},
                {"set-header": {"exists-action": "delete", "name": "X-Tenant-Id"}}
            ]
        }),
    );
}

#[test]
fn response_hygiene() {
    check(
        "30-response-hygiene.xml",
        json!({
            "outbound": [
                {"set-header": {"exists-action": "delete", "name": "X-Powered-By"}},
                {"set-header": {"exists-action": "delete", "name": "X-AspNet-Version"}},
                {"choose": [{"steps": [{"set-header": {"exists-action": "override", "name": "Cache-Control", "value": "no-store"}}], "when": {"status": (500..600).collect::<Vec<u16>>()}}, {"steps": [{"set-header": {"exists-action": "skip", "name": "Cache-Control", "value": "public, max-age=60"}}], "when": {"all": [{"status": [200]}, {"method": "GET"}]}}]},
                {"set-header": {"exists-action": "skip", "name": "X-Request-Id", "value": "${header:X-Request-Id}"}},
                {"set-header": {"exists-action": "append", "name": "Vary", "value": "Accept-Encoding"}}
            ]
        }),
    );
}

#[test]
fn maintenance_window() {
    check(
        "31-maintenance-window.xml",
        json!({
            "inbound": [
                {"choose": [{"steps": [{"set-header": {"exists-action": "override", "name": "X-Maintenance-Bypass", "value": "granted"}}], "when": {"header": {"equals": "{{maintenance-bypass-key}}", "name": "X-Maintenance-Bypass"}}}, {"otherwise": [{"return-response": {"body": "{\"statusCode\": 503, \"message\": \"Down for maintenance until 06:00 UTC\"}", "headers": {"Content-Type": "application/json", "Retry-After": "3600"}, "reason": "Service Unavailable", "status": 503}}]}]}
            ]
        }),
    );
}

#[test]
fn debug_headers() {
    check(
        "32-debug-headers.xml",
        json!({
            "inbound": [
                {"choose": [{"steps": [{"set-header": {"exists-action": "override", "name": "X-Debug-Client-Ip", "value": "${client-ip}"}}, {"set-header": {"exists-action": "override", "name": "X-Debug-Request", "value": "${method} ${path} on ${host}"}}], "when": {"all": [{"header-present": "X-Debug"}, {"query": {"equals": "1", "name": "debug"}}]}}]},
                {"set-query-parameter": {"exists-action": "delete", "name": "debug"}}
            ],
            "outbound": [
                {"choose": [{"steps": [{"set-header": {"exists-action": "override", "name": "X-Traced", "value": "yes"}}], "when": {"all": [{"status": [200, 201]}, {"header-present": "X-Debug"}]}}]},
                {"set-header": {"exists-action": "delete", "name": "X-Debug-Echo"}}
            ]
        }),
    );
}

#[test]
fn partner_api_unsupported() {
    check(
        "33-partner-api-unsupported.xml",
        json!({
            "inbound": [
                {"validate-jwt": {"header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}]}},
                {"set-header": {"exists-action": "override", "name": "X-Partner-Order", "value": "order-${param:orderId}"}},
                {"rewrite-uri": {"template": "/partners/${claim:partner_id}/orders/{orderId}"}}
            ]
        }),
    );
}
