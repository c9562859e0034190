//! Request headers that change how the request is handled beyond its method, target and host.
//!
//! The gateway authorises one request; each layer behind it (pingora, the backend's HTTP server,
//! its framework) must act on that same request. Some headers let a layer read the request as
//! something else, so they are made unambiguous (or the request refused) before routing:
//!
//! - **Upgrade** (RFC 9110 7.8): a request is an upgrade request only when its `Connection`
//!   header lists the `upgrade` token. pingora (0.9) treats any HTTP/1.1 request with an
//!   `Upgrade` header as one, and on the backend's `101` turns the client connection into a raw
//!   tunnel: every later byte on it (another request, say `GET /admin/...`) would reach the
//!   backend unrouted and unauthorised. [`unannounced_upgrade`] finds such a request; the proxy
//!   takes its `Upgrade` header off, so it is an ordinary request to pingora and to the backend.
//! - **Method override**: ASP.NET Core (`UseHttpMethodOverride`), Express `method-override`,
//!   Rack, Symfony and Laravel run a `POST` carrying `X-HTTP-Method-Override: DELETE` (or
//!   `X-Method-Override`, `X-HTTP-Method`) as a `DELETE`, while the gateway routed and authorised a
//!   `POST`: a route list by method would be bypassed. [`check_method_override`] refuses every
//!   spelling of those headers (any case, `_` for `-`, as some servers read `_`), and a `_method`
//!   query parameter, which Symfony reads from the query when its parameter override is on, as
//!   Laravel turns it on by default (PHP also reads `.method` and `[method` as
//!   `_method`). A `_method` form field in the body is not seen (the gateway does not read bodies).
//!   The gateway refuses a lower-case method for the same reason ([`crate::check_method`]).
//! - **Framing** (RFC 9110 8.6, RFC 9112 6): pingora frames the body by the one `Content-Length`
//!   value it reconciles from identical duplicates (`5, 5`, or two headers) but forwards them as
//!   received, and it ignores `Transfer_Encoding` (a different name) while some servers behind
//!   CGI-style or lenient parsers read `_` as `-` and frame by it: the backend would find a second
//!   request in the body. [`framing`] refuses a framing header spelled with `_` (refused rather
//!   than removed: no client writes one by mistake, and a request that something along the way
//!   may read as framed otherwise is not one to guess about) and returns the single
//!   `Content-Length` the proxy forwards in place of duplicates.

use http::{header, HeaderMap};

use crate::Refusal;

/// Whether the `Connection` headers (each a comma-separated token list) list `token`
/// (case-insensitively, as RFC 9110 7.6.1 compares connection options).
fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// An `Upgrade` header whose `Connection` does not list `upgrade`: the request is not an upgrade
/// request (RFC 9110 7.8, RFC 6455 4.1), and the header must go, or pingora treats it as one.
pub fn unannounced_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && !connection_lists(headers, "upgrade")
}

/// Header names (lower case) that frameworks read as the request's real method.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
];

