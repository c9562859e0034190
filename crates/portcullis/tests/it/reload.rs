//! End-to-end tests: config reload without restart.
//!
//! The built binary runs `run -c FILE` on a temporary config (loopback port 0, static keys from a
//! `jwks-file`, the recording backend); the tests change the file (rewrite, Kubernetes-style
//! symlink swap), send SIGHUP or `POST /reload`, and wait on the reload counters in `/metrics`,
//! never on fixed sleeps. The gateway's stderr is collected to check the logged diagnostics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{jwks, TestKey};
use serde_json::json;

use crate::support::{await_ready, spawn};

const ISSUER: &str = "https://issuer.test/";
const AUDIENCE: &str = "api://orders";

/// A gateway config: one `orders` policy keyed by `keys.json` next to the file, and `routes`
/// (YAML list items, already indented).
fn config(routes: &str) -> String {
    config_for(AUDIENCE, routes)
}

/// [`config`] with the `orders` policy accepting `audience`.
fn config_for(audience: &str, routes: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\n  threads: 1\n\
         policies:\n  orders:\n    validate-jwt:\n      issuer-signing-keys:\n        - jwks-file: keys.json\n      \
         audiences: [{audience}]\n      issuers: [\"{ISSUER}\"]\n\
         routes:\n{routes}"
    )
}

fn route(name: &str, prefix: &str, backend: &Backend, policy: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path-prefix: {prefix} }}\n    upstream: {}\n    policy: {policy}\n",
        backend.url()
    )
}

fn write_keys(dir: &Path, key: &TestKey) {
    std::fs::write(dir.join("keys.json"), jwks(&[key]).to_string()).unwrap();
}

/// A temporary directory holding `keys.json` (for `key`) and `gateway.yaml` (`text`); the file's
/// path is returned with it.
fn config_dir(key: &TestKey, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path(), key);
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

fn token(key: &TestKey) -> String {
    #[allow(clippy::disallowed_methods)] // tokens are minted relative to the real clock
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    key.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "iat": now, "exp": now + 600}))
        .unwrap()
}

