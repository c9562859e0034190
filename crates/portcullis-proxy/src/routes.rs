//! The route table: built once from the model (upstream host names resolved here, because pingora's
//! `HttpPeer::new` with a host name does a blocking lookup and unwraps), then matched per request
//! on the request's canonical form ([`Routes::route_request`]: method, host and request target
//! canonicalised by `portcullis-route`, the same code `check` uses; the request's URI is replaced by
//! the canonical target, so the backend receives exactly what was matched). Also round-robin peer
//! choice with passive and active health, and the path rewrite.
//!
//! Peers: every address an upstream's host name resolves to is a peer (a name behind a DNS
//! round robin spreads the load over all its addresses). Names are resolved again every
//! `dns-refresh` by the route's health task ([`crate::health`]), which swaps the route's peer list;
//! a peer whose (upstream, address) survives a new lookup is the same `Arc<Peer>`, so its passive
//! and active health carry over. The request path reads the list through one `ArcSwap` load (no
//! lock) and each peer's health as two atomics.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use http::{HeaderValue, Method};
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_http::RequestHeader;
use portcullis_config::{
    Backend as BackendModel, BackendId, Examples, HealthCheck, HostHeader, Model, PolicyId,
    Route as RouteModel, Upstream, UpstreamProtocol, UpstreamTls,
};
use portcullis_route::{
    canonical_host, canonicalize, check_method, Mismatch, Normalization, Refusal, RouteMatch,
};

use crate::error::BuildError;
use crate::health::PeerHealth;
use crate::metrics::Resolved;
use prometheus::IntCounter;

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
    /// Index of the route upstream (`upstreams:` entry) this address belongs to.
    pub upstream: usize,
    /// Active health (always healthy when the route has no `health-check`).
    pub health: PeerHealth,
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
    /// One of its policies (`policy`, a product's) has a `cors` statement: a preflight is matched
    /// by the method it asks about.
    cors: bool,
    /// Its `policy` has a `cors` statement: a keyless preflight passes the subscription check to
    /// it (see `crate::subscriptions`).
    pub keyless_cors: bool,
    /// The route's policy (`None`: anonymous); a product key may choose another
    /// (`subscription`).
    pub policy: Option<PolicyId>,
    /// `subscription:`: the key check before the policy (`None`: none).
    pub subscription: Option<crate::subscriptions::RouteSubscription>,
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
    /// Every address of every upstream, in upstream order, addresses sorted (stable indices).
    peers: ArcSwap<Vec<Arc<Peer>>>,
    /// The `upstreams:` entries as written (re-resolved by the health task).
    upstreams: Vec<Upstream>,
    /// `health-check:` (`None`: passive marking only).
    pub health_check: Option<HealthCheck>,
    /// `dns-refresh:` (zero: never).
    pub dns_refresh: Duration,
    next: AtomicUsize,
    /// The `openapi:` examples `mock-response` answers with.
    pub examples: Option<Arc<Examples>>,
    /// `portcullis_requests_total{route, status="200", reason="ok"}`: most requests' series.
    pub requests_ok: Resolved<IntCounter>,
    /// Its `portcullis_request_duration_seconds{route}` series, looked up once.
    pub request_duration: Resolved<prometheus::Histogram>,
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
    routes: Vec<Arc<Route>>,
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
    /// A backend's one peer: the first address of its host.
    fn new(up: &Upstream, owner: &str) -> Result<Peer, BuildError> {
        let addr = resolve_all(up)
            .map_err(|detail| unresolved(up, owner, detail))?
            .into_iter()
            .next()
            .ok_or_else(|| unresolved(up, owner, "no address".to_owned()))?;
        Ok(Peer::at(up, 0, addr, false))
    }

    /// The peer for one address of upstream `upstream` (`checked`: the route has a health
    /// check, so the peer starts unhealthy until its first probe passes).
    fn at(up: &Upstream, upstream: usize, addr: SocketAddr, checked: bool) -> Peer {
        Peer {
            addr,
            tls: up.tls,
            sni: up.host.clone(),
            host: host_value(up),
            down_until_ms: AtomicU64::new(0),
            upstream,
            health: PeerHealth::new(checked),
        }
    }

    fn mark_down(&self) {
        let until = now_ms().saturating_add(PEER_COOLDOWN.as_millis() as u64);
        self.down_until_ms.store(until, Ordering::Relaxed);
    }

    /// Not marked down by a failed connection (at `now`, from [`now_ms`]).
    fn up(&self, now: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now
    }

    /// Takes the passive marking of `old` (the same address in the previous config generation),
    /// and its active health when `health` (the same health check).
    fn inherit(&self, old: &Peer, health: bool) {
        self.down_until_ms
            .store(old.down_until_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        if health {
            self.health.copy_from(&old.health);
        }
    }
}

