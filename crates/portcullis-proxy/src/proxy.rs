//! The pingora `ProxyHttp` implementation: the request path of the gateway.
//!
//! Hooks used, in the order pingora calls them:
//! - `new_ctx`: a per-request [`Ctx`] (start instant, in-flight guard for graceful shutdown, and
//!   the config [`Generation`] the request uses to its end: a reload swaps the generation for new
//!   requests while this one finishes on the old; see `reload.rs`).
//! - `request_filter`: request id, the header-size limit (431, see `respond.rs`), the request's
//!   canonical form (method, host, target: 400 when it has none; see `routes.rs`), route match
//!   (and, for a templated route, its URL-template parameters), the subscription key check of a
//!   route with `subscription:` (which also chooses the policy: a product key runs its product's),
//!   identity-header stripping (every route), the policy's evaluation, identity headers set from the verified claims. A rejection (or no route)
//!   is written here with keep-alive intact and `Ok(true)` ends the request: no upstream is chosen,
//!   the backend never sees it.
//! - `upstream_peer`: round robin over the route's resolved peers, skipping those marked down, with
//!   the route's connect and read timeouts; or the backend `set-backend-service` chose.
//! - `fail_to_connect`: passive health (mark the peer down) and a retry on another peer.
//! - `upstream_request_filter`: path rewrite (rewrite-uri, else strip/rewrite-prefix; then the
//!   backend's base path), the edited query, X-Forwarded-*, the token dropped per policy.
//! - `response_filter`: X-Request-Id and the headers every answer carries (CORS, remaining calls)
//!   on the response, then the policy's outbound statements (also run on `return-response` and
//!   `mock-response` answers, never on the gateway's own error answers).
//! - `fail_to_proxy`: 502/504 (and pingora's other error statuses) with the JSON body shape.
//! - `suppress_error_log`: a client that hung up mid-request is logged by `logging`, not as an ERROR.
//! - `logging`: one line and one counter per request, whatever path it took.
//!
//! With `server.telemetry`, `request_filter` also starts the request's span (continuing the
//! client's W3C trace context), `upstream_request_filter` starts the upstream call's span and
//! gives the backend its `traceparent`, and `logging` ends both (see `telemetry.rs`). Without it,
//! each of those is one `Option` test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use portcullis_auth::{Policy, Unforwardable, Verified};
use portcullis_config::{BackendId, PolicyId};
use portcullis_config::{HostHeader, UpstreamProtocol};
use portcullis_route::headers;

use crate::identity::{
    ensure_request_id, remove_token, set_forwarded, wire, Connection, X_REQUEST_ID,
};
use crate::limits::Store;
use crate::metrics::{self, Metrics};
use crate::pipeline::{self, Exchange, Pending};
use crate::reload::{Current, Generation};
use crate::respond::{
    headers_too_large, proxy_failure_message, render, send, subscription_key_invalid,
    subscription_key_missing, write, Answer, HEADERS_TOO_LARGE_MESSAGE, NO_ROUTE_MESSAGE,
    REASON_HEADERS_TOO_LARGE,
};
use crate::routes::{with_base, Route};
use crate::subscriptions::Verdict;
use crate::telemetry::{Outcome, RequestTrace, Telemetry, TRACEPARENT, TRACESTATE};

