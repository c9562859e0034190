//! Config reload without restart: on SIGHUP, when the config file changes, or on `POST /reload`
//! (admin listener).
//!
//! What a reload swaps: everything the request path reads per request (routes with their resolved
//! upstreams, policies, the identity-header set, the key store) lives in one immutable
//! [`Generation`] behind an `ArcSwap`. A request takes one snapshot of it when its context is
//! created (`Gateway::new_ctx`) and keeps that `Arc` in its context to the end, so a request in
//! flight finishes on the generation it started with, and a new request never sees half of a
//! reload. The swap is a single pointer store.
//!
//! How: the new file is loaded and checked exactly as at start (`portcullis_config::load_str_opts`,
//! with the `--map-upstream`, `--listen` and `--admin` options the gateway started with),
//! routes are built (host names resolved, off the async threads), and the key store is
//! [`KeyStore::rebuild`]t, which keeps the keys, schedule and cooldown of every key source that still
//! exists, so a reload causes no refetch storm. Then the generation is swapped, the new store's
//! refresher is started and the old one's stopped. Any failure (a diagnostic with
//! `file:line:col`, an unresolvable upstream, an unreadable file) leaves the running generation
//! untouched: each diagnostic is logged at error level and
//! `portcullis_config_reload_failures_total` counts the attempt.
//!
//! Listener certificates (`listen[].tls`) reload too, without dropping a connection (see
//! `crate::tls`): every reload re-reads the files and checks them before anything is swapped (a
//! bad certificate rejects the whole reload, naming the file), and the watcher polls them like the
//! config file, replacing only the certificates of a listener whose files changed. A handshake
//! already done keeps its certificate; the next one gets the new set.
//!
//! Not reloadable (bound or sized at start): `server.listen` (addresses and the TLS file paths),
//! `server.admin`,
//! `server.threads`, `server.token-cache-max-entries`, `server.shutdown-grace`,
//! `server.rate-limit-store` and its knobs (the store lives on the gateway, so counters outlive
//! reloads). A reload that changes them logs a warning naming each and keeps the running values;
//! the rest of the file is applied.
//! `server.trusted-proxies` is per generation, so it reloads.
//!
//! Subscription keys (`--subscription-key`, `--subscription-keys`) come from the command line, not
//! the file: every generation is built with the keys the gateway started with, so a reload keeps
//! them (a reload that drops a subscription drops its keys' access, with a warning; one that
//! adds a subscription without a key warns as at start).
//!
//! Why a polling watcher and not inotify (`notify`): the watched thing is the *path* as the operator
//! gave it, through every symlink. Kubernetes updates a ConfigMap volume by writing a new timestamped
//! directory and atomically renaming the `..data` symlink; editors save by writing a temporary file
//! and renaming it over the original. inotify on the file then watches a dead inode, and watching the
//! directory needs per-pattern event logic (which rename matters, which symlink level changed). Reading
//! the path once a second and comparing the bytes sees every one of these, costs one small read a
//! second, needs no dependency and cannot miss an event (there are none to miss). A change is
//! debounced: the file must read the same twice, [`SETTLE`] apart, before it is loaded, so a
//! half-written file is not reported as a failed reload. Files the config refers to (`jwks-file`,
//! `certificate-file`) are re-read by every reload but not watched: send SIGHUP after changing
//! them. Listener certificate files are watched (above).
//!
//! SIGHUP: pingora does not handle it (its signal watch, replaced by `shutdown.rs`, takes SIGTERM,
//! SIGINT and SIGQUIT), and its default action would kill the process. [`arm_sighup`] installs the
//! handler while the gateway is being built, before anything serves, so a SIGHUP that arrives before
//! the reloader runs is harmless; the reloader then listens for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::IntoCaseHeaderName;
use portcullis_auth::Policy;
use portcullis_config::{Diagnostic, IpNet, Model, PolicyId, Server, Severity};
use prometheus::{Gauge, Histogram, IntCounter, IntGauge, Registry};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache::TokenCache;
use crate::error::BuildError;
use crate::health::HealthChecks;
use crate::identity::IdentityHeaders;
use crate::metrics::{Metrics, Resolved};
use crate::routes::Routes;
use crate::subscriptions::{SubscriptionKeys, Subscriptions};
use crate::tls::{read_files, CertSet, FileBytes, ListenerCerts};
use crate::KeyStore;

