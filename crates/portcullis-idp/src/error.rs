//! The crate's error type: configuration, key material and I/O problems, each with the context a
//! user needs to fix them (request-level OAuth errors live in `grants`, they are not failures).

/// Errors starting or configuring the dev token server.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// idp.yaml is invalid.
    #[error("invalid idp config: {0}")]
    Config(String),
    /// A key or certificate could not be read, generated or written.
    #[error("key material: {0}")]
    Key(String),
    /// A listener could not be bound or served.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A token could not be signed.
    #[error("signing failed: {0}")]
    Sign(String),
}
