//! cors, rate-limit, rate-limit-by-key, quota-by-key, check-header and ip-filter: the converted
//! YAML is loaded by `portcullis_config` (what `portcullis check` runs) and the statements it
//! compiles to are compared with the APIM document, in order.

use std::path::Path;
use std::time::Duration;

use portcullis_apim::{convert, Conversion, Kind};
use portcullis_config::{
    AnyOr, CounterKey, IncrementCondition as Ic, Limit, LimitKind, Model, PolicyModel, Statement,
};

use crate::corpus;

/// Loads a conversion's YAML as `portcullis check` does; any error fails the test.
fn load(conv: &Conversion, name: &str) -> Model {
    load_with(conv, name, &|_| None)
}

fn load_with(conv: &Conversion, name: &str, lookup: portcullis_config::Lookup<'_>) -> Model {
    match portcullis_config::load_str_with(&conv.yaml, Path::new(name), lookup) {
        Ok((model, warnings)) => {
            let errors: Vec<String> = warnings
                .iter()
                .filter(|d| d.severity == portcullis_config::Severity::Error)
                .map(ToString::to_string)
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{}", conv.yaml);
            model
        }
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!(
                "converted YAML rejected:\n{}\n{}",
                text.join("\n"),
                conv.yaml
            )
        }
    }
}

/// A corpus document's conversion and its loaded model.
fn converted(stem: &str) -> (Conversion, Model) {
    let conv = corpus::convert(&format!("{stem}.xml"));
    let model = load(&conv, &format!("{stem}.yaml"));
    (conv, model)
}

/// The policy the (first) route uses.
fn routed(model: &Model) -> &PolicyModel {
    let name = model.routes[0].policy.clone().expect("route has a policy");
    model
        .policies
        .iter()
        .find(|p| p.policy.name == name)
        .unwrap_or_else(|| panic!("no policy {name}"))
}

