//! End-to-end tests: active health checks (route key `health-check`).
//!
//! The real gateway in process with two recording backends and a 100 ms probe interval; a
//! backend is told to answer 503 on the probe path only (`Backend::set_path_failure`), so the
//! requests it would serve still succeed and any that reach it while it is out are seen. Every
//! wait is bounded polling of `/metrics` or of the backends' records, never a fixed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{HealthCheck, Route};
use portcullis_testkit::backend::{Backend, Failure};

use crate::support::{model, route, upstream, InProcess};

const PROBE: &str = "/health";

fn check() -> HealthCheck {
    HealthCheck {
        path: PROBE.to_owned(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        expected_statuses: vec![200..=399],
        host: Some("probe.internal".to_owned()),
    }
}

fn checked_route(backends: &[&Backend]) -> Route {
    let mut r = route("api", "/", backends[0].addr(), None);
    r.upstreams = backends.iter().map(|b| upstream(b.addr())).collect();
    r.health_check = Some(check());
    r
}

/// The value of the sample of `name` carrying every `label="value"` pair, if present.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn healthy(metrics: &str, peer: SocketAddr) -> Option<f64> {
    let peer = peer.to_string();
    sample(
        metrics,
        "portcullis_upstream_healthy",
        &[("route", "api"), ("peer", &peer)],
    )
}

