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
/// tasks. The gateway closes it after the idle timeout (shortened here to 1 s).
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
