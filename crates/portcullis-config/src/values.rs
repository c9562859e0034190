//! Values: the strings written in transformation statements (header and query values, variable
//! values, return-response bodies and headers, rewrite-uri templates), with `${...}` sources
//! resolved per request.
//!
//! Why a small template language rather than APIM's C# expressions: a gateway that evaluates
//! arbitrary code per request is a large attack and review surface, and almost every expression
//! people write in APIM policies reads one thing (a header, a query parameter, a claim, a variable,
//! the client address) and maybe falls back to a default. So a value is literal text with
//! `${source}` or `${source|fallback}` pieces, parsed once at load (a mistake is a `check` error at
//! its `file:line:col`), and rendered by the proxy from the request.
//!
//! | source | value |
//! |---|---|
//! | `${header:NAME}` | the request header (several: joined with `,`) |
//! | `${query:NAME}` | the query parameter, percent-decoded (first occurrence) |
//! | `${param:NAME}` | the route's URL-template parameter, percent-decoded |
//! | `${claim:NAME}` | a claim of the verified token (dotted path, arrays joined with `,`) |
//! | `${var:NAME}` | a variable set by an earlier `set-variable` |
//! | `${client-ip}` | the client address (trusted proxies honoured) |
//! | `${method}` `${path}` `${host}` | the canonical method, path (no query), host (no port) |
//! | `${query}` | the whole query string as received |
//! | `${subscription}` | the name of the subscription whose key was accepted (empty: none) |
//!
//! `$${` is a literal `${`; any other `$` is literal too.

use std::sync::Arc;

use http::HeaderName;

use crate::walk::{self, Cx};
use crate::yaml::Node;

/// A value: literal text and `${...}` sources, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    parts: Vec<Part>,
}

/// One piece of a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as written (`$${` already turned into `${`).
    Literal(String),
    /// A source read per request.
    Source {
        /// What is read.
        source: Source,
        /// `|fallback`: used when the source is absent or empty.
        fallback: Option<String>,
    },
}

/// Where a `${...}` piece reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `${header:NAME}`.
    Header(HeaderName),
    /// `${query:NAME}` (the decoded parameter name).
    Query(String),
    /// `${param:NAME}`.
    Param(Arc<str>),
    /// `${claim:NAME}` (name or dotted path).
    Claim(String),
    /// `${var:NAME}`.
    Var(Arc<str>),
    /// `${client-ip}`.
    ClientIp,
    /// `${method}`.
    Method,
    /// `${path}`.
    Path,
    /// `${host}`.
    Host,
    /// `${query}`: the whole query string.
    QueryString,
    /// `${subscription}`: the accepted subscription key's subscription name (APIM's
    /// `context.Subscription.Name`).
    Subscription,
}

/// Why a value's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Byte offset of the offending `${` in the text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// The sources a value may name, for "expected one of" messages.
const KNOWN: &str = "header:NAME, query:NAME, param:NAME, claim:NAME, var:NAME, client-ip, method, path, host, query, subscription";

