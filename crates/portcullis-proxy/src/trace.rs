//! Recording what the request path decided, for `portcullis explain` and for a traced request
//! (`server.trace`): a [`Recorder`] in the request's context that the route matching, the
//! pipeline's steps and `validate-jwt` write into, and the bounded ring ([`Traces`]) that keeps
//! the explanations of traced requests for the admin listener's `/trace/<id>`.
//!
//! Why a recorder rather than a second implementation: explain must say what the gateway does,
//! so it runs the gateway's own code ([`crate::proxy::Gateway::decide`]) with a recorder in the
//! context; a live request with the trace key runs the same code with one. Without a recorder
//! (every other request) each recording point is one `Option` check: no allocation, no
//! formatting.
//!
//! Secrets: a recorder never keeps a whole token (its first characters and length), a signature,
//! the trace key, a header value a `set-header` renders (it may come from a named value holding a
//! key), a `set-variable` value, or a counter key read from a header.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use parking_lot::Mutex;
use pingora_http::RequestHeader;
use portcullis_auth::UnixTime;
use portcullis_config::TraceSettings;
use portcullis_explain::{fix_for, Explanation, Outcome, StepNote, Verdict};

use crate::respond::Answer;

/// Response header naming where a traced request's explanation waits.
pub const TRACE_LOCATION: &str = "portcullis-trace-location";

/// What one request decided, as it goes.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The explanation so far.
    pub explanation: Explanation,
    /// The time tokens are judged at (`explain --at`); `None`: the clock.
    pub at: Option<UnixTime>,
    /// The trace id (`/trace/<id>`) of a live traced request; empty for explain.
    pub id: String,
}

impl Recorder {
    /// A recorder for a request whose target and method are those of `req`.
    pub fn new(req: &RequestHeader, id: String, at: Option<UnixTime>) -> Recorder {
        let mut explanation = Explanation {
            at: at.unwrap_or_else(crate::auth::unix_now).secs(),
            ..Explanation::default()
        };
        explanation.request.method = req.method.to_string();
        explanation.request.target = req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.to_string(), |p| p.as_str().to_owned());
        Recorder {
            explanation,
            at,
            id,
        }
    }

    /// Hides the value of the query parameter `name` in the recorded target: a token or a
    /// subscription key sent in the query is a secret, and an explanation (served by the admin
    /// listener for a live request) never carries one.
    pub fn hide_query_parameter(&mut self, name: &str) {
        let target = &mut self.explanation.request.target;
        let Some((path, query)) = target.split_once('?') else {
            return;
        };
        let hidden: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if percent_encoding::percent_decode_str(k).decode_utf8_lossy() == name =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        *target = format!("{path}?{}", hidden.join("&"));
    }

    /// A step and its verdict.
    pub fn step(&mut self, step: impl Into<String>, verdict: Verdict, detail: impl Into<String>) {
        self.explanation.steps.push(StepNote {
            step: step.into(),
            verdict,
            detail: detail.into(),
            fix: None,
        });
    }

    /// A failed step, with its fix sentence (the reason's general one when `fix` is `None`).
    pub fn failed(
        &mut self,
        step: impl Into<String>,
        reason: &str,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.explanation.steps.push(StepNote {
            step: step.into(),
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: fix.or_else(|| fix_for(reason).map(str::to_owned)),
        });
    }

    /// The end: the gateway's answer (`None`: forwarded; `reason` then is the report-only reason,
    /// if any).
    pub fn finish(&mut self, answer: Option<&Answer>, report_only: Option<&'static str>) {
        let failed = self
            .explanation
            .steps
            .iter()
            .rev()
            .find(|s| s.verdict == Verdict::Fail);
        let outcome = match answer {
            Some(a) => {
                let refusal = a.status >= 400;
                let answered_by = self
                    .explanation
                    .steps
                    .iter()
                    .rev()
                    .find(|s| s.verdict == Verdict::Answer);
                let step = if refusal { failed } else { answered_by };
                let summary = match step {
                    Some(s) => format!("{}: {}", s.step, s.detail),
                    None if a.reason == crate::metrics::REASON_NO_ROUTE => {
                        "no route matches the request".to_owned()
                    }
                    None => format!("the gateway answers {} ({})", a.status, a.reason),
                };
                Outcome {
                    passed: !refusal,
                    forwarded: false,
                    status: Some(a.status),
                    reason: a.reason.to_owned(),
                    body: a.body.clone(),
                    failed_step: step.filter(|_| refusal).map(|s| s.step.clone()),
                    summary,
                    fix: step
                        .and_then(|s| s.fix.clone())
                        .or_else(|| fix_for(a.reason).map(str::to_owned)),
                }
            }
            None => {
                let summary = match (report_only, failed) {
                    (Some(r), Some(s)) => format!(
                        "forwarded because the policy is `mode: report-only`; enforced, it would be refused ({r}) at {}: {}",
                        s.step, s.detail
                    ),
                    _ => "every step passed: the request is forwarded to the backend".to_owned(),
                };
                Outcome {
                    passed: true,
                    forwarded: true,
                    status: None,
                    reason: report_only.unwrap_or(crate::metrics::REASON_OK).to_owned(),
                    body: None,
                    failed_step: failed
                        .filter(|_| report_only.is_some())
                        .map(|s| s.step.clone()),
                    summary,
                    fix: failed
                        .filter(|_| report_only.is_some())
                        .and_then(|s| s.fix.clone()),
                }
            }
        };
        self.explanation.outcome = outcome;
    }
}

