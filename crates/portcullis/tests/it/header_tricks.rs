//! End-to-end: request headers that would make a layer behind the gateway act on another request
//! than the one the gateway authorised (the audit of the gateway as a trust boundary).
//!
//! - An `Upgrade` header without `Connection: upgrade` is not an upgrade request (RFC 9110 7.8):
//!   the gateway must not turn it into a tunnel, or the bytes after it on the connection reach the
//!   backend unrouted and unauthorised.
//! - A method-override header (`X-HTTP-Method-Override: DELETE`, any spelling) or `_method`
//!   query parameter makes frameworks run a `POST` as another method: refused, or a route list by
//!   method would be bypassed.
//! - Framing: the backend gets exactly one `Content-Length` (the one the gateway framed the body
//!   by), and a framing header spelled with `_` (`Transfer_Encoding`) is refused. A
//!   `Transfer-Encoding` other than one `chunked` is refused (501 for another coding, 400 for
//!   `chunked` twice or beside `Content-Length`) before anything reaches the backend; on
//!   HTTP/2 a `transfer-encoding` resets the stream.
//! - `Expect: 100-continue` on a refused request is answered at once (no `100 Continue`, no wait
//!   for the body); on an accepted one the body reaches the backend whole. Other expectations: 417.
//! - Header sections and chunked bodies a lenient parser could read otherwise (obs-fold, NUL or
//!   CR in a value, whitespace before the colon, bare LF, chunk extensions, trailers, malformed
//!   chunk sizes) are refused before the backend or reach it re-serialised.
//! - An HTTP/1.1 request without `Host` is refused (RFC 9112 3.2); HTTP/1.0 without it is not.
//!
//! The gateway runs in process on loopback port 0 from a YAML config (so `check`'s rules run
//! too). Requests go over raw TCP, byte for byte as written here. The upgrade cases use a raw
//! backend ([`Switching`]) that answers `101` the way a lenient WebSocket server does (on
//! `Upgrade: websocket` alone, or on anything) and records every byte it receives afterwards;
//! the framing cases use one ([`Recording`]) that records every byte of each request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{self, raw, InProcess};

/// Every exchange with the gateway finishes within this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A raw HTTP/1.1 backend that answers `101 Switching Protocols` to a request carrying
/// `Upgrade` (whatever its `Connection` says, as a lenient server does) or, when `always`, to
/// every request; otherwise `200`. After a `101` it records every byte that follows until it has
/// a whole request head (or the connection ends), then closes. One request per connection.
struct Switching;

/// A raw backend on loopback port 0: `serve` runs on each connection, with the backend's record.
struct RawBackend {
    addr: SocketAddr,
    /// What each connection recorded.
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    async fn start<F, Fut>(serve: F) -> RawBackend
    where
        F: Fn(TcpStream, Arc<Mutex<Vec<String>>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, record.clone()));
            }
        });
        RawBackend { addr, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Switching {
    async fn start(always: bool) -> RawBackend {
        RawBackend::start(move |stream, seen| Switching::serve(stream, always, seen)).await
    }

    async fn serve(mut stream: TcpStream, always: bool, seen: Arc<Mutex<Vec<String>>>) {
        let head = read_head(&mut stream).await;
        let slot = {
            let mut seen = seen.lock().unwrap();
            seen.push(String::from_utf8_lossy(&head).into_owned());
            seen.len() - 1
        };
        let asked = String::from_utf8_lossy(&head)
            .to_ascii_lowercase()
            .contains("\r\nupgrade:");
        if !(always || asked) {
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            let _ = stream.write_all(ok.as_bytes()).await;
            return;
        }
        let switch =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        if stream.write_all(switch.as_bytes()).await.is_err() {
            return;
        }
        let after = read_head(&mut stream).await;
        seen.lock().unwrap()[slot].push_str(&String::from_utf8_lossy(&after));
        let _ = stream.shutdown().await;
    }
}

/// Bytes up to and including the first empty line (or all until the connection ends).
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    buf
}

