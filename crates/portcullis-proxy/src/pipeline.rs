//! A policy's inbound statements as steps, and the one loop that runs them.
//!
//! Each step sees the request, the client address and the verified token once `validate-jwt` has
//! run, and either passes (possibly adding headers every answer to the request carries, or a count
//! to make when the response is known) or answers ([`Answer`]). The proxy's hooks call [`inbound`]
//! once and [`outbound_count`] once; a new statement kind is a new [`Step`] arm here, never a new
//! hook. As in APIM, a CORS preflight runs the `cors` step only, and `cors` is evaluated before the
//! other steps whatever its place, so the gateway's own 401/403/429 carry the CORS headers.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora_error::Result;
use pingora_proxy::Session;
use portcullis_auth::{claim_headers, claim_to_header_value, RequestParts};
use portcullis_config::{
    CheckHeader, CounterKey, HeaderCheck, IpFilter, Limit, PolicyModel, Statement,
};

use crate::auth::{authenticate, unix_now_ms};
use crate::cors;
use crate::limits::{Counted, Hit};
use crate::proxy::{Ctx, Gateway};
use crate::respond::{
    caller_ip_forbidden, header_check_failed, quota_exceeded, rate_limit_store_unavailable,
    rate_limited, token_rejected, Answer, Quota,
};

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
}

/// A policy's steps in order.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    cors: Option<cors::CorsPolicy>,
}

impl Pipeline {
    /// The steps of a checked policy.
    pub fn from_model(p: &PolicyModel) -> Pipeline {
        let steps: Vec<Step> = p
            .inbound
            .iter()
            .map(|s| match s {
                Statement::Cors(_) => Step::Cors,
                Statement::ValidateJwt => Step::ValidateJwt,
                Statement::Limit(l) => Step::Limit(Arc::new(LimitStep::new(l))),
                Statement::IpFilter(f) => Step::IpFilter(f.clone()),
                Statement::CheckHeader(c) => Step::CheckHeader(c.clone()),
            })
            .collect();
        Pipeline {
            steps,
            cors: p.cors().map(|c| cors::CorsPolicy::new(c.clone())),
        }
    }
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

/// Run the route's policy. `Some(answer)`: the request ends here with that answer.
pub async fn inbound(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<Option<Answer>> {
    let generation = ctx.generation.clone();
    let Some(route) = ctx.route.and_then(|i| generation.routes.get(i)) else {
        return Ok(None);
    };
    let Some(policy_id) = route.policy else {
        return Ok(None);
    };
    let Some(runtime) = generation.policy(policy_id) else {
        return Ok(None);
    };
    let (policy, pipeline) = (&runtime.policy, &runtime.pipeline);
    if let Some(c) = &pipeline.cors {
        match c.evaluate(session.req_header()) {
            cors::Verdict::Answer(a) => return Ok(Some(a)),
            cors::Verdict::Continue(headers) => ctx.response_headers.extend(headers),
        }
    }
    for step in &pipeline.steps {
        match step {
            Step::Cors => {}
            Step::ValidateJwt => {
                let started = Instant::now();
                let req = session.req_header();
                let parts = RequestParts {
                    headers: &req.headers,
                    query: req.uri.query(),
                };
                // token-optional: no token at all passes with no identity (the client's copies of
                // the identity headers were stripped before the pipeline); a present one is checked.
                if policy.token_optional && policy.token_source.absent(&parts) {
                    continue;
                }
                let outcome = authenticate(
                    &parts,
                    policy,
                    &generation.keys,
                    policy_id,
                    &generation.token_cache,
                )
                .await;
                let result = if outcome.is_ok() { "ok" } else { "rejected" };
                gw.metrics
                    .validation
                    .with_label_values(&[policy.name.as_str(), result])
                    .observe(started.elapsed().as_secs_f64());
                match outcome {
                    Ok(verified) => {
                        let req = session.req_header_mut();
                        for (name, value) in claim_headers(&verified, policy) {
                            match value {
                                Ok(value) => req.insert_header(name.clone(), value)?,
                                Err(why) => gw.claim_refused(route, policy, name, why),
                            }
                        }
                        ctx.identity = Some(verified);
                    }
                    Err(err) if policy.report_only => {
                        ctx.reason = Some(err.reason());
                        gw.metrics
                            .report_only
                            .with_label_values(&[
                                route.name.as_str(),
                                policy.name.as_str(),
                                err.reason(),
                            ])
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
            }
            Step::IpFilter(filter) => {
                let ip = client_ip(session, &generation.trusted_proxies);
                if !filter.permits(ip) {
                    return Ok(Some(caller_ip_forbidden()));
                }
            }
            Step::CheckHeader(check) => match check.check(&session.req_header().headers) {
                HeaderCheck::Passed => {}
                failed => return Ok(Some(header_check_failed(check, failed))),
            },
            Step::Limit(step) => {
                let key = counter_key(&step.limit, session, ctx, &generation.trusted_proxies);
                if let Some(answer) = apply_limit(gw, step, key, ctx).await {
                    return Ok(Some(answer));
                }
            }
        }
    }
    Ok(None)
}

/// The counter key of a request for a statement (borrowed when it is a constant or a header).
fn counter_key<'a>(
    limit: &'a Limit,
    session: &'a Session,
    ctx: &Ctx,
    trusted: &[portcullis_config::IpNet],
) -> Cow<'a, str> {
    match &limit.counter_key {
        CounterKey::Constant(c) => Cow::Borrowed(c),
        CounterKey::Header(name) => session
            .req_header()
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
        CounterKey::ClientIp => client_ip(session, trusted).map_or(Cow::Borrowed(""), |ip| {
            Cow::Owned(ip.to_canonical().to_string())
        }),
    }
}

/// The client's address: the peer's, or the one a trusted proxy forwarded.
fn client_ip(session: &Session, trusted: &[portcullis_config::IpNet]) -> Option<IpAddr> {
    let peer = session
        .downstream_session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    crate::identity::client_ip(session.req_header(), peer, trusted)
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
