//! The admin listener: `/metrics` (Prometheus text), `/healthz` (live), `/readyz` (ready when the
//! proxy listeners are up, every policy's issuers have keys and the telemetry exporter, if any, has
//! started), `POST /reload` (reload the config file now; 200 with the new generation, 422 with the
//! problems), `/trace/<id>` (the explanation of a traced request, see `server.trace`, as JSON). A
//! small pingora `ServeHttp` app on
//! the same server, so it shares the process, the shutdown and the metrics registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::reload::{Current, ReloadHandle};

/// The admin app.
#[derive(Debug)]
pub struct Admin {
    /// Metrics to render.
    pub metrics: Metrics,
    /// The running config (its key store answers readiness).
    pub current: Current,
    /// Reload trigger.
    pub reload: ReloadHandle,
    /// Set once the proxy listeners accept connections.
    pub listeners_up: Arc<AtomicBool>,
    /// True once shutdown started: not ready any more, so load balancers stop sending.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// Explanations of traced requests (`server.trace`): `GET /trace/<id>`.
    pub traces: Arc<crate::trace::Traces>,
    /// Tracing, when configured: not ready until its exporter has started.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
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
            && self.current.load().keys.is_ready()
            && self.telemetry.as_ref().is_none_or(|t| t.started())
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const PLAIN: &str = "text/plain; charset=utf-8";
        let req = session.req_header();
        if req.uri.path() == "/reload" {
            if req.method != http::Method::POST {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    PLAIN,
                    b"use POST\n".to_vec(),
                );
            }
            return match self.reload.reload().await {
                Ok(generation) => text(
                    StatusCode::OK,
                    PLAIN,
                    format!("reloaded: generation {generation}\n").into_bytes(),
                ),
                Err(problems) => text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    PLAIN,
                    (problems.join("\n") + "\n").into_bytes(),
                ),
            };
        }
        if let Some(id) = req.uri.path().strip_prefix("/trace/") {
            return match self.traces.get(id) {
                Some(json) => text(StatusCode::OK, "application/json", json.as_bytes().to_vec()),
                None => text(
                    StatusCode::NOT_FOUND,
                    PLAIN,
                    b"no such trace (unknown, or older than server.trace.ttl)\n".to_vec(),
                ),
            };
        }
        match req.uri.path() {
            "/metrics" => {
                crate::health::sync_gauges(
                    &self.current.load().routes,
                    &self.metrics.upstream_healthy,
                );
                self.metrics.ready.set(i64::from(self.ready()));
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
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
