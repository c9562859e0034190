//! OpenTelemetry tracing (`server.telemetry`): W3C trace context in and out, a SERVER span per
//! request, a CLIENT span per upstream call, OTLP export (HTTP/protobuf or gRPC) in batches.
//!
//! Why it is shaped this way:
//! - **Nothing when off.** Without `server.telemetry` the gateway holds no [`Telemetry`]: each
//!   hook of the request path is one `Option` test, and `traceparent`/`tracestate` pass through to
//!   the backend untouched (the gateway is then invisible to the trace, as any HTTP proxy is).
//! - **Strict parsing, never a mismatched pair.** A client's `traceparent` is continued only when
//!   it is valid per W3C Trace Context (see [`parse_traceparent`]); otherwise a new trace starts.
//!   Either way the backend gets the gateway's own `traceparent` (its span as the parent), and the
//!   client's copy is replaced, so the backend never sees a parent the gateway did not make.
//! - **Export never blocks a request.** Spans go to the SDK's batch processor (its own thread)
//!   behind a bound of our own ([`Bounded`]): past `max-queue-size` spans waiting, a span is
//!   dropped and counted in `portcullis_otel_spans_dropped_total`, as are the spans of a batch the
//!   collector did not take (down, timeout). Exported ones are counted in
//!   `portcullis_otel_spans_exported_total`.
//! - **Started after pingora's fork.** pingora's `run_forever` may fork, which would lose threads
//!   started before it: the exporter, its HTTP client or gRPC channel and the batch thread are built
//!   by [`TelemetryService`], a pingora background service (inside its tokio runtime, which the gRPC
//!   channel needs). Until then `/readyz` says not ready. The shutdown path flushes the batch (after
//!   the drain, so the last requests' spans go out too).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use portcullis_config::telemetry::{OtlpProtocol, Telemetry as Config};
use prometheus::IntCounter;

/// The W3C header that carries the trace and parent span ids.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendor trace state.
pub const TRACESTATE: &str = "tracestate";
/// Instrumentation scope of the gateway's spans.
const SCOPE: &str = "portcullis";
/// Most spans one export call carries.
const MAX_EXPORT_BATCH: usize = 512;

/// A valid incoming `traceparent`: what the gateway continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (never all zero).
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Parse a `traceparent` value per W3C Trace Context level 1: `version-traceid-parentid-flags`,
/// lower-case hex only, lengths 2-32-16-2, trace and parent ids not all zero, version `ff`
/// invalid. Version `00` must be exactly 55 characters; a later version (unknown to us) is read as
/// version 00 when its first 55 characters are and, if longer, the 56th is `-` (the spec's rule for
/// forward compatibility). `None`: invalid, start a new trace.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    match version {
        0xff => return None,
        0x00 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, out) in trace_id.iter_mut().enumerate() {
        *out = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0u8; 8];
    for (i, out) in parent_id.iter_mut().enumerate() {
        *out = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Two lower-case hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
        _ => None,
    }
}

/// The parent a request's span continues: the client's valid `traceparent` (exactly one header)
/// with its `tracestate` (every header joined; dropped when invalid); an empty context (a new
/// trace) otherwise.
pub fn extract(headers: &HeaderMap) -> Context {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let parent = match (values.next(), values.next()) {
        (Some(one), None) => parse_traceparent(one.as_bytes()),
        _ => None,
    };
    let Some(parent) = parent else {
        return Context::new();
    };
    let state = tracestate(headers).unwrap_or_default();
    let span_context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        // Only the sampled bit is defined; the others are not ours to pass on.
        TraceFlags::new(parent.flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    Context::new().with_remote_span_context(span_context)
}

/// Every `tracestate` header joined (the spec allows splitting it), parsed; `None` when absent or
/// invalid.
fn tracestate(headers: &HeaderMap) -> Option<TraceState> {
    let mut joined = String::new();
    for value in headers.get_all(TRACESTATE) {
        let text = value.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    if joined.trim().is_empty() {
        return None;
    }
    // Empty members are allowed (and skipped); the spec caps the list at 32.
    let members: Vec<&str> = joined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > 32 {
        return None;
    }
    members.join(",").parse::<TraceState>().ok()
}

/// `traceparent` for a span context: version 00.
pub fn format_traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8()
    )
}

/// Tracing for a gateway: built from `server.telemetry` before start, live once
/// [`TelemetryService`] has run.
pub struct Telemetry {
    config: Config,
    tracer: OnceLock<SdkTracer>,
    provider: Mutex<Option<SdkTracerProvider>>,
    counters: Counters,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: its headers may hold an API key.
        f.debug_struct("Telemetry")
            .field("endpoint", &self.config.otlp.endpoint)
            .field("started", &self.started())
            .finish()
    }
}