/// The trace settings of a running config, with the key as bytes for the comparison.
#[derive(Debug)]
pub struct TraceKey {
    settings: TraceSettings,
}

impl TraceKey {
    /// From the config.
    pub fn new(settings: TraceSettings) -> TraceKey {
        TraceKey { settings }
    }

    /// Takes the trace header off the request (it is never forwarded) and says whether it holds
    /// the key (compared in constant time).
    pub fn take(&self, req: &mut RequestHeader) -> bool {
        let Some(sent) = req.remove_header(&self.settings.header) else {
            return false;
        };
        let key = self.settings.key.expose().as_bytes();
        aws_lc_rs::constant_time::verify_slices_are_equal(sent.as_bytes(), key).is_ok()
    }
}

/// The explanations of traced requests: at most `capacity`, each for `ttl`. Shared by the proxy
/// (which adds) and the admin listener (which reads).
#[derive(Debug)]
pub struct Traces {
    entries: Mutex<VecDeque<(String, Instant, Arc<str>)>>,
    capacity: usize,
    ttl: Duration,
}

impl Traces {
    /// An empty ring.
    pub fn new(capacity: usize, ttl: Duration) -> Traces {
        Traces {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Keep a request's explanation (the oldest goes when full).
    pub fn put(&self, id: String, explanation: &Explanation) {
        let json: Arc<str> = serde_json::to_string(explanation)
            .unwrap_or_default()
            .into();
        let now = Instant::now();
        let mut entries = self.entries.lock();
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.retain(|(_, at, _)| now.duration_since(*at) < self.ttl);
        entries.push_back((id, now, json));
    }

    /// A kept explanation (JSON), unless it expired.
    pub fn get(&self, id: &str) -> Option<Arc<str>> {
        let now = Instant::now();
        let entries = self.entries.lock();
        entries
            .iter()
            .rev()
            .find(|(i, at, _)| i == id && now.duration_since(*at) < self.ttl)
            .map(|(_, _, json)| json.clone())
    }
}

/// The `Portcullis-Trace-Location` value for a trace id.
pub fn location(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("/trace/{id}")).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ring_is_bounded_and_expires() {
        let t = Traces::new(2, Duration::from_secs(60));
        let e = Explanation::default();
        t.put("a".into(), &e);
        t.put("b".into(), &e);
        t.put("c".into(), &e);
        assert!(t.get("a").is_none(), "the oldest went");
        assert!(t.get("b").is_some() && t.get("c").is_some());
        let t = Traces::new(2, Duration::ZERO);
        t.put("a".into(), &e);
        assert!(t.get("a").is_none(), "expired");
    }
}
