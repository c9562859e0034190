//! The statements that shape the request for the backend or answer without it (issue 15):
//! `set-query-parameter`, `rewrite-uri`, `set-backend-service` and `mock-response`, with the
//! top-level `backends:` section and the route key `openapi:` they read.
//!
//! Why a module of its own, beside [`crate::statements`]: these statements exist only in the ordered
//! `inbound:` list (not in the keyed form), and everything they need at run time is derived here,
//! once: rewrite templates split into literal text and parameters, `base-url`s turned into
//! [`Backend`]s shared by id, and OpenAPI examples read and re-serialised at load, so the request
//! path does no parsing.

use std::sync::Arc;

use portcullis_route::query::QueryEdit;
use portcullis_route::{canonical_path, is_param_name, Normalization};

use crate::model::{Backend, BackendId, Upstream};
use crate::transforms::Scope;
use crate::values::{Part, Value};
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node};

/// The ordered-form statement keys this module reads.
pub(crate) const KEYS: &[&str] = &[
    "set-query-parameter",
    "rewrite-uri",
    "set-backend-service",
    "mock-response",
];

/// APIM's `set-query-parameter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetQueryParameter {
    /// `name` (compared with the request's percent-decoded names).
    pub name: String,
    /// `exists-action` (default override).
    pub exists_action: QueryEdit,
    /// `value` or `values` (empty for delete), with `${...}` sources; percent-encoded when set.
    pub values: Vec<Value>,
}

/// A piece of a `rewrite-uri` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text, as written.
    Text(String),
    /// `{name}`: a parameter of the route's URL template.
    Param(Arc<str>),
    /// A `${...}` source ([`Part::Source`]): percent-encoded as a path segment / query value.
    Source(Part),
}

/// APIM's `rewrite-uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteUri {
    /// The template as written (logs).
    pub template: String,
    /// The path part (starts with `/`).
    pub path: Vec<Piece>,
    /// The query part (after `?`), `None` when the template has no `?`.
    pub query: Option<Vec<Piece>>,
    /// The (decoded) names of the template's query parameters: the request's parameters of these
    /// names are not copied.
    pub named: Vec<String>,
    /// `copy-unmatched-params` (default true).
    pub copy_unmatched_params: bool,
}

impl RewriteUri {
    /// The route parameters the template uses.
    pub fn params(&self) -> impl Iterator<Item = &Arc<str>> {
        self.path
            .iter()
            .chain(self.query.iter().flatten())
            .filter_map(|p| match p {
                Piece::Param(n) => Some(n),
                Piece::Text(_) | Piece::Source(_) => None,
            })
    }
}

/// APIM's `mock-response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockResponse {
    /// `status-code` (default 200).
    pub status_code: u16,
    /// `content-type` (default `application/json`).
    pub content_type: String,
}

/// The response examples of one OpenAPI operation (route key `openapi:`), re-serialised at load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Examples {
    /// `operationId`.
    pub operation: String,
    /// (response key as written: `200`, `2XX`, `default`; content type; body).
    pub responses: Vec<(String, String, String)>,
}

impl Examples {
    /// The example for a status and content type: the response of that exact status, else of its
    /// range (`2XX`), else `default`; content types compared case-insensitively.
    pub fn find(&self, status: u16, content_type: &str) -> Option<&str> {
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        [exact.as_str(), range.as_str(), "default"]
            .iter()
            .find_map(|key| {
                self.responses.iter().find(|(s, ct, _)| {
                    s.eq_ignore_ascii_case(key) && ct.eq_ignore_ascii_case(content_type)
                })
            })
            .map(|(_, _, body)| body.as_str())
    }
}

/// Reads the top-level `backends:` section (names unique by construction: mapping keys).
pub(crate) fn read_backends(cx: &mut Cx, node: Option<&Node>) -> Vec<Backend> {
    let Some(f) = node.and_then(|n| Fields::open(cx, n, "backends")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, key, body) in f.entries() {
        if name.trim().is_empty() {
            cx.error(key.pos, "a backend needs a name");
            continue;
        }
        let section = format!("backend `{name}`");
        let Some(b) = Fields::new(cx, body, &section, &["url", "timeout", "connect-timeout"])
        else {
            continue;
        };
        let Some(url) = b.get("url") else {
            cx.error(b.pos, format!("{section} needs `url`"));
            continue;
        };
        let timeout = b
            .get("timeout")
            .and_then(|n| walk::positive_duration(cx, n, "timeout"));
        let connect_timeout = b
            .get("connect-timeout")
            .and_then(|n| walk::positive_duration(cx, n, "connect-timeout"));
        if let Some(mut backend) = base_url(cx, url, "url") {
            backend.name = (*name).to_owned();
            backend.timeout = timeout;
            backend.connect_timeout = connect_timeout;
            out.push(backend);
        }
    }
    out
}

