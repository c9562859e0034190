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
//! - **Transfer codings** (RFC 9112 6.1, 7): pingora frames a body by chunked when `chunked` is the
//!   last coding, and forwards it with `Transfer-Encoding: chunked` alone: any other coding
//!   (`gzip, chunked`) would be dropped, so the backend would act on other bytes than the client
//!   sent. [`unsupported_transfer_coding`] finds such a request (501, as the RFC says for a coding
//!   the server does not implement, and as Envoy answers); [`framing`] refuses `chunked` listed
//!   twice (RFC 9112 7: never applied twice; the gateway would undo it once only), a
//!   `Transfer-Encoding` beside `Content-Length` (the classic smuggling pair, refused as Envoy does;
//!   pingora drops the `Content-Length`, so the proxy puts back what [`raw_values`] finds in the
//!   head as received), and `Transfer-Encoding` on an
//!   HTTP/2 request (RFC 9113 8.2.2; the h2 codec refuses it first). pingora itself refuses, with
//!   its own bare 400, a `Transfer-Encoding` whose last coding is not `chunked` (`gzip`,
//!   `chunked;x=1`, an empty value) and one on an HTTP/1.0 request.
//! - **Expectations** (RFC 9110 10.1.1): `100-continue` is the only one defined; the gateway does
//!   not know what a backend would do with another, so [`unsupported_expectation`] finds it (417,
//!   which the RFC allows and Apache httpd and Node answer too).

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

/// The elements of a comma-separated list header (all its lines), trimmed, without the empty
/// ones (RFC 9110 5.6.1: a recipient ignores them).
fn list<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Whether a transfer coding (an element of `Transfer-Encoding`, parameters and all) is `chunked`.
fn is_chunked(coding: &[u8]) -> bool {
    let name = coding.split(|b| *b == b';').next().unwrap_or_default();
    name.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A `Transfer-Encoding` that lists a coding other than `chunked` (`gzip, chunked`): the gateway
/// decodes chunked only, and would forward the body with the other codings silently dropped.
pub fn unsupported_transfer_coding(headers: &HeaderMap) -> bool {
    list(headers, &header::TRANSFER_ENCODING).any(|c| !is_chunked(c))
}

/// An `Expect` that asks for anything but `100-continue` (compared without case).
pub fn unsupported_expectation(headers: &HeaderMap) -> bool {
    list(headers, &header::EXPECT).any(|e| !e.eq_ignore_ascii_case(b"100-continue"))
}

/// The values of header `name` (lower case) in a raw HTTP/1 request head, trimmed, in order: what
/// the client sent, before pingora's parser edited the headers.
pub fn raw_values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|b| *b == b'\n').skip(1).filter_map(move |line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let (n, v) = line.split_at(colon);
        n.eq_ignore_ascii_case(name.as_bytes())
            .then(|| v[1..].trim_ascii())
    })
}

/// Refuse a framing header spelled with `_`, `Content-Length` values that are not one number, or
/// a `Transfer-Encoding` that is not `chunked` once (repeated, beside a `Content-Length`, on an
/// HTTP/2 request); `Ok(Some(n))`: the `Content-Length` was repeated (`5, 5`, or several headers)
/// and `n` is the one value to forward in their place. Codings other than `chunked` are
/// [`unsupported_transfer_coding`]'s (checked first, 501).
pub fn framing(headers: &HeaderMap, version: http::Version) -> Result<Option<u64>, Refusal> {
    let misspelt = headers.keys().any(|n| {
        let n = n.as_str();
        n.contains('_') && FRAMING_HEADERS.iter().any(|f| spelled_as(n, f))
    });
    if misspelt {
        return Err(Refusal::AmbiguousFraming);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked = list(headers, &header::TRANSFER_ENCODING)
            .filter(|c| is_chunked(c))
            .count();
        let with_length = headers.contains_key(header::CONTENT_LENGTH);
        if chunked != 1 || with_length || version == http::Version::HTTP_2 {
            return Err(Refusal::AmbiguousFraming);
        }
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
            (&[("transfer-encoding", "Chunked")][..], Ok(None)),
            (&[("transfer-encoding", " , chunked")][..], Ok(None)),
            (&[("transfer-encoding", "chunked, chunked")][..], refused),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ][..],
                refused,
            ),
            (
                &[("transfer-encoding", "chunked;a=1, chunked")][..],
                refused,
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")][..],
                refused,
            ),
            (&[("x_content_length", "5")][..], Ok(None)),
        ] {
            let got = framing(&headers(pairs), http::Version::HTTP_11);
            assert_eq!(got, want, "{pairs:?}");
        }
        // HTTP/2 has its own framing: a Transfer-Encoding there is malformed (RFC 9113 8.2.2).
        let chunked = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(framing(&chunked, http::Version::HTTP_2), refused);
        let length = headers(&[("content-length", "5")]);
        assert_eq!(framing(&length, http::Version::HTTP_2), Ok(None));
    }

    #[test]
    fn raw_values_reads_the_head_as_received() {
        let head = b"POST / HTTP/1.1\r\nHost: gw\r\ncontent-LENGTH:  5 \r\nX-Content-Length: 6\r\n\
                     Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n";
        let got: Vec<&[u8]> = raw_values(head, "content-length").collect();
        assert_eq!(got, [&b"5"[..], b"7"]);
        let lf = b"POST / HTTP/1.1\nContent-Length: 5\n\n";
        assert_eq!(raw_values(lf, "content-length").count(), 1);
        // The first line is the request line, never a header.
        let first = b"X-A: 1\r\nX-A: 2\r\n\r\n";
        assert_eq!(raw_values(first, "x-a").collect::<Vec<_>>(), [&b"2"[..]]);
    }

    #[test]
    fn only_chunked_is_a_supported_transfer_coding() {
        for (value, unsupported) in [
            ("chunked", false),
            ("CHUNKED", false),
            (", chunked", false),
            ("chunked, chunked", false),
            ("gzip, chunked", true),
            ("identity, chunked", true),
            ("x-gzip ,chunked", true),
            ("gzip;q=1, chunked", true),
            (";a=1, chunked", true),
            ("chunkedx, chunked", true),
        ] {
            let map = headers(&[("transfer-encoding", value)]);
            assert_eq!(unsupported_transfer_coding(&map), unsupported, "{value}");
        }
        let two = headers(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);
        assert!(unsupported_transfer_coding(&two));
        assert!(!unsupported_transfer_coding(&HeaderMap::new()));
    }

    #[test]
    fn only_100_continue_is_a_supported_expectation() {
        for (value, unsupported) in [
            ("100-continue", false),
            ("100-Continue", false),
            ("100-continue, ", false),
            ("", false),
            ("200-ok", true),
            ("100-continue, foo", true),
            ("100-continue;x=1", true),
        ] {
            let map = headers(&[("expect", value)]);
            assert_eq!(unsupported_expectation(&map), unsupported, "{value:?}");
        }
        assert!(!unsupported_expectation(&HeaderMap::new()));
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
