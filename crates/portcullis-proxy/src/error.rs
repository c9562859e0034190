//! Why the gateway could not start: typed, so `portcullis run` can say exactly what is wrong
//! (and exit non-zero) instead of panicking inside pingora.

/// A start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An upstream host name did not resolve.
    #[error("route {route}: cannot resolve upstream {upstream}: {detail}")]
    Resolve {
        /// Route name.
        route: String,
        /// Upstream URL.
        upstream: String,
        /// Resolver message.
        detail: String,
    },
    /// A route names a policy the model does not have (the config checker should prevent this).
    #[error("route {route}: unknown policy {policy}")]
    UnknownPolicy {
        /// Route name.
        route: String,
        /// Policy name.
        policy: String,
    },
    /// A route without upstreams.
    #[error("route {0}: no upstream")]
    NoUpstream(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address as configured.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("listener {addr}: TLS: {detail}")]
    Tls {
        /// Address as configured.
        addr: String,
        /// What went wrong.
        detail: String,
    },
    /// The key store could not be built.
    #[error("key store: {0}")]
    KeyStore(#[from] portcullis_jwks::JwksError),
    /// The rate-limit store could not be set up (`server.rate-limit-store`).
    #[error("rate-limit store {url}: {detail}")]
    RateLimitStore {
        /// The store's URL, without its password.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A subscription key was given for a subscription the config does not name.
    #[error("{0}")]
    UnknownSubscription(String),
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
