//! The checked model: plain data, every default applied, every reference resolved.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::{Policy, VerifyingKey};

/// A checked gateway config.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it was loaded from.
    pub source: PathBuf,
    /// server: block.
    pub server: Server,
    /// Policies by name, in file order.
    pub policies: Vec<PolicyModel>,
    /// Routes in file order (first match wins).
    pub routes: Vec<Route>,
    /// Backends `set-backend-service` sends requests to: the `backends:` section in file order,
    /// then each distinct `base-url` of a `set-backend-service` (indexed by [`BackendId`]).
    pub backends: Vec<Backend>,
    /// `subscriptions:` in file order: the subscriptions whose keys the gateway may be given
    /// (the keys themselves never come from the file).
    pub subscriptions: Vec<Subscription>,
}

/// An APIM subscription: a name for one or two keys, valid for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its name (`--subscription-key NAME=KEY`, logs).
    pub name: String,
    /// What its keys open.
    pub scope: SubscriptionScope,
    /// Only an active subscription's keys are accepted.
    pub state: SubscriptionState,
}

/// What a subscription's keys open (APIM's subscription `scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionScope {
    /// Every API (`/apis`, and APIM's built-in all-access subscription).
    All,
    /// One API: routes whose `subscription.api` is this.
    Api(String),
    /// A product: routes whose `subscription.products` list it; its policy there runs.
    Product(String),
}

/// APIM's subscription `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionState {
    /// Keys accepted.
    #[default]
    Active,
    /// Refused as an invalid key.
    Suspended,
    /// Refused as an invalid key.
    Cancelled,
    /// Refused as an invalid key.
    Expired,
    /// Refused as an invalid key.
    Rejected,
    /// Refused as an invalid key (awaiting approval).
    Submitted,
}

/// A route's `subscription:` block: APIM's subscription requirement of the API it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSubscription {
    /// The API the route belongs to (what api-scoped subscriptions name).
    pub api: Option<String>,
    /// A key is required (APIM's `subscriptionRequired`, default true). When false, keys are
    /// ignored entirely, as APIM does.
    pub required: bool,
    /// The request header the key is read from first.
    pub header_name: http::HeaderName,
    /// The query parameter the key is read from when the header is absent.
    pub query_parameter_name: String,
    /// The products holding the API, in file order, each with the policy to run when the key
    /// belongs to a subscription of that product (`None`: `policy: none`).
    pub products: Vec<ProductPolicy>,
    /// APIM's *open* product holding the API (one of `products`, without a subscription
    /// requirement): a call without a key (or, when keys are not required, any call) runs its
    /// policy instead of the route's `policy`.
    pub open_product: Option<String>,
}

/// One entry of `subscription.products`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPolicy {
    /// The product's name.
    pub product: String,
    /// The policy run for its subscriptions' keys (`None`: anonymous).
    pub policy: Option<String>,
}

/// APIM's default subscription key header.
pub const DEFAULT_SUBSCRIPTION_HEADER: &str = "Ocp-Apim-Subscription-Key";
/// APIM's default subscription key query parameter.
pub const DEFAULT_SUBSCRIPTION_QUERY: &str = "subscription-key";

/// A backend's place in [`Model::backends`] (and in the runtime's resolved table, same order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(usize);

impl BackendId {
    /// The id of the backend at `index` in [`Model::backends`].
    pub const fn new(index: usize) -> BackendId {
        BackendId(index)
    }

    /// Its index in [`Model::backends`].
    pub const fn index(self) -> usize {
        self.0
    }
}

/// A backend of `backends:` (or a `set-backend-service` `base-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its key in `backends:`, or the `base-url` as written.
    pub name: String,
    /// Where it is (scheme, host, port; resolved by the runtime at build time).
    pub upstream: Upstream,
    /// The URL's path, prefixed to the upstream path (`""` for none; canonical, no trailing
    /// slash).
    pub base_path: String,
    /// Read timeout (`None`: the route's).
    pub timeout: Option<Duration>,
    /// Connect timeout (`None`: the route's).
    pub connect_timeout: Option<Duration>,
}

