//! End-to-end: TLS to upstreams (`upstream-tls`) and the `Host` they receive (`host-header`),
//! against real https backends (the recording backend behind rustls) with a private CA generated
//! per test: trust by `ca`, the name checked by `sni`, `verify: false`, a backend that requires a
//! client certificate (mTLS), and the three `host-header` modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use portcullis_testkit::backend::Backend;
use portcullis_testkit::pki::{Ca, Issued};

use crate::support::Gateway;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An https backend presenting `server`; with `client_ca`, it requires a client certificate
/// issued by that CA.
fn https_backend(server: &Issued, client_ca: Option<&Ca>) -> Backend {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)
    .unwrap();
    Backend::start_tls(Arc::new(config)).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn route(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ path-prefix: /{name} }}\n    upstream: {upstream}\n    policy: none\n{extra}"
    )
}

fn gateway_yaml(routes: &[String]) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\nroutes:\n{}",
        routes.concat()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_ca_the_server_name_and_the_host_header() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("upstream test CA").unwrap();
    // The backend's certificate names `backend.internal` only, not the address it listens on.
    let backend = https_backend(&ca.server(&["backend.internal"]).unwrap(), None);
    let ca_file = write(dir.path(), "ca.pem", &ca.cert_pem);
    let up = backend.https_url();
    let port = backend.addr().port();
    let trusted = format!("    upstream-tls: {{ ca: \"{ca_file}\", sni: backend.internal }}\n");
    let yaml = gateway_yaml(&[
        route("trusted", &up, &trusted),
        route(
            "no-ca",
            &up,
            "    upstream-tls: { sni: backend.internal }\n",
        ),
        route(
            "no-sni",
            &up,
            &format!("    upstream-tls: {{ ca: \"{ca_file}\" }}\n"),
        ),
        route("insecure", &up, "    upstream-tls: { verify: false }\n"),
        route(
            "host-client",
            &up,
            &format!("{trusted}    host-header: client\n"),
        ),
        route(
            "host-value",
            &up,
            &format!("{trusted}    host-header: orders.internal:8443\n"),
        ),
    ]);
    let client = reqwest::Client::new();
    let gw = Gateway::run(&yaml, &client).await;
    let gateway_host = gw.proxy.trim_start_matches("http://").to_owned();

    let mut got = Vec::new();
    for name in [
        "trusted",
        "no-ca",
        "no-sni",
        "insecure",
        "host-client",
        "host-value",
    ] {
        backend.clear();
        let (status, _) = gw.call(&format!("/{name}/x"), "unused").await;
        let host = backend
            .requests()
            .first()
            .map(|r| r.header_values("host").join("|"));
        got.push((name, status, host));
    }
    let upstream_host = format!("127.0.0.1:{port}");
    assert_eq!(
        got,
        [
            ("trusted", 200, Some(upstream_host.clone())),
            // The platform's roots do not know the private CA.
            ("no-ca", 502, None),
            // Trusted CA, but the certificate does not name 127.0.0.1.
            ("no-sni", 502, None),
            ("insecure", 200, Some(upstream_host)),
            ("host-client", 200, Some(gateway_host)),
            ("host-value", 200, Some("orders.internal:8443".to_owned())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA").unwrap();
    let client_ca = Ca::new("client CA").unwrap();
    let backend = https_backend(&server_ca.server(&["127.0.0.1"]).unwrap(), Some(&client_ca));
    let gateway_id = client_ca.client("portcullis").unwrap();
    let stranger = Ca::new("another CA").unwrap().client("portcullis").unwrap();
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert_pem);
    let cert = write(dir.path(), "client.pem", &gateway_id.cert_pem);
    let key = write(dir.path(), "client-key.pem", &gateway_id.key_pem);
    let other_cert = write(dir.path(), "other.pem", &stranger.cert_pem);
    let other_key = write(dir.path(), "other-key.pem", &stranger.key_pem);
    let up = backend.https_url();
    let yaml = gateway_yaml(&[
        route(
            "mtls",
            &up,
            &format!("    upstream-tls: {{ ca: \"{ca_file}\", client-cert: \"{cert}\", client-key: \"{key}\" }}\n"),
        ),
        route(
            "no-cert",
            &up,
            &format!("    upstream-tls: {{ ca: \"{ca_file}\" }}\n"),
        ),
        route(
            "wrong-cert",
            &up,
            &format!("    upstream-tls: {{ ca: \"{ca_file}\", client-cert: \"{other_cert}\", client-key: \"{other_key}\" }}\n"),
        ),
    ]);
    let client = reqwest::Client::new();
    let gw = Gateway::run(&yaml, &client).await;
    assert_eq!(gw.call("/mtls/x", "unused").await.0, 200);
    assert_eq!(backend.request_count(), 1);
    assert_eq!(gw.call("/no-cert/x", "unused").await.0, 502);
    assert_eq!(gw.call("/wrong-cert/x", "unused").await.0, 502);
    assert_eq!(
        backend.request_count(),
        1,
        "refused handshakes never reach it"
    );
    assert_eq!(gw.call("/mtls/y", "unused").await.0, 200);
}

/// Health probes use the route's `upstream-tls` as its requests do: a private-CA backend that
/// requires a client certificate is probed successfully (and counted healthy).
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_speak_the_routes_upstream_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA").unwrap();
    let client_ca = Ca::new("client CA").unwrap();
    let backend = https_backend(&server_ca.server(&["127.0.0.1"]).unwrap(), Some(&client_ca));
    let id = client_ca.client("portcullis").unwrap();
    let ca_file = write(dir.path(), "ca.pem", &server_ca.cert_pem);
    let cert = write(dir.path(), "client.pem", &id.cert_pem);
    let key = write(dir.path(), "client-key.pem", &id.key_pem);
    let yaml = gateway_yaml(&[route(
        "probed",
        &backend.https_url(),
        &format!(
            "    upstream-tls: {{ ca: \"{ca_file}\", client-cert: \"{cert}\", client-key: \"{key}\" }}\n    health-check: {{ path: /healthz, interval: 100ms }}\n"
        ),
    )]);
    let client = reqwest::Client::new();
    let gw = Gateway::run(&yaml, &client).await;
    let peer = backend.addr().to_string();
    let healthy = format!("portcullis_upstream_healthy{{peer=\"{peer}\",route=\"probed\"}} 1");
    // Counted healthy once `healthy-threshold` probes in a row succeeded: polled until then (the
    // first success alone may be counted before the peer is marked healthy).
    let ok = |m: &str| {
        m.contains(&healthy)
            && m.lines().any(|l| {
                l.starts_with("portcullis_upstream_health_checks_total")
                    && l.contains(&format!("peer=\"{peer}\""))
                    && l.contains("result=\"success\"")
            })
    };
    let metrics = portcullis_testkit::wait::poll_text(500, || gw.metrics(), ok).await;
    assert!(ok(&metrics), "{metrics}");
    assert_eq!(gw.call("/probed/x", "unused").await.0, 200);
}
