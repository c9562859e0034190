//! `routes:`: matching, upstreams, timeouts, the policy each route enforces, and the checks that
//! catch a route that can never match.

use std::sync::Arc;
use std::time::Duration;

use portcullis_route::{canonical_host, canonical_path, Normalization, PathTemplate, RouteMatch};

use crate::model::{Route, Upstream, UpstreamProtocol};
use crate::walk::{self, suggest, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "upstream",
    "upstreams",
    "timeout",
    "connect-timeout",
    "strip-prefix",
    "rewrite-prefix",
    "policy",
    "upstream-protocol",
    "upstream-tls",
    "host-header",
    "websocket-idle-timeout",
    "openapi",
    "health-check",
    "dns-refresh",
    "subscription",
];
const MATCH_KEYS: &[&str] = &[
    "host",
    "path",
    "path-prefix",
    "methods",
    "case-sensitive",
    "headers",
    "query",
];

/// Upstream read timeout when `timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream connect timeout when `connect-timeout` is not given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle timeout of an upgraded connection when `websocket-idle-timeout` is not given (long
/// enough for SignalR's and browsers' keep-alive pings, 15-30 s, to keep a socket open).
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A route and where it is written.
struct Placed {
    pos: Pos,
    route: Route,
    /// Read without errors: only such routes take part in the shadowing check.
    clean: bool,
}

/// The URL-template parameters a policy's statements use, by policy name.
pub(crate) type ParamsUsed<'a> = &'a dyn Fn(&str) -> Vec<Arc<str>>;

/// Reads `routes:`; `policies` are the names a route may refer to.
pub(crate) fn read_all(
    cx: &mut Cx,
    node: Option<&Node>,
    policies: &[&str],
    params_used: ParamsUsed<'_>,
    doc: Pos,
    normalisation: &Normalization,
) -> Vec<Route> {
    let Some(node) = node else {
        cx.warning(doc, "no routes: every request is answered 404");
        return Vec::new();
    };
    let Some(items) = walk::list(cx, node, "routes") else {
        return Vec::new();
    };
    let mut placed: Vec<Placed> = Vec::new();
    for item in items {
        let errors_before = cx.errors();
        let Some(mut p) = read_one(cx, item, policies, params_used, normalisation) else {
            continue;
        };
        p.clean = cx.errors() == errors_before;
        if let Some(first) = placed.iter().find(|o| o.route.name == p.route.name) {
            let line = first.pos.line;
            cx.error(
                p.pos,
                format!(
                    "duplicate route name `{}` (first at line {line})",
                    p.route.name
                ),
            );
        } else if let Some(earlier) = placed
            .iter()
            .filter(|o| o.clean && p.clean)
            .find(|o| o.route.matcher.covers(&p.route.matcher))
        {
            cx.error(
                p.pos,
                format!(
                    "route `{}` can never match: route `{}` (line {}) comes first and matches every request it would",
                    p.route.name, earlier.route.name, earlier.pos.line
                ),
            );
        }
        placed.push(p);
    }
    placed.into_iter().map(|p| p.route).collect()
}