/// A statement in a form easy to compare: `cors`, `validate-jwt`, or the limit's essentials.
#[derive(Debug, PartialEq)]
enum S {
    Cors,
    Jwt,
    Lim(LimitKind, Option<u64>, u64, CounterKey, Ic),
    Ip(portcullis_config::IpFilter),
    Check(portcullis_config::CheckHeader),
    /// A statement the importer does not write (yet).
    Other(&'static str),
}

fn shape(pm: &PolicyModel) -> Vec<S> {
    pm.inbound
        .iter()
        .map(|s| match s {
            Statement::Cors(_) => S::Cors,
            Statement::ValidateJwt => S::Jwt,
            Statement::Limit(l) => S::Lim(
                l.kind,
                l.calls,
                l.renewal_period.as_secs(),
                l.counter_key.clone(),
                l.increment_condition,
            ),
            Statement::IpFilter(f) => S::Ip((**f).clone()),
            Statement::CheckHeader(c) => S::Check((**c).clone()),
            other => S::Other(other.element()),
        })
        .collect()
}

fn limit(pm: &PolicyModel, n: usize) -> &Limit {
    match &pm.inbound[n] {
        Statement::Limit(l) => l,
        other => panic!("statement {n} is {other:?}"),
    }
}

fn header(name: &str) -> CounterKey {
    CounterKey::Header(http::HeaderName::from_bytes(name.as_bytes()).unwrap())
}

fn claim(name: &str) -> CounterKey {
    CounterKey::Claim(name.to_owned())
}

/// `(line, subject)` of every unsupported diagnostic.
fn unsupported(conv: &Conversion) -> Vec<(usize, String)> {
    conv.diagnostics
        .iter()
        .filter(|d| d.kind == Kind::Unsupported)
        .map(|d| (d.pos.line, d.subject.clone()))
        .collect()
}

#[test]
fn six_statement_policy_converts_in_order_and_passes_check() {
    let (conv, model) = converted("20-inbound-pipeline");
    let pm = routed(&model);
    use LimitKind::RateLimitByKey as Rlbk;
    assert_eq!(
        shape(pm),
        vec![
            S::Cors,
            S::Lim(Rlbk, Some(100), 60, CounterKey::ClientIp, Ic::Any),
            S::Jwt,
            S::Lim(Rlbk, Some(10), 60, claim("sub"), Ic::Success),
            S::Other("set-header"),
            S::Other("set-backend-service"),
            S::Other("rewrite-uri"),
        ]
    );
    let Statement::SetHeader(host) = &pm.inbound[4] else {
        unreachable!()
    };
    assert_eq!(host.name, "x-forwarded-host");
    assert_eq!(host.action, portcullis_config::ExistsAction::Override);
    assert_eq!(
        host.values,
        [portcullis_config::Value::parse("api.contoso.example").unwrap()]
    );
    let Statement::SetBackendService(id) = &pm.inbound[5] else {
        unreachable!()
    };
    let backend = &model.backends[id.index()];
    assert_eq!(backend.base_path, "/api");
    let Statement::RewriteUri(rewrite) = &pm.inbound[6] else {
        unreachable!()
    };
    assert_eq!(rewrite.template, "/v2/orders/{id}");
    assert!(rewrite.copy_unmatched_params);
    let Statement::Cors(cors) = &pm.inbound[0] else {
        unreachable!()
    };
    assert_eq!(
        cors.allowed_origins,
        AnyOr::List(vec![
            "https://app.contoso.example".to_owned(),
            "http://localhost:5173".to_owned()
        ])
    );
    assert_eq!(
        cors.allowed_methods,
        AnyOr::List(vec![
            http::Method::GET,
            http::Method::POST,
            http::Method::PATCH
        ])
    );
    assert_eq!(cors.preflight_result_max_age, Some(300));
    assert_eq!(
        cors.allowed_headers,
        AnyOr::List(vec!["authorization".to_owned(), "content-type".to_owned()])
    );
    assert_eq!(cors.expose_headers, ["X-Request-Id", "Retry-After"]);
    assert!(cors.allow_credentials && cors.terminate_unmatched_request);
    let per_user = limit(pm, 3);
    assert_eq!(
        per_user
            .remaining_calls_header_name
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-ratelimit-remaining")
    );
    assert_eq!(
        per_user
            .total_calls_header_name
            .as_ref()
            .map(http::HeaderName::as_str),
        Some("x-ratelimit-limit")
    );
    assert_eq!(pm.policy.audiences, ["api://orders"]);
    // all six statements (and the X-Forwarded-Host the policy sets) convert
    assert_eq!(unsupported(&conv), []);
    assert!(
        conv.is_complete(),
        "{}",
        conv.report("20-inbound-pipeline.xml")
    );
}

#[test]
fn limit_shapes_convert_to_the_matching_statements() {
    let (conv, model) = converted("21-limits");
    let pm = routed(&model);
    use LimitKind::{QuotaByKey as Q, RateLimit as Rl, RateLimitByKey as Rlbk};
    assert_eq!(
        shape(pm),
        vec![
            S::Lim(Rl, Some(20), 90, CounterKey::Subscription, Ic::Any),
            S::Lim(Rlbk, Some(50), 30, header("x-client"), Ic::Below400),
            S::Lim(Rlbk, Some(40), 30, header("x-api-key"), Ic::Any),
            S::Lim(
                Rlbk,
                Some(30),
                60,
                CounterKey::Constant("orders-shared".into()),
                Ic::Success
            ),
            S::Lim(Rlbk, Some(3), 15, CounterKey::Subscription, Ic::Any),
            S::Lim(Q, Some(1000), 86_400, CounterKey::ClientIp, Ic::Below400),
            S::Lim(
                Q,
                Some(10),
                u64::from(u32::MAX),
                header("x-client"),
                Ic::Any
            ),
            S::Jwt,
            S::Lim(Rlbk, Some(10), 60, claim("tid"), Ic::Non4xx),
            S::Lim(Rlbk, Some(10), 60, claim("azp"), Ic::Non5xx),
        ]
    );
    let by_client = limit(pm, 1);
    assert_eq!(by_client.increment_count, 2);
    assert_eq!(by_client.retry_after_header_name.as_str(), "x-retry-in");
    assert_eq!(limit(pm, 5).bandwidth_kb, Some(4096));
    let lines: Vec<usize> = unsupported(&conv).iter().map(|(l, _)| *l).collect();
    // <api>, `!= 429`, `== 200`, path key (statement and attribute), first-period-start; the
    // subscription key (line 20) converts
    assert_eq!(lines, [6, 17, 19, 21, 21, 25]);
    let report = conv.report("21-limits.xml");
    assert!(!report.contains("21-limits.xml:20:"), "{report}");
    assert!(
        report.contains("21-limits.xml:5:9: note rate-limit: counted per subscription"),
        "{report}"
    );
}

#[test]
fn claim_keys_land_after_validate_jwt_and_unvalidated_tokens_are_refused() {
    let (conv, model) = converted("22-claim-keys");
    let pm = routed(&model);
    use LimitKind::{QuotaByKey as Q, RateLimitByKey as Rlbk};
    assert_eq!(
        shape(pm),
        vec![
            S::Cors,
            S::Jwt,
            S::Lim(Rlbk, Some(5), 60, claim("sub"), Ic::Any),
            S::Lim(Q, Some(100), 3600, claim("oid"), Ic::Any),
        ]
    );
    let Statement::Cors(cors) = &pm.inbound[0] else {
        unreachable!()
    };
    assert_eq!(cors.allowed_origins, AnyOr::Any);
    assert!(!cors.allow_credentials);
    let report = conv.report("22-claim-keys.xml");
    for expected in [
        "22-claim-keys.xml:4:15: unsupported allow-credentials:",
        "22-claim-keys.xml:13:9: unsupported rate-limit-by-key: keyed on a token claim before validate-jwt (line 19): APIM would read the unverified token here",
        "22-claim-keys.xml:15:9: unsupported rate-limit-by-key: not converted: keyed on a claim of the token in header X-Other",
        "22-claim-keys.xml:17:9: unsupported rate-limit-by-key: not converted: keyed on a claim of the token in variable \"nope\"",
        "22-claim-keys.xml:24:57: unsupported increment-count:",
        "22-claim-keys.xml:26:9: unsupported cors: a policy has one cors statement: the first (line 4) is kept",
    ] {
        assert!(report.contains(expected), "missing {expected}\n{report}");
    }
}

#[test]
fn named_values_in_limits_are_left_to_the_loader() {
    let xml = r#"<policies><inbound>
        <rate-limit-by-key calls="{{orders-calls}}" renewal-period="{{orders-period}}" counter-key="{{limit-key}}" />
        <cors><allowed-origins><origin>{{spa-origin}}</origin></allowed-origins></cors>
    </inbound></policies>"#;
    let conv = convert(xml, "nv.xml", &[]).unwrap();
    assert!(conv.is_complete(), "{}", conv.report("nv.xml"));
    let vars = |name: &str| match name {
        "orders-calls" => Some("7".to_owned()),
        "orders-period" => Some("45".to_owned()),
        "limit-key" => Some("team-a".to_owned()),
        "spa-origin" => Some("https://spa.example".to_owned()),
        _ => None,
    };
    let model = load_with(&conv, "nv.yaml", &vars);
    let pm = routed(&model);
    assert_eq!(
        shape(pm),
        vec![
            S::Lim(
                LimitKind::RateLimitByKey,
                Some(7),
                45,
                CounterKey::Constant("team-a".into()),
                Ic::Any
            ),
            S::Cors,
        ]
    );
    assert_eq!(limit(pm, 0).renewal_period, Duration::from_secs(45));
}

#[test]
fn statements_without_a_token_check_get_a_policy_of_their_own() {
    let xml = r#"<policies><inbound>
        <cors><allowed-origins><origin>https://spa.example</origin></allowed-origins></cors>
        <rate-limit-by-key calls="5" renewal-period="10" counter-key="@(context.Request.IpAddress)" />
    </inbound></policies>"#;
    let conv = convert(xml, "open.xml", &[]).unwrap();
    assert!(conv.is_complete(), "{}", conv.report("open.xml"));
    let model = load(&conv, "open.yaml");
    let pm = routed(&model);
    assert_eq!(pm.policy.name, "open");
    assert_eq!(
        shape(pm),
        vec![
            S::Cors,
            S::Lim(
                LimitKind::RateLimitByKey,
                Some(5),
                10,
                CounterKey::ClientIp,
                Ic::Any
            )
        ]
    );
}

#[test]
fn limits_around_choose_branches_go_into_every_converted_policy() {
    let key =
        "<issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>";
    let xml = format!(
        r#"<policies><inbound>
        <rate-limit-by-key calls="50" renewal-period="60" counter-key="@(context.Request.IpAddress)" />
        <choose>
            <when condition="@(context.Request.Method == &quot;GET&quot;)"><validate-jwt header-name="Authorization">{key}</validate-jwt></when>
            <otherwise><validate-jwt header-name="Authorization">{key}</validate-jwt></otherwise>
        </choose>
        <rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault(&quot;Authorization&quot;,&quot;&quot;).AsJwt()?.Subject)" />
    </inbound></policies>"#
    );
    let conv = convert(&xml, "branches.xml", &[]).unwrap();
    let model = load(&conv, "branches.yaml");
    use LimitKind::RateLimitByKey as Rlbk;
    let expected = vec![
        S::Lim(Rlbk, Some(50), 60, CounterKey::ClientIp, Ic::Any),
        S::Jwt,
        S::Lim(Rlbk, Some(5), 60, claim("sub"), Ic::Any),
    ];
    // the branch is not known: the routes refuse every request (branches-refused)
    assert_eq!(model.policies.len(), 3);
    for pm in model
        .policies
        .iter()
        .filter(|p| p.policy.name != "branches-refused")
    {
        assert_eq!(shape(pm), expected, "{}", pm.policy.name);
    }
    let report = conv.report("branches.xml");
    assert!(
        report.contains("branches.xml:2:9: note rate limits: the limits not keyed on a claim are written into every converted policy (branches, branches-2); each policy counts on its own"),
        "{report}"
    );
}