struct Setup {
    gateway: InProcess,
    /// `/ws`: answers 101 to `Upgrade` alone.
    ws: RawBackend,
    /// `/any`: answers 101 to every request.
    any: RawBackend,
    /// `/admin` (token with `orders.write` needed).
    admin: Backend,
    /// `DELETE`/`PUT` under `/api` (token with `orders.write` needed).
    api_write: Backend,
    /// Anything else under `/api` (any valid token).
    api: Backend,
    /// `/public` (anonymous).
    public: Backend,
    /// `/raw` (anonymous) and `/raw-auth` (any valid token): records the bytes it receives.
    rec: RawBackend,
    /// A token with `orders.read` only.
    read_token: String,
    _idp: JwksServer,
}

impl Setup {
    async fn start() -> Setup {
        let idp = JwksServer::start().await.unwrap();
        let key = TestKey::rsa("k1").unwrap();
        idp.set_keys(&[&key]);
        let ws = Switching::start(false).await;
        let any = Switching::start(true).await;
        let admin = Backend::start().unwrap();
        let api_write = Backend::start().unwrap();
        let api = Backend::start().unwrap();
        let public = Backend::start().unwrap();
        let rec = Recording::start().await;
        let discovery = idp.discovery_url();
        let text = format!(
            r#"
server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  threads: 1
  token-cache: {{ max-entries: 0 }}
policies:
  write:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://orders]
    scopes: {{ values: [orders.write] }}
    insufficient-scope-httpcode: 403
  read:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://orders]
routes:
  - name: api-write
    match: {{ path-prefix: /api, methods: [DELETE, PUT] }}
    upstream: "{api_write}"
    policy: write
  - {{ name: api, match: {{ path-prefix: /api }}, upstream: "{api}", policy: read }}
  - {{ name: admin, match: {{ path-prefix: /admin }}, upstream: "{admin}", policy: write }}
  - {{ name: public, match: {{ path-prefix: /public }}, upstream: "{public}", policy: none }}
  - {{ name: ws, match: {{ path-prefix: /ws }}, upstream: "http://{ws}", policy: none }}
  - {{ name: any, match: {{ path-prefix: /any }}, upstream: "http://{any}", policy: none }}
  - {{ name: raw, match: {{ path-prefix: /raw }}, upstream: "http://{rec}", policy: none }}
  - {{ name: raw-auth, match: {{ path-prefix: /auth }}, upstream: "http://{rec}", policy: read }}
"#,
            admin = admin.url(),
            api_write = api_write.url(),
            api = api.url(),
            public = public.url(),
            ws = ws.addr,
            any = any.addr,
            rec = rec.addr,
        );
        let (model, _warnings) = portcullis_config::load_str(&text, Path::new("headers.yaml"))
            .unwrap_or_else(|d| panic!("config rejected: {d:?}"));
        let gateway = InProcess::start(&model).await;
        let read_token = key
            .sign(&json!({
                "iss": idp.issuer(), "aud": "api://orders", "sub": "reader",
                "exp": support::now() + 600, "scp": "orders.read",
            }))
            .unwrap();
        Setup {
            gateway,
            ws,
            any,
            admin,
            api_write,
            api,
            public,
            rec,
            read_token,
            _idp: idp,
        }
    }
}

