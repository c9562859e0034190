//! Conditions of `choose` branches: structured YAML rather than APIM's C# expressions (see
//! `values` for why), one key per condition:
//!
//! ```yaml
//! { method: GET }                                   # or [GET, HEAD]
//! { header-present: X-Debug }
//! { header: { name: X-Debug, equals: "1" } }        # or `in: [a, b]`; `ignore-case: true`
//! { query-present: debug }
//! { query: { name: v, equals: "2" } }
//! { claim: { name: roles, contains: admin } }       # or equals:
//! { claim-present: tid }
//! { variable: { name: tier, equals: gold } }
//! { path-prefix: /admin }                           # canonical path, whole segments
//! { path: /orders/{id} }                            # canonical path; `{x}`: any one segment
//! { status: [200, 201] }                            # outbound only: the response status
//! { all: [...] }  { any: [...] }  { not: ... }
//! ```
//!
//! The proxy evaluates them on the request as it is when the `choose` runs (after the statements
//! before it: a `set-header` earlier in the list is seen).

use std::sync::Arc;

use http::{HeaderName, Method};

use crate::values::is_identifier;
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

/// A `choose` branch's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `method`: the canonical method is one of these.
    Method(Vec<Method>),
    /// `header-present`.
    HeaderPresent(HeaderName),
    /// `header`: one of the header's values passes the test.
    Header(HeaderName, Test),
    /// `query-present`.
    QueryPresent(String),
    /// `query`: the parameter's first occurrence, decoded, passes the test.
    Query(String, Test),
    /// `claim-present`.
    ClaimPresent(String),
    /// `claim`.
    Claim(String, ClaimTest),
    /// `variable`: the variable is set and passes the test.
    Variable(Arc<str>, Test),
    /// `path-prefix`: the canonical path is this prefix or below it (whole segments).
    PathPrefix(String),
    /// `path`: the canonical path has these segments (`None`: any one non-empty segment).
    Path(Vec<Option<String>>),
    /// `status` (outbound only): the response status is one of these.
    Status(Vec<u16>),
    /// `all`: every one holds.
    All(Vec<Condition>),
    /// `any`: at least one holds.
    Any(Vec<Condition>),
    /// `not`.
    Not(Box<Condition>),
}

/// `equals: X` or `in: [X, Y]`, with `ignore-case`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    /// Accepted values (one for `equals`).
    pub values: Vec<String>,
    /// `ignore-case` (default false).
    pub ignore_case: bool,
}

impl Test {
    /// Whether `text` is one of the values.
    pub fn passes(&self, text: &str) -> bool {
        self.values.iter().any(|v| {
            if self.ignore_case {
                v.eq_ignore_ascii_case(text)
            } else {
                v == text
            }
        })
    }
}

/// How a claim is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimTest {
    /// `equals`/`in`: the claim as `forward-claims` renders it (arrays joined with `,`).
    Equals(Test),
    /// `contains`: an element of an array claim, or a space-separated word of a string claim
    /// (`scp`), is one of the values.
    Contains(Test),
}

impl Condition {
    /// Whether the condition reads the response (`status`).
    pub fn reads_status(&self) -> bool {
        match self {
            Condition::Status(_) => true,
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::reads_status),
            Condition::Not(c) => c.reads_status(),
            _ => false,
        }
    }
}

/// Where a condition may appear, and what it may read there.
pub(crate) struct Place<'a> {
    /// In an `outbound` list (`status` allowed).
    pub outbound: bool,
    /// A `validate-jwt` runs before it (claims allowed).
    pub validated: bool,
    /// Variables set before it.
    pub vars: &'a [Arc<str>],
}

const KEYS: &[&str] = &[
    "method",
    "header-present",
    "header",
    "query-present",
    "query",
    "claim-present",
    "claim",
    "variable",
    "path-prefix",
    "path",
    "status",
    "all",
    "any",
    "not",
];