/// `http(s)://host[:port][/path]`: the path is the base path (canonical, no query or credentials).
fn base_url(cx: &mut Cx, node: &Node, what: &str) -> Option<Backend> {
    let (url, text) = walk::upstream_url(cx, node, what)?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        cx.error(
            node.pos,
            format!(
                "`{what}` must be scheme://host[:port][/path] (no query or credentials): `{text}`"
            ),
        );
        return None;
    }
    let path = url.path();
    let base = path.trim_end_matches('/');
    if !base.is_empty() {
        match canonical_path(base, &Normalization::default()) {
            Ok(c) if c == base => {}
            _ => {
                cx.error(
                    node.pos,
                    format!("the path of `{what}` must be in canonical form: `{path}`"),
                );
                return None;
            }
        }
    }
    Some(Backend {
        name: text.clone(),
        upstream: Upstream {
            url: text,
            tls: url.scheme() == "https",
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        },
        base_path: base.to_owned(),
        timeout: None,
        connect_timeout: None,
    })
}

/// One statement of this module (`key` is one of [`KEYS`]).
/// `scope` checks the order rules of the `${...}` sources they read.
pub(crate) fn read(
    cx: &mut Cx,
    key: &str,
    body: &Node,
    scope: &mut Scope<'_>,
) -> Option<crate::Statement> {
    use crate::Statement;
    match key {
        "set-query-parameter" => {
            set_query_parameter(cx, body, scope).map(|s| Statement::SetQueryParameter(Arc::new(s)))
        }
        "rewrite-uri" => rewrite_uri(cx, body, scope).map(|s| Statement::RewriteUri(Arc::new(s))),
        "set-backend-service" => set_backend_service(cx, body).map(Statement::SetBackendService),
        "mock-response" => mock_response(cx, body).map(|s| Statement::MockResponse(Arc::new(s))),
        _ => None,
    }
}

/// `exists-action`: override (default) | skip | append | delete.
fn exists_action(cx: &mut Cx, f: &Fields<'_>) -> Option<QueryEdit> {
    let Some(n) = f.get("exists-action") else {
        return Some(QueryEdit::Override);
    };
    match walk::string(cx, n, "exists-action")? {
        "override" => Some(QueryEdit::Override),
        "skip" => Some(QueryEdit::Skip),
        "append" => Some(QueryEdit::Append),
        "delete" => Some(QueryEdit::Delete),
        other => {
            cx.error(
                n.pos,
                format!("`exists-action` must be `override`, `skip`, `append` or `delete`, found `{other}`"),
            );
            None
        }
    }
}

fn set_query_parameter(
    cx: &mut Cx,
    node: &Node,
    scope: &mut Scope<'_>,
) -> Option<SetQueryParameter> {
    let keys = ["name", "exists-action", "value", "values"];
    let f = Fields::new(cx, node, "set-query-parameter", &keys)?;
    let errors = cx.errors();
    let name = match f.get("name") {
        Some(n) => walk::non_empty(cx, n, "name").map(str::to_owned),
        None => {
            cx.error(f.pos, "set-query-parameter needs `name`");
            None
        }
    };
    let action = exists_action(cx, &f);
    let values = match (f.get("value"), f.get("values")) {
        (Some(_), Some(n)) => {
            cx.error(n.pos, "`value` and `values`: use one");
            Vec::new()
        }
        (Some(n), None) => scope.value(cx, n, "value").into_iter().collect(),
        (None, Some(n)) => {
            let before = cx.errors();
            let values: Vec<Value> = walk::list(cx, n, "values")
                .unwrap_or_default()
                .iter()
                .filter_map(|i| scope.value(cx, i, "values"))
                .collect();
            if values.is_empty() && cx.errors() == before {
                cx.error(n.pos, "`values` is empty");
            }
            values
        }
        (None, None) => Vec::new(),
    };
    match action {
        Some(QueryEdit::Delete) => {
            if let Some(n) = f.get("value").or(f.get("values")) {
                cx.error(n.pos, "exists-action `delete` takes no value");
            }
        }
        Some(_) if f.get("value").is_none() && f.get("values").is_none() => {
            cx.error(f.pos, "set-query-parameter needs `value` (or `values`)");
        }
        _ => {}
    }
    let statement = SetQueryParameter {
        name: name?,
        exists_action: action?,
        values,
    };
    (cx.errors() == errors).then_some(statement)
}

/// Split template text into literal pieces, `{name}` parameters and `${...}` sources.
fn pieces(cx: &mut Cx, node: &Node, text: &str, scope: &mut Scope<'_>) -> Option<Vec<Piece>> {
    let value = match Value::parse(text) {
        Ok(v) => v,
        Err(e) => {
            cx.error(node.pos, format!("`template`: {}", e.message));
            return None;
        }
    };
    scope.value_reads(cx, node.pos, "template", &value);
    let mut out = Vec::new();
    for part in value.parts() {
        match part {
            Part::Literal(t) => out.extend(params_in(cx, node, t)?),
            source => out.push(Piece::Source(source.clone())),
        }
    }
    Some(out)
}

