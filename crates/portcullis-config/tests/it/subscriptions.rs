//! `subscriptions:`, a route's `subscription:`, `match.headers`/`match.query`, and what
//! `LoadOptions` (`--map-upstream`, `--listen`, `--admin`) change at load.

use std::path::Path;

use portcullis_config::{
    LoadOptions, LoadResult, Model, ProductPolicy, SubscriptionScope, SubscriptionState,
    UpstreamMap,
};

const CONFIG: &str = r#"
server: { listen: "127.0.0.1:8080", admin: "127.0.0.1:9901" }
backends:
  orders-backend: { url: "https://orders.contoso.com/api" }
policies:
  base:
    inbound:
      - set-header: { name: x-policy, value: base }
  starter:
    inbound:
      - set-header: { name: x-policy, value: starter }
      - set-backend-service: { base-url: "https://legacy.contoso.com/v1" }
subscriptions:
  starter-dev: { scope: product, product: starter }
  orders-only: { scope: api, api: orders }
  all-access: { scope: all, state: suspended }
routes:
  - name: orders-v2
    match:
      path: /orders/{id}
      methods: [GET]
      headers: { Api-Version: v2 }
      query: { api-version: "2024-01-01" }
    upstream: https://orders.contoso.com
    subscription:
      api: orders
      products: { starter: starter, free: none }
    policy: base
  - name: orders
    match: { path-prefix: /orders }
    upstream: https://orders.contoso.com:443
    subscription: { api: orders, required: false, header-name: X-Key, query-parameter-name: key }
    policy: base
"#;

fn load(text: &str, opts: &LoadOptions) -> LoadResult {
    portcullis_config::load_str_opts(text, Path::new("gateway.yaml"), &|_| None, opts)
}

fn ok(text: &str, opts: &LoadOptions) -> Model {
    match load(text, opts) {
        Ok((model, warnings)) => {
            assert!(warnings.is_empty(), "{}", crate::render(&warnings));
            model
        }
        Err(diags) => panic!("invalid:\n{}", crate::render(&diags)),
    }
}

#[test]
fn subscriptions_and_route_subscriptions_are_read_with_apim_defaults() {
    let m = ok(CONFIG, &LoadOptions::default());
    let s: Vec<_> = m
        .subscriptions
        .iter()
        .map(|s| (s.name.as_str(), s.scope.clone(), s.state))
        .collect();
    assert_eq!(
        s,
        [
            (
                "starter-dev",
                SubscriptionScope::Product("starter".into()),
                SubscriptionState::Active
            ),
            (
                "orders-only",
                SubscriptionScope::Api("orders".into()),
                SubscriptionState::Active
            ),
            (
                "all-access",
                SubscriptionScope::All,
                SubscriptionState::Suspended
            ),
        ]
    );
    let v2 = m.routes[0].subscription.as_ref().unwrap();
    assert_eq!(v2.api.as_deref(), Some("orders"));
    assert!(v2.required, "APIM's subscriptionRequired defaults to true");
    assert_eq!(v2.header_name.as_str(), "ocp-apim-subscription-key");
    assert_eq!(v2.query_parameter_name, "subscription-key");
    assert_eq!(
        v2.products,
        [
            ProductPolicy {
                product: "starter".into(),
                policy: Some("starter".into())
            },
            ProductPolicy {
                product: "free".into(),
                policy: None
            },
        ]
    );
    assert_eq!(
        m.routes[0].policies(),
        [Some("base"), Some("starter"), None]
    );
    let plain = m.routes[1].subscription.as_ref().unwrap();
    assert!(!plain.required);
    assert_eq!(plain.header_name.as_str(), "x-key");
    assert_eq!(plain.query_parameter_name, "key");

    let matcher = &m.routes[0].matcher;
    assert_eq!(matcher.headers.len(), 1);
    assert_eq!(matcher.headers[0].0.as_str(), "api-version");
    assert_eq!(matcher.headers[0].1, "v2");
    assert_eq!(
        matcher.query,
        [("api-version".to_owned(), "2024-01-01".to_owned())]
    );
}

#[test]
fn a_policy_used_only_by_a_product_is_used() {
    let text = CONFIG.replace("products: { starter: starter, free: none }", "");
    let Ok((_, warnings)) = load(&text, &LoadOptions::default()) else {
        panic!("valid")
    };
    let text = crate::render(&warnings);
    assert!(
        text.contains("policy `starter` is not used by any route"),
        "{text}"
    );
    assert!(
        text.contains("subscription `starter-dev` opens nothing"),
        "{text}"
    );
}

