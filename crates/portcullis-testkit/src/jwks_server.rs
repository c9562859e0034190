//! A small JWKS and OpenID discovery server for key-store and gateway tests.
//!
//! Why it exists: the key store's promises (rotation without restart, coalesced refetch, stale on
//! error, hostile documents) can only be shown against a real identity-provider endpoint whose
//! behaviour the test changes at run time. This is a real HTTP/1.1 server (hyper) on
//! `127.0.0.1:0`, on its own thread and runtime (so it keeps answering whatever the test's runtime
//! does), serving:
//! - [`DISCOVERY_PATH`]: `{"issuer": <base_url>, "jwks_uri": <base_url>/jwks}` (issuer settable);
//! - [`JWKS_PATH`]: the JWKS of the [`TestKey`]s given to [`JwksServer::set_keys`].
//!
//! Each path's status, body (fixed, or a generated body of any size streamed in chunks), delay,
//! `Cache-Control` and "never answer" can be changed with [`JwksServer::update`]; requests are
//! counted per path; [`JwksServer::stop_listening`] / [`JwksServer::resume_listening`] take the
//! whole server down and back up on the same port. [`TestKey`] generates RSA and EC keys and
//! signs tokens (also over exact header and payload text, for hostile-token tests).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_testkit::jwks_server::{JwksServer, TestKey, JWKS_PATH};
//! let server = JwksServer::start().await?;
//! let key = TestKey::rsa("k1")?;
//! server.set_keys(&[&key]);
//! let token = key.sign(&serde_json::json!({"iss": server.issuer(), "exp": 4102444800u64}))?;
//! assert_eq!(server.hits(JWKS_PATH), 0);
//! # let _ = token; Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{jwk::Jwk, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the JWKS.
pub const JWKS_PATH: &str = "/jwks";

/// A response body.
#[derive(Debug, Clone)]
pub enum EndpointBody {
    /// These bytes.
    Fixed(Bytes),
    /// `len` bytes of filler, produced chunk by chunk as the client reads (never held in memory).
    /// `announce_length: false` sends it chunked, without `Content-Length`.
    Filler {
        /// Total size in bytes.
        len: u64,
        /// Send `Content-Length`.
        announce_length: bool,
    },
    /// `len` bytes in all: JSON whitespace, then `json` last, so the body is valid JSON of any
    /// size (a size limit is then the only reason to refuse it). Produced like [`Self::Filler`].
    PaddedJson {
        /// The document, sent after the padding.
        json: Bytes,
        /// Total size in bytes (at least `json.len()`).
        len: u64,
        /// Send `Content-Length`.
        announce_length: bool,
    },
}

/// How one path answers.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: EndpointBody,
    /// `Cache-Control` value, if any.
    pub cache_control: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Never answer (the connection stays open until the server stops).
    pub hang: bool,
    /// Extra response headers (for example `Location` with status 302).
    pub headers: Vec<(String, String)>,
}

impl Endpoint {
    /// 200 with this JSON body, no delay, no Cache-Control.
    pub fn json(body: impl Into<Bytes>) -> Endpoint {
        Endpoint {
            status: 200,
            body: EndpointBody::Fixed(body.into()),
            cache_control: None,
            delay: Duration::ZERO,
            hang: false,
            headers: Vec::new(),
        }
    }
}

