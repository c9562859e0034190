//! The admin listener: `/metrics` (Prometheus text), `/healthz` (live), `/readyz` (ready when the
//! proxy listeners are up and every policy's issuers have keys). A small pingora `ServeHttp` app on
//! the same server, so it shares the process, the shutdown and the metrics registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::KeyStore;

/// The admin app.
#[derive(Debug)]
pub struct Admin {
    /// Metrics to render.
    pub metrics: Metrics,
    /// Keys (readiness).
    pub keys: Arc<KeyStore>,
    /// Set once the proxy listeners accept connections.
    pub listeners_up: Arc<AtomicBool>,
    /// True once shutdown started: not ready any more, so load balancers stop sending.
    pub draining: tokio::sync::watch::Receiver<bool>,
}

fn text(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

impl Admin {
    fn ready(&self) -> bool {
        self.listeners_up.load(Ordering::Acquire)
            && !*self.draining.borrow()
            && self.keys.is_ready()
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const PLAIN: &str = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => text(StatusCode::OK, PLAIN, b"ok\n".to_vec()),
            "/readyz" if self.ready() => text(StatusCode::OK, PLAIN, b"ready\n".to_vec()),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                b"not ready\n".to_vec(),
            ),
            _ => text(StatusCode::NOT_FOUND, PLAIN, b"not found\n".to_vec()),
        }
    }
}
