//! The access line: one INFO event per request, on by default.
//!
//! Why a module of its own: the line is the one log event of the hot path, so its fields are
//! gathered in [`AccessLine`] and it is written in one of two ways, chosen once at start-up:
//! - through tracing ([`via_tracing`]): the event `portcullis_proxy::proxy: request route=..`,
//!   formatted by whatever subscriber the process has (JSON, colour on a terminal, a test's);
//! - straight to the log, when the binary has installed a writer for it ([`write_directly`]):
//!   the `portcullis` binary does so for its text format without colour, and writes the very bytes
//!   its tracing formatter would (a test compares the two on every kind of line). That skips
//!   tracing's dispatch, the field visitor and its dynamic calls: plain proxying served 1.6 % more
//!   requests a second (about half a microsecond a request; issue 17, docs/performance.md). The
//!   line is still subject to the subscriber's filter (`RUST_LOG`): [`emit`] asks it, with the
//!   event's target, level and field names, on every request.

use std::sync::OnceLock;
use std::time::Duration;

use tracing::Level;

/// The access line's target: the module it was always emitted from, so filters such as
/// `RUST_LOG=portcullis_proxy::proxy=warn` keep their meaning.
pub const TARGET: &str = "portcullis_proxy::proxy";

/// One request's access line.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The matched route's name (`-` when none matched).
    pub route: &'a str,
    /// The request method.
    pub method: &'a http::Method,
    /// The request path (as received; no query).
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// Why the request ended as it did (`ok`, an APIM reason, ...).
    pub reason: &'a str,
    /// The subscription the request used (`-`: none).
    pub subscription: &'a str,
    /// Time from the request's arrival to the end of its response.
    pub latency: Duration,
    /// The request id (`-`: none).
    pub request_id: &'a str,
    /// The proxy error's type, when the request ended in one.
    pub error: Option<&'a str>,
}

impl AccessLine<'_> {
    /// `latency_ms` as written: whole nanoseconds over 1e6, one rounding (`8.329139`, where
    /// `as_secs_f64() * 1000.0` writes `8.329139000000001`, longer and slower to write).
    pub fn latency_ms(&self) -> f64 {
        self.latency.as_nanos() as f64 / 1e6
    }
}

/// A writer of whole access lines, installed by the binary ([`write_directly`]).
type Direct = Box<dyn Fn(&AccessLine<'_>) + Send + Sync>;

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Write every enabled access line with `write` instead of through tracing. The first call wins;
/// `write` may itself fall back to [`via_tracing`] for a line it cannot write.
pub fn write_directly(write: impl Fn(&AccessLine<'_>) + Send + Sync + 'static) {
    let _ = DIRECT.set(Box::new(write));
}

/// Log one request's access line, if the subscriber's filter enables it.
pub fn emit(line: &AccessLine<'_>) {
    match DIRECT.get() {
        None => via_tracing(line),
        Some(write) => {
            if enabled() {
                write(line);
            }
        }
    }
}

/// Whether the subscriber would record the access event: asked with its target, level and field
/// names, so a filter that names a field (`RUST_LOG=[{status}]`) decides as it would for the event.
fn enabled() -> bool {
    tracing::enabled!(
        target: TARGET,
        Level::INFO,
        route,
        method,
        path,
        status,
        reason,
        subscription,
        latency_ms,
        request_id,
        error,
        message
    )
}

/// The access line as a tracing event (the default, and the direct writer's fallback).
pub fn via_tracing(line: &AccessLine<'_>) {
    tracing::info!(
        target: TARGET,
        route = line.route,
        method = %line.method,
        path = line.path,
        status = line.status,
        reason = line.reason,
        subscription = line.subscription,
        latency_ms = line.latency_ms(),
        request_id = line.request_id,
        error = line.error,
        "request"
    );
}
