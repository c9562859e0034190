//! In-process gateway tests with a hand-built model (no config file, no auth): routing, upstream
//! selection, rewrites, forwarded headers, upstream failures, admin endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use portcullis_config::{Listener, Model, Route, Server, Upstream};
use portcullis_proxy::{bind, Addresses, RunOptions, ShutdownHandle, Stop};
use portcullis_testkit::backend::{Backend, Failure};
use portcullis_testkit::ports::ClosedPort;

fn upstream(url: &str) -> Upstream {
    let rest = url.trim_start_matches("http://");
    let (host, port) = rest.rsplit_once(':').unwrap();
    Upstream {
        url: url.to_owned(),
        tls: false,
        host: host.to_owned(),
        port: port.parse().unwrap(),
    }
}

fn route(name: &str, prefix: &str, upstreams: Vec<Upstream>) -> Route {
    Route {
        name: name.to_owned(),
        matcher: portcullis_config::RouteMatch {
            path_prefix: Some(prefix.to_owned()),
            ..Default::default()
        },
        upstreams,
        policy: None,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        strip_prefix: false,
        rewrite_prefix: None,
        upstream_protocol: Default::default(),
        websocket_idle_timeout: Duration::from_secs(600),
        openapi: None,
        upstream_tls: None,
        host_header: Default::default(),
        health_check: None,
        dns_refresh: portcullis_config::DEFAULT_DNS_REFRESH,
        subscription: None,
    }
}

fn model(routes: Vec<Route>) -> Model {
    Model {
        source: PathBuf::from("test.yaml"),
        server: Server {
            listen: vec![Listener {
                addr: "127.0.0.1:0".to_owned(),
                tls: Vec::new(),
                h2c: false,
            }],
            admin: Some("127.0.0.1:0".to_owned()),
            token_cache_max_entries: 0,
            shutdown_grace: Duration::from_secs(2),
            threads: Some(1),
            work_stealing: false,
            normalisation: Default::default(),
            trusted_proxies: Vec::new(),
            rate_limit_store: Default::default(),
            trace: None,
            telemetry: None,
        },
        policies: Vec::new(),
        routes,
        backends: Vec::new(),
        subscriptions: Vec::new(),
    }
}

struct Running {
    addrs: Addresses,
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(model: &Model) -> Running {
        let gateway = bind(model, &RunOptions::default()).unwrap();
        let addrs = gateway.addresses().clone();
        let handle = gateway.shutdown_handle();
        let thread = std::thread::spawn(move || {
            gateway.run();
        });
        Running {
            addrs,
            handle,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.proxy[0].0)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin.unwrap())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop(Stop::Immediate);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn wait_ready(gw: &Running) {
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = client.get(gw.admin("/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gateway never became ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_to_upstream_without_auth() {
    let backend = Backend::start().unwrap();
    let mut api = route("api", "/api", vec![upstream(&backend.url())]);
    api.strip_prefix = true;
    let gw = Running::start(&model(vec![api]));
    wait_ready(&gw).await;
    let client = reqwest::Client::new();

    let resp = client
        .get(gw.url("/api/orders?x=1"))
        .header("X-Forwarded-For", "10.1.1.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/orders");
    assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
    // Overwritten, not appended: the client is not a trusted proxy.
    assert_eq!(reqs[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(reqs[0].header("x-forwarded-proto"), Some("http"));
    assert!(reqs[0]
        .header("x-forwarded-host")
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(reqs[0].header("x-request-id").unwrap().len(), 36);

    // Segment-aware prefix: /apix is not /api.
    let resp = client.get(gw.url("/apix")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["statusCode"], 404);
    assert_eq!(backend.request_count(), 1);

    // Counters move in pingora's `logging` hook, after the response is sent: poll (bounded).
    let not_found = r#"reason="NoRoute",route="-",status="404"} 1"#;
    let fetch = || async {
        let resp = client.get(gw.admin("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    };
    let metrics = portcullis_testkit::wait::poll_text(500, fetch, |m| m.contains(not_found)).await;
    assert!(
        metrics.contains(r#"portcullis_requests_total{reason="ok",route="api",status="200"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(not_found), "{metrics}");
    assert_eq!(
        client
            .get(gw.admin("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_answer_json_502_and_504() {
    let backend = Backend::start().unwrap();
    // A port nobody listens on, reserved while the test runs.
    let dead = ClosedPort::reserve().unwrap();
    let mut slow = route("slow", "/slow", vec![upstream(&backend.url())]);
    slow.timeout = Duration::from_millis(200);
    let gw = Running::start(&model(vec![
        route("down", "/down", vec![upstream(&dead.url())]),
        slow,
    ]));
    wait_ready(&gw).await;
    let client = reqwest::Client::new();

    let resp = client.get(gw.url("/down")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["statusCode"], 502);
    // Counted under its reason (in the `logging` hook, after the response: polled, bounded).
    let down =
        r#"portcullis_requests_total{reason="UpstreamUnavailable",route="down",status="502"} 1"#;
    let fetch = || async {
        let resp = client.get(gw.admin("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    };
    let metrics = portcullis_testkit::wait::poll_text(500, fetch, |m| m.contains(down)).await;
    assert!(metrics.contains(down), "{metrics}");

    backend.set_delay(Duration::from_secs(2));
    let resp = client.get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["statusCode"], 504);

    backend.set_delay(Duration::ZERO);
    backend.set_failure(Failure::Close);
    let resp = client.get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_skips_a_dead_peer() {
    let a = Backend::start().unwrap();
    let b = Backend::start().unwrap();
    let dead = ClosedPort::reserve().unwrap();
    let gw = Running::start(&model(vec![route(
        "rr",
        "/",
        vec![
            upstream(&a.url()),
            upstream(&dead.url()),
            upstream(&b.url()),
        ],
    )]));
    wait_ready(&gw).await;
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let resp = client.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(a.request_count() + b.request_count(), 6);
    assert!(a.request_count() >= 2 && b.request_count() >= 2);
}
