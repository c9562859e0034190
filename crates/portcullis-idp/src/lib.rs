//! Dev token server (`portcullis idp`) and `portcullis token`. Independent of portcullis-auth on
//! purpose: a second implementation catches verifier bugs.
//!
//! Embedding (the demo, gateway tests):
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_idp::IdpError> {
//! let idp = portcullis_idp::start(portcullis_idp::IdpConfig::demo()).await?;
//! let token = idp.mint(&portcullis_idp::MintRequest::new("alice", "api://default"))?;
//! println!("{} {}", idp.issuer(), token);
//! idp.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod assertion;
mod cli;
mod config;
mod error;
mod grants;
mod keys;
mod obo;
mod profile;
mod server;
mod state;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cli::{run_idp, run_token, IdpArgs, TokenArgs};
pub use config::{
    AuthMethod, Client, GrantType, HttpsConfig, IdpConfig, KeyConfig, KeySource, Resource,
    SigningAlg, User,
};
pub use error::IdpError;
pub use keys::XMLDSIG_RSA_SHA512;
pub use profile::{sts, Profile};
pub use state::MintRequest;

/// A running token server.
#[derive(Debug)]
pub struct IdpHandle {
    idp: Arc<state::Idp>,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), IdpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| IdpError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| IdpError::Listen { addr, source })?;
    Ok((listener, bound))
}

/// The issuer after binding: `{port}` / `{https-port}` replaced; when none is configured,
/// `http://<http addr>/realm` (or `https://<https addr>/realm` without an http listener).
fn resolve_issuer(
    configured: Option<&str>,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
) -> String {
    let port = |a: Option<SocketAddr>| a.map_or_else(String::new, |a| a.port().to_string());
    match configured {
        Some(issuer) => issuer
            .replace("{https-port}", &port(https))
            .replace("{port}", &port(http.or(https))),
        None => match (http, https) {
            (Some(a), _) => format!("http://{a}/realm"),
            (None, Some(a)) => format!("https://{a}/realm"),
            (None, None) => "http://127.0.0.1/realm".into(),
        },
    }
}

/// Binds the listeners (port 0 allowed), loads or generates keys and certificates, and serves
/// until [`IdpHandle::shutdown`]. Must be called inside a tokio runtime.
pub async fn start(config: IdpConfig) -> Result<IdpHandle, IdpError> {
    let http = match config.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let https = match &config.https {
        Some(h) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(h)?);
            let (listener, addr) = bind(h.listen).await?;
            Some((listener, addr, acceptor))
        }
        None => None,
    };
    let http_addr = http.as_ref().map(|(_, a)| *a);
    let https_addr = https.as_ref().map(|(_, a, _)| *a);
    let issuer = resolve_issuer(config.issuer.as_deref(), http_addr, https_addr);
    let grace = config.rotation_grace;
    let idp = Arc::new(state::Idp::new(config, issuer)?);
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some((listener, _)) = http {
        tasks.push(tokio::spawn(server::serve(
            listener,
            idp.clone(),
            None,
            rx.clone(),
        )));
    }
    if let Some((listener, _, acceptor)) = https {
        tasks.push(tokio::spawn(server::serve(
            listener,
            idp.clone(),
            Some(acceptor),
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(prune_loop(idp.clone(), grace, rx)));
    tracing::info!(issuer = %idp.issuers.base, http = ?http_addr, https = ?https_addr, "dev token server listening");
    Ok(IdpHandle {
        idp,
        http_addr,
        https_addr,
        shutdown,
        tasks,
    })
}

/// Drops rotated-out keys once their grace period is over.
async fn prune_loop(idp: Arc<state::Idp>, grace: Duration, mut shutdown: watch::Receiver<bool>) {
    let period = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => idp.prune(),
        }
    }
}

impl IdpHandle {
    /// The bound http address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound https address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The issuer (`iss` of plain, keycloak and dotnet-sts tokens).
    pub fn issuer(&self) -> &str {
        &self.idp.issuers.base
    }

    /// The `iss` a profile's tokens carry (Entra forms use the tenant id).
    pub fn issuer_for(&self, profile: Profile) -> String {
        self.idp
            .issuers
            .for_profile(profile, &self.idp.config.tenant_id)
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// `{issuer}/jwks`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// `{issuer}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// The current JWKS document.
    pub fn jwks(&self) -> String {
        String::from_utf8_lossy(self.idp.ring().jwks()).into_owned()
    }

    /// Signs a token with the server's current key.
    pub fn mint(&self, req: &MintRequest) -> Result<String, IdpError> {
        self.idp.mint(req, state::now_unix())
    }

    /// Rotates the signing keys (as `POST /admin/rotate`); returns the active key ids.
    pub fn rotate(&self) -> Result<Vec<String>, IdpError> {
        self.idp.rotate()
    }

    /// Stops accepting connections and waits for the accept loops to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