/// Send `first` on a fresh connection, read its answer's head, then send `then` on the same
/// connection (a failed write is fine: the gateway may have closed) and read to the end. Returns
/// the first answer's head and everything after it.
async fn two_on_one(addr: SocketAddr, first: &[u8], then: &[u8]) -> (String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        let head = read_head(&mut stream).await;
        let _ = stream.write_all(then).await;
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (
            String::from_utf8_lossy(&head).into_owned(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("the gateway answers (or closes) within 10 s")
}

const SMUGGLED: &[u8] = b"GET /admin/smuggled HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn an_upgrade_without_connection_upgrade_is_not_a_tunnel() {
    let s = Setup::start().await;
    for (backend, path) in [(&s.ws, "/ws/chat"), (&s.any, "/any/chat")] {
        for extra in [
            "Upgrade: websocket\r\n",
            "Connection: close\r\nUpgrade: websocket\r\n",
            "Connection: keep-alive\r\nUpgrade: websocket\r\n",
        ] {
            let before = backend.seen().len();
            let first = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n");
            let (head, rest) = two_on_one(s.gateway.proxy(), first.as_bytes(), SMUGGLED).await;
            let case = format!("{path} with {extra:?}: answer {head:?} then {rest:?}");
            let seen = backend.seen();
            let seen = &seen[before..];
            assert_eq!(seen.len(), 1, "{case}: {seen:?}");
            let forwarded = seen[0].to_ascii_lowercase();
            assert!(!forwarded.contains("\r\nupgrade:"), "{case}: {forwarded}");
            assert!(!forwarded.contains("smuggled"), "{case}: {forwarded}");
            assert_eq!(s.admin.request_count(), 0, "{case}");
            if path.starts_with("/ws") {
                // An ordinary request and answer; what followed was a request of its own (refused:
                // no token), or never read (`Connection: close`).
                assert!(head.starts_with("HTTP/1.1 200"), "{case}");
                assert!(rest.starts_with("ok"), "{case}");
                if !extra.contains("close") {
                    assert!(rest.contains("HTTP/1.1 401"), "{case}");
                }
            } else {
                // A backend that answers 101 to anything: pingora passes the 101 on but, the
                // request not being an upgrade, makes no tunnel of it: the connection ends.
                assert!(rest.is_empty(), "{case}");
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_handshake_still_upgrades() {
    let s = Setup::start().await;
    let first =
        b"GET /ws/chat HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let payload = b"frames\r\n\r\n";
    let (head, _rest) = two_on_one(s.gateway.proxy(), first, payload).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let seen = s.ws.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let forwarded = seen[0].to_ascii_lowercase();
    assert!(
        forwarded.contains("\r\nupgrade: websocket\r\n"),
        "{forwarded}"
    );
    assert!(forwarded.ends_with("frames\r\n\r\n"), "{forwarded}");
}

/// `POST target` with the reader's token, `extra` header lines and a small form body.
fn post(target: &str, token: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n{extra}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\
         Connection: close\r\n\r\na=1"
    )
    .into_bytes()
}

#[tokio::test]
async fn method_overrides_are_refused_in_every_spelling() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    let token = s.read_token.as_str();
    // The route list by method: the reader may POST, not DELETE.
    let delete = format!(
        "DELETE /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    assert_eq!(raw(addr, delete.as_bytes()).await.0, 403);
    let (status, text) = raw(addr, &post("/api/x", token, "")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(s.api.request_count(), 1);
    s.api.clear();
    let refused = [
        ("/api/x", "X-HTTP-Method-Override: DELETE\r\n"),
        ("/api/x", "x-http-method-override: DELETE\r\n"),
        ("/api/x", "X_HTTP_Method_Override: DELETE\r\n"),
        ("/api/x", "X-Method-Override: DELETE\r\n"),
        ("/api/x", "X_Method-Override: DELETE\r\n"),
        ("/api/x", "X-HTTP-Method: DELETE\r\n"),
        ("/api/x", "X_HTTP_METHOD: DELETE\r\n"),
        ("/api/x", "X-HTTP-Method-Override: POST\r\n"),
        ("/api/x?_method=DELETE", ""),
        ("/api/x?a=1&_method=DELETE", ""),
        ("/api/x?%5Fmethod=DELETE", ""),
        ("/api/x?.method=DELETE", ""),
    ];
    for (target, extra) in refused {
        let (status, text) = raw(addr, &post(target, token, extra)).await;
        let case = format!("POST {target} with {extra:?}: {text}");
        assert_eq!(status, 400, "{case}");
        assert!(
            text.contains(
                "\"Bad request. Method-override headers and parameters are not accepted.\""
            ),
            "{case}"
        );
        assert_eq!(
            s.api.request_count() + s.api_write.request_count(),
            0,
            "{case}"
        );
    }
    // Look-alikes are ordinary requests.
    for (target, extra) in [
        ("/api/x?method=DELETE&_methods=x", ""),
        ("/api/x", "X-HTTP-Method-Overrides: DELETE\r\n"),
    ] {
        let (status, text) = raw(addr, &post(target, token, extra)).await;
        assert_eq!(status, 200, "POST {target} with {extra:?}: {text}");
    }
    assert_eq!(s.api.request_count(), 2);
    let metrics = s.gateway.metrics().await;
    assert!(metrics.contains("reason=\"MethodOverride\""), "{metrics}");
}

/// `POST /public/x` with these header lines and body, `Connection: close`.
fn framed(lines: &[&str], body: &str) -> Vec<u8> {
    let lines: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    format!("POST /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{lines}\r\n{body}")
        .into_bytes()
}

#[tokio::test]
async fn the_backend_gets_one_content_length_and_no_misspelt_framing() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    for lines in [
        &["Content-Length: 5, 5"][..],
        &["Content-Length: 5", "Content-Length: 5"][..],
        &["Content-Length: 5,5", "Content-Length: 05"][..],
    ] {
        s.public.clear();
        let (status, text) = raw(addr, &framed(lines, "hello")).await;
        assert_eq!(status, 200, "{lines:?}: {text}");
        let seen = s.public.requests();
        assert_eq!(seen.len(), 1, "{lines:?}");
        assert_eq!(seen[0].header_values("content-length"), ["5"], "{lines:?}");
    }
    s.public.clear();
    let smuggled = "0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let length = format!("Content-Length: {}", smuggled.len());
    for lines in [
        vec!["Transfer_Encoding: chunked", length.as_str()],
        vec!["transfer_encoding: chunked", length.as_str()],
        vec![length.as_str(), "Content_Length: 0"],
    ] {
        let (status, text) = raw(addr, &framed(&lines, smuggled)).await;
        assert_eq!(status, 400, "{lines:?}: {text}");
        assert!(
            text.contains("\"Bad request. The request's framing headers are ambiguous.\""),
            "{text}"
        );
    }
    assert_eq!(s.public.request_count() + s.admin.request_count(), 0);
    let metrics = s.gateway.metrics().await;
    assert!(metrics.contains("reason=\"AmbiguousFraming\""), "{metrics}");
}

#[tokio::test]
async fn an_http11_request_needs_a_host() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    let (status, text) = raw(addr, b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("\"Bad request. An HTTP/1.1 request must carry a Host header.\""),
        "{text}"
    );
    assert_eq!(s.public.request_count(), 0);
    let (status, text) = raw(addr, b"GET /public/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = raw(
        addr,
        b"GET /public/y HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let paths: Vec<String> = s.public.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/public/x", "/public/y"]);
}

/// A raw HTTP/1.1 backend that records every byte of each request it receives (the head, then the
/// body as framed by `Transfer-Encoding: chunked` or `Content-Length`, trailers included), sends
/// `100 Continue` first when the request expects it (as hyper and most servers do once they read
/// the body), and answers `200 ok` with `Connection: close`. One request per connection.
struct Recording;

impl Recording {
    async fn start() -> RawBackend {
        RawBackend::start(Recording::serve).await
    }

    async fn serve(stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
        use tokio::io::AsyncBufReadExt;
        let mut stream = tokio::io::BufReader::new(stream);
        let mut bytes = Vec::new();
        let mut line = Vec::new();
        let mut framing = (false, 0usize, false);
        loop {
            line.clear();
            match stream.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => bytes.extend_from_slice(&line),
            }
            if line == b"\r\n" {
                break;
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some((name, value)) = text.split_once(':') {
                let value = value.trim();
                match name {
                    "transfer-encoding" => framing.0 = true,
                    "content-length" => framing.1 = value.parse().unwrap_or(0),
                    "expect" => framing.2 = value == "100-continue",
                    _ => {}
                }
            }
        }
        let slot = {
            let mut seen = seen.lock().unwrap();
            seen.push(String::from_utf8_lossy(&bytes).into_owned());
            seen.len() - 1
        };
        if framing.2 {
            let go_on = b"HTTP/1.1 100 Continue\r\n\r\n";
            if stream.get_mut().write_all(go_on).await.is_err() {
                return;
            }
        }
        let mut body = Vec::new();
        if framing.0 {
            loop {
                line.clear();
                if stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                body.extend_from_slice(&line);
                let size = String::from_utf8_lossy(&line);
                let size = size.split(';').next().unwrap_or("").trim();
                let Ok(size) = usize::from_str_radix(size, 16) else {
                    break;
                };
                if size == 0 {
                    // Trailer lines, then the empty line.
                    loop {
                        line.clear();
                        if stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                            break;
                        }
                        body.extend_from_slice(&line);
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let mut data = vec![0; size + 2];
                if stream.read_exact(&mut data).await.is_err() {
                    break;
                }
                body.extend_from_slice(&data);
            }
        } else if framing.1 > 0 {
            let mut data = vec![0; framing.1];
            let _ = stream.read_exact(&mut data).await;
            body.extend_from_slice(&data);
        }
        seen.lock().unwrap()[slot].push_str(&String::from_utf8_lossy(&body));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        let _ = stream.get_mut().write_all(ok).await;
        let _ = stream.get_mut().shutdown().await;
    }
}

/// `POST <path> HTTP/1.1` with these header lines (and `Authorization` when `token` is given)
/// and a chunked body `hello`.
fn chunked_post(path: &str, token: Option<&str>, lines: &[&str]) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let lines: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\n{auth}{lines}Connection: close\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n"
    )
}

/// RFC 9112 6.1 and 7: the gateway decodes `chunked` and nothing else, and pingora forwards a
/// body framed by chunked with `Transfer-Encoding: chunked` alone, so any other coding would be
/// dropped on the way (`gzip, chunked` reached the backend as `chunked`, the gzip coding lost).
/// Refused before any policy runs, on the anonymous and the validated route alike.
#[tokio::test]
async fn transfer_codings_other_than_one_chunked_never_reach_the_backend() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    let token = s.read_token.as_str();
    let not_implemented = [
        &["Transfer-Encoding: gzip, chunked"][..],
        &["Transfer-Encoding: identity, chunked"][..],
        &["Transfer-Encoding: deflate , Chunked"][..],
        &["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"][..],
    ];
    let ambiguous = [
        &["Transfer-Encoding: chunked, chunked"][..],
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"][..],
        &["Transfer-Encoding: chunked", "Content-Length: 3"][..],
        &["Content-Length: 14", "Transfer-Encoding: chunked"][..],
    ];
    for (path, token) in [
        ("/raw/x", None),
        ("/auth/x", Some(token)),
        ("/auth/x", None),
    ] {
        let refusals = [
            (
                &not_implemented,
                501,
                "Not implemented. The only transfer coding accepted is chunked.",
            ),
            (
                &ambiguous,
                400,
                "Bad request. The request's framing headers are ambiguous.",
            ),
        ];
        for (cases, want, message) in refusals {
            for lines in cases {
                let (status, text) = raw(addr, chunked_post(path, token, lines).as_bytes()).await;
                let case = format!("{path} {lines:?}: {text}");
                assert_eq!(status, want, "{case}");
                assert!(text.contains(&format!("\"{message}\"")), "{case}");
                assert!(text.contains("\r\nConnection: close\r\n"), "{case}");
            }
        }
    }
    // pingora's parser refuses these itself (a bare 400, connection closed): the last coding is
    // not chunked, or the request is HTTP/1.0 (RFC 9112 6.1, 6.3).
    for lines in [
        &["Transfer-Encoding: gzip"][..],
        &["Transfer-Encoding: identity"][..],
        &["Transfer-Encoding: chunked;foo=bar"][..],
        &["Transfer-Encoding: chunked,"][..],
        &["Transfer-Encoding: "][..],
        &["Transfer-Encoding: chunked", "Transfer-Encoding: gzip"][..],
    ] {
        let (status, text) = raw(addr, chunked_post("/raw/x", None, lines).as_bytes()).await;
        assert_eq!(status, 400, "{lines:?}: {text}");
    }
    let http10 = "POST /raw/x HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw(addr, http10.as_bytes()).await.0, 400);
    assert_eq!(s.rec.seen(), Vec::<String>::new());
    // One chunked, in any case and with empty list elements (RFC 9110 5.6.1), is forwarded as
    // `Transfer-Encoding: chunked` with the body as sent.
    for lines in [
        &["Transfer-Encoding: chunked"][..],
        &["Transfer-Encoding: CHUNKED"][..],
        &["Transfer-Encoding: , chunked"][..],
    ] {
        for (path, token) in [("/raw/x", None), ("/auth/x", Some(token))] {
            let before = s.rec.seen().len();
            let (status, text) = raw(addr, chunked_post(path, token, lines).as_bytes()).await;
            assert_eq!(status, 200, "{path} {lines:?}: {text}");
            let seen = s.rec.seen();
            assert_eq!(seen.len(), before + 1, "{lines:?}");
            let forwarded = seen[before].to_ascii_lowercase();
            assert_eq!(
                forwarded.matches("transfer-encoding").count(),
                1,
                "{forwarded}"
            );
            let tail = "\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
            assert!(forwarded.ends_with(tail), "{forwarded}");
        }
    }
    let metrics = s.gateway.metrics().await;
    assert!(
        metrics.contains("reason=\"TransferCodingNotImplemented\""),
        "{metrics}"
    );
}

