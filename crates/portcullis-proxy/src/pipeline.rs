//! A policy's inbound statements as steps, and the one loop that runs them.
//!
//! Each step sees the request, the client address and the verified token once `validate-jwt` has
//! run, and either passes (possibly adding headers every answer to the request carries, or a count
//! to make when the response is known) or answers ([`Answer`]). A `choose` runs its branch's steps
//! through the same loop. The proxy's hooks call [`inbound`] once, [`outbound`] once on the
//! response to the client (the backend's, or a `return-response` answer) and [`outbound_count`]
//! once; a new statement kind is a new [`Step`] arm here, never a new hook. As in APIM, a CORS preflight runs the `cors` step only, and `cors` is evaluated before the
//! other steps whatever its place, so the gateway's own 401/403/429 carry the CORS headers.

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use portcullis_auth::{claim_headers, claim_to_header_value, Policy, RequestParts};
use portcullis_config::{
    BackendId, CheckHeader, ClaimTest, Condition, CounterKey, ExistsAction, HeaderCheck, IpFilter,
    Limit, MockResponse, Piece, PolicyId, PolicyModel, ReturnResponse, RewriteUri, SetHeader,
    SetQueryParameter, SetVariable, Statement,
};
use portcullis_explain::Verdict;
use portcullis_route::query;

use crate::auth::{authenticate, unix_now, unix_now_ms};
use crate::cors;
use crate::limits::{Counted, Hit};
use crate::proxy::{Ctx, Gateway, TargetEdit};
use crate::reload::{Generation, PolicyRuntime};
use crate::respond::{
    caller_ip_forbidden, header_check_failed, invalid_rewrite, mock_response, quota_exceeded,
    rate_limit_store_unavailable, rate_limited, statement_answer, token_rejected, Answer, Quota,
};
use crate::routes::Route;
use crate::values::{self, View};

/// One step of a policy.
#[derive(Debug, Clone)]
pub enum Step {
    /// `cors`: evaluated before the other steps ([`Pipeline`] holds it; see the module docs).
    Cors,
    /// `validate-jwt` with the policy's claim rules.
    ValidateJwt,
    /// `rate-limit`, `rate-limit-by-key`, `quota-by-key`.
    Limit(Arc<LimitStep>),
    /// `ip-filter` on the client address (`server.trusted-proxies` honoured).
    IpFilter(Arc<IpFilter>),
    /// `check-header`.
    CheckHeader(Arc<CheckHeader>),
    /// `set-query-parameter` on the query to forward.
    SetQueryParameter(Arc<SetQueryParameter>),
    /// `rewrite-uri`: the path (and query) to forward.
    RewriteUri(Arc<RewriteUri>),
    /// `set-backend-service`: where to forward.
    SetBackendService(BackendId),
    /// `mock-response`: the answer, with its content type checked once.
    MockResponse(Arc<MockResponse>, HeaderValue),
    /// `set-variable`.
    SetVariable(Arc<SetVariable>),
    /// `set-header`: on the request to the backend (inbound) or the response (outbound).
    SetHeader(Arc<HeaderStep>),
    /// `return-response`: the request ends with the statement's answer.
    ReturnResponse(Arc<ReturnResponse>),
    /// `choose`: the steps of the first branch whose condition holds.
    Choose(Arc<ChooseStep>),
}

/// A `set-header` with the label its refusals are counted under (`set-header x-name`).
#[derive(Debug)]
pub struct HeaderStep {
    set: Arc<SetHeader>,
    label: String,
    /// A header the gateway sets from the connection (`X-Forwarded-*`, ...) or `Host` (set by
    /// `host-header`): applied after the gateway has set its own, so the policy's statement has
    /// the last word (as in APIM).
    connection: bool,
}

/// An inbound `set-header` of a connection header, rendered, waiting for the gateway's own
/// forwarding headers ([`apply_forwarding_overrides`]).
#[derive(Debug)]
pub struct ForwardingOverride {
    step: Arc<HeaderStep>,
    rendered: Option<Vec<HeaderValue>>,
}

/// Applies the policy's `set-header`s of connection headers to the upstream request, after the
/// gateway's `X-Forwarded-*`: `override` replaces the gateway's value, `skip` keeps it, `append`
/// adds to it, `delete` removes it. The value is the operator's (a literal, or a source the policy
/// names), never the client's own copy: that was removed before.
pub fn apply_forwarding_overrides(
    upstream: &mut RequestHeader,
    overrides: Vec<ForwardingOverride>,
) -> Result<()> {
    for o in overrides {
        set_header(upstream, &o.step.set, o.rendered)?;
    }
    Ok(())
}

/// A `choose` as steps.
#[derive(Debug)]
pub struct ChooseStep {
    branches: Vec<(Condition, Vec<Step>)>,
    otherwise: Vec<Step>,
}

/// A policy's steps in order.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    /// The `outbound` steps (empty for most policies: nothing runs on the response).
    outbound: Vec<Step>,
    cors: Option<cors::CorsPolicy>,
}

impl Pipeline {
    /// The steps of a checked policy.
    pub fn from_model(p: &PolicyModel) -> Pipeline {
        Pipeline {
            steps: steps(&p.inbound),
            outbound: steps(&p.outbound),
            cors: p.cors().map(|c| cors::CorsPolicy::new(c.clone())),
        }
    }
}