/// server: block.
#[derive(Debug, Clone)]
pub struct Server {
    /// Proxy listeners.
    pub listen: Vec<Listener>,
    /// Admin listener (/metrics, /healthz, /readyz).
    pub admin: Option<String>,
    /// Verified-token cache size in entries; 0 turns the cache off.
    pub token_cache_max_entries: u64,
    /// Graceful shutdown bound on SIGTERM (default 10 s).
    pub shutdown_grace: Duration,
    /// Worker threads (default: number of cores).
    pub threads: Option<usize>,
    /// Whether idle worker threads take connections' tasks from busy ones (`work-stealing`,
    /// default `false`: each connection stays on the worker that accepted it, as in Envoy;
    /// `true` is pingora's default).
    pub work_stealing: bool,
    /// How request paths are canonicalised before routing (`path-normalisation`).
    pub normalisation: portcullis_route::Normalization,
    /// Peers whose `X-Forwarded-*` headers are kept (extended); from any other peer they are
    /// overwritten. Empty by default: the gateway is the edge.
    pub trusted_proxies: Vec<IpNet>,
    /// Where rate-limit and quota counters live (`rate-limit-store`); start-only.
    pub rate_limit_store: RateLimitStore,
    /// `trace`: request tracing for development (`None`, the default: off).
    pub trace: Option<TraceSettings>,
    /// OpenTelemetry tracing (`telemetry`); `None`: off, and the request path does no tracing
    /// work. Start-only.
    pub telemetry: Option<crate::telemetry::Telemetry>,
}

/// `server.trace`: a caller that sends the trace key in the trace header gets the explanation of
/// its request at the admin listener (`/trace/<id>`, named by the `Portcullis-Trace-Location`
/// response header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// The key a caller sends (from `key` or `key-file`).
    pub key: TraceSecret,
    /// The request header that carries it (`header`, default `Portcullis-Trace`); removed from
    /// every request before it is forwarded.
    pub header: http::HeaderName,
    /// How many explanations are kept (`max-entries`, default 100); start-only.
    pub max_entries: usize,
    /// How long each is kept (`ttl`, default 10 minutes); start-only.
    pub ttl: std::time::Duration,
}

/// The trace key: never printed (its `Debug` says `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct TraceSecret(String);

impl TraceSecret {
    /// Wrap a key.
    pub fn new(key: String) -> TraceSecret {
        TraceSecret(key)
    }

    /// The key itself, for the comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TraceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceSecret(***)")
    }
}

/// `server.rate-limit-store`: where the counters of `rate-limit`, `rate-limit-by-key` and
/// `quota-by-key` live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RateLimitStore {
    /// In the gateway process (the default): each replica counts on its own.
    #[default]
    InProcess,
    /// A Redis server shared by every replica.
    Redis(RedisStore),
}

/// A Redis rate-limit store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStore {
    /// `redis://[user:password@]host[:port][/db]` as written (may hold a password: never log it).
    pub url: String,
    /// The URL with any password replaced by `***`, for logs.
    pub display: String,
    /// What a request gets when Redis cannot answer (`rate-limit-store-failure`, default open).
    pub failure: StoreFailure,
    /// Bound on one counter operation, connecting included (`rate-limit-store-timeout`).
    pub timeout: std::time::Duration,
    /// Multiplexed connections to Redis (`rate-limit-store-pool-size`).
    pub pool_size: usize,
}

/// `rate-limit-store-failure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreFailure {
    /// Allow the call uncounted (and count a store error).
    #[default]
    Open,
    /// Answer 503.
    Closed,
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The range's address (bits beyond the prefix are ignored).
    pub addr: IpAddr,
    /// Prefix length in bits (at most 32 for IPv4, 128 for IPv6).
    pub prefix: u8,
}

