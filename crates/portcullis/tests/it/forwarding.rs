//! End-to-end tests: what the gateway forwards besides the path. The token under
//! `forward-token: false` (whatever its source), the X-Forwarded-* family and its relatives
//! (overwritten or removed, HTTP/1.1 and HTTP/2), and claim values a header cannot carry without
//! ambiguity. The real gateway in process, the recording backend and a JWKS server on loopback
//! port 0; requests over raw TCP where the exact bytes matter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use portcullis_auth::{Policy, TokenSource};
use portcullis_config::{KeyLifecycle, KeySource, Model, Route};
use portcullis_testkit::backend::{Backend, RecordedRequest};
use portcullis_testkit::jwks_server::{JwksServer, TestKey};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, localhost_certificate, route, InProcess};

// ---------------------------------------------------------------- set-up

struct Fixture {
    backend: Backend,
    idp: JwksServer,
    key: TestKey,
    gw: InProcess,
}

fn now() -> i64 {
    #[allow(clippy::disallowed_methods)] // tests mint tokens relative to the real clock
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

impl Fixture {
    /// The gateway with `policies` (each keyed by the JWKS server) and one route per policy at
    /// `/<policy name>`, plus an anonymous `/public`; ready when returned.
    async fn start(policies: Vec<Policy>, tweak: impl FnOnce(&mut Model)) -> Fixture {
        let backend = Backend::start().unwrap();
        let idp = JwksServer::start().await.unwrap();
        let key = TestKey::rsa("rsa-1").unwrap();
        idp.set_keys(&[&key]);
        let mut routes: Vec<Route> = policies
            .iter()
            .map(|p| {
                let prefix = format!("/{}", p.name);
                route(&p.name, &prefix, backend.addr(), Some(&p.name))
            })
            .collect();
        routes.push(route("public", "/public", backend.addr(), None));
        let policies = policies
            .into_iter()
            .map(|mut p| {
                p.issuers = vec![idp.issuer().to_owned()];
                let source = KeySource::JwksUri {
                    url: idp.jwks_url(),
                    lifecycle: KeyLifecycle::default(),
                };
                (p, vec![source])
            })
            .collect();
        let mut model = support::model("forwarding.yaml", policies, routes);
        tweak(&mut model);
        Fixture {
            gw: InProcess::start(&model).await,
            backend,
            idp,
            key,
        }
    }

    fn token_with(&self, extra: Value) -> String {
        let mut claims = json!({
            "iss": self.idp.issuer(),
            "sub": "user-42",
            "iat": now(),
            "exp": now() + 300,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        self.key.sign(&claims).unwrap()
    }

    fn token(&self) -> String {
        self.token_with(json!({}))
    }

    /// Send `request` (raw HTTP/1.1, `Connection: close` added) and return the status and the one
    /// request the backend recorded for it (`None`: it saw none).
    async fn exchange(&self, request: &str) -> (u16, Option<RecordedRequest>) {
        self.backend.clear();
        let status = raw_status(self.gw.proxy(), request).await;
        let mut seen = self.backend.requests();
        assert!(seen.len() <= 1, "{seen:?}");
        (status, seen.pop())
    }
}

/// One raw HTTP/1.1 exchange on a fresh connection; the status code of the answer.
async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let head = request.trim_end_matches("\r\n");
    let bytes = format!("{head}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the gateway answered in time");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn policy(name: &str, source: TokenSource, forward_token: bool) -> Policy {
    let mut p = Policy::new(name);
    p.token_source = source;
    p.forward_token = forward_token;
    p
}

fn query(name: &str) -> TokenSource {
    TokenSource::Query {
        name: name.to_owned(),
    }
}

fn header(name: &'static str) -> TokenSource {
    TokenSource::Header {
        name: reqwest::header::HeaderName::from_static(name),
        require_scheme: None,
    }
}

// ---------------------------------------------------------------- forward-token

#[tokio::test(flavor = "multi_thread")]
async fn forward_token_false_removes_the_token_from_its_header_or_query_parameter() {
    let mut report_only = policy("report", query("access_token"), false);
    report_only.report_only = true;
    let f = Fixture::start(
        vec![
            policy("query-drop", query("access_token"), false),
            policy("query-keep", query("access_token"), true),
            policy("header-drop", header("x-api-token"), false),
            policy("header-keep", header("x-api-token"), true),
            policy("bearer-drop", Policy::new("default").token_source, false),
            report_only,
        ],
        |_| {},
    )
    .await;
    let token = f.token();

    // Query parameter: only that parameter goes, every other byte of the query stays, in order
    // (an encoded key naming the parameter is the same parameter, as extraction reads it).
    let cases = [
        (
            format!("/query-drop/x?a=1&access_token={token}&b=%20x+y&&c"),
            Some("a=1&b=%20x+y&&c"),
        ),
        (format!("/query-drop/x?access_token={token}"), None),
        (format!("/query-drop/x?z=&access_token={token}"), Some("z=")),
        (
            format!("/query-drop/x?access%5Ftoken={token}&access_tokens=keep"),
            Some("access_tokens=keep"),
        ),
    ];
    for (target, expect) in cases {
        let (status, seen) = f
            .exchange(&format!("GET {target} HTTP/1.1\r\nHost: gw\r\n"))
            .await;
        assert_eq!(status, 200, "{target}");
        let seen = seen.expect("forwarded");
        assert_eq!(seen.path, "/query-drop/x", "{target}");
        assert_eq!(seen.query.as_deref(), expect, "{target}");
    }
    // forward-token: true (the default) keeps it: the removal above is not an accident.
    let target = format!("/query-keep/x?a=1&access_token={token}");
    let (status, seen) = f
        .exchange(&format!("GET {target} HTTP/1.1\r\nHost: gw\r\n"))
        .await;
    assert_eq!(status, 200);
    let expect = format!("a=1&access_token={token}");
    assert_eq!(seen.unwrap().query.as_deref(), Some(expect.as_str()));

    // Custom header: removed; kept under forward-token: true.
    for (path, kept) in [("/header-drop", false), ("/header-keep", true)] {
        let (status, seen) = f
            .exchange(&format!(
                "GET {path}/x HTTP/1.1\r\nHost: gw\r\nX-Api-Token: {token}\r\n"
            ))
            .await;
        assert_eq!(status, 200, "{path}");
        let seen = seen.unwrap();
        let expect = if kept { vec![token.as_str()] } else { vec![] };
        assert_eq!(seen.header_values("x-api-token"), expect, "{path}");
    }

    // Authorization (as before).
    let (status, seen) = f
        .exchange(&format!(
            "GET /bearer-drop/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(seen.unwrap().header_values("authorization").is_empty());

    // Report-only forwards a bad token too, never the token itself (every copy of the parameter).
    let (status, seen) = f
        .exchange("GET /report/x?access_token=bad&k=v&access_token=worse HTTP/1.1\r\nHost: gw\r\n")
        .await;
    assert_eq!(status, 200);
    assert_eq!(seen.unwrap().query.as_deref(), Some("k=v"));
}

#[test]
fn check_warns_when_a_query_token_would_reach_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let config = |forward_token: &str| {
        format!(
            "server:\n  listen: \"127.0.0.1:8080\"\npolicies:\n  p:\n    validate-jwt:\n      \
             query-parameter-name: access_token\n      issuer-signing-keys: \
             [{{ id: k, base64: \"ZGVtby1vbmx5LXNlY3JldC1kby1ub3QtdXNlLTMyYnl0ZXMh\" }}]\n      \
             issuers: [https://links.example/]\n{forward_token}routes:\n  - {{ name: r, upstream: \
             \"http://127.0.0.1:3000\", policy: p }}\n"
        )
    };
    let check = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args(["check", "-c", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let warning = "warning: the token in query parameter `access_token` is forwarded to the \
                   backend in the URL, where access logs record it; `forward-token: false` \
                   removes that parameter (and only it) before forwarding";
    let stderr = check("default.yaml", &config(""));
    assert_eq!(stderr, format!("default.yaml:5:5: {warning}\n"));
    let stderr = check("true.yaml", &config("    forward-token: true\n"));
    assert_eq!(stderr, format!("true.yaml:9:20: {warning}\n"));
    let stderr = check("false.yaml", &config("    forward-token: false\n"));
    assert_eq!(stderr, "");
}

// ---------------------------------------------------------------- X-Forwarded-* and relatives

/// Forwarding headers a client might send to pose as someone else, somewhere else, or to make the
/// backend route another path; every one is the gateway's to set or remove.
const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "gopher"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "1"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-client-cert", "Hash=forged"),
    ("x_forwarded_for", "6.6.6.7"),
    ("forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("x-real-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("x-original-url", "/admin"),
    // What CDNs and load balancers set in front of an application, read as the client's address
    // by middleware configured for them.
    ("cf-connecting-ip", "6.6.6.6"),
    ("fastly-client-ip", "6.6.6.6"),
    ("x-azure-clientip", "6.6.6.6"),
    ("x-cluster-client-ip", "6.6.6.6"),
    ("client-ip", "6.6.6.6"),
    ("x-envoy-external-address", "6.6.6.6"),
    ("x-original-forwarded-for", "6.6.6.6"),
    ("x-original-host", "evil.example"),
];

/// Header lines for a raw HTTP/1.1 request: the spoofed set plus `extra`.
fn spoofed_lines(extra: &str) -> String {
    let mut out = String::new();
    for (n, v) in SPOOFED {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(extra);
    out
}

/// The backend saw exactly the gateway's forwarding headers and none of the client's.
fn assert_gateway_forwarding(seen: &RecordedRequest, expect: &[(&str, &str)]) {
    for (name, _) in SPOOFED {
        if !expect.iter().any(|(n, _)| n == name) {
            assert!(seen.header_values(name).is_empty(), "{name}: {seen:?}");
        }
    }
    for (name, value) in expect {
        assert_eq!(seen.header_values(name), vec![*value], "{name}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_forwarding_headers_are_overwritten_or_removed_on_http1() {
    let f = Fixture::start(vec![Policy::new("p")], |_| {}).await;
    let port = f.gw.proxy().port().to_string();
    let expect = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "gw.example"),
        ("x-forwarded-port", port.as_str()),
    ];
    let auth = format!("Authorization: Bearer {}\r\n", f.token());
    for (path, extra) in [("/public/x", ""), ("/p/x", auth.as_str())] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: gw.example\r\n{}",
            spoofed_lines(extra)
        );
        let (status, seen) = f.exchange(&request).await;
        assert_eq!(status, 200, "{path}");
        assert_gateway_forwarding(&seen.unwrap(), &expect);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_extends_x_forwarded_for_and_keeps_its_scheme_host_and_port() {
    let f = Fixture::start(vec![], |m| {
        m.server.trusted_proxies = vec![portcullis_config::IpNet::parse("127.0.0.0/8").unwrap()];
    })
    .await;
    let request = format!(
        "GET /public/x HTTP/1.1\r\nHost: gw.example\r\n{}",
        spoofed_lines("")
    );
    let (status, seen) = f.exchange(&request).await;
    assert_eq!(status, 200);
    assert_gateway_forwarding(
        &seen.unwrap(),
        &[
            ("x-forwarded-for", "6.6.6.6, 127.0.0.1"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
        ],
    );
}

/// A certificate for `localhost` (PEM chain, PEM key) and its DER, for a TLS listener.
/// One HTTP/2 GET over TLS (ALPN `h2`, checked) to `localhost:port`; the status.
async fn h2_get(addr: SocketAddr, cert_der: Vec<u8>, path: &str, headers: &[(&str, &str)]) -> u16 {
    let (mut client, connection) = support::h2_over_tls(addr, cert_der).await;
    let driver = tokio::spawn(connection);
    let mut request = http::Request::get(format!("https://localhost:{}{path}", addr.port()));
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let (response, _) = client
        .send_request(request.body(()).unwrap(), true)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the gateway answered in time")
        .unwrap();
    driver.abort();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_forwarding_headers_are_overwritten_or_removed_on_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_der) = localhost_certificate(dir.path());
    let f = Fixture::start(vec![Policy::new("p")], |m| {
        m.server.listen.push(portcullis_config::Listener {
            addr: "127.0.0.1:0".to_owned(),
            tls: vec![tls],
            h2c: false,
        });
    })
    .await;
    let addr = f.gw.addrs.proxy[1].0;
    let host = format!("localhost:{}", addr.port());
    let port = addr.port().to_string();
    let expect = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", host.as_str()),
        ("x-forwarded-port", port.as_str()),
    ];
    let auth = format!("Bearer {}", f.token());
    for (path, token) in [("/public/x", None), ("/p/x", Some(auth.as_str()))] {
        f.backend.clear();
        let mut headers = SPOOFED.to_vec();
        headers.extend(token.map(|t| ("authorization", t)));
        let status = h2_get(addr, cert_der.clone(), path, &headers).await;
        assert_eq!(status, 200, "{path}");
        let seen = f.backend.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_gateway_forwarding(&seen[0], &expect);
    }
}

// ---------------------------------------------------------------- claim values

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_value_that_would_read_as_something_else_is_not_forwarded_and_is_counted() {
    let mut p = Policy::new("p");
    p.forward_claims = vec![
        (
            reqwest::header::HeaderName::from_static("x-user-roles"),
            "roles".to_owned(),
        ),
        (
            reqwest::header::HeaderName::from_static("x-user-name"),
            "name".to_owned(),
        ),
    ];
    let f = Fixture::start(vec![p], |_| {}).await;
    let cases = [
        // Joined with ",", this would read as three roles, one of them admin.
        (json!(["reader", "x,admin"]), "Alice", None, Some("Alice")),
        // A parser trims the space: the backend would read "admin".
        (json!(["reader"]), " admin", Some("reader"), None),
        // CR/LF never reaches a header line.
        (
            json!(["reader"]),
            "a\r\nX-Admin: true",
            Some("reader"),
            None,
        ),
        (
            json!(["reader", "writer"]),
            "Smith, John",
            Some("reader,writer"),
            Some("Smith, John"),
        ),
    ];
    for (roles, name, want_roles, want_name) in cases {
        let token = f.token_with(json!({ "roles": roles, "name": name }));
        let request = format!(
            "GET /p/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nX-User-Roles: admin\r\n"
        );
        let (status, seen) = f.exchange(&request).await;
        assert_eq!(status, 200, "{roles} {name:?}");
        let seen = seen.unwrap();
        let expect = |v: Option<&'static str>| v.into_iter().collect::<Vec<_>>();
        assert_eq!(
            seen.header_values("x-user-roles"),
            expect(want_roles),
            "{roles}"
        );
        assert_eq!(
            seen.header_values("x-user-name"),
            expect(want_name),
            "{name:?}"
        );
        assert!(seen.header_values("x-admin").is_empty());
    }
    let metrics = reqwest::get(format!("http://{}/metrics", f.gw.admin()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (header, reason) in [
        ("x-user-roles", "SeparatorInElement"),
        ("x-user-name", "SurroundingWhitespace"),
        ("x-user-name", "ControlCharacter"),
    ] {
        let line = format!(
            "portcullis_claim_headers_refused_total{{header=\"{header}\",policy=\"p\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

// ---------------------------------------------------------------- request bodies from HTTP/2

/// A raw HTTP/1.1 upstream: parses each request on each connection (head, then a chunked or
/// sized body), records its first line, and answers `200 ok` to every line that reads as a
/// request. A line that does not (what a stray last chunk turns into) is recorded and not
/// answered, so the connection stays pooled and the next request's bytes follow it.
async fn raw_upstream() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match tokio::io::AsyncBufReadExt::read_line(&mut stream, &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push(line.trim_end().to_owned()),
                        }
                    }
                    let first = head.first().cloned().unwrap_or_default();
                    record.lock().unwrap().push((conn, first.clone()));
                    let header = |name: &str| {
                        head.iter().skip(1).find_map(|h| {
                            let (n, v) = h.split_once(':')?;
                            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                    };
                    if header("transfer-encoding").is_some() {
                        loop {
                            line.clear();
                            if tokio::io::AsyncBufReadExt::read_line(&mut stream, &mut line)
                                .await
                                .unwrap_or(0)
                                == 0
                            {
                                return;
                            }
                            let size = usize::from_str_radix(line.trim(), 16).unwrap();
                            let mut data = vec![0; size + 2];
                            stream.read_exact(&mut data).await.unwrap();
                            if size == 0 {
                                break;
                            }
                        }
                    } else if let Some(n) = header("content-length") {
                        let mut data = vec![0; n.parse().unwrap()];
                        stream.read_exact(&mut data).await.unwrap();
                    }
                    if first.ends_with(" HTTP/1.1") {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        stream.get_mut().write_all(ok).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An HTTP/2 request body that ends with an empty DATA frame (END_STREAM) reaches an HTTP/1.1
/// upstream with exactly one last chunk: a second one would stay on the pooled connection and
/// be read as the start of the next request (of any client), which could then be answered
/// with another request's response.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_body_ending_in_an_empty_frame_sends_one_last_chunk_upstream() {
    let (upstream, seen) = raw_upstream().await;
    let mut m = support::model(
        "h2-body",
        Vec::new(),
        vec![route("all", "/", upstream, None)],
    );
    m.server.listen[0].h2c = true;
    let gw = InProcess::bind(&m);
    let tcp = TcpStream::connect(gw.proxy()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let authority = format!("http://127.0.0.1:{}", gw.proxy().port());
    let upload = http::Request::post(format!("{authority}/up"))
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(upload, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"hello"), false)
        .unwrap();
    body.send_data(bytes::Bytes::new(), true).unwrap();
    let within = |f| tokio::time::timeout(Duration::from_secs(10), f);
    let response = within(response).await.expect("answered in time").unwrap();
    assert_eq!(response.status(), 200);
    let mut client = client.ready().await.unwrap();
    let next = http::Request::get(format!("{authority}/next"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(next, true).unwrap();
    let response = within(response).await.expect("answered in time").unwrap();
    assert_eq!(response.status(), 200);
    driver.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (0, "POST /up HTTP/1.1".to_owned()),
            (0, "GET /next HTTP/1.1".to_owned())
        ],
        "the second request reuses the pooled connection, and nothing comes between"
    );
}