/// Whether `name` is a variable or URL-template parameter name: `[A-Za-z_][A-Za-z0-9_-]*`.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Value {
    /// A value of literal text only.
    pub fn literal(text: impl Into<String>) -> Value {
        let text = text.into();
        Value {
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![Part::Literal(text)]
            },
        }
    }

    /// Parses a value's text.
    pub fn parse(text: &str) -> Result<Value, ValueError> {
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(i) = rest.find('$') {
            literal.push_str(&rest[..i]);
            let at = &rest[i..];
            if let Some(after) = at.strip_prefix("$${") {
                literal.push_str("${");
                offset += i + 3;
                rest = after;
                continue;
            }
            let Some(body) = at.strip_prefix("${") else {
                literal.push('$');
                offset += i + 1;
                rest = &at[1..];
                continue;
            };
            let start = offset + i;
            let Some(end) = body.find('}') else {
                return Err(ValueError {
                    offset: start,
                    message: format!(
                        "unclosed `${{` in `{}`: end the source with `}}` (a literal `${{` is written `$${{`)",
                        at.char_indices().nth(40).map_or(at, |(i, _)| &at[..i])
                    ),
                });
            };
            let inner = &body[..end];
            let part = source_part(inner).map_err(|message| ValueError {
                offset: start,
                message,
            })?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            let consumed = 2 + end + 1;
            offset += i + consumed;
            rest = &at[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Value { parts })
    }

    /// The pieces in order (none for the empty string).
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The text, when the value has no sources (it renders without reading the request).
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Every source the value reads, in order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|p| match p {
            Part::Source { source, .. } => Some(source),
            Part::Literal(_) => None,
        })
    }

    /// The claims the value reads (they need `validate-jwt` before the statement).
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.sources().filter_map(|s| match s {
            Source::Claim(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// The variables the value reads (they need a `set-variable` before the statement).
    pub fn vars(&self) -> impl Iterator<Item = &Arc<str>> {
        self.sources().filter_map(|s| match s {
            Source::Var(v) => Some(v),
            _ => None,
        })
    }

    /// The URL-template parameters the value reads (`check` warns when a route using the policy
    /// has no such parameter).
    pub fn params(&self) -> impl Iterator<Item = &Arc<str>> {
        self.sources().filter_map(|s| match s {
            Source::Param(p) => Some(p),
            _ => None,
        })
    }
}

/// The inside of `${...}`: `source[:name][|fallback]`.
fn source_part(inner: &str) -> Result<Part, String> {
    let (spec, fallback) = match inner.split_once('|') {
        Some((spec, fallback)) => (spec, Some(fallback.to_owned())),
        None => (inner, None),
    };
    let (kind, name) = match spec.split_once(':') {
        Some((kind, name)) => (kind, Some(name)),
        None => (spec, None),
    };
    let bare = |source: Source| match name {
        None => Ok(source),
        Some(_) => Err(format!("`${{{kind}}}` takes no name: found `${{{inner}}}`")),
    };
    let named = |what: &str| -> Result<&str, String> {
        match name {
            Some(n) if !n.is_empty() => {
                if n.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    Err(format!(
                        "`${{{inner}}}`: a {what} name has no spaces or control characters"
                    ))
                } else {
                    Ok(n)
                }
            }
            _ => Err(format!(
                "`${{{kind}:NAME}}` needs a {what} name: found `${{{inner}}}`"
            )),
        }
    };
    let identifier = |what: &str| -> Result<Arc<str>, String> {
        let n = named(what)?;
        if is_identifier(n) {
            Ok(Arc::from(n))
        } else {
            Err(format!(
                "`${{{inner}}}`: `{n}` is not a {what} name (letters, digits, `_` and `-`, not starting with a digit or `-`)"
            ))
        }
    };
    let source = match kind {
        "header" => {
            let n = named("header")?;
            Source::Header(
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| format!("`${{{inner}}}`: `{n}` is not a header name"))?,
            )
        }
        "query" if name.is_none() => Source::QueryString,
        "query" => Source::Query(named("query parameter")?.to_owned()),
        "param" => Source::Param(identifier("URL-template parameter")?),
        "claim" => Source::Claim(named("claim")?.to_owned()),
        "var" => Source::Var(identifier("variable")?),
        "client-ip" => bare(Source::ClientIp)?,
        "method" => bare(Source::Method)?,
        "path" => bare(Source::Path)?,
        "host" => bare(Source::Host)?,
        "subscription" => bare(Source::Subscription)?,
        other => {
            return Err(format!(
                "unknown value source `${{{other}...}}`: the sources are {KNOWN} (a literal `${{` is written `$${{`)"
            ))
        }
    };
    if let Some(f) = &fallback {
        if f.contains("${") {
            return Err(format!(
                "`${{{inner}}}`: a fallback is literal text; it cannot hold another source"
            ));
        }
    }
    Ok(Part::Source { source, fallback })
}

