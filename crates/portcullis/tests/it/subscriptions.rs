//! End-to-end tests: APIM subscription keys (`subscriptions:`, a route's `subscription:`, keys from
//! `--subscription-key` / `--subscription-keys` / `RunOptions`), route matching on a header or
//! query value (`match.headers` / `match.query`), and the `run` flags `--listen`, `--admin`,
//! `--map-upstream`, through the real binary (or the in-process gateway for reload) and the
//! recording backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use portcullis_proxy::{RunOptions, SubscriptionKeys};
use portcullis_testkit::backend::{Backend, RecordedRequest};

use crate::support::{await_ready, InProcess};

const MISSING: &str = r#"{"statusCode":401,"message":"Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."}"#;
const INVALID: &str = r#"{"statusCode":401,"message":"Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."}"#;

/// Keys: long random-looking strings, so a log line holding one cannot be a coincidence.
const STARTER_1: &str = "k3y-starter-primary-7f3a9c1e5b";
const STARTER_2: &str = "k3y-starter-secondary-2d8e4f6a0c";
const UNLIMITED: &str = "k3y-unlimited-9b1d3f5a7c";
const ORDERS_ONLY: &str = "k3y-orders-only-4e6a8c0b2d";
const ALL_ACCESS: &str = "k3y-all-access-1a3c5e7b9d";
const SUSPENDED: &str = "k3y-suspended-8f0b2d4a6c";
const CUSTOM_API: &str = "k3y-custom-api-5c7e9a1b3d";
const ALL_KEYS: [&str; 7] = [
    STARTER_1,
    STARTER_2,
    UNLIMITED,
    ORDERS_ONLY,
    ALL_ACCESS,
    SUSPENDED,
    CUSTOM_API,
];

/// No `server:` section: `--listen` and `--admin` give the listeners. Every upstream names a
/// cloud origin that `--map-upstream` points at the recording backend.
const CONFIG: &str = r#"
backends:
  legacy: { url: "https://legacy.contoso.example/base" }
policies:
  base:
    inbound:
      - set-header: { name: x-policy, value: base }
      - set-header: { name: x-subscription, value: "${subscription|none}" }
  starter:
    inbound:
      - set-header: { name: x-policy, value: starter }
  unlimited:
    inbound:
      - set-header: { name: x-policy, value: unlimited }
      - set-backend-service: { backend-id: legacy }
  spa:
    inbound:
      - cors: { allowed-origins: ["https://app.example"], allowed-methods: [GET], allowed-headers: [ocp-apim-subscription-key] }
      - set-header: { name: x-policy, value: spa }
  v2:
    inbound:
      - set-header: { name: x-version, value: v2 }
  q:
    inbound:
      - set-header: { name: x-version, value: query }
subscriptions:
  starter-dev: { scope: product, product: starter }
  unlimited-dev: { scope: product, product: unlimited }
  orders-only: { scope: api, api: orders }
  all-access: { scope: all }
  suspended: { scope: all, state: suspended }
  custom-api: { scope: api, api: custom }
routes:
  - name: orders
    match: { path-prefix: /orders }
    upstream: https://api.contoso.example
    subscription:
      api: orders
      products: { starter: starter, unlimited: unlimited }
    policy: base
  - name: custom
    match: { path-prefix: /custom }
    upstream: https://api.contoso.example
    subscription: { api: custom, header-name: X-Api-Key, query-parameter-name: apikey }
    policy: none
  - name: open
    match: { path-prefix: /open }
    upstream: https://api.contoso.example
    subscription: { api: open, required: false, products: { starter: starter } }
    policy: base
  - name: spa
    match: { path-prefix: /spa }
    upstream: https://api.contoso.example
    subscription: { api: spa }
    policy: spa
  - name: versioned-header
    match: { path-prefix: /versioned, headers: { Api-Version: v2 } }
    upstream: https://api.contoso.example
    policy: v2
  - name: versioned-query
    match: { path-prefix: /versioned, query: { api-version: "2024-01-01" } }
    upstream: https://api.contoso.example
    policy: q
  - name: versioned
    match: { path-prefix: /versioned }
    upstream: https://api.contoso.example
    policy: none
"#;

/// `portcullis run -c CONFIG` with `args` after it (stdout piped for the banner).
fn spawn(config: &Path, args: &[&str], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "-c"])
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

struct Running {
    child: Child,
    proxy: String,
    admin: String,
    client: reqwest::Client,
}

impl Running {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.get(format!("{}{path}", self.proxy));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.admin);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// SIGTERM and wait: the logs are complete afterwards.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last(backend: &Backend) -> RecordedRequest {
    backend.requests().pop().expect("the backend was called")
}