/// Everything the request path reads; shared by all workers.
#[derive(Debug)]
pub struct Gateway {
    /// Routes, policies, identity headers, keys and token cache of the running config; swapped by
    /// a reload, loaded once per request.
    pub current: Current,
    /// Metrics.
    pub metrics: Metrics,
    /// Requests in flight (graceful shutdown waits for zero).
    pub inflight: Arc<AtomicUsize>,
    /// Rate-limit and quota counters, in process or on Redis (`server.rate-limit-store`, built at
    /// start; they outlive reloads: statement ids are stable).
    pub limits: Arc<Store>,
    /// Explanations of traced requests (`server.trace`), read by the admin listener.
    pub traces: Arc<crate::trace::Traces>,
    /// OpenTelemetry tracing (`server.telemetry`); `None`: off, nothing traced, trace headers
    /// passed through untouched.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// Decrements the in-flight count when the request's context is dropped, whatever path it took.
#[derive(Debug)]
pub struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    start: Instant,
    _inflight: InflightGuard,
    /// The config generation this request uses from start to end.
    pub(crate) generation: Arc<Generation>,
    pub(crate) route: Option<usize>,
    request_id: Option<HeaderValue>,
    /// Why the request failed (or would have, under report-only); `None`: it did not.
    pub(crate) reason: Option<&'static str>,
    /// Status of a response the gateway wrote itself.
    status: Option<u16>,
    peer: usize,
    tried: u64,
    host: Option<HeaderValue>,
    /// Headers every answer to this request carries, the backend's or the gateway's (CORS,
    /// remaining calls).
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Counts waiting for the response (increment conditions, bandwidth).
    pub(crate) pending: Vec<Pending>,
    /// The verified identity, once validate-jwt has passed.
    pub(crate) identity: Option<Verified>,
    /// The chosen route's URL-template captures: name, canonical (percent-encoded) text. Empty
    /// (no allocation) for a route without parameters.
    pub(crate) params: Vec<(Arc<str>, String)>,
    /// The request's variables (`set-variable`); empty unless the policy sets some.
    pub(crate) vars: crate::values::Vars,
    /// `set-backend-service`: the backend this request goes to instead of the route's upstreams.
    pub(crate) backend: Option<BackendId>,
    /// What `rewrite-uri` / `set-query-parameter` made of the target (`None`: untouched).
    pub(crate) target: Option<Box<TargetEdit>>,
    /// Inbound `set-header`s of `X-Forwarded-*` and the like, applied after the gateway's own.
    pub(crate) forwarding_overrides: Vec<pipeline::ForwardingOverride>,
    /// What the request path decided, recorded for `portcullis explain` or a traced request;
    /// `None` for every other request (each recording point is then one check).
    pub(crate) trace: Option<Box<crate::trace::Recorder>>,
    /// The policy this request runs: the route's, or the one its subscription key chose.
    pub(crate) policy: Option<PolicyId>,
    /// The subscription whose key was accepted (index into the generation's subscriptions).
    pub(crate) subscription: Option<usize>,
    /// The request's OpenTelemetry spans (`server.telemetry` only).
    pub(crate) otel: Option<Box<RequestTrace>>,
}

impl Ctx {
    /// A fresh context on `generation`, counted in `inflight` until dropped.
    pub(crate) fn new(generation: Arc<Generation>, inflight: &Arc<AtomicUsize>) -> Ctx {
        inflight.fetch_add(1, Ordering::Relaxed);
        Ctx {
            start: Instant::now(),
            _inflight: InflightGuard(inflight.clone()),
            generation,
            route: None,
            request_id: None,
            reason: None,
            status: None,
            peer: 0,
            tried: 0,
            host: None,
            response_headers: Vec::new(),
            pending: Vec::new(),
            identity: None,
            params: Vec::new(),
            vars: Vec::new(),
            backend: None,
            target: None,
            forwarding_overrides: Vec::new(),
            trace: None,
            policy: None,
            subscription: None,
            otel: None,
        }
    }
}

/// The upstream target as the pipeline's statements left it.
#[derive(Debug, Default)]
pub(crate) struct TargetEdit {
    /// The canonical path `rewrite-uri` produced (replaces strip/rewrite-prefix); `None`: the
    /// request's.
    pub(crate) path: Option<String>,
    /// The query now (`None`: no query).
    pub(crate) query: Option<String>,
}

impl Generation {
    fn route(&self, ctx: &Ctx) -> Option<&Route> {
        ctx.route.and_then(|i| self.routes.get(i))
    }

    /// The policy the request runs (see [`Ctx::policy`]).
    fn request_policy(&self, ctx: &Ctx) -> Option<&Arc<Policy>> {
        self.policy(ctx.policy?).map(|p| &p.policy)
    }
}

