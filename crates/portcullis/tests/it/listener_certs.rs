//! End-to-end tests: listener certificates replaced while the gateway serves, and several
//! certificates on one listener chosen by SNI.
//!
//! The built binary runs a config with a TLS listener whose files live in a temporary directory.
//! Clients are raw rustls connections (tokio-rustls) that trust exactly one certificate each, so a
//! handshake proves which certificate was served, and an HTTP/1.1 keep-alive exchange on an
//! already-open TLS stream proves that connection survived the swap (a client trusting only the
//! old certificate could not have opened a new one). Waiting is bounded polling, never a sleep
//! of a guessed length.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_testkit::backend::Backend;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::Gateway;

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
fn certificate(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

/// Writes `text` to `path` the way deploy tools do: a temporary file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS handshake to `addr` with SNI `sni` (`None`: connect by IP, no SNI sent), trusting only
/// `trusted`. The stream and the certificate the server presented.
async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    trusted: &[&CertificateDer<'static>],
) -> std::io::Result<(TlsStream<TcpStream>, CertificateDer<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots.add((*der).clone()).unwrap();
    }
    let config = crate::support::tls_client_config(roots, b"http/1.1");
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((tls, served))
}

/// One keep-alive HTTP/1.1 GET on an open stream; the status.
async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(&buf).unwrap() {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("a content-length");
            if buf.len() >= head + length {
                return response.code.unwrap();
            }
        }
    }
}