/// `head` (which says `Expect: 100-continue`) on a fresh connection; wait (bounded) for the first
/// answer head; on `100 Continue` send `body` and read on to the end, on a final answer read on to
/// the end without sending the body. Returns the first head and everything after it.
async fn expecting(addr: SocketAddr, head: &[u8], body: &[u8]) -> (String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        let first = String::from_utf8_lossy(&read_head(&mut stream).await).into_owned();
        if first.starts_with("HTTP/1.1 100") {
            stream.write_all(body).await.unwrap();
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (first, String::from_utf8_lossy(&rest).into_owned())
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("the gateway answers the head alone (100 or a final status) within 10 s")
}

/// RFC 9110 10.1.1: a client that sends `Expect: 100-continue` holds its body back until it sees
/// `100 Continue` or a final answer. A request the gateway refuses gets its final answer at once
/// (no `100 Continue`, whose only purpose is to ask for the body; `Connection: close`, since the
/// body it may still send is no request), and nothing reaches the backend. An accepted request
/// goes to the backend with its expectation, the backend's `100 Continue` comes back, and the
/// body arrives whole. Any other expectation is refused with 417.
#[tokio::test]
async fn expect_100_continue_is_answered_without_waiting_for_a_refused_body() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    let token = s.read_token.as_str();
    for (auth, message) in [
        ("", "JWT not present."),
        ("Authorization: Bearer abc\r\n", "Invalid JWT."),
    ] {
        for framing in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
            let head = format!(
                "POST /auth/x HTTP/1.1\r\nHost: gw\r\n{auth}Expect: 100-continue\r\n{framing}\r\n\r\n"
            );
            let (first, rest) = expecting(addr, head.as_bytes(), b"hello").await;
            let case = format!("{auth:?} {framing}: {first}{rest}");
            assert!(first.starts_with("HTTP/1.1 401 "), "{case}");
            assert!(first.contains("\r\nConnection: close\r\n"), "{case}");
            assert!(rest.contains(&format!("\"{message}\"")), "{case}");
        }
    }
    assert_eq!(s.rec.seen(), Vec::<String>::new());
    for (path, auth) in [
        ("/auth/x", format!("Authorization: Bearer {token}\r\n")),
        ("/raw/x", String::new()),
    ] {
        for (framing, body) in [
            ("Content-Length: 5", "hello"),
            ("Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
        ] {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: gw\r\n{auth}Expect: 100-continue\r\n{framing}\r\n\
                 Connection: close\r\n\r\n"
            );
            let before = s.rec.seen().len();
            let (first, rest) = expecting(addr, head.as_bytes(), body.as_bytes()).await;
            let case = format!("{path} {framing}: {first}{rest}");
            assert!(first.starts_with("HTTP/1.1 100 "), "{case}");
            assert!(rest.starts_with("HTTP/1.1 200 "), "{case}");
            let seen = s.rec.seen();
            assert_eq!(seen.len(), before + 1, "{case}");
            let forwarded = &seen[before];
            assert!(
                forwarded.contains("\r\nExpect: 100-continue\r\n"),
                "{forwarded}"
            );
            assert!(
                forwarded.ends_with(&format!("\r\n\r\n{body}")),
                "{forwarded}"
            );
        }
    }
    let before = s.rec.seen().len();
    for value in ["something", "100-continue, x-other", "100-continue;a=1"] {
        let request = format!(
            "POST /raw/x HTTP/1.1\r\nHost: gw\r\nExpect: {value}\r\nContent-Length: 5\r\n\
             Connection: close\r\n\r\nhello"
        );
        let (status, text) = raw(addr, request.as_bytes()).await;
        assert_eq!(status, 417, "{value}: {text}");
        assert!(
            text.contains("\"Expectation failed. The only expectation accepted is 100-continue.\""),
            "{text}"
        );
    }
    assert_eq!(s.rec.seen().len(), before);
}

