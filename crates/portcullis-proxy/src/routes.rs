//! The route table: built once from the model (upstream host names resolved here, because pingora's
//! `HttpPeer::new` with a host name does a blocking lookup and unwraps), then matched per request
//! on the request's canonical form ([`Routes::route_request`]: method, host and request target
//! canonicalised by `portcullis-route`, the same code `check` uses; the request's URI is replaced by
//! the canonical target, so the backend receives exactly what was matched). Also round-robin peer
//! choice with passive health, and the path rewrite.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_http::RequestHeader;
use portcullis_config::{
    Backend as BackendModel, BackendId, Examples, HostHeader, Model, PolicyId, Route as RouteModel,
    Upstream, UpstreamProtocol, UpstreamTls,
};
use portcullis_route::{
    canonical_host, canonicalize, check_method, Normalization, Refusal, RouteMatch,
};

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
    /// `host[:port]` as the upstream URL writes it (the default port left out): the `Host` it
    /// receives under `host-header: upstream`.
    pub host: HeaderValue,
    /// Milliseconds since [`epoch`] until which the peer is skipped (0: healthy).
    down_until_ms: AtomicU64,
}

/// A route's `upstream-tls`, in pingora's types (built once per config).
pub struct PeerTls {
    /// Trusted CAs instead of the platform's roots.
    pub ca: Option<Arc<CaType>>,
    /// The client certificate presented to upstreams that ask for one.
    pub client: Option<Arc<CertKey>>,
    /// Server name sent and verified instead of the URL's host.
    pub sni: Option<String>,
    /// `false`: any certificate is accepted.
    pub verify: bool,
    /// pingora's connection-pool group: pingora's reuse key covers the address, SNI, client
    /// certificate and verification switches but not the trusted CAs, so without this a
    /// connection verified against one route's CA would be reused by a route that trusts
    /// another (or only the platform's roots).
    group: u64,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client.is_some())
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .finish()
    }
}

impl PeerTls {
    fn build(tls: &UpstreamTls) -> PeerTls {
        // The DER was parsed at load (`portcullis-config`): pingora's parsers, which unwrap, see
        // only certificates that parse.
        let ca = tls.ca.as_ref().map(|certs| {
            let certs: Vec<WrappedX509> = certs
                .iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            Arc::<CaType>::from(certs)
        });
        let client = tls
            .client
            .as_ref()
            .map(|id| Arc::new(CertKey::new(id.chain.clone(), id.key.clone())));
        let group = tls.ca.as_ref().map_or(0, |certs| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            certs.hash(&mut h);
            h.finish() | 1
        });
        PeerTls {
            ca,
            client,
            sni: tls.sni.clone(),
            verify: tls.verify,
            group,
        }
    }

    /// Applies to a peer about to be connected.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(sni) = &self.sni {
            peer.sni.clone_from(sni);
        }
        peer.options.ca.clone_from(&self.ca);
        peer.group_key = self.group;
        peer.client_cert_key.clone_from(&self.client);
        if !self.verify {
            peer.options.verify_cert = false;
            peer.options.verify_hostname = false;
        }
    }
}

/// A built route.
#[derive(Debug)]
pub struct Route {
    /// Name (logs, metrics).
    pub name: String,
    matcher: RouteMatch,
    /// Its policy has a `cors` statement: a preflight is matched by the method it asks about.
    cors: bool,
    /// The route's policy (`None`: anonymous).
    pub policy: Option<PolicyId>,
    /// Upstream read timeout.
    pub timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// HTTP version spoken to the upstreams.
    pub upstream_protocol: UpstreamProtocol,
    /// Idle timeout of an upgraded (WebSocket) connection, both directions.
    pub websocket_idle_timeout: Duration,
    /// `upstream-tls`, built for pingora.
    pub tls: Option<Arc<PeerTls>>,
    /// `host-header`: the `Host` the upstream receives.
    pub host_header: HostHeader,
    strip_prefix: bool,
    rewrite_prefix: Option<String>,
    peers: Vec<Peer>,
    next: AtomicUsize,
    /// The `openapi:` examples `mock-response` answers with.
    pub examples: Option<Arc<Examples>>,
}

