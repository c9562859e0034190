//! `server.telemetry`: OpenTelemetry tracing (W3C trace context in, a span per request, OTLP
//! export out).
//!
//! Why a block of its own and not environment variables only: the gateway's config is the one
//! place an operator looks, `check` reports a wrong endpoint or ratio with its line, and when the
//! block is absent the request path does no tracing work at all (headers pass through untouched).

use std::time::Duration;

use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node};

const TELEMETRY_KEYS: &[&str] = &["otlp", "service-name", "sample-ratio"];
const OTLP_KEYS: &[&str] = &[
    "endpoint",
    "protocol",
    "headers",
    "timeout",
    "max-queue-size",
    "export-interval",
];

/// `service.name` when `service-name` is not given.
pub const DEFAULT_SERVICE_NAME: &str = "portcullis";
/// Bound on one export call when `otlp.timeout` is not given.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans waiting for export when `otlp.max-queue-size` is not given; past it they are dropped
/// (and counted), never waited for.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// Longest wait before a partial batch is sent when `otlp.export-interval` is not given.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// The path an `http/protobuf` endpoint without one gets (the OTLP default for traces).
pub const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";

/// `server.telemetry`.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// Where spans go.
    pub otlp: Otlp,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces recorded (0.0 to 1.0); a trace continued from the client follows the
    /// client's sampled flag (parent-based).
    pub sample_ratio: f64,
}

/// `server.telemetry.otlp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// The collector URL: for `http/protobuf` the full traces URL (`/v1/traces` added when the
    /// URL has no path), for `grpc` the server's base URL.
    pub endpoint: String,
    /// Wire protocol.
    pub protocol: OtlpProtocol,
    /// Extra request headers (an API key, say: the values are never logged).
    pub headers: Vec<(String, String)>,
    /// Bound on one export call.
    pub timeout: Duration,
    /// Spans waiting for export; past it new spans are dropped and counted.
    pub max_queue_size: usize,
    /// Longest wait before a partial batch is exported.
    pub export_interval: Duration,
}

/// `otlp.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (the OpenTelemetry default).
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

/// Reads `telemetry:`; `None` (errors reported) when it is unusable.
pub(crate) fn read(cx: &mut Cx, node: &Node) -> Option<Telemetry> {
    let f = Fields::new(cx, node, "telemetry", TELEMETRY_KEYS)?;
    let service_name = f
        .text(cx, "service-name")
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    // Every problem is reported at once: nothing below returns before the rest is read.
    let sample_ratio = match f.get("sample-ratio") {
        Some(n) => ratio(cx, n),
        None => Some(1.0),
    };
    let otlp = match f.get("otlp") {
        Some(n) => otlp(cx, n),
        None => {
            cx.error(
                f.pos,
                "telemetry needs `otlp: { endpoint: http://collector:4318 }` (where spans are sent)",
            );
            None
        }
    };
    Some(Telemetry {
        otlp: otlp?,
        service_name: service_name.trim().to_owned(),
        sample_ratio: sample_ratio?,
    })
}

fn ratio(cx: &mut Cx, node: &Node) -> Option<f64> {
    let value = match &node.kind {
        Kind::Float(v) => *v,
        Kind::Int(i) => *i as f64,
        _ => {
            cx.error(
                node.pos,
                format!(
                    "`sample-ratio` must be a number from 0 to 1, found {}",
                    node.kind.describe()
                ),
            );
            return None;
        }
    };
    if !(0.0..=1.0).contains(&value) {
        cx.error(
            node.pos,
            format!("`sample-ratio` must be from 0 to 1, found {value}"),
        );
        return None;
    }
    Some(value)
}

fn otlp(cx: &mut Cx, node: &Node) -> Option<Otlp> {
    let f = Fields::new(cx, node, "otlp", OTLP_KEYS)?;
    // Every problem is reported at once: each value is read before any is unwrapped.
    let protocol = match f.get("protocol") {
        Some(n) => match walk::string(cx, n, "protocol") {
            Some("http/protobuf") => Some(OtlpProtocol::HttpProtobuf),
            Some("grpc") => Some(OtlpProtocol::Grpc),
            Some(other) => {
                cx.error(
                    n.pos,
                    format!("`protocol` must be `grpc` or `http/protobuf`, found `{other}`"),
                );
                None
            }
            None => None,
        },
        None => Some(OtlpProtocol::HttpProtobuf),
    };
    let endpoint = match f.get("endpoint") {
        Some(n) => endpoint(cx, n, protocol.unwrap_or_default()),
        None => {
            cx.error(
                f.pos,
                "otlp needs `endpoint:` (e.g. http://collector:4318 for http/protobuf, \
                 http://collector:4317 for grpc)",
            );
            None
        }
    };
    let headers = match f.get("headers") {
        Some(n) => headers(cx, n),
        None => Some(Vec::new()),
    };
    let timeout = match f.get("timeout") {
        Some(n) => walk::positive_duration(cx, n, "timeout"),
        None => Some(DEFAULT_EXPORT_TIMEOUT),
    };
    let max_queue_size = match f.get("max-queue-size") {
        Some(n) => walk::integer_in(cx, n, "max-queue-size", 1, 1_000_000)
            .and_then(|v| usize::try_from(v).ok()),
        None => Some(DEFAULT_MAX_QUEUE_SIZE),
    };
    let export_interval = match f.get("export-interval") {
        Some(n) => walk::positive_duration(cx, n, "export-interval"),
        None => Some(DEFAULT_EXPORT_INTERVAL),
    };
    Some(Otlp {
        endpoint: endpoint?,
        protocol: protocol?,
        headers: headers?,
        timeout: timeout?,
        max_queue_size: max_queue_size?,
        export_interval: export_interval?,
    })
}

/// The collector URL: http(s), no query or fragment; an `http/protobuf` URL without a path gets
/// `/v1/traces`.
fn endpoint(cx: &mut Cx, node: &Node, protocol: OtlpProtocol) -> Option<String> {
    let (url, text) = walk::http_url(cx, node, "endpoint")?;
    if url.query().is_some() || url.fragment().is_some() {
        cx.error(
            node.pos,
            "`endpoint` must not have a query string or fragment",
        );
        return None;
    }
    Some(match protocol {
        OtlpProtocol::HttpProtobuf if url.path() == "/" => {
            format!("{}{OTLP_HTTP_TRACES_PATH}", text.trim_end_matches('/'))
        }
        _ => text.to_owned(),
    })
}

/// `headers: { name: value }`: names and values must be valid in HTTP (and in gRPC metadata,
/// which wants lower-case names: they are lower-cased).
fn headers(cx: &mut Cx, node: &Node) -> Option<Vec<(String, String)>> {
    let f = Fields::open(cx, node, "headers")?;
    let mut out = Vec::new();
    let mut ok = true;
    for (name, key_node, value_node) in f.entries() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.error(key_node.pos, format!("`{name}` is not a valid header name"));
            ok = false;
            continue;
        }
        let Some(value) = walk::string(cx, value_node, name) else {
            ok = false;
            continue;
        };
        if http::HeaderValue::from_str(value).is_err() {
            // Never quote the value: it may be an API key.
            cx.error(
                value_node.pos,
                format!("the value of header `{name}` is not a valid header value"),
            );
            ok = false;
            continue;
        }
        out.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    ok.then_some(out)
}
