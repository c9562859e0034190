//! The route table: built once from the model (upstream host names resolved here, because pingora's
//! `HttpPeer::new` with a host name does a blocking lookup and unwraps), then matched per request
//! without allocation: host (case-insensitive, port ignored), exact path or segment-aware prefix,
//! methods. Also round-robin peer choice with passive health, and the path rewrite.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::Method;
use portcullis_config::{Model, Route as RouteModel, Upstream};

use crate::error::BuildError;

/// How long a peer that failed to connect is skipped.
pub const PEER_COOLDOWN: Duration = Duration::from_secs(10);

/// One upstream peer, resolved.
#[derive(Debug)]
pub struct Peer {
    /// Resolved address.
    pub addr: SocketAddr,
    /// https upstream.
    pub tls: bool,
    /// SNI (the host as written).
    pub sni: String,
    /// Milliseconds since [`epoch`] until which the peer is skipped (0: healthy).
    down_until_ms: AtomicU64,
}

/// A built route.
#[derive(Debug)]
pub struct Route {
    /// Name (logs, metrics).
    pub name: String,
    host: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    methods: Vec<Method>,
    /// Index into the gateway's policies (`None`: anonymous).
    pub policy: Option<usize>,
    /// Upstream read timeout.
    pub timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    strip_prefix: bool,
    rewrite_prefix: Option<String>,
    peers: Vec<Peer>,
    next: AtomicUsize,
}

/// Routes in file order.
#[derive(Debug)]
pub struct Routes(Vec<Route>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn resolve(up: &Upstream, route: &str) -> Result<SocketAddr, BuildError> {
    let unresolved = |detail: String| BuildError::Resolve {
        route: route.to_owned(),
        upstream: up.url.clone(),
        detail,
    };
    let host = up.host.trim_start_matches('[').trim_end_matches(']');
    (host, up.port)
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".to_owned()))
}

impl Routes {
    /// Build from the model; `policy_index` maps a policy name to its index.
    pub fn build(
        model: &Model,
        policy_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Routes, BuildError> {
        model
            .routes
            .iter()
            .map(|r| Route::build(r, &policy_index))
            .collect::<Result<Vec<_>, _>>()
            .map(Routes)
    }

    /// The first route matching the request, with its index.
    pub fn find(&self, method: &Method, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.0.iter().position(|r| r.matches(method, host, path))
    }

    /// Route by index.
    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.0.get(idx)
    }
}

/// `host:port` -> `host` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// `/api` matches `/api`, `/api/`, `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl Route {
    fn build(
        r: &RouteModel,
        policy_index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Route, BuildError> {
        let policy = match &r.policy {
            None => None,
            Some(name) => Some(policy_index(name).ok_or_else(|| BuildError::UnknownPolicy {
                route: r.name.clone(),
                policy: name.clone(),
            })?),
        };
        if r.upstreams.is_empty() {
            return Err(BuildError::NoUpstream(r.name.clone()));
        }
        let peers = r
            .upstreams
            .iter()
            .map(|up| {
                Ok(Peer {
                    addr: resolve(up, &r.name)?,
                    tls: up.tls,
                    sni: up.host.clone(),
                    down_until_ms: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Route {
            name: r.name.clone(),
            host: r.host.as_ref().map(|h| strip_port(h).to_ascii_lowercase()),
            path: r.path.clone(),
            path_prefix: r.path_prefix.clone(),
            methods: r.methods.clone(),
            policy,
            timeout: r.timeout,
            connect_timeout: r.connect_timeout,
            strip_prefix: r.strip_prefix,
            rewrite_prefix: r.rewrite_prefix.clone(),
            peers,
            next: AtomicUsize::new(0),
        })
    }

    fn matches(&self, method: &Method, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            if !host.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        if let Some(exact) = &self.path {
            if path != exact {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !prefix_matches(prefix, path) {
                return false;
            }
        }
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Peer by index.
    pub fn peer(&self, idx: usize) -> Option<&Peer> {
        self.peers.get(idx)
    }

    /// Round robin over healthy peers not yet tried by this request (`tried`: bit per peer index).
    /// When every untried peer is marked down, the round-robin choice is used anyway: trying a
    /// peer that may have recovered beats failing without trying.
    pub fn pick_peer(&self, tried: u64) -> usize {
        let n = self.peers.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        let untried = |i: &usize| *i >= 64 || tried & (1u64 << *i) == 0;
        let order = (0..n).map(|k| (start + k) % n);
        order
            .clone()
            .filter(untried)
            .find(|&i| self.peers[i].down_until_ms.load(Ordering::Relaxed) <= now)
            .or_else(|| order.clone().find(untried))
            .unwrap_or(start)
    }

    /// Passive health: skip this peer for [`PEER_COOLDOWN`].
    pub fn mark_down(&self, idx: usize) {
        if let Some(peer) = self.peers.get(idx) {
            let until = now_ms().saturating_add(PEER_COOLDOWN.as_millis() as u64);
            peer.down_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// The upstream path for a request path, when strip-prefix or rewrite-prefix apply.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        let prefix = self.path_prefix.as_deref()?;
        if !self.strip_prefix && self.rewrite_prefix.is_none() {
            return None;
        }
        let rest = path.get(prefix.len()..).unwrap_or("");
        let base = self.rewrite_prefix.as_deref().unwrap_or("/");
        Some(join_path(base, rest))
    }
}

fn join_path(base: &str, rest: &str) -> String {
    let trimmed = base.trim_end_matches('/');
    if rest.is_empty() {
        return if trimmed.is_empty() { "/" } else { base }.to_owned();
    }
    let mut out = String::with_capacity(trimmed.len() + rest.len() + 1);
    out.push_str(trimmed);
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn prefix_is_segment_aware() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(strip_port("Api.Local:8080"), "Api.Local");
        assert_eq!(strip_port("api.local"), "api.local");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn paths_join() {
        assert_eq!(join_path("/", ""), "/");
        assert_eq!(join_path("/", "/x"), "/x");
        assert_eq!(join_path("/v2/", "/x"), "/v2/x");
        assert_eq!(join_path("/v2", ""), "/v2");
        assert_eq!(join_path("/v2", "x"), "/v2/x");
    }
}
