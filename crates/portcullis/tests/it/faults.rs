//! End-to-end tests of faults on either side of the gateway: idle client connections, and
//! backends that answer what a client must not see. The real gateway in process, the recording
//! backend or a raw TCP one on loopback port 0; waits on readiness or on the connection itself,
//! never on a guessed sleep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use portcullis_proxy::RunOptions;
use portcullis_testkit::backend::Backend;

use crate::support::{self, localhost_certificate, route, InProcess};

/// An HTTP/2 client that opens a connection, makes one request and then sends nothing must not
/// hold the connection for ever: pingora's default leaves an idle h2 connection open with no
/// bound (an HTTP/1.1 one is closed after 60 s), so idle TLS clients could pile up sockets and
/// tasks. The gateway closes it after the idle timeout (shortened here to 1 s); a request in
/// flight for longer than that is not idleness and completes.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_der) = localhost_certificate(dir.path());
    let mut model = support::model(
        "faults.yaml",
        vec![],
        vec![route("r", "/", backend.addr(), None)],
    );
    model.server.listen[0].tls = vec![tls];
    let opts = RunOptions {
        h2_idle_timeout: Some(Duration::from_secs(1)),
        ..RunOptions::default()
    };
    let gw = InProcess::bind_with(&model, opts);
    gw.wait_ready().await;
    let addr = gw.proxy();

    let (mut client, connection) = support::h2_over_tls(addr, cert_der).await;
    let mut driver = tokio::spawn(connection);
    // The backend takes twice the idle timeout to answer: the stream is open all along.
    backend.set_delay(Duration::from_secs(2));
    let request = http::Request::get(format!("https://localhost:{}/x", addr.port()))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the gateway answered in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);

    // Idle from here on: the connection task ends when the gateway closes the connection.
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), &mut driver).await;
    driver.abort();
    assert!(
        closed.is_ok(),
        "the idle HTTP/2 connection was still open after 15 s"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(900),
        "closed before the idle timeout: {:?}",
        idle.elapsed()
    );
    drop(client);
}

/// Reads a request head from `stream`: the bytes read so far and where the head ends in them
/// (`None`: closed first).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, usize)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some((buf, i + 4));
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend on loopback port 0 that reads each request's head, writes `answer` and then resets
/// the connection (`SO_LINGER` 0): a response cut off mid-body.
async fn cutting_backend(answer: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_some() {
                    let _ = stream.write_all(answer).await;
                    let _ = stream.flush().await;
                    let _ = stream.set_zero_linger();
                }
            });
        }
    });
    addr
}

/// A backend that sends the head and part of the body, then resets the connection: the client
/// must be able to tell the answer is incomplete (a chunked body without its last chunk, a
/// `Content-Length` body short of its length, then the connection closed), never receive it as
/// a whole answer on a connection that stays open. A cut body taken for a whole one is a wrong
/// answer the client acts on.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_cut_mid_body_reaches_the_client_as_incomplete() {
    let chunked =
        cutting_backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
    let sized = cutting_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello").await;
    let model = support::model(
        "faults.yaml",
        vec![],
        vec![
            route("c", "/chunked", chunked, None),
            route("s", "/sized", sized, None),
        ],
    );
    let gw = InProcess::start(&model).await;
    for path in ["/chunked", "/sized"] {
        // Keep-alive on purpose: the gateway must close the connection, not wait for more.
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
        let (status, text) = support::raw(gw.proxy(), request.as_bytes()).await;
        assert_eq!(status, 200, "{path}: {text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            assert_eq!(body, "5\r\nhello\r\n", "{path}: no last chunk: {text}");
        } else {
            assert!(head.contains("Content-Length: 100"), "{path}: {text}");
            assert_eq!(body, "hello", "{path}: {text}");
        }
    }
}

/// A backend on loopback port 0 that answers every request with two interim responses (`100
/// Continue`, `102 Processing`) before `200 ok`, whether the request asked for one or not (some
/// do), after reading the request's head and `Content-Length` body. The heads it read, in order.
async fn interim_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Some((buf, end)) = read_head(&mut stream).await else {
                    return;
                };
                let mut chunk = [0u8; 4096];
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                seen.lock().unwrap().push(head);
                let _ = stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n")
                    .await;
                let mut body = buf.len() - end;
                while body < length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body += n,
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, heads)
}

/// An HTTP/1.0 client cannot read an interim response: it would take `100 Continue` for the
/// answer (RFC 9110 15.2: none may be sent to it). The gateway drops the backend's 1xx for such a
/// client, and ignores (does not forward) its `Expect: 100-continue` (RFC 9110 10.1.1), so the
/// first status line it reads is the backend's final `200`. An HTTP/1.1 client that asked for
/// `100-continue` still gets it.
#[tokio::test(flavor = "multi_thread")]
async fn an_http10_client_never_sees_a_backends_interim_responses() {
    let (backend, heads) = interim_backend().await;
    let model = support::model("faults.yaml", vec![], vec![route("r", "/", backend, None)]);
    let gw = InProcess::start(&model).await;

    let get = b"GET /get HTTP/1.0\r\nHost: gw\r\n\r\n";
    let post = b"POST /post HTTP/1.0\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    for request in [&get[..], &post[..]] {
        let (status, text) = support::raw(gw.proxy(), request).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.ends_with("\r\n\r\nok"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.").count(),
            1,
            "one status line: {text}"
        );
    }
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen[1].contains("expect:"), "{}", seen[1]);

    // HTTP/1.1 with the expectation: the 100 the client asked for is passed on.
    let post11 = b"POST /post HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    let (status, text) = support::raw(gw.proxy(), post11).await;
    assert_eq!(status, 100, "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
}