impl Gateway {
    /// Write an answer of the gateway's own (the one renderer, `respond::send`), with the headers
    /// this request's answers carry, and record its status and reason. `Ok(true)`: the request
    /// ends here (pingora's `request_filter` contract).
    /// A `return-response` answer is a response of the policy's: its outbound statements run on
    /// it, as on the backend's.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, answer: Answer) -> Result<bool> {
        if ctx.trace.is_some() {
            self.keep_trace(ctx, Some(&answer));
        }
        ctx.reason = Some(answer.reason);
        ctx.status = Some(answer.status);
        let from_statement = answer.from_statement;
        let (mut header, body) = render(answer, &ctx.response_headers, ctx.request_id.as_ref())?;
        if from_statement {
            let peer = pipeline::peer(session);
            pipeline::outbound(self, session.req_header(), peer, ctx, &mut header);
        }
        write(session, header, body).await?;
        Ok(true)
    }

    /// The request's decision up to choosing the upstream, on the request alone (no session): the
    /// request id, a traced request's key, the header-size limit, identity-header stripping,
    /// the canonical form and the route (400 / 404), the URL-template parameters, then the
    /// policy's pipeline. `Some`: the answer the request ends with. The proxy's `request_filter`
    /// is this; `portcullis explain` calls it too, with a recorder in `ctx`.
    pub(crate) async fn decide(
        &self,
        x: &mut Exchange<'_>,
        ctx: &mut Ctx,
    ) -> Result<Option<Answer>> {
        let id = ensure_request_id(x.req)?;
        if let Some(key) = &ctx.generation.trace {
            // The trace header is taken off every request, whoever sent it.
            if key.take(x.req) && ctx.trace.is_none() {
                start_trace(x.req, ctx);
            }
        }
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.explanation.request.request_id = id.to_str().ok().map(str::to_owned);
        }
        ctx.request_id = Some(id);
        if headers_too_large(x.req) {
            if let Some(t) = ctx.trace.as_deref_mut() {
                t.failed(
                    "request headers",
                    REASON_HEADERS_TOO_LARGE,
                    "the headers total more than 64 KiB",
                    None,
                );
            }
            let answer = Answer::json(431, REASON_HEADERS_TOO_LARGE, HEADERS_TOO_LARGE_MESSAGE);
            return Ok(Some(answer));
        }
        ctx.generation.identity.strip(x.req);
        let recorded = ctx.trace.as_deref_mut().map(|t| &mut t.explanation);
        match ctx.generation.routes.route_request(x.req, recorded) {
            Ok(route) => ctx.route = route,
            Err(refusal) => {
                if let Some(t) = ctx.trace.as_deref_mut() {
                    t.failed("request target", refusal.reason(), refusal.message(), None);
                }
                let answer = Answer::json(refusal.status(), refusal.reason(), refusal.message());
                return Ok(Some(answer));
            }
        }
        let req = &*x.req;
        ctx.host = req.headers.get(http::header::HOST).cloned();
        let Some(templated) = ctx.generation.route(ctx).map(Route::templated) else {
            let answer = Answer::json(404, metrics::REASON_NO_ROUTE, NO_ROUTE_MESSAGE);
            return Ok(Some(answer));
        };
        if let Some(answer) = self.check_subscription(req, ctx) {
            return Ok(Some(answer));
        }
        if templated {
            // Only the chosen route's parameters, and only for a templated route.
            let path = req.uri.path();
            ctx.params = ctx
                .generation
                .route(ctx)
                .map(|r| r.captures(path))
                .unwrap_or_default();
        }
        if ctx.trace.is_some() {
            self.note_route(ctx);
        }
        pipeline::inbound(self, x, ctx).await
    }

    /// The chosen route and its policy, in the recorder.
    fn note_route(&self, ctx: &mut Ctx) {
        let generation = ctx.generation.clone();
        let route = generation.route(ctx);
        let policy = generation.request_policy(ctx);
        let params: Vec<String> = ctx.params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.explanation.route = route.map(|r| r.name.clone());
            t.explanation.policy = policy.map(|p| p.name.clone());
            if !params.is_empty() {
                t.step(
                    "url template",
                    portcullis_explain::Verdict::Pass,
                    format!("parameters {}", params.join(", ")),
                );
            }
        }
    }

    /// A traced request's explanation, finished with its answer (`None`: forwarded), kept for
    /// `/trace/<id>` before the response leaves (so a client reading it at once finds it).
    fn keep_trace(&self, ctx: &mut Ctx, answer: Option<&Answer>) {
        if let Some(mut t) = ctx.trace.take() {
            t.finish(answer, ctx.reason);
            self.traces.put(std::mem::take(&mut t.id), &t.explanation);
        }
    }

    /// A forward-claims header left unset because its claim cannot be carried unambiguously.
    pub(crate) fn claim_refused(
        &self,
        route: &Route,
        policy: &Policy,
        header: &HeaderName,
        why: Unforwardable,
    ) {
        self.metrics
            .claim_headers_refused
            .with_label_values(&[policy.name.as_str(), header.as_str(), why.reason()])
            .inc();
        tracing::warn!(
            route = %route.name,
            policy = %policy.name,
            header = %header,
            reason = why.reason(),
            "claim not forwarded: its value cannot be carried unambiguously in a header"
        );
    }
}

