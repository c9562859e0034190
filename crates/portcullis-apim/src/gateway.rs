//! The whole gateway.yaml around the converted policies: a `server:` block with the default
//! listeners, the `policies:`, and the routes given on the command line (or one catch-all route to
//! edit), with comments pointing back to the XML.
//!
//! A `--route` path with a `{param}` segment is an APIM operation's URL template: it is written as
//! `match: { path: ... }` (the whole path), because APIM matches an operation's template against the
//! whole path, and a prefix would let `/orders/1/anything` reach a policy written for `/orders/{id}`.
//! The policy document itself never names the operation's template, so without such a route the
//! output says which parameters the policy reads.

use std::fmt;
use std::str::FromStr;

use crate::convert::{Converter, PolicyOut};
use crate::inbound::inbound_of;
use crate::yaml::{write_document, Entry, Item, Node};

/// Default proxy listener of the emitted config.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener of the emitted config.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// Upstream of the catch-all route emitted without `--route`.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:3000";

/// A route from `--route NAME=PATH=UPSTREAM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Route name.
    pub name: String,
    /// Path prefix, or an operation's URL template (a `{param}` segment) matched as the whole path
    /// (starts with `/`).
    pub path: String,
    /// `http://host:port` or `https://host:port`.
    pub upstream: String,
}

/// A `--route` value that is not `NAME=PATH=UPSTREAM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route must be NAME=PATH=UPSTREAM (for example orders=/api/orders=http://127.0.0.1:3000 or order=/orders/{{id}}=http://127.0.0.1:3000): {0}")]
pub struct RouteSpecError(&'static str);

impl FromStr for RouteSpec {
    type Err = RouteSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '=');
        let (Some(name), Some(prefix), Some(upstream)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(RouteSpecError("three parts separated by '=' expected"));
        };
        if name.is_empty() {
            return Err(RouteSpecError("empty name"));
        }
        if !prefix.starts_with('/') {
            return Err(RouteSpecError("the path must start with '/'"));
        }
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(RouteSpecError(
                "the upstream must start with http:// or https://",
            ));
        }
        Ok(RouteSpec {
            name: name.to_owned(),
            path: prefix.to_owned(),
            upstream: upstream.to_owned(),
        })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}={}", self.name, self.path, self.upstream)
    }
}

impl RouteSpec {
    /// The URL-template parameter names of the path (`{id}`, `{*rest}` -> `id`, `rest`); none for a
    /// plain prefix.
    fn params(&self) -> Vec<&str> {
        self.path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| name.trim_start_matches('*'))
            .collect()
    }
}

/// The `policies:` entries of a finished conversion, and the policy its routes use (the first
/// converted token check's, else the policy of the statements alone, else `none`).
pub(crate) fn policies(conv: &Converter) -> (Vec<Entry>, String) {
    let mut policies: Vec<Entry> = conv
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| policy_entry(conv, i, p))
        .collect();
    if !conv.refused.is_empty() {
        let name = refusing_name(conv);
        let lines: Vec<String> = conv.refused.iter().map(|p| conv.origin(*p)).collect();
        let refuse = Item::new(Node::Map(vec![crate::inbound::refuse_entry()]));
        policies.push(
            Entry::new(
                name.as_str(),
                Node::Map(vec![Entry::new("inbound", Node::Seq(vec![refuse]))]),
            )
            .comment(format!(
                "Refuses every request: no one policy enforces every check of the document ({}; see the report there); APIM runs them all. Edit the routes by hand.",
                lines.join(", ")
            )),
        );
        return (policies, name);
    }
    if let Some(first) = conv.policies.first() {
        return (policies, first.name.clone());
    }
    // statements without a token check: a policy of those statements alone
    let items = inbound_of(&conv.steps, None, || Item::new(Node::Map(Vec::new())));
    let outbound = outbound_of(conv);
    if items.is_empty() && outbound.is_none() {
        return (policies, "none".to_owned());
    }
    let mut entries = Vec::new();
    if !items.is_empty() {
        entries.push(Entry::new("inbound", Node::Seq(items)));
    }
    entries.extend(outbound);
    policies.push(Entry::new(conv.stem(), Node::Map(entries)));
    (policies, conv.stem().to_owned())
}

