//! The route matcher: one definition of what a route's `match:` accepts, used by the proxy for
//! every request and by `check` for the shadowed-route analysis ([`RouteMatch::covers`]).
//!
//! Semantics (docs/configuration.md, `routes[].match`), on canonical inputs (see [`crate::target`]):
//! - `host`: equal to the request's canonical host (lower case, port and trailing dot removed).
//! - `path: /admin` matches `/admin` and `/admin/` (most backends serve both, so the gateway guards
//!   both). A trailing slash written in the config is not significant.
//! - `path-prefix: /api/orders` matches `/api/orders`, `/api/orders/` and `/api/orders/...`, never
//!   `/api/ordersX`. `/api/orders/` means the same as `/api/orders`; `/` matches every path.
//! - paths compare ASCII-case-insensitively unless the route sets `case-sensitive: true` (a
//!   case-sensitive match would let `/API/orders` skip a protected route on a backend that routes
//!   case-insensitively, as ASP.NET Core and IIS do).
//! - `methods`: exact, case-sensitive tokens; `HEAD` also matches a route that lists `GET`. No list
//!   matches every method.
//! - `headers` / `query` (APIM version sets with the Header or Query scheme): each listed request
//!   header (name case-insensitive) or query parameter (name and value form-decoded) must occur
//!   exactly once with exactly the value written. A header or parameter sent twice never matches,
//!   whatever the values: which copy a backend reads is its choice, so the gateway does not pick
//!   one for it (the request falls through to a later route, or 404). Checked by
//!   [`RouteMatch::matches_values`], after the path.
//! - URL templates (`/orders/{id}`, `path-prefix: /tenants/{t}/api`, `/files/{*path}`): see
//!   [`crate::template`]; set by [`RouteMatch::compile`]. A route without one takes exactly the
//!   literal code path above (no template work per request).

use std::sync::Arc;

use http::Method;

use crate::template::{Pat, PathTemplate, Shape, TemplateError};

/// A route's `match:` section, with host and paths in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// Canonical host (lower case, no port, no trailing dot).
    pub host: Option<String>,
    /// Exact path (canonical).
    pub path: Option<String>,
    /// Path prefix (canonical, segment-aware).
    pub path_prefix: Option<String>,
    /// Methods (empty: any).
    pub methods: Vec<Method>,
    /// Compare paths byte for byte instead of ASCII-case-insensitively.
    pub case_sensitive: bool,
    /// The URL template of `path` (or, without `path`, of `path_prefix`) when it has `{...}`
    /// segments: matched instead of that string. Set by [`RouteMatch::compile`].
    pub template: Option<Arc<PathTemplate>>,
    /// `headers`: request headers that must be present once with exactly this value.
    pub headers: Vec<(http::HeaderName, String)>,
    /// `query`: query parameters (decoded name) that must be present once with exactly this
    /// decoded value.
    pub query: Vec<(String, String)>,
}

/// A path without its one trailing slash (`/` stays `/`).
fn trimmed(p: &str) -> &str {
    if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    }
}