/// How often the config file is read for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A changed file must read the same again after this long before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Everything the request path reads from the config, immutable once built.
#[derive(Debug)]
pub struct Generation {
    /// 1 for the config the gateway started with, +1 per successful reload.
    pub number: u64,
    /// Routes in file order.
    pub routes: Routes,
    /// Each policy's token check and inbound steps, by [`PolicyId`] (the key store and the
    /// token cache use the same ids).
    policies: Vec<PolicyRuntime>,
    /// Headers no client may send.
    pub identity: IdentityHeaders,
    /// `server.trusted-proxies`: peers whose X-Forwarded-* are kept.
    pub trusted_proxies: Vec<IpNet>,
    /// Keys of this generation's policies.
    pub keys: Arc<KeyStore>,
    /// Verified-token cache, keyed by this generation's policy key scopes.
    pub token_cache: TokenCache,
    /// `server.trace`: the key and header a caller traces a request with (`None`: off).
    pub trace: Option<crate::trace::TraceKey>,
    /// `subscriptions:` with the keys given at start.
    pub subscriptions: Subscriptions,
}

/// What a policy is at run time.
#[derive(Debug)]
pub struct PolicyRuntime {
    /// The token check (validate-jwt and the claim rules).
    pub policy: Arc<Policy>,
    /// The inbound statements in order.
    pub pipeline: crate::pipeline::Pipeline,
    /// Each `forward-claims` header name as pingora writes it (its title case), made once: given a
    /// `HeaderName`, pingora's `insert_header` would render and copy it on every request.
    pub claim_names: Vec<(HeaderName, Bytes)>,
    /// `portcullis_token_validation_seconds{policy, result="ok"}`.
    pub validation_ok: Resolved<Histogram>,
    /// `portcullis_token_validation_seconds{policy, result="rejected"}`.
    pub validation_rejected: Resolved<Histogram>,
}

impl Generation {
    /// The policy with this id.
    pub fn policy(&self, id: PolicyId) -> Option<&PolicyRuntime> {
        self.policies.get(id.index())
    }

    /// Build from a checked model and its key store (whose policy indices match `model.policies`).
    /// Resolves upstream host names: blocking.
    pub fn build(
        number: u64,
        model: &Model,
        keys: Arc<KeyStore>,
        metrics: &Metrics,
        subscription_keys: &SubscriptionKeys,
    ) -> Result<Self, BuildError> {
        Ok(Self::assemble(
            number,
            model,
            build_routes(model)?,
            keys,
            metrics,
            subscription_keys,
        ))
    }

    /// As [`Generation::build`] without resolving upstream host names (their peers are left
    /// empty): for `portcullis explain`, which never calls a backend and must not fail on a
    /// host name only the gateway's network resolves. `subscription_keys`: those explain was
    /// given (`--subscription-key`), as `run` would be.
    pub fn build_unresolved(
        model: &Model,
        keys: Arc<KeyStore>,
        metrics: &Metrics,
        subscription_keys: &SubscriptionKeys,
    ) -> Self {
        Self::assemble(
            1,
            model,
            Routes::build_unresolved(model),
            keys,
            metrics,
            subscription_keys,
        )
    }

    fn assemble(
        number: u64,
        model: &Model,
        routes: Routes,
        keys: Arc<KeyStore>,
        metrics: &Metrics,
        subscription_keys: &SubscriptionKeys,
    ) -> Self {
        Generation {
            number,
            routes,
            policies: model
                .policies
                .iter()
                .map(|p| PolicyRuntime {
                    policy: p.policy.clone(),
                    pipeline: crate::pipeline::Pipeline::from_model(p),
                    claim_names: p
                        .policy
                        .forward_claims
                        .iter()
                        .map(|(name, _)| (name.clone(), wire_name(name)))
                        .collect(),
                    validation_ok: Resolved::default(),
                    validation_rejected: Resolved::default(),
                })
                .collect(),
            identity: IdentityHeaders::from_model(model),
            trusted_proxies: model.server.trusted_proxies.clone(),
            keys,
            // A fresh cache per generation: its keys are scoped by policy index, which a reload
            // may reassign. Sized by `server.token-cache-max-entries` as at start (restart-only).
            token_cache: TokenCache::new(model, metrics.token_cache.clone()),
            trace: model.server.trace.clone().map(crate::trace::TraceKey::new),
            subscriptions: Subscriptions::build(model, subscription_keys),
        }
    }
}