/// The address of a peer that is never connected to (see [`Routes::build_unresolved`]).
fn unresolved_addr(up: &Upstream) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], up.port))
}

fn unresolved(up: &Upstream, owner: &str, detail: String) -> BuildError {
    BuildError::Resolve {
        route: owner.to_owned(),
        upstream: up.url.clone(),
        detail,
    }
}

/// Whether the upstream's host is a name (resolved again every `dns-refresh`), not an IP literal.
pub fn is_name(up: &Upstream) -> bool {
    bare_host(up).parse::<IpAddr>().is_err()
}

fn bare_host(up: &Upstream) -> &str {
    up.host.trim_start_matches('[').trim_end_matches(']')
}

/// Every address of the upstream's host (blocking lookup), sorted and without repeats, so that a
/// DNS server rotating its answers does not reorder the peers.
pub fn resolve_all(up: &Upstream) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = (bare_host(up), up.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no address".to_owned());
    }
    Ok(addrs)
}

/// A peer of a route, as read by one request: holds the route's peer list (an `ArcSwap` guard,
/// no reference count touched) while the caller looks at the peer.
pub struct PeerRef {
    peers: Guard<Arc<Vec<Arc<Peer>>>>,
    idx: usize,
}

impl Deref for PeerRef {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peers[self.idx]
    }
}

impl Routes {
    /// Build from the model (policies named by routes resolve to their [`PolicyId`]).
    pub fn build(model: &Model) -> Result<Routes, BuildError> {
        Self::build_with(model, true)
    }

    /// Without resolving host names: routes without peers, backends at the unspecified address
    /// (`portcullis explain`, which never connects). Cannot fail: resolution is the only failure
    /// [`Routes::build`] has besides what `check` rules out.
    pub fn build_unresolved(model: &Model) -> Routes {
        Self::build_with(model, false).unwrap_or_else(|_| Routes {
            routes: Vec::new(),
            normalisation: model.server.normalisation,
            backends: Vec::new(),
        })
    }

