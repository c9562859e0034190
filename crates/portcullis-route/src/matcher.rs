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

use http::Method;

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
        if let Some(exact) = &self.path {
            if !is_exact(trimmed(exact), path, self.case_sensitive) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !under(trimmed(prefix), path, self.case_sensitive) {
                return false;
            }
        }
        self.matches_method(method)
    }

    /// The method part of [`RouteMatch::matches`].
    pub fn matches_method(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// The part of a matched path below the route's prefix (for `strip-prefix`): `/files/a` under
    /// `/files` is `/a`; under `/` it is the whole path. `None` without a prefix.
    pub fn below_prefix<'p>(&self, path: &'p str) -> Option<&'p str> {
        let prefix = trimmed(self.path_prefix.as_deref()?);
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
        host && methods && self.covers_path(later)
    }

    fn covers_path(&self, later: &RouteMatch) -> bool {
        let mine = self.path.as_deref().or(self.path_prefix.as_deref());
        // A case-sensitive pattern with letters does not cover a case-insensitive later route:
        // the later one also matches the other spellings.
        if self.case_sensitive
            && !later.case_sensitive
            && mine.is_some_and(|p| p.bytes().any(|b| b.is_ascii_alphabetic()))
        {
            return false;
        }
        let cs = self.case_sensitive && later.case_sensitive;
        // The paths `later` matches, as a pattern: exact `L` means {L, L/}; prefix `Q` means Q and
        // below (Q's own constraint when it has both is narrower, so use the exact path first).
        let (later_exact, later_prefix) = match (&later.path, &later.path_prefix) {
            (Some(p), _) => (Some(trimmed(p)), None),
            (None, Some(q)) => (None, Some(trimmed(q))),
            (None, None) => (None, Some("/")),
        };
        match (&self.path, &self.path_prefix) {
            (Some(p), _) => {
                later_exact.is_some_and(|l| same(l.as_bytes(), trimmed(p).as_bytes(), cs))
            }
            (None, Some(prefix)) => {
                let prefix = trimmed(prefix);
                match (later_exact, later_prefix) {
                    (Some(l), _) => under(prefix, l, cs),
                    (None, Some(q)) => under(prefix, q, cs),
                    (None, None) => false,
                }
            }
            (None, None) => true,
        }
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
    fn below_prefix() {
        assert_eq!(prefix("/files/").below_prefix("/files/a"), Some("/a"));
        assert_eq!(prefix("/files").below_prefix("/FILES"), Some(""));
        assert_eq!(prefix("/").below_prefix("/a"), Some("/a"));
        assert_eq!(exact("/a").below_prefix("/a"), None);
    }
}