fn steps(statements: &[Statement]) -> Vec<Step> {
    statements
        .iter()
        .map(|s| match s {
            Statement::Cors(_) => Step::Cors,
            Statement::ValidateJwt => Step::ValidateJwt,
            Statement::Limit(l) => Step::Limit(Arc::new(LimitStep::new(l))),
            Statement::IpFilter(f) => Step::IpFilter(f.clone()),
            Statement::CheckHeader(c) => Step::CheckHeader(c.clone()),
            Statement::SetVariable(v) => Step::SetVariable(v.clone()),
            Statement::SetHeader(h) => Step::SetHeader(Arc::new(HeaderStep {
                set: h.clone(),
                label: format!("set-header {}", h.name),
                connection: portcullis_config::is_connection_header(h.name.as_str())
                    || h.name == http::header::HOST,
            })),
            Statement::ReturnResponse(r) => Step::ReturnResponse(r.clone()),
            Statement::Choose(c) => Step::Choose(Arc::new(ChooseStep {
                branches: c
                    .branches
                    .iter()
                    .map(|b| (b.when.clone(), steps(&b.steps)))
                    .collect(),
                otherwise: steps(&c.otherwise),
            })),
            Statement::SetQueryParameter(s) => Step::SetQueryParameter(s.clone()),
            Statement::RewriteUri(r) => Step::RewriteUri(r.clone()),
            Statement::SetBackendService(id) => Step::SetBackendService(*id),
            Statement::MockResponse(m) => Step::MockResponse(
                m.clone(),
                HeaderValue::from_str(&m.content_type)
                    .unwrap_or(HeaderValue::from_static("application/json")),
            ),
        })
        .collect()
}

/// A limit statement with what its counters need, derived once: its window and the id of its
/// bandwidth counter.
#[derive(Debug)]
pub struct LimitStep {
    limit: Arc<Limit>,
    period_ms: u64,
    /// `policy#n/kb`: the bandwidth counter's id (quotas with `bandwidth`).
    kb_id: String,
}

impl LimitStep {
    fn new(limit: &Arc<Limit>) -> LimitStep {
        LimitStep {
            limit: limit.clone(),
            period_ms: u64::try_from(limit.renewal_period.as_millis()).unwrap_or(u64::MAX),
            kb_id: format!("{}/kb", limit.id),
        }
    }

    /// A hit on the calls counter.
    fn calls<'a>(&'a self, key: &'a str, cap: u64, commit: bool) -> Hit<'a> {
        Hit {
            id: &self.limit.id,
            key,
            period_ms: self.period_ms,
            limit: cap,
            amount: self.limit.increment_count,
            sliding: self.limit.sliding(),
            commit,
        }
    }

    /// A hit on the bandwidth counter (fixed window, kilobytes).
    fn kilobytes<'a>(&'a self, key: &'a str, cap: u64, amount: u64, commit: bool) -> Hit<'a> {
        Hit {
            id: &self.kb_id,
            key,
            period_ms: self.period_ms,
            limit: cap,
            amount,
            sliding: false,
            commit,
        }
    }
}

/// A count to make once the response status (and size) is known.
#[derive(Debug)]
pub struct Pending {
    step: Arc<LimitStep>,
    key: String,
    /// Count a call (the increment condition held at response time).
    calls: bool,
}

/// The request the steps read and edit, and the address it came from. The proxy makes one from
/// pingora's session; `portcullis explain` from the request it is asked about.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// The request (edited in place: identity headers, `set-header`...).
    pub req: &'a mut RequestHeader,
    /// The connection's peer address.
    pub peer: Option<IpAddr>,
}

/// What the steps of one request run against: the request's config generation, route and
/// policy.
struct Run<'r> {
    gw: &'r Gateway,
    generation: &'r Generation,
    route: &'r Route,
    policy_id: PolicyId,
    policy: &'r Arc<Policy>,
    runtime: &'r PolicyRuntime,
}

/// Run the route's policy. `Some(answer)`: the request ends here with that answer.
pub async fn inbound(gw: &Gateway, x: &mut Exchange<'_>, ctx: &mut Ctx) -> Result<Option<Answer>> {
    let generation = ctx.generation.clone();
    let Some((run, pipeline)) = Run::of(gw, &generation, ctx) else {
        return Ok(None);
    };
    if let Some(c) = &pipeline.cors {
        match c.evaluate(x.req) {
            cors::Verdict::Answer(a) => {
                if let Some(t) = ctx.trace.as_deref_mut() {
                    t.step("cors", Verdict::Answer, cors_words(&a));
                }
                return Ok(Some(a));
            }
            cors::Verdict::Continue(headers) => {
                if let Some(t) = ctx.trace.as_deref_mut() {
                    let detail = match x.req.headers.contains_key(http::header::ORIGIN) {
                        true => "the origin is allowed: the answer carries the CORS headers",
                        false => "no `Origin`: not a cross-origin request",
                    };
                    t.step("cors", Verdict::Pass, detail);
                }
                ctx.response_headers.extend(headers);
            }
        }
    }
    run.steps(x, ctx, &pipeline.steps).await
}

/// A CORS answer in words.
fn cors_words(a: &Answer) -> String {
    match a.reason {
        crate::respond::REASON_CORS_PREFLIGHT => {
            "a preflight the policy allows: the gateway answers it (never forwarded)".to_owned()
        }
        _ => "the origin (or the method or headers it asks for) is not allowed: an empty 200 without CORS headers, so the browser blocks the call".to_owned(),
    }
}

/// The CORS headers `policy`'s `cors` statement gives a (non-preflight) request: what an answer
/// written before the policy runs (a subscription key refusal) carries, so a browser app can read
/// it, as it can read the policy's own refusals.
pub(crate) fn cors_headers(
    generation: &Generation,
    policy: Option<PolicyId>,
    req: &RequestHeader,
) -> Vec<(HeaderName, HeaderValue)> {
    let cors = policy
        .and_then(|id| generation.policy(id))
        .and_then(|p| p.pipeline.cors.as_ref());
    match cors.map(|c| c.evaluate(req)) {
        Some(cors::Verdict::Continue(headers)) => headers,
        _ => Vec::new(),
    }
}