/// A header name as pingora's `insert_header` would write it (the same function renders it).
fn wire_name(name: &HeaderName) -> Bytes {
    Bytes::copy_from_slice(name.into_case_header_name().as_slice())
}

/// The routes of `model`, upstream host names resolved (blocking).
fn build_routes(model: &Model) -> Result<Routes, BuildError> {
    Routes::build(model)
}

/// The generation requests read: one lock-free load per request.
pub type Current = Arc<ArcSwap<Generation>>;

/// Install the SIGHUP handler now (see the module docs). Failure is logged: reload then works
/// through the file watcher and `POST /reload` only.
pub fn arm_sighup() {
    // On a thread of its own: a caller may already be inside a tokio runtime (tests, embedders),
    // where building and blocking on another runtime panics. The handler tokio installs is
    // process-wide and outlives this short-lived runtime.
    let armed = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .and_then(|rt| rt.block_on(async { signal(SignalKind::hangup()).map(drop) }))
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("SIGHUP setup thread panicked")));
    if let Err(e) = armed {
        tracing::warn!(error = %e, "cannot handle SIGHUP; reload by file change or POST /reload");
    }
}

/// `portcullis_config_*` metrics.
#[derive(Debug, Clone)]
struct ReloadMetrics {
    failures: IntCounter,
    successes: IntCounter,
    generation: IntGauge,
    last_success: Gauge,
    tls_successes: IntCounter,
    tls_failures: IntCounter,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> Result<Self, BuildError> {
        let failures = IntCounter::new(
            "portcullis_config_reload_failures_total",
            "Config reloads rejected (invalid file or unbuildable routes); the previous config kept serving.",
        )?;
        let successes = IntCounter::new(
            "portcullis_config_reload_successes_total",
            "Config reloads applied.",
        )?;
        let generation = IntGauge::new(
            "portcullis_config_generation",
            "Generation of the config serving requests: 1 at start, +1 per applied reload.",
        )?;
        let last_success = Gauge::new(
            "portcullis_config_last_reload_success_timestamp_seconds",
            "Unix time of the last applied config (start-up counts).",
        )?;
        let tls_successes = IntCounter::new(
            "portcullis_tls_certificate_reload_successes_total",
            "Listener certificate sets replaced (files changed and loaded); new handshakes use them.",
        )?;
        let tls_failures = IntCounter::new(
            "portcullis_tls_certificate_reload_failures_total",
            "Changed listener certificate files rejected (unreadable, unparsable, key not matching); the previous certificates kept serving.",
        )?;
        registry.register(Box::new(tls_successes.clone()))?;
        registry.register(Box::new(tls_failures.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(successes.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        generation.set(1);
        last_success.set(now_seconds());
        Ok(ReloadMetrics {
            failures,
            successes,
            generation,
            last_success,
            tls_successes,
            tls_failures,
        })
    }
}

#[allow(clippy::cast_precision_loss)] // Unix seconds fit a f64 exactly for millions of years
fn now_seconds() -> f64 {
    crate::auth::unix_now().0 as f64
}

/// What started a reload (logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChange,
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::Admin => "POST /reload",
        }
    }
}

/// Result of one reload: the generation now serving, or why the file was rejected (one line per
/// problem).
pub type Outcome = Result<u64, Vec<String>>;

/// Asks the reloader for a reload and waits for its outcome (`POST /reload`).
#[derive(Debug, Clone)]
pub struct ReloadHandle(Option<mpsc::Sender<oneshot::Sender<Outcome>>>);

