//! The issue-15 statements (set-header in and out, set-query-parameter, rewrite-uri,
//! set-backend-service, return-response, mock-response, set-variable, choose): each realistic corpus
//! document 25-34 is converted, its summary checked against the one its header comment promises, and
//! the emitted policy (parsed back from the YAML, comments aside) compared with what APIM does,
//! statement by statement and in order. What each expectation encodes is in the XML's comment.

use serde_json::{json, Value};

use crate::corpus;

/// The converted policy (the only one in these documents besides the refusing `NAME-refused`,
/// which the route then uses), parsed back from the YAML.
fn policy(conv: &portcullis_apim::Conversion, name: &str) -> Value {
    let value: Value = serde_saphyr::from_str(&conv.yaml)
        .unwrap_or_else(|e| panic!("{name}: emitted YAML does not parse: {e}\n{}", conv.yaml));
    let mut policies = value["policies"].as_object().expect("policies").clone();
    let refusing = policies.keys().find(|k| k.ends_with("-refused")).cloned();
    if let Some(r) = &refusing {
        policies.remove(r);
    }
    assert_eq!(policies.len(), 1, "{name}: {policies:?}");
    let (pname, policy) = policies.iter().next().unwrap();
    let routed = refusing.as_ref().unwrap_or(pname);
    assert_eq!(value["routes"][0]["policy"], json!(routed), "{name}");
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
        .filter(|n| n.as_str() >= "25" && n.as_str() < "35")
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
        ("25-bff-legacy.xml", "legacy-crm"),
        ("30-multi-tenant-routing.xml", "fabrikam-pool"),
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
    let conv = corpus::convert("26-versioned-rewrite.xml");
    let hint = "# The policy reads the URL-template parameters {orderId}: give the route the operation's URL template (for example match: { path: /items/{orderId} }";
    assert!(conv.yaml.contains(hint), "{}", conv.yaml);
    // a route given with the operation's template matches the whole path and needs no hint
    let xml = corpus::read("26-versioned-rewrite.xml");
    let routes = [
        "order=/orders/{orderId}=http://127.0.0.1:3001"
            .parse()
            .unwrap(),
        "all=/api=http://127.0.0.1:3002".parse().unwrap(),
    ];
    let conv = portcullis_apim::convert(&xml, "26-versioned-rewrite.xml", &routes).unwrap();
    let value: Value = serde_saphyr::from_str(&conv.yaml).unwrap();
    assert_eq!(
        value["routes"][0]["match"],
        json!({"path": "/orders/{orderId}"})
    );
    assert_eq!(value["routes"][1]["match"], json!({"path-prefix": "/api"}));
    assert_eq!(
        conv.yaml.matches("# The policy reads").count(),
        1,
        "{}",
        conv.yaml
    );
    let text = conv.yaml;
    let order = text.find("- name: \"order\"").unwrap();
    let hint_at = text.find("# The policy reads").unwrap();
    let all = text.find("- name: \"all\"").unwrap();
    assert!(
        order < hint_at && hint_at < all,
        "the hint is on the prefix route\n{text}"
    );
    portcullis_config::load_str(&text, std::path::Path::new("r.yaml"))
        .unwrap_or_else(|d| panic!("{d:?}\n{text}"));
}