impl<'r> Run<'r> {
    /// The request's route and policy in `generation`, with the policy's steps; `None` for an
    /// anonymous route (or no route).
    fn of(gw: &'r Gateway, generation: &'r Generation, ctx: &Ctx) -> Option<(Self, &'r Pipeline)> {
        let route = ctx.route.and_then(|i| generation.routes.get(i))?;
        let policy_id = ctx.policy?;
        let runtime = generation.policy(policy_id)?;
        let run = Run {
            gw,
            generation,
            route,
            policy_id,
            policy: &runtime.policy,
            runtime,
        };
        Some((run, &runtime.pipeline))
    }

    /// A `choose` branch's steps, through the same loop (boxed: the loop is recursive; only a
    /// `choose` that runs pays for the box).
    fn branch<'a, 'b: 'a>(
        &'a self,
        x: &'a mut Exchange<'b>,
        ctx: &'a mut Ctx,
        steps: &'a [Step],
    ) -> Pin<Box<dyn Future<Output = Result<Option<Answer>>> + Send + 'a>> {
        Box::pin(self.steps(x, ctx, steps))
    }

    async fn steps(
        &self,
        x: &mut Exchange<'_>,
        ctx: &mut Ctx,
        steps: &[Step],
    ) -> Result<Option<Answer>> {
        let (gw, generation, route, policy) = (self.gw, self.generation, self.route, self.policy);
        for step in steps {
            match step {
                Step::Cors => {}
                Step::ValidateJwt => {
                    if let Some(answer) = self.validate(x, ctx).await? {
                        return Ok(Some(answer));
                    }
                }
                Step::IpFilter(filter) => {
                    let ip = client_ip(x.req, x.peer, &generation.trusted_proxies);
                    let permits = filter.permits(ip);
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        let ip = ip.map_or("(unknown)".to_owned(), |ip| ip.to_string());
                        match permits {
                            true => t.step(
                                "ip-filter",
                                Verdict::Pass,
                                format!("client address {ip} is allowed"),
                            ),
                            false => t.failed(
                                "ip-filter",
                                crate::respond::REASON_CALLER_IP_NOT_ALLOWED,
                                format!("client address {ip} is not allowed"),
                                None,
                            ),
                        }
                    }
                    if !permits {
                        return Ok(Some(caller_ip_forbidden()));
                    }
                }
                Step::CheckHeader(check) => match check.check(&x.req.headers) {
                    HeaderCheck::Passed => {
                        if let Some(t) = ctx.trace.as_deref_mut() {
                            t.step(
                                format!("check-header {}", check.name),
                                Verdict::Pass,
                                "present with an allowed value",
                            );
                        }
                    }
                    failed => {
                        let answer = header_check_failed(check, failed);
                        if let Some(t) = ctx.trace.as_deref_mut() {
                            let detail = match answer.reason {
                                crate::respond::REASON_HEADER_NOT_FOUND => {
                                    format!("the request has no `{}` header", check.name)
                                }
                                _ => format!(
                                    "`{}` holds none of the {} allowed value(s)",
                                    check.name,
                                    check.values.len()
                                ),
                            };
                            t.failed(
                                format!("check-header {}", check.name),
                                answer.reason,
                                detail,
                                None,
                            );
                        }
                        return Ok(Some(answer));
                    }
                },
                Step::Limit(step) => {
                    let key = counter_key(&step.limit, x.req, x.peer, ctx, generation);
                    let words = ctx.trace.is_some().then(|| limit_words(&step.limit, &key));
                    let answer = apply_limit(gw, step, key, ctx).await;
                    if let (Some(t), Some((name, words))) = (ctx.trace.as_deref_mut(), words) {
                        match &answer {
                            None => t.step(
                                name,
                                Verdict::Pass,
                                format!("{words}: within the limit (counted)"),
                            ),
                            Some(a) => t.failed(
                                name,
                                a.reason,
                                format!("{words}: exceeded ({})", a.reason),
                                None,
                            ),
                        }
                    }
                    if let Some(answer) = answer {
                        return Ok(Some(answer));
                    }
                }
                Step::SetVariable(set) => {
                    set_variable(x.req, x.peer, ctx, generation, set);
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step(
                            format!("set-variable {}", set.name),
                            Verdict::Change,
                            "set (the value is not shown)",
                        );
                    }
                }
                Step::SetHeader(step) => {
                    let rendered = render_header(
                        gw,
                        route,
                        policy,
                        step,
                        view(x.req, x.peer, ctx, generation),
                    );
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step(
                            step.label.clone(),
                            Verdict::Change,
                            header_words(&step.set, rendered.as_ref()),
                        );
                    }
                    if step.connection {
                        ctx.forwarding_overrides.push(ForwardingOverride {
                            step: step.clone(),
                            rendered,
                        });
                    } else {
                        set_header(x.req, &step.set, rendered)?;
                    }
                }
                Step::ReturnResponse(r) => {
                    let answer =
                        return_response(gw, route, policy, r, view(x.req, x.peer, ctx, generation));
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step(
                            "return-response",
                            Verdict::Answer,
                            format!(
                                "the policy answers {} itself; the backend is not called",
                                answer.status
                            ),
                        );
                    }
                    return Ok(Some(answer));
                }
                Step::SetQueryParameter(set) => {
                    let view = view(x.req, x.peer, ctx, generation);
                    let rendered: Vec<Cow<'_, str>> =
                        set.values.iter().map(|v| view.render(v)).collect();
                    if let Some(why) = rendered.iter().find_map(|v| values::no_controls(v).err()) {
                        let label = format!("set-query-parameter {}", set.name);
                        gw.value_refused(route, policy, &label, why);
                        continue;
                    }
                    let rendered: Vec<String> = rendered.into_iter().map(Cow::into_owned).collect();
                    let values: Vec<&str> = rendered.iter().map(String::as_str).collect();
                    let edit = target(ctx, x.req);
                    edit.query =
                        query::edit(edit.query.as_deref(), &set.name, &values, set.exists_action);
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step(
                            format!("set-query-parameter {}", set.name),
                            Verdict::Change,
                            format!(
                                "{} value(s), {:?} (values not shown)",
                                values.len(),
                                set.exists_action
                            ),
                        );
                    }
                }
                Step::RewriteUri(rewrite) => {
                    let normalisation = generation.routes.normalisation();
                    let current = match &ctx.target {
                        Some(t) => t.query.as_deref(),
                        None => x.req.uri.query(),
                    };
                    let Some((path, query)) = rewritten(
                        rewrite,
                        current,
                        normalisation,
                        &view(x.req, x.peer, ctx, generation),
                    ) else {
                        if let Some(t) = ctx.trace.as_deref_mut() {
                            t.failed(
                                "rewrite-uri",
                                crate::respond::REASON_INVALID_REWRITE,
                                format!(
                                    "template `{}` gives a path that cannot be made canonical",
                                    rewrite.template
                                ),
                                None,
                            );
                        }
                        tracing::warn!(
                            route = %route.name,
                            policy = %policy.name,
                            template = %rewrite.template,
                            "rewrite-uri: the rewritten path cannot be made canonical; refused"
                        );
                        return Ok(Some(invalid_rewrite()));
                    };
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step(
                            "rewrite-uri",
                            Verdict::Change,
                            format!("the backend gets the path {path}"),
                        );
                    }
                    let edit = target(ctx, x.req);
                    edit.path = Some(path);
                    edit.query = query;
                }
                Step::SetBackendService(id) => {
                    ctx.backend = Some(*id);
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        let name = generation
                            .routes
                            .backend(*id)
                            .map_or("?", |b| b.name.as_str());
                        t.step(
                            "set-backend-service",
                            Verdict::Change,
                            format!("forwarded to backend {name} instead of the route's upstreams"),
                        );
                    }
                }
                Step::MockResponse(mock, content_type) => {
                    let example = route
                        .examples
                        .as_deref()
                        .and_then(|e| e.find(mock.status_code, &mock.content_type));
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        t.step("mock-response", Verdict::Answer, format!("the policy answers {} with the route's example; the backend is not called", mock.status_code));
                    }
                    return Ok(Some(mock_response(
                        mock.status_code,
                        content_type.clone(),
                        example,
                    )));
                }
                Step::Choose(choose) => {
                    let status = None;
                    let (branch, chosen) =
                        pick(choose, &view(x.req, x.peer, ctx, generation), route, status);
                    if let Some(t) = ctx.trace.as_deref_mut() {
                        let detail = match branch {
                            Some(i) => format!(
                                "`when` #{} of {} holds: its steps run",
                                i + 1,
                                choose.branches.len()
                            ),
                            None => format!(
                                "none of the {} `when` conditions holds: `otherwise` runs",
                                choose.branches.len()
                            ),
                        };
                        t.step("choose", Verdict::Pass, detail);
                    }
                    if let Some(steps) = chosen.filter(|s| !s.is_empty()) {
                        if let Some(answer) = self.branch(x, ctx, steps).await? {
                            return Ok(Some(answer));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// `validate-jwt`: the token checked, the identity headers set; `Some`: the rejection.
    async fn validate(&self, x: &mut Exchange<'_>, ctx: &mut Ctx) -> Result<Option<Answer>> {
        let (gw, generation, route, policy) = (self.gw, self.generation, self.route, self.policy);
        let started = Instant::now();
        let req = &*x.req;
        let parts = RequestParts {
            headers: &req.headers,
            query: req.uri.query(),
        };
        // token-optional: no token at all passes with no identity (the client's copies of the
        // identity headers were stripped before the pipeline); a present one is checked.
        if policy.token_optional && policy.token_source.absent(&parts) {
            if let Some(t) = ctx.trace.as_deref_mut() {
                t.step(
                    "validate-jwt",
                    Verdict::Pass,
                    "no token, and the policy is `token-optional`: passes without an identity",
                );
            }
            return Ok(None);
        }
        let at = ctx.trace.as_ref().and_then(|t| t.at);
        let auth = authenticate(
            &parts,
            policy,
            &generation.keys,
            self.policy_id,
            &generation.token_cache,
            at,
        );
        // Traced: a key fetch this request waits for is a child of its span.
        let outcome = match &ctx.otel {
            Some(otel) => {
                opentelemetry::context::FutureExt::with_context(auth, otel.cx.clone()).await
            }
            None => auth.await,
        };
        if let Some(t) = ctx.trace.as_deref_mut() {
            let now = at.unwrap_or_else(unix_now);
            crate::explain::record_token(
                t,
                &parts,
                policy,
                &generation.keys.snapshot(self.policy_id),
                now,
                &outcome,
            );
        }
        let (series, result) = match outcome {
            Ok(_) => (&self.runtime.validation_ok, "ok"),
            Err(_) => (&self.runtime.validation_rejected, "rejected"),
        };
        series
            .histogram(&gw.metrics.validation, &[policy.name.as_str(), result])
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(verified) => {
                let req = &mut *x.req;
                for (name, value) in claim_headers(&verified, policy) {
                    match value {
                        Ok(value) => match self.runtime.claim_names.iter().find(|n| n.0 == name) {
                            Some((_, wire)) => req.insert_header(wire.clone(), value)?,
                            None => req.insert_header(name.clone(), value)?,
                        },
                        Err(why) => gw.claim_refused(route, policy, name, why),
                    }
                }
                if let Some(t) = ctx
                    .trace
                    .as_deref_mut()
                    .filter(|_| !policy.forward_claims.is_empty())
                {
                    let set: Vec<String> = policy
                        .forward_claims
                        .iter()
                        .map(|(h, c)| format!("`{h}` from claim `{c}`"))
                        .collect();
                    t.step(
                        "forward-claims",
                        Verdict::Change,
                        format!("the backend gets {}", set.join(", ")),
                    );
                }
                ctx.identity = Some(verified);
            }
            Err(err) if policy.report_only => {
                ctx.reason = Some(err.reason());
                gw.metrics
                    .report_only
                    .with_label_values(&[route.name.as_str(), policy.name.as_str(), err.reason()])
                    .inc();
                tracing::warn!(
                    route = %route.name,
                    policy = %policy.name,
                    reason = err.reason(),
                    "report-only: request would have been rejected; forwarded"
                );
            }
            Err(err) => return Ok(Some(token_rejected(&err, policy))),
        }
        Ok(None)
    }
}

/// `set-variable`: the value rendered now, kept for the rest of the request.
fn set_variable(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    ctx: &mut Ctx,
    generation: &Generation,
    set: &SetVariable,
) {
    let value = view(req, peer, ctx, generation)
        .render(&set.value)
        .into_owned();
    values::set_var(&mut ctx.vars, &set.name, value);
}

/// A limit statement and its counter key in words (a key read from a header is not shown: it may
/// be a subscription key).
fn limit_words(limit: &Limit, key: &str) -> (String, String) {
    let name = limit.kind.element();
    let key = match &limit.counter_key {
        CounterKey::Header(h) => format!("the value of header `{h}` ({} chars)", key.len()),
        CounterKey::Constant(_) => "the route's one counter".to_owned(),
        CounterKey::Subscription if key.is_empty() => {
            "the one counter of callers without a subscription".to_owned()
        }
        CounterKey::Subscription => format!("subscription `{key}`"),
        _ => format!("key `{key}`"),
    };
    let calls = limit.calls.map_or(String::new(), |c| {
        format!("{c} calls per {} s, ", limit.renewal_period.as_secs())
    });
    (name.to_owned(), format!("{calls}counted against {key}"))
}

/// A `set-header` in words: what the backend (or client) would get, without the values.
fn header_words(set: &SetHeader, rendered: Option<&Vec<HeaderValue>>) -> String {
    match (set.action, rendered) {
        (ExistsAction::Delete, _) => format!("`{}` removed", set.name),
        (_, None) => format!("`{}` left unset: a value cannot be carried in a header (counted in portcullis_transform_values_refused_total)", set.name),
        (action, Some(v)) => format!("`{}` {:?} with {} value(s) (values not shown)", set.name, action, v.len()).to_lowercase(),
    }
}

/// The request as values and conditions read it.
fn view<'a>(
    req: &'a RequestHeader,
    peer: Option<IpAddr>,
    ctx: &'a Ctx,
    generation: &'a Generation,
) -> View<'a> {
    View {
        req,
        peer,
        trusted: &generation.trusted_proxies,
        params: &ctx.params,
        identity: ctx.identity.as_ref(),
        vars: &ctx.vars,
        subscription: ctx.subscription.map(|i| generation.subscriptions.name(i)),
    }
}

