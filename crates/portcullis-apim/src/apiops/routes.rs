//! An operation's URL template as a gateway.yaml route path, and the order of the routes.
//!
//! gateway.yaml's templates (crate `portcullis-route`) have whole-segment `{name}` parameters and a
//! trailing `{*name}`; APIM's also allow several parameters in one segment (`{a}.{b}`), text around
//! a parameter (`v{n}`) and query parameters (`/orders?status={s}`). Those are made as close as is
//! safe and reported: a mixed segment becomes one whole-segment parameter (it matches any one
//! segment, and the backend still receives the segment as sent); the query part is not matched.
//!
//! Order: the first matching route wins, so routes are sorted most specific first, segment by
//! segment (a literal before `{param}` before `{*rest}`), a route matching a version header or
//! query value before the same path without, and `HEAD` before `GET` (a `GET` route also takes
//! `HEAD`). Two operations with the same shape (method, path with parameters unnamed, version)
//! cannot both be reached: the later one is dropped and reported.

/// An operation's template converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The route's `match.path`: the API's path segments, then the operation's.
    pub path: String,
    /// The operation's own path with the same parameters (what the backend receives below the
    /// API's `serviceUrl`), for `rewrite-uri` (which writes `{*rest}` as `{rest}`).
    pub backend: String,
    /// What could not be kept as written (reported as unsupported).
    pub problems: Vec<String>,
}

/// The route's shape, for ordering and for finding operations no request could reach.
pub(crate) type Shape = Vec<(u8, String)>;

/// Convert `template` (the operation's URL template) under `prefix` (the API's path and version
/// segment). `Err`: the operation cannot be routed (the reason).
pub(crate) fn convert(prefix: &str, template: &str) -> Result<Template, String> {
    let mut problems = Vec::new();
    let (path, query) = match template.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (template, None),
    };
    if let Some(q) = query {
        problems.push(format!("the query part `?{q}` of the template is not matched: requests without it reach this operation too"));
    }
    let mut own: Vec<String> = Vec::new();
    let mut backend: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if !seg.contains(['{', '}']) {
            literal(seg)?;
            own.push((*seg).to_owned());
            backend.push((*seg).to_owned());
            continue;
        }
        let whole = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        let (name, wildcard) = match whole {
            Some(inner) if !inner.contains(['{', '}']) => match inner.strip_prefix('*') {
                Some(rest) if last => (param_name(rest, &mut problems), true),
                Some(_) => {
                    return Err(format!(
                        "`{seg}` matches the rest of the path but is not the last segment"
                    ))
                }
                None => (param_name(inner, &mut problems), false),
            },
            _ => {
                let inner: Vec<&str> = seg
                    .split('{')
                    .skip(1)
                    .filter_map(|p| p.split('}').next())
                    .collect();
                let name = param_name(&inner.join("_"), &mut problems);
                problems.push(format!("`{seg}` (text or several parameters in one segment) is matched as one whole-segment parameter `{{{name}}}`: any one segment reaches this operation, and policies reading {} get nothing", inner.iter().map(|n| format!("`{{{n}}}`")).collect::<Vec<_>>().join(", ")));
                (name, false)
            }
        };
        if names.contains(&name) {
            return Err(format!("the parameter `{name}` appears twice"));
        }
        names.push(name.clone());
        backend.push(format!("{{{name}}}"));
        own.push(if wildcard {
            format!("{{*{name}}}")
        } else {
            format!("{{{name}}}")
        });
    }
    let prefix: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    for seg in &prefix {
        literal(seg)?;
    }
    let join = |segs: &[String]| format!("/{}", segs.join("/"));
    let all: Vec<String> = prefix
        .iter()
        .map(|s| (*s).to_owned())
        .chain(own.iter().cloned())
        .collect();
    Ok(Template {
        path: join(&all),
        backend: join(&backend),
        problems,
    })
}

/// A gateway.yaml parameter name (`[A-Za-z_][A-Za-z0-9_-]*`) for an APIM one; a renaming is
/// reported.
fn param_name(name: &str, problems: &mut Vec<String>) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    if out != name {
        problems.push(format!(
            "the parameter `{{{name}}}` is called `{{{out}}}` (gateway.yaml's names are letters, digits, `_` and `-`)"
        ));
    }
    out
}

/// A literal segment must be canonical in gateway.yaml (no `.`/`..`, only characters allowed in a
/// path, `%` escapes of reserved characters).
fn literal(seg: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c);
    if seg == "." || seg == ".." || !seg.chars().all(ok_char) {
        return Err(format!(
            "the path segment `{seg}` is not written as a gateway.yaml path can match it (percent-encode it in the specification)"
        ));
    }
    Ok(())
}

/// The shape of a route path: per segment its kind (0 literal, 1 `{param}`, 2 `{*rest}`) and the
/// lower-cased literal.
pub(crate) fn shape(path: &str) -> Shape {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("{*") {
                (2, String::new())
            } else if s.starts_with('{') {
                (1, String::new())
            } else {
                (0, s.to_ascii_lowercase())
            }
        })
        .collect()
}

/// Where a method sorts among routes of the same shape (`HEAD` before `GET`).
pub(crate) fn method_rank(method: &str) -> u8 {
    u8::from(method != "HEAD")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn templates() {
        let t = convert("orders/v2", "/orders/{id}/lines/{*rest}").unwrap();
        assert_eq!(t.path, "/orders/v2/orders/{id}/lines/{*rest}");
        assert_eq!(t.backend, "/orders/{id}/lines/{rest}");
        assert!(t.problems.is_empty());
        let t = convert("", "/").unwrap();
        assert_eq!((t.path.as_str(), t.backend.as_str()), ("/", "/"));
        let t = convert("a", "/files/{name}.{ext}?v={v}").unwrap();
        assert_eq!(t.path, "/a/files/{name_ext}");
        assert_eq!(t.problems.len(), 2);
        let t = convert("a", "/x/{order.id}").unwrap();
        assert_eq!(t.path, "/a/x/{order_id}");
        assert!(convert("a", "/{*r}/x").is_err());
        assert!(convert("a", "/{x}/{x}").is_err());
        assert!(convert("a", "/a b").is_err());
    }

    #[test]
    fn shapes_sort_most_specific_first() {
        let mut paths = ["/a/{*r}", "/a/{id}", "/a/b", "/a/{id}/c"];
        paths.sort_by_key(|p| shape(p));
        assert_eq!(paths, ["/a/b", "/a/{id}", "/a/{id}/c", "/a/{*r}"]);
    }
}