/// Reads a condition; every problem reported.
pub(crate) fn condition(cx: &mut Cx, node: &Node, place: &Place<'_>) -> Option<Condition> {
    let f = Fields::new(cx, node, "a condition", KEYS)?;
    let [(key, k, body)] = f.entries() else {
        cx.error(
            f.pos,
            "a condition is one key: `{ method: GET }`, `{ header-present: X-Debug }`, `{ all: [...] }` ...",
        );
        return None;
    };
    let claim_needs_token = |cx: &mut Cx, pos: Pos| {
        if !place.validated {
            cx.error(
                pos,
                format!(
                    "a `{key}` condition reads the verified token: it must come after validate-jwt"
                ),
            );
        }
    };
    match *key {
        "method" => methods(cx, body).map(Condition::Method),
        "header-present" => header_name(cx, body, key).map(Condition::HeaderPresent),
        "query-present" => {
            walk::non_empty(cx, body, key).map(|q| Condition::QueryPresent(q.to_owned()))
        }
        "claim-present" => {
            claim_needs_token(cx, k.pos);
            walk::non_empty(cx, body, key).map(|c| Condition::ClaimPresent(c.to_owned()))
        }
        "header" => {
            let (name, test) = named_test(cx, body, key, false)?;
            let name = header_name(cx, name, "name")?;
            Some(Condition::Header(name, test?.1))
        }
        "query" => {
            let (name, test) = named_test(cx, body, key, false)?;
            let name = walk::non_empty(cx, name, "name")?.to_owned();
            Some(Condition::Query(name, test?.1))
        }
        "variable" => {
            let (name_node, test) = named_test(cx, body, key, false)?;
            let name = walk::non_empty(cx, name_node, "name")?;
            if !is_identifier(name) {
                cx.error(name_node.pos, format!("`{name}` is not a variable name"));
                return None;
            }
            if !place.vars.iter().any(|v| &**v == name) {
                cx.error(
                    name_node.pos,
                    format!("variable `{name}` is read before any set-variable sets it"),
                );
            }
            Some(Condition::Variable(Arc::from(name), test?.1))
        }
        "claim" => {
            claim_needs_token(cx, k.pos);
            let (name, test) = named_test(cx, body, key, true)?;
            let name = walk::non_empty(cx, name, "name")?.to_owned();
            let (contains, test) = test?;
            Some(Condition::Claim(
                name,
                if contains {
                    ClaimTest::Contains(test)
                } else {
                    ClaimTest::Equals(test)
                },
            ))
        }
        "path-prefix" => {
            let p = path_text(cx, body, key)?;
            Some(Condition::PathPrefix(p.trim_end_matches('/').to_owned()))
        }
        "path" => {
            let p = path_text(cx, body, key)?;
            let mut segments = Vec::new();
            for seg in p.split('/').skip(1) {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if !is_identifier(name) {
                        cx.error(body.pos, format!("`{{{name}}}` is not a parameter name"));
                        return None;
                    }
                    segments.push(None);
                } else if seg.contains(['{', '}']) {
                    cx.error(
                        body.pos,
                        format!("`{seg}`: a `{{name}}` is a whole path segment"),
                    );
                    return None;
                } else {
                    segments.push(Some(seg.to_owned()));
                }
            }
            Some(Condition::Path(segments))
        }
        "status" => {
            if !place.outbound {
                cx.error(
                    k.pos,
                    "a `status` condition reads the response: it belongs in `outbound`",
                );
            }
            statuses(cx, body)
        }
        "all" | "any" => {
            let items = walk::list(cx, body, key)?;
            if items.is_empty() {
                cx.error(body.pos, format!("`{key}` is empty"));
                return None;
            }
            let before = cx.errors();
            let conds: Vec<Condition> = items
                .iter()
                .filter_map(|n| condition(cx, n, place))
                .collect();
            if cx.errors() != before {
                return None;
            }
            Some(if *key == "all" {
                Condition::All(conds)
            } else {
                Condition::Any(conds)
            })
        }
        "not" => condition(cx, body, place).map(|c| Condition::Not(Box::new(c))),
        _ => None,
    }
}

