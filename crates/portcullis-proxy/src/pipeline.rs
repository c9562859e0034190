//! A policy's inbound statements as steps, and the one loop that runs them.
//!
//! Each step sees the request, the client address and the verified token once `validate-jwt` has
//! run, and either passes (possibly adding headers every answer to the request carries, or a count
//! to make when the response is known) or answers ([`Answer`]). The proxy's hooks call [`inbound`]
//! once and [`outbound_count`] once; a new statement kind is a new [`Step`] arm here, never a new
//! hook. As in APIM, a CORS preflight runs the `cors` step only, and `cors` is evaluated before the
//! other steps whatever its place, so the gateway's own 401/403/429 carry the CORS headers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora_error::Result;
use pingora_proxy::Session;
use portcullis_auth::{claim_headers, claim_to_header_value, failure_response, RequestParts};
use portcullis_config::{
    CheckHeader, CounterKey, HeaderCheck, IpFilter, Limit, LimitKind, PolicyModel, Statement,
};

use crate::auth::{authenticate, unix_now_ms};
use crate::cors;
use crate::limits::{Counted, Hit};
use crate::proxy::{Ctx, Gateway};
use crate::respond::{
    caller_ip_forbidden, header_check_failed, quota_exceeded, rate_limit_store_unavailable,
    rate_limited, Answer, Quota,
};

/// One step of a policy.
#[derive(Debug, Clone)]
pub enum Step {
    /// `cors` (run first; see the module docs).
    Cors(Arc<portcullis_config::Cors>),
    /// `validate-jwt` with the policy's claim rules.
    ValidateJwt,
    /// `rate-limit`, `rate-limit-by-key`, `quota-by-key`.
    Limit(Arc<Limit>),
    /// `ip-filter` on the client address (`server.trusted-proxies` honoured).
    IpFilter(Arc<IpFilter>),
    /// `check-header`.
    CheckHeader(Arc<CheckHeader>),
}

/// A policy's steps in order.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    steps: Vec<Step>,
    cors: Option<Arc<portcullis_config::Cors>>,
}

impl Pipeline {
    /// The steps of a checked policy.
    pub fn from_model(p: &PolicyModel) -> Pipeline {
        let steps: Vec<Step> = p
            .inbound
            .iter()
            .map(|s| match s {
                Statement::Cors(c) => Step::Cors(c.clone()),
                Statement::ValidateJwt => Step::ValidateJwt,
                Statement::Limit(l) => Step::Limit(l.clone()),
                Statement::IpFilter(f) => Step::IpFilter(f.clone()),
                Statement::CheckHeader(c) => Step::CheckHeader(c.clone()),
            })
            .collect();
        let cors = steps.iter().find_map(|s| match s {
            Step::Cors(c) => Some(c.clone()),
            _ => None,
        });
        Pipeline { steps, cors }
    }

    /// Whether the policy has a `cors` statement (preflights are then matched by the method they
    /// ask about).
    pub fn has_cors(&self) -> bool {
        self.cors.is_some()
    }
}

/// A count to make once the response status (and size) is known.
#[derive(Debug)]
pub struct Pending {
    limit: Arc<Limit>,
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
        match cors::evaluate(c, session.req_header()) {
            cors::Verdict::Answer(a) => return Ok(Some(a)),
            cors::Verdict::Continue(headers) => ctx.response_headers.extend(headers),
        }
    }
    for step in &pipeline.steps {
        match step {
            Step::Cors(_) => {}
            Step::ValidateJwt => {
                let started = Instant::now();
                let req = session.req_header();
                let parts = RequestParts {
                    headers: &req.headers,
                    query: req.uri.query(),
                };
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
                    Err(err) => {
                        let rendered = failure_response(&err, policy);
                        let mut answer = Answer {
                            status: rendered.status,
                            reason: err.reason(),
                            body: Some(rendered.body),
                            headers: Vec::new(),
                        };
                        if let Ok(v) = HeaderValue::from_str(&rendered.www_authenticate) {
                            answer = answer.with(http::header::WWW_AUTHENTICATE, v);
                        }
                        return Ok(Some(answer));
                    }
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
            Step::Limit(limit) => {
                let key = counter_key(limit, session, ctx, &generation.trusted_proxies);
                if let Some(answer) = apply_limit(gw, limit, key, ctx).await {
                    return Ok(Some(answer));
                }
            }
        }
    }
    Ok(None)
}

/// The counter key of a request for a statement.
fn counter_key(
    limit: &Limit,
    session: &Session,
    ctx: &Ctx,
    trusted: &[portcullis_config::IpNet],
) -> String {
    match &limit.counter_key {
        CounterKey::Constant(c) => c.clone(),
        CounterKey::Header(name) => session
            .req_header()
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        CounterKey::Claim(claim) => ctx
            .identity
            .as_ref()
            .and_then(|v| v.token().claims.lookup(claim))
            .and_then(claim_to_header_value)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        CounterKey::ClientIp => client_ip(session, trusted)
            .map(|ip| ip.to_canonical().to_string())
            .unwrap_or_default(),
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

fn period_ms(limit: &Limit) -> u64 {
    u64::try_from(limit.renewal_period.as_millis()).unwrap_or(u64::MAX)
}

/// Check (and, for an unconditional count, add) one call; `Some`: the refusal. A call the store
/// could not count passes (fail-open) or is refused with 503 (`rate-limit-store-failure: closed`).
async fn apply_limit(
    gw: &Gateway,
    limit: &Arc<Limit>,
    key: String,
    ctx: &mut Ctx,
) -> Option<Answer> {
    let now = unix_now_ms();
    let sliding = limit.kind != LimitKind::QuotaByKey;
    let unconditional = limit.increment_condition == portcullis_config::IncrementCondition::Any;
    if let Some(bandwidth) = limit.bandwidth_kb {
        let id = format!("{}/kb", limit.id);
        let look = Hit {
            id: &id,
            key: &key,
            period_ms: period_ms(limit),
            limit: bandwidth,
            amount: 1,
            sliding: false,
            commit: false,
        };
        match gw.limits.hit(&look, now).await {
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
        let hit = Hit {
            id: &limit.id,
            key: &key,
            period_ms: period_ms(limit),
            limit: calls,
            amount: limit.increment_count,
            sliding,
            commit: unconditional,
        };
        let verdict = match gw.limits.hit(&hit, now).await {
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
            let mut answer = if sliding {
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
            limit: limit.clone(),
            key,
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
        let limit = &p.limit;
        if !limit.increment_condition.counts(status) {
            continue;
        }
        if p.calls {
            let hit = Hit {
                id: &limit.id,
                key: &p.key,
                period_ms: period_ms(limit),
                limit: u64::MAX,
                amount: limit.increment_count,
                sliding: limit.kind != LimitKind::QuotaByKey,
                commit: true,
            };
            let _ = gw.limits.hit(&hit, now).await;
        }
        if limit.bandwidth_kb.is_some() {
            let id = format!("{}/kb", limit.id);
            let kb = u64::try_from(bytes.div_ceil(1024)).unwrap_or(u64::MAX);
            let hit = Hit {
                id: &id,
                key: &p.key,
                period_ms: period_ms(limit),
                limit: u64::MAX,
                amount: kb,
                sliding: false,
                commit: true,
            };
            let _ = gw.limits.hit(&hit, now).await;
        }
    }
}