/// Write the gateway.yaml for a finished conversion.
pub fn render(conv: &Converter, file: &str, routes: &[RouteSpec]) -> String {
    let server = server_entry();
    let (policies, _) = policies(conv);
    let statements_only = conv.policies.is_empty() && !policies.is_empty();
    let mut document = vec![server];
    if !conv.backends.is_empty() {
        let backends = conv
            .backends
            .iter()
            .map(|(id, pos)| {
                Entry::new(
                    id.as_str(),
                    Node::Map(vec![Entry::new("url", Node::str(DEFAULT_UPSTREAM))]),
                )
                .comment(format!(
                    "APIM backend \"{id}\" ({}): fill in its URL",
                    conv.origin(*pos)
                ))
            })
            .collect();
        document.push(Entry::new("backends", Node::Map(backends)));
    }
    document.push(Entry::new("policies", Node::Map(policies)));
    document.push(Entry::new(
        "routes",
        Node::Seq(route_items(conv, routes, statements_only)),
    ));
    let body = write_document(&document);
    let mut out = format!(
        "# Converted from {file} by `portcullis import-apim`; check it with `portcullis check -c <this file>`.\n"
    );
    if body.contains("{{") {
        out.push_str("# Named values ({{name}}) are resolved from the environment when the config is loaded (see docs/import-apim.md).\n");
    }
    out.push_str(&body);
    out
}

/// `server:` with the default listeners.
pub(crate) fn server_entry() -> Entry {
    Entry::new(
        "server",
        Node::Map(vec![
            Entry::new("listen", Node::str(DEFAULT_LISTEN)),
            Entry::new("admin", Node::str(DEFAULT_ADMIN)),
        ]),
    )
}

fn policy_entry(conv: &Converter, index: usize, p: &PolicyOut) -> Entry {
    let token = || Entry::new(p.element, Node::Map(p.fields.entries())).comment(conv.origin(p.pos));
    let inbound = inbound_of(&conv.steps, Some(index), || {
        Item::new(Node::Map(vec![token()]))
    });
    let mut entries = if inbound.is_empty() {
        vec![token()]
    } else {
        vec![Entry::new("inbound", Node::Seq(inbound))]
    };
    if !p.forward.is_empty() {
        let claims = p
            .forward
            .iter()
            .map(|(header, claim, pos)| {
                Entry::new(header.as_str(), Node::str(claim.as_str())).comment(conv.origin(*pos))
            })
            .collect();
        entries.push(Entry::new("forward-claims", Node::Map(claims)));
    }
    if let Some(pos) = p.forward_token_off {
        entries.push(Entry::new("forward-token", Node::Bool(false)).comment(conv.origin(pos)));
    }
    entries.extend(outbound_of(conv));
    Entry::new(p.name.as_str(), Node::Map(entries))
}

/// `outbound:` with every converted outbound statement (the same for every policy).
fn outbound_of(conv: &Converter) -> Option<Entry> {
    let items: Vec<Item> = conv
        .out_steps
        .iter()
        .filter_map(|s| s.entry.clone())
        .map(|e| Item::new(Node::Map(vec![e])))
        .collect();
    (!items.is_empty()).then(|| Entry::new("outbound", Node::Seq(items)))
}

/// The name of the policy that refuses every request (see [`Converter::refused`]).
fn refusing_name(conv: &Converter) -> String {
    format!("{}-refused", conv.stem())
}