/// The policy's `outbound` steps, on a response to the client: the backend's (from
/// `response_filter`) or a `return-response` answer; never the gateway's own error answers.
pub fn outbound(
    gw: &Gateway,
    req: &RequestHeader,
    peer: Option<IpAddr>,
    ctx: &mut Ctx,
    response: &mut ResponseHeader,
) {
    // Most policies have no outbound steps: look before taking a reference to the generation.
    let any = Run::of(gw, &ctx.generation, ctx).is_some_and(|(_, p)| !p.outbound.is_empty());
    if !any {
        return;
    }
    let generation = ctx.generation.clone();
    if let Some((run, pipeline)) = Run::of(gw, &generation, ctx) {
        run.outbound(req, peer, ctx, response, &pipeline.outbound);
    }
}

impl Run<'_> {
    fn outbound(
        &self,
        req: &RequestHeader,
        peer: Option<IpAddr>,
        ctx: &mut Ctx,
        response: &mut ResponseHeader,
        steps: &[Step],
    ) {
        let (gw, generation, route, policy) = (self.gw, self.generation, self.route, self.policy);
        for step in steps {
            match step {
                Step::SetVariable(set) => set_variable(req, peer, ctx, generation, set),
                Step::SetHeader(step) => {
                    let rendered =
                        render_header(gw, route, policy, step, view(req, peer, ctx, generation));
                    if let Err(e) = set_header(response, &step.set, rendered) {
                        tracing::debug!(error = %e, header = %step.set.name, "outbound set-header failed");
                    }
                }
                Step::Choose(choose) => {
                    let status = Some(response.status.as_u16());
                    let (_, chosen) =
                        pick(choose, &view(req, peer, ctx, generation), route, status);
                    if let Some(steps) = chosen {
                        self.outbound(req, peer, ctx, response, steps);
                    }
                }
                // `check` allows only the three above in outbound.
                _ => {}
            }
        }
    }
}

