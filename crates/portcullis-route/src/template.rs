//! URL templates in route paths: `/orders/{id}/lines/{line}`, `/tenants/{tenant}/api` under a
//! prefix, and a trailing `/files/{*path}` (APIM's operation templates).
//!
//! Why segment patterns and not regular expressions: a template is matched on the canonical path
//! (see [`crate::target`]), whose segments are never empty, `.` or `..`, so a `{name}` segment is
//! "any one canonical segment" and nothing more can leak across a `/`. The same segment view makes
//! [`crate::RouteMatch::covers`] exact for the shadowing check: a `{x}` segment covers any one
//! segment, a literal only itself (case rules as for literal paths).
//!
//! Captured values keep the request's spelling and are the canonical (still percent-encoded)
//! segment text; `{*name}` captures the rest of the path, `/`-joined, with its trailing slash when
//! the request had one.

use std::sync::Arc;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text, compared as route paths are (case rules of the route).
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(Arc<str>),
    /// `{*name}`: the rest of the path (one or more segments); last segment of a `path:` only.
    Rest(Arc<str>),
}

/// A parsed route path with at least one `{...}` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    /// Written as `path-prefix`: deeper paths match too.
    prefix: bool,
}

/// Why a route path is not a valid template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{` or `}` that is not a whole `{name}` segment (`/orders/x{id}`, `/a/{id`).
    NotWholeSegment(String),
    /// A name outside `[A-Za-z_][A-Za-z0-9_-]*`.
    BadName(String),
    /// The same name twice in one template.
    Duplicate(String),
    /// `{*name}` not as the last segment, or in a `path-prefix`.
    RestNotLast(String),
    /// Templates in both `path` and `path-prefix`.
    BothTemplated,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::NotWholeSegment(s) => write!(
                f,
                "`{s}`: a template parameter is a whole path segment, `/{{name}}` (not `/x{{name}}`)"
            ),
            TemplateError::BadName(s) => write!(
                f,
                "`{s}` is not a parameter name (letters, digits, `_` and `-`, not starting with a digit or `-`)"
            ),
            TemplateError::Duplicate(s) => {
                write!(f, "parameter `{s}` appears twice in the template")
            }
            TemplateError::RestNotLast(s) => write!(
                f,
                "`{{*{s}}}` matches the rest of the path: it must be the last segment of a `path` (not of a `path-prefix`)"
            ),
            TemplateError::BothTemplated => write!(
                f,
                "a URL template goes in `path` or in `path-prefix`, not in both"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Whether `name` is a parameter name: `[A-Za-z_][A-Za-z0-9_-]*`.
pub fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The path segments of a (trimmed, canonical) path with their byte offsets: `/a/b` gives
/// `(1, "a"), (3, "b")`; `/` gives nothing.
fn segments(path: &str) -> impl Iterator<Item = (usize, &str)> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut offset = 1;
    body.split('/')
        .filter(move |_| !body.is_empty())
        .map(move |s| {
            let at = offset;
            offset += s.len() + 1;
            (at, s)
        })
}

/// A path without its one trailing slash (`/` stays `/`).
fn trimmed(p: &str) -> &str {
    if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    }
}

