//! The shipped Grafana dashboard (`deploy/grafana/portcullis-dashboard.json`) and Prometheus alert
//! rules (`deploy/prometheus/alerts.yaml`) only help if what they query exists. This test starts the
//! real gateway with every feature whose metrics they chart (a remote key source, the token cache,
//! a rate limit on a Redis store that is down, a health-checked route, a route whose upstream is
//! down), drives valid, rejected, cached, unknown-kid and failing-fetch traffic through it, scrapes
//! `/metrics` and requires every metric name in every PromQL expression of both files to be
//! exported. Names are read from the expressions by a small PromQL lexer (strings, label matchers,
//! ranges and grouping clauses removed; `label_values(metric, label)` understood; a histogram's
//! `_bucket`/`_sum`/`_count` series resolved to the histogram). Reason codes the expressions match
//! on must be reasons the gateway answers with (docs/errors.md). When `promtool` exists (CI installs
//! Debian's `prometheus`; `CI` set makes it required) the rules also pass `promtool check rules`
//! and the unit tests in `deploy/prometheus/alerts.test.yaml`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{JwksServer, TestKey, JWKS_PATH};
use portcullis_testkit::ports::ClosedPort;
use serde_json::{json, Value};

use crate::support::{now, InProcess};

/// Series Prometheus makes itself for every target, not the gateway (alerts may use them).
const PROMETHEUS_OWN: &[&str] = &["up"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/portcullis-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn alerts_path() -> PathBuf {
    repo().join("deploy/prometheus/alerts.yaml")
}

/// Every PromQL expression of the dashboard (panel targets and variable queries), with where it is.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            out.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["definition"].as_str().unwrap();
            out.push((format!("variable {}", var["name"]), q.to_owned()));
        }
    }
    out
}

/// Every alert's expression, with its name.
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(alerts_path()).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            out.push((format!("alert {name}"), expr.to_owned()));
        }
    }
    out
}

/// Removes every balanced `open ... close` span (no nesting in PromQL's `{}` and `[]`).
fn strip_between(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// Metric names an expression selects. `label_values(sel, label)` keeps only `sel`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        // aggregation operators: `sum by (x) (...)` puts the clause before the parenthesis
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut text = expr.to_owned();
    if let Some(rest) = text.trim().strip_prefix("label_values(") {
        let sel = rest.rsplit_once(',').map_or(rest, |(sel, _)| sel);
        text = sel.to_owned();
    }
    // String literals first (they may hold braces), then label matchers and ranges.
    let mut no_strings = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        match (in_string, c) {
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => in_string = false,
            (true, _) => escaped = false,
            (false, '"') => in_string = true,
            (false, _) => no_strings.push(c),
        }
    }
    let bare = strip_between(&strip_between(&no_strings, '{', '}'), '[', ']');
    let chars: Vec<char> = bare.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if GROUPING.contains(&word.as_str()) {
                skip_list = true;
            } else if next == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
                // a function call or an operator keyword
            } else {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_list {
            // the label list of by/without/on/ignoring/group_*: not metric names
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_list = false;
        } else if !c.is_whitespace() {
            skip_list = false;
        }
        // numbers (0.99, 1e3) and durations are skipped a char at a time
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

/// Values a `reason` matcher accepts (`reason="X"`, `reason=~"A|B"`, `reason!~"..."`).
fn reason_literals(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("reason") {
        rest = &rest[at + "reason".len()..];
        let after = rest.trim_start_matches([' ', '=', '!', '~']);
        if rest.len() == after.len() {
            continue;
        }
        if let Some(body) = after.strip_prefix('"') {
            let end = body.find('"').unwrap();
            out.extend(body[..end].split('|').map(str::to_owned));
        }
    }
    out
}

/// Metric family names and types on a `/metrics` page.
fn exported(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// Whether `name` is a series of an exported family (a histogram's `_bucket`, `_sum`, `_count`).
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .and_then(|base| families.get(base))
            .is_some_and(|kind| kind == "histogram" || kind == "summary")
    })
}