impl Gateway {
    /// The subscription key check of the request's route (before its policy, as in APIM): sets
    /// the policy the request runs (the route's, or the product's its key belongs to) and the
    /// subscription; `Some`: the 401. Never logs the key, only the subscription's name.
    fn check_subscription(&self, req: &RequestHeader, ctx: &mut Ctx) -> Option<Answer> {
        let generation = ctx.generation.clone();
        let route = generation.route(ctx)?;
        ctx.policy = route.policy;
        let check = route.subscription.as_ref()?;
        let preflight = route.keyless_cors && crate::cors::preflight_method(req).is_some();
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.hide_query_parameter(check.query_name());
        }
        let verdict = generation.subscriptions.check(
            check,
            route.policy,
            &req.headers,
            req.uri.query(),
            preflight,
        );
        match verdict {
            Verdict::Pass {
                policy,
                subscription,
            } => {
                ctx.policy = policy;
                ctx.subscription = subscription;
                if let Some(t) = ctx.trace.as_deref_mut() {
                    let name = policy
                        .and_then(|id| generation.policy(id))
                        .map(|p| p.policy.name.as_str());
                    let detail = generation
                        .subscriptions
                        .explain_pass(check, name, subscription);
                    t.step(
                        "subscription key",
                        portcullis_explain::Verdict::Pass,
                        detail,
                    );
                }
                if let Some(i) = subscription {
                    self.metrics
                        .subscription_calls
                        .with_label_values(&[generation.subscriptions.name(i)])
                        .inc();
                }
                None
            }
            refused => {
                if let Some(t) = ctx.trace.as_deref_mut() {
                    let (detail, fix) = generation.subscriptions.explain_refusal(
                        check,
                        &route.name,
                        refused,
                        &req.headers,
                        req.uri.query(),
                    );
                    let reason = match refused {
                        Verdict::Missing => crate::subscriptions::REASON_SUBSCRIPTION_KEY_MISSING,
                        _ => crate::subscriptions::REASON_SUBSCRIPTION_KEY_INVALID,
                    };
                    t.failed("subscription key", reason, detail, Some(fix));
                }
                let cors = pipeline::cors_headers(&generation, route.policy, req);
                ctx.response_headers.extend(cors);
                Some(match refused {
                    Verdict::Missing => subscription_key_missing(),
                    _ => subscription_key_invalid(),
                })
            }
        }
    }

    /// A value of a transformation statement not used because it is invalid where it goes: a
    /// WARN (never the value: it may carry a secret) and a count.
    pub(crate) fn value_refused(
        &self,
        route: &Route,
        policy: &Policy,
        statement: &str,
        why: crate::values::Refused,
    ) {
        self.metrics
            .transform_values_refused
            .with_label_values(&[policy.name.as_str(), statement, why.reason()])
            .inc();
        tracing::warn!(
            route = %route.name,
            policy = %policy.name,
            statement,
            reason = why.reason(),
            "value not used: it is invalid where it goes"
        );
    }
}