fn same(a: &[u8], b: &[u8], case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// `path` is `prefix` or below it (`prefix` trimmed).
fn under(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    let (p, s) = (prefix.as_bytes(), path.as_bytes());
    prefix == "/"
        || (s.len() >= p.len()
            && same(&s[..p.len()], p, case_sensitive)
            && (s.len() == p.len() || s[p.len()] == b'/'))
}

/// `path` is `exact` or `exact/` (`exact` trimmed).
fn is_exact(exact: &str, path: &str, case_sensitive: bool) -> bool {
    same(trimmed(path).as_bytes(), exact.as_bytes(), case_sensitive)
}

impl RouteMatch {
    /// Parse the URL template of `path` (or of `path_prefix` without `path`), if it has one. A
    /// route with templates in both `path` and `path_prefix` is refused (one would be ignored).
    pub fn compile(&mut self) -> Result<(), TemplateError> {
        let exact = match &self.path {
            Some(p) => PathTemplate::parse(p, false)?,
            None => None,
        };
        let prefix = match &self.path_prefix {
            Some(p) => PathTemplate::parse(p, true)?,
            None => None,
        };
        self.template = match (exact, prefix) {
            (Some(_), Some(_)) => return Err(TemplateError::BothTemplated),
            (t, None) | (None, t) => t.map(Arc::new),
        };
        Ok(())
    }

    /// The parameters of a canonical path this route matched (name, canonical segment text), in
    /// template order; empty for a route without a template.
    pub fn captures(&self, path: &str) -> Vec<(Arc<str>, String)> {
        self.template
            .as_ref()
            .and_then(|t| t.captures(path, self.case_sensitive))
            .unwrap_or_default()
    }

    /// Whether a request (canonical method, host and path) matches.
    pub fn matches(&self, method: &Method, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            if !host.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
                return false;
            }
        }
        if !path.starts_with('/') {
            return false;
        }
        let templated = self.template.as_deref();
        if let Some(t) = templated {
            if !t.matches(path, self.case_sensitive) {
                return false;
            }
        }
        let prefix_templated = templated.is_some_and(PathTemplate::is_prefix);
        if let Some(exact) = &self.path {
            let exact_templated = templated.is_some() && !prefix_templated;
            if !exact_templated && !is_exact(trimmed(exact), path, self.case_sensitive) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !prefix_templated && !under(trimmed(prefix), path, self.case_sensitive) {
                return false;
            }
        }
        self.matches_method(method)
    }

    /// Whether the request's headers and query (raw, as received) meet the route's `headers` and
    /// `query` conditions: each present exactly once, with exactly the value written. `true` for a
    /// route without conditions (no work done).
    pub fn matches_values(&self, headers: &http::HeaderMap, query: Option<&str>) -> bool {
        let header_ok = |(name, want): &(http::HeaderName, String)| {
            let mut all = headers.get_all(name).iter();
            match (all.next(), all.next()) {
                (Some(v), None) => v.as_bytes() == want.as_bytes(),
                _ => false,
            }
        };
        let query_ok = |(name, want): &(String, String)| {
            let mut all = crate::query::values(query.unwrap_or(""), name);
            match (all.next(), all.next()) {
                (Some(v), None) => v == want.as_str(),
                _ => false,
            }
        };
        self.headers.iter().all(header_ok) && self.query.iter().all(query_ok)
    }

    /// Whether the route has `headers` or `query` conditions.
    pub fn has_value_conditions(&self) -> bool {
        !self.headers.is_empty() || !self.query.is_empty()
    }

    /// The method part of [`RouteMatch::matches`].
    pub fn matches_method(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// The part of a matched path below the route's prefix (for `strip-prefix`): `/files/a` under
    /// `/files` is `/a`; under `/` it is the whole path. `None` without a prefix.
    /// With a templated prefix, what the template matched (`/tenants/a/api/x` under
    /// `/tenants/{t}/api` is `/x`).
    pub fn below_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = trimmed(self.path_prefix.as_deref()?);
        if let Some(t) = self.template.as_deref().filter(|t| t.is_prefix()) {
            return path.get(t.matched_len(path, self.case_sensitive)?..);
        }
        if prefix == "/" {
            return Some(path);
        }
        path.get(prefix.len()..)
    }

    /// True when every request `later` matches is matched by `self` (so a later route is shadowed).
    pub fn covers(&self, later: &RouteMatch) -> bool {
        let host = self.host.is_none() || self.host == later.host;
        let methods = self.methods.is_empty()
            || (!later.methods.is_empty() && later.methods.iter().all(|m| self.matches_method(m)));
        // Every condition of this route is one of the later route's: a request the later route
        // matches meets them. (A later route without this route's conditions is not covered.)
        let values = self.headers.iter().all(|c| later.headers.contains(c))
            && self.query.iter().all(|c| later.query.contains(c));
        host && methods && values && self.covers_path(later)
    }

    /// The paths this route accepts, as segment patterns (see [`Shape`]). `path` is narrower than
    /// `path_prefix` when both are given (the config checks it lies inside), so it is used first.
    fn shape(&self) -> Shape<'_> {
        if let Some(t) = self.template.as_deref().filter(|t| !t.is_prefix()) {
            return Shape::template(t);
        }
        if let Some(p) = &self.path {
            return Shape::literal(p, true);
        }
        if let Some(t) = self.template.as_deref() {
            return Shape::template(t);
        }
        Shape::literal(self.path_prefix.as_deref().unwrap_or("/"), false)
    }

    fn covers_path(&self, later: &RouteMatch) -> bool {
        let (mine, theirs) = (self.shape(), later.shape());
        // A case-sensitive literal with letters does not cover a case-insensitive later route:
        // the later one also matches the other spellings.
        let cs = self.case_sensitive && later.case_sensitive;
        let strict = self.case_sensitive && !later.case_sensitive;
        let seg = |a: &Pat<'_>, b: &Pat<'_>| match (a, b) {
            (Pat::Any, _) => true,
            (Pat::Lit(_), Pat::Any) => false,
            (Pat::Lit(x), Pat::Lit(y)) => {
                !(strict && x.bytes().any(|c| c.is_ascii_alphabetic()))
                    && same(x.as_bytes(), y.as_bytes(), cs)
            }
        };
        let lengths = if mine.exact {
            // Exactly these segments: only an exact later route of the same length is inside.
            theirs.exact && theirs.segs.len() == mine.segs.len()
        } else {
            // This prefix and below: a later route whose own segments start with it.
            theirs.segs.len() >= mine.segs.len()
        };
        lengths && mine.segs.iter().zip(&theirs.segs).all(|(a, b)| seg(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            path_prefix: Some(p.to_owned()),
            ..RouteMatch::default()
        }
    }

    fn exact(p: &str) -> RouteMatch {
        RouteMatch {
            path: Some(p.to_owned()),
            ..RouteMatch::default()
        }
    }

    #[test]
    fn prefixes_are_segment_aware_and_trailing_slash_free() {
        let get = Method::GET;
        for p in ["/api", "/api/"] {
            let r = prefix(p);
            assert!(r.matches(&get, None, "/api"), "{p}");
            assert!(r.matches(&get, None, "/api/"), "{p}");
            assert!(r.matches(&get, None, "/api/x"), "{p}");
            assert!(r.matches(&get, None, "/API/x"), "{p}");
            assert!(!r.matches(&get, None, "/apix"), "{p}");
        }
        assert!(prefix("/").matches(&get, None, "/anything"));
        let cs = RouteMatch {
            case_sensitive: true,
            ..prefix("/api")
        };
        assert!(!cs.matches(&get, None, "/API/x"));
    }

    #[test]
    fn exact_paths_match_with_and_without_trailing_slash() {
        let get = Method::GET;
        let r = exact("/admin");
        assert!(r.matches(&get, None, "/admin"));
        assert!(r.matches(&get, None, "/admin/"));
        assert!(r.matches(&get, None, "/Admin"));
        assert!(!r.matches(&get, None, "/admin/x"));
        assert!(!r.matches(&get, None, "/adminx"));
        assert!(exact("/").matches(&get, None, "/"));
        assert!(!exact("/").matches(&get, None, "/x"));
    }

    #[test]
    fn methods_and_head() {
        let r = RouteMatch {
            methods: vec![Method::GET],
            ..prefix("/")
        };
        assert!(r.matches(&Method::HEAD, None, "/"));
        assert!(!r.matches(&Method::POST, None, "/"));
        let odd = Method::from_bytes(b"delete").unwrap_or(Method::TRACE);
        assert!(!r.matches(&odd, None, "/"));
    }

    #[test]
    fn covers_follows_matches() {
        assert!(prefix("/api/").covers(&exact("/api")));
        assert!(prefix("/api").covers(&prefix("/api/")));
        assert!(prefix("/api").covers(&exact("/API/x")));
        assert!(!prefix("/api/x").covers(&prefix("/api")));
        assert!(exact("/admin/").covers(&exact("/admin")));
        assert!(!exact("/admin").covers(&prefix("/admin")));
        assert!(RouteMatch::default().covers(&exact("/x")));
        let cs = RouteMatch {
            case_sensitive: true,
            ..prefix("/api")
        };
        assert!(!cs.covers(&prefix("/api/x")));
        assert!(cs.covers(&RouteMatch {
            case_sensitive: true,
            ..prefix("/api/x")
        }));
        let get = RouteMatch {
            methods: vec![Method::GET],
            ..prefix("/")
        };
        assert!(get.covers(&RouteMatch {
            methods: vec![Method::HEAD],
            ..prefix("/x")
        }));
        assert!(!get.covers(&prefix("/x")));
    }

    #[test]
    fn header_and_query_conditions() {
        let v2 = RouteMatch {
            headers: vec![(
                http::HeaderName::from_static("api-version"),
                "v2".to_owned(),
            )],
            query: vec![("api-version".to_owned(), "2024-01-01".to_owned())],
            ..prefix("/orders")
        };
        let mut h = http::HeaderMap::new();
        assert!(!v2.matches_values(&h, Some("api-version=2024-01-01")));
        h.insert("Api-Version", http::HeaderValue::from_static("v2"));
        assert!(v2.matches_values(&h, Some("api%2Dversion=2024-01-01&x=1")));
        assert!(!v2.matches_values(&h, Some("api-version=2024-01-02")));
        assert!(!v2.matches_values(&h, None));
        assert!(
            !v2.matches_values(&h, Some("api-version=2024-01-01&api-version=2024-01-01")),
            "a parameter sent twice never matches"
        );
        h.append("api-version", http::HeaderValue::from_static("v2"));
        assert!(
            !v2.matches_values(&h, Some("api-version=2024-01-01")),
            "a header sent twice never matches"
        );
        let mut v = http::HeaderMap::new();
        v.insert("api-version", http::HeaderValue::from_static("V2"));
        assert!(
            !v2.matches_values(&v, Some("api-version=2024-01-01")),
            "values are exact"
        );
        assert!(prefix("/").matches_values(&http::HeaderMap::new(), None));

        // Shadowing: a route with conditions covers only later routes with (at least) them.
        let plain = prefix("/orders");
        assert!(!v2.covers(&plain));
        assert!(plain.covers(&v2));
        assert!(v2.covers(&v2.clone()));
        let header_only = RouteMatch {
            query: Vec::new(),
            ..v2.clone()
        };
        assert!(header_only.covers(&v2));
        assert!(!v2.covers(&header_only));
        let other = RouteMatch {
            headers: vec![(
                http::HeaderName::from_static("api-version"),
                "v1".to_owned(),
            )],
            ..header_only.clone()
        };
        assert!(!header_only.covers(&other));
    }

    #[test]
    fn below_prefix() {
        assert_eq!(prefix("/files/").below_prefix("/files/a"), Some("/a"));
        assert_eq!(prefix("/files").below_prefix("/FILES"), Some(""));
        assert_eq!(prefix("/").below_prefix("/a"), Some("/a"));
        assert_eq!(exact("/a").below_prefix("/a"), None);
    }
}