#[test]
fn increment_conditions_map_exactly_or_to_a_wider_value_with_a_report() {
    for (condition, expected, exact) in [
        (
            "context.Response.StatusCode >= 200 &amp;&amp; context.Response.StatusCode &lt; 300",
            Some("2xx"),
            true,
        ),
        (
            "context.Response.StatusCode &lt; 400",
            Some("below-400"),
            true,
        ),
        (
            "context.Response.StatusCode &lt; 400 || context.Response.StatusCode &gt;= 500",
            Some("non-4xx"),
            true,
        ),
        (
            "context.Response.StatusCode &lt; 500",
            Some("non-5xx"),
            true,
        ),
        ("context.Response.StatusCode &gt; 0", None, true),
        ("context.Response.StatusCode == 201", Some("2xx"), false),
        ("context.Response.StatusCode &gt;= 400", None, false),
        ("context.Request.Method == &quot;GET&quot;", None, false),
    ] {
        let xml = format!(
            r#"<rate-limit-by-key calls="1" renewal-period="1" counter-key="k" increment-condition="@({condition})" />"#
        );
        let conv = convert(&xml, "c.xml", &[]).unwrap();
        let written = conv
            .yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("increment-condition: "))
            .map(|v| v.trim_matches('"'));
        assert_eq!(written, expected, "{condition}\n{}", conv.yaml);
        assert_eq!(
            conv.is_complete(),
            exact,
            "{condition}\n{}",
            conv.report("c.xml")
        );
        load(&conv, "c.yaml");
    }
}

