//! How the gateway talks TLS to a route's https upstreams (`upstream-tls`), and which `Host` the
//! backend sees (`host-header`).
//!
//! Every file is read and checked here, at load, so that a bad bundle or a key that does not match
//! its certificate is a `check` error at its position, never a failed handshake (or a panic in
//! pingora, which unwraps certificate parsing) on the first request. The model carries DER bytes;
//! the proxy builds pingora's types from them.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::model::Upstream;
use crate::walk::{self, Cx, Fields};
use crate::yaml::Node;

/// `upstream-tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// `ca`: the certificates (DER) trusted for the upstreams instead of the platform's roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// `client-cert` + `client-key`: the chain (DER, leaf first) and key (DER) the gateway
    /// presents to upstreams that ask for a client certificate (mTLS).
    pub client: Option<ClientIdentity>,
    /// `sni`: the server name sent and verified instead of the upstream URL's host.
    pub sni: Option<String>,
    /// `verify` (default true): `false` accepts any certificate (development only; `check` warns).
    pub verify: bool,
}

/// A client certificate chain and its private key, as DER.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8, PKCS#1 or SEC1 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// `host-header`: the `Host` the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The upstream URL's `host[:port]` (the default: what App Service, ingress controllers and
    /// any backend behind a host-routed front end need, and what APIM sends).
    #[default]
    Upstream,
    /// The client's `Host`, as received.
    Client,
    /// This value.
    Value(String),
}

/// Reads `host-header`.
pub(crate) fn host_header(cx: &mut Cx, node: &Node) -> Option<HostHeader> {
    let text = walk::non_empty(cx, node, "host-header")?;
    Some(match text {
        "upstream" => HostHeader::Upstream,
        "client" => HostHeader::Client,
        other => {
            let ok = http::HeaderValue::from_str(other).is_ok()
                && !other.contains(['/', ' ', '@'])
                && url::Url::parse(&format!("http://{other}/")).is_ok_and(|u| u.has_host());
            if !ok {
                cx.error(
                    node.pos,
                    format!(
                        "`host-header` is `upstream`, `client` or a host[:port], found `{other}`"
                    ),
                );
                return None;
            }
            HostHeader::Value(other.to_owned())
        }
    })
}

/// Reads `upstream-tls` for a route whose upstreams are `upstreams`.
pub(crate) fn upstream_tls(
    cx: &mut Cx,
    node: &Node,
    upstreams: &[Upstream],
) -> Option<UpstreamTls> {
    let f = Fields::new(
        cx,
        node,
        "upstream-tls",
        &["ca", "client-cert", "client-key", "sni", "verify"],
    )?;
    let errors = cx.errors();
    if let Some(plain) = upstreams.iter().find(|u| !u.tls) {
        cx.error(
            f.pos,
            format!(
                "`upstream-tls` is for https upstreams, but `{}` is http",
                plain.url
            ),
        );
    }
    let ca = f.get("ca").and_then(|n| {
        let bytes = read(cx, n, "ca")?;
        let certs = certificates(cx, n, "ca", &bytes)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            if let Err(e) = roots.add(CertificateDer::from(c.as_slice())) {
                cx.error(
                    n.pos,
                    format!("`ca`: a certificate cannot be a trust anchor: {e}"),
                );
                return None;
            }
        }
        Some(certs)
    });
    let client = match (f.get("client-cert"), f.get("client-key")) {
        (Some(c), Some(k)) => client_identity(cx, c, k),
        (Some(c), None) => {
            cx.error(
                c.pos,
                "`client-cert` needs `client-key` (its private key, PEM)",
            );
            None
        }
        (None, Some(k)) => {
            cx.error(
                k.pos,
                "`client-key` needs `client-cert` (the certificate chain, PEM)",
            );
            None
        }
        (None, None) => None,
    };
    let sni = f.get("sni").and_then(|n| {
        let name = walk::non_empty(cx, n, "sni")?;
        match rustls::pki_types::ServerName::try_from(name) {
            Ok(_) => Some(name.to_ascii_lowercase()),
            Err(_) => {
                cx.error(
                    n.pos,
                    format!("`sni` must be a DNS name or an IP address, found `{name}`"),
                );
                None
            }
        }
    });
    let verify = match f.get("verify") {
        Some(n) => {
            let verify = walk::boolean(cx, n, "verify").unwrap_or(true);
            if !verify {
                cx.warning(
                    n.pos,
                    "upstream-tls `verify: false`: ANY certificate is accepted, so anyone on the path to the upstream can read and change the traffic (tokens and identity headers included); for development only: give the upstream's CA with `ca` instead",
                );
            }
            verify
        }
        None => true,
    };
    let tls = UpstreamTls {
        ca,
        client,
        sni,
        verify,
    };
    (cx.errors() == errors).then_some(tls)
}

fn read(cx: &mut Cx, node: &Node, key: &str) -> Option<Vec<u8>> {
    let path = walk::non_empty(cx, node, key)?;
    cx.read_file(node, &format!("upstream-tls {key}"), path)
}

/// Every certificate of a PEM bundle, checked to parse as X.509.
fn certificates(cx: &mut Cx, node: &Node, key: &str, pem: &[u8]) -> Option<Vec<Vec<u8>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = match certs {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            cx.error(node.pos, format!("`{key}` holds no PEM certificate"));
            return None;
        }
        Err(e) => {
            cx.error(
                node.pos,
                format!("`{key}` is not a PEM certificate bundle: {e}"),
            );
            return None;
        }
    };
    for c in &certs {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            cx.error(
                node.pos,
                format!("`{key}`: a certificate does not parse: {e}"),
            );
            return None;
        }
    }
    Some(certs.into_iter().map(|c| c.to_vec()).collect())
}

fn client_identity(cx: &mut Cx, cert: &Node, key: &Node) -> Option<ClientIdentity> {
    let chain_pem = read(cx, cert, "client-cert");
    let key_pem = read(cx, key, "client-key");
    let chain = certificates(cx, cert, "client-cert", &chain_pem?)?;
    let key_der = match PrivateKeyDer::from_pem_slice(&key_pem?) {
        Ok(k) => k,
        Err(e) => {
            cx.error(
                key.pos,
                format!("`client-key` is not a PEM private key: {e}"),
            );
            return None;
        }
    };
    // The key must be the leaf certificate's: rustls checks it when the identity is set.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let checked = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_client_auth_cert(
                    chain
                        .iter()
                        .map(|c| CertificateDer::from(c.clone()))
                        .collect(),
                    key_der.clone_key(),
                )
        });
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(e)) | Err(e) => {
            cx.error(
                key.pos,
                format!("`client-key` does not go with `client-cert`: {e}"),
            );
            return None;
        }
    }
    Some(ClientIdentity {
        chain,
        key: key_der.secret_der().to_vec(),
    })
}