impl ReloadHandle {
    /// Reload now. `Err` lists the problems (also logged), or says reload is unavailable.
    pub async fn reload(&self) -> Outcome {
        let Some(tx) = &self.0 else {
            return Err(vec![
                "reload is not available: the gateway was not started from a config file"
                    .to_owned(),
            ]);
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(reply).await.is_err() {
            return Err(vec!["the reloader has stopped".to_owned()]);
        }
        answer
            .await
            .unwrap_or_else(|_| Err(vec!["the reloader has stopped".to_owned()]))
    }
}

/// The reloader: a pingora background service (it outlives pingora's fork like the key refresher
/// did) that runs the current key store's refresher, listens for the triggers and swaps
/// generations.
pub struct Reloader {
    path: Option<PathBuf>,
    current: Current,
    /// The server section the gateway was started with (restart-only settings).
    started: Server,
    metrics: ReloadMetrics,
    gateway_metrics: Metrics,
    requests: parking_lot::Mutex<Option<mpsc::Receiver<oneshot::Sender<Outcome>>>>,
    /// The file's bytes as last loaded (start or reload attempt); the watcher compares against it.
    initial: parking_lot::Mutex<Option<Vec<u8>>>,
    /// The TLS listeners' certificates, whose files are watched and re-read by every reload.
    certs: Vec<Arc<ListenerCerts>>,
    /// Per TLS listener, the file bytes last tried (loaded or rejected): the watcher does not
    /// retry bytes it has already tried.
    cert_attempts: parking_lot::Mutex<Vec<Option<FileBytes>>>,
    /// What the command line changes about the file (applied to every reload as at start).
    load: portcullis_config::LoadOptions,
    /// The subscription keys given at start (every generation gets them).
    subscription_keys: SubscriptionKeys,
}

impl Reloader {
    /// A reloader for `current`, started from `model` (read from `path`; `None`: an embedded model,
    /// reload unavailable). Registers the `portcullis_config_*` metrics.
    pub fn new(
        path: Option<PathBuf>,
        model: &Model,
        current: Current,
        certs: Vec<Arc<ListenerCerts>>,
        gateway_metrics: &Metrics,
        opts: &crate::RunOptions,
    ) -> Result<(Reloader, ReloadHandle), BuildError> {
        let metrics = ReloadMetrics::register(gateway_metrics.registry())?;
        let (tx, rx) = mpsc::channel(8);
        // Read now, close to the start-up load, so an edit made while the gateway starts is seen.
        let initial = path.as_deref().and_then(|p| std::fs::read(p).ok());
        let handle = ReloadHandle(path.is_some().then_some(tx));
        Ok((
            Reloader {
                path,
                current,
                started: model.server.clone(),
                metrics,
                gateway_metrics: gateway_metrics.clone(),
                requests: parking_lot::Mutex::new(Some(rx)),
                initial: parking_lot::Mutex::new(initial),
                cert_attempts: parking_lot::Mutex::new(vec![None; certs.len()]),
                certs,
                load: opts.load.clone(),
                subscription_keys: opts.subscription_keys.clone(),
            },
            handle,
        ))
    }

