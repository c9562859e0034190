//! Query-string editing for `set-query-parameter` and `rewrite-uri`, on the raw query.
//!
//! Why on the raw text: the query is forwarded byte for byte (see [`crate::target`]); decoding and
//! re-encoding it would change parameters nobody asked to change (`a=%7e` becoming `a=~`, `+` vs
//! `%20`), which a signed URL or a picky backend notices. So the query is split on `&` only, a
//! parameter is compared by its percent-decoded name, and every pair that is not edited is kept as
//! it was, in order. New names and values are percent-encoded (everything but RFC 3986 unreserved
//! characters), so a value can never add a parameter or end the query.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is escaped.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What to do with a parameter (APIM's `exists-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryEdit {
    /// Replace every occurrence with the new value(s), at the first one's place (appended when
    /// absent).
    Override,
    /// Add the value(s) only when the parameter is absent.
    Skip,
    /// Add the value(s) as further occurrences.
    Append,
    /// Remove every occurrence.
    Delete,
}

/// Percent-encode `text` as a query name or value (or a path segment): everything but unreserved
/// characters escaped.
pub fn push_encoded(out: &mut String, text: &str) {
    out.extend(utf8_percent_encode(text, COMPONENT));
}

/// Percent-decoded text (invalid UTF-8 kept lossily).
pub fn decode(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

/// Form-decoded text: `+` as a space, then percent-decoded (invalid UTF-8 kept lossily), as
/// browsers and ASP.NET read query parameters.
pub fn form_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// The form-decoded values of every occurrence of parameter `name` (names compared
/// form-decoded), in order; a bare `name` without `=` has the empty value.
pub fn values<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = Cow<'q, str>> + 'q {
    pairs(query).filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

/// The percent-decoded name of a raw `name=value` pair.
pub fn pair_name(pair: &str) -> Cow<'_, str> {
    decode(pair.split_once('=').map_or(pair, |(n, _)| n))
}

/// The raw `&`-separated pairs of a query, empty ones skipped.
pub fn pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split('&').filter(|p| !p.is_empty())
}

fn push_pair(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    push_encoded(out, name);
    out.push('=');
    push_encoded(out, value);
}

fn push_raw(out: &mut String, pair: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(pair);
}

/// The query after setting `name` to `values` per `edit`; `None` when nothing is left. The other
/// pairs are kept byte for byte, in order.
pub fn edit(query: Option<&str>, name: &str, values: &[&str], edit: QueryEdit) -> Option<String> {
    let query = query.unwrap_or("");
    let present = pairs(query).any(|p| pair_name(p) == name);
    let mut out = String::with_capacity(query.len() + 16);
    let mut placed = false;
    for pair in pairs(query) {
        let this = pair_name(pair) == name;
        match edit {
            QueryEdit::Delete | QueryEdit::Override if this => {
                if edit == QueryEdit::Override && !placed {
                    for v in values {
                        push_pair(&mut out, name, v);
                    }
                    placed = true;
                }
            }
            _ => push_raw(&mut out, pair),
        }
    }
    let add = match edit {
        QueryEdit::Override => !placed,
        QueryEdit::Skip => !present,
        QueryEdit::Append => true,
        QueryEdit::Delete => false,
    };
    if add {
        for v in values {
            push_pair(&mut out, name, v);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Append to `out` the pairs of `query` whose decoded name is not in `named` (rewrite-uri's
/// `copy-unmatched-params`), raw and in order.
pub fn copy_unmatched(out: &mut String, query: Option<&str>, named: &[String]) {
    for pair in pairs(query.unwrap_or("")) {
        let name = pair_name(pair);
        if !named.iter().any(|n| *n == name) {
            push_raw(out, pair);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_the_rest_byte_for_byte() {
        let q = Some("a=%7e&b=1+2&a=3&c");
        let e = |n, v: &[&str], x| edit(q, n, v, x);
        assert_eq!(
            e("a", &["x y"], QueryEdit::Override).as_deref(),
            Some("a=x%20y&b=1+2&c")
        );
        assert_eq!(
            e("d", &["1"], QueryEdit::Override).as_deref(),
            Some("a=%7e&b=1+2&a=3&c&d=1")
        );
        assert_eq!(e("a", &["9"], QueryEdit::Skip).as_deref(), q);
        assert_eq!(
            e("z", &["&x=1"], QueryEdit::Skip).as_deref(),
            Some("a=%7e&b=1+2&a=3&c&z=%26x%3D1")
        );
        assert_eq!(
            e("a", &["4", "5"], QueryEdit::Append).as_deref(),
            Some("a=%7e&b=1+2&a=3&c&a=4&a=5")
        );
        assert_eq!(e("a", &[], QueryEdit::Delete).as_deref(), Some("b=1+2&c"));
        assert_eq!(edit(Some("a=1"), "a", &[], QueryEdit::Delete), None);
        assert_eq!(
            edit(
                Some("api%2Dversion=1"),
                "api-version",
                &["2"],
                QueryEdit::Override
            )
            .as_deref(),
            Some("api-version=2")
        );
        assert_eq!(
            edit(None, "v", &["1"], QueryEdit::Append).as_deref(),
            Some("v=1")
        );
    }

    #[test]
    fn values_are_form_decoded_in_order() {
        let q = "api%2Dversion=2024-01-01&x=a+b%20c&x&api-version=2";
        let all: Vec<_> = values(q, "api-version").collect();
        assert_eq!(all, ["2024-01-01", "2"]);
        let xs: Vec<_> = values(q, "x").collect();
        assert_eq!(xs, ["a b c", ""]);
        assert_eq!(values(q, "none").count(), 0);
        assert_eq!(form_decode("a%2Bb+c"), "a+b c");
    }

    #[test]
    fn unmatched_params_are_copied_raw() {
        let mut out = String::from("expand=lines");
        copy_unmatched(&mut out, Some("expand=x&b=%41&&c"), &["expand".to_owned()]);
        assert_eq!(out, "expand=lines&b=%41&c");
    }
}
