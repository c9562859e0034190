//! Real HTTP servers on 127.0.0.1:0 for the load driver to hit: a hyper server that verifies
//! every token independently with jsonwebtoken (the oracle), and a raw one answering chunked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the hyper server answers.
#[derive(Clone, Copy)]
pub enum Mode {
    /// 200 for a token jsonwebtoken accepts, 401 otherwise.
    Verify,
    /// 200 for everything: a gateway that does not validate.
    AcceptAll,
    /// Like `Verify`, but every nth response on a connection says `Connection: close`.
    VerifyClosingEvery(u64),
}

/// What the oracle checks tokens against.
pub struct Oracle {
    pub key: DecodingKey,
    pub alg: Algorithm,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
}

impl Oracle {
    fn accepts(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return false;
        };
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return false;
        }
        let mut validation = Validation::new(self.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &validation).is_ok()
    }
}

/// A running server: its address and how many requests it answered.
pub struct Running {
    pub addr: SocketAddr,
    pub answered: Arc<AtomicU64>,
}

/// Starts the hyper server (bound before this returns, so it is ready).
pub async fn start(mode: Mode, oracle: Arc<Oracle>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (oracle, count) = (oracle.clone(), count.clone());
            let on_conn = Arc::new(AtomicU64::new(0));
            let service = service_fn(move |req: Request<Incoming>| {
                let n = on_conn.fetch_add(1, Ordering::Relaxed) + 1;
                count.fetch_add(1, Ordering::Relaxed);
                let ok = match mode {
                    Mode::AcceptAll => true,
                    Mode::Verify | Mode::VerifyClosingEvery(_) => oracle.accepts(&req),
                };
                let (status, body) = if ok {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::UNAUTHORIZED, r#"{"statusCode": 401}"#)
                };
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = status;
                if matches!(mode, Mode::VerifyClosingEvery(every) if n.is_multiple_of(every)) {
                    response
                        .headers_mut()
                        .insert(hyper::header::CONNECTION, "close".parse().unwrap());
                }
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Running { addr, answered }
}

/// A raw server that answers every request with 200 and a chunked body written in pieces.
pub async fn start_chunked() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Three small writes per response: without NODELAY, Nagle holds them for ~40 ms.
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let pieces: [&[u8]; 3] = [
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                            b"lo\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n",
                            b"0\r\nX-Trailer: t\r\n\r\n",
                        ];
                        for piece in pieces {
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                            let _ = stream.flush().await;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}
