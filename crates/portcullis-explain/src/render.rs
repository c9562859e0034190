//! The text `portcullis explain` prints: the explanation top to bottom in the order the gateway
//! decided, in words; `--json` prints the [`Explanation`] itself.

use std::fmt::Write;

use crate::model::{Explanation, Verdict};

/// The explanation as text for a terminal.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let r = &e.request;
    let _ = writeln!(out, "Request     {} {}", r.method, r.target);
    if let Some(id) = &r.request_id {
        let _ = writeln!(out, "Request id  {id}");
    }
    match (&r.canonical_path, &r.host) {
        (Some(path), host) => {
            let host = host.as_deref().unwrap_or("(none)");
            let _ = writeln!(out, "Canonical   host {host}, path {path}");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "Canonical   (the request target could not be made canonical)"
            );
        }
    }
    if !e.routes.is_empty() {
        let _ = writeln!(out, "\nRoutes (first match wins)");
        let width = e.routes.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &e.routes {
            let verdict = if c.matched { "chosen" } else { "no" };
            let why = c.why_not.as_deref().unwrap_or("matches");
            let _ = writeln!(out, "  {verdict:<6}  {:<width$}  {why}", c.name);
        }
    }
    if let Some(route) = &e.route {
        let policy = e
            .policy
            .as_deref()
            .map_or("no policy: anonymous".to_owned(), |p| format!("policy {p}"));
        let _ = writeln!(out, "\nRoute {route} ({policy})");
    }
    if !e.steps.is_empty() {
        let _ = writeln!(out, "\nSteps");
        for (i, s) in e.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>2}. {:<6}  {}: {}",
                i + 1,
                s.verdict.word(),
                s.step,
                s.detail
            );
        }
    }
    if let Some(t) = &e.token {
        let _ = writeln!(out, "\nToken ({}, {})", t.source, t.excerpt);
        let header = serde_json::Value::Object(t.header.clone());
        let _ = writeln!(out, "  header     {header}");
        let _ = writeln!(out, "  signature  {}", t.signature);
        if let Some(claims) = &t.claims {
            let trust = if t.claims_verified {
                "claims"
            } else {
                "claims (NOT verified: decoded only to help)"
            };
            let _ = writeln!(out, "  {trust}");
            let pretty = serde_json::to_string_pretty(&serde_json::Value::Object(claims.clone()))
                .unwrap_or_default();
            for line in pretty.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        if !t.rules.is_empty() {
            let _ = writeln!(out, "  rules");
            for rule in &t.rules {
                let _ = writeln!(
                    out,
                    "    {:<6}  {}: expected {}; found {}",
                    rule.verdict.word(),
                    rule.rule,
                    rule.expected.join(" | "),
                    if rule.found.is_empty() {
                        "(nothing)".to_owned()
                    } else {
                        rule.found.join(", ")
                    }
                );
            }
        }
    }
    let o = &e.outcome;
    let _ = writeln!(out);
    match o.status {
        Some(status) => {
            let _ = writeln!(out, "Answer      {status} {}", o.reason);
            if let Some(body) = o.body.as_deref().filter(|b| !b.is_empty()) {
                let _ = writeln!(out, "Body        {body}");
            }
        }
        None => {
            let _ = writeln!(out, "Answer      forwarded to the backend ({})", o.reason);
        }
    }
    if let Some(step) = &o.failed_step {
        let _ = writeln!(out, "Failed at   {step}");
    }
    let _ = writeln!(out, "Why         {}", o.summary);
    if let Some(fix) = &o.fix {
        let _ = writeln!(out, "Fix         {fix}");
    }
    let verdict = if o.passed { "PASS" } else { "REFUSED" };
    let _ = writeln!(out, "Verdict     {verdict}");
    let _ = Verdict::Pass;
    out
}
