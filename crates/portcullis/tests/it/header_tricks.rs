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
//!   by), and a framing header spelled with `_` (`Transfer_Encoding`) is refused.
//! - An HTTP/1.1 request without `Host` is refused (RFC 9112 3.2); HTTP/1.0 without it is not.
//!
//! The gateway runs in process on loopback port 0 from a YAML config (so `check`'s rules run
//! too). Requests go over raw TCP, byte for byte as written here. The upgrade cases use a raw
//! backend ([`Switching`]) that answers `101` the way a lenient WebSocket server does (on
//! `Upgrade: websocket` alone, or on anything) and records every byte it receives afterwards.
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
struct Switching {
    addr: SocketAddr,
    /// Per connection: the request head, then whatever followed a `101`.
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switching {
    async fn start(always: bool) -> Switching {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Switching::serve(stream, always, record.clone()));
            }
        });
        Switching { addr, seen, task }
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

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Switching {
    fn drop(&mut self) {
        self.task.abort();
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
    ws: Switching,
    /// `/any`: answers 101 to every request.
    any: Switching,
    /// `/admin` (token with `orders.write` needed).
    admin: Backend,
    /// `DELETE`/`PUT` under `/api` (token with `orders.write` needed).
    api_write: Backend,
    /// Anything else under `/api` (any valid token).
    api: Backend,
    /// `/public` (anonymous).
    public: Backend,
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
"#,
            admin = admin.url(),
            api_write = api_write.url(),
            api = api.url(),
            public = public.url(),
            ws = ws.addr,
            any = any.addr,
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
