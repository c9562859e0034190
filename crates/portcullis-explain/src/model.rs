//! The explanation of one request: plain data, serialised as the JSON of `portcullis explain
//! --json` and of the admin listener's `/trace/<id>` (the same shape for both).

use serde::{Deserialize, Serialize};

/// Everything the gateway decided about one request, in the order it decided it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    /// The request as received, and its canonical form.
    pub request: RequestSummary,
    /// Every route in file order up to the chosen one (all of them when none matched), with why
    /// each one that was passed over did not match.
    pub routes: Vec<RouteCheck>,
    /// The chosen route (`None`: no route matched, or the request was refused before routing).
    pub route: Option<String>,
    /// The chosen route's policy (`None`: anonymous route).
    pub policy: Option<String>,
    /// Each policy step that ran, with its verdict.
    pub steps: Vec<StepNote>,
    /// The token, when `validate-jwt` looked at one.
    pub token: Option<TokenReport>,
    /// What the client gets.
    pub outcome: Outcome,
    /// The time the token was judged at (Unix seconds).
    pub at: i64,
}

/// The request line and what routing made of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestSummary {
    /// Method.
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    /// The canonical path routes were matched against (`None`: the target could not be made
    /// canonical).
    pub canonical_path: Option<String>,
    /// The canonical host routes were matched against (`None`: the request named none).
    pub host: Option<String>,
    /// `X-Request-Id` (the client's or the generated one).
    pub request_id: Option<String>,
}

/// One route and whether it matched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteCheck {
    /// Route name.
    pub name: String,
    /// It matched (the first one that matches is chosen).
    pub matched: bool,
    /// Why it did not match (`None` when it did).
    pub why_not: Option<String>,
}

/// A step's verdict.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The step let the request go on.
    #[default]
    Pass,
    /// The step refused the request (or would have, under `mode: report-only`).
    Fail,
    /// The step answered the request itself (`return-response`, `mock-response`, a CORS
    /// preflight): not a refusal.
    Answer,
    /// The step did not apply, or was not reached.
    Skip,
    /// A change to the request (a header set, the path rewritten): nothing to pass or fail.
    Change,
}

impl Verdict {
    /// The word the text output shows.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Answer => "answer",
            Verdict::Skip => "skip",
            Verdict::Change => "change",
        }
    }
}

/// One policy step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepNote {
    /// The statement (`validate-jwt`, `rate-limit-by-key`, `set-header X-User`, `choose`...).
    pub step: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// What it saw and did, in words.
    pub detail: String,
    /// For a failed step: what to change.
    pub fix: Option<String>,
}

/// A token as `validate-jwt` saw it. Never the whole token, never its signature.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenReport {
    /// Where it was read (`Authorization: Bearer`, `query parameter access_token`...).
    pub source: String,
    /// Its first characters and its length (`eyJhbGci... (812 chars)`).
    pub excerpt: String,
    /// The decoded JOSE header (`alg`, `kid`, `typ`...).
    pub header: serde_json::Map<String, serde_json::Value>,
    /// The claims: of the verified token, else decoded without trust (see `claims_verified`);
    /// `None` for an encrypted token that could not be decrypted, or a malformed one.
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the claims shown are those of a token whose signature was checked.
    pub claims_verified: bool,
    /// The signature check, in words.
    pub signature: String,
    /// Each claim rule of the policy with the values expected and found.
    pub rules: Vec<RuleCheck>,
}

/// One claim rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleCheck {
    /// The rule (`lifetime`, `issuer`, `audience`, `required claim roles`, `scopes`...).
    pub rule: String,
    /// What the policy accepts.
    pub expected: Vec<String>,
    /// What the token holds.
    pub found: Vec<String>,
    /// `pass`, `fail`, or `skip` (not reached: an earlier rule failed).
    pub verdict: Verdict,
}

/// What the client gets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The request would reach the backend (or was answered by the policy on purpose:
    /// `return-response`, `mock-response`, a CORS preflight). `portcullis explain` exits 0 then.
    pub passed: bool,
    /// The request is forwarded to the backend (the status is then the backend's).
    pub forwarded: bool,
    /// The status of the gateway's answer (`None`: forwarded, the backend answers).
    pub status: Option<u16>,
    /// The reason code (docs/errors.md); `Ok` for a forwarded request.
    pub reason: String,
    /// The body the client reads (the gateway's JSON message), when the gateway answers.
    pub body: Option<String>,
    /// The step that refused the request.
    pub failed_step: Option<String>,
    /// In words: what happened.
    pub summary: String,
    /// What to change so the request passes.
    pub fix: Option<String>,
}
