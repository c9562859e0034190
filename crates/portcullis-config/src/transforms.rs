//! Transformation statements of the ordered `inbound:` and `outbound:` lists: `set-variable`,
//! `set-header`, `return-response` and `choose` (APIM's elements and attribute names, kebab-case),
//! with their values (see `values`) and conditions (see `conditions`).
//!
//! Why the order rules are checked here, at load: a statement that reads a claim before
//! `validate-jwt`, a variable before any `set-variable`, or that follows a `return-response` in
//! the same list, would silently read nothing or never run. Each is a `check` error at the
//! statement's position instead.

use std::sync::Arc;

use http::HeaderName;

use crate::conditions::Condition;
use crate::statements::{header_name, Statement};
use crate::values::{is_identifier, Value};
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

/// `set-variable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVariable {
    /// `name`.
    pub name: Arc<str>,
    /// `value`.
    pub value: Value,
}

/// `set-header`'s `exists-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistsAction {
    /// `override` (default): the header gets exactly the listed values.
    Override,
    /// `skip`: set only when the header is absent.
    Skip,
    /// `append`: the values are added to the header's existing ones.
    Append,
    /// `delete`: the header is removed.
    Delete,
}

/// `set-header`, on the request to the backend (inbound) or the response to the client
/// (outbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// `name`.
    pub name: HeaderName,
    /// `exists-action`.
    pub action: ExistsAction,
    /// `value` or `values` (none for `delete`).
    pub values: Vec<Value>,
}

/// Headers whose values APIM passes as separate header lines instead of joining them with `,`:
/// their values may hold a comma (`User-Agent`, `WWW-Authenticate` ...) or a date.
const SEPARATE_LINES: &[&str] = &[
    "user-agent",
    "www-authenticate",
    "proxy-authenticate",
    "cookie",
    "set-cookie",
    "warning",
    "date",
    "expires",
    "if-modified-since",
    "if-unmodified-since",
    "last-modified",
    "retry-after",
];

impl SetHeader {
    /// Whether several values go on separate header lines (APIM's exceptions), rather than one
    /// line joined with `,`.
    pub fn separate_lines(&self) -> bool {
        SEPARATE_LINES.contains(&self.name.as_str())
    }
}

/// `return-response`: the answer, without calling the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnResponse {
    /// `status` (default 200).
    pub status: u16,
    /// `reason`: the reason phrase (default: the standard one).
    pub reason: Option<String>,
    /// `headers`: each name with its values, in file order.
    pub headers: Vec<(HeaderName, Vec<Value>)>,
    /// `body` (default empty).
    pub body: Value,
}

/// `choose`: the first branch whose condition holds runs, else `otherwise`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choose {
    /// `when` branches in order.
    pub branches: Vec<Branch>,
    /// `otherwise` (empty when absent).
    pub otherwise: Vec<Statement>,
}

/// One `when` branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// `when`.
    pub when: Condition,
    /// `steps`.
    pub steps: Vec<Statement>,
}

/// Hop-by-hop and framing headers: the gateway and the HTTP stack own them, so no statement
/// sets or removes them.
const FRAMING: &[&str] = &[
    "connection",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "proxy-connection",
];

/// A hop-by-hop or framing header no statement may set (the gateway and pingora own them); `name`
/// in lower case. Shared with `import-apim`, which reports such a `set-header` instead of writing
/// a config `check` would refuse.
pub fn is_framing_header(name: &str) -> bool {
    FRAMING.contains(&name)
}

/// Headers that describe the client connection or the original request: only the gateway sets
/// them on the way to the backend (see `server.trusted-proxies`), and backends use them for
/// client allow-lists and generated URLs. Normalised names (lower case, `_` as `-`); every
/// `x-forwarded-*` counts too.
///
/// Besides the common ones, the client-address headers that CDNs, load balancers and proxies set
/// in front of an application (Cloudflare, Fastly, Akamai, Azure Front Door, Envoy, nginx's
/// `auth_request`, Rackspace/Zeus, Google App Engine): a framework or middleware configured for
/// such a front end reads them as the client's address, so a client reaching the gateway directly
/// must not be able to send them. None is trusted from `trusted-proxies` either: the gateway
/// forwards the address chain in `X-Forwarded-For` only.
const CONNECTION_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "cf-pseudo-ipv4",
    "fastly-client-ip",
    "akamai-client-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-envoy-external-address",
    "x-original-forwarded-for",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-appengine-user-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
];

/// Whether a (lower-case) header name is, in any `-`/`_` spelling, one the gateway sets from the
/// connection (`X-Forwarded-*`, `Forwarded`, `X-Real-IP` ...).
pub fn is_connection_header(name: &str) -> bool {
    use portcullis_route::headers::spelled_as;
    let prefix = name.len() > 12
        && name
            .get(..12)
            .is_some_and(|p| spelled_as(p, "x-forwarded-"));
    prefix || CONNECTION_HEADERS.iter().any(|h| spelled_as(name, h))
}