fn read_one(
    cx: &mut Cx,
    node: &Node,
    policies: &[&str],
    params_used: ParamsUsed<'_>,
    normalisation: &Normalization,
) -> Option<Placed> {
    let f = Fields::new(cx, node, "route", ROUTE_KEYS)?;
    let (name, pos) = match f.get("name") {
        Some(n) => (walk::non_empty(cx, n, "name").map(str::to_owned), n.pos),
        None => {
            cx.error(f.pos, "route needs a `name`");
            (None, f.pos)
        }
    };
    let label = name.clone().unwrap_or_else(|| "(unnamed)".to_owned());
    let mut route = Route {
        name: label,
        matcher: RouteMatch::default(),
        upstreams: upstreams(cx, &f),
        policy: policy_ref(cx, &f, policies),
        timeout: f
            .get("timeout")
            .and_then(|n| walk::positive_duration(cx, n, "timeout"))
            .unwrap_or(DEFAULT_TIMEOUT),
        connect_timeout: f
            .get("connect-timeout")
            .and_then(|n| walk::positive_duration(cx, n, "connect-timeout"))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        strip_prefix: false,
        rewrite_prefix: None,
        upstream_protocol: UpstreamProtocol::Http1,
        websocket_idle_timeout: f
            .get("websocket-idle-timeout")
            .and_then(|n| walk::positive_duration(cx, n, "websocket-idle-timeout"))
            .unwrap_or(DEFAULT_WEBSOCKET_IDLE_TIMEOUT),
        openapi: f
            .get("openapi")
            .and_then(|n| crate::upstream::read_openapi(cx, n))
            .map(Arc::new),
        upstream_tls: None,
        host_header: f
            .get("host-header")
            .and_then(|n| crate::upstream_tls::host_header(cx, n))
            .unwrap_or_default(),
        health_check: f
            .get("health-check")
            .and_then(|n| crate::health::read_health_check(cx, n)),
        dns_refresh: f
            .get("dns-refresh")
            .and_then(|n| walk::duration(cx, n, "dns-refresh"))
            .unwrap_or(crate::health::DEFAULT_DNS_REFRESH),
        subscription: f.get("subscription").and_then(|n| {
            crate::subscriptions::read_route(cx, n, &mut |cx, node| policy_name(cx, node, policies))
        }),
    };
    if let Some(n) = f.get("upstream-tls") {
        route.upstream_tls =
            crate::upstream_tls::upstream_tls(cx, n, &route.upstreams).map(Arc::new);
    }
    if let Some(n) = f.get("upstream-protocol") {
        route.upstream_protocol = upstream_protocol(cx, n, &route.upstreams).unwrap_or_default();
    }
    if let Some(m) = f.get("match") {
        read_match(cx, m, &mut route, normalisation);
    }
    prefix_rewrites(cx, &f, &mut route, normalisation);
    if let Some(n) = f.get("policy") {
        params_warning(cx, n, &route, params_used);
    }
    Some(Placed {
        pos,
        route: Route {
            name: name?,
            ..route
        },
        clean: true,
    })
}

/// A policy the route runs that uses a URL-template parameter the route's match does not have.
fn params_warning(cx: &mut Cx, n: &Node, route: &Route, params_used: ParamsUsed<'_>) {
    let template = route.matcher.template.as_deref();
    for policy in route.policies().into_iter().flatten() {
        for param in params_used(policy) {
            if !template.is_some_and(|t| t.has(&param)) {
                cx.warning(
                    n.pos,
                    format!(
                        "policy `{policy}` uses the URL-template parameter `{param}`, which this route's match has no `{{{param}}}` for: it is empty here"
                    ),
                );
            }
        }
    }
}

fn read_match(cx: &mut Cx, node: &Node, route: &mut Route, normalisation: &Normalization) {
    let Some(f) = Fields::new(cx, node, "match", MATCH_KEYS) else {
        return;
    };
    let m = &mut route.matcher;
    if let Some(n) = f.get("host") {
        m.host = walk::non_empty(cx, n, "host").and_then(|h| host(cx, n, h));
    }
    if let Some(n) = f.get("case-sensitive") {
        m.case_sensitive = walk::boolean(cx, n, "case-sensitive").unwrap_or(false);
    }
    m.path = f
        .get("path")
        .and_then(|n| path(cx, n, "path", normalisation));
    m.path_prefix = f
        .get("path-prefix")
        .and_then(|n| path(cx, n, "path-prefix", normalisation));
    let templated = |p: &Option<String>| p.as_deref().is_some_and(|p| p.contains('{'));
    if templated(&m.path) || templated(&m.path_prefix) {
        let pos = f
            .get("path")
            .or(f.get("path-prefix"))
            .map_or(f.pos, |n| n.pos);
        if m.path.is_some() && m.path_prefix.is_some() {
            cx.error(
                pos,
                "a URL template goes in `path` or `path-prefix`, not with both: drop `path-prefix`",
            );
            m.path_prefix = None;
        }
        if let Err(e) = m.compile() {
            cx.error(pos, e.to_string());
        }
    } else if let (Some(p), Some(prefix)) = (&m.path, &m.path_prefix) {
        let under = RouteMatch {
            path_prefix: Some(prefix.clone()),
            case_sensitive: m.case_sensitive,
            ..RouteMatch::default()
        };
        if !under.matches(&http::Method::GET, None, p) {
            let pos = f.get("path").map_or(f.pos, |n| n.pos);
            cx.error(
                pos,
                format!("route can never match: path `{p}` is outside path-prefix `{prefix}`"),
            );
        }
    }
    if let Some(n) = f.get("headers") {
        m.headers = header_conditions(cx, n);
    }
    if let Some(n) = f.get("query") {
        m.query = query_conditions(cx, n);
    }
    if let Some(n) = f.get("methods") {
        m.methods = methods(cx, n);
    } else if let Some(k) = f.key("methods") {
        cx.error(
            k.pos,
            "route can never match: `methods` is empty (omit it to match every method)",
        );
    }
}

