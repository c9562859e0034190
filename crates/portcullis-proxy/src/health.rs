//! Active health checks (route key `health-check:`) and the re-resolution of upstream host names
//! (`dns-refresh:`).
//!
//! What runs: per config generation, one task per route ([`HealthChecks::start`]) that re-resolves
//! the route's host names every `dns-refresh` ([`Route::set_addresses`]) and, when the route has a
//! health check, one probe task per peer (address): an HTTP/1.1 `GET path` with `Connection:
//! close`, over TLS for https upstreams (pingora's connector, the same TLS stack and trust as the
//! proxied requests), every `interval`, each peer on its own schedule. A probe fails on a status
//! outside `expected-statuses`, on no response head within `timeout`, and on a connect or protocol
//! error. `unhealthy-threshold` consecutive failures take a healthy peer out of the round robin;
//! `healthy-threshold` consecutive successes bring it back.
//!
//! Where: the tasks are spawned by the reloader, a pingora background service, because pingora may
//! fork in `run` and tasks or threads started before are lost. The reloader starts the checks of
//! the first generation and, on every reload, starts the new generation's and drops the old one's
//! ([`HealthChecks`] aborts its tasks when dropped), so probes always follow the serving routes.
//! The new generation's peers take over the health of the same peers of the old one
//! ([`crate::routes::Routes::inherit_health`]).
//!
//! A peer of a route with a health check starts unhealthy and becomes healthy on its first passing
//! probe (one success, not `healthy-threshold`), as Envoy does for hosts it has not checked yet:
//! a new address learned from DNS, or a gateway just started, sends nothing to a peer that has not
//! answered once. The first probe runs as soon as the peer is known, and while no peer of a route
//! is healthy the round robin uses all of them ([`Route::pick_peer`]), so a start is not an outage.
//!
//! The request path reads health as one atomic per peer; only these tasks write it. The gauge
//! `portcullis_upstream_healthy` is filled from the serving generation's peers when `/metrics` is
//! rendered ([`sync_gauges`]), so it never shows peers of an old generation or a gone address.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use portcullis_config::{HealthCheck, Upstream};
use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::task::{AbortHandle, JoinSet};

use crate::routes::{is_name, resolve_all, Peer, Route, Routes};

/// Active health of one peer. Written only by its probe task; read by the request path.
#[derive(Debug)]
pub struct PeerHealth {
    healthy: AtomicBool,
    /// Not probed yet: the first result decides (one success is enough).
    pending: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
}