fn same(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

impl PathTemplate {
    /// Parse a route path (`prefix`: written as `path-prefix`). `Ok(None)`: no `{` or `}` in it, a
    /// literal path. The literal segments are not checked for canonical form here (the config
    /// checker does that with [`PathTemplate::placeholder_path`]).
    pub fn parse(text: &str, prefix: bool) -> Result<Option<PathTemplate>, TemplateError> {
        if !text.contains(['{', '}']) {
            return Ok(None);
        }
        let raw: Vec<&str> = segments(trimmed(text)).map(|(_, s)| s).collect();
        let mut out: Vec<Segment> = Vec::with_capacity(raw.len());
        let mut names: Vec<Arc<str>> = Vec::new();
        for (i, seg) in raw.iter().enumerate() {
            if !seg.contains(['{', '}']) {
                out.push(Segment::Literal((*seg).to_owned()));
                continue;
            }
            let inner = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|s| !s.contains(['{', '}']))
                .ok_or_else(|| TemplateError::NotWholeSegment((*seg).to_owned()))?;
            let (rest, name) = match inner.strip_prefix('*') {
                Some(name) => (true, name),
                None => (false, inner),
            };
            if !is_param_name(name) {
                return Err(TemplateError::BadName(name.to_owned()));
            }
            if names.iter().any(|n| &**n == name) {
                return Err(TemplateError::Duplicate(name.to_owned()));
            }
            let name: Arc<str> = Arc::from(name);
            names.push(name.clone());
            if rest {
                if prefix || i + 1 != raw.len() {
                    return Err(TemplateError::RestNotLast(name.to_string()));
                }
                out.push(Segment::Rest(name));
            } else {
                out.push(Segment::Param(name));
            }
        }
        Ok(Some(PathTemplate {
            segments: out,
            prefix,
        }))
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Written as a `path-prefix`.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// The parameter names, in order.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) | Segment::Rest(n) => Some(n),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the template has a parameter `name`.
    pub fn has(&self, name: &str) -> bool {
        self.names().any(|n| &**n == name)
    }

    /// The template with every parameter replaced by `x`: what the config checker canonicalises to
    /// check the literal segments (`/orders/{id}/..` is not canonical).
    pub fn placeholder_path(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(_) | Segment::Rest(_) => out.push('x'),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Match a canonical path; on success, call `capture` for each parameter (name, text) and
    /// return the byte length of the path the template consumed (for `strip-prefix`).
    fn run<'p>(
        &self,
        path: &'p str,
        case_sensitive: bool,
        mut capture: impl FnMut(&Arc<str>, &'p str),
    ) -> Option<usize> {
        let body = trimmed(path);
        let mut segs = segments(body);
        let mut end = 0;
        for pattern in &self.segments {
            if let Segment::Rest(name) = pattern {
                let (at, _) = segs.next()?;
                capture(name, &path[at..]);
                return Some(path.len());
            }
            let (at, seg) = segs.next()?;
            match pattern {
                Segment::Literal(l) if !same(l, seg, case_sensitive) => return None,
                Segment::Param(name) => capture(name, seg),
                _ => {}
            }
            end = at + seg.len();
        }
        if !self.prefix && segs.next().is_some() {
            return None;
        }
        Some(end)
    }

    /// Whether a canonical path matches.
    pub fn matches(&self, path: &str, case_sensitive: bool) -> bool {
        self.run(path, case_sensitive, |_, _| {}).is_some()
    }

    /// The parameters of a canonical path the template matches (`None`: it does not match).
    pub fn captures(&self, path: &str, case_sensitive: bool) -> Option<Vec<(Arc<str>, String)>> {
        let mut out = Vec::with_capacity(self.segments.len());
        self.run(path, case_sensitive, |n, v| {
            out.push((n.clone(), v.to_owned()))
        })?;
        Some(out)
    }

    /// The length of the path the (prefix) template matched: `/tenants/a/api` of
    /// `/tenants/a/api/x`.
    pub fn matched_len(&self, path: &str, case_sensitive: bool) -> Option<usize> {
        self.run(path, case_sensitive, |_, _| {})
    }
}

/// One segment of a path pattern, as the shadowing check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pat<'a> {
    /// Exactly this segment (route case rules).
    Lit(&'a str),
    /// Any one segment.
    Any,
}

/// A route's path constraint as segment patterns: `exact` (the path has exactly these segments,
/// trailing slash optional) or a prefix (at least these segments). A `{*x}` path is the prefix of
/// its segments (its last one any): the same set of paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape<'a> {
    pub(crate) segs: Vec<Pat<'a>>,
    pub(crate) exact: bool,
}

impl<'a> Shape<'a> {
    pub(crate) fn literal(path: &'a str, exact: bool) -> Shape<'a> {
        Shape {
            segs: segments(trimmed(path)).map(|(_, s)| Pat::Lit(s)).collect(),
            exact,
        }
    }

    pub(crate) fn template(t: &'a PathTemplate) -> Shape<'a> {
        let mut exact = !t.prefix;
        let segs = t
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Pat::Lit(l),
                Segment::Param(_) => Pat::Any,
                Segment::Rest(_) => {
                    exact = false;
                    Pat::Any
                }
            })
            .collect();
        Shape { segs, exact }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(text: &str, prefix: bool) -> PathTemplate {
        PathTemplate::parse(text, prefix).unwrap().unwrap()
    }

    fn caps(t: &PathTemplate, path: &str) -> Option<Vec<(String, String)>> {
        t.captures(path, false).map(|v| {
            v.into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect::<Vec<_>>()
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(PathTemplate::parse("/orders", false), Ok(None));
        let p = t("/orders/{id}/lines/{line}", false);
        assert_eq!(
            p.names().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["id", "line"]
        );
        assert_eq!(p.placeholder_path(), "/orders/x/lines/x");
        let bad = |s: &str, prefix| PathTemplate::parse(s, prefix).unwrap_err();
        assert!(matches!(
            bad("/orders/x{id}", false),
            TemplateError::NotWholeSegment(_)
        ));
        assert!(matches!(
            bad("/orders/{id", false),
            TemplateError::NotWholeSegment(_)
        ));
        assert!(matches!(
            bad("/orders/{{id}}", false),
            TemplateError::NotWholeSegment(_)
        ));
        assert!(matches!(bad("/o/{1d}", false), TemplateError::BadName(_)));
        assert!(matches!(bad("/o/{}", false), TemplateError::BadName(_)));
        assert!(matches!(
            bad("/o/{id}/{id}", false),
            TemplateError::Duplicate(_)
        ));
        assert!(matches!(
            bad("/o/{*rest}/x", false),
            TemplateError::RestNotLast(_)
        ));
        assert!(matches!(
            bad("/o/{*rest}", true),
            TemplateError::RestNotLast(_)
        ));
        assert!(is_param_name("_a-1") && !is_param_name("-a") && !is_param_name(""));
    }

    #[test]
    fn matches_and_captures() {
        let p = t("/orders/{id}/lines/{line}", false);
        assert_eq!(
            caps(&p, "/orders/12/lines/3"),
            pairs(&[("id", "12"), ("line", "3")])
        );
        assert_eq!(
            caps(&p, "/Orders/A%20b/LINES/3/"),
            pairs(&[("id", "A%20b"), ("line", "3")])
        );
        assert_eq!(caps(&p, "/orders/12/lines"), None);
        assert_eq!(caps(&p, "/orders/12/lines/3/x"), None);
        assert!(!p.matches("/Orders/1/lines/2", true));
        let prefix = t("/tenants/{tenant}/api", true);
        assert_eq!(caps(&prefix, "/tenants/a/api"), pairs(&[("tenant", "a")]));
        assert_eq!(
            caps(&prefix, "/tenants/a/api/x/y"),
            pairs(&[("tenant", "a")])
        );
        assert_eq!(caps(&prefix, "/tenants/a/apix"), None);
        assert_eq!(prefix.matched_len("/tenants/a/api/x/y", false), Some(14));
        assert_eq!(prefix.matched_len("/tenants/a/api/", false), Some(14));
        let rest = t("/files/{*path}", false);
        assert_eq!(caps(&rest, "/files/a/b"), pairs(&[("path", "a/b")]));
        assert_eq!(caps(&rest, "/files/a/b/"), pairs(&[("path", "a/b/")]));
        assert_eq!(caps(&rest, "/files/"), None);
        assert_eq!(caps(&rest, "/files"), None);
        let root = t("/{id}", false);
        assert_eq!(caps(&root, "/"), None);
        assert_eq!(caps(&root, "/x/"), pairs(&[("id", "x")]));
    }
}