/// The steps of the first branch whose condition holds (`otherwise` when none does), with that
/// branch's index (`None`: `otherwise`).
fn pick<'c>(
    choose: &'c ChooseStep,
    view: &View<'_>,
    route: &Route,
    status: Option<u16>,
) -> (Option<usize>, Option<&'c [Step]>) {
    let how = How {
        case_sensitive: route.case_sensitive(),
        head_as_get: route.head_as_get(&view.req.method),
        status,
    };
    match choose
        .branches
        .iter()
        .position(|(when, _)| holds(when, view, &how))
    {
        Some(i) => (Some(i), choose.branches.get(i).map(|(_, s)| s.as_slice())),
        None => (None, Some(choose.otherwise.as_slice())),
    }
}

/// What conditions are evaluated against besides the request.
struct How {
    /// The route compares paths byte for byte.
    case_sensitive: bool,
    /// A HEAD served by a route listing GET (not HEAD): `method` conditions see GET (see
    /// [`Route::head_as_get`]).
    head_as_get: bool,
    /// Outbound: the response status.
    status: Option<u16>,
}

/// Whether a condition holds for the request (and, outbound, the response status).
fn holds(cond: &Condition, view: &View<'_>, how: &How) -> bool {
    let req = view.req;
    let (case_sensitive, status) = (how.case_sensitive, how.status);
    match cond {
        Condition::Method(methods) if how.head_as_get => methods.contains(&http::Method::GET),
        Condition::Method(methods) => methods.contains(&req.method),
        Condition::HeaderPresent(name) => req.headers.contains_key(name),
        Condition::Header(name, test) => req
            .headers
            .get_all(name)
            .iter()
            .any(|v| test.passes(&String::from_utf8_lossy(v.as_bytes()))),
        Condition::QueryPresent(name) => view.query(name).is_some(),
        Condition::Query(name, test) => view.query(name).is_some_and(|v| test.passes(&v)),
        Condition::ClaimPresent(name) => view
            .identity
            .and_then(|v| v.token().claims.lookup(name))
            .is_some_and(|c| !c.is_null()),
        Condition::Claim(name, ClaimTest::Equals(test)) => {
            view.claim(name).is_some_and(|v| test.passes(&v))
        }
        Condition::Claim(name, ClaimTest::Contains(test)) => {
            let Some(claim) = view.identity.and_then(|v| v.token().claims.lookup(name)) else {
                return false;
            };
            if claim.is_array() {
                claim
                    .elements()
                    .any(|e| scalar(e).is_some_and(|t| test.passes(&t)))
            } else {
                scalar(claim).is_some_and(|t| t.split_whitespace().any(|w| test.passes(w)))
            }
        }
        Condition::Variable(name, test) => {
            values::var(view.vars, name).is_some_and(|v| test.passes(v))
        }
        Condition::PathPrefix(prefix) => {
            let path = req.uri.path();
            path.len() >= prefix.len()
                && path.is_char_boundary(prefix.len())
                && same(&path[..prefix.len()], prefix, case_sensitive)
                && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
        }
        Condition::Path(segments) => {
            let mut parts = req.uri.path().split('/').skip(1);
            segments.iter().all(|want| match (want, parts.next()) {
                (Some(lit), Some(seg)) => same(seg, lit, case_sensitive),
                (None, Some(seg)) => !seg.is_empty(),
                (_, None) => false,
            }) && parts.next().is_none()
        }
        Condition::Status(codes) => status.is_some_and(|s| codes.contains(&s)),
        Condition::All(all) => all.iter().all(|c| holds(c, view, how)),
        Condition::Any(any) => any.iter().any(|c| holds(c, view, how)),
        Condition::Not(c) => !holds(c, view, how),
    }
}