    fn build_with(model: &Model, resolve: bool) -> Result<Routes, BuildError> {
        let routes = model
            .routes
            .iter()
            .map(|r| Route::build(r, model, resolve).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = model
            .backends
            .iter()
            .map(|b: &BackendModel| {
                let peer = match resolve {
                    true => Peer::new(&b.upstream, &format!("backend {}", b.name))?,
                    false => Peer::at(&b.upstream, 0, unresolved_addr(&b.upstream), false),
                };
                Ok(Backend {
                    name: b.name.clone(),
                    peer,
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

    /// The first route matching a canonical method, host and path, and the request's headers
    /// and raw query (`match.headers` / `match.query`), with its index.
    pub fn find(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.matcher.matches(method, host, path) && r.matcher.matches_values(headers, query)
        })
    }

    /// Canonicalise the request (method, `Host`, request target, an `Upgrade` without
    /// `Connection: upgrade` removed, one `Content-Length`; method overrides, framing headers
    /// spelled with `_`, a `Transfer-Encoding` that is not one `chunked` alone, an `Expect` other
    /// than `100-continue` and an HTTP/1.1 request without `Host` refused) and find its route. On
    /// success the request carries the canonical origin-form target (the query as received), so
    /// what is authorised and forwarded is what was matched; `Ok(None)`: no route. A request that
    /// cannot be made canonical is refused (400) and left as it was.
    ///
    /// `trace` (explain, a traced request): the canonical host and path, and each route up to the
    /// chosen one with why it did not match, are recorded there.
    pub fn route_request(
        &self,
        req: &mut RequestHeader,
        trace: Option<&mut portcullis_explain::Explanation>,
    ) -> Result<Option<usize>, Refusal> {
        if portcullis_route::headers::unsupported_transfer_coding(&req.headers) {
            return Err(Refusal::TransferCoding);
        }
        if portcullis_route::headers::unsupported_expectation(&req.headers) {
            return Err(Refusal::Expectation);
        }
        check_method(req.method.as_str())?;
        portcullis_route::headers::check_method_override(&req.headers, req.uri.query())?;
        if let Some(length) = portcullis_route::headers::framing(&req.headers, req.version)? {
            // The one value pingora frames the body by, once, in place of the duplicates.
            req.insert_header(http::header::CONTENT_LENGTH, length)
                .map_err(|_| Refusal::AmbiguousFraming)?;
        }
        if portcullis_route::headers::unannounced_upgrade(&req.headers) {
            // Not an upgrade request: without the header pingora cannot make it one (a tunnel the
            // rest of the connection would pass through unchecked).
            req.remove_header(&http::header::UPGRADE);
        }
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host_header = match (hosts.next(), hosts.next()) {
            (_, Some(_)) => return Err(Refusal::InvalidHost),
            (Some(h), None) => Some(h.to_str().map_err(|_| Refusal::InvalidHost)?),
            (None, None) => None,
        };
        let target = canonicalize(req.method.as_str(), req.raw_path(), &self.normalisation)?;
        if host_header.is_none() && req.version == http::Version::HTTP_11 {
            // RFC 9112 3.2 (after the target's own refusals): HTTP/1.0, which had no `Host`,
            // and HTTP/2 (`:authority`) are not refused.
            return Err(Refusal::MissingHost);
        }
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
        let query = target.query;
        let asked = crate::cors::preflight_method(req)
            .and_then(|m| self.find(&m, host, &target.path, &req.headers, query))
            .filter(|&i| self.routes[i].cors);
        let idx = asked.or_else(|| self.find(&req.method, host, &target.path, &req.headers, query));
        if let Some(e) = trace {
            self.record(e, &req.method, host, &target.path, idx);
        }
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

    /// The canonical request and, for each route up to `chosen` (every route when none is), why
    /// it did not match: [`portcullis_route::RouteMatch::mismatch`], the matcher's own answer.
    fn record(
        &self,
        e: &mut portcullis_explain::Explanation,
        method: &Method,
        host: Option<&str>,
        path: &str,
        chosen: Option<usize>,
    ) {
        e.request.canonical_path = Some(path.to_owned());
        e.request.host = host.map(str::to_owned);
        let upto = chosen.map_or(self.routes.len(), |i| i + 1);
        for (i, r) in self.routes.iter().take(upto).enumerate() {
            let why = (Some(i) != chosen).then(|| mismatch_words(&r.matcher, method, host, path));
            e.routes.push(portcullis_explain::RouteCheck {
                name: r.name.clone(),
                matched: why.is_none(),
                why_not: why,
            });
        }
    }

    /// Route by index.
    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.routes.get(idx).map(|r| &**r)
    }

    /// Every route (the health tasks hold them beyond a borrow).
    pub fn all(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Carries the health of `old`'s peers (the running generation) over to the same peers here:
    /// same route name, same upstream URL, same address; the active health only when the
    /// `health-check` settings are the same too. A reload then neither sends traffic to a peer
    /// known to be down nor holds back one known to be up.
    pub fn inherit_health(&self, old: &Routes) {
        for route in &self.routes {
            let Some(before) = old.routes.iter().find(|r| r.name == route.name) else {
                continue;
            };
            let same_check = before.health_check == route.health_check;
            let old_peers = before.peers.load();
            for peer in route.peers.load().iter() {
                let url = &route.upstreams[peer.upstream].url;
                let found = old_peers
                    .iter()
                    .find(|p| p.addr == peer.addr && before.upstreams[p.upstream].url == *url);
                if let Some(p) = found {
                    peer.inherit(p, same_check);
                }
            }
        }
    }
}

impl Route {
    fn build(r: &RouteModel, model: &Model, resolve: bool) -> Result<Route, BuildError> {
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
        let has_cors = |name: Option<&str>| {
            name.and_then(|n| model.policy_id(n))
                .and_then(|id| model.policies.get(id.index()))
                .is_some_and(|p| p.cors().is_some())
        };
        let keyless_cors = has_cors(r.policy.as_deref());
        let cors = r.policies().into_iter().any(has_cors);
        if r.upstreams.is_empty() {
            return Err(BuildError::NoUpstream(r.name.clone()));
        }
        let checked = r.health_check.is_some();
        let mut peers = Vec::new();
        for (i, up) in r.upstreams.iter().enumerate().filter(|_| resolve) {
            let addrs = resolve_all(up).map_err(|detail| unresolved(up, &r.name, detail))?;
            peers.extend(
                addrs
                    .into_iter()
                    .map(|addr| Arc::new(Peer::at(up, i, addr, checked))),
            );
        }
        Ok(Route {
            name: r.name.clone(),
            matcher: r.matcher.clone(),
            cors,
            keyless_cors,
            policy,
            subscription: r
                .subscription
                .as_ref()
                .map(|s| crate::subscriptions::RouteSubscription::build(s, model)),
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
            peers: ArcSwap::from_pointee(peers),
            upstreams: r.upstreams.clone(),
            health_check: r.health_check.clone(),
            dns_refresh: r.dns_refresh,
            next: AtomicUsize::new(0),
            examples: r.openapi.clone(),
            requests_ok: Resolved::default(),
            request_duration: Resolved::default(),
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

    /// Whether a request of `method` is a `HEAD` the route serves only because it lists `GET`
    /// (and not `HEAD`): its policy's `method` conditions then see `GET`, as APIM's GET operation
    /// would, so a HEAD never runs fewer checks than the GET it mirrors.
    pub fn head_as_get(&self, method: &http::Method) -> bool {
        let listed = &self.matcher.methods;
        *method == http::Method::HEAD
            && listed.contains(&http::Method::GET)
            && !listed.contains(&http::Method::HEAD)
    }

    /// Number of peers (addresses), now.
    pub fn peer_count(&self) -> usize {
        self.peers.load().len()
    }

    /// Peer by index. The list may have been replaced by a DNS refresh since the index was
    /// picked: an index past its end wraps, so a request always gets a current peer.
    pub fn peer(&self, idx: usize) -> Option<PeerRef> {
        let peers = self.peers.load();
        let n = peers.len();
        (n > 0).then(|| PeerRef {
            peers,
            idx: if idx < n { idx } else { idx % n },
        })
    }

    /// The current peer list (the health task's view).
    pub fn peers(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers.load_full()
    }

    /// The `upstreams:` entries as written.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Round robin over the peers not yet tried by this request (`tried`: bit per peer index),
    /// choosing, in order of preference, among:
    /// 1. peers actively healthy and not marked down by a failed connection;
    /// 2. when there is none, peers not marked down (every peer failed its health checks:
    ///    the gateway then balances over all of them, Envoy's "panic mode" at 0 %, because a
    ///    health check that fails everywhere is more often a wrong probe path or a shared
    ///    dependency than backends that all refuse every request);
    /// 3. when every untried peer is marked down, the round-robin choice anyway: trying a peer
    ///    that may have recovered beats failing without trying.
    ///
    /// Reads one `ArcSwap` and two atomics per peer looked at: no lock.
    pub fn pick_peer(&self, tried: u64) -> usize {
        let peers = self.peers.load();
        let n = peers.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = now_ms();
        let untried = |i: &usize| *i >= 64 || tried & (1u64 << *i) == 0;
        let order = (0..n).map(|k| (start + k) % n);
        let up = |i: usize| peers.get(i).is_some_and(|p| p.up(now));
        order
            .clone()
            .filter(untried)
            .find(|&i| up(i) && peers.get(i).is_some_and(|p| p.health.is_healthy()))
            .or_else(|| order.clone().filter(untried).find(|&i| up(i)))
            .or_else(|| order.clone().find(untried))
            .unwrap_or(start)
    }

    /// Passive health: skip this peer for [`PEER_COOLDOWN`].
    pub fn mark_down(&self, idx: usize) {
        if let Some(peer) = self.peers.load().get(idx) {
            peer.mark_down();
        }
    }

    /// Replace the peers by these lookup results, one per upstream in order (`None`: the lookup
    /// failed, that upstream keeps its current peers). A peer whose upstream and address are
    /// still there is kept as it is (its health carries over); new addresses get new peers (not
    /// healthy until their first probe passes, when the route has a health check). Returns the
    /// peers added and removed; nothing is swapped when nothing changed.
    pub fn set_addresses(&self, resolved: &[Option<Vec<SocketAddr>>]) -> AddressChange {
        let current = self.peers.load_full();
        let checked = self.health_check.is_some();
        let mut next: Vec<Arc<Peer>> = Vec::with_capacity(current.len());
        let mut added = Vec::new();
        for (i, up) in self.upstreams.iter().enumerate() {
            match resolved.get(i).and_then(Option::as_ref) {
                None => next.extend(current.iter().filter(|p| p.upstream == i).cloned()),
                Some(addrs) => {
                    for addr in addrs {
                        match current.iter().find(|p| p.upstream == i && p.addr == *addr) {
                            Some(p) => next.push(p.clone()),
                            None => {
                                let p = Arc::new(Peer::at(up, i, *addr, checked));
                                added.push(p.clone());
                                next.push(p);
                            }
                        }
                    }
                }
            }
        }
        let removed: Vec<Arc<Peer>> = current
            .iter()
            .filter(|p| !next.iter().any(|n| Arc::ptr_eq(n, p)))
            .cloned()
            .collect();
        let reordered = next
            .iter()
            .zip(current.iter())
            .any(|(a, b)| !Arc::ptr_eq(a, b));
        if reordered || next.len() != current.len() {
            self.peers.store(Arc::new(next));
        }
        AddressChange { added, removed }
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

/// What [`Route::set_addresses`] changed.
#[derive(Debug, Default)]
pub struct AddressChange {
    /// New peers (new addresses).
    pub added: Vec<Arc<Peer>>,
    /// Peers gone (addresses no longer in the answer).
    pub removed: Vec<Arc<Peer>>,
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
    HeaderValue::from_str(&authority(up)).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// `host[:port]` of an upstream, the port left out when it is the scheme's default: the `Host`
/// the upstream receives by default, and its health probes' `Host`.
pub(crate) fn authority(up: &Upstream) -> String {
    let default = if up.tls { 443 } else { 80 };
    if up.port == default {
        up.host.clone()
    } else {
        format!("{}:{}", up.host, up.port)
    }
}

/// Why a route's `match:` refuses a canonical request, in words.
fn mismatch_words(m: &RouteMatch, method: &Method, host: Option<&str>, path: &str) -> String {
    match m.mismatch(method, host, path) {
        Some(Mismatch::Host) => format!(
            "host: wants `{}`, the request names {}",
            m.host.as_deref().unwrap_or(""),
            host.map_or("none".to_owned(), |h| format!("`{h}`"))
        ),
        Some(Mismatch::Template) => format!(
            "path: `{path}` does not fit the template `{}`",
            m.path.as_deref().or(m.path_prefix.as_deref()).unwrap_or("")
        ),
        Some(Mismatch::Path) => format!(
            "path: wants exactly `{}`{}, the request has `{path}`",
            m.path.as_deref().unwrap_or(""),
            if m.case_sensitive { " (case-sensitive)" } else { "" }
        ),
        Some(Mismatch::PathPrefix) => format!(
            "path: wants `{}` or below, the request has `{path}`",
            m.path_prefix.as_deref().unwrap_or("")
        ),
        Some(Mismatch::Method) => {
            let methods: Vec<&str> = m.methods.iter().map(Method::as_str).collect();
            format!("method: wants {}, the request is {method}", methods.join(", "))
        }
        // A CORS preflight was matched by the method it asks about.
        None => "matches the request's own method, but the preflight was matched by the method it asks about".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn routes(health_path: &str) -> Routes {
        let text = format!(
            "server: {{ listen: \"127.0.0.1:0\" }}\nroutes:\n  - name: api\n    upstreams: [\"http://127.0.0.1:8001\", \"http://10.0.0.1:8002\"]\n    policy: none\n    health-check: {{ path: {health_path}, unhealthy-threshold: 1 }}\n"
        );
        let (model, _) =
            portcullis_config::load_str(&text, std::path::Path::new("t.yaml")).unwrap();
        Routes::build(&model).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn addrs(route: &Route) -> Vec<SocketAddr> {
        route.peers().iter().map(|p| p.addr).collect()
    }

    fn pass(route: &Route, peer: &str) {
        let peers = route.peers();
        let p = peers.iter().find(|p| p.addr == addr(peer)).unwrap();
        p.health.record(true, route.health_check.as_ref().unwrap());
    }

    #[test]
    fn re_resolution_keeps_surviving_peers_and_their_health() {
        let routes = routes("/h");
        let route = routes.get(0).unwrap();
        assert_eq!(
            addrs(route),
            [addr("127.0.0.1:8001"), addr("10.0.0.1:8002")]
        );
        assert!(!is_name(&route.upstreams()[1]));
        pass(route, "10.0.0.1:8002");
        let kept = route.peers()[1].clone();

        let two = vec![addr("10.0.0.2:8002"), addr("10.0.0.1:8002")];
        let change = route.set_addresses(&[None, Some(two)]);
        assert_eq!(change.added.len(), 1);
        assert!(change.removed.is_empty());
        let now = route.peers();
        assert_eq!(now.len(), 3);
        let same = now
            .iter()
            .find(|p| p.addr == addr("10.0.0.1:8002"))
            .unwrap();
        assert!(
            Arc::ptr_eq(same, &kept),
            "a surviving address keeps its peer"
        );
        assert!(same.health.is_healthy());
        assert!(
            !change.added[0].health.is_healthy(),
            "new addresses wait for a probe"
        );
        assert_eq!(change.added[0].upstream, 1);

        // Only healthy peers are picked while there is one.
        for _ in 0..6 {
            assert_eq!(
                route.peer(route.pick_peer(0)).unwrap().addr,
                addr("10.0.0.1:8002")
            );
        }

        let change = route.set_addresses(&[None, Some(vec![addr("10.0.0.2:8002")])]);
        assert_eq!(change.removed.len(), 1);
        assert!(Arc::ptr_eq(&change.removed[0], &kept));
        assert_eq!(
            addrs(route),
            [addr("127.0.0.1:8001"), addr("10.0.0.2:8002")]
        );

        // A failed lookup (None) changes nothing: the list is not even swapped.
        let before = route.peers();
        let change = route.set_addresses(&[None, None]);
        assert!(change.added.is_empty() && change.removed.is_empty());
        assert!(Arc::ptr_eq(&before, &route.peers()));

        // Every peer unhealthy: all of them are used.
        let picked: std::collections::HashSet<SocketAddr> = (0..4)
            .map(|_| route.peer(route.pick_peer(0)).unwrap().addr)
            .collect();
        assert_eq!(picked.len(), 2);
        // An index from before a shrinking swap still finds a peer.
        assert!(route.peer(7).is_some());
    }

    #[test]
    fn a_reload_carries_health_over_only_for_the_same_check() {
        let old = routes("/h");
        pass(old.get(0).unwrap(), "127.0.0.1:8001");
        old.get(0).unwrap().mark_down(1);

        let same = routes("/h");
        same.inherit_health(&old);
        let peers = same.get(0).unwrap().peers();
        assert!(peers[0].health.is_healthy());
        assert!(!peers[1].up(now_ms()), "the passive marking carries over");

        let changed = routes("/other");
        changed.inherit_health(&old);
        let peers = changed.get(0).unwrap().peers();
        assert!(!peers[0].health.is_healthy(), "a new check starts over");
        assert!(
            !peers[1].up(now_ms()),
            "the passive marking carries over anyway"
        );
    }

    #[test]
    fn ip_literals_resolve_to_themselves() {
        let up = |host: &str| Upstream {
            url: String::new(),
            tls: false,
            host: host.to_owned(),
            port: 80,
        };
        assert!(!is_name(&up("[::1]")));
        assert!(is_name(&up("api.internal")));
        assert_eq!(resolve_all(&up("[::1]")).unwrap(), [addr("[::1]:80")]);
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