impl IpNet {
    /// `addr` or `addr/prefix`; `None` when malformed or the prefix is too long.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One proxy listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `host:port` (port 0 allowed: the gateway reports the bound port).
    pub addr: String,
    /// Certificates (PEM files) for https; empty: plain HTTP. Several: the one whose DNS names
    /// match the client's SNI is served, the first when none does.
    pub tls: Vec<Tls>,
    /// Plain listener: also accept HTTP/2 with prior knowledge (h2c), as gRPC clients speak it
    /// on insecure channels. TLS listeners negotiate h2 by ALPN whatever this says.
    pub h2c: bool,
}

/// One certificate of a TLS listener: its files.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// A policy's place in [`Model::policies`]: the one id every per-policy table is indexed by (the
/// gateway's policies and pipelines, the key store's snapshots, the token cache's scopes), so a
/// route cannot be handed an index into the wrong table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(usize);

impl PolicyId {
    /// The id of the policy at `index` in [`Model::policies`].
    pub const fn new(index: usize) -> PolicyId {
        PolicyId(index)
    }

    /// Its index in [`Model::policies`] (and in every table built from them, in the same order).
    pub const fn index(self) -> usize {
        self.0
    }
}

impl Model {
    /// The id of the policy named `name`.
    pub fn policy_id(&self, name: &str) -> Option<PolicyId> {
        self.policies
            .iter()
            .position(|p| p.policy.name == name)
            .map(PolicyId)
    }
}

/// A policy: the compiled auth policy plus where its keys come from.
#[derive(Debug, Clone)]
pub struct PolicyModel {
    /// What the auth core evaluates.
    pub policy: Arc<Policy>,
    /// Key sources (openid-config and issuer-signing-keys entries, in file order).
    pub key_sources: Vec<KeySource>,
    /// The inbound statements in the order they run (see `statements`); `ValidateJwt` marks where
    /// `policy` is evaluated, and a policy without it checks no token.
    pub inbound: Vec<crate::statements::Statement>,
    /// The outbound statements in order: run on the backend's response (and on a
    /// `return-response` answer), never on the gateway's own error answers.
    pub outbound: Vec<crate::statements::Statement>,
}

impl PolicyModel {
    /// A policy that only validates tokens (what code-built models and tests use).
    pub fn validate_only(policy: Arc<Policy>, key_sources: Vec<KeySource>) -> PolicyModel {
        PolicyModel {
            policy,
            key_sources,
            inbound: vec![crate::statements::Statement::ValidateJwt],
            outbound: Vec::new(),
        }
    }

    /// The policy's `cors` statement, if any (run before the others, and it makes preflights match
    /// by the method they ask about).
    pub fn cors(&self) -> Option<&Arc<crate::statements::Cors>> {
        self.inbound.iter().find_map(|s| match s {
            crate::statements::Statement::Cors(c) => Some(c),
            _ => None,
        })
    }