/// Whether a (lower-case) header name is `dashed` once each `_` is read as `-`: the spellings a
/// CGI/WSGI backend merges (`X_User_Id` and `X-User-Id` are one variable there).
pub fn spelled_as(name: &str, dashed: &str) -> bool {
    name.len() == dashed.len()
        && name
            .bytes()
            .zip(dashed.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Refuse a method-override header in any spelling, or a `_method` query parameter (as PHP reads
/// parameter names: percent-decoded, `+` a space, leading spaces dropped, ` `, `.` and `[` read as
/// `_`).
pub fn check_method_override(headers: &HeaderMap, query: Option<&str>) -> Result<(), Refusal> {
    let header = headers.keys().any(|n| {
        let n = n.as_str();
        n.starts_with("x") && METHOD_OVERRIDE_HEADERS.iter().any(|m| spelled_as(n, m))
    });
    let parameter = query.is_some_and(|q| {
        q.split(['&', ';'])
            .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
            .any(is_method_parameter)
    });
    if header || parameter {
        Err(Refusal::MethodOverride)
    } else {
        Ok(())
    }
}

/// Whether a raw query parameter name reads as `_method` to PHP.
fn is_method_parameter(raw: &str) -> bool {
    if !raw.contains("method") && !raw.contains('%') {
        return false;
    }
    let spaced = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    let name: String = decoded
        .trim_start_matches(' ')
        .chars()
        .map(|c| if matches!(c, ' ' | '.' | '[') { '_' } else { c })
        .collect();
    name == "_method"
}

/// The framing headers, and what each is read as with `_` for `-`.
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

/// Refuse a framing header spelled with `_`, or `Content-Length` values that are not one number;
/// `Ok(Some(n))`: the `Content-Length` was repeated (`5, 5`, or several headers) and `n` is the
/// one value to forward in their place. Without `Transfer-Encoding` only (with it, pingora has
/// already dropped `Content-Length`, RFC 9112 6.3).
pub fn framing(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let misspelt = headers.keys().any(|n| {
        let n = n.as_str();
        n.contains('_') && FRAMING_HEADERS.iter().any(|f| spelled_as(n, f))
    });
    if misspelt {
        return Err(Refusal::AmbiguousFraming);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(None);
    }
    let mut value = None;
    let mut count = 0usize;
    for line in headers.get_all(header::CONTENT_LENGTH) {
        for token in line.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            let digits = !token.is_empty() && token.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(token)
                .ok()
                .filter(|_| digits)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(Refusal::AmbiguousFraming)?;
            if value.is_some_and(|v| v != n) {
                return Err(Refusal::AmbiguousFraming);
            }
            value = Some(n);
            count += 1;
        }
    }
    Ok(value.filter(|_| count > 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn an_upgrade_needs_connection_upgrade() {
        for (pairs, kept) in [
            (&[("upgrade", "websocket")][..], false),
            (
                &[("upgrade", "websocket"), ("connection", "close")][..],
                false,
            ),
            (
                &[
                    ("upgrade", "websocket"),
                    ("connection", "keep-alive, upgradex"),
                ][..],
                false,
            ),
            (
                &[("upgrade", "websocket"), ("connection", "Upgrade")][..],
                true,
            ),
            (
                &[
                    ("upgrade", "websocket"),
                    ("connection", "keep-alive , UPGRADE"),
                ][..],
                true,
            ),
            (
                &[
                    ("upgrade", "websocket"),
                    ("connection", "keep-alive"),
                    ("connection", "upgrade"),
                ][..],
                true,
            ),
        ] {
            assert_eq!(unannounced_upgrade(&headers(pairs)), !kept, "{pairs:?}");
        }
        assert!(!unannounced_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn framing_is_one_content_length() {
        let refused = Err(Refusal::AmbiguousFraming);
        for (pairs, want) in [
            (&[("content-length", "5")][..], Ok(None)),
            (&[("content-length", "5, 5")][..], Ok(Some(5))),
            (
                &[("content-length", "5"), ("content-length", "05")][..],
                Ok(Some(5)),
            ),
            (&[("content-length", "5, 6")][..], refused),
            (
                &[("content-length", "5"), ("content-length", "6")][..],
                refused,
            ),
            (&[("content-length", "+5")][..], refused),
            (&[("content-length", "5,")][..], refused),
            (
                &[("transfer_encoding", "chunked"), ("content-length", "5")][..],
                refused,
            ),
            (&[("content_length", "5")][..], refused),
            (&[("transfer-encoding", "chunked")][..], Ok(None)),
            (&[("x_content_length", "5")][..], Ok(None)),
        ] {
            assert_eq!(framing(&headers(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn method_overrides_are_refused_in_every_spelling() {
        for name in [
            "x-http-method-override",
            "x_http_method_override",
            "x-http_method-override",
            "x-method-override",
            "x_method_override",
            "x-http-method",
            "x_http_method",
        ] {
            let map = headers(&[(name, "DELETE")]);
            assert_eq!(
                check_method_override(&map, None),
                Err(Refusal::MethodOverride),
                "{name}"
            );
        }
        for query in [
            "_method=DELETE",
            "a=1&_method=DELETE",
            "a=1;_method=PUT",
            "%5Fmethod=DELETE",
            "%5fmethod=DELETE",
            ".method=DELETE",
            "%20_method=DELETE",
            "[method=DELETE",
            "_method",
        ] {
            let none = HeaderMap::new();
            let got = check_method_override(&none, Some(query));
            assert_eq!(got, Err(Refusal::MethodOverride), "{query}");
        }
        let plain = headers(&[("x-http-method-overrides", "x"), ("method", "DELETE")]);
        assert_eq!(
            check_method_override(&plain, Some("method=DELETE&_methods=x&x=_method")),
            Ok(())
        );
        assert_eq!(
            check_method_override(&plain, Some("_METHOD=DELETE")),
            Ok(())
        );
    }
}