fn header_name(cx: &mut Cx, node: &Node, what: &str) -> Option<HeaderName> {
    let text = walk::non_empty(cx, node, what)?;
    crate::statements::header_name(cx, node, text)
}

/// One item or a list of them (not empty).
fn one_or_many<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    if items.is_empty() {
        cx.error(node.pos, format!("`{what}` is empty"));
        return None;
    }
    Some(items)
}

fn methods(cx: &mut Cx, node: &Node) -> Option<Vec<Method>> {
    let items = one_or_many(cx, node, "method")?;
    let before = cx.errors();
    let mut out = Vec::new();
    for item in items {
        let Some(text) = walk::non_empty(cx, item, "method") else {
            continue;
        };
        let upper = text.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(m) => out.push(m),
            Err(_) => cx.error(item.pos, format!("`{text}` is not an HTTP method")),
        }
    }
    (cx.errors() == before).then_some(out)
}

fn statuses(cx: &mut Cx, node: &Node) -> Option<Condition> {
    let items = one_or_many(cx, node, "status")?;
    let before = cx.errors();
    let codes: Vec<u16> = items
        .iter()
        .filter_map(|n| walk::integer_in(cx, n, "status", 100, 599))
        .filter_map(|i| u16::try_from(i).ok())
        .collect();
    (cx.errors() == before).then_some(Condition::Status(codes))
}

fn path_text<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n str> {
    let p = walk::non_empty(cx, node, what)?;
    if !p.starts_with('/') || p.contains(['?', '#']) {
        cx.error(
            node.pos,
            format!("`{what}` is a path starting with `/` (no query), found `{p}`"),
        );
        return None;
    }
    Some(p)
}

/// `{ name, equals | in [, ignore-case] }` (claims: also `contains`). The name node, and the test
/// (`true`: `contains`); `None` for the test when it is missing or wrong (reported).
fn named_test<'n>(
    cx: &mut Cx,
    node: &'n Node,
    what: &str,
    claim: bool,
) -> Option<(&'n Node, Option<(bool, Test)>)> {
    let keys: &[&str] = if claim {
        &["name", "equals", "in", "contains", "ignore-case"]
    } else {
        &["name", "equals", "in", "ignore-case"]
    };
    let f = Fields::new(cx, node, &format!("a `{what}` condition"), keys)?;
    let Some(name) = f.get("name") else {
        cx.error(f.pos, format!("a `{what}` condition needs `name`"));
        return None;
    };
    let ignore_case = f
        .get("ignore-case")
        .and_then(|n| walk::boolean(cx, n, "ignore-case"))
        .unwrap_or(false);
    let given: Vec<&str> = ["equals", "in", "contains"]
        .into_iter()
        .filter(|k| f.get(k).is_some())
        .collect();
    let test = match given.as_slice() {
        [one] => {
            let n = f.get(one)?;
            let values = if *one == "in" {
                let values = walk::string_list(cx, n, "in");
                if values.is_empty() {
                    cx.error(n.pos, "`in` is empty");
                    return Some((name, None));
                }
                values
            } else {
                vec![walk::string(cx, n, one)?.to_owned()]
            };
            Some((
                *one == "contains",
                Test {
                    values,
                    ignore_case,
                },
            ))
        }
        _ => {
            let choices = if claim {
                "`equals`, `in` or `contains`"
            } else {
                "`equals` or `in`"
            };
            let presence = if what == "variable" {
                String::new()
            } else {
                format!(" (for presence only: `{what}-present`)")
            };
            cx.error(
                f.pos,
                format!("a `{what}` condition takes one of {choices}{presence}"),
            );
            None
        }
    };
    Some((name, test))
}