/// `match.headers: {Name: value}`: header names case-insensitive (so `Api-Version` and
/// `api-version` are the same condition, refused twice), exact string values.
fn header_conditions(cx: &mut Cx, node: &Node) -> Vec<(http::HeaderName, String)> {
    let Some(f) = Fields::open(cx, node, "match.headers") else {
        return Vec::new();
    };
    let mut out: Vec<(http::HeaderName, String)> = Vec::new();
    for (name, key, value) in f.entries() {
        let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
            cx.error(key.pos, format!("`{name}` is not a valid header name"));
            continue;
        };
        if out.iter().any(|(h, _)| *h == header) {
            cx.error(
                key.pos,
                format!("header `{name}` is listed twice (header names are case-insensitive)"),
            );
            continue;
        }
        let Some(text) = walk::string(cx, value, "match.headers") else {
            continue;
        };
        if http::HeaderValue::from_str(text).is_err() {
            cx.error(
                value.pos,
                format!("route can never match: `{text}` is not a valid header value"),
            );
            continue;
        }
        out.push((header, text.to_owned()));
    }
    if out.is_empty() && f.entries().is_empty() {
        cx.error(
            f.pos,
            "`match.headers` is empty (omit it to match any headers)",
        );
    }
    out
}

/// `match.query: {name: value}`: compared with the decoded parameter name and value.
fn query_conditions(cx: &mut Cx, node: &Node) -> Vec<(String, String)> {
    let Some(f) = Fields::open(cx, node, "match.query") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, key, value) in f.entries() {
        if name.is_empty() {
            cx.error(key.pos, "a query parameter needs a name");
            continue;
        }
        if let Some(text) = walk::string(cx, value, "match.query") {
            out.push(((*name).to_owned(), text.to_owned()));
        }
    }
    if f.entries().is_empty() {
        cx.error(f.pos, "`match.query` is empty (omit it to match any query)");
    }
    out
}

fn host(cx: &mut Cx, node: &Node, text: &str) -> Option<String> {
    let bad = text.contains("://") || text.contains(['/', ' ', '?', '#']);
    if bad {
        cx.error(
            node.pos,
            format!("`host` must be a host name such as api.local, found `{text}`"),
        );
        return None;
    }
    if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !text.ends_with(']')
    {
        cx.error(
            node.pos,
            format!("`host` must not carry a port (ports are ignored when matching): `{text}`"),
        );
        return None;
    }
    match canonical_host(text) {
        Ok(h) => Some(h.into_owned()),
        Err(_) => {
            cx.error(
                node.pos,
                format!("`host` must be a host name such as api.local, found `{text}`"),
            );
            None
        }
    }
}

/// A route path: it must be in the canonical form requests are matched in (the same function the
/// proxy runs on every request), so what is written is what is matched.
fn path(cx: &mut Cx, node: &Node, what: &str, normalisation: &Normalization) -> Option<String> {
    let text = walk::non_empty(cx, node, what)?;
    if !text.starts_with('/') {
        cx.error(
            node.pos,
            format!("route can never match: `{what}` must start with '/', found `{text}`"),
        );
        return None;
    }
    if text.contains(['?', '#']) {
        cx.error(
            node.pos,
            format!("`{what}` must not contain a query or fragment: `{text}`"),
        );
        return None;
    }
    if text.contains(['{', '}']) {
        return template(cx, node, what, text, normalisation);
    }
    match canonical_path(text, normalisation) {
        Ok(c) if c == text => Some(text.to_owned()),
        Ok(c) => {
            cx.error(
                node.pos,
                format!("`{what}` is not in canonical form (requests are matched on their canonical path): write `{c}`, not `{text}`"),
            );
            None
        }
        Err(refusal) => {
            cx.error(
                node.pos,
                format!(
                    "route can never match: every request for `{text}` is refused ({})",
                    refusal.reason()
                ),
            );
            None
        }
    }
}

