//! Model -> running gateway: build the runtime pieces (the first config generation: routes with
//! resolved peers, key store, token cache; metrics), bind every listener, assemble the pingora
//! server (proxy service, admin service, the reloader as a background service that also runs the
//! key refresher; the telemetry exporter when configured), then block in [`BoundGateway::run`].
//!
//! Binding happens in [`bind`], before pingora starts, so the caller learns the real addresses
//! (port 0) before anything blocks; `portcullis run` prints them, `portcullis demo` and tests read
//! them from [`BoundGateway::addresses`].

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs as PingoraRunArgs, Server, ShutdownWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use portcullis_config::{Listener, Model};
use tokio::sync::watch;

use crate::admin::Admin;
use crate::error::BuildError;
use crate::listeners::{bind as bind_socket, Prebound, ServicesUp};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::{arm_sighup, Generation, Reloader};
use crate::shutdown::{ShutdownHandle, Signals};
use crate::telemetry::{Telemetry, TelemetryService};
use crate::tls::ListenerCerts;
use crate::KeyStore;

/// Options that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Worker threads of the proxy service (overrides `server.threads`; default: number of cores).
    pub threads: Option<usize>,
    /// Key store bounds (fetch timeouts, refresh and retry timing); tests shorten them.
    pub key_store: portcullis_jwks::KeyStoreOptions,
    /// The file the model was loaded from: reloaded on SIGHUP, on change and on `POST /reload`.
    /// `None` (an embedded model): no reload.
    pub config_path: Option<PathBuf>,
    /// What the command line changed about the file when it was loaded (`--map-upstream`,
    /// `--listen`, `--admin`): applied again by every reload.
    pub load: portcullis_config::LoadOptions,
    /// Subscription keys (`--subscription-key`, `--subscription-keys`): kept across reloads.
    /// A key for a subscription the model does not name refuses the start
    /// ([`BuildError::UnknownSubscription`]).
    pub subscription_keys: crate::SubscriptionKeys,
    /// How long an HTTP/2 client connection may stay open with no stream (`None`:
    /// [`H2_IDLE_TIMEOUT`]); tests shorten it.
    pub h2_idle_timeout: Option<std::time::Duration>,
}

/// An HTTP/2 client connection with no open stream is closed after this long: the same bound
/// as an idle HTTP/1.1 keep-alive connection (pingora's 60 s), so neither protocol lets an idle
/// client hold a connection (and its socket, TLS state and task) for ever. pingora's own default
/// for HTTP/2 is no bound at all. Envoy's `idle_timeout` and nginx's `keepalive_timeout` (75 s)
/// do the same.
pub const H2_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The addresses the gateway listens on, as bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Proxy listeners: address and whether it speaks https.
    pub proxy: Vec<(SocketAddr, bool)>,
    /// Admin listener.
    pub admin: Option<SocketAddr>,
}

impl fmt::Display for Addresses {
    /// `proxy=http://127.0.0.1:8080,https://127.0.0.1:8443 admin=http://127.0.0.1:9901`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("proxy=")?;
        for (i, (addr, tls)) in self.proxy.iter().enumerate() {
            let scheme = if *tls { "https" } else { "http" };
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{scheme}://{addr}")?;
        }
        match self.admin {
            Some(admin) => write!(f, " admin=http://{admin}"),
            None => f.write_str(" admin=-"),
        }
    }
}

/// A gateway with its sockets bound, not yet serving.
pub struct BoundGateway {
    server: Server,
    signals: Signals,
    handle: ShutdownHandle,
    addresses: Addresses,
}

impl BoundGateway {
    /// Where it listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// A handle that stops the gateway from code.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Serve until stopped (SIGTERM: drain, bounded by `server.shutdown-grace`; SIGINT: now; or
    /// the [`ShutdownHandle`]). Blocks the calling thread.
    pub fn run(self) -> ExitCode {
        self.server.run(PingoraRunArgs {
            shutdown_signal: Box::new(self.signals),
        });
        ExitCode::SUCCESS
    }
}

