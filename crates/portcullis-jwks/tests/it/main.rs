//! Integration tests of the key store against a real JWKS / discovery server on loopback
//! (`portcullis_testkit::jwks_server`). Lifecycle values are short so each test ends in seconds;
//! waits poll a condition with a deadline, never a fixed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod hostile;
mod outage;
mod reload;
mod review;
mod rotation;
mod storm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::{Policy, VerifiedToken};
use portcullis_config::{KeyLifecycle, KeySource, Model, PolicyModel, Server};
use portcullis_jwks::{FetchOptions, KeyStore, KeyStoreOptions, RefreshBounds};
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn lifecycle(cooldown: Duration, refresh: Duration, max_stale: Duration) -> KeyLifecycle {
    KeyLifecycle {
        unknown_kid_cooldown: cooldown,
        refresh_interval: refresh,
        // Short, so max-age clamps happen within a test.
        min_refresh_interval: ms(200),
        max_stale,
    }
}

pub fn jwks_uri(server: &JwksServer, lc: KeyLifecycle) -> KeySource {
    KeySource::JwksUri {
        url: server.jwks_url(),
        lifecycle: lc,
    }
}

pub fn openid(server: &JwksServer, lc: KeyLifecycle) -> KeySource {
    openid_speaking_for(server, lc, &[])
}

/// An openid-config source whose keys also speak for `issuers` (what the config layer gives the
/// only openid-config entry of a policy that lists issuers).
pub fn openid_speaking_for(server: &JwksServer, lc: KeyLifecycle, issuers: &[&str]) -> KeySource {
    KeySource::OpenIdConfig {
        url: server.discovery_url(),
        issuers: issuers.iter().map(|s| s.to_string()).collect(),
        lifecycle: lc,
    }
}

pub fn policy(name: &str, issuers: &[&str], sources: Vec<KeySource>) -> PolicyModel {
    let mut p = Policy::new(name);
    p.issuers = issuers.iter().map(|s| s.to_string()).collect();
    PolicyModel::validate_only(Arc::new(p), sources)
}

pub fn model(policies: Vec<PolicyModel>) -> Model {
    Model {
        source: PathBuf::from("test.yaml"),
        server: Server {
            listen: Vec::new(),
            admin: None,
            token_cache_max_entries: 0,
            shutdown_grace: Duration::from_secs(1),
            threads: None,
            work_stealing: false,
            normalisation: Default::default(),
            trusted_proxies: Vec::new(),
            rate_limit_store: Default::default(),
            trace: None,
            telemetry: None,
        },
        policies,
        routes: Vec::new(),
        backends: Vec::new(),
        subscriptions: Vec::new(),
    }
}

/// Short bounds so failures, retries and max-age clamps happen within a test.
pub fn fast_options() -> KeyStoreOptions {
    KeyStoreOptions {
        fetch: FetchOptions {
            connect_timeout: ms(500),
            total_timeout: ms(1000),
            ..FetchOptions::default()
        },
        refresh: RefreshBounds {
            max_max_age: Duration::from_secs(3600),
            backoff_min: ms(50),
            backoff_max: ms(300),
        },
    }
}

/// A store with its background refresher running.
pub struct Running {
    pub store: Arc<KeyStore>,
    pub registry: prometheus::Registry,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(model: &Model) -> Running {
        let registry = prometheus::Registry::new();
        let store = KeyStore::with_options(model, &registry, fast_options()).unwrap();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(store.clone().run(rx));
        Running {
            store,
            registry,
            shutdown,
            task,
        }
    }

    /// One policy `p` (index 0) with this one source, started and ready.
    pub async fn ready_with(source: KeySource) -> Running {
        let run = Running::start(&model(vec![policy("p", &[], vec![source])])).await;
        run.wait_ready().await;
        run
    }

    pub async fn wait_ready(&self) -> Duration {
        let store = self.store.clone();
        wait_until(ms(5000), "store ready", move || store.is_ready()).await
    }

    /// Stop the refresher and check it ends promptly.
    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(ms(2000), self.task)
            .await
            .expect("run() ends on shutdown")
            .unwrap();
    }

    /// Failed fetches counted with this `reason` label.
    pub fn failures(&self, reason: &str) -> f64 {
        self.metric(
            "portcullis_jwks_fetch_failures_total",
            &[("reason", reason)],
        )
    }

    /// Sum of a metric family's samples whose labels include every `(name, value)` given
    /// (read from the Prometheus text exposition, as a scraper would).
    pub fn metric(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(n, v)| l.contains(&format!("{n}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A JWKS / discovery server publishing one fresh RSA key.
pub async fn idp_with_key(kid: &str) -> (JwksServer, TestKey) {
    let server = JwksServer::start().await.unwrap();
    let key = TestKey::rsa(kid).unwrap();
    server.set_keys(&[&key]);
    (server, key)
}

/// Poll `cond` every 10 ms until true; panic after `deadline`. Returns how long it took.
pub async fn wait_until(
    deadline: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(ms(10)).await;
    }
}

/// Claims valid for an hour.
pub fn claims(iss: &str) -> Value {
    json!({ "iss": iss, "sub": "alice", "aud": "api://test", "exp": 4_102_444_800u64 })
}

pub fn token(key: &TestKey, iss: &str) -> String {
    key.sign(&claims(iss)).unwrap()
}

pub fn verify(
    store: &KeyStore,
    policy_idx: usize,
    token: &str,
) -> Result<VerifiedToken, portcullis_auth::AuthError> {
    portcullis_auth::verify_token(
        token,
        &store.snapshot(portcullis_config::PolicyId::new(policy_idx)),
        true,
    )
}

/// Log to the test's output when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