/// 504 for timeouts, 502 for an unreachable or misbehaving upstream.
fn upstream_status(e: &Error) -> (u16, &'static str) {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            (504, metrics::REASON_UPSTREAM_TIMEOUT)
        }
        _ => (502, metrics::REASON_UPSTREAM_UNAVAILABLE),
    }
}

fn error_status(e: &Error) -> (u16, &'static str) {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => (*code, metrics::REASON_PROXY_ERROR),
        (_, ErrorSource::Upstream) => upstream_status(e),
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => (0, metrics::REASON_CLIENT_CLOSED),
        (_, ErrorSource::Downstream) => (400, metrics::REASON_PROXY_ERROR),
        _ => (500, metrics::REASON_PROXY_ERROR),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.current.load_full(), &self.inflight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(telemetry) = &self.telemetry {
            let req = session.req_header();
            ctx.otel = telemetry.start_request(req.method.as_str(), &req.headers);
        }
        restore_dropped_content_length(session)?;
        if session.req_header().version == http::Version::HTTP_10 {
            http10_without_interim_responses(session);
        }
        let peer = pipeline::peer(session);
        let mut x = Exchange {
            req: session.req_header_mut(),
            peer,
        };
        match self.decide(&mut x, ctx).await? {
            Some(answer) => {
                if is_framing_refusal(answer.reason) {
                    // The body's extent is not known (or not what the client meant): nothing
                    // after this request on the connection can be trusted to be a request.
                    session.set_keepalive(None);
                }
                self.answer(session, ctx, answer).await
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let generation = ctx.generation.clone();
        let route = generation
            .route(ctx)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        // An upgrade (WebSocket) keeps the connection for as long as either side talks: pingora
        // restarts the upstream read on every byte from either direction, so the read timeout is
        // the connection's idle timeout.
        let upgrade = session.is_upgrade_req();
        if let Some(backend) = ctx.backend.and_then(|id| generation.routes.backend(id)) {
            let peer = &backend.peer;
            let mut http_peer = HttpPeer::new(peer.addr, peer.tls, peer.sni.clone());
            let timeout = match upgrade {
                true => route.websocket_idle_timeout,
                false => backend.timeout.unwrap_or(route.timeout),
            };
            http_peer.options.connection_timeout =
                Some(backend.connect_timeout.unwrap_or(route.connect_timeout));
            http_peer.options.read_timeout = Some(timeout);
            http_peer.options.write_timeout = Some(timeout);
            return Ok(Box::new(http_peer));
        }
        ctx.peer = route.pick_peer(ctx.tried);
        if ctx.peer < 64 {
            ctx.tried |= 1 << ctx.peer;
        }
        let peer = route
            .peer(ctx.peer)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route has no peer"))?;
        let mut http_peer = HttpPeer::new(peer.addr, peer.tls, peer.sni.clone());
        http_peer.options.connection_timeout = Some(route.connect_timeout);
        let timeout = if upgrade {
            route.websocket_idle_timeout
        } else {
            route.timeout
        };
        http_peer.options.read_timeout = Some(timeout);
        http_peer.options.write_timeout = Some(timeout);
        http_peer.options.alpn = match route.upstream_protocol {
            UpstreamProtocol::Http1 => ALPN::H1,
            // h2 over TLS by ALPN; over plain TCP, a minimum version of 2 is prior knowledge (h2c).
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
        };
        if let Some(tls) = &route.tls {
            tls.apply(&mut http_peer);
        }
        Ok(Box::new(http_peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(backend) = ctx.backend.and_then(|id| ctx.generation.routes.backend(id)) {
            // One peer: passive health marks it, and there is nothing else to retry on.
            backend.mark_down();
            e.set_retry(false);
        } else if let Some(route) = ctx.generation.route(ctx) {
            route.mark_down(ctx.peer);
            let untried = (0..route.peer_count().min(64)).any(|i| ctx.tried & (1 << i) == 0);
            e.set_retry(untried);
        }
        e
    }

    /// The last piece of a request body may arrive empty: an HTTP/2 client ends the stream with
    /// an empty DATA frame (curl `-T -`, browsers' and Go's streaming uploads). pingora writes an
    /// empty piece to an HTTP/1.1 upstream as a zero-size chunk, which *is* the last chunk, and
    /// then writes the last chunk again when the body ends: the second `0\r\n\r\n` stays on the
    /// pooled connection and is read as the start of the next request, so a later request (of
    /// another client) can be answered with this one's response. An empty last piece is
    /// therefore passed on as "no data, end of body" (pingora already drops empty pieces that
    /// are not the last).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let generation = ctx.generation.clone();
        let Some(route) = generation.route(ctx) else {
            return Ok(());
        };
        let base = ctx
            .backend
            .and_then(|id| ctx.generation.routes.backend(id))
            .map_or("", |b| b.base_path.as_str());
        let edited = ctx.target.as_deref();
        // rewrite-uri's path replaces strip/rewrite-prefix; otherwise the route's prefix rules.
        let path = match edited.and_then(|t| t.path.clone()) {
            Some(p) => Some(p),
            None => route.rewrite_path(upstream.uri.path()),
        };
        if path.is_some() || edited.is_some() || !base.is_empty() {
            let path = with_base(base, path.as_deref().unwrap_or(upstream.uri.path()));
            let query = match edited {
                Some(t) => t.query.as_deref(),
                None => upstream.uri.query(),
            };
            let uri = match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let uri = http::Uri::try_from(uri)
                .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
            upstream.set_uri(uri);
        }
        if let Some(policy) = ctx.generation.request_policy(ctx) {
            if !policy.forward_token {
                remove_token(upstream, &policy.token_source)?;
            }
        }
        let downstream = &session.downstream_session;
        // HTTP/2 has no Host header: the authority is in the request target.
        let authority = ctx.host.clone().or_else(|| {
            let authority = downstream.req_header().uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let conn = Connection {
            client_ip: downstream
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            https: downstream.digest().is_some_and(|d| d.ssl_digest.is_some()),
            host: authority.as_ref(),
            port: downstream
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
        };
        set_forwarded(upstream, &conn, &ctx.generation.trusted_proxies)?;
        // `host-header`: the upstream's own name by default (what a host-routed backend needs);
        // a set-header of `Host` (a forwarding override below) still has the last word.
        let upstream_host = match &route.host_header {
            HostHeader::Client => None,
            HostHeader::Value(v) => HeaderValue::from_str(v).ok(),
            HostHeader::Upstream => {
                match ctx.backend.and_then(|id| ctx.generation.routes.backend(id)) {
                    Some(backend) => Some(backend.peer.host.clone()),
                    None => route.peer(ctx.peer).map(|p| p.host.clone()),
                }
            }
        };
        if let Some(host) = upstream_host {
            upstream.insert_header(http::header::HOST, host)?;
        }
        if !ctx.forwarding_overrides.is_empty() {
            let overrides = std::mem::take(&mut ctx.forwarding_overrides);
            pipeline::apply_forwarding_overrides(upstream, overrides)?;
        }
        if let Some(trace) = ctx.otel.as_deref_mut() {
            // The gateway's span is the backend's parent: the client's own trace headers (or a
            // set-header's) are replaced, never forwarded beside ours.
            let tracer = self.telemetry.as_deref().and_then(Telemetry::tracer);
            if let Some(tracer) = tracer {
                let origin = |peer: &crate::routes::Peer| {
                    let scheme = if peer.tls { "https" } else { "http" };
                    format!("{scheme}://{}", peer.host.to_str().unwrap_or("-"))
                };
                let target = match ctx.backend.and_then(|id| ctx.generation.routes.backend(id)) {
                    Some(backend) => origin(&backend.peer),
                    None => route
                        .peer(ctx.peer)
                        .map_or_else(String::new, |p| origin(&p)),
                };
                let (traceparent, tracestate) =
                    trace.start_upstream(tracer, upstream.method.as_str(), &target);
                upstream.insert_header(TRACEPARENT, traceparent)?;
                if let Some(state) = tracestate {
                    upstream.insert_header(TRACESTATE, state)?;
                } else {
                    upstream.remove_header(TRACESTATE);
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            if !response.headers.contains_key(X_REQUEST_ID) {
                response.insert_header(wire::X_REQUEST_ID, id.clone())?;
            }
        }
        for (name, value) in &ctx.response_headers {
            if name == http::header::VARY {
                // Added to the backend's Vary (Accept-Encoding...), never replacing it.
                response.append_header(name.clone(), value.clone())?;
            } else {
                // The gateway's CORS decision replaces the backend's own, if it sent one.
                response.insert_header(name.clone(), value.clone())?;
            }
        }
        if let Some(otel) = &ctx.otel {
            otel.upstream_status(response.status.as_u16());
        }
        let peer = pipeline::peer(session);
        pipeline::outbound(self, session.req_header(), peer, ctx, response);
        if ctx.trace.is_some() {
            self.keep_trace(ctx, None);
        }
        Ok(())
    }

    /// A client that went away mid-request (status 0 in `error_status`) is not a gateway
    /// failure: pingora would log it at ERROR; the request's own line (`logging`) records it as
    /// `ClientClosedRequest` with status 499 (or the status already written) and the error type. Every other proxy error keeps pingora's ERROR line.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        error_status(e).0 == 0
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (status, reason) = error_status(e);
        if ctx.trace.is_some() {
            let answer = Answer::json(status, reason, proxy_failure_message(status));
            self.keep_trace(ctx, Some(&answer));
        }
        ctx.reason = Some(reason);
        if status > 0 {
            ctx.status = Some(status);
            if session.response_written().is_none() {
                // The connection is not reused after a proxy failure (the request body may be half
                // sent): say so, or a client could reuse it and race the close.
                session.set_keepalive(None);
                let answer = Answer::json(status, reason, proxy_failure_message(status));
                let sent = send(
                    session,
                    answer,
                    &ctx.response_headers,
                    ctx.request_id.as_ref(),
                )
                .await;
                if let Err(write) = sent {
                    tracing::debug!(error = %write, "could not send the error response");
                }
            }
        } else {
            // Nothing can be written to a client that is gone: recorded as nginx records it.
            ctx.status.get_or_insert(metrics::STATUS_CLIENT_CLOSED);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.status)
            .unwrap_or(0);
        if !ctx.pending.is_empty() {
            pipeline::outbound_count(self, ctx, status, session.body_bytes_sent()).await;
        }
        let matched = ctx.generation.route(ctx);
        let route = matched.map_or(metrics::ROUTE_NONE, |r| r.name.as_str());
        let reason = ctx.reason.unwrap_or(metrics::REASON_OK);
        let subscription = ctx.subscription.map_or(metrics::ROUTE_NONE, |i| {
            ctx.generation.subscriptions.name(i)
        });
        let status_buf = itoa_status(status);
        let status_text = status_buf.as_str();
        match matched {
            // Most requests: the route's own series, looked up once.
            Some(r) if status == 200 && reason == metrics::REASON_OK => r
                .requests_ok
                .counter(&self.metrics.requests, &[route, "200", metrics::REASON_OK])
                .inc(),
            _ => self
                .metrics
                .requests
                .with_label_values(&[route, status_text, reason])
                .inc(),
        }
        let latency = ctx.start.elapsed();
        let seconds = latency.as_secs_f64();
        match matched {
            // The route's series, looked up once.
            Some(r) => r
                .request_duration
                .histogram(&self.metrics.request_duration, &[route])
                .observe(seconds),
            None => self
                .metrics
                .request_duration
                .with_label_values(&[route])
                .observe(seconds),
        }
        let request_id = ctx
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let req = session.req_header();
        if let Some(trace) = ctx.otel.take() {
            let policy = ctx.generation.request_policy(ctx);
            trace.end(&Outcome {
                route,
                policy: policy.map(|p| p.name.as_str()),
                status,
                reason,
                path: req.uri.path(),
                request_id,
            });
        }
        crate::access_log::emit(&crate::access_log::AccessLine {
            route,
            method: &req.method,
            path: req.uri.path(),
            status,
            reason,
            subscription,
            latency,
            request_id,
            error: e.map(|e| e.etype().as_str()),
        });
    }
}

/// pingora drops a `Content-Length` sent beside `Transfer-Encoding` while reading the request
/// (RFC 9112 6.3 lets a server frame by the latter alone) and the gateway would never see the
/// pair: put the values the client sent back, so that `headers::framing` refuses the request as
/// it was received. The request is then refused, so nothing put back is ever forwarded.
fn restore_dropped_content_length(session: &mut Session) -> Result<()> {
    let ServerSession::H1(h1) = &mut *session.downstream_session else {
        return Ok(());
    };
    let headers = &h1.req_header().headers;
    if !headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Ok(());
    }
    let head = h1.get_headers_raw_bytes();
    let values: Vec<HeaderValue> = headers::raw_values(&head, "content-length")
        .map(|v| HeaderValue::from_bytes(v).unwrap_or(HeaderValue::from_static("?")))
        .collect();
    for value in values {
        h1.req_header_mut()
            .append_header(http::header::CONTENT_LENGTH, value)?;
    }
    Ok(())
}

/// An HTTP/1.0 client cannot read an interim (1xx) response: it takes the first status line for
/// the answer, so a backend's `100 Continue` (or `102`, `103`) would become the response and the
/// real one would be read as garbage, or as the answer to the client's next request. RFC 9110
/// 15.2: a server must not send a 1xx to an HTTP/1.0 client; 10.1.1: it must ignore an HTTP/1.0
/// request's `100-continue`. So the expectation is taken off (the backend does not see it and
/// does not wait for it) and every 1xx from the backend is dropped but `101` (an upgrade, which
/// HTTP/1.0 cannot ask for anyway). Other expectations are still refused with 417 afterwards.
fn http10_without_interim_responses(session: &mut Session) {
    session.set_ignore_info_resp(true);
    let req = session.req_header_mut();
    let only_continue = req
        .headers
        .get_all(http::header::EXPECT)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if only_continue {
        req.remove_header(&http::header::EXPECT);
    }
}

/// Whether an answer is a refusal after which the connection is closed
/// ([`portcullis_route::Refusal::closes_connection`]).
fn is_framing_refusal(reason: &str) -> bool {
    portcullis_route::Refusal::ALL
        .iter()
        .any(|r| r.closes_connection() && r.reason() == reason)
}

/// A status code as text without allocating.
struct StatusText {
    buf: [u8; 3],
    len: usize,
}

impl StatusText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0")
    }
}

fn itoa_status(status: u16) -> StatusText {
    if !(100..=999).contains(&status) {
        return StatusText {
            buf: [b'0', 0, 0],
            len: 1,
        };
    }
    let digits = [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    StatusText {
        buf: digits,
        len: 3,
    }
}

/// A request that sent the trace key: a recorder, and the response header that says where its
/// explanation will be.
fn start_trace(req: &RequestHeader, ctx: &mut Ctx) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    if let Some(location) = crate::trace::location(&id) {
        ctx.response_headers.push((
            HeaderName::from_static(crate::trace::TRACE_LOCATION),
            location,
        ));
    }
    ctx.trace = Some(Box::new(crate::trace::Recorder::new(req, id, None)));
}