/// A route path with `{name}` segments: a valid template whose literal segments are canonical.
fn template(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    text: &str,
    normalisation: &Normalization,
) -> Option<String> {
    if what == "rewrite-prefix" {
        cx.error(
            node.pos,
            format!("`rewrite-prefix` is a literal path (no URL template): `{text}`"),
        );
        return None;
    }
    let parsed = match PathTemplate::parse(text, what == "path-prefix") {
        Ok(Some(t)) => t,
        Ok(None) => return Some(text.to_owned()),
        Err(e) => {
            cx.error(node.pos, format!("`{what}`: {e}"));
            return None;
        }
    };
    let shape = parsed.placeholder_path();
    let written = if text.len() > 1 && text.ends_with('/') {
        &text[..text.len() - 1]
    } else {
        text
    };
    match canonical_path(&shape, normalisation) {
        Ok(c) if c == shape && written.matches('/').count() == shape.matches('/').count() => {
            Some(text.to_owned())
        }
        Ok(_) | Err(_) => {
            cx.error(
                node.pos,
                format!("`{what}` is not in canonical form (requests are matched on their canonical path; no empty, `.` or `..` segments, escapes only where needed): `{text}`"),
            );
            None
        }
    }
}

fn methods(cx: &mut Cx, node: &Node) -> Vec<http::Method> {
    let Some(items) = walk::list(cx, node, "methods") else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(
            node.pos,
            "route can never match: `methods` is empty (omit it to match every method)",
        );
    }
    let mut out: Vec<http::Method> = Vec::new();
    for item in items {
        let Some(text) = walk::non_empty(cx, item, "methods") else {
            continue;
        };
        if text != text.to_ascii_uppercase() {
            cx.error(
                item.pos,
                format!(
                    "methods are case-sensitive: write `{}`, not `{text}`",
                    text.to_ascii_uppercase()
                ),
            );
            continue;
        }
        match http::Method::from_bytes(text.as_bytes()) {
            Ok(m) if out.contains(&m) => {
                cx.error(item.pos, format!("method `{text}` is listed twice"))
            }
            Ok(m) => out.push(m),
            Err(_) => cx.error(item.pos, format!("`{text}` is not an HTTP method")),
        }
    }
    out
}

fn upstreams(cx: &mut Cx, f: &Fields<'_>) -> Vec<Upstream> {
    match (f.get("upstream"), f.get("upstreams")) {
        (Some(_), Some(n)) => {
            cx.error(n.pos, "route has both `upstream` and `upstreams`: use one");
            Vec::new()
        }
        (Some(n), None) => upstream(cx, n, "upstream").into_iter().collect(),
        (None, Some(n)) => {
            let items = walk::list(cx, n, "upstreams").unwrap_or(&[]);
            if items.is_empty() && matches!(n.kind, Kind::Seq(_)) {
                cx.error(n.pos, "`upstreams` is empty");
            }
            items
                .iter()
                .filter_map(|i| upstream(cx, i, "upstreams"))
                .collect()
        }
        (None, None) => {
            cx.error(f.pos, "route needs `upstream` (or `upstreams`)");
            Vec::new()
        }
    }
}

fn upstream(cx: &mut Cx, node: &Node, what: &str) -> Option<Upstream> {
    let (url, text) = walk::upstream_url(cx, node, what)?;
    let extra = (url.path() != "/" && !url.path().is_empty())
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some();
    if extra {
        let mapped = match &node.kind {
            Kind::Str { value, .. } if value.trim() != text => " (as --map-upstream rewrote it)",
            _ => "",
        };
        cx.error(
            node.pos,
            format!("`{what}` must be scheme://host[:port] only (no path, query or credentials): `{text}`{mapped}"),
        );
        return None;
    }
    Some(Upstream {
        url: text.clone(),
        tls: url.scheme() == "https",
        host: url.host_str()?.to_owned(),
        port: url.port_or_known_default()?,
    })
}