#[tokio::test]
async fn subscription_keys_scopes_products_and_header_routing_through_the_binary() {
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        format!("# secondary keys\n\nstarter-dev={STARTER_2}\n unlimited-dev = {UNLIMITED}\n"),
    )
    .unwrap();
    let log_path = dir.path().join("gateway.log");
    let map = format!("https://api.contoso.example={}", backend.url());
    let map_legacy = format!("https://legacy.contoso.example={}/mapped", backend.url());
    let key_args: Vec<String> = [
        ("starter-dev", STARTER_1),
        ("orders-only", ORDERS_ONLY),
        ("all-access", ALL_ACCESS),
        ("suspended", SUSPENDED),
        ("custom-api", CUSTOM_API),
    ]
    .iter()
    .map(|(n, k)| format!("{n}={k}"))
    .collect();
    let mut args: Vec<&str> = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--map-upstream",
        &map,
        "--map-upstream",
        &map_legacy,
        "--subscription-keys",
        keys.to_str().unwrap(),
    ];
    for a in &key_args {
        args.extend(["--subscription-key", a.as_str()]);
    }
    let mut child = spawn(
        &config,
        &args,
        Stdio::from(std::fs::File::create(&log_path).unwrap()),
    );
    let banner = await_ready(&mut child, || std::fs::read_to_string(&log_path).unwrap()).await;
    let gw = Running {
        child,
        proxy: banner.proxies.clone(),
        admin: banner.admin.clone(),
        client: reqwest::Client::new(),
    };
    let key = |k: &'static str| [("Ocp-Apim-Subscription-Key", k)];

    // No key, a key nobody was given, a suspended subscription's, another API's: APIM's bodies,
    // and the backend never called.
    let resp = gw
        .client
        .get(format!("{}/orders/1", gw.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), MISSING);
    for bad in [
        "not-a-key",
        SUSPENDED,
        CUSTOM_API,
        &STARTER_1[..STARTER_1.len() - 1],
    ] {
        let got = gw
            .get("/orders/1", &[("Ocp-Apim-Subscription-Key", bad)])
            .await;
        assert_eq!(got, (401, INVALID.to_owned()), "{bad}");
    }
    assert_eq!(
        gw.get(&format!("/orders/1?subscription-key={SUSPENDED}"), &[])
            .await,
        (401, INVALID.to_owned())
    );
    // Sent twice: which copy counts would be the backend's guess; refused.
    assert_eq!(
        gw.get(
            &format!("/orders/1?subscription-key={STARTER_1}&subscription-key={STARTER_1}"),
            &[]
        )
        .await
        .0,
        401
    );
    assert_eq!(backend.request_count(), 0);

    // A product key runs its product's policy; API- and all-scoped keys run the route's policy.
    // The header and the query both carry keys; the key reaches the backend as APIM forwards it.
    assert_eq!(gw.get("/orders/1", &key(STARTER_1)).await.0, 200);
    let seen = last(&backend);
    assert_eq!(seen.header("x-policy"), Some("starter"));
    assert_eq!(seen.header("ocp-apim-subscription-key"), Some(STARTER_1));
    assert_eq!(seen.path, "/orders/1");
    assert_eq!(gw.get("/orders/2", &key(STARTER_2)).await.0, 200);
    assert_eq!(last(&backend).header("x-policy"), Some("starter"));
    assert_eq!(
        gw.get(&format!("/orders/3?subscription-key={UNLIMITED}&x=1"), &[])
            .await
            .0,
        200
    );
    let seen = last(&backend);
    assert_eq!(seen.header("x-policy"), Some("unlimited"));
    assert_eq!(
        seen.path, "/mapped/base/orders/3",
        "the product policy's set-backend-service, its backend mapped too"
    );
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("subscription-key={UNLIMITED}&x=1").as_str())
    );
    for (k, name) in [(ORDERS_ONLY, "orders-only"), (ALL_ACCESS, "all-access")] {
        assert_eq!(gw.get("/orders/4", &key(k)).await.0, 200);
        let seen = last(&backend);
        assert_eq!(seen.header("x-policy"), Some("base"), "{k}");
        assert_eq!(
            seen.header("x-subscription"),
            Some(name),
            "${{subscription}}"
        );
    }
    // The header wins over the query parameter.
    assert_eq!(
        gw.get("/orders/5?subscription-key=nope", &key(ALL_ACCESS))
            .await
            .0,
        200
    );

    // Custom names: only they carry the key there.
    assert_eq!(
        gw.get("/custom/a", &key(CUSTOM_API)).await,
        (401, MISSING.to_owned())
    );
    assert_eq!(
        gw.get(&format!("/custom/a?subscription-key={CUSTOM_API}"), &[])
            .await
            .0,
        401
    );
    assert_eq!(
        gw.get("/custom/a", &[("x-api-key", CUSTOM_API)]).await.0,
        200
    );
    assert_eq!(
        gw.get(&format!("/custom/a?apikey={ALL_ACCESS}"), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        gw.get("/custom/a", &[("X-Api-Key", ORDERS_ONLY)]).await,
        (401, INVALID.to_owned())
    );

    // `required: false`: any key is ignored, as in APIM (the route's policy, not the product's).
    for headers in [
        vec![],
        vec![("Ocp-Apim-Subscription-Key", "junk")],
        key(STARTER_1).to_vec(),
    ] {
        assert_eq!(gw.get("/open/x", &headers).await.0, 200);
        let seen = last(&backend);
        assert_eq!(seen.header("x-policy"), Some("base"));
        assert_eq!(seen.header("x-subscription"), Some("none"));
    }

    // A keyless CORS preflight is answered by the route's cors; the call itself needs the key.
    let preflight = gw
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/spa/x", gw.proxy))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "ocp-apim-subscription-key",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let call = gw
        .client
        .get(format!("{}/spa/x", gw.proxy))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 401);
    assert_eq!(
        call.headers()["access-control-allow-origin"],
        "https://app.example",
        "the 401 carries the CORS headers so the app can read it"
    );
    assert_eq!(call.text().await.unwrap(), MISSING);
    assert_eq!(gw.get("/spa/x", &key(ALL_ACCESS)).await.0, 200);
    assert_eq!(last(&backend).header("x-policy"), Some("spa"));

    // Version sets: a header or query value picks the route; sent twice, neither matches.
    let version = |headers: &[(&str, &str)], query: &str| {
        let mut req = gw.client.get(format!("{}/versioned/x{query}", gw.proxy));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.send()
    };
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers<'_>, &str, Option<&str>); 7] = [
        (&[("api-version", "v2")], "", Some("v2")),
        (&[("API-VERSION", "v2")], "", Some("v2")),
        (&[("api-version", "V2")], "", None),
        (&[], "?api-version=2024-01-01", Some("query")),
        (&[], "?api%2Dversion=2024%2D01%2D01", Some("query")),
        (&[], "?api-version=2024-01-01&api-version=2024-01-01", None),
        (&[("api-version", "v1")], "?api-version=2023", None),
    ];
    for (headers, query, want) in cases {
        assert_eq!(version(headers, query).await.unwrap().status(), 200);
        assert_eq!(
            last(&backend).header("x-version"),
            want,
            "{headers:?} {query}"
        );
    }
    let twice = gw
        .client
        .get(format!("{}/versioned/x", gw.proxy))
        .header("api-version", "v2")
        .header("api-version", "v2");
    assert_eq!(twice.send().await.unwrap().status(), 200);
    assert_eq!(
        last(&backend).header("x-version"),
        None,
        "a header sent twice"
    );

    // Metrics: refusals by reason, accepted calls by subscription (never by key).
    let metrics = gw.metrics().await;
    let line = |needle: &str| {
        metrics
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{metrics}"))
            .to_owned()
    };
    assert!(line(r#"reason="SubscriptionKeyMissing",route="orders""#).ends_with(" 1"));
    assert!(line(r#"reason="SubscriptionKeyInvalid",route="orders""#).ends_with(" 6"));
    assert!(
        line(r#"portcullis_subscription_calls_total{subscription="starter-dev"}"#).ends_with(" 2")
    );
    assert!(
        line(r#"portcullis_subscription_calls_total{subscription="unlimited-dev"}"#)
            .ends_with(" 1")
    );
    for k in ALL_KEYS {
        assert!(!metrics.contains(k), "a key in /metrics");
    }

    // Logs: the subscription's name, never a key (nor any part of one).
    gw.stop();
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains(r#"subscription="starter-dev""#), "{logged}");
    assert!(logged.contains(r#"subscription="all-access""#), "{logged}");
    for k in ALL_KEYS {
        for part in [&k[..12], &k[k.len() - 12..]] {
            assert!(!logged.contains(part), "a key in the logs:\n{logged}");
        }
    }
}

#[test]
fn keys_for_unknown_subscriptions_and_bad_arguments_exit_2_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let bad_file = dir.path().join("bad-keys");
    std::fs::write(&bad_file, "starter-dev=k\nk3y-pasted-alone-6d4b2f\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--subscription-key", "startr-dev=k3y-typo-3e5a7c9b1d"],
            "subscription `startr-dev`",
        ),
        (
            &["--subscription-key", "k3y-without-name-8a6c4e2b0d"],
            "NAME=KEY",
        ),
        (
            &["--subscription-keys", bad_file.to_str().unwrap()],
            "line 2",
        ),
        (&["--listen", "8080"], "host:port"),
    ];
    for (args, says) in cases {
        let mut full = vec!["--listen", "127.0.0.1:0"];
        full.extend(args);
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "-c"])
            .arg(&config)
            .args(&full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("k3y-"), "a key shown: {stderr}");
    }
}

#[tokio::test]
async fn a_reload_keeps_the_keys_given_at_start() {
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let text = |header: &str| {
        format!(
            r#"server: {{ listen: "127.0.0.1:0", admin: "127.0.0.1:0" }}
policies:
  p: {{ inbound: [ {{ set-header: {{ name: x-generation, value: {header} }} }} ] }}
subscriptions:
  dev: {{ scope: api, api: a }}
routes:
  - name: a
    upstream: "https://a.contoso.example"
    subscription: {{ api: a }}
    policy: p
"#
        )
    };
    std::fs::write(&file, text("one")).unwrap();
    let load = portcullis_config::LoadOptions {
        map_upstream: vec![format!("https://a.contoso.example={}", backend.url())
            .parse()
            .unwrap()],
        ..Default::default()
    };
    let (model, _) = portcullis_config::load_with(&file, &load).unwrap();
    let mut keys = SubscriptionKeys::new();
    keys.add("dev", ORDERS_ONLY);
    let gw = InProcess::bind_with(
        &model,
        RunOptions {
            config_path: Some(file.clone()),
            load,
            subscription_keys: keys,
            ..RunOptions::default()
        },
    );
    let client = reqwest::Client::new();
    let call = |key: &'static str| {
        client
            .get(format!("http://{}/x", gw.proxy()))
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
    };
    assert_eq!(call(ORDERS_ONLY).await.unwrap().status(), 200);
    assert_eq!(last(&backend).header("x-generation"), Some("one"));
    assert_eq!(call(ALL_ACCESS).await.unwrap().status(), 401);

    std::fs::write(&file, text("two")).unwrap();
    let resp = client
        .post(format!("http://{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    // (The file watcher may have applied it first: either way the new file serves.)
    let said = resp.text().await.unwrap();
    assert!(said.starts_with("reloaded: generation "), "{said}");
    assert_eq!(call(ORDERS_ONLY).await.unwrap().status(), 200);
    let seen = last(&backend);
    assert_eq!(
        seen.header("x-generation"),
        Some("two"),
        "the new config, through the mapped upstream"
    );
    assert_eq!(call(ALL_ACCESS).await.unwrap().status(), 401);
}

/// `rate-limit` counts per subscription, as APIM does: one subscriber using up its calls leaves
/// another's untouched. `counter-key: subscription` does the same for a by-key limit; a route
/// without a subscription check has one counter.
#[tokio::test]
async fn rate_limit_counts_per_subscription() {
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let config = format!(
        r#"server: {{ listen: "127.0.0.1:0", admin: "127.0.0.1:0" }}
policies:
  limited: {{ inbound: [ {{ rate-limit: {{ calls: 2, renewal-period: 300 }} }} ] }}
  by-key:
    inbound: [ {{ rate-limit-by-key: {{ calls: 1, renewal-period: 300, counter-key: subscription }} }} ]
subscriptions:
  alice: {{ scope: all }}
  bob: {{ scope: all }}
routes:
  - name: a
    match: {{ path-prefix: /a }}
    upstream: "{url}"
    subscription: {{ api: a }}
    policy: limited
  - name: k
    match: {{ path-prefix: /k }}
    upstream: "{url}"
    subscription: {{ api: k }}
    policy: by-key
  - name: open
    match: {{ path-prefix: /open }}
    upstream: "{url}"
    policy: limited
"#,
        url = backend.url()
    );
    std::fs::write(&file, config).unwrap();
    let (model, _) = portcullis_config::load(&file).unwrap();
    let mut keys = SubscriptionKeys::new();
    keys.add("alice", STARTER_1);
    keys.add("bob", UNLIMITED);
    let gw = InProcess::bind_with(
        &model,
        RunOptions {
            subscription_keys: keys,
            ..RunOptions::default()
        },
    );
    let client = reqwest::Client::new();
    let call = |path: &'static str, key: Option<&'static str>| {
        let mut request = client.get(format!("http://{}{path}", gw.proxy()));
        if let Some(key) = key {
            request = request.header("Ocp-Apim-Subscription-Key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (alice, bob) = (Some(STARTER_1), Some(UNLIMITED));
    let mut seen = Vec::new();
    for (path, key) in [
        ("/a/1", alice),
        ("/a/2", alice),
        ("/a/3", alice),
        ("/a/4", bob),
        ("/a/5", bob),
        ("/a/6", bob),
        ("/k/1", alice),
        ("/k/2", alice),
        ("/k/3", bob),
        ("/open/1", None),
        ("/open/2", None),
        ("/open/3", None),
    ] {
        seen.push((path, call(path, key).await));
    }
    let want = [200, 200, 429, 200, 200, 429, 200, 429, 200, 200, 200, 429];
    let want: Vec<_> = seen.iter().map(|(p, _)| *p).zip(want).collect();
    assert_eq!(seen, want);
}