/// A header name as the config spells identity headers: lower case, `_` as `-`.
pub(crate) fn normalise(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            other => char::from(other.to_ascii_lowercase()),
        })
        .collect()
}

/// What a statement list may hold and read at a point of the policy.
pub(crate) struct Scope<'a> {
    /// The policy's name (for limit ids and messages).
    pub policy: &'a str,
    /// An `outbound` list.
    pub outbound: bool,
    /// A `validate-jwt` runs before this point.
    pub validated: bool,
    /// Variables set before this point.
    pub vars: Vec<Arc<str>>,
    /// Every header of any policy's `forward-claims` (normalised): no inbound statement sets them.
    pub identity_headers: &'a [String],
    /// The URL-template parameters values read (for `check`'s warning about routes without them).
    pub params: Vec<(Arc<str>, Pos)>,
}

impl Scope<'_> {
    /// Reports a value's sources that cannot be read here (claims before validate-jwt,
    /// variables before set-variable), and records the parameters it reads.
    pub fn value_reads(&mut self, cx: &mut Cx, pos: Pos, what: &str, value: &Value) {
        for claim in value.claims() {
            if !self.validated {
                cx.error(
                    pos,
                    format!("`{what}` reads claim `{claim}` before validate-jwt (or without it): put the statement after the token check"),
                );
            }
        }
        for var in value.vars() {
            if !self.vars.contains(var) {
                cx.error(
                    pos,
                    format!("`{what}` reads variable `{var}` before any set-variable sets it"),
                );
            }
        }
        for p in value.params() {
            self.params.push((p.clone(), pos));
        }
    }

    /// A value field of a statement, checked for where it is read.
    pub fn value(&mut self, cx: &mut Cx, node: &Node, what: &str) -> Option<Value> {
        let v = crate::values::value(cx, node, what)?;
        self.value_reads(cx, node.pos, what, &v);
        Some(v)
    }
}

/// Reads `set-variable`; the variable is known to what follows.
pub(crate) fn set_variable(cx: &mut Cx, node: &Node, scope: &mut Scope<'_>) -> Option<SetVariable> {
    let f = Fields::new(cx, node, "set-variable", &["name", "value"])?;
    let name = match f.get("name") {
        Some(n) => walk::non_empty(cx, n, "name").and_then(|t| {
            if is_identifier(t) {
                Some(Arc::<str>::from(t))
            } else {
                cx.error(
                    n.pos,
                    format!("`{t}` is not a variable name (letters, digits, `_` and `-`, not starting with a digit or `-`)"),
                );
                None
            }
        }),
        None => {
            cx.error(f.pos, "set-variable needs `name`");
            None
        }
    };
    let value = match f.get("value") {
        Some(n) => scope.value(cx, n, "value"),
        None => {
            cx.error(f.pos, "set-variable needs `value`");
            None
        }
    };
    let name = name?;
    if !scope.vars.contains(&name) {
        scope.vars.push(name.clone());
    }
    Some(SetVariable {
        name,
        value: value?,
    })
}

/// Reads `set-header`.
pub(crate) fn set_header(cx: &mut Cx, node: &Node, scope: &mut Scope<'_>) -> Option<SetHeader> {
    let f = Fields::new(
        cx,
        node,
        "set-header",
        &["name", "exists-action", "value", "values"],
    )?;
    let errors = cx.errors();
    let name = match f.get("name") {
        Some(n) => walk::non_empty(cx, n, "name").and_then(|t| {
            let name = header_name(cx, n, t)?;
            settable(cx, n.pos, &name, scope.outbound, scope.identity_headers)?;
            Some(name)
        }),
        None => {
            cx.error(f.pos, "set-header needs `name`");
            None
        }
    };
    let action = match f.get("exists-action") {
        None => ExistsAction::Override,
        Some(n) => match walk::string(cx, n, "exists-action") {
            Some("override") => ExistsAction::Override,
            Some("skip") => ExistsAction::Skip,
            Some("append") => ExistsAction::Append,
            Some("delete") => ExistsAction::Delete,
            Some(other) => {
                cx.error(
                    n.pos,
                    format!("`exists-action` must be `override`, `skip`, `append` or `delete`, found `{other}`"),
                );
                ExistsAction::Override
            }
            None => ExistsAction::Override,
        },
    };
    let values = header_values(cx, &f, scope, action == ExistsAction::Delete, "set-header");
    let header = SetHeader {
        name: name?,
        action,
        values: values?,
    };
    (cx.errors() == errors).then_some(header)
}