#[test]
fn ip_filter_and_check_header_convert_in_document_order() {
    use std::net::IpAddr;
    let (conv, model) = converted("23-admin-ip-filter");
    let pm = routed(&model);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut kinds = Vec::new();
    for s in &pm.inbound {
        kinds.push(match s {
            Statement::IpFilter(f) if f.allow => "allow",
            Statement::IpFilter(_) => "forbid",
            Statement::CheckHeader(_) => "check-header",
            Statement::ValidateJwt => "validate-jwt",
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(
        kinds,
        [
            "allow",
            "forbid",
            "check-header",
            "validate-jwt",
            "check-header"
        ]
    );
    let Statement::IpFilter(allow) = &pm.inbound[0] else {
        unreachable!()
    };
    // The same callers pass as in APIM, except the expression's address (left out: refused).
    for (passes, addr) in [
        (true, "203.0.113.7"),
        (false, "203.0.113.8"),
        (true, "198.51.100.0"),
        (true, "198.51.100.255"),
        (false, "198.51.101.0"),
        (true, "2001:db8::1f"),
        (false, "2001:db8::20"),
    ] {
        assert_eq!(allow.permits(Some(ip(addr))), passes, "{addr}");
    }
    let Statement::IpFilter(forbid) = &pm.inbound[1] else {
        unreachable!()
    };
    assert!(!forbid.permits(Some(ip("198.51.100.66"))));
    assert!(forbid.permits(Some(ip("198.51.100.65"))));
    let Statement::CheckHeader(tenant) = &pm.inbound[2] else {
        unreachable!()
    };
    assert_eq!(tenant.name.as_str(), "x-tenant");
    assert_eq!(tenant.values, ["contoso"]);
    assert!(!tenant.ignore_case);
    assert_eq!(
        (
            tenant.failed_check_httpcode,
            tenant.failed_check_error_message.as_str()
        ),
        (401, "Tenant required")
    );
    let Statement::CheckHeader(version) = &pm.inbound[4] else {
        unreachable!()
    };
    assert!(version.values.is_empty() && version.ignore_case);
    assert_eq!(version.failed_check_httpcode, 400);
    // The two expressions are reported, with their lines.
    assert_eq!(
        unsupported(&conv),
        vec![(10, "address".to_owned()), (17, "value".to_owned())]
    );
}

#[test]
fn unusable_checks_are_reported_not_converted() {
    let xml = r#"<policies><inbound>
<check-header name="X-A" failed-check-httpcode="@(401)" failed-check-error-message="m" ignore-case="true" />
<check-header name="X-B" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="true"><value>@(context.Variables["v"])</value></check-header>
<ip-filter action='@(context.Variables["a"])'><address>10.0.0.1</address></ip-filter>
<ip-filter action="allow"><address>10.0.0.300</address><address-range from="10.0.0.9" to="10.0.0.1" /><address-range from="10.0.0.1" to="::1" /></ip-filter>
</inbound></policies>"#;
    let conv = convert(xml, "bad.xml", &[]).unwrap();
    assert!(!conv.yaml.contains("check-header:"), "{}", conv.yaml);
    assert!(!conv.yaml.contains("ip-filter:"), "{}", conv.yaml);
    let lines: Vec<usize> = unsupported(&conv).iter().map(|(l, _)| *l).collect();
    // Each statement: its attribute or child, then the statement itself.
    for line in 2..=5 {
        assert!(lines.contains(&line), "line {line} not reported: {lines:?}");
    }
    assert_eq!(
        unsupported(&conv)
            .iter()
            .filter(|(_, s)| s == "check-header" || s == "ip-filter")
            .count(),
        4
    );
}

#[test]
fn a_second_token_check_makes_the_routes_refuse_every_request() {
    let key =
        "<issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>";
    // not merged: the second answers 403 where the first answers 401
    let xml = format!(
        r#"<policies><inbound>
        <validate-jwt header-name="Authorization">{key}</validate-jwt>
        <validate-jwt header-name="Authorization" failed-validation-httpcode="403">{key}<required-claims><claim name="roles"><value>admin</value></claim></required-claims></validate-jwt>
    </inbound></policies>"#
    );
    let conv = convert(&xml, "two.xml", &[]).unwrap();
    assert!(!conv.is_complete());
    let report = conv.stderr("two.xml");
    assert!(
        report
            .contains("two.xml:3:9: unsupported validate-jwt: a second token check in one policy (APIM runs both; the gateway validates one token per policy, and the two are not merged: they do not read the token in the same way (failed-validation-httpcode differ))"),
        "{report}"
    );
    assert!(
        report.contains("converted 1/2 statements; dropped: line 3 <validate-jwt>"),
        "{report}"
    );
    let model = load(&conv, "two.yaml");
    let pm = routed(&model);
    assert_eq!(pm.policy.name, "two-refused");
    assert!(
        conv.yaml.contains(
            "two-refused:\n    inbound:\n      - return-response:\n          status: 403"
        ),
        "{}",
        conv.yaml
    );
}

#[test]
fn an_allow_list_nobody_is_on_refuses_every_caller() {
    let refuse = "return-response:\n          status: 403";
    for (xml, reported) in [
        (
            r#"<policies><inbound><ip-filter action="allow"><address>@((string)context.Variables["ip"])</address></ip-filter><cors><allowed-origins><origin>*</origin></allowed-origins></cors></inbound></policies>"#,
            "allow.xml:1:20: unsupported ip-filter: no usable address or address-range in an allow list",
        ),
        (
            r#"<policies><inbound><choose><when condition="@(context.Request.Url.Path.Contains(&quot;admin&quot;))"><check-header name="X-Key" failed-check-httpcode="401" failed-check-error-message="no"><value>k</value></check-header></when></choose></inbound></policies>"#,
            "allow.xml:1:20: unsupported choose: not converted with the 1 statement(s) in its branches",
        ),
    ] {
        let conv = convert(xml, "allow.xml", &[]).unwrap();
        let report = conv.stderr("allow.xml");
        assert!(report.contains(reported), "{report}");
        assert!(conv.yaml.contains(refuse), "{}", conv.yaml);
        load(&conv, "allow.yaml");
    }
    // statements after the refusal never run: left out with a note
    let conv = convert(
        r#"<policies><inbound><ip-filter action="allow"><address>@("x")</address></ip-filter><set-header name="X-A"><value>a</value></set-header></inbound></policies>"#,
        "after.xml",
        &[],
    )
    .unwrap();
    assert!(
        conv.report("after.xml").contains("after.xml:1:83: note set-header: left out: it never runs, every request is refused at line 1 before it"),
        "{}",
        conv.report("after.xml")
    );
    assert!(!conv.yaml.contains("X-A"));
    load(&conv, "after.yaml");
    // a forbid list without a usable address fails closed (see
    // unconverted_access_checks_refuse_every_request)
    let conv = convert(
        r#"<ip-filter action="forbid"><address>@("x")</address></ip-filter>"#,
        "forbid.xml",
        &[],
    )
    .unwrap();
    assert!(
        conv.yaml.contains("policy: \"forbid-refused\""),
        "{}",
        conv.yaml
    );
}

/// A `choose` left out (its condition is not converted) whose branches hold, at any depth, a
/// statement that refuses or limits requests fails closed: the routes use `c-refused` (403 to every
/// request) instead of letting through the requests APIM refuses or limits. One holding only
/// request transforms is only reported.
#[test]
fn a_left_out_choose_holding_a_refusal_or_limit_refuses_every_request() {
    let key =
        "<issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>";
    let restricting: [String; 7] = [
        r#"<return-response><set-status code="403" reason="Forbidden" /></return-response>"#
            .to_owned(),
        r#"<rate-limit calls="5" renewal-period="60" />"#.to_owned(),
        r#"<rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" />"#.to_owned(),
        r#"<quota calls="5" renewal-period="60" />"#.to_owned(),
        r#"<quota-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" />"#.to_owned(),
        r#"<ip-filter action="forbid"><address>10.0.0.1</address></ip-filter>"#.to_owned(),
        r#"<check-header name="X-Key" failed-check-httpcode="401" failed-check-error-message="no"><value>k</value></check-header>"#.to_owned(),
    ];
    // (a choose holding a token check is never left out: see
    // a_second_token_check_makes_the_routes_refuse_every_request)
    let unknown = r#"<when condition="@(context.Request.Url.Path.Contains(&quot;admin&quot;))">"#;
    for statement in &restricting {
        // in a branch, and two levels down in a choose with converted conditions
        for inner in [
            statement.clone(),
            format!(
                r#"<choose><when condition="@(context.Request.Method == &quot;POST&quot;)"><set-header name="X-A"><value>a</value></set-header>{statement}</when></choose>"#
            ),
        ] {
            let xml = format!(
                r#"<policies><inbound><choose>{unknown}<set-header name="X-B"><value>b</value></set-header></when><otherwise>{inner}</otherwise></choose></inbound></policies>"#
            );
            let conv = convert(&xml, "c.xml", &[]).unwrap();
            let report = conv.stderr("c.xml");
            assert!(!conv.is_complete(), "{report}");
            assert!(
                report.contains("c.xml:1:20: unsupported choose: not converted with the")
                    && report.contains("it holds a statement that refuses or limits requests"),
                "{statement}: {report}"
            );
            let model = load(&conv, "c.yaml");
            assert_eq!(routed(&model).policy.name, "c-refused", "{statement}");
        }
    }
    // only request transforms: left out and reported, the route keeps its policy
    let xml = format!(
        r#"<policies><inbound><validate-jwt header-name="Authorization">{key}</validate-jwt><choose>{unknown}<set-header name="X-B" exists-action="skip"><value>b</value></set-header></when></choose></inbound></policies>"#
    );
    let conv = convert(&xml, "c.xml", &[]).unwrap();
    let report = conv.stderr("c.xml");
    assert!(
        report.contains("unsupported choose: left out with the 1 statement(s)"),
        "{report}"
    );
    let model = load(&conv, "c.yaml");
    assert_eq!(routed(&model).policy.name, "c");
}

/// Two validate-jwt reading the same token the same way (the API's audience check, the
/// operation's role) are merged into one policy deciding as APIM's two: issuers both accept (the
/// intersection), audiences both accept (the list held by the other), every required claim of
/// both. Where one policy cannot decide so (no issuer in common, audiences neither holding the
/// other, other keys or switches, a limit between them), the routes refuse every request.
#[test]
fn two_token_checks_reading_one_token_alike_are_merged() {
    let key =
        "<issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>";
    let check = |extra: &str| {
        format!(
            r#"<validate-jwt header-name="Authorization" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized">{key}{extra}</validate-jwt>"#
        )
    };
    let api = check(
        "<audiences><audience>api://a</audience><audience>api://b</audience></audiences><issuers><issuer>https://i1</issuer><issuer>https://i2</issuer></issuers><required-claims><claim name=\"scp\" separator=\" \"><value>read</value></claim></required-claims>",
    );
    let op = check(
        "<audiences><audience>api://b</audience></audiences><issuers><issuer>https://i2</issuer><issuer>https://i3</issuer></issuers><required-claims><claim name=\"roles\" match=\"any\"><value>admin</value></claim></required-claims>",
    );
    let xml = format!("<policies><inbound>\n{api}\n{op}\n</inbound></policies>");
    let conv = convert(&xml, "two.xml", &[]).unwrap();
    let report = conv.stderr("two.xml");
    assert!(conv.is_complete(), "{report}");
    assert!(
        report.contains("two.xml:3:1: note validate-jwt: merged into policy `two`"),
        "{report}"
    );
    let model = load(&conv, "two.yaml");
    assert_eq!(model.policies.len(), 1, "{}", conv.yaml);
    let p = &routed(&model).policy;
    assert_eq!(p.name, "two");
    assert_eq!(p.issuers, ["https://i2"]);
    assert_eq!(p.audiences, ["api://b"]);
    let claims: Vec<&str> = p.required_claims.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(claims, ["scp", "roles"]);

    // fail closed where one policy cannot decide as both
    let disjoint = check("<issuers><issuer>https://i9</issuer></issuers>");
    let crossing =
        check("<audiences><audience>api://a</audience><audience>api://c</audience></audiences>");
    let other_key = r#"<validate-jwt header-name="Authorization" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized"><issuer-signing-keys><key>b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcg==</key></issuer-signing-keys></validate-jwt>"#;
    let query = format!(
        r#"<validate-jwt query-parameter-name="token" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized">{key}</validate-jwt>"#
    );
    let limit = format!(
        r#"<rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" />{op}"#
    );
    for (second, why) in [
        (disjoint, "no issuer is in both issuers lists"),
        (crossing, "neither audiences list holds the other"),
        (other_key.to_owned(), "(issuer-signing-keys differ)"),
        (query, "(header-name, query-parameter-name differ)"),
        (limit, "answers, refuses or limits requests between them"),
    ] {
        let xml = format!("<policies><inbound>\n{api}\n{second}\n</inbound></policies>");
        let conv = convert(&xml, "two.xml", &[]).unwrap();
        let report = conv.stderr("two.xml");
        assert!(!conv.is_complete(), "{report}");
        assert!(
            report.contains("unsupported validate-jwt: a second token check in one policy")
                && report.contains(why),
            "{why}: {report}"
        );
        let model = load(&conv, "two.yaml");
        assert_eq!(routed(&model).policy.name, "two-refused", "{why}");
    }
}

/// Top-level statements that refuse requests but are not converted fail closed: the routes use
/// `c-refused` (403 to every request), the report says why. What stays only reported: an allow
/// list with an entry left out (it only narrows), a rate limit not converted (a missing limit lets
/// through volume, not a caller APIM refuses), validations with action detect or ignore, and
/// validate-status-code.
#[test]
fn unconverted_access_checks_refuse_every_request() {
    let refusing = [
        // check-header without a usable name, code or message, or with only expression values
        (r#"<check-header name="@(&quot;X-Key&quot;)" failed-check-httpcode="401" failed-check-error-message="no"><value>k</value></check-header>"#, "unsupported check-header: not converted (no usable name)"),
        (r#"<check-header name="X-Key" failed-check-httpcode="401" failed-check-error-message="no"><value>@("k")</value></check-header>"#, "unsupported check-header: not converted (no usable literal value)"),
        (r#"<check-header name="X-Key" failed-check-httpcode="@(401)" failed-check-error-message="no" />"#, "unsupported check-header: not converted (no usable failed-check-httpcode)"),
        // ip-filter: a forbid list with an entry left out, none usable, or no usable action
        (r#"<ip-filter action="forbid"><address>10.0.0.1</address><address>@("10.0.0.2")</address></ip-filter>"#, "unsupported ip-filter: not converted: an address or address-range of this forbid list is left out"),
        (r#"<ip-filter action="forbid"><address>10.0.0.1</address><address-range from="10.0.0.9" to="10.0.0.2" /></ip-filter>"#, "unsupported ip-filter: not converted: an address or address-range of this forbid list is left out"),
        (r#"<ip-filter action="forbid"><address>not-an-ip</address></ip-filter>"#, "unsupported ip-filter: not converted (no usable address or address-range)"),
        (r#"<ip-filter action="@(&quot;forbid&quot;)"><address>10.0.0.1</address></ip-filter>"#, "unsupported ip-filter: not converted (no usable action)"),
        // statements with no gateway.yaml equivalent whose purpose is to refuse
        (r#"<validate-client-certificate validate-revocation="true" />"#, "unsupported validate-client-certificate: no gateway.yaml equivalent, and APIM refuses the requests that fail it"),
        (r#"<validate-graphql-request max-depth="4" />"#, "unsupported validate-graphql-request: no gateway.yaml equivalent"),
        (r#"<validate-odata-request />"#, "unsupported validate-odata-request: no gateway.yaml equivalent"),
        (r#"<llm-content-safety backend-id="cs" />"#, "unsupported llm-content-safety: no gateway.yaml equivalent"),
        (r#"<validate-parameters specified-parameter-action="prevent" unspecified-parameter-action="ignore" />"#, "unsupported validate-parameters: no gateway.yaml equivalent, and an action that is not detect or ignore (prevent)"),
        (r#"<validate-parameters specified-parameter-action="detect" unspecified-parameter-action="detect"><query><parameter name="id" action="prevent" /></query></validate-parameters>"#, "unsupported validate-parameters: no gateway.yaml equivalent, and an action"),
        (r#"<validate-content unspecified-content-type-action="detect" max-size="1024" size-exceeded-action="prevent" />"#, "unsupported validate-content: no gateway.yaml equivalent, and an action"),
        (r#"<validate-headers specified-header-action="@(&quot;prevent&quot;)" unspecified-header-action="ignore" />"#, "unsupported validate-headers: no gateway.yaml equivalent, and an action"),
        // in a converted choose: APIM refuses in that branch
        (r#"<choose><when condition="@(context.Request.Method == &quot;POST&quot;)"><validate-client-certificate /></when></choose>"#, "unsupported validate-client-certificate: no gateway.yaml equivalent"),
        // in a left-out choose
        (r#"<choose><when condition="@(context.Request.Url.Path.Contains(&quot;x&quot;))"><validate-odata-request /></when></choose>"#, "it holds a statement that refuses or limits requests, so the routes refuse every request"),
    ];
    for (statement, why) in refusing {
        for section in ["inbound", "outbound"] {
            let is_outbound_validation = statement.starts_with("<validate-headers")
                || statement.starts_with("<validate-content");
            if section == "outbound" && !is_outbound_validation {
                continue;
            }
            let xml = format!("<policies><{section}>{statement}</{section}></policies>");
            let conv = convert(&xml, "c.xml", &[]).unwrap();
            let report = conv.stderr("c.xml");
            assert!(!conv.is_complete(), "{report}");
            assert!(report.contains(why), "{statement}: {report}");
            let model = load(&conv, "c.yaml");
            assert_eq!(
                routed(&model).policy.name,
                "c-refused",
                "{statement}\n{report}"
            );
        }
    }
    let passing = [
        r#"<ip-filter action="allow"><address>10.0.0.1</address><address>@("10.0.0.2")</address></ip-filter>"#,
        r#"<rate-limit calls="@(5)" renewal-period="60" />"#,
        r#"<quota calls="5" renewal-period="60" />"#,
        r#"<validate-parameters specified-parameter-action="detect" unspecified-parameter-action="ignore"><query><parameter name="id" action="detect" /></query></validate-parameters>"#,
        r#"<validate-content unspecified-content-type-action="ignore" max-size="1024" size-exceeded-action="detect" />"#,
        r#"<choose><when condition="@(context.Request.Url.Path.Contains(&quot;x&quot;))"><validate-odata-request /></when></choose>"#,
    ];
    for statement in passing {
        let xml = format!("<policies><inbound>{statement}</inbound></policies>");
        let xml = if statement.starts_with("<choose") {
            // outbound: a left-out choose holding only a detect validation
            xml.replace("inbound", "outbound")
                .replace("<validate-odata-request />", r#"<validate-headers specified-header-action="detect" unspecified-header-action="ignore" />"#)
        } else {
            xml
        };
        let conv = convert(&xml, "c.xml", &[]).unwrap();
        let report = conv.stderr("c.xml");
        let model = load(&conv, "c.yaml");
        assert_ne!(
            model.routes[0].policy.as_deref(),
            Some("c-refused"),
            "{statement}\n{report}"
        );
    }
    let conv = convert(
        r#"<policies><outbound><validate-status-code unspecified-status-code-action="prevent" /></outbound></policies>"#,
        "c.xml",
        &[],
    )
    .unwrap();
    let model = load(&conv, "c.yaml");
    assert_ne!(model.routes[0].policy.as_deref(), Some("c-refused"));
}
