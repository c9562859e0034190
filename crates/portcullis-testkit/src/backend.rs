//! Recording echo backend: answers every request with what it received, and records it.
//!
//! Why it exists: gateway tests must prove what reached the backend (identity headers set, spoofed
//! ones gone) and what did not (a rejected request leaves zero records), and `portcullis demo` needs a
//! backend that shows the caller what the gateway forwarded. It is a real HTTP/1.1 server (hyper) on
//! `127.0.0.1:0`, running on its own thread and runtime so it works from sync code, async tests and
//! the demo alike. It can be told to answer slowly ([`Backend::set_delay`]) or to fail
//! ([`Backend::set_failure`], or on one path only with [`Backend::set_path_failure`]: a health
//! endpoint that fails while the rest still answers).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::oneshot;

/// One request as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Every header in arrival order, names lower-case; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// All values of a header (name compared case-insensitively).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header; `None` when absent or repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_values(name).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The W3C `traceparent` received, when there is exactly one of the version-00 shape.
    pub fn traceparent(&self) -> Option<TraceParent> {
        let value = self.header("traceparent")?;
        let mut parts = value.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let shaped = parts.next().is_none()
            && version == "00"
            && hex(trace_id, 32)
            && hex(parent_id, 16)
            && hex(flags, 2);
        shaped.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The echo body: `{"method", "path", "query", "headers": {name: value}}` (repeated headers
    /// joined with ", ").
    pub fn echo_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            match headers.get_mut(name) {
                Some(serde_json::Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(value);
                }
                _ => {
                    headers.insert(name.clone(), serde_json::Value::String(value.clone()));
                }
            }
        }
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
        })
    }
}

/// A `traceparent` as the backend received it (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (32 hex digits).
    pub trace_id: String,
    /// The caller's span id (16 hex digits): the gateway's span.
    pub parent_id: String,
    /// Trace flags (2 hex digits).
    pub flags: String,
}

impl TraceParent {
    /// The backend's own span for this request, as an instrumented backend would make it: same
    /// trace, the received parent id as its parent, a fresh span id.
    pub fn child(&self) -> ChildSpan {
        use std::hash::BuildHasher as _;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let seed = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::collections::hash_map::RandomState::new().hash_one(seed) | 1;
        ChildSpan {
            trace_id: self.trace_id.clone(),
            parent_span_id: self.parent_id.clone(),
            span_id: format!("{id:016x}"),
        }
    }
}

/// A backend span made from a received `traceparent` ([`TraceParent::child`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpan {
    /// Trace id (the caller's).
    pub trace_id: String,
    /// Parent span id (the caller's span).
    pub parent_span_id: String,
    /// This span's id.
    pub span_id: String,
}

/// How the backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failure {
    /// 200 with the JSON echo.
    #[default]
    None,
    /// This status with the JSON echo.
    Status(u16),
    /// Close the connection without answering (the gateway sees a reset / closed connection).
    Close,
}

#[derive(Debug)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    delay_ms: AtomicU64,
    failure: Mutex<Failure>,
    /// Per-path answers that take precedence over `failure` (`set_path_failure`).
    path_failures: Mutex<Vec<(String, Failure)>>,
    /// `true`: answers wait (after being recorded) until it is `false` again.
    held: tokio::sync::watch::Sender<bool>,
    /// Headers added to every answer (`set_response_header`).
    extra: Mutex<Vec<(http::HeaderName, http::HeaderValue)>>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            requests: Mutex::default(),
            delay_ms: AtomicU64::default(),
            failure: Mutex::default(),
            path_failures: Mutex::default(),
            held: tokio::sync::watch::Sender::new(false),
            extra: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running recording backend; stops when dropped.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Binding or configuring the listener failed.
    #[error("backend: cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

impl Backend {
    /// Start on `127.0.0.1:0`.
    pub fn start() -> Result<Backend, BackendError> {
        Backend::start_on("127.0.0.1:0")
    }

    /// Start on `127.0.0.1:0`, speaking https with `tls` (a server certificate, and a client
    /// certificate verifier when the test wants mTLS).
    pub fn start_tls(tls: Arc<rustls::ServerConfig>) -> Result<Backend, BackendError> {
        Backend::start_with("127.0.0.1:0", Some(tokio_rustls::TlsAcceptor::from(tls)))
    }