fn probes(metrics: &str, peer: SocketAddr, result: &str) -> f64 {
    let peer = peer.to_string();
    sample(
        metrics,
        "portcullis_upstream_health_checks_total",
        &[("route", "api"), ("peer", &peer), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Polls `/metrics` (bounded: 30 s, for a loaded machine) until `done` holds; panics with the
/// last text otherwise.
async fn metrics_until(gw: &InProcess, what: &str, done: impl Fn(&str) -> bool) -> String {
    let text = portcullis_testkit::wait::poll_text(3000, || gw.metrics(), &done).await;
    assert!(done(&text), "{what}; metrics:\n{text}");
    text
}

/// Polls `cond` every 10 ms for at most 30 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Clients sending requests back to back until stopped; counts the answers and any non-200.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    bad: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, done, bad) = (stop.clone(), done.clone(), bad.clone());
                let client = reqwest::Client::new();
                let url = format!("http://{proxy}/orders");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                        if status.ok() != Some(200) {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            bad,
            tasks,
        }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests have been answered (so every request that was in flight when
    /// called has ended).
    async fn answered(&self, n: usize) {
        let target = self.done() + n;
        until("load answered", || self.done() >= target).await;
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.bad.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_peer_leaves_the_rotation_gets_nothing_while_out_and_comes_back() {
    let (a, b) = (Backend::start().unwrap(), Backend::start().unwrap());
    let gw = InProcess::start(&model(
        "health.yaml",
        vec![],
        vec![checked_route(&[&a, &b])],
    ))
    .await;
    metrics_until(&gw, "both peers healthy at start", |m| {
        healthy(m, a.addr()) == Some(1.0) && healthy(m, b.addr()) == Some(1.0)
    })
    .await;
    // Probes carry the configured Host and reach the probe path.
    let probe = b.requests().into_iter().find(|r| r.path == PROBE).unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(probe.header("host"), Some("probe.internal"));

    let load = Load::start(gw.proxy(), 2);
    until("both peers serve", || {
        a.request_count_except(PROBE) > 0 && b.request_count_except(PROBE) > 0
    })
    .await;

    b.set_path_failure(PROBE, Failure::Status(503));
    let out = metrics_until(&gw, "b out of the rotation", |m| {
        healthy(m, b.addr()) == Some(0.0)
    })
    .await;
    assert!(
        probes(&out, b.addr(), "unexpected_status") >= 3.0,
        "out before unhealthy-threshold failures:\n{out}"
    );
    assert_eq!(healthy(&out, a.addr()), Some(1.0), "{out}");
    // Requests that picked b before it went out end; from then on b receives nothing.
    load.answered(4).await;
    let (b_before, a_before) = (b.request_count_except(PROBE), a.request_count_except(PROBE));
    load.answered(60).await;
    assert_eq!(
        b.request_count_except(PROBE),
        b_before,
        "a request reached the unhealthy peer"
    );
    // Of the 60 answered, up to 2 (one per load task) may have reached a before `a_before` was
    // read: they were in flight then.
    assert!(a.request_count_except(PROBE) >= a_before + 60 - 2);
    let m = gw.metrics().await;
    assert_eq!(
        healthy(&m, b.addr()),
        Some(0.0),
        "b must still be out:\n{m}"
    );

    b.set_path_failure(PROBE, Failure::None);
    let back = metrics_until(&gw, "b back in the rotation", |m| {
        healthy(m, b.addr()) == Some(1.0)
    })
    .await;
    assert!(probes(&back, b.addr(), "success") >= 1.0, "{back}");
    until("b serves again", || {
        b.request_count_except(PROBE) > b_before
    })
    .await;
    assert_eq!(
        load.stop().await,
        0,
        "every request through the gateway got 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_peer_is_unhealthy_all_of_them_serve() {
    let (a, b) = (Backend::start().unwrap(), Backend::start().unwrap());
    a.set_path_failure(PROBE, Failure::Status(500));
    b.set_path_failure(PROBE, Failure::Close);
    let gw = InProcess::start(&model(
        "health.yaml",
        vec![],
        vec![checked_route(&[&a, &b])],
    ))
    .await;
    let m = metrics_until(&gw, "both peers probed and out", |m| {
        probes(m, a.addr(), "unexpected_status") >= 1.0
            && probes(m, b.addr(), "response_error") >= 1.0
    })
    .await;
    assert_eq!(healthy(&m, a.addr()), Some(0.0), "{m}");
    assert_eq!(healthy(&m, b.addr()), Some(0.0), "{m}");
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let status = client
            .get(format!("http://{}/orders", gw.proxy()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    assert!(a.request_count_except(PROBE) > 0 && b.request_count_except(PROBE) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_time_out_and_connection_failures_count() {
    let a = Backend::start().unwrap();
    // A port nothing listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let slow = Backend::start().unwrap();
    slow.set_delay(Duration::from_millis(1500));
    let mut r = checked_route(&[&a, &slow]);
    r.upstreams.push(upstream(dead));
    let gw = InProcess::start(&model("health.yaml", vec![], vec![r])).await;
    let m = metrics_until(&gw, "timeouts and connect errors counted", |m| {
        probes(m, slow.addr(), "timeout") >= 1.0 && probes(m, dead, "connect_error") >= 1.0
    })
    .await;
    assert_eq!(healthy(&m, a.addr()), Some(1.0), "{m}");
    assert_eq!(healthy(&m, slow.addr()), Some(0.0), "{m}");
    assert_eq!(healthy(&m, dead), Some(0.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_a_reloaded_config_and_the_old_ones_stop() {
    let a = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let config = |probe: &str| {
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  threads: 1\n\
             routes:\n  - name: api\n    upstream: {}\n    policy: none\n    \
             health-check: {{ path: {probe}, interval: 100ms }}\n",
            a.url()
        )
    };
    std::fs::write(&file, config("/old-health")).unwrap();
    let gw = InProcess::from_file(&file);
    gw.wait_ready().await;
    let count = |path: &str| a.requests().iter().filter(|r| r.path == path).count();
    until("probes of the first config", || count("/old-health") >= 2).await;

    std::fs::write(&file, config("/new-health")).unwrap();
    let reloaded = reqwest::Client::new()
        .post(format!("http://{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200, "{:?}", reloaded.text().await);
    // Two new probes: the old generation's tasks were aborted when the first one ran, and any
    // old probe then in flight has landed.
    until("probes of the new config", || count("/new-health") >= 2).await;
    let old = count("/old-health");
    until("several new probes", || count("/new-health") >= 6).await;
    assert_eq!(
        count("/old-health"),
        old,
        "the old generation's probes still run"
    );
    let m = gw.metrics().await;
    assert_eq!(
        healthy(&m, a.addr()),
        Some(1.0),
        "the gauge shows the serving generation:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_peers_are_probed_over_tls() {
    // An https listener whose certificate comes from a private CA the gateway does not trust
    // (upstream CA bundles are another change): the probe fails in the TLS handshake, a
    // connect error. A plain-http probe of the same port would fail reading a response.
    let dir = tempfile::tempdir().unwrap();
    let idp = crate::support::idp_with_generated_tls(dir.path()).await;
    let tls = idp.https_addr().unwrap();
    let a = Backend::start().unwrap();
    let mut r = checked_route(&[&a]);
    r.upstreams.push(portcullis_config::Upstream {
        url: format!("https://{tls}"),
        tls: true,
        host: tls.ip().to_string(),
        port: tls.port(),
    });
    let gw = InProcess::start(&model("health.yaml", vec![], vec![r])).await;
    let m = metrics_until(&gw, "the TLS peer probed", |m| {
        probes(m, tls, "connect_error") >= 1.0
    })
    .await;
    assert_eq!(probes(&m, tls, "response_error"), 0.0, "{m}");
    assert_eq!(healthy(&m, tls), Some(0.0), "{m}");
    assert_eq!(healthy(&m, a.addr()), Some(1.0), "{m}");
}