/// `policy: NAME` or `policy: none`; missing is an error (fail closed).
fn policy_ref(cx: &mut Cx, f: &Fields<'_>, policies: &[&str]) -> Option<String> {
    match f.get("policy") {
        Some(node) => policy_name(cx, node, policies).flatten(),
        None => policy_name_missing(cx, f),
    }
}

fn policy_name_missing(cx: &mut Cx, f: &Fields<'_>) -> Option<String> {
    match f.key("policy") {
        Some(k) => cx.error(
            k.pos,
            "`policy` is empty: write `none` for an anonymous route",
        ),
        None => cx.error(
            f.pos,
            "route needs `policy`: a policy name, or `none` for an anonymous route",
        ),
    }
    None
}

/// A policy name (route `policy`, `subscription.products` values): `Some(None)` for `none`,
/// `None` when reported.
fn policy_name(cx: &mut Cx, node: &Node, policies: &[&str]) -> Option<Option<String>> {
    let name = walk::non_empty(cx, node, "policy")?;
    if name == "none" {
        return Some(None);
    }
    if policies.contains(&name) {
        return Some(Some(name.to_owned()));
    }
    let anonymous = ["anonymous", "null", "off", "false", "no"];
    if name.eq_ignore_ascii_case("none") || anonymous.contains(&name.to_ascii_lowercase().as_str())
    {
        cx.error(
            node.pos,
            format!("unknown policy `{name}`: write `none` (lower case) for an anonymous route"),
        );
        return None;
    }
    let hint = suggest(name, policies)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    cx.error(node.pos, format!("unknown policy `{name}`{hint}"));
    None
}

fn prefix_rewrites(cx: &mut Cx, f: &Fields<'_>, route: &mut Route, normalisation: &Normalization) {
    if let Some(n) = f.get("strip-prefix") {
        route.strip_prefix = walk::boolean(cx, n, "strip-prefix").unwrap_or(false);
        if route.strip_prefix && route.matcher.path_prefix.is_none() {
            cx.error(n.pos, "strip-prefix needs match.path-prefix");
        }
    }
    if let Some(n) = f.get("rewrite-prefix") {
        route.rewrite_prefix = path(cx, n, "rewrite-prefix", normalisation);
        if route.matcher.path_prefix.is_none() {
            cx.error(n.pos, "rewrite-prefix needs match.path-prefix");
        }
    }
}

/// `upstream-protocol: http1 | h2 | h2c`; h2 needs https upstreams (ALPN), h2c plain ones.
fn upstream_protocol(cx: &mut Cx, node: &Node, upstreams: &[Upstream]) -> Option<UpstreamProtocol> {
    let protocol = match walk::string(cx, node, "upstream-protocol")? {
        "http1" => UpstreamProtocol::Http1,
        "h2" => UpstreamProtocol::H2,
        "h2c" => UpstreamProtocol::H2c,
        other => {
            cx.error(
                node.pos,
                format!("`upstream-protocol` must be `http1`, `h2` or `h2c`, found `{other}`"),
            );
            return None;
        }
    };
    let wrong = match protocol {
        UpstreamProtocol::H2 => upstreams.iter().find(|u| !u.tls).map(|u| {
            format!(
                "`h2` is HTTP/2 over TLS, but `{}` is http: use `h2c` for HTTP/2 without TLS",
                u.url
            )
        }),
        UpstreamProtocol::H2c => upstreams.iter().find(|u| u.tls).map(|u| {
            format!(
                "`h2c` is HTTP/2 without TLS, but `{}` is https: use `h2`",
                u.url
            )
        }),
        UpstreamProtocol::Http1 => None,
    };
    if let Some(message) = wrong {
        cx.error(node.pos, message);
        return None;
    }
    Some(protocol)
}