/// Errors of the test server and test keys.
#[derive(Debug, thiserror::Error)]
pub enum JwksServerError {
    /// Binding or starting the server thread failed.
    #[error("jwks server: {0}")]
    Io(#[from] std::io::Error),
    /// Key generation or encoding failed.
    #[error("test key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

#[derive(Debug, Default)]
struct State {
    endpoints: HashMap<String, Endpoint>,
    hits: HashMap<String, u64>,
}

/// A running server thread.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The JWKS / discovery server. Stops when dropped.
#[derive(Debug)]
pub struct JwksServer {
    /// `http://127.0.0.1:<port>` (no trailing slash); also the default issuer.
    pub base_url: String,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    running: Mutex<Option<Running>>,
}

impl JwksServer {
    /// Bind `127.0.0.1:0` and serve: discovery with issuer = `base_url`, an empty JWKS.
    pub async fn start() -> Result<JwksServer, JwksServerError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = JwksServer {
            base_url: format!("http://{addr}"),
            addr,
            state: Arc::default(),
            running: Mutex::new(None),
        };
        server.set_issuer(&server.base_url.clone());
        server.set_jwks_body(r#"{"keys":[]}"#);
        server.serve(listener)?;
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer the discovery document names by default (`base_url`).
    pub fn issuer(&self) -> &str {
        &self.base_url
    }

    /// URL of the discovery document.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.base_url)
    }

    /// URL of the JWKS.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base_url)
    }

    /// Publish these keys' public JWKs at [`JWKS_PATH`] (status 200, other settings kept).
    pub fn set_keys(&self, keys: &[&TestKey]) {
        self.set_jwks_body(jwks(keys).to_string());
    }

    /// Serve this body at [`JWKS_PATH`] (status 200, other settings kept).
    pub fn set_jwks_body(&self, body: impl Into<Bytes>) {
        self.set_body(JWKS_PATH, EndpointBody::Fixed(body.into()));
    }

    /// Serve a discovery document naming `issuer` and this server's JWKS URL.
    pub fn set_issuer(&self, issuer: &str) {
        let doc = json!({
            "issuer": issuer,
            "jwks_uri": self.jwks_url(),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        self.set_body(DISCOVERY_PATH, EndpointBody::Fixed(doc.to_string().into()));
    }

    fn set_body(&self, path: &str, body: EndpointBody) {
        self.update(path, |ep| {
            ep.status = 200;
            ep.body = body;
        });
    }

    /// Change how `path` answers (a path not configured yet starts as an empty 200 JSON body).
    pub fn update(&self, path: &str, change: impl FnOnce(&mut Endpoint)) {
        let mut state = self.lock();
        let ep = state
            .endpoints
            .entry(path.to_owned())
            .or_insert_with(|| Endpoint::json(Bytes::new()));
        change(ep);
    }

    /// Requests received for `path` so far.
    pub fn hits(&self, path: &str) -> u64 {
        self.lock().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received so far on any path (a server that must never be contacted checks 0).
    pub fn total_hits(&self) -> u64 {
        self.lock().hits.values().sum()
    }

    /// Stop listening: new connections are refused and open ones are closed (the identity
    /// provider is down). Hit counters and endpoint settings are kept.
    pub fn stop_listening(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Listen again on the same address after [`JwksServer::stop_listening`].
    pub fn resume_listening(&self) -> Result<(), JwksServerError> {
        self.stop_listening();
        let listener = TcpListener::bind(self.addr)?;
        self.serve(listener)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&self, listener: TcpListener) -> Result<(), JwksServerError> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let state = self.state.clone();
        let thread = std::thread::Builder::new()
            .name("jwks-server".into())
            .spawn(move || runtime.block_on(accept_loop(listener, state, stopped)))?;
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Running { stop, thread });
        Ok(())
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(running) = running {
            // The thread ends on its own; not joined so dropping in async code never blocks.
            let _ = running.stop.send(());
        }
    }
}

/// Accept until told to stop; dropping the runtime afterwards closes every connection.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type ServerBody = Either<Full<Bytes>, Filler>;

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<ServerBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let endpoint = {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        *st.hits.entry(path.clone()).or_default() += 1;
        st.endpoints.get(&path).cloned()
    };
    let Some(ep) = endpoint else {
        return Ok(plain(StatusCode::NOT_FOUND));
    };
    if !ep.delay.is_zero() {
        tokio::time::sleep(ep.delay).await;
    }
    if ep.hang {
        std::future::pending::<()>().await;
    }
    let body = match ep.body {
        EndpointBody::Fixed(bytes) => Either::Left(Full::new(bytes)),
        EndpointBody::Filler {
            len,
            announce_length,
        } => Either::Right(Filler {
            remaining: len,
            announce_length,
            tail: Bytes::new(),
        }),
        EndpointBody::PaddedJson {
            json,
            len,
            announce_length,
        } => Either::Right(Filler {
            remaining: len.max(json.len() as u64),
            announce_length,
            tail: json,
        }),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(ep.status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let extra = ep.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let cache_control = ep.cache_control.as_deref().map(|v| ("cache-control", v));
    for (name, value) in extra.chain(cache_control) {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    Ok(resp)
}

fn plain(status: StatusCode) -> Response<ServerBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

const FILL_CHUNK: usize = 64 * 1024;
static FILL: [u8; FILL_CHUNK] = [b' '; FILL_CHUNK];

/// A body of `remaining` spaces, produced one 64 KiB chunk per poll (hyper polls only when the
/// socket can take more, so a client that stops reading stops the producer too).
#[derive(Debug)]
pub struct Filler {
    remaining: u64,
    announce_length: bool,
    /// Sent last (counted in `remaining`).
    tail: Bytes,
}

impl http_body::Body for Filler {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let tail = self.tail.len() as u64;
        if self.remaining <= tail {
            self.remaining = 0;
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut self.tail)))));
        }
        let n = (self.remaining - tail).min(FILL_CHUNK as u64);
        self.remaining -= n;
        let chunk = Bytes::from_static(&FILL[..n as usize]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.announce_length {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A signing key generated for a test, with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    /// The kid published in the JWKS and put in token headers.
    pub kid: String,
    /// Signing algorithm (RS256 or ES256).
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    public_der: Vec<u8>,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// A fresh RSA 2048 key signing RS256.
    pub fn rsa(kid: &str) -> Result<TestKey, JwksServerError> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        let pkcs8 = pair
            .as_der()
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let public_der = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_der()
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        Self::from_encoding(kid, Algorithm::RS256, encoding, public_der.as_ref())
    }

    /// A fresh EC P-256 key signing ES256.
    pub fn ec_p256(kid: &str) -> Result<TestKey, JwksServerError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let public_der = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_der()
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        Self::from_encoding(kid, Algorithm::ES256, encoding, public_der.as_ref())
    }