/// The binary, running; killed when dropped.
struct Running {
    child: Child,
    proxy: String,
    admin: String,
    log: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Running {
    async fn start(config: &Path) -> Running {
        let mut child = spawn(config, &[], &[], Stdio::piped());
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let banner = await_ready(&mut child, || log.lock().unwrap().clone()).await;
        Running {
            proxy: banner.proxies,
            admin: banner.admin,
            child,
            log,
            client: reqwest::Client::new(),
        }
    }

    fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `done` holds for it (bounded polling): log lines are written by the
    /// gateway's log thread, a moment after the event they describe.
    async fn log_until(&self, done: impl Fn(&str) -> bool) -> String {
        portcullis_testkit::wait::poll_text(500, || async { self.log() }, done).await
    }

    async fn metrics(&self) -> String {
        let resp = self.client.get(self.admin("/metrics")).send().await;
        resp.unwrap().text().await.unwrap()
    }

    /// The value of an unlabelled metric.
    async fn metric(&self, name: &str) -> f64 {
        crate::support::metric_value(&self.metrics().await, name)
    }

    /// Poll `/metrics` until `name` reaches `value` (bounded: the watcher polls once a second).
    async fn wait_metric(&self, name: &str, value: f64) {
        for _ in 0..2000 {
            if self.metric(name).await >= value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached {value}: {}", self.log());
    }

    async fn get(&self, path: &str, token: Option<&str>) -> u16 {
        let mut req = self.client.get(format!("{}{path}", self.proxy));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    fn signal(&self, sig: &str) {
        let sent = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const OK: &str = "portcullis_config_reload_successes_total";
const FAILED: &str = "portcullis_config_reload_failures_total";
const GENERATION: &str = "portcullis_config_generation";

#[tokio::test(flavor = "multi_thread")]
async fn rewriting_the_file_changes_a_routes_policy_without_restart() {
    let backend = Backend::start().unwrap();
    let key = TestKey::rsa("k1").unwrap();
    let (_dir, file) = config_dir(&key, &config(&route("orders", "/api", &backend, "none")));
    let gw = Running::start(&file).await;
    assert_eq!(gw.get("/api/1", None).await, 200);
    assert_eq!(gw.metric(GENERATION).await, 1.0);

    // A plain rewrite (truncate, then write), as many tools do.
    std::fs::write(&file, config(&route("orders", "/api", &backend, "orders"))).unwrap();
    gw.wait_metric(OK, 1.0).await;
    assert_eq!(gw.metric(GENERATION).await, 2.0);
    assert_eq!(gw.metric(FAILED).await, 0.0);
    assert_eq!(gw.get("/api/1", None).await, 401);
    assert_eq!(gw.get("/api/1", Some(&token(&key))).await, 200);
    let log = gw.log_until(|l| l.contains("config reloaded")).await;
    assert!(log.contains("config reloaded"), "{log}");
}

/// A token cached (and its claim rules remembered) under the old config faces the new config's
/// rules: the same policy name and index, the same key file, only the audience changed.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_token_faces_the_reloaded_policys_rules() {
    let backend = Backend::start().unwrap();
    let key = TestKey::rsa("k1").unwrap();
    let routes = route("orders", "/api", &backend, "orders");
    let (_dir, file) = config_dir(&key, &config(&routes));
    let gw = Running::start(&file).await;
    let token = token(&key);
    assert_eq!(gw.get("/api/1", Some(&token)).await, 200);
    assert_eq!(gw.get("/api/1", Some(&token)).await, 200);
    assert_eq!(gw.metric("portcullis_token_cache_hits_total").await, 1.0);

    std::fs::write(&file, config_for("api://billing", &routes)).unwrap();
    gw.wait_metric(OK, 1.0).await;
    assert_eq!(gw.get("/api/1", Some(&token)).await, 401);
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_config_and_the_key_files_it_names() {
    let backend = Backend::start().unwrap();
    let old_key = TestKey::rsa("old").unwrap();
    let new_key = TestKey::rsa("new").unwrap();
    let (dir, file) = config_dir(
        &old_key,
        &config(&route("orders", "/api", &backend, "orders")),
    );
    let gw = Running::start(&file).await;
    assert_eq!(gw.get("/api/1", Some(&token(&old_key))).await, 200);
    assert_eq!(gw.get("/api/1", Some(&token(&new_key))).await, 401);

    // Key files are not watched (the config file did not change): SIGHUP picks them up.
    write_keys(dir.path(), &new_key);
    gw.signal("-HUP");
    gw.wait_metric(OK, 1.0).await;
    assert_eq!(gw.get("/api/1", Some(&token(&new_key))).await, 200);
    assert_eq!(gw.get("/api/1", Some(&token(&old_key))).await, 401);
    let log = gw.log_until(|l| l.contains("SIGHUP")).await;
    assert!(log.contains("SIGHUP"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_config_is_rejected_with_file_line_col_and_the_old_one_keeps_serving() {
    let backend = Backend::start().unwrap();
    let key = TestKey::rsa("k1").unwrap();
    let valid = config(&route("orders", "/api", &backend, "orders"));
    let (_dir, file) = config_dir(&key, &valid);
    let gw = Running::start(&file).await;

    // The route names a policy that does not exist; `server` gains an unknown key (line 2).
    let broken = config(&route("orders", "/api", &backend, "no-such-policy"))
        .replace("server:\n", "server:\n  colour: blue\n");
    std::fs::write(&file, &broken).unwrap();
    gw.wait_metric(FAILED, 1.0).await;
    assert_eq!(gw.metric(OK).await, 0.0);
    assert_eq!(gw.metric(GENERATION).await, 1.0);
    // The old config serves: the policy still applies.
    assert_eq!(gw.get("/api/1", None).await, 401);
    assert_eq!(gw.get("/api/1", Some(&token(&key))).await, 200);
    let file_name = file.display().to_string();
    let log = gw
        .log_until(|l| {
            l.contains(&format!("{file_name}:2:3: error:")) && l.contains("no-such-policy")
        })
        .await;
    assert!(
        log.contains(&format!("{file_name}:2:3: error:")),
        "no diagnostic for the unknown key: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&format!("{file_name}:"))
            && l.contains("no-such-policy")),
        "no diagnostic for the unknown policy: {log}"
    );

    // The same broken bytes are not retried by the watcher; POST /reload retries and answers 422.
    let resp = gw.client.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains(&format!("{file_name}:2:3: error:")));
    assert_eq!(gw.metric(FAILED).await, 2.0);

    // Fixed: applied.
    std::fs::write(&file, config(&route("orders", "/api", &backend, "none"))).unwrap();
    gw.wait_metric(OK, 1.0).await;
    assert_eq!(gw.get("/api/1", None).await, 200);
    let resp = gw.client.post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "reloaded: generation 3\n");
    assert_eq!(gw.metric(GENERATION).await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::rsa("k1").unwrap();
    write_keys(dir.path(), &key);
    // dir/ts1/gateway.yaml, dir/..data -> ts1, dir/gateway.yaml -> ..data/gateway.yaml: what the
    // kubelet builds for a ConfigMap volume.
    let ts1 = dir.path().join("ts1");
    std::fs::create_dir(&ts1).unwrap();
    write_keys(&ts1, &key);
    std::fs::write(
        ts1.join("gateway.yaml"),
        config(&route("orders", "/api", &backend, "none")),
    )
    .unwrap();
    symlink("ts1", dir.path().join("..data")).unwrap();
    let file = dir.path().join("gateway.yaml");
    symlink("..data/gateway.yaml", &file).unwrap();
    let gw = Running::start(&file).await;
    assert_eq!(gw.get("/api/1", None).await, 200);

    // The update: a new timestamped directory, then ..data retargeted by an atomic rename.
    let ts2 = dir.path().join("ts2");
    std::fs::create_dir(&ts2).unwrap();
    write_keys(&ts2, &key);
    std::fs::write(
        ts2.join("gateway.yaml"),
        config(&route("orders", "/api", &backend, "orders")),
    )
    .unwrap();
    symlink("ts2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_dir_all(&ts1).unwrap();

    gw.wait_metric(OK, 1.0).await;
    assert_eq!(gw.get("/api/1", None).await, 401);
    assert_eq!(gw.get("/api/1", Some(&token(&key))).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let backend = Backend::start().unwrap();
    // The request stays in flight until released below: no guessed window for the reload.
    backend.hold();
    let key = TestKey::rsa("k1").unwrap();
    let (_dir, file) = config_dir(&key, &config(&route("slow", "/slow", &backend, "none")));
    let gw = Running::start(&file).await;

    let in_flight = tokio::spawn({
        let req = gw.client.get(format!("{}/slow/1", gw.proxy));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    for _ in 0..1000 {
        if backend.request_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        backend.request_count(),
        1,
        "the request never reached the backend"
    );

    // Route 0 becomes `fresh` on another prefix: the new generation has no `slow` route.
    std::fs::write(&file, config(&route("fresh", "/fresh", &backend, "orders"))).unwrap();
    gw.wait_metric(OK, 1.0).await;
    assert!(
        !in_flight.is_finished(),
        "the reload must happen while the request is in flight"
    );
    assert_eq!(gw.get("/slow/2", None).await, 404);
    backend.release();

    // The old request completes, and is logged and counted under its own (old) route.
    assert_eq!(in_flight.await.unwrap(), 200);
    // Counted in the logging hook, just after the response: polled, bounded.
    let counted = |m: &str| {
        m.lines().any(|l| {
            l.starts_with("portcullis_requests_total")
                && l.contains("route=\"slow\"")
                && l.contains("status=\"200\"")
        })
    };
    let metrics = portcullis_testkit::wait::poll_text(500, || gw.metrics(), counted).await;
    assert!(counted(&metrics), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_only_settings_are_kept_with_a_warning_and_the_rest_applies() {
    let backend = Backend::start().unwrap();
    let key = TestKey::rsa("k1").unwrap();
    let (_dir, file) = config_dir(&key, &config(&route("orders", "/api", &backend, "none")));
    let gw = Running::start(&file).await;

    // Another admin address, thread count and rate-limit store (restart only) plus a route
    // change (reloadable).
    let changed = config(&route("orders", "/api", &backend, "orders"))
        .replace("  admin: \"127.0.0.1:0\"\n", "  admin: \"127.0.0.1:1\"\n")
        .replace(
            "  threads: 1\n",
            "  threads: 2\n  rate-limit-store: redis://127.0.0.1:1\n",
        );
    std::fs::write(&file, changed).unwrap();
    gw.wait_metric(OK, 1.0).await;
    let keys = ["server.admin", "server.threads", "server.rate-limit-store"];
    let log = gw
        .log_until(|l| keys.iter().all(|k| l.contains(&format!("{k} changed"))))
        .await;
    for key in keys {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("{key} changed"))),
            "no warning for {key}: {log}"
        );
    }
    assert!(!log.contains("server.listen changed"), "{log}");
    // The admin listener is where it was (the metrics above came from it), the route changed.
    assert_eq!(gw.get("/api/1", None).await, 401);
    assert_eq!(gw.get("/api/1", Some(&token(&key))).await, 200);
}