fn same(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// A string, number or boolean claim (or array element) as text.
fn scalar(claim: portcullis_auth::Claim<'_>) -> Option<Cow<'_, str>> {
    if let Some(s) = claim.as_str() {
        return Some(Cow::Borrowed(s));
    }
    if let Some(n) = claim.as_number() {
        return Some(Cow::Owned(n.to_string()));
    }
    claim.as_bool().map(|b| Cow::Owned(b.to_string()))
}

/// A `set-header`'s values for this request: `None` when one of them is refused (logged and
/// counted; the header is then left unset).
fn render_header(
    gw: &Gateway,
    route: &Route,
    policy: &Policy,
    step: &HeaderStep,
    view: View<'_>,
) -> Option<Vec<HeaderValue>> {
    let mut out = Vec::with_capacity(step.set.values.len());
    for value in &step.set.values {
        match values::header_value(&view.render(value)) {
            Ok(v) => out.push(v),
            Err(why) => {
                gw.value_refused(route, policy, &step.label, why);
                return None;
            }
        }
    }
    Some(out)
}

/// Headers of a request or a response, for `set-header`.
trait Headers {
    fn map(&self) -> &http::HeaderMap;
    fn insert(&mut self, name: HeaderName, value: HeaderValue) -> Result<()>;
    fn append(&mut self, name: HeaderName, value: HeaderValue) -> Result<()>;
    fn remove(&mut self, name: &HeaderName);
}

/// pingora's request and response headers have the same methods, but no common trait.
macro_rules! headers_of {
    ($($t:ty),*) => {$(
        impl Headers for $t {
            fn map(&self) -> &http::HeaderMap {
                &self.headers
            }
            fn insert(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
                self.insert_header(name, value)
            }
            fn append(&mut self, name: HeaderName, value: HeaderValue) -> Result<()> {
                self.append_header(name, value).map(|_| ())
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    )*};
}

headers_of!(RequestHeader, ResponseHeader);

/// Applies a `set-header` as APIM does: several values are one line joined with `,` (separate
/// lines for the headers whose values may hold a comma or a date, see
/// [`SetHeader::separate_lines`]); `append` adds to the existing values. `rendered` is `None`
/// when a value was refused: the header is left unset (an `override` removes the old one, so a
/// client's own value never stands in for the refused one).
fn set_header(
    target: &mut impl Headers,
    set: &SetHeader,
    rendered: Option<Vec<HeaderValue>>,
) -> Result<()> {
    let name = &set.name;
    let present = target.map().contains_key(name);
    let Some(values) = rendered else {
        if set.action == ExistsAction::Override {
            target.remove(name);
        }
        return Ok(());
    };
    match set.action {
        ExistsAction::Delete => target.remove(name),
        ExistsAction::Skip if present => {}
        ExistsAction::Append if set.separate_lines() => {
            for v in values {
                target.append(name.clone(), v)?;
            }
        }
        ExistsAction::Append => {
            let existing = target.map().get_all(name).iter().cloned();
            if let Some(v) = joined(existing.chain(values)) {
                target.insert(name.clone(), v)?;
            }
        }
        ExistsAction::Override | ExistsAction::Skip => {
            target.remove(name);
            if set.separate_lines() {
                for v in values {
                    target.append(name.clone(), v)?;
                }
            } else if let Some(v) = joined(values.into_iter()) {
                target.insert(name.clone(), v)?;
            }
        }
    }
    Ok(())
}

/// Values joined with `,` into one (`None` for none).
fn joined(mut values: impl Iterator<Item = HeaderValue>) -> Option<HeaderValue> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first);
    };
    let mut bytes = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        bytes.push(b',');
        bytes.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&bytes).ok()
}