/// The export counters and the bound on spans waiting.
#[derive(Debug, Clone)]
struct Counters {
    dropped: IntCounter,
    exported: IntCounter,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

impl Telemetry {
    /// Not started: no span is made until [`TelemetryService`] runs.
    pub fn new(config: Config, dropped: IntCounter, exported: IntCounter) -> Arc<Telemetry> {
        let max_waiting = config.otlp.max_queue_size;
        Arc::new(Telemetry {
            config,
            tracer: OnceLock::new(),
            provider: Mutex::new(None),
            counters: Counters {
                dropped,
                exported,
                waiting: Arc::new(AtomicUsize::new(0)),
                max_waiting,
            },
        })
    }

    /// True once the exporter is built (readiness waits for it).
    pub fn started(&self) -> bool {
        self.tracer.get().is_some()
    }

    /// The tracer, once started.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.tracer.get()
    }

    /// Build the exporter, the batch processor (its thread) and the tracer. Runs inside a tokio
    /// runtime (the gRPC channel is bound to it). Idempotent. When the exporter library refuses
    /// the (checked) config, the tracer still starts without an exporter: propagation keeps its
    /// rules (the backend never gets the client's parent), spans go nowhere, and the error is
    /// returned for the log.
    fn start(&self) -> Result<(), String> {
        if self.started() {
            return Ok(());
        }
        let mut provider = SdkTracerProvider::builder();
        let built = exporter(&self.config);
        let refused = built.as_ref().err().cloned();
        if let Ok(exporter) = built {
            provider = provider.with_span_processor(self.processor(exporter));
        }
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            self.config.sample_ratio,
        )));
        let provider = provider
            .with_sampler(sampler)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(self.config.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer(SCOPE);
        *self.provider.lock() = Some(provider);
        let _ = self.tracer.set(tracer);
        refused.map_or(Ok(()), Err)
    }

    /// The batch processor (its own thread) behind our bound, feeding `exporter`.
    fn processor(&self, exporter: opentelemetry_otlp::SpanExporter) -> Bounded {
        let exporter = Counting {
            inner: exporter,
            counters: self.counters.clone(),
        };
        let batch = BatchConfigBuilder::default()
            // Our bound (`Bounded`) is the one that drops; the SDK's queue is never the tighter.
            .with_max_queue_size(self.counters.max_waiting.saturating_add(MAX_EXPORT_BATCH))
            .with_max_export_batch_size(MAX_EXPORT_BATCH.min(self.counters.max_waiting))
            .with_scheduled_delay(self.config.otlp.export_interval)
            .build();
        Bounded {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
            counters: self.counters.clone(),
        }
    }

    /// Export what is waiting and stop the batch thread (bounded by the export timeout). Spans
    /// ended afterwards are not exported.
    pub fn shutdown(&self) {
        let provider = self.provider.lock().take();
        if let Some(provider) = provider {
            if let Err(e) = provider.shutdown_with_timeout(self.config.otlp.timeout) {
                tracing::warn!(error = %e, "telemetry: flushing spans at shutdown failed");
            }
        }
    }

    /// The SERVER span of a request continuing `headers`' trace context (or a new trace); `None`
    /// until started.
    pub fn start_request(&self, method: &str, headers: &HeaderMap) -> Option<Box<RequestTrace>> {
        let tracer = self.tracer.get()?;
        let parent = extract(headers);
        let span = tracer
            .span_builder(method.to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method.to_owned())])
            .start_with_context(tracer, &parent);
        Some(Box::new(RequestTrace {
            cx: parent.with_span(span),
            upstream: None,
            method: method.to_owned(),
        }))
    }
}

/// The spans of one request (kept in the request's context).
#[derive(Debug)]
pub struct RequestTrace {
    /// Holds the SERVER span; the parent of key fetches made for this request.
    pub cx: Context,
    /// The CLIENT span of the upstream call, once the request goes upstream.
    upstream: Option<Context>,
    /// The request's method (the span is named `METHOD route` once the route is known).
    method: String,
}

/// What the request's span records at its end.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Route name (`-`: none matched).
    pub route: &'a str,
    /// The route's policy (`None`: anonymous route or no route).
    pub policy: Option<&'a str>,
    /// Final status (0: none was sent).
    pub status: u16,
    /// Reason code (`ok` when nothing failed).
    pub reason: &'static str,
    /// The canonical path (never the query: it may carry a token).
    pub path: &'a str,
    /// `X-Request-Id`.
    pub request_id: &'a str,
}

impl RequestTrace {
    /// Start the CLIENT span of the upstream call (ending a previous attempt's) and return the
    /// `traceparent` (and `tracestate`, when there is one) the backend gets: that span as the
    /// parent.
    pub fn start_upstream(
        &mut self,
        tracer: &SdkTracer,
        method: &str,
        upstream: &str,
    ) -> (HeaderValue, Option<HeaderValue>) {
        if let Some(previous) = self.upstream.take() {
            previous.span().end();
        }
        let span = tracer
            .span_builder(format!("{method} upstream"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("portcullis.upstream", upstream.to_owned()),
            ])
            .start_with_context(tracer, &self.cx);
        let cx = self.cx.with_span(span);
        let span_context = cx.span().span_context().clone();
        self.upstream = Some(cx);
        let traceparent = HeaderValue::from_str(&format_traceparent(&span_context))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let state = span_context.trace_state().header();
        let tracestate = (!state.is_empty())
            .then(|| HeaderValue::from_str(&state).ok())
            .flatten();
        (traceparent, tracestate)
    }