/// Polls (bounded) until a new handshake trusting only `der` succeeds and is served `der`.
async fn wait_served(addr: SocketAddr, sni: Option<&str>, der: &CertificateDer<'static>) {
    for _ in 0..1000 {
        if let Ok((_, served)) = handshake(addr, sni, &[der]).await {
            assert_eq!(&served, der);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the new certificate was never served");
}

/// A gateway with one TLS listener (`tls_yaml`, the value of `tls:`) and an anonymous route to
/// `backend`.
async fn gateway(tls_yaml: &str, backend: &Backend) -> (Gateway, SocketAddr) {
    let yaml = format!(
        "server:\n  listen:\n    - {{ addr: \"127.0.0.1:0\", tls: {tls_yaml} }}\n  admin: \"127.0.0.1:0\"\n  threads: 1\n\
         routes:\n  - name: api\n    match: {{ path-prefix: /api }}\n    upstream: {}\n    policy: none\n",
        backend.url()
    );
    let gw = Gateway::run(&yaml, &reqwest::Client::new()).await;
    let addr = gw
        .proxy
        .strip_prefix("https://")
        .expect("an https listener")
        .parse()
        .unwrap();
    (gw, addr)
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    crate::support::metric_value(&gw.metrics().await, name)
}

/// A gateway serving one self-signed `localhost` certificate from files in a temporary directory.
struct OneCertificate {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    der: CertificateDer<'static>,
    backend: Backend,
    gw: Gateway,
    addr: SocketAddr,
}

impl OneCertificate {
    async fn start() -> OneCertificate {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (cert_pem, key_pem, der) = certificate(&["localhost"]);
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let backend = Backend::start().unwrap();
        let tls = format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            cert.display(),
            key.display()
        );
        let (gw, addr) = gateway(&tls, &backend).await;
        OneCertificate {
            _dir: dir,
            cert,
            key,
            der,
            backend,
            gw,
            addr,
        }
    }
}

async fn post_reload(gw: &Gateway) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/reload", gw.admin))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let one = OneCertificate::start().await;
    let (gw, addr, backend) = (&one.gw, one.addr, &one.backend);
    let (cert_path, key_path, old_der) = (&one.cert, &one.key, one.der.clone());

    // A keep-alive connection that trusts only the old certificate.
    let (mut open, served) = handshake(addr, Some("localhost"), &[&old_der])
        .await
        .unwrap();
    assert_eq!(served, old_der);
    assert_eq!(get(&mut open, "/api/a").await, 200);

    // Replace both files on disk; the watcher notices, no signal or restart.
    let (new_cert, new_key, new_der) = certificate(&["localhost"]);
    replace(cert_path, &new_cert);
    replace(key_path, &new_key);
    wait_served(addr, Some("localhost"), &new_der).await;
    assert_eq!(
        metric(gw, "portcullis_tls_certificate_reload_successes_total").await,
        1.0
    );

    // The connection opened before the swap still works (it could not have been re-opened:
    // its client does not trust the new certificate) ...
    assert_eq!(get(&mut open, "/api/b").await, 200);
    assert_eq!(get(&mut open, "/api/c").await, 200);
    // ... while a new connection from that client fails: the old certificate is gone.
    assert!(handshake(addr, Some("localhost"), &[&old_der])
        .await
        .is_err());
    assert_eq!(backend.request_count(), 3);
    assert_eq!(
        metric(gw, "portcullis_tls_certificate_reload_failures_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_replacement_keeps_the_old_certificate_and_names_the_file() {
    let one = OneCertificate::start().await;
    let (gw, addr) = (&one.gw, one.addr);
    let (cert_path, key_path, old_der) = (&one.cert, &one.key, one.der.clone());

    // A new certificate with the old key: the pair does not match.
    let (new_cert, new_key, new_der) = certificate(&["localhost"]);
    replace(cert_path, &new_cert);
    let (status, body) = post_reload(gw).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains(&key_path.display().to_string()) && body.contains("not the key of"),
        "{body}"
    );
    // Nothing was swapped: new connections still get the old certificate.
    let (mut conn, served) = handshake(addr, Some("localhost"), &[&old_der, &new_der])
        .await
        .unwrap();
    assert_eq!(served, old_der);
    assert_eq!(get(&mut conn, "/api/x").await, 200);

    // A file that is not PEM at all, found by the watcher: counted, old certificate kept.
    // (The watcher may or may not have tried the mismatched pair too: count from here.)
    let failures = "portcullis_tls_certificate_reload_failures_total";
    let before = metric(gw, failures).await;
    assert!(before >= 1.0);
    replace(cert_path, "not a certificate\n");
    for _ in 0..1000 {
        if metric(gw, failures).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(gw, failures).await, before + 1.0);
    let (status, body) = post_reload(gw).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&cert_path.display().to_string()), "{body}");
    let (_, served) = handshake(addr, Some("localhost"), &[&old_der, &new_der])
        .await
        .unwrap();
    assert_eq!(served, old_der);

    // Fixed: the matching pair is served after a reload.
    replace(key_path, &new_key);
    replace(cert_path, &new_cert);
    let (status, body) = post_reload(gw).await;
    assert_eq!(status, 200, "{body}");
    let (_, served) = handshake(addr, Some("localhost"), &[&new_der])
        .await
        .unwrap();
    assert_eq!(served, new_der);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_chosen_by_sni_with_the_first_as_default() {
    let dir = tempfile::tempdir().unwrap();
    let certs = [
        ("default", certificate(&["localhost"])),
        ("api", certificate(&["api.example.test"])),
        ("apps", certificate(&["*.apps.example.test"])),
    ];
    let mut entries = Vec::new();
    for (name, (cert, key, _)) in &certs {
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        entries.push(format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            c.display(),
            k.display()
        ));
    }
    let backend = Backend::start().unwrap();
    let (_gw, addr) = gateway(&format!("[{}]", entries.join(", ")), &backend).await;
    let ders: Vec<&CertificateDer<'static>> = certs.iter().map(|(_, (_, _, d))| d).collect();

    for (sni, expected) in [
        (Some("api.example.test"), 1),
        (Some("API.Example.Test"), 1),
        (Some("orders.apps.example.test"), 2),
        (Some("localhost"), 0),
        (Some("unknown.example.test"), 0),
        (Some("a.b.apps.example.test"), 0),
        (None, 0),
    ] {
        let served = presented(addr, sni).await;
        assert_eq!(&served, ders[expected], "SNI {sni:?}");
    }
    // A client that trusts the chosen certificate completes a request with it.
    let (mut conn, served) = handshake(addr, Some("orders.apps.example.test"), &[ders[2]])
        .await
        .unwrap();
    assert_eq!(&served, ders[2]);
    assert_eq!(get(&mut conn, "/api/sni").await, 200);
}

/// The certificate the server presents for `sni`, whatever it is (the handshake accepts any
/// certificate: only which one was sent matters here).
async fn presented(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_owned()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Accepts any certificate (signatures still checked with the presented key).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
