//! Prometheus metrics of the key store.
//!
//! Why it exists: operators must see, per issuer and source, whether keys are being fetched, how
//! old the served key set is (and how old it may get: max-stale, so an alert can fire before
//! the keys stop serving), how many keys it holds, and how often the unknown-kid cooldown
//! protected the issuer. Registered once on the caller's registry and shared by rebuilt stores.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The key store's metric families. Labels: `issuer`, `source` (the configured URL); failures
/// also carry `reason` ([`crate::FetchError::reason`]), suppressed refetches `why`
/// (`cooldown` or `coalesced`).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) fetches: IntCounterVec,
    pub(crate) failures: IntCounterVec,
    pub(crate) age: GaugeVec,
    pub(crate) max_stale: GaugeVec,
    pub(crate) keys: IntGaugeVec,
    pub(crate) suppressed: IntCounterVec,
}

const LABELS: &[&str] = &["issuer", "source"];

impl Metrics {
    /// Create and register every family on `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            fetches: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwks_fetches_total",
                    "Key fetches attempted (discovery + JWKS count as one), by issuer and source",
                ),
                LABELS,
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwks_fetch_failures_total",
                    "Key fetches that failed, by issuer, source and reason",
                ),
                &["issuer", "source", "reason"],
            )?,
            age: GaugeVec::new(
                Opts::new(
                    "portcullis_jwks_key_set_age_seconds",
                    "Seconds since the served key set was last fetched successfully (-1: never)",
                ),
                LABELS,
            )?,
            max_stale: GaugeVec::new(
                Opts::new(
                    "portcullis_jwks_max_stale_seconds",
                    "The source's max-stale: once the key set's age passes it, its keys stop serving (alerts compare the age with it)",
                ),
                LABELS,
            )?,
            keys: IntGaugeVec::new(
                Opts::new(
                    "portcullis_jwks_keys",
                    "Usable keys in the last good key set, by issuer and source",
                ),
                LABELS,
            )?,
            suppressed: IntCounterVec::new(
                Opts::new(
                    "portcullis_jwks_refetch_suppressed_total",
                    "Unknown-kid refetches not sent: within the cooldown, or joined an in-flight fetch",
                ),
                &["issuer", "source", "why"],
            )?,
        };
        registry.register(Box::new(m.fetches.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.age.clone()))?;
        registry.register(Box::new(m.max_stale.clone()))?;
        registry.register(Box::new(m.keys.clone()))?;
        registry.register(Box::new(m.suppressed.clone()))?;
        Ok(m)
    }
}