    /// Load `text` (the bytes of `path`) and, when valid, swap it in.
    async fn apply(&self, path: &Path, bytes: &[u8], trigger: Trigger) -> Outcome {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let file = path.to_owned();
        let opts = self.load.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            portcullis_config::load_str_opts(
                &text,
                &file,
                &portcullis_config::vars::from_env,
                &opts,
            )
        })
        .await
        .map_err(|e| vec![format!("config check panicked: {e}")])?;
        let model = match loaded {
            Ok((model, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                model
            }
            Err(diags) => return Err(errors_of(&diags)),
        };
        self.warn_restart_only(&model.server);
        match self.subscription_keys.check(&model) {
            Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!("{w}")),
            Err(e) => tracing::warn!("{e}: its keys open nothing until a config names it again"),
        }
        // Certificates are checked before anything is swapped: a reload applies all or nothing.
        let certs = self.prepare_certs().await?;
        let (model, routes) = tokio::task::spawn_blocking(move || {
            let routes = build_routes(&model);
            (model, routes)
        })
        .await
        .map_err(|e| vec![format!("building routes panicked: {e}")])?;
        let routes = routes.map_err(|e| vec![format!("{}: error: {e}", path.display())])?;
        // Routes first: a rejected reload must not touch the running key store's metric series.
        let old = self.current.load_full();
        routes.inherit_health(&old.routes);
        let keys = old.keys.rebuild(&model);
        let number = old.number + 1;
        let generation = Generation::assemble(
            number,
            &model,
            routes,
            keys,
            &self.gateway_metrics,
            &self.subscription_keys,
        );
        self.current.store(Arc::new(generation));
        self.install_certs(certs);
        tracing::info!(generation = number, trigger = trigger.as_str(), file = %path.display(),
            "config reloaded");
        Ok(number)
    }

    /// Reads every TLS listener's files and builds a new set for each whose bytes changed.
    /// `Err`: one line per listener whose new files are unusable (nothing is installed then).
    async fn prepare_certs(&self) -> Result<Vec<(usize, CertSet)>, Vec<String>> {
        let listeners = self.certs.clone();
        let built = tokio::task::spawn_blocking(move || {
            listeners
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let files = match read_files(&l.paths) {
                        Ok(files) if &files == l.current().files() => return None,
                        Ok(files) => files,
                        Err(e) => return Some((i, None, Err(e))),
                    };
                    let set = CertSet::build(&l.paths, files.clone());
                    Some((i, Some(files), set))
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| vec![format!("loading listener certificates panicked: {e}")])?;
        let mut sets = Vec::new();
        let mut problems = Vec::new();
        let mut attempts = self.cert_attempts.lock();
        for (i, files, set) in built {
            if files.is_some() {
                attempts[i] = files;
            }
            match set {
                Ok(set) => sets.push((i, set)),
                Err(e) => problems.push(self.cert_problem(i, &e)),
            }
        }
        if problems.is_empty() {
            Ok(sets)
        } else {
            Err(problems)
        }
    }

    /// Counts and words a rejected certificate set.
    fn cert_problem(&self, listener: usize, detail: &str) -> String {
        self.metrics.tls_failures.inc();
        format!(
            "listener {}: tls: {detail}; its previous certificates keep serving",
            self.certs[listener].addr
        )
    }

    /// Serves the new sets from the next handshake on.
    fn install_certs(&self, sets: Vec<(usize, CertSet)>) {
        for (i, set) in sets {
            let listener = &self.certs[i];
            tracing::info!(listener = %listener.addr, names = ?set.names(),
                "listener certificates reloaded; new connections get them");
            listener.install(set);
            self.metrics.tls_successes.inc();
        }
    }

    /// The watcher's check of the certificate files: a listener whose files changed (and read
    /// the same again after [`SETTLE`], so a half-written pair is not tried) gets its new set,
    /// or an error is logged and the old set keeps serving.
    async fn poll_certs(&self) {
        let read = |i: usize| {
            let paths = self.certs[i].paths.clone();
            async move {
                tokio::task::spawn_blocking(move || read_files(&paths).ok())
                    .await
                    .ok()
                    .flatten()
            }
        };
        for i in 0..self.certs.len() {
            let listener = &self.certs[i];
            let Some(first) = read(i).await else {
                continue; // mid-swap a file can be briefly missing
            };
            let tried = self.cert_attempts.lock()[i].as_ref() == Some(&first);
            if tried || &first == listener.current().files() {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            if read(i).await.as_ref() != Some(&first) {
                continue; // still being written: next tick
            }
            self.cert_attempts.lock()[i] = Some(first.clone());
            let paths = listener.paths.clone();
            let built = tokio::task::spawn_blocking(move || CertSet::build(&paths, first))
                .await
                .unwrap_or_else(|e| Err(format!("loading certificates panicked: {e}")));
            match built {
                Ok(set) => self.install_certs(vec![(i, set)]),
                Err(e) => tracing::error!("{}", self.cert_problem(i, &e)),
            }
        }
    }

    fn warn_restart_only(&self, new: &Server) {
        let old = &self.started;
        let listen = |s: &Server| {
            s.listen
                .iter()
                .map(|l| {
                    (
                        l.addr.clone(),
                        l.tls
                            .iter()
                            .map(|t| (t.cert.clone(), t.key.clone()))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let changed = [
            ("server.listen", listen(old) != listen(new)),
            ("server.admin", old.admin != new.admin),
            ("server.threads", old.threads != new.threads),
            (
                "server.work-stealing",
                old.work_stealing != new.work_stealing,
            ),
            (
                "server.token-cache-max-entries",
                old.token_cache_max_entries != new.token_cache_max_entries,
            ),
            (
                "server.shutdown-grace",
                old.shutdown_grace != new.shutdown_grace,
            ),
            (
                "server.rate-limit-store",
                old.rate_limit_store != new.rate_limit_store,
            ),
            ("server.telemetry", old.telemetry != new.telemetry),
        ];
        for (key, _) in changed.iter().filter(|(_, c)| *c) {
            tracing::warn!(
                setting = key,
                "config reload: {key} changed; it applies at restart only, the running value is kept"
            );
        }
    }

    /// One reload attempt, counted and logged.
    async fn reload(&self, path: &Path, bytes: Option<Vec<u8>>, trigger: Trigger) -> Outcome {
        let read = match bytes {
            Some(b) => Ok(b),
            None => tokio::fs::read(path).await.map_err(|e| {
                vec![format!(
                    "{}:0:0: error: cannot read config: {e}",
                    path.display()
                )]
            }),
        };
        let outcome = match read {
            Ok(bytes) => {
                let outcome = self.apply(path, &bytes, trigger).await;
                *self.initial.lock() = Some(bytes);
                outcome
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(number) => {
                self.metrics.successes.inc();
                self.metrics
                    .generation
                    .set(i64::try_from(*number).unwrap_or(i64::MAX));
                self.metrics.last_success.set(now_seconds());
            }
            Err(problems) => {
                self.metrics.failures.inc();
                for p in problems {
                    tracing::error!("{p}");
                }
                let serving = self.current.load().number;
                tracing::error!(trigger = trigger.as_str(), file = %path.display(),
                    generation = serving, "config reload rejected; the running config keeps serving");
            }
        }
        outcome
    }
}

/// The error lines of a failed load (warnings are logged as warnings, not returned).
fn errors_of(diags: &[Diagnostic]) -> Vec<String> {
    let mut errors = Vec::new();
    for d in diags {
        match d.severity {
            Severity::Error => errors.push(d.to_string()),
            Severity::Warning => tracing::warn!("{d}"),
        }
    }
    errors
}

/// Polls the config path (through symlinks) for new bytes; see the module docs.
struct FileWatch<'a> {
    path: &'a Path,
    unreadable: bool,
}

impl FileWatch<'_> {
    /// New settled bytes different from `last`, or `None`.
    async fn poll(&mut self, last: Option<&[u8]>) -> Option<Vec<u8>> {
        let first = match tokio::fs::read(self.path).await {
            Ok(b) => {
                self.unreadable = false;
                b
            }
            Err(e) => {
                // Mid-swap the path can be briefly missing; say so once if it stays that way.
                if !self.unreadable {
                    tracing::warn!(file = %self.path.display(), error = %e,
                        "config file unreadable; the running config keeps serving");
                }
                self.unreadable = true;
                return None;
            }
        };
        if Some(first.as_slice()) == last {
            return None;
        }
        tokio::time::sleep(SETTLE).await;
        let second = tokio::fs::read(self.path).await.ok()?;
        (second == first).then_some(second)
    }
}

/// Resolves on the next SIGHUP; never when it could not be watched.
async fn hangup(sig: Option<&mut Signal>) {
    if let Some(s) = sig {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// The health checks and DNS refresh of the serving generation's routes (stopped when dropped).
fn start_health(current: &Current, metrics: &Metrics) -> HealthChecks {
    HealthChecks::start(&current.load().routes, &metrics.health_checks)
}

/// Runs a key store's refresher until its stop sender fires or is dropped.
fn spawn_refresher(keys: &Arc<KeyStore>) -> watch::Sender<bool> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(keys.clone().run(rx));
    stop
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut refresher = spawn_refresher(&self.current.load().keys);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = start_health(&self.current, &self.gateway_metrics);
        let Some(path) = self.path.clone() else {
            // Embedded model: no config to reload; run the keys and watch the certificates.
            loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                    _ = tick.tick() => self.poll_certs().await,
                }
            }
            refresher.send_replace(true);
            drop(health);
            return;
        };
        let mut requests = self.requests.lock().take();
        let mut hup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP"))
            .ok();
        let mut watch = FileWatch {
            path: &path,
            unreadable: false,
        };
        loop {
            let serving = self.current.load().number;
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        refresher.send_replace(true);
                        drop(health);
                        return;
                    }
                }
                () = hangup(hup.as_mut()) => {
                    tracing::info!("SIGHUP: reloading the config");
                    let _ = self.reload(&path, None, Trigger::Signal).await;
                }
                Some(reply) = recv(requests.as_mut()) => {
                    let outcome = self.reload(&path, None, Trigger::Admin).await;
                    let _ = reply.send(outcome);
                }
                _ = tick.tick() => {
                    let last = self.initial.lock().clone();
                    if let Some(bytes) = watch.poll(last.as_deref()).await {
                        let _ = self.reload(&path, Some(bytes), Trigger::FileChange).await;
                    }
                    self.poll_certs().await;
                }
            }
            let now = self.current.load();
            if now.number != serving {
                // A new generation: its store carries the old one's keys; start its refresher,
                // then stop the old one (requests still holding the old generation keep its
                // last snapshots).
                let next = spawn_refresher(&now.keys);
                std::mem::replace(&mut refresher, next).send_replace(true);
                // Probes follow the serving routes: the old generation's tasks are aborted.
                health = start_health(&self.current, &self.gateway_metrics);
            }
        }
    }
}

async fn recv<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