    fn from_encoding(
        kid: &str,
        alg: Algorithm,
        encoding: EncodingKey,
        public_der: &[u8],
    ) -> Result<TestKey, JwksServerError> {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg)?)
            .map_err(|e| JwksServerError::Key(e.to_string()))?;
        if let Some(obj) = jwk.as_object_mut() {
            obj.insert("kid".into(), Value::String(kid.to_owned()));
            obj.insert("use".into(), Value::String("sig".into()));
        }
        Ok(TestKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
            public_der: public_der.to_vec(),
        })
    }

    /// The public key as DER `SubjectPublicKeyInfo` (what a `PUBLIC KEY` PEM wraps). Forged-token
    /// tests use it as an HMAC secret (the classic RS256 -> HS256 confusion).
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The raw signature of `message` with this key under `alg` (which must fit the key type:
    /// RS*/PS* for RSA keys, ES256 for P-256). Hostile-token tests build their own headers and
    /// payloads and need signatures over exactly those bytes.
    pub fn signature(&self, message: &[u8], alg: Algorithm) -> Result<Vec<u8>, JwksServerError> {
        let b64 = jsonwebtoken::crypto::sign(message, &self.encoding, alg)?;
        URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|e| JwksServerError::Key(e.to_string()))
    }

    /// A compact JWS with this exact header and payload text (no re-serialisation, so duplicate
    /// members, odd spacing and unknown fields survive), signed with this key's own algorithm.
    pub fn sign_raw(&self, header: &str, payload: &str) -> Result<String, JwksServerError> {
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        );
        let sig = self.signature(input.as_bytes(), self.alg)?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    /// The public JWK (`kty`, key material, `alg`, `kid`, `use: sig`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A compact JWS over `claims`, with this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> Result<String, JwksServerError> {
        self.sign_with_kid(Some(&self.kid), claims)
    }

    /// A compact JWS over `claims` with the given header `kid` (or none).
    pub fn sign_with_kid(
        &self,
        kid: Option<&str>,
        claims: &Value,
    ) -> Result<String, JwksServerError> {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// Unpadded base64url, the JOSE encoding.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode unpadded base64url (`None` when it is not).
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// PEM text (`-----BEGIN <label>-----`, 64-column base64, trailing newline) around DER bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// An HMAC signature (HS256/384/512) of `message` under `secret`, for forged HS* tokens.
pub fn hmac_signature(
    secret: &[u8],
    message: &[u8],
    alg: Algorithm,
) -> Result<Vec<u8>, JwksServerError> {
    let b64 = jsonwebtoken::crypto::sign(message, &EncodingKey::from_secret(secret), alg)?;
    URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|e| JwksServerError::Key(e.to_string()))
}

/// `{"keys": [...]}` with these keys' public JWKs.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>() })
}
