//! The route keys `health-check:` (active health checks of the route's upstreams) and
//! `dns-refresh:` (how often upstream host names are resolved again).
//!
//! Why these defaults: they are the common ground of the proxies operators already know. Envoy
//! requires `interval` and `timeout` and has no default for them; its healthy threshold is what
//! most configs set to 2, unhealthy 3 (Kong: 0 = off, nginx plus: `passes=1 fails=1`, interval
//! 5 s). A 10 s interval with a 2 s timeout keeps probe traffic negligible (one request per peer
//! every 10 s) while an unhealthy peer leaves within 3 x 10 s. `expected-statuses` defaults to
//! 200-399 as nginx plus' `match` does without a status test (Envoy: 200 only; Kong: a list of
//! 2xx and 3xx): a health endpoint that redirects is up.

use std::ops::RangeInclusive;
use std::time::Duration;

use portcullis_route::{canonical_path, Normalization};

use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node};

/// `interval` when not given.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// `timeout` when not given.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// `healthy-threshold` when not given.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// `unhealthy-threshold` when not given.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// `dns-refresh` when not given.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Largest threshold accepted (a typo guard: 1000 probes is already hours at the default interval).
const MAX_THRESHOLD: i128 = 1000;

/// A route's active health check: an HTTP/1.1 GET of `path` on every peer, every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path probed (canonical, starts with `/`, no query).
    pub path: String,
    /// Time between the end of one probe and the start of the next, per peer.
    pub interval: Duration,
    /// A probe that has not received the response head by then fails.
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy peer back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy peer out of the rotation.
    pub unhealthy_threshold: u32,
    /// Statuses that count as success (inclusive ranges).
    pub expected_statuses: Vec<RangeInclusive<u16>>,
    /// `Host` header of the probe (`None`: the upstream's host and port as written).
    pub host: Option<String>,
}

impl HealthCheck {
    /// Whether a response status counts as a success.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses.iter().any(|r| r.contains(&status))
    }
}

/// The route key `health-check:`.
pub(crate) fn read_health_check(cx: &mut Cx, node: &Node) -> Option<HealthCheck> {
    let keys = [
        "path",
        "interval",
        "timeout",
        "healthy-threshold",
        "unhealthy-threshold",
        "expected-statuses",
        "host",
    ];
    let f = Fields::new(cx, node, "health-check", &keys)?;
    let errors = cx.errors();
    let path = match f.get("path") {
        Some(n) => probe_path(cx, n),
        None => {
            cx.error(f.pos, "health-check needs `path` (e.g. `/healthz`)");
            None
        }
    };
    let interval = f
        .get("interval")
        .and_then(|n| walk::positive_duration(cx, n, "interval"))
        .unwrap_or(DEFAULT_HEALTH_INTERVAL);
    let timeout = f
        .get("timeout")
        .and_then(|n| walk::positive_duration(cx, n, "timeout"))
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT);
    let threshold = |cx: &mut Cx, key: &str, default: u32| {
        f.get(key)
            .and_then(|n| walk::integer_in(cx, n, key, 1, MAX_THRESHOLD))
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(default)
    };
    let healthy_threshold = threshold(cx, "healthy-threshold", DEFAULT_HEALTHY_THRESHOLD);
    let unhealthy_threshold = threshold(cx, "unhealthy-threshold", DEFAULT_UNHEALTHY_THRESHOLD);
    let expected_statuses = match f.get("expected-statuses") {
        Some(n) => statuses(cx, n),
        None => vec![200..=399],
    };
    let host = f.get("host").and_then(|n| {
        let text = walk::non_empty(cx, n, "host")?;
        if http::HeaderValue::from_str(text).is_err() || text.contains([' ', '/', '\t']) {
            cx.error(n.pos, format!("`host` is not a host name: `{text}`"));
            return None;
        }
        Some(text.to_owned())
    });
    let check = HealthCheck {
        path: path?,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_statuses,
        host,
    };
    (cx.errors() == errors).then_some(check)
}

/// `path`: canonical (what the backend receives is what is written), no query or fragment.
fn probe_path(cx: &mut Cx, node: &Node) -> Option<String> {
    let text = walk::non_empty(cx, node, "path")?;
    if !text.starts_with('/') || text.contains(['?', '#']) {
        cx.error(
            node.pos,
            format!("`path` is a path starting with `/` (no query or fragment), found `{text}`"),
        );
        return None;
    }
    match canonical_path(text, &Normalization::default()) {
        Ok(c) if c == text => Some(text.to_owned()),
        Ok(c) => {
            cx.error(
                node.pos,
                format!("`path` is not in canonical form: write `{c}`, not `{text}`"),
            );
            None
        }
        Err(refusal) => {
            cx.error(
                node.pos,
                format!("`path` `{text}` is not a valid path ({})", refusal.reason()),
            );
            None
        }
    }
}

/// `expected-statuses`: a list of codes (`204`) and ranges (`"200-299"`), each within 100-599.
fn statuses(cx: &mut Cx, node: &Node) -> Vec<RangeInclusive<u16>> {
    let Some(items) = walk::list(cx, node, "expected-statuses") else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(
            node.pos,
            "`expected-statuses` is empty: no probe could succeed",
        );
    }
    let mut out = Vec::new();
    for item in items {
        let range = match &item.kind {
            Kind::Int(_) => walk::integer_in(cx, item, "expected-statuses", 100, 599)
                .and_then(|v| u16::try_from(v).ok())
                .map(|code| code..=code),
            Kind::Str { value, .. } => status_range(value),
            _ => None,
        };
        match range {
            Some(r) => out.push(r),
            None if matches!(item.kind, Kind::Int(_)) => {}
            None => cx.error(
                item.pos,
                format!(
                    "`expected-statuses` items are status codes (`204`) or ranges (`\"200-299\"`) within 100-599, found {}",
                    describe(item)
                ),
            ),
        }
    }
    out
}

fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Str { value, .. } => format!("`{value}`"),
        other => other.describe().to_owned(),
    }
}

/// `"200"` or `"200-299"` (low <= high, both within 100-599).
fn status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let (low, high) = match text.split_once('-') {
        Some((l, h)) => (code(l)?, code(h)?),
        None => {
            let c = code(text)?;
            (c, c)
        }
    };
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(status_range("200-299"), Some(200..=299));
        assert_eq!(status_range(" 204 "), Some(204..=204));
        assert_eq!(status_range("299-200"), None);
        assert_eq!(status_range("200-600"), None);
        assert_eq!(status_range("2xx"), None);
        assert_eq!(status_range(""), None);
    }
}