    /// Start on a given address (port 0 allowed). The socket is bound before this returns, so the
    /// backend is ready as soon as you have the handle.
    pub fn start_on(addr: &str) -> Result<Backend, BackendError> {
        Backend::start_with(addr, None)
    }

    fn start_with(
        addr: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Backend, BackendError> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let serve_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, serve_shared, stopped, tls)))?;
        Ok(Backend {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:port` (for a backend started with [`Backend::start_tls`]).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Forget recorded requests.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Hold every answer (requests are still recorded on arrival) until [`Backend::release`]: a
    /// request that stays in flight exactly as long as a test needs, instead of a guessed delay.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Let held answers (and later ones) go.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Answer with a failure from now on ([`Failure::None`] restores normal answers).
    pub fn set_failure(&self, failure: Failure) {
        *lock(&self.shared.failure) = failure;
    }

    /// Answer requests for exactly `path` with `failure` from now on, whatever
    /// [`Backend::set_failure`] says for other paths ([`Failure::None`] on a path: a normal 200
    /// there). Replaces an earlier setting for the same path.
    pub fn set_path_failure(&self, path: &str, failure: Failure) {
        let mut paths = lock(&self.shared.path_failures);
        paths.retain(|(p, _)| p != path);
        paths.push((path.to_owned(), failure));
    }

    /// Requests received so far whose path is not `path` (traffic other than a probe path).
    pub fn request_count_except(&self, path: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path != path)
            .count()
    }

    /// Add this header to every answer from now on (a backend's own `Vary`, say). Names or values
    /// that are not valid HTTP are ignored.
    pub fn set_response_header(&self, name: &str, value: &str) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            lock(&self.shared.extra).push((n, v));
        }
    }
}

impl Drop for Backend {
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
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "backend: cannot register listener");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "backend: accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, shared.clone()));
            let http1 = hyper::server::conn::http1::Builder::new();
            // A `Failure::Close` answer ends the connection with an error: expected, not logged.
            // A failed handshake (no client certificate, say) is the test's point: not logged.
            match tls {
                None => {
                    let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

/// The error that makes hyper drop the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("backend told to close the connection")]
struct CloseConnection;

async fn answer(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let recorded = RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let body = recorded.echo_json().to_string();
    let for_path = lock(&shared.path_failures)
        .iter()
        .find(|(p, _)| *p == recorded.path)
        .map(|(_, f)| *f);
    lock(&shared.requests).push(recorded);
    let delay = shared.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Only `Err` when the sender is gone, which cannot happen while `shared` is alive.
    let _ = shared.held.subscribe().wait_for(|held| !*held).await;
    let failure = for_path.unwrap_or_else(|| *lock(&shared.failure));
    let status = match failure {
        Failure::None => StatusCode::OK,
        Failure::Status(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        Failure::Close => return Err(CloseConnection),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in lock(&shared.extra).iter() {
        response.headers_mut().append(name.clone(), value.clone());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, raw: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn echoes_and_records() {
        let backend = Backend::start().unwrap();
        let out = get(
            backend.addr(),
            "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nX-One: 2\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(r#""x-one":"1, 2""#), "{out}");
        let reqs = backend.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/a/b");
        assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
        assert_eq!(reqs[0].header_values("X-One"), vec!["1", "2"]);
        assert_eq!(reqs[0].header("x-one"), None);
    }

    #[test]
    fn fails_when_told() {
        let backend = Backend::start().unwrap();
        backend.set_failure(Failure::Status(503));
        let out = get(
            backend.addr(),
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        backend.set_failure(Failure::Close);
        let out = get(
            backend.addr(),
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(out, "");
        assert_eq!(backend.request_count(), 2);
    }

    #[test]
    fn fails_on_one_path_when_told() {
        let backend = Backend::start().unwrap();
        backend.set_path_failure("/health", Failure::Status(503));
        let req =
            |path: &str| format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(get(backend.addr(), &req("/health")).starts_with("HTTP/1.1 503"));
        assert!(get(backend.addr(), &req("/other")).starts_with("HTTP/1.1 200"));
        backend.set_failure(Failure::Status(500));
        backend.set_path_failure("/health", Failure::None);
        assert!(get(backend.addr(), &req("/health")).starts_with("HTTP/1.1 200"));
        assert!(get(backend.addr(), &req("/other")).starts_with("HTTP/1.1 500"));
        assert_eq!(backend.request_count_except("/health"), 2);
    }
}