/// A `return-response` answer for this request; a header whose value is refused is left out
/// (logged and counted).
fn return_response(
    gw: &Gateway,
    route: &Route,
    policy: &Policy,
    r: &ReturnResponse,
    view: View<'_>,
) -> Answer {
    let mut headers = Vec::with_capacity(r.headers.len());
    for (name, values) in &r.headers {
        for value in values {
            match values::header_value(&view.render(value)) {
                Ok(v) => headers.push((name.clone(), v)),
                Err(why) => {
                    gw.value_refused(route, policy, &format!("return-response {name}"), why);
                }
            }
        }
    }
    let body = view.render(&r.body).into_owned();
    statement_answer(r.status, r.reason.clone(), headers, body)
}

/// One `${...}` source of a template (its fallback when absent or empty).
fn source<'a>(view: &View<'a>, part: &'a portcullis_config::Part) -> Cow<'a, str> {
    match part {
        portcullis_config::Part::Literal(t) => Cow::Borrowed(t.as_str()),
        portcullis_config::Part::Source { source, fallback } => {
            let v = view.source(source);
            match fallback {
                Some(f) if v.is_empty() => Cow::Borrowed(f.as_str()),
                _ => v,
            }
        }
    }
}

/// The request's target edits, started from the request's own query on first use.
fn target<'c>(ctx: &'c mut Ctx, req: &RequestHeader) -> &'c mut TargetEdit {
    ctx.target.get_or_insert_with(|| {
        Box::new(TargetEdit {
            path: None,
            query: req.uri.query().map(str::to_owned),
        })
    })
}

/// `rewrite-uri`'s path (canonical) and query; `None` when the path cannot be made canonical.
/// `current` is the query as the earlier statements left it; `view` renders `${...}` sources.
fn rewritten(
    rewrite: &RewriteUri,
    current: Option<&str>,
    normalisation: &portcullis_route::Normalization,
    view: &View<'_>,
) -> Option<(String, Option<String>)> {
    let param = |name: &str| {
        view.params
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let mut path = String::with_capacity(64);
    for piece in &rewrite.path {
        match piece {
            Piece::Text(t) => path.push_str(t),
            // The canonical segment text: already encoded for a path.
            Piece::Param(n) => path.push_str(param(n)),
            Piece::Source(part) => query::push_encoded(&mut path, &source(view, part)),
        }
    }
    let path = portcullis_route::canonical_path(&path, normalisation)
        .ok()?
        .into_owned();
    let mut q = String::new();
    if let Some(pieces) = &rewrite.query {
        for piece in pieces {
            match piece {
                Piece::Text(t) => q.push_str(t),
                Piece::Param(n) => {
                    // A path segment's text may hold `&`, `=`, `+`: re-encoded for a query.
                    let decoded = query::decode(param(n));
                    query::push_encoded(&mut q, &decoded);
                }
                Piece::Source(part) => query::push_encoded(&mut q, &source(view, part)),
            }
        }
    }
    if rewrite.copy_unmatched_params {
        query::copy_unmatched(&mut q, current, &rewrite.named);
    }
    Some((path, (!q.is_empty()).then_some(q)))
}

/// The counter key of a request for a statement (borrowed when it is a constant, a header or the
/// subscription's name).
fn counter_key<'a>(
    limit: &'a Limit,
    req: &'a RequestHeader,
    peer: Option<IpAddr>,
    ctx: &Ctx,
    generation: &'a Generation,
) -> Cow<'a, str> {
    let trusted = &generation.trusted_proxies;
    match &limit.counter_key {
        CounterKey::Constant(c) => Cow::Borrowed(c),
        CounterKey::Subscription => Cow::Borrowed(
            ctx.subscription
                .map_or("", |i| generation.subscriptions.name(i)),
        ),
        CounterKey::Header(name) => req
            .headers
            .get(name)
            .map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes())),
        CounterKey::Claim(claim) => ctx
            .identity
            .as_ref()
            .and_then(|v| v.token().claims.lookup(claim))
            .and_then(claim_to_header_value)
            .map_or(Cow::Borrowed(""), |v| {
                Cow::Owned(String::from_utf8_lossy(v.as_bytes()).into_owned())
            }),
        CounterKey::ClientIp => client_ip(req, peer, trusted).map_or(Cow::Borrowed(""), |ip| {
            Cow::Owned(ip.to_canonical().to_string())
        }),
    }
}

