//! The https listener's certificate: read from files, or (with `generate: true`) a dev CA and a
//! certificate for 127.0.0.1/localhost generated once and written to disk, so client libraries
//! that insist on https (MSAL) can be pointed at the CA file.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::HttpsConfig;
use crate::error::IdpError;
use crate::keys::write_private;

fn tls_err(e: impl std::fmt::Display) -> IdpError {
    IdpError::Key(format!("tls: {e}"))
}

/// Writes a CA, a leaf certificate for 127.0.0.1/localhost/::1 signed by it, and its key.
fn generate(config: &HttpsConfig) -> Result<(), IdpError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis dev token server CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut leaf_params = CertificateParams::new(names).map_err(tls_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(tls_err)?;
    let write = |path: &std::path::Path, text: &str| {
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
        }
        write_private(path, text).map_err(|e| tls_err(format!("{}: {e}", path.display())))
    };
    write(&config.ca_file, &ca_cert.pem())?;
    write(
        &config.cert_file,
        &format!("{}{}", leaf.pem(), ca_cert.pem()),
    )?;
    write(&config.key_file, &leaf_key.serialize_pem())?;
    tracing::info!(ca = %config.ca_file.display(), "generated https certificate; trust this CA file");
    Ok(())
}

/// The rustls server config for the https listener (generating the files first when asked).
pub fn server_config(config: &HttpsConfig) -> Result<Arc<rustls::ServerConfig>, IdpError> {
    if config.generate && !(config.cert_file.exists() && config.key_file.exists()) {
        generate(config)?;
    }
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(format!("{}: {e}", config.cert_file.display())))?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| tls_err(format!("{}: {e}", config.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
