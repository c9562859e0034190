//! Shared pieces of the end-to-end tests: models built in code, the gateway in process
//! ([`InProcess`], through `portcullis_proxy::bind`) and the gateway binary as a child process
//! ([`Gateway`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::Policy;
use portcullis_config::{KeySource, Listener, Model, PolicyModel, Route, Server, Upstream};
use portcullis_proxy::{bind, Addresses, RunOptions, ShutdownHandle, Stop};

// ---------------------------------------------------------------- models built in code

/// A plain-http upstream at a loopback address.
pub fn upstream(addr: SocketAddr) -> Upstream {
    Upstream {
        url: format!("http://{addr}"),
        tls: false,
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// A path-prefix route to one upstream, under `policy` (`None`: anonymous).
pub fn route(name: &str, prefix: &str, to: SocketAddr, policy: Option<&str>) -> Route {
    Route {
        name: name.to_owned(),
        matcher: portcullis_config::RouteMatch {
            path_prefix: Some(prefix.to_owned()),
            ..Default::default()
        },
        upstreams: vec![upstream(to)],
        policy: policy.map(str::to_owned),
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

/// A model on loopback port 0 with an admin listener, one worker thread, the token cache off
/// (tests that want it set `server.token_cache_max_entries`).
pub fn model(name: &str, policies: Vec<(Policy, Vec<KeySource>)>, routes: Vec<Route>) -> Model {
    Model {
        source: PathBuf::from(name),
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
        policies: policies
            .into_iter()
            .map(|(policy, key_sources)| PolicyModel::validate_only(Arc::new(policy), key_sources))
            .collect(),
        routes,
        backends: Vec::new(),
        subscriptions: Vec::new(),
    }
}

/// Seconds since the epoch, for tokens minted relative to the real clock.
pub fn now() -> i64 {
    #[allow(clippy::disallowed_methods)] // tests mint tokens relative to the real clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch (aligning a test with rate-limit windows).
pub fn now_ms() -> u128 {
    #[allow(clippy::disallowed_methods)] // as `now`
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

// ---------------------------------------------------------------- the gateway in process

/// The real gateway serving `model` on its own thread; stopped (immediately) on drop.
pub struct InProcess {
    /// Where it listens.
    pub addrs: Addresses,
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Bound and serving, key sources not necessarily loaded (see [`InProcess::wait_ready`]).
    /// Key fetch retries are shortened so outage tests recover quickly.
    pub fn bind(model: &Model) -> InProcess {
        Self::bind_with(model, RunOptions::default())
    }

    /// Loaded from `file` and bound with it as the reloadable config (`POST /reload` works).
    pub fn from_file(file: &Path) -> InProcess {
        let (model, _warnings) = portcullis_config::load(file).unwrap();
        let opts = RunOptions {
            config_path: Some(file.to_owned()),
            ..RunOptions::default()
        };
        Self::bind_with(&model, opts)
    }

    /// Bound with `opts` (key fetch retries shortened as for [`InProcess::bind`]).
    pub fn bind_with(model: &Model, mut opts: RunOptions) -> InProcess {
        opts.key_store.refresh.backoff_min = Duration::from_millis(50);
        opts.key_store.refresh.backoff_max = Duration::from_millis(200);
        // Bound on a plain thread: start-up may block (upstream resolution, signal set-up) and
        // the caller is usually on a tokio runtime.
        let gateway = std::thread::scope(|s| s.spawn(|| bind(model, &opts)).join())
            .unwrap()
            .unwrap();
        let addrs = gateway.addresses().clone();
        let handle = gateway.shutdown_handle();
        let thread = std::thread::spawn(move || {
            gateway.run();
        });
        InProcess {
            addrs,
            handle,
            thread: Some(thread),
        }
    }

    /// Bound, serving, and ready (`/readyz` 200: every key source loaded).
    pub async fn start(model: &Model) -> InProcess {
        let gw = InProcess::bind(model);
        gw.wait_ready().await;
        gw
    }

    /// As [`InProcess::start`], with subscription keys (what `--subscription-key` gives `run`).
    pub async fn start_with_keys(
        model: &Model,
        keys: portcullis_proxy::SubscriptionKeys,
    ) -> InProcess {
        let opts = RunOptions {
            subscription_keys: keys,
            ..RunOptions::default()
        };
        let gw = Self::bind_with(model, opts);
        gw.wait_ready().await;
        gw
    }

    /// The first proxy listener.
    pub fn proxy(&self) -> SocketAddr {
        self.addrs.proxy[0].0
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin.unwrap()
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin());
        let resp = reqwest::get(url).await.unwrap();
        resp.text().await.unwrap()
    }

    /// Polls `/metrics` (bounded, 10 s) until the unlabelled metric `name` is at least `at_least`;
    /// the last text either way, for the caller's assertions. For counters a background task
    /// updates after the event a test can see (an exporter counting a batch once the collector
    /// has answered).
    pub async fn metrics_when(&self, name: &str, at_least: f64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics().await;
            if metric_value(&text, name) >= at_least || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops as SIGTERM would (drain, then the telemetry flush) and waits until it has stopped.
    pub fn stop_gracefully(mut self) {
        self.handle.stop(Stop::Graceful);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Polls `/readyz` until 200 (bounded): the gateway's own readiness, not a guess.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.admin());
        for _ in 0..500 {
            if let Ok(r) = client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gateway never became ready");
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.handle.stop(Stop::Immediate);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- TLS

/// A self-signed certificate for `localhost`, written to `dir`: the listener's `tls` entry and
/// the certificate (DER) for a client to trust.
pub fn localhost_certificate(dir: &std::path::Path) -> (portcullis_config::Tls, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (
        portcullis_config::Tls { cert, key },
        certified.cert.der().to_vec(),
    )
}

/// A TLS client trusting `roots` only (aws-lc-rs, the safe default versions), offering ALPN
/// `alpn`.
pub fn tls_client_config(roots: rustls::RootCertStore, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// An HTTP/2 connection over TLS (ALPN `h2`, checked) to `localhost:port`, trusting `cert_der`:
/// the request handle and the connection, which the caller drives (spawns).
pub async fn h2_over_tls(
    addr: SocketAddr,
    cert_der: Vec<u8>,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    h2::client::Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, bytes::Bytes>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.into()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(roots, b"h2"));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2::client::handshake(tls).await.unwrap()
}

// ---------------------------------------------------------------- raw HTTP/1.1

/// Send raw bytes on a fresh connection (the request says `Connection: close`), read to the end
/// (bounded), return the status (0 when the connection closed without an answer).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let exchange = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the gateway answers (or closes) within 10 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------- TLS material

/// The dev token server with an https listener, which generates a CA and a certificate for
/// 127.0.0.1/localhost as `dir/tls/{ca,cert,key}.pem`.
pub async fn idp_with_generated_tls(dir: &Path) -> portcullis_idp::IdpHandle {
    let idp_yaml = r#"
listen: "127.0.0.1:0"
https: { listen: "127.0.0.1:0", generate: true, cert-file: tls/cert.pem, key-file: tls/key.pem, ca-file: tls/ca.pem }
issuer: "http://127.0.0.1:{port}/realm"
"#;
    let config = portcullis_idp::IdpConfig::from_yaml(idp_yaml, dir).unwrap();
    portcullis_idp::start(config).await.unwrap()
}

/// A client that trusts the CA certificate(s) in `ca_pem` (besides the platform store).
pub fn client_trusting(ca_pem: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- the binary as a child process

/// `portcullis run -c FILE` as a child process, ready (keys loaded) when returned.
pub struct Gateway {
    child: Child,
    /// The first proxy listener's URL (`proxy=` lists them comma-separated, in config order).
    pub proxy: String,
    /// The admin listener's URL.
    pub admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `text` (a gateway.yaml) and runs it; its logs are discarded.
    pub async fn run(text: &str, client: &reqwest::Client) -> Gateway {
        Self::run_with(text, client, &[], &[], Stdio::null()).await
    }

    /// As [`Gateway::run`], with extra arguments before `run` (`--log-format json`), extra
    /// environment variables (`RUST_LOG`) and the child's stderr (its logs) sent to `stderr`.
    pub async fn run_with(
        text: &str,
        client: &reqwest::Client,
        global_args: &[&str],
        envs: &[(&str, &str)],
        stderr: Stdio,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, text).unwrap();
        let mut child = spawn(&config, global_args, envs, stderr);
        let banner = await_ready(&mut child, || format!("config:\n{text}")).await;
        let proxy = banner
            .proxies
            .split(',')
            .next()
            .unwrap_or_default()
            .to_owned();
        Gateway {
            child,
            proxy,
            admin: banner.admin,
            client: client.clone(),
            _dir: dir,
        }
    }

    /// GET `path` with a bearer token: status and body.
    pub async fn call(&self, path: &str, token: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.proxy))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

impl Gateway {
    /// The child's stderr, when it was spawned with `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of an unlabelled metric in a `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// `portcullis [global_args] run -c config` with stdout piped (the ready banner is read from it).
pub fn spawn(config: &Path, global_args: &[&str], envs: &[(&str, &str)], stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(global_args)
        .args(["run", "-c"])
        .arg(config)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The listener URLs a started gateway prints on its first stdout line.
pub struct Banner {
    /// `proxy=`: the proxy listeners, comma-separated, in config order.
    pub proxies: String,
    /// `admin=`: the admin listener.
    pub admin: String,
}

/// Read the banner of a [`spawn`]ed gateway and wait (bounded) until its `/readyz` answers 200
/// (keys loaded). `context` is added to a failure message (the config, the logs so far).
pub async fn await_ready(child: &mut Child, context: impl Fn() -> String) -> Banner {
    let banner = read_banner(child, &context);
    let client = reqwest::Client::new();
    for _ in 0..1000 {
        if let Ok(r) = client.get(format!("{}/readyz", banner.admin)).send().await {
            if r.status() == 200 {
                return banner;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "gateway never became ready (keys not loaded?): {}",
        context()
    );
}

/// The listener URLs of a [`spawn`]ed gateway (its first stdout line; the listeners are bound
/// then, the keys not necessarily loaded).
pub fn read_banner(child: &mut Child, context: impl Fn() -> String) -> Banner {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?} ({})", context()))
            .to_owned()
    };
    Banner {
        proxies: field("proxy="),
        admin: field("admin="),
    }
}

impl Gateway {
    /// Stops it with SIGTERM and waits: its logs are complete afterwards.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM {pid}");
        self.child.wait().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