/// A backend of `backends:` or a `set-backend-service` `base-url`, resolved.
#[derive(Debug)]
pub struct Backend {
    /// Its name (logs).
    pub name: String,
    /// The one peer.
    pub peer: Peer,
    /// Prefixed to the upstream path (`""`: none).
    pub base_path: String,
    /// Read timeout (`None`: the route's).
    pub timeout: Option<Duration>,
    /// Connect timeout (`None`: the route's).
    pub connect_timeout: Option<Duration>,
}

impl Backend {
    /// Passive health, as for a route's peers: skip it for [`PEER_COOLDOWN`] (it is the only
    /// peer, so this only shows in its metrics of health; the request is not retried elsewhere).
    pub fn mark_down(&self) {
        self.peer.mark_down();
    }
}

/// Routes in file order, and how request targets are canonicalised for them.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
    normalisation: Normalization,
    /// [`portcullis_config::Model::backends`], resolved, by [`BackendId`].
    backends: Vec<Backend>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Peer {
    fn new(up: &Upstream, owner: &str) -> Result<Peer, BuildError> {
        Ok(Peer {
            addr: resolve(up, owner)?,
            tls: up.tls,
            sni: up.host.clone(),
            host: host_value(up),
            down_until_ms: AtomicU64::new(0),
        })
    }

    fn mark_down(&self) {
        let until = now_ms().saturating_add(PEER_COOLDOWN.as_millis() as u64);
        self.down_until_ms.store(until, Ordering::Relaxed);
    }
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
    /// Build from the model (policies named by routes resolve to their [`PolicyId`]).
    pub fn build(model: &Model) -> Result<Routes, BuildError> {
        let routes = model
            .routes
            .iter()
            .map(|r| Route::build(r, model))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = model
            .backends
            .iter()
            .map(|b: &BackendModel| {
                Ok(Backend {
                    name: b.name.clone(),
                    peer: Peer::new(&b.upstream, &format!("backend {}", b.name))?,
                    base_path: b.base_path.clone(),
                    timeout: b.timeout,
                    connect_timeout: b.connect_timeout,
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Routes {
            routes,
            normalisation: model.server.normalisation,
            backends,
        })
    }

    /// How request targets (and rewritten ones) are canonicalised.
    pub fn normalisation(&self) -> &Normalization {
        &self.normalisation
    }

    /// A backend by id.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.index())
    }

    /// The first route matching a canonical method, host and path, with its index.
    pub fn find(&self, method: &Method, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.matcher.matches(method, host, path))
    }

    /// Canonicalise the request (method, `Host`, request target) and find its route. On success the
    /// request carries the canonical origin-form target (the query as received), so what is
    /// authorised and forwarded is what was matched; `Ok(None)`: no route. A request that cannot
    /// be made canonical is refused (400) and left as it was.
    pub fn route_request(&self, req: &mut RequestHeader) -> Result<Option<usize>, Refusal> {
        check_method(req.method.as_str())?;
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host_header = match (hosts.next(), hosts.next()) {
            (_, Some(_)) => return Err(Refusal::InvalidHost),
            (Some(h), None) => Some(h.to_str().map_err(|_| Refusal::InvalidHost)?),
            (None, None) => None,
        };
        let target = canonicalize(req.method.as_str(), req.raw_path(), &self.normalisation)?;
        let host_raw = match (target.authority, host_header) {
            (Some(authority), Some(header)) => {
                if canonical_host(authority)? != canonical_host(header)? {
                    return Err(Refusal::HostMismatch);
                }
                Some(header)
            }
            (Some(authority), None) => Some(authority),
            (None, Some(header)) => Some(header),
            (None, None) => req.uri.authority().map(|a| a.as_str()),
        };
        let host = canonical_host(host_raw.unwrap_or(""))?;
        let host = (!host.is_empty()).then_some(host.as_ref());
        // A CORS preflight is matched by the method it asks about (as APIM matches the operation),
        // when that route's policy answers preflights; otherwise as the OPTIONS it is.
        let asked = crate::cors::preflight_method(req)
            .and_then(|m| self.find(&m, host, &target.path))
            .filter(|&i| self.routes[i].cors);
        let idx = asked.or_else(|| self.find(&req.method, host, &target.path));
        let rewrite = (!target.unchanged()).then(|| target.origin_form());
        let add_host = match (target.authority, host_header) {
            (Some(authority), None) => HeaderValue::from_str(authority).ok(),
            _ => None,
        };
        if let Some(uri) = rewrite {
            let uri = http::Uri::try_from(uri).map_err(|_| Refusal::InvalidQuery)?;
            req.set_uri(uri);
        }
        if let Some(value) = add_host {
            req.insert_header(http::header::HOST, value)
                .map_err(|_| Refusal::InvalidHost)?;
        }
        Ok(idx)
    }

    /// Route by index.
    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.routes.get(idx)
    }
}