impl PeerHealth {
    /// `checked`: the route has a health check (start unhealthy, pending the first probe);
    /// otherwise always healthy.
    pub fn new(checked: bool) -> PeerHealth {
        PeerHealth {
            healthy: AtomicBool::new(!checked),
            pending: AtomicBool::new(checked),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// In the rotation as far as active checks know.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Count one probe result; `Some(healthy)` when the peer changed state.
    pub fn record(&self, success: bool, check: &HealthCheck) -> Option<bool> {
        let pending = self.pending.swap(false, Ordering::Relaxed);
        let healthy = self.is_healthy();
        if success {
            self.failures.store(0, Ordering::Relaxed);
            let streak = self
                .successes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if !healthy && (pending || streak >= check.healthy_threshold) {
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let streak = self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if healthy && streak >= check.unhealthy_threshold {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Take over `old`'s state (the same peer in the previous generation).
    pub fn copy_from(&self, old: &PeerHealth) {
        for (to, from) in [(&self.healthy, &old.healthy), (&self.pending, &old.pending)] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (to, from) in [
            (&self.successes, &old.successes),
            (&self.failures, &old.failures),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// How one probe ended (the `result` label of `portcullis_upstream_health_checks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// An expected status.
    Success,
    /// A status outside `expected-statuses`.
    UnexpectedStatus(u16),
    /// No response head within `timeout`.
    Timeout,
    /// TCP connect or TLS handshake failed.
    ConnectError,
    /// The connection broke or the response was not HTTP.
    ResponseError,
}

impl ProbeResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ProbeResult::Success => "success",
            ProbeResult::UnexpectedStatus(_) => "unexpected_status",
            ProbeResult::Timeout => "timeout",
            ProbeResult::ConnectError => "connect_error",
            ProbeResult::ResponseError => "response_error",
        }
    }
}

/// The health tasks of one config generation; dropping it stops them all.
#[derive(Debug)]
pub struct HealthChecks {
    _tasks: JoinSet<()>,
}

impl HealthChecks {
    /// Start a task per route (must run inside a tokio runtime: the reloader's).
    pub fn start(routes: &Routes, checks: &IntCounterVec) -> HealthChecks {
        let mut tasks = JoinSet::new();
        let connector = Arc::new(Connector::new(None));
        for route in routes.all() {
            let names = route.upstreams().iter().any(is_name) && !route.dns_refresh.is_zero();
            if route.health_check.is_none() && !names {
                continue;
            }
            tasks.spawn(watch_route(
                route.clone(),
                connector.clone(),
                checks.clone(),
            ));
        }
        HealthChecks { _tasks: tasks }
    }
}

/// Set `portcullis_upstream_healthy{route, peer}` from the peers of `routes` (the serving
/// generation), dropping every other series.
pub fn sync_gauges(routes: &Routes, gauge: &IntGaugeVec) {
    gauge.reset();
    for route in routes.all() {
        if route.health_check.is_none() {
            continue;
        }
        for peer in route.peers().iter() {
            let label = peer.addr.to_string();
            gauge
                .with_label_values(&[route.name.as_str(), label.as_str()])
                .set(i64::from(peer.health.is_healthy()));
        }
    }
}

/// One route: probe tasks per peer, and the host names resolved again every `dns-refresh`.
async fn watch_route(route: Arc<Route>, connector: Arc<Connector>, checks: IntCounterVec) {
    let mut probes = Probes {
        set: JoinSet::new(),
        running: HashMap::new(),
        route: route.clone(),
        connector,
        checks,
    };
    for peer in route.peers().iter() {
        probes.add(peer);
    }
    let names = route.upstreams().iter().any(is_name);
    if !names || route.dns_refresh.is_zero() {
        // Nothing to resolve: the probes run until the generation is dropped.
        std::future::pending::<()>().await;
    }
    let start = tokio::time::Instant::now() + route.dns_refresh;
    let mut tick = tokio::time::interval_at(start, route.dns_refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let upstreams = route.upstreams().to_vec();
        let name = route.name.clone();
        let Ok(resolved) = tokio::task::spawn_blocking(move || lookup(&name, &upstreams)).await
        else {
            continue;
        };
        let change = route.set_addresses(&resolved);
        for peer in &change.removed {
            tracing::info!(route = %route.name, peer = %peer.addr,
                "upstream address gone from DNS: peer removed");
            probes.remove(peer);
        }
        for peer in &change.added {
            tracing::info!(route = %route.name, peer = %peer.addr,
                "new upstream address from DNS: peer added");
            probes.add(peer);
        }
        while probes.set.try_join_next().is_some() {}
    }
}

/// Lookup of every host name (blocking); IP literals and failed lookups give `None` (their peers
/// stay as they are: a DNS outage does not empty the route).
fn lookup(route: &str, upstreams: &[Upstream]) -> Vec<Option<Vec<std::net::SocketAddr>>> {
    upstreams
        .iter()
        .map(|up| {
            if !is_name(up) {
                return None;
            }
            resolve_all(up)
                .inspect_err(|e| {
                    tracing::warn!(route, upstream = %up.url, error = %e,
                        "DNS refresh failed; the upstream keeps its current addresses");
                })
                .ok()
        })
        .collect()
}

/// The probe tasks of one route, by peer.
struct Probes {
    set: JoinSet<()>,
    /// By the address of the `Arc<Peer>` (identity; compared only).
    running: HashMap<usize, AbortHandle>,
    route: Arc<Route>,
    connector: Arc<Connector>,
    checks: IntCounterVec,
}

impl Probes {
    fn add(&mut self, peer: &Arc<Peer>) {
        if self.route.health_check.is_none() {
            return;
        }
        let handle = self.set.spawn(probe_loop(
            self.route.clone(),
            peer.clone(),
            self.connector.clone(),
            self.checks.clone(),
        ));
        self.running.insert(identity(peer), handle);
    }

    fn remove(&mut self, peer: &Arc<Peer>) {
        if let Some(handle) = self.running.remove(&identity(peer)) {
            handle.abort();
        }
    }
}

fn identity(peer: &Arc<Peer>) -> usize {
    Arc::as_ptr(peer) as usize
}

/// `host[:port]` of an upstream as written (the port only when not the scheme's default).
/// Probe one peer every `interval` until aborted.
async fn probe_loop(
    route: Arc<Route>,
    peer: Arc<Peer>,
    connector: Arc<Connector>,
    checks: IntCounterVec,
) {
    let Some(check) = route.health_check.as_ref() else {
        return;
    };
    let host = match &check.host {
        Some(h) => h.clone(),
        None => route
            .upstreams()
            .get(peer.upstream)
            .map(crate::routes::authority)
            .unwrap_or_default(),
    };
    let label = peer.addr.to_string();
    loop {
        let result = probe(&connector, &peer, route.tls.as_deref(), check, &host).await;
        checks
            .with_label_values(&[route.name.as_str(), label.as_str(), result.label()])
            .inc();
        match peer.health.record(result == ProbeResult::Success, check) {
            Some(true) => {
                tracing::info!(route = %route.name, peer = %label, "upstream peer healthy: back in the rotation");
            }
            Some(false) => {
                tracing::warn!(route = %route.name, peer = %label, result = result.label(),
                    status = ?status_of(result), failures = check.unhealthy_threshold,
                    "upstream peer unhealthy: out of the rotation");
            }
            None => {}
        }
        tokio::time::sleep(check.interval).await;
    }
}

fn status_of(result: ProbeResult) -> Option<u16> {
    match result {
        ProbeResult::UnexpectedStatus(s) => Some(s),
        _ => None,
    }
}

/// One probe: `GET path` with `Host` and `Connection: close`, judged on the response head.
pub async fn probe(
    connector: &Connector,
    peer: &Peer,
    tls: Option<&crate::routes::PeerTls>,
    check: &HealthCheck,
    host: &str,
) -> ProbeResult {
    let mut target = HttpPeer::new(peer.addr, peer.tls, peer.sni.clone());
    // The route's `upstream-tls` (CA, client certificate, SNI, verify) as for its requests.
    if let Some(tls) = tls {
        tls.apply(&mut target);
    }
    target.options.connection_timeout = Some(check.timeout);
    target.options.total_connection_timeout = Some(check.timeout);
    target.options.read_timeout = Some(check.timeout);
    target.options.write_timeout = Some(check.timeout);
    let exchange = async {
        let Ok((mut session, _)) = connector.get_http_session(&target).await else {
            return ProbeResult::ConnectError;
        };
        let Ok(mut req) = RequestHeader::build("GET", check.path.as_bytes(), Some(3)) else {
            return ProbeResult::ResponseError;
        };
        let headers = [
            ("host", host),
            ("user-agent", "portcullis-health-check"),
            ("connection", "close"),
        ];
        for (name, value) in headers {
            if req.insert_header(name, value).is_err() {
                return ProbeResult::ResponseError;
            }
        }
        if session.write_request_header(Box::new(req)).await.is_err()
            || session.read_response().await.is_err()
        {
            return ProbeResult::ResponseError;
        }
        let status = session.get_status().map(|s| s.as_u16());
        session.shutdown().await;
        match status {
            Some(s) if check.expects(s) => ProbeResult::Success,
            Some(s) => ProbeResult::UnexpectedStatus(s),
            None => ProbeResult::ResponseError,
        }
    };
    tokio::time::timeout(check.timeout, exchange)
        .await
        .unwrap_or(ProbeResult::Timeout)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn check(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            path: "/h".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            expected_statuses: vec![200..=399],
            host: None,
        }
    }

    #[test]
    fn first_probe_decides_then_thresholds_apply() {
        let c = check(2, 3);
        let h = PeerHealth::new(true);
        assert!(!h.is_healthy(), "pending peers are out until probed");
        assert_eq!(
            h.record(true, &c),
            Some(true),
            "one success suffices at first"
        );
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(
            h.record(true, &c),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(
            h.record(false, &c),
            Some(false),
            "third consecutive failure"
        );
        assert!(!h.is_healthy());
        assert_eq!(
            h.record(true, &c),
            None,
            "healthy-threshold 2 after the first probe"
        );
        assert_eq!(h.record(true, &c), Some(true));
        assert!(h.is_healthy());
    }

    #[test]
    fn a_failing_first_probe_keeps_the_peer_out() {
        let c = check(2, 3);
        let h = PeerHealth::new(true);
        assert_eq!(h.record(false, &c), None);
        assert!(!h.is_healthy());
        assert_eq!(
            h.record(true, &c),
            None,
            "no longer pending: the threshold applies"
        );
        assert_eq!(h.record(true, &c), Some(true));
    }

    #[test]
    fn unchecked_peers_are_healthy() {
        assert!(PeerHealth::new(false).is_healthy());
    }

    #[test]
    fn authority_omits_default_ports() {
        let up = |tls, port| Upstream {
            url: String::new(),
            tls,
            host: "api.internal".to_owned(),
            port,
        };
        assert_eq!(crate::routes::authority(&up(false, 80)), "api.internal");
        assert_eq!(crate::routes::authority(&up(true, 443)), "api.internal");
        assert_eq!(
            crate::routes::authority(&up(true, 8443)),
            "api.internal:8443"
        );
    }
}