/// The connection's peer address.
pub fn peer(session: &pingora_proxy::Session) -> Option<IpAddr> {
    session
        .downstream_session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client's address: the peer's, or the one a trusted proxy forwarded.
fn client_ip(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    trusted: &[portcullis_config::IpNet],
) -> Option<IpAddr> {
    crate::identity::client_ip(req, peer, trusted)
}

/// Check (and, for an unconditional count, add) one call; `Some`: the refusal. A call the store
/// could not count passes (fail-open) or is refused with 503 (`rate-limit-store-failure: closed`).
async fn apply_limit(
    gw: &Gateway,
    step: &Arc<LimitStep>,
    key: Cow<'_, str>,
    ctx: &mut Ctx,
) -> Option<Answer> {
    let limit = &step.limit;
    let now = unix_now_ms();
    let unconditional = limit.increment_condition == portcullis_config::IncrementCondition::Any;
    if let Some(bandwidth) = limit.bandwidth_kb {
        match gw
            .limits
            .hit(&step.kilobytes(&key, bandwidth, 1, false), now)
            .await
        {
            Counted::Yes(v) if !v.allowed => {
                return Some(quota_exceeded(Quota::Bandwidth, v.retry_after_ms));
            }
            Counted::Failed(_) if gw.limits.fail_closed() => {
                return Some(rate_limit_store_unavailable());
            }
            _ => {}
        }
    }
    if let Some(calls) = limit.calls {
        let verdict = match gw
            .limits
            .hit(&step.calls(&key, calls, unconditional), now)
            .await
        {
            Counted::Yes(v) => v,
            Counted::Untracked => {
                gw.metrics.rate_limit_untracked.inc();
                return None;
            }
            Counted::Failed(_) if gw.limits.fail_closed() => {
                return Some(rate_limit_store_unavailable());
            }
            Counted::Failed(_) => return None,
        };
        let mut headers = Vec::new();
        if let Some(name) = &limit.remaining_calls_header_name {
            headers.push((name.clone(), HeaderValue::from(verdict.remaining)));
        }
        if let Some(name) = &limit.total_calls_header_name {
            headers.push((name.clone(), HeaderValue::from(calls)));
        }
        if !verdict.allowed {
            let secs = verdict.retry_after_ms.div_ceil(1000).max(1);
            let mut answer = if limit.sliding() {
                rate_limited(secs, limit.retry_after_header_name.clone())
            } else {
                quota_exceeded(Quota::Calls, verdict.retry_after_ms)
            };
            answer.headers.extend(headers);
            return Some(answer);
        }
        ctx.response_headers.extend(headers);
    }
    if !unconditional || limit.bandwidth_kb.is_some() {
        ctx.pending.push(Pending {
            step: step.clone(),
            key: key.into_owned(),
            calls: !unconditional && limit.calls.is_some(),
        });
    }
    None
}

/// At the end of a request: the counts that waited for the response (increment conditions,
/// bandwidth). `status` is the response status; `bytes` the body bytes sent to the client.
pub async fn outbound_count(gw: &Gateway, ctx: &mut Ctx, status: u16, bytes: usize) {
    let now = unix_now_ms();
    for p in ctx.pending.drain(..) {
        let step = &p.step;
        if !step.limit.increment_condition.counts(status) {
            continue;
        }
        if p.calls {
            let _ = gw
                .limits
                .hit(&step.calls(&p.key, u64::MAX, true), now)
                .await;
        }
        if step.limit.bandwidth_kb.is_some() {
            let kb = u64::try_from(bytes.div_ceil(1024)).unwrap_or(u64::MAX);
            let _ = gw
                .limits
                .hit(&step.kilobytes(&p.key, u64::MAX, kb, true), now)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rewrite(path: Vec<Piece>, query: Option<Vec<Piece>>, copy: bool) -> RewriteUri {
        RewriteUri {
            template: String::new(),
            path,
            query,
            named: vec!["x".to_owned()],
            copy_unmatched_params: copy,
        }
    }

    fn text(t: &str) -> Piece {
        Piece::Text(t.to_owned())
    }

    fn param(n: &str) -> Piece {
        Piece::Param(Arc::from(n))
    }

    fn run(
        r: &RewriteUri,
        params: &[(Arc<str>, String)],
        target: &str,
        current: Option<&str>,
    ) -> Option<(String, Option<String>)> {
        let req = pingora_http::RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        let vars = Vec::new();
        let view = View {
            req: &req,
            peer: None,
            trusted: &[],
            params,
            identity: None,
            vars: &vars,
            subscription: None,
        };
        rewritten(
            r,
            current,
            &portcullis_route::Normalization::default(),
            &view,
        )
    }

    #[test]
    fn rewrite_inserts_parameters_and_refuses_what_is_not_canonical() {
        let r = rewrite(
            vec![text("/v2/"), param("id")],
            Some(vec![text("x="), param("id")]),
            true,
        );
        let params = vec![(Arc::from("id"), "a&b=c".to_owned())];
        let (path, query) = run(&r, &params, "/", Some("x=1&y=%7e")).unwrap();
        assert_eq!(path, "/v2/a&b=c");
        assert_eq!(query.as_deref(), Some("x=a%26b%3Dc&y=%7e"));
        // A value that climbs (from a query source) is refused, never forwarded.
        let p = portcullis_config::Value::parse("${query:p}").unwrap();
        let source = p.parts()[0].clone();
        let r = rewrite(
            vec![text("/v2/"), Piece::Source(source.clone())],
            None,
            false,
        );
        assert!(run(&r, &[], "/?p=..%2F..%2F..", None).is_none());
        assert!(run(&r, &[], "/?p=%2e%2e", None).is_some(), "/v2/.. is /");
        let r = rewrite(vec![text("/"), Piece::Source(source)], None, false);
        assert!(run(&r, &[], "/?p=..", None).is_none());
        // A source is encoded as one segment: its `/` becomes `%2F`, refused as in requests.
        let r = rewrite(
            vec![text("/a/"), Piece::Source(p.parts()[0].clone())],
            None,
            false,
        );
        assert!(run(&r, &[], "/?p=x/y", None).is_none());
        assert_eq!(run(&r, &[], "/?p=x%20y", None).unwrap().0, "/a/x%20y");
        // An absent parameter is empty; the path is canonicalised.
        let r = rewrite(vec![text("/a/"), param("zz"), text("/b")], None, true);
        let (path, query) = run(&r, &[], "/", Some("q")).unwrap();
        assert_eq!((path.as_str(), query.as_deref()), ("/a/b", Some("q")));
    }
}
