//! The gateway's Prometheus metrics, in one registry shared with the key store (its fetch and key-set
//! metrics land next to ours, and `/metrics` renders the lot).
//!
//! Label sets are bounded: route names come from the config, statuses are HTTP codes, reasons are
//! the fixed `AuthError::reason()` codes plus a few gateway ones.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::cache::CacheMetrics;
use crate::error::BuildError;

/// Reason label when nothing went wrong.
pub const REASON_OK: &str = "ok";
/// Reason label for a request no route matched.
pub const REASON_NO_ROUTE: &str = "NoRoute";
/// Reason label for an upstream that could not be reached (502).
pub const REASON_UPSTREAM_UNAVAILABLE: &str = "UpstreamUnavailable";
/// Reason label for an upstream that did not answer in time (504).
pub const REASON_UPSTREAM_TIMEOUT: &str = "UpstreamTimeout";
/// Reason label for other proxy failures.
pub const REASON_PROXY_ERROR: &str = "ProxyError";
/// Reason label (logs and metrics only, with status 499 as nginx records it) for a request whose
/// client closed the connection, or could not be written to, before the answer was complete:
/// nothing is sent, and it is not the gateway's or the upstream's failure.
pub const REASON_CLIENT_CLOSED: &str = "ClientClosedRequest";
/// The status recorded with [`REASON_CLIENT_CLOSED`] (no answer is written).
pub const STATUS_CLIENT_CLOSED: u16 = 499;
/// Route label for requests no route matched.
pub const ROUTE_NONE: &str = "-";

/// Reads how many log lines the process' log queue dropped (set once by the binary, which owns
/// logging for every subcommand).
type DroppedLines = Box<dyn Fn() -> u64 + Send + Sync>;

static DROPPED_LOG_LINES: OnceLock<DroppedLines> = OnceLock::new();

/// Where `portcullis_log_lines_dropped_total` reads its value: the binary's non-blocking log
/// writer, which drops (and counts) lines when its queue is full rather than block a request. The
/// first call wins.
pub fn count_dropped_log_lines(source: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(source));
}

/// One labelled series of a metric vector, looked up on first use and kept by whoever owns the
/// labels (a route, a policy). Why: `with_label_values` hashes every label value and takes the
/// vector's lock on each call, and the request path would make that call on every request (a
/// shared lock word, written by every worker thread, on many cores). The owner always passes the
/// same labels: they are its own names and fixed outcomes.
#[derive(Debug)]
pub struct Resolved<M>(OnceLock<M>);

impl<M> Default for Resolved<M> {
    fn default() -> Self {
        Resolved(OnceLock::new())
    }
}

impl Resolved<IntCounter> {
    /// The series of `vec` with `labels`.
    pub fn counter(&self, vec: &IntCounterVec, labels: &[&str]) -> &IntCounter {
        self.0.get_or_init(|| vec.with_label_values(labels))
    }
}

impl Resolved<Histogram> {
    /// The series of `vec` with `labels`.
    pub fn histogram(&self, vec: &HistogramVec, labels: &[&str]) -> &Histogram {
        self.0.get_or_init(|| vec.with_label_values(labels))
    }
}

/// The gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `portcullis_requests_total{route, status, reason}`.
    pub requests: IntCounterVec,
    /// `portcullis_request_duration_seconds{route}`: from the request's arrival to the end of its
    /// answer (the backend's time included), every request, rejected ones too. Dashboards and
    /// the p99 alert read their latency quantiles from it.
    pub request_duration: HistogramVec,
    /// `portcullis_ready`: 1 when `/readyz` answers 200 (listeners up, every issuer's keys
    /// loaded, not draining), else 0; set when `/metrics` is rendered, so an alert need not probe.
    pub ready: IntGauge,
    /// `portcullis_report_only_failures_total{route, policy, reason}`: would-be rejections forwarded.
    pub report_only: IntCounterVec,
    /// `portcullis_token_validation_seconds{policy, result}`.
    pub validation: HistogramVec,
    /// `portcullis_claim_headers_refused_total{policy, header, reason}`: forward-claims headers not
    /// set because the claim's value cannot be carried unambiguously.
    pub claim_headers_refused: IntCounterVec,
    /// `portcullis_transform_values_refused_total{policy, statement, reason}`: values of
    /// transformation statements not used because they are invalid where they go (see `values`).
    pub transform_values_refused: IntCounterVec,
    /// `portcullis_subscription_calls_total{subscription}`: calls let through by a subscription
    /// key, by subscription name (refusals are `portcullis_requests_total` reasons
    /// `SubscriptionKeyMissing` and `SubscriptionKeyInvalid`).
    pub subscription_calls: IntCounterVec,
    /// `portcullis_token_cache_{hits,misses,evictions}_total`.
    pub token_cache: CacheMetrics,
    /// `portcullis_rate_limit_untracked_total`: calls a full rate-limit store could not count.
    pub rate_limit_untracked: IntCounter,
    /// `portcullis_rate_limit_store_errors_total{error}`: calls the Redis rate-limit store could
    /// not count (`unavailable`, `timeout`, `reply`), answered per `rate-limit-store-failure`.
    pub rate_limit_store_errors: IntCounterVec,
    /// `portcullis_upstream_healthy{route, peer}`: 1 healthy, 0 not (routes with a health check;
    /// filled from the serving generation when `/metrics` is rendered).
    pub upstream_healthy: IntGaugeVec,
    /// `portcullis_upstream_health_checks_total{route, peer, result}`: probes by result.
    pub health_checks: IntCounterVec,
    /// `portcullis_otel_spans_dropped_total`: spans not exported (queue full, or the collector did
    /// not take their batch).
    pub otel_spans_dropped: IntCounter,
    /// `portcullis_otel_spans_exported_total`: spans the collector took.
    pub otel_spans_exported: IntCounter,
    /// `portcullis_log_lines_dropped_total`: log lines dropped because the log queue was full
    /// (synced from the log writer's own count when `/metrics` is rendered).
    log_lines_dropped: IntCounter,
}