/// Header sections and chunked bodies a lenient parser could read otherwise than pingora: each is
/// refused before the backend, or reaches it re-serialised (so the backend reads what the
/// gateway read), and never carries a second request.
#[tokio::test]
async fn malformed_heads_and_chunks_are_refused_or_forwarded_rewritten() {
    let s = Setup::start().await;
    let addr = s.gateway.proxy();
    let get = |lines: &str| {
        format!("GET /raw/x HTTP/1.1\r\nHost: gw\r\n{lines}Connection: close\r\n\r\n")
    };
    // pingora's parser: a bare 400, nothing forwarded.
    for request in [
        get("X-A: a\r\n b\r\n"),
        get("X-A: a\r\n\tb\r\n"),
        chunked_post("/raw/x", None, &["Transfer-Encoding: gzip,", " chunked"]),
        get("X-A: a\0b\r\n"),
        get("X-A: a\rb\r\n"),
        get("X-A : a\r\n"),
        get("X-A\t: a\r\n"),
        get("Content-Length : 5\r\n"),
        chunked_post("/raw/x", None, &["Transfer-Encoding : chunked"]),
    ] {
        let (status, text) = raw(addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{request:?}: {text}");
    }
    assert_eq!(s.rec.seen(), Vec::<String>::new());
    // Bare LF line endings: read as line ends, forwarded with CRLF only.
    for request in [
        "GET /raw/x HTTP/1.1\nHost: gw\nX-A: a\nConnection: close\n\n",
        "GET /raw/x HTTP/1.1\r\nHost: gw\nX-A: a\r\nConnection: close\r\n\r\n",
    ] {
        let before = s.rec.seen().len();
        let (status, text) = raw(addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{request:?}: {text}");
        let forwarded = &s.rec.seen()[before];
        assert!(forwarded.contains("\r\nX-A: a\r\n"), "{forwarded:?}");
        assert_eq!(
            forwarded.matches('\n').count(),
            forwarded.matches("\r\n").count(),
            "{forwarded:?}"
        );
    }
    // Chunk extensions and trailers are dropped: the backend gets the data alone, so a trailer
    // can neither add a credential nor reframe the message.
    let tail = "\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for body in [
        "5;ext=\"a\"\r\nhello\r\n0;last\r\n\r\n",
        "5\r\nhello\r\n0\r\nAuthorization: Bearer x\r\nContent-Length: 99\r\nX-User-Id: admin\r\n\r\n",
    ] {
        let before = s.rec.seen().len();
        let request = format!(
            "POST /raw/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{body}"
        );
        let (status, text) = raw(addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{body:?}: {text}");
        let forwarded = s.rec.seen()[before].to_ascii_lowercase();
        assert!(forwarded.ends_with(tail), "{forwarded:?}");
        assert!(!forwarded.contains("bearer x"), "{forwarded:?}");
    }
    // A token in a trailer is no token.
    let trailer_token = "POST /auth/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\
                         Connection: close\r\n\r\n5\r\nhello\r\n0\r\nAuthorization: Bearer x\r\n\r\n";
    assert_eq!(raw(addr, trailer_token.as_bytes()).await.0, 401);
    // A chunk size pingora cannot read ends the request (400, connection closed) and the upstream
    // connection with it: the request behind it is never read as one.
    let before = s.rec.seen().len();
    for size in ["5x", " 5", "0x5", "+5", "10000000000000005", "5\r\r"] {
        let body = format!(
            "{size}\r\nhello\r\n0\r\n\r\n{}",
            String::from_utf8_lossy(SMUGGLED)
        );
        let request =
            format!("POST /raw/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let (status, text) = raw(addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{size:?}: {text}");
        assert!(
            text.contains("\r\nConnection: close\r\n"),
            "{size:?}: {text}"
        );
    }
    for forwarded in &s.rec.seen()[before..] {
        assert!(!forwarded.contains("hello"), "{forwarded:?}");
        assert!(!forwarded.contains("smuggled"), "{forwarded:?}");
    }
    assert_eq!(s.admin.request_count(), 0);
}

/// One HTTP/2 request over h2c with prior knowledge, written frame by frame (a client library
/// refuses to send `transfer-encoding`): the preface, empty SETTINGS, then one HEADERS frame that
/// ends the stream, HPACK literals without Huffman. Returns the types of the frames the gateway
/// sent on stream 1 until it answered (HEADERS, 1) or reset the stream (RST_STREAM, 3), or the
/// connection ended.
async fn h2_frames(addr: SocketAddr, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    for (name, value) in [(":path", "/raw/x"), (":authority", "gw")]
        .iter()
        .chain(extra)
    {
        block.push(0x00); // literal, not indexed, new name
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let len = block.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM | END_HEADERS, stream 1
    out.extend_from_slice(&block);
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&out).await.unwrap();
        let mut seen = Vec::new();
        let mut head = [0u8; 9];
        while stream.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            if stream.read_exact(&mut payload).await.is_err() {
                break;
            }
            let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if stream_id == 1 {
                seen.push(head[3]);
                if matches!(head[3], 1 | 3) {
                    break;
                }
            } else if head[3] == 7 {
                seen.push(7); // GOAWAY
                break;
            }
        }
        seen
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("the gateway answers the h2 stream within 10 s")
}

/// RFC 9113 8.2.2: `transfer-encoding` (and the other connection-specific headers) make an HTTP/2
/// request malformed. The stream is reset; nothing reaches the HTTP/1.1 backend, where the header
/// would frame the body.
#[tokio::test]
async fn an_http2_transfer_encoding_never_reaches_an_http1_backend() {
    let rec = Recording::start().await;
    let mut m = support::model(
        "h2-te",
        Vec::new(),
        vec![support::route("all", "/", rec.addr, None)],
    );
    m.server.listen[0].h2c = true;
    let gw = InProcess::start(&m).await;
    // The same request without it is answered (HEADERS) and forwarded.
    assert_eq!(h2_frames(gw.proxy(), &[]).await, [1]);
    assert_eq!(rec.seen().len(), 1);
    for header in [
        ("transfer-encoding", "chunked"),
        ("transfer-encoding", "gzip, chunked"),
        ("connection", "keep-alive"),
    ] {
        let frames = h2_frames(gw.proxy(), &[header]).await;
        assert_eq!(frames, [3], "{header:?}: RST_STREAM expected");
    }
    assert_eq!(rec.seen().len(), 1);
}