    /// The URL-template parameters the policy's statements use (`{id}` in a `rewrite-uri`): a
    /// route without them gets empty values, which `check` warns about.
    pub fn route_params_used(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for s in &self.inbound {
            if let crate::statements::Statement::RewriteUri(r) = s {
                for p in r.params() {
                    if !out.contains(p) {
                        out.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether the policy checks a token.
    pub fn validates_tokens(&self) -> bool {
        self.inbound
            .iter()
            .any(|s| matches!(s, crate::statements::Statement::ValidateJwt))
    }
}

/// Key lifecycle knobs (policy-level defaults, overridable per source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLifecycle {
    /// After an unknown-kid refetch, no new one for this long (default 30 s).
    pub unknown_kid_cooldown: Duration,
    /// Refresh period when the issuer sends no Cache-Control max-age (default 1 h).
    pub refresh_interval: Duration,
    /// Shortest refresh period: a smaller `Cache-Control: max-age` (or `no-cache`/`no-store`) is
    /// raised to this (default 30 s). Bounds how long a key the issuer removed keeps verifying.
    pub min_refresh_interval: Duration,
    /// Serve last good keys this long while the issuer is down (default 24 h).
    pub max_stale: Duration,
}

impl Default for KeyLifecycle {
    fn default() -> Self {
        KeyLifecycle {
            unknown_kid_cooldown: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(3600),
            min_refresh_interval: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where a policy's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// OpenID discovery document URL (-> jwks_uri and issuer).
    OpenIdConfig {
        /// Discovery URL.
        url: String,
        /// Issuers this document's keys speak for besides the issuer it names: the entry's own
        /// `issuers`, else (the policy's only openid-config entry) the policy's `issuers`; for
        /// validate-azure-ad-token the tenant's v1 and v2 issuers. A key of the document verifies
        /// only tokens whose `iss` is the discovered issuer or one of these.
        issuers: Vec<String>,
        /// Lifecycle knobs.
        lifecycle: KeyLifecycle,
    },
    /// A JWKS URL.
    JwksUri {
        /// JWKS URL.
        url: String,
        /// Lifecycle knobs.
        lifecycle: KeyLifecycle,
    },
    /// Keys read at load time (jwks-file, n/e, certificate-file, base64).
    Static {
        /// Label for logs (file path or "inline n/e kid=..."), never secret material.
        label: String,
        /// The parsed keys.
        keys: Vec<VerifyingKey>,
    },
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// What the route matches: host, exact path or path prefix, methods, case sensitivity (the
    /// one matcher the proxy and the shadowing check share).
    pub matcher: portcullis_route::RouteMatch,
    /// Upstreams (round robin).
    pub upstreams: Vec<Upstream>,
    /// Policy name, or `None` for `policy: none` (anonymous).
    pub policy: Option<String>,
    /// Upstream read timeout (default 30 s).
    pub timeout: Duration,
    /// Upstream connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Remove the matched path-prefix before forwarding.
    pub strip_prefix: bool,
    /// Replace the matched path-prefix with this (after strip).
    pub rewrite_prefix: Option<String>,
    /// HTTP version spoken to the upstreams.
    pub upstream_protocol: UpstreamProtocol,
    /// Idle timeout of an upgraded (WebSocket) connection: closed after this long without a byte
    /// in either direction (replaces `timeout` once the upgrade is requested).
    pub websocket_idle_timeout: Duration,
    /// `openapi: {spec, operation}`: the operation's response examples, read at load (what
    /// `mock-response` answers with).
    pub openapi: Option<Arc<crate::upstream::Examples>>,
    /// `upstream-tls`: CA, client certificate, SNI and verification for https upstreams.
    pub upstream_tls: Option<Arc<crate::upstream_tls::UpstreamTls>>,
    /// `host-header`: the `Host` the upstream receives.
    pub host_header: crate::upstream_tls::HostHeader,
    /// `health-check:`: active health checks of the upstreams (`None`: passive marking only).
    pub health_check: Option<crate::health::HealthCheck>,
    /// `dns-refresh:`: how often upstream host names are resolved again (zero: never, only at
    /// start and reload; default 30 s).
    pub dns_refresh: Duration,
    /// `subscription:`: the subscription key check (`None`: none).
    pub subscription: Option<RouteSubscription>,
}

impl Route {
    /// Every policy the route may run: `policy`, then each product's (names, `None` for
    /// `none`), without repeats.
    pub fn policies(&self) -> Vec<Option<&str>> {
        let mut out = vec![self.policy.as_deref()];
        for p in self.subscription.iter().flat_map(|s| &s.products) {
            if !out.contains(&p.policy.as_deref()) {
                out.push(p.policy.as_deref());
            }
        }
        out
    }
}

/// `upstream-protocol`: how the gateway talks to a route's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default; WebSocket upgrades need it).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`; https upstreams only).
    H2,
    /// HTTP/2 with prior knowledge over plain TCP (http upstreams only): gRPC servers without TLS.
    H2c,
}

/// An upstream from `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written.
    pub url: String,
    /// https.
    pub tls: bool,
    /// Host name or IP as written (resolved by the runtime at build time).
    pub host: String,
    /// Port (default 80/443).
    pub port: u16,
}