impl Metrics {
    /// Register the gateway metrics in a fresh registry.
    pub fn new() -> Result<Metrics, BuildError> {
        let registry = Registry::new();
        let counters =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, BuildError> {
                let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(counter.clone()))?;
                Ok(counter)
            };
        let requests = counters(
            "portcullis_requests_total",
            "Requests by route, status and reason.",
            &["route", "status", "reason"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from a request's arrival to the end of its answer (the backend's time included), by route.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let ready = IntGauge::new(
            "portcullis_ready",
            "1 when /readyz answers 200 (listeners up, every issuer's keys loaded, not draining), else 0.",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let subscription_calls = counters(
            "portcullis_subscription_calls_total",
            "Calls let through by a subscription key, by subscription.",
            &["subscription"],
        )?;
        let report_only = counters(
            "portcullis_report_only_failures_total",
            "Requests a report-only policy would have rejected, by reason.",
            &["route", "policy", "reason"],
        )?;
        let claim_headers_refused = counters(
            "portcullis_claim_headers_refused_total",
            "forward-claims headers not set because the claim value cannot be carried unambiguously, by reason.",
            &["policy", "header", "reason"],
        )?;
        let transform_values_refused = counters(
            "portcullis_transform_values_refused_total",
            "Values of transformation statements (set-header ...) not used because they are invalid where they go (control characters, non-ASCII in a header), by reason.",
            &["policy", "statement", "reason"],
        )?;
        let validation = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_token_validation_seconds",
                "Time to validate a request's token (extract, verify, claims).",
            )
            .buckets(vec![
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
                0.025, 0.1, 1.0,
            ]),
            &["policy", "result"],
        )?;
        registry.register(Box::new(validation.clone()))?;
        let token_cache = CacheMetrics {
            hits: IntCounter::new(
                "portcullis_token_cache_hits_total",
                "Requests whose token was found in the verified-token cache (signature not re-checked).",
            )?,
            misses: IntCounter::new(
                "portcullis_token_cache_misses_total",
                "Verified-token cache lookups that found nothing usable (the token was verified).",
            )?,
            evictions: IntCounterVec::new(
                Opts::new(
                    "portcullis_token_cache_evictions_total",
                    "Entries leaving the verified-token cache: size (capacity), expired (token exp), key_removed (its key left the key set).",
                ),
                &["cause"],
            )?,
        };
        registry.register(Box::new(token_cache.hits.clone()))?;
        registry.register(Box::new(token_cache.misses.clone()))?;
        registry.register(Box::new(token_cache.evictions.clone()))?;
        let rate_limit_untracked = IntCounter::new(
            "portcullis_rate_limit_untracked_total",
            "Calls not counted because the in-process rate-limit store had no room for a new key (allowed).",
        )?;
        registry.register(Box::new(rate_limit_untracked.clone()))?;
        let rate_limit_store_errors = counters(
            "portcullis_rate_limit_store_errors_total",
            "Calls the Redis rate-limit store could not count, by error (unavailable, timeout, reply); allowed under rate-limit-store-failure: open, refused with 503 under closed.",
            &["error"],
        )?;
        let log_lines_dropped = IntCounter::new(
            "portcullis_log_lines_dropped_total",
            "Log lines (access lines included) dropped because the log writer's batch was full: stderr could not keep up.",
        )?;
        registry.register(Box::new(log_lines_dropped.clone()))?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_healthy",
                "Active health of each upstream peer (address) of routes with a health-check: 1 in the rotation, 0 out.",
            ),
            &["route", "peer"],
        )?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        let health_checks = counters(
            "portcullis_upstream_health_checks_total",
            "Health-check probes by route, peer (address) and result: success, unexpected_status, timeout, connect_error, response_error.",
            &["route", "peer", "result"],
        )?;
        let otel_spans_dropped = IntCounter::new(
            "portcullis_otel_spans_dropped_total",
            "Trace spans not exported: the export queue was full (server.telemetry.otlp.max-queue-size) or the collector did not take their batch (down, timeout, refused).",
        )?;
        registry.register(Box::new(otel_spans_dropped.clone()))?;
        let otel_spans_exported = IntCounter::new(
            "portcullis_otel_spans_exported_total",
            "Trace spans the OTLP collector accepted.",
        )?;
        registry.register(Box::new(otel_spans_exported.clone()))?;
        Ok(Metrics {
            registry,
            otel_spans_dropped,
            otel_spans_exported,
            requests,
            request_duration,
            ready,
            subscription_calls,
            report_only,
            validation,
            claim_headers_refused,
            transform_values_refused,
            token_cache,
            rate_limit_untracked,
            rate_limit_store_errors,
            log_lines_dropped,
            upstream_healthy,
            health_checks,
        })
    }

    /// The registry (the key store registers its metrics here too).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> Vec<u8> {
        if let Some(dropped) = DROPPED_LOG_LINES.get() {
            let (now, shown) = (dropped(), self.log_lines_dropped.get());
            if now > shown {
                self.log_lines_dropped.inc_by(now - shown);
            }
        }
        let mut out = Vec::with_capacity(4096);
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}