    /// The upstream answered with `status`.
    pub fn upstream_status(&self, status: u16) {
        if let Some(cx) = &self.upstream {
            let span = cx.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(status.to_string()));
            }
        }
    }

    /// Record the outcome and end the spans.
    pub fn end(self, outcome: &Outcome<'_>) {
        if let Some(cx) = &self.upstream {
            cx.span().end();
        }
        let span = self.cx.span();
        let route = outcome.route;
        // A report-only policy's would-be failure has a reason but a 2xx: `ok`, its reason kept.
        let result = match (outcome.reason, outcome.status) {
            (_, 0) => "error",
            (_, s) if s >= 500 => "error",
            (reason, s) if s >= 400 && reason != crate::metrics::REASON_OK => "rejected",
            _ => "ok",
        };
        let mut attributes = vec![
            KeyValue::new("portcullis.route", route.to_owned()),
            KeyValue::new("portcullis.result", result),
            KeyValue::new("portcullis.reason", outcome.reason),
            KeyValue::new("url.path", outcome.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(outcome.status)),
            KeyValue::new("portcullis.request_id", outcome.request_id.to_owned()),
        ];
        if let Some(policy) = outcome.policy {
            attributes.push(KeyValue::new("portcullis.policy", policy.to_owned()));
        }
        span.set_attributes(attributes);
        if route != crate::metrics::ROUTE_NONE {
            span.update_name(format!("{} {route}", self.method));
        }
        if result == "error" {
            span.set_status(Status::error(outcome.reason));
        }
        span.end();
    }
}

/// The OTLP exporter of `config`.
fn exporter(config: &Config) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    let otlp = &config.otlp;
    let built = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = otlp.headers.iter().cloned().collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(otlp.endpoint.clone())
                .with_timeout(otlp.timeout)
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &otlp.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes());
                let value = tonic::metadata::MetadataValue::try_from(value.as_str());
                if let (Ok(key), Ok(value)) = (key, value) {
                    metadata.insert(key, value);
                }
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(otlp.endpoint.clone())
                .with_timeout(otlp.timeout)
                .with_metadata(metadata)
                .build()
        }
    };
    built.map_err(|e| e.to_string())
}

/// The exporter, counting what it sent and what the collector did not take.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    counters: Counters,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.counters.waiting.fetch_sub(n, Ordering::Relaxed);
        let n = n as u64;
        match &result {
            Ok(()) => self.counters.exported.inc_by(n),
            Err(e) => {
                self.counters.dropped.inc_by(n);
                tracing::debug!(error = %e, spans = n, "telemetry: export failed; spans dropped");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The batch processor behind our bound: a span that would make more than `max-queue-size` wait
/// is dropped and counted here, without waiting.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    counters: Counters,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let waiting = &self.counters.waiting;
        if waiting.fetch_add(1, Ordering::Relaxed) >= self.counters.max_waiting {
            waiting.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Starts the exporter inside pingora (after any fork) and keeps it until shutdown.
pub struct TelemetryService {
    /// The gateway's tracing.
    pub telemetry: Arc<Telemetry>,
    /// The running config: its key store (and every store a reload makes from it) traces its
    /// fetches once the exporter runs.
    pub current: crate::reload::Current,
}

#[async_trait]
impl BackgroundService for TelemetryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let config = &self.telemetry.config;
        if let Err(e) = self.telemetry.start() {
            // The config was checked; this is the exporter library refusing it.
            tracing::error!(error = %e, endpoint = %config.otlp.endpoint,
                "telemetry: the OTLP exporter cannot start; trace context is still propagated, no span is exported");
        }
        if let Some(tracer) = self.telemetry.tracer() {
            let boxed = opentelemetry::global::BoxedTracer::new(Box::new(tracer.clone()));
            self.current.load().keys.trace_fetches(boxed);
        }
        tracing::info!(endpoint = %config.otlp.endpoint,
            protocol = ?config.otlp.protocol, "telemetry: exporting spans");
        // The flush happens on the stop path (after the drain); here only wait.
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let tp = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.parent_id[7], 0xb7);
        assert_eq!(tp.flags, 1);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse_traceparent(later.as_bytes()).is_some());
        assert!(parse_traceparent(&later.as_bytes()[..55]).is_some());
    }

    #[test]
    fn extract_needs_exactly_one_valid_traceparent_and_keeps_tracestate() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.append(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        headers.append(
            TRACESTATE,
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        let cx = extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_state().header(),
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        assert_eq!(format_traceparent(sc), VALID);

        headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(!extract(&headers).span().span_context().is_valid());

        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        headers.insert(TRACESTATE, HeaderValue::from_static("Not A Valid=State"));
        let cx = extract(&headers);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(cx.span().span_context().trace_state().header(), "");
    }
}