#[test]
fn bff_legacy() {
    check(
        "25-bff-legacy.xml",
        json!({
            "forward-claims": {"X-User-Id": "sub"},
            "inbound": [
                {"validate-jwt": {"audiences": ["crm-bff"], "failed-validation-error-message": "Unauthorized", "failed-validation-httpcode": 401, "header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}], "try-all-signing-keys": true}},
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
        "26-versioned-rewrite.xml",
        json!({
            "inbound": [
                {"set-variable": {"name": "apiVersion", "value": "${header:Api-Version|2023-01-01}"}},
                {"choose": [{"steps": [{"rewrite-uri": {"template": "/v3/orders/{orderId}"}}], "when": {"header": {"equals": "2024-05-01", "name": "Api-Version"}}}, {"otherwise": [{"rewrite-uri": {"copy-unmatched-params": false, "template": "/v2/orders/{orderId}"}}]}]},
                {"set-query-parameter": {"exists-action": "override", "name": "api-version", "value": "${var:apiVersion}"}},
                {"set-header": {"exists-action": "delete", "name": "Api-Version"}},
                {"set-header": {"exists-action": "override", "name": "X-Requested-Path", "value": "${path}"}}
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
        "27-mocked-operation.xml",
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
        "28-internal-admin.xml",
        json!({
            "forward-claims": {"X-Admin-Oid": "oid"},
            "inbound": [
                {"ip-filter": {"action": "allow", "address-ranges": [{"from": "10.8.0.0", "to": "10.8.255.255"}, {"from": "fd00::", "to": "fd00::ffff"}], "addresses": ["10.20.0.10"]}},
                {"check-header": {"failed-check-error-message": "Not an admin client", "failed-check-httpcode": 403, "ignore-case": false, "name": "X-Admin-Client", "values": ["ops-console"]}},
                {"validate-azure-ad-token": {"audiences": ["api://admin"], "tenant-id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "try-all-signing-keys": true}},
                {"choose": [{"steps": [{"return-response": {"body": "{\"error\":\"write access denied for ${client-ip}\"}", "headers": {"Content-Type": "application/json"}, "reason": "Forbidden", "status": 403}}], "when": {"all": [{"not": {"method": "GET"}}, {"not": {"claim": {"contains": "Admin.Write", "name": "roles"}}}]}}]},
                {"set-backend-service": {"base-url": "http://127.0.0.1:3001/admin"}}
            ]
        }),
    );
}

#[test]
fn spa_cors_jwt_ratelimit() {
    check(
        "29-spa-cors-jwt-ratelimit.xml",
        json!({
            "forward-claims": {"X-User-Id": "sub"},
            "inbound": [
                {"cors": {"allow-credentials": true, "allowed-headers": ["Authorization", "Content-Type"], "allowed-methods": ["GET", "POST"], "allowed-origins": ["https://app.contoso.example"], "preflight-result-max-age": 600}},
                {"rate-limit-by-key": {"calls": 300, "counter-key": "client-ip", "renewal-period": 60}},
                {"validate-jwt": {"failed-validation-httpcode": 401, "header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}], "require-scheme": "Bearer", "try-all-signing-keys": true}},
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
        "30-multi-tenant-routing.xml",
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
        "31-response-hygiene.xml",
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
        "32-maintenance-window.xml",
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
        "33-debug-headers.xml",
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
    // the choose answering without the backend is left out: the route refuses every request
    let conv = corpus::convert("34-partner-api-unsupported.xml");
    assert!(conv
        .yaml
        .contains("    policy: \"34-partner-api-unsupported-refused\""));
    check(
        "34-partner-api-unsupported.xml",
        json!({
            "inbound": [
                {"validate-jwt": {"header-name": "Authorization", "issuer-signing-keys": [{"base64": "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg="}], "try-all-signing-keys": true}},
                {"rate-limit-by-key": {"calls": 100, "renewal-period": 60, "counter-key": "subscription"}},
                // X-Timestamp is left out: the client's own copy is removed in its place
                {"set-header": {"exists-action": "delete", "name": "X-Timestamp"}},
                {"set-header": {"exists-action": "override", "name": "X-Partner-Order", "value": "order-${param:orderId}"}},
                {"rewrite-uri": {"template": "/partners/${claim:partner_id}/orders/{orderId}"}}
            ]
        }),
    );
}

/// Convert an inline document (named `p.xml`).
fn inline(xml: &str) -> (portcullis_apim::Conversion, Value) {
    let conv = portcullis_apim::convert(xml, "p.xml", &[]).unwrap();
    let value: Value = serde_saphyr::from_str(&conv.yaml).unwrap();
    (conv, value)
}

/// The conversion makes the routes refuse every request: its report says `why` and the route
/// uses the policy `p-refused`.
#[track_caller]
fn assert_refuses_every_request(conv: &portcullis_apim::Conversion, v: &Value, why: &str) {
    let report = conv.stderr("p.xml");
    assert!(report.contains(why), "{report}");
    assert_eq!(
        v["routes"][0]["policy"],
        json!("p-refused"),
        "{report}\n{}",
        conv.yaml
    );
}

const KEY: &str = "<issuer-signing-keys><key>/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg=</key></issuer-signing-keys>";

#[test]
fn literal_dollar_braces_are_escaped_and_named_values_pass_through() {
    let (conv, v) =
        inline("<set-header name=\"X-T\"><value>cost ${price} {{tier}}</value></set-header>");
    assert!(conv.is_complete(), "{}", conv.stderr("p.xml"));
    assert_eq!(
        v["policies"]["p"]["inbound"][0]["set-header"]["value"],
        json!("cost $${price} {{tier}}")
    );
}

#[test]
fn a_header_forwarded_from_a_claim_is_not_set_by_another_statement() {
    let (conv, v) = inline(&format!(
        "<policies><inbound>\n<validate-jwt header-name=\"Authorization\" output-token-variable-name=\"jwt\">{KEY}</validate-jwt>\n<set-header name=\"X-User\" exists-action=\"delete\" />\n<set-header name=\"X-User\"><value>@(((Jwt)context.Variables[\"jwt\"]).Subject)</value></set-header>\n<set-header name=\"x-user\"><value>spoofed</value></set-header>\n</inbound></policies>"
    ));
    let p = &v["policies"]["p"];
    assert_eq!(p["forward-claims"], json!({"X-User": "sub"}));
    assert_eq!(p.get("inbound"), None, "{}", conv.yaml);
    let err = conv.stderr("p.xml");
    assert!(
        err.contains("p.xml:3:1: note set-header: left out: forward-claims (line 4) removes the client's X-User itself"),
        "{err}"
    );
    assert!(
        err.contains(
            "p.xml:5:1: unsupported set-header: left out: x-user carries a verified claim"
        ),
        "{err}"
    );
    assert_eq!(
        conv.summary.to_string(),
        "converted 3/4 statements; dropped: line 5 <set-header>"
    );
}

#[test]
fn claim_reads_go_after_the_token_check_or_are_left_out() {
    // read before validate-jwt: moved after it (APIM would read the unverified token)
    let (conv, v) = inline(&format!(
        "<policies><inbound>\n<set-header name=\"X-Tenant\"><value>@(\"t-\" + context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Claims.GetValueOrDefault(\"tid\", \"\"))</value></set-header>\n<validate-jwt header-name=\"Authorization\">{KEY}</validate-jwt>\n</inbound></policies>"
    ));
    let inbound = &v["policies"]["p"]["inbound"];
    assert!(inbound[0].get("validate-jwt").is_some(), "{}", conv.yaml);
    assert_eq!(inbound[1]["set-header"]["value"], json!("t-${claim:tid}"));
    assert_eq!(
        conv.summary.to_string(),
        "converted 2/2 statements; incomplete: line 2 <set-header>"
    );
    // no token check validates that token: left out, and the client's own copy removed
    let (conv, v) = inline(
        "<set-header name=\"X-Sub\"><value>@(\"u-\" + context.Request.Headers.GetValueOrDefault(\"Authorization\",\"\").AsJwt()?.Subject)</value></set-header>",
    );
    assert_eq!(
        v["policies"]["p"]["inbound"],
        json!([{"set-header": {"name": "X-Sub", "exists-action": "delete"}}]),
        "{}",
        conv.yaml
    );
    assert_eq!(
        conv.summary.to_string(),
        "converted 0/1 statements; dropped: line 1 <set-header>"
    );
}

#[test]
fn variables_must_be_set_before_they_are_read() {
    let (conv, v) = inline(
        "<fragment>\n<choose><when condition=\"@(context.Request.Method == &quot;POST&quot;)\"><set-variable name=\"w\" value=\"yes\" /></when></choose>\n<set-header name=\"X-W\"><value>@((string)context.Variables[\"w\"])</value></set-header>\n<set-variable name=\"n\" value=\"1\" />\n<set-header name=\"X-N\"><value>@(context.Variables.GetValueOrDefault&lt;string&gt;(\"n\", \"0\"))</value></set-header>\n</fragment>",
    );
    let err = conv.stderr("p.xml");
    assert!(
        err.contains("p.xml:3:24: unsupported value: variable \"w\" is not set by a converted set-variable before it"),
        "{err}"
    );
    let inbound = v["policies"]["p"]["inbound"].as_array().unwrap();
    assert_eq!(inbound.len(), 4, "{}", conv.yaml);
    // the X-W left out: the client's own copy is removed in its place
    assert_eq!(
        inbound[1],
        json!({"set-header": {"name": "X-W", "exists-action": "delete"}})
    );
    assert_eq!(inbound[3]["set-header"]["value"], json!("${var:n|0}"));
}

#[test]
fn outbound_takes_only_outbound_statements_and_no_claims() {
    let (conv, v) = inline(&format!(
        "<policies><inbound><validate-jwt header-name=\"Authorization\" output-token-variable-name=\"jwt\">{KEY}</validate-jwt></inbound>\n<outbound>\n<set-header name=\"X-Sub\"><value>@(((Jwt)context.Variables[\"jwt\"]).Subject)</value></set-header>\n<rewrite-uri template=\"/x\" />\n<choose><when condition=\"@(context.Response.StatusCode == 404)\"><set-header name=\"X-Missing\"><value>1</value></set-header></when></choose>\n</outbound></policies>"
    ));
    let err = conv.stderr("p.xml");
    assert!(
        err.contains("p.xml:3:26: unsupported value: claims are read in inbound statements only"),
        "{err}"
    );
    assert!(
        err.contains("p.xml:4:1: unsupported rewrite-uri: not converted in <outbound>"),
        "{err}"
    );
    // X-Sub is left out: APIM replaces the backend's X-Sub, so the backend's copy is removed
    assert_eq!(
        v["policies"]["p"]["outbound"],
        json!([
            {"set-header": {"name": "X-Sub", "exists-action": "delete"}},
            {"choose": [{"when": {"status": [404]}, "steps": [{"set-header": {"name": "X-Missing", "value": "1"}}]}]}
        ])
    );
    // a response status in inbound has no meaning: the choose is left out with its statement
    let (conv, _) = inline(
        "<choose><when condition=\"@(context.Response.StatusCode == 200)\"><set-header name=\"X\"><value>1</value></set-header></when></choose>",
    );
    assert_eq!(
        conv.summary.to_string(),
        "converted 0/2 statements; dropped: line 1 <choose>, line 1 <set-header>"
    );
}

#[test]
fn statements_in_a_choose_holding_a_token_check_are_not_made_unconditional() {
    let (conv, v) = inline(&format!(
        "<policies><inbound><choose>\n<when condition=\"@(context.Request.Method == &quot;GET&quot;)\"><validate-jwt header-name=\"Authorization\">{KEY}</validate-jwt>\n<set-header name=\"X-Read\"><value>1</value></set-header>\n<return-response><set-status code=\"204\" /></return-response></when>\n</choose></inbound></policies>"
    ));
    assert_eq!(
        conv.summary.to_string(),
        "converted 2/4 statements; dropped: line 3 <set-header>, line 4 <return-response>; incomplete: line 1 <choose>"
    );
    // the X-Read left out: the client's own copy is removed (for every request, stricter)
    assert_eq!(
        v["policies"]["p"]["inbound"][1],
        json!({"set-header": {"name": "X-Read", "exists-action": "delete"}}),
        "{}",
        conv.yaml
    );
    // the return-response left out: APIM answers GETs without the backend, so the route refuses
    assert_eq!(
        v["routes"][0]["policy"],
        json!("p-refused"),
        "{}",
        conv.yaml
    );
}

/// A `return-response` that is not converted (a value, an element, a claim of a token no
/// converted check validates) would let the requests APIM answers reach the backend: the routes
/// refuse every request instead.
#[test]
fn return_responses_not_converted_refuse_every_request() {
    for xml in [
        r#"<policies><inbound><return-response><set-status code="401" reason="Unauthorized" /><set-header name="WWW-Authenticate" exists-action="override"><value>@("Bearer realm=" + context.Api.Name)</value></set-header></return-response></inbound></policies>"#,
        r#"<policies><inbound><return-response response-variable-name="r" /></inbound></policies>"#,
        r#"<policies><inbound><choose><when condition="@(context.Request.Method == &quot;DELETE&quot;)"><return-response><set-status code="403" /><set-body template="liquid">no</set-body></return-response></when></choose></inbound></policies>"#,
        r#"<policies><inbound><choose><when condition="@(context.Request.Headers.GetValueOrDefault(&quot;Authorization&quot;,&quot;&quot;).AsJwt()?.Claims.GetValueOrDefault(&quot;blocked&quot;, &quot;&quot;) == &quot;yes&quot;)"><return-response><set-status code="403" /></return-response></when></choose></inbound></policies>"#,
    ] {
        let (conv, v) = inline(xml);
        assert!(!conv.is_complete(), "{xml}");
        assert_refuses_every_request(&conv, &v, "so the routes refuse every request");
    }
    // converted: served as APIM answers
    let (conv, v) = inline(
        r#"<policies><inbound><return-response><set-status code="401" reason="Unauthorized" /></return-response></inbound></policies>"#,
    );
    assert!(conv.is_complete(), "{}", conv.stderr("p.xml"));
    assert_eq!(v["routes"][0]["policy"], json!("p"));
}

#[test]
fn statements_after_an_answer_never_run() {
    let (conv, v) = inline(
        "<fragment>\n<return-response><set-status code=\"410\" reason=\"Gone\" /></return-response>\n<set-header name=\"X\"><value>1</value></set-header>\n<send-request mode=\"new\" />\n</fragment>",
    );
    assert!(conv.is_complete(), "{}", conv.stderr("p.xml"));
    assert_eq!(conv.summary.to_string(), "converted 3/3 statements");
    assert_eq!(
        v["policies"]["p"]["inbound"],
        json!([{"return-response": {"status": 410, "reason": "Gone"}}])
    );
}

#[test]
fn framing_headers_and_unknown_shapes_are_left_out() {
    let (conv, v) = inline(
        "<fragment>\n<set-header name=\"Transfer-Encoding\"><value>chunked</value></set-header>\n<set-header name=\"X-Up\"><value>@(context.Request.Headers.GetValueOrDefault(\"X\",\"\").ToUpper())</value></set-header>\n<set-query-parameter name=\"q\" exists-action=\"sometimes\"><value>1</value></set-query-parameter>\n</fragment>",
    );
    // the X-Up and q left out: the client's own copies are removed in their place
    assert_eq!(
        v["policies"]["p"]["inbound"],
        json!([
            {"set-header": {"name": "X-Up", "exists-action": "delete"}},
            {"set-query-parameter": {"name": "q", "exists-action": "delete"}}
        ]),
        "{}",
        conv.yaml
    );
    assert_eq!(
        conv.summary.to_string(),
        "converted 0/3 statements; dropped: line 2 <set-header>, line 3 <set-header>, line 4 <set-query-parameter>"
    );
}

/// Connection headers (`X-Forwarded-Host`, `X-Real-IP` ...) convert: gateway.yaml applies the
/// statement after the gateway's own forwarding headers, so the policy has the last word, as in APIM.
#[test]
fn connection_headers_convert_and_empty_answers_have_no_body() {
    let (conv, v) = inline(
        "<fragment>\n<set-header name=\"X-Forwarded-Host\"><value>api.example</value></set-header>\n<set-header name=\"X_Real_IP\"><value>@(context.Request.IpAddress)</value></set-header>\n<return-response><set-status code=\"204\" /><set-body>ignored</set-body></return-response>\n</fragment>",
    );
    let err = conv.stderr("p.xml");
    assert!(
        err.contains("p.xml:4:43: note set-body: left out: a 204 or 304 answer has no body"),
        "{err}"
    );
    assert_eq!(conv.summary.to_string(), "converted 3/3 statements");
    assert!(conv.is_complete(), "{err}");
    assert_eq!(
        v["policies"]["p"]["inbound"],
        json!([
            {"set-header": {"name": "X-Forwarded-Host", "value": "api.example"}},
            {"set-header": {"name": "X_Real_IP", "value": "${client-ip}"}},
            {"return-response": {"status": 204}},
        ])
    );
    // the gateway's config takes them
    portcullis_config::load_str(&conv.yaml, std::path::Path::new("p.yaml"))
        .unwrap_or_else(|d| panic!("{d:?}\n{}", conv.yaml));
}

/// A `set-header` that cannot be read whole (an expression in `exists-action` or `name`, an
/// unknown attribute): when APIM may replace or remove the header, the copy it replaces never passes
/// (inbound: the client's, outbound: the backend's): deleted in its place when the name is known,
/// else the routes refuse every request. A readable `skip` or `append` is left out alone.
#[test]
fn unreadable_set_headers_delete_or_refuse() {
    let xml = r#"<policies><inbound>
<set-header name="X-Role" exists-action="@(context.Variables.ContainsKey(&quot;r&quot;) ? &quot;skip&quot; : &quot;override&quot;)"><value>user</value></set-header>
<set-header name="X-Tier" exists-action="override" foo="bar"><value>gold</value></set-header>
<set-header name="X-Kept" exists-action="skip" foo="bar"><value>k</value></set-header>
</inbound><outbound>
<set-header name="X-Backend" exists-action="@(&quot;override&quot;)"><value>v</value></set-header>
<set-header name="X-Out" exists-action="override"><value>@(context.Response.Body.As&lt;string&gt;())</value></set-header>
</outbound></policies>"#;
    let conv = portcullis_apim::convert(xml, "hdr.xml", &[]).unwrap();
    assert!(!conv.is_complete());
    let delete = |name: &str| json!({"set-header": {"name": name, "exists-action": "delete"}});
    let p = policy(&conv, "hdr.xml");
    assert_eq!(p["inbound"], json!([delete("X-Role"), delete("X-Tier")]));
    assert_eq!(p["outbound"], json!([delete("X-Backend"), delete("X-Out")]));
    assert!(
        conv.yaml
            .contains("not converted (see the report); the backend's X-Backend is removed"),
        "{}",
        conv.yaml
    );
    // the name itself is an expression: no one knows which header APIM replaces
    for section in ["inbound", "outbound"] {
        let xml = format!(
            r#"<policies><{section}><set-header name="@((string)context.Variables[&quot;h&quot;])" exists-action="override"><value>1</value></set-header></{section}></policies>"#
        );
        let conv = portcullis_apim::convert(&xml, "name.xml", &[]).unwrap();
        let report = conv.stderr("name.xml");
        assert!(
            report.contains("unsupported set-header: the header it replaces or removes is not known, so the routes refuse every request"),
            "{report}"
        );
        let v: Value = serde_saphyr::from_str(&conv.yaml).unwrap();
        assert_eq!(v["routes"][0]["policy"], json!("name-refused"), "{section}");
    }
    // a skip with an unreadable name is left out alone (APIM keeps the client's copy)
    let (conv, v) = inline(
        r#"<set-header name="@(&quot;X-A&quot;)" exists-action="skip"><value>1</value></set-header>"#,
    );
    assert_eq!(v["routes"][0]["policy"], json!("none"), "{}", conv.yaml);
}

/// An overriding `set-header` left out (a value not converted, a claim of a token no converted
/// check validates, inside a `choose` branch too) is replaced by a delete of the header: APIM
/// always replaces the client's copy, so it must never reach the backend. A `skip` is left out
/// alone (APIM keeps the client's copy there).
#[test]
fn overriding_set_headers_left_out_delete_the_clients_copy() {
    let xml = r#"<policies><inbound>
<set-header name="X-Who" exists-action="override"><value>@("u-" + ((Jwt)context.Variables["jwt"]).Subject)</value></set-header>
<choose><when condition="@(context.Request.Headers.ContainsKey(&quot;X-A&quot;))"><set-header name="X-In-Branch"><value>@(context.Request.Certificate.Thumbprint)</value></set-header></when></choose>
<set-header name="X-Skip" exists-action="skip"><value>@(context.Request.Certificate.Thumbprint)</value></set-header>
</inbound></policies>"#;
    let conv = portcullis_apim::convert(xml, "hdr.xml", &[]).unwrap();
    assert_eq!(
        conv.summary.to_string(),
        "converted 1/4 statements; dropped: line 2 <set-header>, line 3 <set-header>, line 4 <set-header>"
    );
    let delete = |name: &str| json!({"set-header": {"name": name, "exists-action": "delete"}});
    assert_eq!(
        policy(&conv, "hdr.xml")["inbound"],
        json!([
            delete("X-Who"),
            {"choose": [{"when": {"header-present": "X-A"}, "steps": [delete("X-In-Branch")]}]},
        ])
    );
}

/// A `set-query-parameter` left out while APIM replaces or removes the parameter (override,
/// delete, or an exists-action not known) never lets the client's own copy through: a delete of the
/// parameter takes its place, or, with no readable name, the routes refuse every request. A skip or
/// append left out is only reported (APIM keeps the client's copy too).
#[test]
fn unconverted_query_overrides_delete_or_refuse() {
    let xml = r#"<policies><inbound>
<set-query-parameter name="tenant" exists-action="override"><value>@(context.Request.Body.As&lt;string&gt;())</value></set-query-parameter>
<set-query-parameter name="role"><value>@(context.Variables.GetValueOrDefault&lt;string&gt;(&quot;unset&quot;))</value></set-query-parameter>
<set-query-parameter name="scope" exists-action="@(&quot;override&quot;)"><value>read</value></set-query-parameter>
<set-query-parameter name="debug" exists-action="delete" foo="bar" />
<set-query-parameter name="kept" exists-action="skip"><value>@(context.Request.Body.As&lt;string&gt;())</value></set-query-parameter>
<set-query-parameter name="more" exists-action="append" foo="bar"><value>m</value></set-query-parameter>
</inbound></policies>"#;
    let conv = portcullis_apim::convert(xml, "q.xml", &[]).unwrap();
    assert!(!conv.is_complete());
    let delete =
        |name: &str| json!({"set-query-parameter": {"name": name, "exists-action": "delete"}});
    let p = policy(&conv, "q.xml");
    assert_eq!(
        p["inbound"],
        json!([
            delete("tenant"),
            delete("role"),
            delete("scope"),
            delete("debug")
        ]),
        "{}",
        conv.yaml
    );
    assert!(
        conv.yaml
            .contains("not converted (see the report); the client's own tenant is removed"),
        "{}",
        conv.yaml
    );
    // the name itself is an expression: no one knows which parameter APIM replaces
    let (conv, v) = inline(
        r#"<set-query-parameter name="@((string)context.Variables[&quot;q&quot;])" exists-action="override"><value>1</value></set-query-parameter>"#,
    );
    assert_refuses_every_request(
        &conv,
        &v,
        "unsupported set-query-parameter: the parameter it replaces or removes is not known, so the routes refuse every request",
    );
    // a skip with an unreadable name is left out alone
    let (conv, v) = inline(
        r#"<set-query-parameter name="@(&quot;a&quot;)" exists-action="skip"><value>1</value></set-query-parameter>"#,
    );
    assert_eq!(v["routes"][0]["policy"], json!("none"), "{}", conv.yaml);
}

/// A `rewrite-uri` or `set-backend-service` that is not converted makes the routes refuse every
/// request: left out, the backend would get the client's own path, or the request would go to the
/// route's upstream, where APIM sends it elsewhere.
#[test]
fn unconverted_rewrites_and_backends_refuse_every_request() {
    let cases = [
        (r#"<rewrite-uri template="@(&quot;/internal/&quot; + context.Request.Body.As&lt;string&gt;())" />"#, "unsupported rewrite-uri: not converted: the backend would get the client's path instead of the one APIM rewrites it to, so the routes refuse every request"),
        (r#"<rewrite-uri template="internal/{id}" />"#, "unsupported rewrite-uri: not converted"),
        (r#"<rewrite-uri template="/v2/{id}" foo="bar" />"#, "unsupported rewrite-uri: not converted"),
        (r#"<set-backend-service base-url="@(context.Variables[&quot;u&quot;])" />"#, "unsupported set-backend-service: not converted: the request would go to the route's upstream instead of the backend APIM sends it to, so the routes refuse every request"),
        (r#"<set-backend-service sf-service-instance-name="fabric:/app/svc" />"#, "unsupported set-backend-service: not converted"),
        (r#"<set-backend-service backend-id="@((string)context.Variables[&quot;b&quot;])" />"#, "unsupported set-backend-service: not converted"),
    ];
    for (statement, why) in cases {
        let (conv, v) = inline(&format!(
            r#"<policies><inbound><set-header name="X-A"><value>a</value></set-header>{statement}</inbound></policies>"#
        ));
        assert_refuses_every_request(&conv, &v, why);
    }
    // converted ones route as before
    let (conv, v) = inline(
        r#"<policies><inbound><rewrite-uri template="/v2/items" /><set-backend-service base-url="http://legacy.example/api" /></inbound></policies>"#,
    );
    assert_eq!(v["routes"][0]["policy"], json!("p"), "{}", conv.yaml);
}