#[test]
fn the_lexer_finds_metric_names_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (route, le) (rate(a_seconds_bucket{x=~"b|c", d!="{e}"}[5m] offset 1h))) > 1
        and on () group_left (reason) sum without (f) (rate(g_total[$__rate_interval])) / ignoring(h) 2e3 * other:recorded unless bool up"#;
    let got: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(got, ["a_seconds_bucket", "g_total", "other:recorded", "up"]);
    assert_eq!(
        metric_names(r#"label_values(portcullis_requests_total{instance=~"$instance"}, route)"#)
            .into_iter()
            .collect::<Vec<_>>(),
        ["portcullis_requests_total"]
    );
    assert_eq!(
        reason_literals(r#"x{reason!~"ok|ReturnResponse", reason="A"} by (reason)"#),
        ["ok", "ReturnResponse", "A"]
    );
    let families = exported("# TYPE h histogram\n# TYPE c counter\n");
    assert!(is_exported("h_bucket", &families) && is_exported("c", &families));
    assert!(!is_exported("c_count", &families) && !is_exported("d", &families));
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource"
        && v["name"] == "datasource"
        && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        let grid = &panel["gridPos"];
        let x = grid["x"].as_u64().unwrap();
        assert!(
            x + grid["w"].as_u64().unwrap() <= 24,
            "{panel} is wider than the grid"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
}

/// `/metrics` once `done` holds (polled, bounded): key fetches, evictions and probes happen off
/// the request path.
async fn metrics_until(gw: &InProcess, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..1500 {
        let text = gw.metrics().await;
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("metrics never got there:\n{}", gw.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let (key_a, key_b) = (
        TestKey::rsa("rsa-a").unwrap(),
        TestKey::rsa("rsa-b").unwrap(),
    );
    idp.set_keys(&[&key_a]);
    let (redis_down, upstream_down) = (
        ClosedPort::reserve().unwrap(),
        ClosedPort::reserve().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  threads: 1
  token-cache: {{ max-entries: 100 }}
  rate-limit-store: redis://{redis}/0
  rate-limit-store-timeout: 100ms
policies:
  api:
    inbound:
      - rate-limit-by-key: {{ calls: 1000, renewal-period: 60, counter-key: client-ip }}
      - validate-jwt:
          unknown-kid-cooldown: 1h
          refresh-interval: 1s
          min-refresh-interval: 1s
          issuer-signing-keys:
            - jwks-uri: {jwks}
          issuers: [{issuer}]
          audiences: [api://orders]
routes:
  - name: api
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: api
    health-check: {{ path: /health, interval: 1s }}
  - name: down
    match: {{ path-prefix: /down }}
    upstream: {down}
    policy: none
"#,
            redis = redis_down.addr(),
            jwks = idp.jwks_url(),
            issuer = idp.issuer(),
            backend = backend.url(),
            down = upstream_down.url(),
        ),
    )
    .unwrap();
    let gw = InProcess::from_file(&config);
    gw.wait_ready().await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("http://{}{path}", gw.proxy()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let claims = |exp: i64| json!({ "iss": idp.issuer(), "aud": "api://orders", "sub": "u", "iat": now() - 10, "exp": exp });
    let token_a = key_a.sign(&claims(now() + 600)).unwrap();

    // Valid twice (a cache miss, then a hit), expired, no token, an upstream that is down.
    assert_eq!(get("/api/x", Some(&token_a)).await, 200);
    assert_eq!(get("/api/x", Some(&token_a)).await, 200);
    assert_eq!(
        get("/api/x", Some(&key_a.sign(&claims(now() - 3600)).unwrap())).await,
        401
    );
    assert_eq!(get("/api/x", None).await, 401);
    assert_eq!(get("/down/x", None).await, 502);

    // Rotation: the IdP now publishes only key B. A token of B is fetched for (at once, or by the
    // 1 s refresh), then A's cached token is evicted (key_removed) and refused.
    idp.set_keys(&[&key_b]);
    let token_b = key_b.sign(&claims(now() + 600)).unwrap();
    assert_eq!(get("/api/x", Some(&token_b)).await, 200);
    assert_eq!(get("/api/x", Some(&token_a)).await, 401);
    // Unknown kids until one is suppressed by the cooldown (the first may refetch).
    for i in 0..5 {
        let kid = format!("never-published-{i}");
        let token = key_b
            .sign_with_kid(Some(&kid), &claims(now() + 600))
            .unwrap();
        assert_eq!(get("/api/x", Some(&token)).await, 401);
        if gw
            .metrics()
            .await
            .contains("portcullis_jwks_refetch_suppressed_total{")
        {
            break;
        }
    }
    // The IdP fails: the next scheduled refresh counts a failure; B keeps serving.
    idp.update(JWKS_PATH, |ep| ep.status = 500);
    let text = metrics_until(&gw, |m| {
        [
            "portcullis_jwks_fetch_failures_total{",
            "portcullis_jwks_refetch_suppressed_total{",
            "portcullis_token_cache_evictions_total{",
            "portcullis_rate_limit_store_errors_total{",
            "portcullis_upstream_health_checks_total{",
        ]
        .iter()
        .all(|family| m.contains(family))
    })
    .await;
    assert_eq!(get("/api/x", Some(&token_b)).await, 200);
    let families = exported(&text);

    let dash = dashboard();
    let mut exprs = dashboard_exprs(&dash);
    let dashboard_count = exprs.len();
    exprs.extend(alert_exprs());
    assert!(
        dashboard_count >= 20 && exprs.len() >= dashboard_count + 12,
        "{exprs:#?}"
    );
    let errors_md = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    let mut referenced = BTreeSet::new();
    let mut missing = Vec::new();
    for (place, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            let ok = is_exported(&name, &families)
                || (place.starts_with("alert") && PROMETHEUS_OWN.contains(&name.as_str()));
            if !ok {
                missing.push(format!("{place}: {name}"));
            }
            referenced.insert(name);
        }
        for reason in reason_literals(expr) {
            assert!(
                reason == "ok" || errors_md.contains(&format!("`{reason}`")),
                "{place}: reason {reason} is not one the gateway gives (docs/errors.md)"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "metrics queried but not exported:\n{}\n\nexported: {:?}",
        missing.join("\n"),
        families.keys().collect::<Vec<_>>()
    );
    // What the issue asks the dashboard to cover is there.
    for needed in [
        "portcullis_requests_total",
        "portcullis_token_cache_hits_total",
        "portcullis_jwks_key_set_age_seconds",
        "portcullis_jwks_fetch_failures_total",
        "portcullis_rate_limit_store_errors_total",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_token_validation_seconds_bucket",
        "portcullis_log_lines_dropped_total",
        "portcullis_ready",
    ] {
        assert!(
            referenced.contains(needed),
            "{needed} is not charted or alerted on"
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (.ci/run installs Debian's prometheus)"
        );
        eprintln!("promtool not installed: alert rules not checked by promtool");
        return;
    };
    let dir = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts.test.yaml"][..],
    ] {
        let out = std::process::Command::new(promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