#[test]
fn a_route_with_conditions_does_not_shadow_one_without() {
    // `orders-v2` (conditions) before a plain route on the same path: both reachable. The other
    // way round, the plain route matches every request of the later one: refused.
    let both = r#"
server: { listen: "127.0.0.1:8080" }
routes:
  - { name: v2, match: { path-prefix: /o, headers: { api-version: v2 } }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: v1, match: { path-prefix: /o }, upstream: "http://127.0.0.1:1", policy: none }
  - { name: late, match: { path-prefix: /o/x, headers: { API-Version: v2 }, query: { a: b } }, upstream: "http://127.0.0.1:1", policy: none }
"#;
    let Err(diags) = load(both, &LoadOptions::default()) else {
        panic!("late is shadowed by v1")
    };
    let text = crate::render(&diags);
    assert!(
        text.contains("route `late` can never match: route `v2` (line 4)"),
        "{text}"
    );
    assert!(!text.contains("route `v1` can never match"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn map_upstream_rewrites_routes_backends_and_base_urls() {
    let opts = LoadOptions {
        map_upstream: vec![
            "https://orders.contoso.com=http://127.0.0.1:3000"
                .parse::<UpstreamMap>()
                .unwrap(),
            "https://legacy.contoso.com=http://127.0.0.1:3001/legacy"
                .parse()
                .unwrap(),
        ],
        ..LoadOptions::default()
    };
    let m = ok(CONFIG, &opts);
    for r in &m.routes {
        let u = &r.upstreams[0];
        assert_eq!(
            (u.url.as_str(), u.tls, u.host.as_str(), u.port),
            ("http://127.0.0.1:3000", false, "127.0.0.1", 3000)
        );
    }
    let b: Vec<_> = m
        .backends
        .iter()
        .map(|b| {
            (
                b.upstream.url.as_str(),
                b.upstream.port,
                b.base_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        b,
        [
            ("http://127.0.0.1:3000/api", 3000, "/api"),
            ("http://127.0.0.1:3001/legacy/v1", 3001, "/legacy/v1"),
        ]
    );
    assert_eq!(m.backends[0].name, "orders-backend");

    // A route upstream mapped to a URL with a path cannot be a route upstream: reported at the
    // upstream, naming the mapped URL.
    let opts = LoadOptions {
        map_upstream: vec!["https://orders.contoso.com=http://127.0.0.1:3000/x"
            .parse()
            .unwrap()],
        ..LoadOptions::default()
    };
    let Err(diags) = load(CONFIG, &opts) else {
        panic!("a path on a route upstream")
    };
    let text = crate::render(&diags);
    assert!(
        text.contains("gateway.yaml:24:15: error: `upstream` must be scheme://host[:port] only (no path, query or credentials): `http://127.0.0.1:3000/x` (as --map-upstream rewrote it)"),
        "{text}"
    );
}

#[test]
fn listen_and_admin_options_replace_the_file() {
    let opts = LoadOptions {
        listen: vec!["127.0.0.1:0".into(), "[::1]:0".into()],
        admin: Some("127.0.0.1:0".into()),
        ..LoadOptions::default()
    };
    let m = ok(CONFIG, &opts);
    let listen: Vec<_> = m.server.listen.iter().map(|l| l.addr.as_str()).collect();
    assert_eq!(listen, ["127.0.0.1:0", "[::1]:0"]);
    assert!(m.server.listen.iter().all(|l| l.tls.is_empty() && !l.h2c));
    assert_eq!(m.server.admin.as_deref(), Some("127.0.0.1:0"));

    // Without `server:` at all, `--listen` is enough.
    let bare = "routes:\n  - { name: r, upstream: \"http://127.0.0.1:1\", policy: none }\n";
    assert!(load(bare, &LoadOptions::default()).is_err());
    let m = ok(bare, &opts);
    assert_eq!(m.server.listen.len(), 2);
    assert!(portcullis_config::is_listen_address("[::1]:8080"));
    assert!(!portcullis_config::is_listen_address("8080"));
    assert!(!portcullis_config::is_listen_address("http://x:1"));
}