/// Split literal template text into text and `{name}` parameters.
fn params_in(cx: &mut Cx, node: &Node, text: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            cx.error(node.pos, format!("unmatched `}}` in template `{text}`"));
            return None;
        }
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            cx.error(node.pos, format!("unclosed `{{` in template `{text}`"));
            return None;
        };
        let name = &after[..close];
        if !is_param_name(name) {
            cx.error(
                node.pos,
                format!("`{{{name}}}` in template `{text}`: not a parameter name (letters, digits, `_` and `-`)"),
            );
            return None;
        }
        out.push(Piece::Param(Arc::from(name)));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Some(out)
}

fn placeholder(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Param(_) | Piece::Source(_) => "x",
        })
        .collect()
}

fn rewrite_uri(cx: &mut Cx, node: &Node, scope: &mut Scope<'_>) -> Option<RewriteUri> {
    let f = Fields::new(
        cx,
        node,
        "rewrite-uri",
        &["template", "copy-unmatched-params"],
    )?;
    let errors = cx.errors();
    let copy_unmatched_params = f
        .get("copy-unmatched-params")
        .and_then(|n| walk::boolean(cx, n, "copy-unmatched-params"))
        .unwrap_or(true);
    let Some(t) = f.get("template") else {
        cx.error(
            f.pos,
            "rewrite-uri needs `template` (a path starting with `/`)",
        );
        return None;
    };
    let text = walk::non_empty(cx, t, "template")?;
    if !text.starts_with('/') {
        cx.error(
            t.pos,
            format!("`template` is a path starting with `/`, found `{text}`"),
        );
        return None;
    }
    if text.contains('#') {
        cx.error(
            t.pos,
            format!("`template` must not carry a fragment: `{text}`"),
        );
        return None;
    }
    let (path_text, query_text) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let path = pieces(cx, t, path_text, scope)?;
    let shape = placeholder(&path);
    match canonical_path(&shape, &Normalization::default()) {
        Ok(c) if c == shape => {}
        Ok(c) => cx.error(
            t.pos,
            format!("the path of `template` is not in canonical form: write `{c}` (with the parameters), not `{path_text}`"),
        ),
        Err(refusal) => cx.error(
            t.pos,
            format!(
                "the path of `template` `{path_text}` would be refused ({})",
                refusal.reason()
            ),
        ),
    }
    let mut named = Vec::new();
    let query = match query_text {
        None => None,
        Some(q) => {
            let pieces = pieces(cx, t, q, scope)?;
            let literal = placeholder(&pieces);
            if !literal.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                cx.error(
                    t.pos,
                    format!("the query of `template` has a character that must be percent-encoded: `{q}`"),
                );
            }
            for pair in portcullis_route::query::pairs(q) {
                let name = portcullis_route::query::pair_name(pair);
                if name.contains(['{', '}', '$']) {
                    cx.error(
                        t.pos,
                        format!(
                            "a query parameter name of `template` cannot be a parameter: `{pair}`"
                        ),
                    );
                }
                named.push(name.into_owned());
            }
            Some(pieces)
        }
    };
    let rewrite = RewriteUri {
        template: text.to_owned(),
        path,
        query,
        named,
        copy_unmatched_params,
    };
    (cx.errors() == errors).then_some(rewrite)
}

fn set_backend_service(cx: &mut Cx, node: &Node) -> Option<BackendId> {
    let f = Fields::new(cx, node, "set-backend-service", &["base-url", "backend-id"])?;
    match (f.get("base-url"), f.get("backend-id")) {
        (Some(url), None) => {
            let backend = base_url(cx, url, "base-url")?;
            let known = cx.backends.iter().position(|b| {
                b.name == backend.name && b.timeout.is_none() && b.connect_timeout.is_none()
            });
            Some(BackendId::new(known.unwrap_or_else(|| {
                cx.backends.push(backend);
                cx.backends.len() - 1
            })))
        }
        (None, Some(id)) => {
            let name = walk::non_empty(cx, id, "backend-id")?;
            let found = cx
                .backends
                .iter()
                .take(cx.named_backends)
                .position(|b| b.name == name);
            match found {
                Some(i) => Some(BackendId::new(i)),
                None => {
                    let names: Vec<&str> = cx.backends[..cx.named_backends]
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect();
                    let hint = walk::suggest(name, &names)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    cx.error(
                        id.pos,
                        format!("unknown backend `{name}`: not a key of `backends:`{hint}"),
                    );
                    None
                }
            }
        }
        _ => {
            cx.error(
                f.pos,
                "set-backend-service takes exactly one of `base-url` and `backend-id`",
            );
            None
        }
    }
}