/// `value` or `values` of a statement that sets a header (`none`: delete, where they are an
/// error). Literal values must be valid header values.
fn header_values(
    cx: &mut Cx,
    f: &Fields<'_>,
    scope: &mut Scope<'_>,
    none: bool,
    what: &str,
) -> Option<Vec<Value>> {
    let nodes: Vec<&Node> = match (f.get("value"), f.get("values")) {
        (Some(_), Some(n)) => {
            cx.error(n.pos, format!("{what} takes `value` or `values`, not both"));
            return None;
        }
        (Some(n), None) => vec![n],
        (None, Some(n)) => {
            let items = walk::list(cx, n, "values")?;
            if items.is_empty() && !none {
                cx.error(n.pos, "`values` is empty");
                return None;
            }
            items.iter().collect()
        }
        (None, None) if none => return Some(Vec::new()),
        (None, None) => {
            cx.error(
                f.pos,
                format!("{what} needs `value` or `values` (only `exists-action: delete` has none)"),
            );
            return None;
        }
    };
    if none {
        let n = f.key("value").or(f.key("values")).map_or(f.pos, |k| k.pos);
        cx.error(n, "`exists-action: delete` takes no `value`");
        return None;
    }
    let mut out = Vec::new();
    for n in nodes {
        out.push(header_value(cx, n, scope)?);
    }
    Some(out)
}

/// A header value: a value whose literal text a header can carry.
fn header_value(cx: &mut Cx, node: &Node, scope: &mut Scope<'_>) -> Option<Value> {
    let value = scope.value(cx, node, "value")?;
    if let Some(text) = value.as_literal() {
        if text.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            cx.error(
                node.pos,
                "a header value is printable ASCII: no control characters (CR, LF, tab ...) and no non-ASCII text",
            );
            return None;
        }
    }
    Some(value)
}

/// Whether a statement may set or remove header `name` here.
fn settable(
    cx: &mut Cx,
    pos: Pos,
    name: &HeaderName,
    outbound: bool,
    identity_headers: &[String],
) -> Option<()> {
    let n = name.as_str();
    if FRAMING.contains(&n) {
        cx.error(
            pos,
            format!(
                "`{n}` is a hop-by-hop or framing header: the gateway sets it, no statement can"
            ),
        );
        return None;
    }
    if !outbound {
        // Connection headers (`X-Forwarded-Host`...) are allowed: the statement is applied after
        // the gateway has set its own (an operator's value, never the client's copy).
        if identity_headers.contains(&normalise(n)) {
            cx.error(
                pos,
                format!("`{n}` is an identity header (forward-claims): it only ever carries verified claims"),
            );
            return None;
        }
    }
    Some(())
}

/// Reads `return-response`.
pub(crate) fn return_response(
    cx: &mut Cx,
    node: &Node,
    scope: &mut Scope<'_>,
) -> Option<ReturnResponse> {
    let f = Fields::new(
        cx,
        node,
        "return-response",
        &["status", "reason", "headers", "body"],
    )?;
    let errors = cx.errors();
    let status = f
        .get("status")
        .and_then(|n| {
            let s = walk::integer_in(cx, n, "status", 100, 599)?;
            if s < 200 {
                cx.error(
                    n.pos,
                    format!("`status` {s} is informational: an answer's final status is 200-599"),
                );
                return None;
            }
            u16::try_from(s).ok()
        })
        .unwrap_or(200);
    let reason = f.get("reason").and_then(|n| {
        let text = walk::non_empty(cx, n, "reason")?;
        if text
            .bytes()
            .any(|b| !(b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b)))
        {
            cx.error(
                n.pos,
                "`reason` is printable ASCII (a reason phrase is one line)",
            );
            return None;
        }
        Some(text.to_owned())
    });
    let mut headers: Vec<(HeaderName, Vec<Value>)> = Vec::new();
    if let Some(h) = f.get("headers") {
        if let Some(hf) = Fields::open(cx, h, "headers") {
            for (text, key, value) in hf.entries() {
                let Some(name) = header_name(cx, key, text) else {
                    continue;
                };
                // The answer goes to the client: only the framing headers are off limits.
                if settable(cx, key.pos, &name, true, &[]).is_none() {
                    continue;
                }
                if headers.iter().any(|(n, _)| *n == name) {
                    cx.error(key.pos, format!("header `{text}` is listed twice"));
                    continue;
                }
                let items: Vec<&Node> = match &value.kind {
                    Kind::Seq(items) => items.iter().collect(),
                    _ => vec![value],
                };
                let values: Option<Vec<Value>> = items
                    .into_iter()
                    .map(|n| header_value(cx, n, scope))
                    .collect();
                if let Some(values) = values {
                    headers.push((name, values));
                }
            }
        }
    }
    let body = match f.get("body") {
        Some(n) => scope.value(cx, n, "body"),
        None => Some(Value::literal("")),
    };
    let body = body?;
    if matches!(status, 204 | 304) && body.as_literal() != Some("") {
        let pos = f.get("body").map_or(f.pos, |n| n.pos);
        cx.error(pos, format!("a {status} answer has no body"));
    }
    let answer = ReturnResponse {
        status,
        reason,
        headers,
        body,
    };
    (cx.errors() == errors).then_some(answer)
}

impl<'a> Scope<'a> {
    /// A copy for a nested list (a `choose` branch): what it sets stays in the branch.
    pub fn branch(&self) -> Scope<'a> {
        Scope {
            policy: self.policy,
            outbound: self.outbound,
            validated: self.validated,
            vars: self.vars.clone(),
            identity_headers: self.identity_headers,
            params: Vec::new(),
        }
    }
}