/// Install aws-lc-rs as the process' rustls provider (pingora would otherwise install ring's).
pub fn install_crypto_provider() {
    // Err means a provider is already installed (a second gateway in the process): fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// pingora's TLS settings for a listener serving `certs` (checked already: pingora only receives
/// the resolver, so its `build()`, which panics on unreadable files, never touches the files).
fn tls_settings(listener: &Listener, certs: Arc<ListenerCerts>) -> Result<TlsSettings, BuildError> {
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| BuildError::Tls {
        addr: listener.addr.clone(),
        detail: e.to_string(),
    })?;
    settings.set_cert_resolver(certs);
    settings.enable_h2();
    Ok(settings)
}

/// Build everything and bind every listener.
pub fn bind(model: &Model, opts: &RunOptions) -> Result<BoundGateway, BuildError> {
    install_crypto_provider();
    let warnings = opts
        .subscription_keys
        .check(model)
        .map_err(BuildError::UnknownSubscription)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let metrics = Metrics::new()?;
    let keys = KeyStore::with_options(model, metrics.registry(), opts.key_store)?;
    let current = Arc::new(ArcSwap::from_pointee(Generation::build(
        1,
        model,
        keys,
        &metrics,
        &opts.subscription_keys,
    )?));
    // Every listener's certificates, read and checked before anything binds; the reloader
    // replaces them when their files change.
    let certs = model
        .server
        .listen
        .iter()
        .map(|l| {
            if l.tls.is_empty() {
                return Ok(None);
            }
            ListenerCerts::load(&l.addr, &l.tls)
                .map(|c| Some(Arc::new(c)))
                .map_err(|detail| BuildError::Tls {
                    addr: l.addr.clone(),
                    detail,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The key store's refresher runs inside the reloader, a pingora background service: pingora
    // may fork in `run`, so threads and runtimes started earlier would be lost.
    let (reloader, reload) = Reloader::new(
        opts.config_path.clone(),
        model,
        current.clone(),
        certs.iter().flatten().cloned().collect(),
        &metrics,
        opts,
    )?;
    arm_sighup();
    let inflight = Arc::new(AtomicUsize::new(0));
    let listeners_up = Arc::new(AtomicBool::new(false));

    let threads = opts
        .threads
        .or(model.server.threads)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let conf = ServerConf {
        threads,
        // Draining is done by `Signals` before pingora hears of the stop (see shutdown.rs).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        // Off by default (pingora's default is on): one current-thread runtime per worker, each
        // connection served by the worker that accepted it, as Envoy's workers do; measured at
        // one worker (docs/performance.md): cached 1.05x, verify-every 1.24x, lower p99. Several
        // no-steal gateways may run one after another in one process thanks to the patched
        // pingora-runtime (vendor/README.md).
        work_stealing: model.server.work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let (drain_tx, drain_rx) = watch::channel(false);

    let limits = Arc::new(crate::limits::Store::build(
        &model.server.rate_limit_store,
        metrics.rate_limit_store_errors.clone(),
    )?);
    let traces = Arc::new(traces_for(model));
    // Tracing: built now, started by its background service (after pingora's fork).
    let telemetry = model.server.telemetry.clone().map(|config| {
        Telemetry::new(
            config,
            metrics.otel_spans_dropped.clone(),
            metrics.otel_spans_exported.clone(),
        )
    });
    let gateway = || Gateway {
        current: current.clone(),
        metrics: metrics.clone(),
        inflight: inflight.clone(),
        limits: limits.clone(),
        traces: traces.clone(),
        telemetry: telemetry.clone(),
    };
    // pingora's h2c switch is per service, and it costs a peek at the first 24 bytes of every
    // request on the connection: listeners with `h2c: true` get a service of their own, so the
    // others do not pay for it.
    let mut proxies: [Option<(_, Vec<_>)>; 2] = [None, None];
    let mut proxy_addrs = Vec::new();
    for (listener, certs) in model.server.listen.iter().zip(certs) {
        let (proxy, sockets) = proxies[usize::from(listener.h2c)].get_or_insert_with(|| {
            let name = if listener.h2c {
                "portcullis proxy (h2c)"
            } else {
                "portcullis proxy"
            };
            let mut proxy =
                pingora_proxy::http_proxy_service_with_name(&server.configuration, gateway(), name);
            if let Some(app) = proxy.app_logic_mut() {
                let mut options = HttpServerOptions::default();
                options.h2c = listener.h2c;
                options.h2_idle_timeout = Some(opts.h2_idle_timeout.unwrap_or(H2_IDLE_TIMEOUT));
                app.server_options = Some(options);
            }
            (proxy, Vec::new())
        });
        let (socket, local) = bind_socket(&listener.addr)?;
        let key = local.to_string();
        let tls = certs.is_some();
        match certs {
            Some(certs) => {
                let settings = tls_settings(listener, certs)?;
                proxy.add_tls_with_settings(&key, None, settings);
            }
            None => proxy.add_tcp(&key),
        }
        proxy_addrs.push((local, tls));
        sockets.push((key, socket));
    }
    let started = ServicesUp::new(proxies.iter().flatten().count(), listeners_up.clone());
    for (proxy, sockets) in proxies.into_iter().flatten() {
        server.add_service(Prebound::new(
            proxy,
            sockets,
            drain_rx.clone(),
            Some(started.clone()),
        ));
    }

    let telemetry_service = telemetry.clone().map(|telemetry| TelemetryService {
        telemetry,
        current: current.clone(),
    });
    let admin_addr = match &model.server.admin {
        Some(addr) => Some(add_admin(
            &mut server,
            addr,
            Admin {
                metrics,
                current,
                reload,
                listeners_up,
                draining: drain_rx.clone(),
                traces,
                telemetry: telemetry.clone(),
            },
            drain_rx,
        )?),
        None => None,
    };
    server.add_service(background_service("config reload and key store", reloader));
    if let Some(service) = telemetry_service {
        server.add_service(background_service("telemetry", service));
    }

    let (signals, handle) =
        Signals::new(drain_tx, inflight, model.server.shutdown_grace, telemetry);
    Ok(BoundGateway {
        server,
        signals,
        handle,
        addresses: Addresses {
            proxy: proxy_addrs,
            admin: admin_addr,
        },
    })
}

/// The ring of traced requests' explanations, sized by `server.trace` (start-only; a config
/// without it gets the default size, so a reload that turns tracing on has somewhere to keep them).
fn traces_for(model: &Model) -> crate::trace::Traces {
    match &model.server.trace {
        Some(t) => crate::trace::Traces::new(t.max_entries, t.ttl),
        None => crate::trace::Traces::new(
            portcullis_config::DEFAULT_TRACE_ENTRIES,
            portcullis_config::DEFAULT_TRACE_TTL,
        ),
    }
}

fn add_admin(
    server: &mut Server,
    addr: &str,
    admin: Admin,
    drain: ShutdownWatch,
) -> Result<SocketAddr, BuildError> {
    let (socket, local): (TcpListener, SocketAddr) = bind_socket(addr)?;
    let key = local.to_string();
    let mut service = Service::new("portcullis admin".to_owned(), admin);
    service.threads = Some(1);
    service.add_tcp(&key);
    server.add_service(Prebound::new(service, vec![(key, socket)], drain, None));
    Ok(local)
}

/// Bind, print `listening proxy=... admin=...` on stdout, serve until stopped.
pub fn run_model(model: &Model, opts: &RunOptions) -> ExitCode {
    match bind(model, opts) {
        Ok(gateway) => {
            announce(gateway.addresses());
            gateway.run()
        }
        Err(e) => {
            tracing::error!(error = %e, "gateway cannot start");
            eprintln!("error: {e}");
            // A key for an unknown subscription is a usage error, like an invalid config.
            let code = match e {
                BuildError::UnknownSubscription(_) => 2,
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}

/// The one stdout line tools wait for: every address, once all are bound.
pub fn announce(addresses: &Addresses) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addresses}");
    let _ = out.flush();
}