impl Route {
    fn build(r: &RouteModel, model: &Model) -> Result<Route, BuildError> {
        let policy = match &r.policy {
            None => None,
            Some(name) => Some(
                model
                    .policy_id(name)
                    .ok_or_else(|| BuildError::UnknownPolicy {
                        route: r.name.clone(),
                        policy: name.clone(),
                    })?,
            ),
        };
        let cors = policy
            .and_then(|id| model.policies.get(id.index()))
            .is_some_and(|p| p.cors().is_some());
        if r.upstreams.is_empty() {
            return Err(BuildError::NoUpstream(r.name.clone()));
        }
        let peers = r
            .upstreams
            .iter()
            .map(|up| Peer::new(up, &r.name))
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Route {
            name: r.name.clone(),
            matcher: r.matcher.clone(),
            cors,
            policy,
            timeout: r.timeout,
            connect_timeout: r.connect_timeout,
            upstream_protocol: r.upstream_protocol,
            websocket_idle_timeout: r.websocket_idle_timeout,
            tls: r
                .upstream_tls
                .as_deref()
                .map(|t| Arc::new(PeerTls::build(t))),
            host_header: r.host_header.clone(),
            strip_prefix: r.strip_prefix,
            rewrite_prefix: r.rewrite_prefix.clone(),
            peers,
            next: AtomicUsize::new(0),
            examples: r.openapi.clone(),
        })
    }

    /// Whether the route's match has a URL template (only then are parameters captured).
    pub fn templated(&self) -> bool {
        self.matcher.template.is_some()
    }

    /// The URL-template parameters of the canonical path this route matched.
    pub fn captures(&self, path: &str) -> Vec<(Arc<str>, String)> {
        self.matcher.captures(path)
    }

    /// Whether the route compares paths byte for byte (`case-sensitive: true`); path conditions
    /// of its policy compare as it does.
    pub fn case_sensitive(&self) -> bool {
        self.matcher.case_sensitive
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
            peer.mark_down();
        }
    }

    /// The upstream path for a request path, when strip-prefix or rewrite-prefix apply.
    /// `path` is the canonical path the route matched.
    pub fn rewrite_path(&self, path: &str) -> Option<String> {
        if !self.strip_prefix && self.rewrite_prefix.is_none() {
            return None;
        }
        let rest = self.matcher.below_prefix(path)?;
        let base = self.rewrite_prefix.as_deref().unwrap_or("/");
        Some(join_path(base, rest))
    }
}

/// `base` (a base path without trailing slash, or `""`) before `path` (starting with `/`).
pub fn with_base(base: &str, path: &str) -> String {
    if base.is_empty() {
        return path.to_owned();
    }
    let mut out = String::with_capacity(base.len() + path.len());
    out.push_str(base);
    out.push_str(path);
    out
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

/// `host[:port]` of an upstream URL, the port left out when it is the scheme's default.
fn host_value(up: &Upstream) -> HeaderValue {
    let default = if up.tls { 443 } else { 80 };
    let text = if up.port == default {
        up.host.clone()
    } else {
        format!("{}:{}", up.host, up.port)
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths_join() {
        assert_eq!(join_path("/", ""), "/");
        assert_eq!(join_path("/", "/x"), "/x");
        assert_eq!(join_path("/v2/", "/x"), "/v2/x");
        assert_eq!(join_path("/v2", ""), "/v2");
        assert_eq!(join_path("/v2", "x"), "/v2/x");
    }
}