fn route_items(conv: &Converter, routes: &[RouteSpec], statements_only: bool) -> Vec<Item> {
    let refusing = refusing_name(conv);
    let policy = match conv.policies.first() {
        _ if !conv.refused.is_empty() => refusing.as_str(),
        Some(p) => p.name.as_str(),
        None if statements_only => conv.stem(),
        None => "none",
    };
    let others: Vec<&str> = conv
        .policies
        .iter()
        .skip(usize::from(conv.refused.is_empty()))
        .map(|p| p.name.as_str())
        .collect();
    let default = RouteSpec {
        name: "default".to_owned(),
        path: "/".to_owned(),
        upstream: DEFAULT_UPSTREAM.to_owned(),
    };
    let specs: Vec<&RouteSpec> = if routes.is_empty() {
        vec![&default]
    } else {
        routes.iter().collect()
    };
    let mut items: Vec<Item> = specs.iter().map(|r| route(r, policy)).collect();
    if routes.is_empty() {
        items[0].comments.push("A catch-all route to the default upstream: edit the path prefix and upstream (or use --route NAME=PATH=UPSTREAM).".to_owned());
    }
    let mut params: Vec<&str> = Vec::new();
    for (p, _) in &conv.params {
        if !params.contains(&p.as_str()) {
            params.push(p);
        }
    }
    let template: String = params.iter().map(|p| format!("/{{{p}}}")).collect();
    for (item, spec) in items.iter_mut().zip(specs) {
        let has = spec.params();
        let missing: Vec<String> = params
            .iter()
            .filter(|p| !has.contains(p))
            .map(|p| format!("{{{p}}}"))
            .collect();
        if !missing.is_empty() {
            item.comments.push(format!(
                "The policy reads the URL-template parameters {}: give the route the operation's URL template (for example match: {{ path: /items{template} }}, or --route NAME=/items{template}=URL).",
                missing.join(", ")
            ));
        }
    }
    if !others.is_empty() {
        if let Some(first) = items.first_mut() {
            first.comments.push(format!(
                "Other converted policies ({}) came from separate branches or statements: point routes at them as needed.",
                others.join(", ")
            ));
        }
    }
    items
}

fn route(spec: &RouteSpec, policy: &str) -> Item {
    let key = if spec.params().is_empty() {
        "path-prefix"
    } else {
        "path"
    };
    Item::new(Node::Map(vec![
        Entry::new("name", Node::str(&spec.name)),
        Entry::new(
            "match",
            Node::Map(vec![Entry::new(key, Node::str(&spec.path))]),
        ),
        Entry::new("upstream", Node::str(&spec.upstream)),
        Entry::new("policy", Node::str(policy)),
    ]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn route_spec_parses_three_parts() {
        let r: RouteSpec = "orders=/api/orders=http://127.0.0.1:3000/x?a=b"
            .parse()
            .unwrap();
        assert_eq!(r.upstream, "http://127.0.0.1:3000/x?a=b");
        assert!("orders=/api".parse::<RouteSpec>().is_err());
        assert!("orders=api=http://x".parse::<RouteSpec>().is_err());
        assert!("=/=http://x".parse::<RouteSpec>().is_err());
        assert!("a=/=ftp://x".parse::<RouteSpec>().is_err());
    }

    #[test]
    fn a_template_path_is_the_whole_path() {
        let r: RouteSpec = "o=/orders/{id}/files/{*rest}=http://x".parse().unwrap();
        assert_eq!(r.params(), ["id", "rest"]);
        let Node::Map(entries) = &route(&r, "p").value else {
            panic!("not a map")
        };
        let Node::Map(m) = &entries[1].value else {
            panic!("no match")
        };
        assert_eq!(m[0].key, "path");
        let r: RouteSpec = "o=/api/orders=http://x".parse().unwrap();
        assert!(r.params().is_empty());
        // `{` inside a segment is not a parameter (gateway.yaml refuses such a template)
        let r: RouteSpec = "o=/a/x{id}=http://x".parse().unwrap();
        assert!(r.params().is_empty());
    }
}
