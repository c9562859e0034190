//! A small OTLP trace receiver (collector stand-in) on `127.0.0.1:0`, speaking OTLP/gRPC or
//! OTLP/HTTP with protobuf bodies.
//!
//! Why it exists: the gateway's tracing must be proven against the real wire protocol, not a
//! mock of the exporter. It is built on the official protobuf definitions (the
//! `opentelemetry-proto` crate): the gRPC side is that crate's generated tonic `TraceService`
//! server, served by hyper over HTTP/2; the HTTP side decodes `POST /v1/traces` bodies with prost.
//! Like the recording backend it runs on its own thread and runtime, so it works from sync and
//! async tests alike, and it records every span (flattened, ids in lower-case hex) and every
//! export request's headers.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use tokio::sync::{oneshot, Notify};

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";

/// Which OTLP transport the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export` over HTTP/2).
    Grpc,
    /// OTLP/HTTP, protobuf bodies on `POST /v1/traces` (HTTP/1.1).
    HttpProtobuf,
}

/// One received span, flattened with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// Trace id, 32 lower-case hex digits.
    pub trace_id: String,
    /// Span id, 16 lower-case hex digits.
    pub span_id: String,
    /// Parent span id (empty for a root span).
    pub parent_span_id: String,
    /// The span's `tracestate`.
    pub trace_state: String,
    /// Name.
    pub name: String,
    /// Kind: `internal`, `server`, `client`, `producer`, `consumer` (`unspecified` otherwise).
    pub kind: &'static str,
    /// Attributes, values rendered as text (strings as they are, numbers and booleans printed).
    pub attributes: Vec<(String, String)>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Instrumentation scope name.
    pub scope: String,
    /// Start time, Unix nanoseconds.
    pub start_unix_nano: u64,
    /// End time, Unix nanoseconds.
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Headers (names lower-case) of every export request.
    headers: Mutex<Vec<Vec<(String, String)>>>,
    arrived: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn record(&self, headers: &http::HeaderMap, request: ExportTraceServiceRequest) {
        let headers = headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect();
        lock(&self.headers).push(headers);
        let mut spans = Vec::new();
        for resource_spans in request.resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .map(|kv| render(kv.value.as_ref()))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                let scope = scope_spans
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for span in scope_spans.spans {
                    let status = span.status.clone().unwrap_or_default();
                    spans.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        trace_state: span.trace_state.clone(),
                        name: span.name.clone(),
                        kind: kind(span.kind),
                        attributes: attributes(&span.attributes),
                        status_code: status.code,
                        status_message: status.message,
                        service_name: service_name.clone(),
                        scope: scope.clone(),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                    });
                }
            }
        }
        lock(&self.spans).extend(spans);
        self.arrived.notify_waiters();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The gRPC service: records, answers an empty (full success) response.
struct Grpc(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        self.0.record(&headers, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    protocol: Protocol,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Start on `127.0.0.1:0`; the socket is bound before this returns.
    pub fn start(protocol: Protocol) -> std::io::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let serve_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, protocol, serve_shared, stopped)))?;
        Ok(OtlpReceiver {
            addr,
            protocol,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The exporter endpoint: `http://127.0.0.1:port` for gRPC, `.../v1/traces` for HTTP.
    pub fn endpoint(&self) -> String {
        match self.protocol {
            Protocol::Grpc => format!("http://{}", self.addr),
            Protocol::HttpProtobuf => format!("http://{}{TRACES_PATH}", self.addr),
        }
    }

    /// The protocol's name in `server.telemetry.otlp.protocol`.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.shared.spans).clone()
    }

    /// Headers of every export request so far.
    pub fn request_headers(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.shared.headers).clone()
    }

    /// Waits (at most `timeout`) until the spans received satisfy `done`; returns them either
    /// way, so the caller's assertion shows what arrived. Woken by each export, not polling.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check: an export between the check and the wait still wakes.
            arrived.as_mut().enable();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.spans();
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let io = TokioIo::new(stream);
        let shared = shared.clone();
        tokio::spawn(async move {
            match protocol {
                Protocol::Grpc => {
                    let service = TraceServiceServer::new(Grpc(shared));
                    let service = hyper_util::service::TowerToHyperService::new(service);
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                }
                Protocol::HttpProtobuf => {
                    let service = service_fn(move |req| http_export(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            }
        });
    }
}

/// `POST /v1/traces` with an `application/x-protobuf` body.
async fn http_export(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let answer = |status: StatusCode, body: Vec<u8>| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(resp)
    };
    if req.method() != http::Method::POST || req.uri().path() != TRACES_PATH {
        return answer(StatusCode::NOT_FOUND, Vec::new());
    }
    let is_protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    if !is_protobuf {
        return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let headers = req.headers().clone();
    let Ok(body) = req.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST, Vec::new());
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(request) => {
            shared.record(&headers, request);
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            answer(StatusCode::OK, response.encode_to_vec())
        }
        Err(_) => answer(StatusCode::BAD_REQUEST, Vec::new()),
    }
}