/// Reads a value from a string node; a parse error is reported at the node.
pub(crate) fn value(cx: &mut Cx, node: &Node, what: &str) -> Option<Value> {
    let text = walk::string(cx, node, what)?;
    match Value::parse(text) {
        Ok(v) => Some(v),
        Err(e) => {
            cx.error(node.pos, format!("`{what}`: {}", e.message));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn source(s: Source, fallback: Option<&str>) -> Part {
        Part::Source {
            source: s,
            fallback: fallback.map(str::to_owned),
        }
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(Value::parse("").unwrap().as_literal(), Some(""));
        assert_eq!(Value::parse("plain").unwrap().as_literal(), Some("plain"));
        assert_eq!(Value::parse("a$b$").unwrap().as_literal(), Some("a$b$"));
        assert_eq!(
            Value::parse("cost $${price} $$x").unwrap().as_literal(),
            Some("cost ${price} $$x")
        );
        assert_eq!(Value::literal("x"), Value::parse("x").unwrap());
    }

    #[test]
    fn sources_in_order_with_fallbacks() {
        let v = Value::parse("t=${header:X-Tenant|public}/${client-ip}${var:tier}!").unwrap();
        assert_eq!(
            v.parts(),
            &[
                Part::Literal("t=".to_owned()),
                source(
                    Source::Header(HeaderName::from_static("x-tenant")),
                    Some("public")
                ),
                Part::Literal("/".to_owned()),
                source(Source::ClientIp, None),
                source(Source::Var(Arc::from("tier")), None),
                Part::Literal("!".to_owned()),
            ]
        );
        assert_eq!(v.as_literal(), None);
        assert_eq!(v.vars().map(|v| &**v).collect::<Vec<_>>(), ["tier"]);
        let v = Value::parse("${query}${query:a b|}${claim:realm_access.roles}${param:id}")
            .unwrap_err();
        assert!(v.message.contains("no spaces"), "{v:?}");
        let v = Value::parse("${query}${query:x%20y|}${claim:http://ms/claims/oid}${param:id}")
            .unwrap();
        assert_eq!(v.claims().collect::<Vec<_>>(), ["http://ms/claims/oid"]);
        assert_eq!(v.params().map(|p| &**p).collect::<Vec<_>>(), ["id"]);
        assert_eq!(
            v.parts()[..2],
            [
                source(Source::QueryString, None),
                source(Source::Query("x%20y".to_owned()), Some("")),
            ]
        );
        for (text, s) in [
            ("${method}", Source::Method),
            ("${path}", Source::Path),
            ("${host}", Source::Host),
            ("${subscription}", Source::Subscription),
        ] {
            assert_eq!(Value::parse(text).unwrap().parts(), &[source(s, None)]);
        }
    }

    #[test]
    fn mistakes_are_errors_with_their_offset() {
        for (text, offset, says) in [
            ("a ${header:X", 2, "unclosed"),
            ("ab${nope:x}", 2, "unknown value source `${nope...}`"),
            ("${header:}", 0, "needs a header name"),
            ("${header:bad name}", 0, "no spaces"),
            ("${header:b(d}", 0, "not a header name"),
            ("x${var:9lives}", 1, "not a variable name"),
            ("${param:a.b}", 0, "not a URL-template parameter name"),
            ("${method:GET}", 0, "takes no name"),
            ("${client-ip:x}", 0, "takes no name"),
            ("${header:X|${var:y}}", 0, "fallback is literal"),
            ("$${ok} ${", 7, "unclosed"),
            (
                "${header:ééééééééééééééééééééééééééééééééééééééééé",
                0,
                "unclosed",
            ),
        ] {
            let e = Value::parse(text).unwrap_err();
            assert_eq!(e.offset, offset, "{text}: {e:?}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }

    /// Every short combination of the pieces the parser looks at parses or errs, never panics,
    /// and an error's offset points at a `${`.
    #[test]
    fn never_panics() {
        let pieces = [
            "$", "{", "}", "|", ":", "\u{e9}", "a", "header", "var", "query",
        ];
        let mut text = String::new();
        let mut digits = [0usize; 5];
        loop {
            text.clear();
            for d in digits {
                text.push_str(pieces[d]);
            }
            if let Err(e) = Value::parse(&text) {
                assert!(text[e.offset..].starts_with("${"), "{text:?}: {e:?}");
            }
            let Some(i) = digits.iter().position(|d| *d + 1 < pieces.len()) else {
                break;
            };
            digits[i] += 1;
            for d in &mut digits[..i] {
                *d = 0;
            }
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("tenant_id-2"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("-x"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("a.b"));
    }
}