fn mock_response(cx: &mut Cx, node: &Node) -> Option<MockResponse> {
    if node.kind == Kind::Null {
        return Some(MockResponse {
            status_code: 200,
            content_type: "application/json".to_owned(),
        });
    }
    let f = Fields::new(cx, node, "mock-response", &["status-code", "content-type"])?;
    let errors = cx.errors();
    let status_code = f
        .get("status-code")
        .and_then(|n| walk::integer_in(cx, n, "status-code", 100, 599))
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(200);
    let content_type = match f.get("content-type") {
        Some(n) => walk::non_empty(cx, n, "content-type").and_then(|t| {
            if http::HeaderValue::from_str(t).is_ok() && t.contains('/') {
                Some(t.to_owned())
            } else {
                cx.error(n.pos, format!("`{t}` is not a content type"));
                None
            }
        }),
        None => Some("application/json".to_owned()),
    };
    let mock = MockResponse {
        status_code,
        content_type: content_type?,
    };
    (cx.errors() == errors).then_some(mock)
}

/// The route key `openapi: { spec: FILE, operation: OPERATION_ID }`.
pub(crate) fn read_openapi(cx: &mut Cx, node: &Node) -> Option<Examples> {
    let f = Fields::new(cx, node, "openapi", &["spec", "operation"])?;
    let (Some(spec), Some(op)) = (f.get("spec"), f.get("operation")) else {
        cx.error(
            f.pos,
            "openapi needs `spec` (a file) and `operation` (an operationId)",
        );
        return None;
    };
    let file = walk::non_empty(cx, spec, "spec")?;
    let operation = walk::non_empty(cx, op, "operation")?;
    let bytes = cx.read_file(spec, "OpenAPI document", file)?;
    let text = String::from_utf8_lossy(&bytes);
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => match serde_saphyr::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                cx.error(
                    spec.pos,
                    format!("`{file}` is not a JSON or YAML document: {e}"),
                );
                return None;
            }
        },
    };
    let v3 = doc.get("openapi").is_some();
    if !v3 && doc.get("swagger").is_none() {
        cx.error(
            spec.pos,
            format!("`{file}` is not an OpenAPI document (no `openapi` or `swagger` key)"),
        );
        return None;
    }
    let Some(found) = find_operation(&doc, operation) else {
        cx.error(
            op.pos,
            format!("`{file}` has no operation with operationId `{operation}`"),
        );
        return None;
    };
    let mut responses = Vec::new();
    if let Some(map) = found.get("responses").and_then(|r| r.as_object()) {
        for (status, response) in map {
            if v3 {
                let Some(content) = response.get("content").and_then(|c| c.as_object()) else {
                    continue;
                };
                for (ct, media) in content {
                    let example = media
                        .get("example")
                        .or_else(|| {
                            media
                                .get("examples")
                                .and_then(|e| e.as_object())
                                .and_then(|e| e.values().find_map(|x| x.get("value")))
                        })
                        .or_else(|| media.get("schema").and_then(|s| s.get("example")));
                    if let Some(example) = example {
                        responses.push((status.clone(), ct.clone(), render(example)));
                    }
                }
            } else if let Some(examples) = response.get("examples").and_then(|e| e.as_object()) {
                for (ct, example) in examples {
                    responses.push((status.clone(), ct.clone(), render(example)));
                }
            }
        }
    }
    Some(Examples {
        operation: operation.to_owned(),
        responses,
    })
}

/// A string example as is, anything else as compact JSON.
fn render(example: &serde_json::Value) -> String {
    match example {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn find_operation<'d>(doc: &'d serde_json::Value, id: &str) -> Option<&'d serde_json::Value> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc.get("paths")?.as_object()?.values().find_map(|item| {
        METHODS.iter().find_map(|m| {
            item.get(*m)
                .filter(|op| op.get("operationId").and_then(|v| v.as_str()) == Some(id))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_fall_back_to_the_range_then_default() {
        let e = Examples {
            operation: "op".to_owned(),
            responses: vec![
                (
                    "2XX".to_owned(),
                    "application/json".to_owned(),
                    "r".to_owned(),
                ),
                (
                    "default".to_owned(),
                    "text/plain".to_owned(),
                    "d".to_owned(),
                ),
                (
                    "201".to_owned(),
                    "application/json".to_owned(),
                    "x".to_owned(),
                ),
            ],
        };
        assert_eq!(e.find(201, "application/json"), Some("x"));
        assert_eq!(e.find(200, "Application/JSON"), Some("r"));
        assert_eq!(e.find(404, "text/plain"), Some("d"));
        assert_eq!(e.find(404, "application/json"), None);
    }
}
