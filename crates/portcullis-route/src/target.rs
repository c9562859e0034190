//! Canonical request targets, methods and hosts.
//!
//! The canonical path is what the gateway matches routes on **and** what it forwards, so every
//! backend (nginx, ASP.NET Core, Tomcat, IIS, Express...) reads the same resource the gateway
//! authorised. What is done, in order (docs/security.md, "Request normalisation"):
//!
//! 1. The target must be origin-form (`/`-rooted). Absolute-form (`http://host/p`) is reduced to
//!    its path and its authority returned for the caller to compare with `Host`; `*` is allowed for
//!    `OPTIONS` only (it matches no route); anything else is refused. A fragment is refused.
//! 2. Per segment, escapes of unreserved characters are decoded (`%61` -> `a`, `%2e` -> `.`: RFC
//!    3986 6.2.2.2) and the hex of the escapes that remain is upper-cased (6.2.2.1).
//! 3. Refused: control characters and NUL (raw or escaped), bytes outside RFC 3986 `pchar`, invalid
//!    escapes, an escaped `%` that forms a second escape (`%252e`: some backends decode twice, IIS
//!    refuses it too), encoded separators `%2F`/`%5C` and a raw `\` (unless
//!    [`EscapedSlashes::Keep`]), and `;` path parameters (unless [`PathParameters::Strip`]).
//! 4. Dot segments are removed (RFC 3986 5.2.4), after decoding, so `%2e%2e` is `..`; a path that
//!    climbs above `/` is refused rather than clamped.
//! 5. Repeated slashes are merged; one trailing slash is kept.
//!
//! The query string is forwarded byte for byte; it is only checked for bytes that have no place in
//! a request line (controls, space, non-ASCII).

use std::borrow::Cow;

/// What to do with an escaped path separator (`%2F`, `%5C`) or a raw `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (the default).
    #[default]
    Reject,
    /// Keep them escaped (`%2F`, `%5C`; a raw `\` becomes `%5C`); they are not separators for
    /// matching. Only for APIs whose backends do not decode them into separators.
    Keep,
}

/// What to do with `;` path parameters (`/api;x=1/orders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathParameters {
    /// Refuse the request with 400 (the default).
    #[default]
    Reject,
    /// Remove each segment's `;...` (as Tomcat and Jetty do) and match and forward the rest.
    Strip,
}

/// The server-wide normalisation settings (`server.request-normalisation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Normalization {
    /// Escaped separators.
    pub escaped_slashes: EscapedSlashes,
    /// `;` path parameters.
    pub path_parameters: PathParameters,
}

/// Why a request target, method or host was refused. Each maps to a 400 with a fixed message and
/// a metrics reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not origin-form, absolute-form, or `OPTIONS *`.
    NotOriginForm,
    /// A `#` in the request target.
    Fragment,
    /// A control character or NUL, raw or escaped.
    ControlCharacter,
    /// A byte that has no place in a path (space, `"`, `<`, `{`, non-ASCII...).
    InvalidCharacter,
    /// `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// An escaped `%` that forms another escape (`%252e`).
    DoubleEncoding,
    /// `%2F`, `%5C` or a raw `\`.
    EncodedSlash,
    /// `..` above the root.
    AboveRoot,
    /// A `;` path parameter.
    PathParameter,
    /// A byte in the query string that has no place in a request line.
    InvalidQuery,
    /// A standard method in the wrong case (`delete`, `Post`).
    MethodCase,
    /// A malformed `Host` (or absolute-form authority), or several `Host` headers.
    InvalidHost,
    /// The absolute-form authority and the `Host` header name different hosts.
    HostMismatch,
    /// A method-override header (`X-HTTP-Method-Override`...) or `_method` query parameter.
    MethodOverride,
    /// `Content-Length` or `Transfer-Encoding` spelled with `_`, or `Content-Length` values that
    /// disagree.
    AmbiguousFraming,
    /// An HTTP/1.1 request without a `Host` header (RFC 9112 3.2).
    MissingHost,
    /// A `Transfer-Encoding` listing a coding other than `chunked` (501, RFC 9112 6.1).
    TransferCoding,
    /// An `Expect` asking for anything but `100-continue` (417, RFC 9110 10.1.1).
    Expectation,
}

impl Refusal {
    /// Every refusal (for the documentation check).
    pub const ALL: [Refusal; 18] = [
        Refusal::NotOriginForm,
        Refusal::Fragment,
        Refusal::ControlCharacter,
        Refusal::InvalidCharacter,
        Refusal::InvalidPercentEncoding,
        Refusal::DoubleEncoding,
        Refusal::EncodedSlash,
        Refusal::AboveRoot,
        Refusal::PathParameter,
        Refusal::InvalidQuery,
        Refusal::MethodCase,
        Refusal::InvalidHost,
        Refusal::HostMismatch,
        Refusal::MethodOverride,
        Refusal::AmbiguousFraming,
        Refusal::MissingHost,
        Refusal::TransferCoding,
        Refusal::Expectation,
    ];

    /// The answer's status: 400, but for what the request asks of the gateway that it does not
    /// implement (a transfer coding: 501) or cannot promise (an expectation: 417).
    pub fn status(self) -> u16 {
        match self {
            Refusal::TransferCoding => 501,
            Refusal::Expectation => 417,
            _ => 400,
        }
    }

    /// Whether the connection is closed after the answer: the request's body cannot be framed as
    /// the client meant it, so nothing after it on the connection can be trusted to be a request.
    pub fn closes_connection(self) -> bool {
        matches!(self, Refusal::AmbiguousFraming | Refusal::TransferCoding)
    }

    /// Stable reason code (logs, metrics).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotOriginForm | Refusal::Fragment => "InvalidRequestTarget",
            Refusal::ControlCharacter
            | Refusal::InvalidCharacter
            | Refusal::InvalidPercentEncoding => "InvalidPath",
            Refusal::DoubleEncoding => "DoubleEncodedPath",
            Refusal::EncodedSlash => "EncodedSlash",
            Refusal::AboveRoot => "PathTraversal",
            Refusal::PathParameter => "PathParameter",
            Refusal::InvalidQuery => "InvalidQuery",
            Refusal::MethodCase => "MethodCase",
            Refusal::InvalidHost => "InvalidHost",
            Refusal::HostMismatch => "HostMismatch",
            Refusal::MethodOverride => "MethodOverride",
            Refusal::AmbiguousFraming => "AmbiguousFraming",
            Refusal::MissingHost => "MissingHost",
            Refusal::TransferCoding => "TransferCodingNotImplemented",
            Refusal::Expectation => "ExpectationFailed",
        }
    }

    /// The message of the answer ([`Refusal::status`]).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotOriginForm => "Bad request. The request target must be an absolute path.",
            Refusal::Fragment => "Bad request. The request target must not carry a fragment.",
            Refusal::ControlCharacter => "Bad request. The path contains a control character.",
            Refusal::InvalidCharacter => {
                "Bad request. The path contains a character that must be percent-encoded."
            }
            Refusal::InvalidPercentEncoding => {
                "Bad request. The path contains an invalid percent-encoding."
            }
            Refusal::DoubleEncoding => "Bad request. The path contains a double percent-encoding.",
            Refusal::EncodedSlash => {
                "Bad request. The path contains an encoded slash or a backslash."
            }
            Refusal::AboveRoot => "Bad request. The path climbs above the root.",
            Refusal::PathParameter => "Bad request. The path contains a ';' parameter.",
            Refusal::InvalidQuery => {
                "Bad request. The query contains a character that must be percent-encoded."
            }
            Refusal::MethodCase => "Bad request. Methods are case-sensitive.",
            Refusal::InvalidHost => "Bad request. The Host header is invalid.",
            Refusal::HostMismatch => {
                "Bad request. The request target's authority does not match the Host header."
            }
            Refusal::MethodOverride => {
                "Bad request. Method-override headers and parameters are not accepted."
            }
            Refusal::AmbiguousFraming => {
                "Bad request. The request's framing headers are ambiguous."
            }
            Refusal::MissingHost => "Bad request. An HTTP/1.1 request must carry a Host header.",
            Refusal::TransferCoding => {
                "Not implemented. The only transfer coding accepted is chunked."
            }
            Refusal::Expectation => {
                "Expectation failed. The only expectation accepted is 100-continue."
            }
        }
    }
}

/// A canonical request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The canonical path (`*` for `OPTIONS *`, which matches no route).
    pub path: Cow<'a, str>,
    /// The query as received (without `?`), when there is one.
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target, as received.
    pub authority: Option<&'a str>,
}

impl Target<'_> {
    /// True when the raw target was origin-form and already canonical: nothing to rewrite.
    pub fn unchanged(&self) -> bool {
        self.authority.is_none() && matches!(self.path, Cow::Borrowed(_))
    }

    /// `path?query`, the origin-form to forward.
    pub fn origin_form(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone().into_owned(),
        }
    }
}

/// The standard methods (RFC 9110 9.3, RFC 5789): the ones refused in the wrong case.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Methods are case-sensitive tokens: a standard method in another case (`delete`) is refused
/// rather than routed, because some backends (ASP.NET Core) run it as the standard one while the
/// route table would treat it as an unknown extension method.
pub fn check_method(method: &str) -> Result<(), Refusal> {
    let wrong_case = STANDARD_METHODS
        .iter()
        .any(|m| *m != method && m.eq_ignore_ascii_case(method));
    if wrong_case {
        Err(Refusal::MethodCase)
    } else {
        Ok(())
    }
}

/// Canonicalise a raw request target (the bytes of the request line).
pub fn canonicalize<'a>(
    method: &str,
    raw: &'a [u8],
    opts: &Normalization,
) -> Result<Target<'a>, Refusal> {
    let text = std::str::from_utf8(raw).map_err(|_| Refusal::InvalidCharacter)?;
    if text.contains('#') {
        return Err(Refusal::Fragment);
    }
    if text == "*" {
        if method == "OPTIONS" {
            return Ok(Target {
                path: Cow::Borrowed("*"),
                query: None,
                authority: None,
            });
        }
        return Err(Refusal::NotOriginForm);
    }
    let (authority, rest) = if text.starts_with('/') {
        (None, text)
    } else {
        let after = strip_http_scheme(text).ok_or(Refusal::NotOriginForm)?;
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        if authority.is_empty() || authority.contains('@') {
            return Err(Refusal::InvalidHost);
        }
        (Some(authority), &after[end..])
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if let Some(q) = query {
        if !q.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(Refusal::InvalidQuery);
        }
    }
    let path = if path.is_empty() {
        // Only reachable in absolute-form (`http://host?x`): the path is `/`.
        Cow::Borrowed("/")
    } else {
        canonical_path(path, opts)?
    };
    Ok(Target {
        path,
        query,
        authority,
    })
}

fn strip_http_scheme(text: &str) -> Option<&str> {
    let (scheme, rest) = text.split_once("://")?;
    let known = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    known.then_some(rest)
}

const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Raw bytes a path segment may carry as they are: RFC 3986 `pchar` less `%` and `;`.
const fn is_plain(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, v: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
}

/// The fast check: only plain bytes and `/`, no `//`, no segment starting with `.`.
fn already_canonical(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if !(b == b'/' || is_plain(b)) || (prev == b'/' && (b == b'/' || b == b'.')) {
            return false;
        }
        prev = b;
    }
    true
}

/// The canonical form of an origin-form path (see the module docs). Borrowed when the path is
/// already canonical.
pub fn canonical_path<'a>(path: &'a str, opts: &Normalization) -> Result<Cow<'a, str>, Refusal> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Refusal::NotOriginForm);
    }
    if already_canonical(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    // Where each kept segment starts in `out` (at its '/'), to pop on `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut segment = String::new();
    let mut trailing;
    let mut i = 1;
    loop {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |p| i + p);
        let last = end == bytes.len();
        segment.clear();
        decode_segment(&bytes[i..end], opts, &mut segment)?;
        match segment.as_str() {
            "" | "." => trailing = last,
            ".." => {
                let start = starts.pop().ok_or(Refusal::AboveRoot)?;
                out.truncate(start);
                trailing = last;
            }
            seg => {
                starts.push(out.len());
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
        if last {
            break;
        }
        i = end + 1;
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// Decode one raw segment (no `/` in it) into `out`.
fn decode_segment(raw: &[u8], opts: &Normalization, out: &mut String) -> Result<(), Refusal> {
    let mut k = 0;
    while k < raw.len() {
        let b = raw[k];
        match b {
            b'%' => {
                let v = match (raw.get(k + 1), raw.get(k + 2)) {
                    (Some(&h), Some(&l)) => match (hex_value(h), hex_value(l)) {
                        (Some(h), Some(l)) => h << 4 | l,
                        _ => return Err(Refusal::InvalidPercentEncoding),
                    },
                    _ => return Err(Refusal::InvalidPercentEncoding),
                };
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else if v == b'/' || v == b'\\' {
                    if opts.escaped_slashes == EscapedSlashes::Reject {
                        return Err(Refusal::EncodedSlash);
                    }
                    push_escape(out, v);
                } else if v < 0x20 || v == 0x7f {
                    return Err(Refusal::ControlCharacter);
                } else {
                    push_escape(out, v);
                }
                k += 3;
                continue;
            }
            b'\\' => {
                if opts.escaped_slashes == EscapedSlashes::Reject {
                    return Err(Refusal::EncodedSlash);
                }
                push_escape(out, b);
            }
            b';' => {
                if opts.path_parameters == PathParameters::Reject {
                    return Err(Refusal::PathParameter);
                }
                break;
            }
            _ if b < 0x20 || b == 0x7f => return Err(Refusal::ControlCharacter),
            _ if is_plain(b) => out.push(char::from(b)),
            _ => return Err(Refusal::InvalidCharacter),
        }
        k += 1;
    }
    // After one decoding pass, an escaped `%` followed by hex is a second escape (`%252e`, or
    // `%25%32%65`): a backend that decodes twice would see `.`.
    let decoded = out.as_bytes();
    let double = decoded.windows(5).any(|w| {
        w[0] == b'%'
            && w[1] == b'2'
            && w[2] == b'5'
            && hex_value(w[3]).is_some()
            && hex_value(w[4]).is_some()
    });
    if double {
        return Err(Refusal::DoubleEncoding);
    }
    Ok(())
}

/// The canonical host of a `Host` header or an authority: the port removed, one trailing dot
/// removed, lower case. Refused: characters outside host names and IP literals, empty labels
/// (`a..b`, `.a`, `a..`), a non-numeric port. An empty input gives an empty host.
pub fn canonical_host(raw: &str) -> Result<Cow<'_, str>, Refusal> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed(""));
    }
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(Refusal::InvalidHost)?;
        let literal = &raw[1..end];
        let ok = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return Err(Refusal::InvalidHost);
        }
        (&raw[..=end], &raw[end + 1..])
    } else {
        match raw.rfind(':') {
            Some(p) => (&raw[..p], &raw[p..]),
            None => (raw, ""),
        }
    };
    if let Some(digits) = port.strip_prefix(':') {
        if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::InvalidHost);
        }
    } else if !port.is_empty() {
        return Err(Refusal::InvalidHost);
    }
    if host.starts_with('[') {
        return Ok(lower(host));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = !host.is_empty()
        && !host.starts_with('.')
        && !host.ends_with('.')
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !labels_ok {
        return Err(Refusal::InvalidHost);
    }
    Ok(lower(host))
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn canon(p: &str) -> Result<String, Refusal> {
        canonical_path(p, &Normalization::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(canon("/public/../api/orders").unwrap(), "/api/orders");
        assert_eq!(canon("/./api/orders").unwrap(), "/api/orders");
        assert_eq!(canon("//api/orders").unwrap(), "/api/orders");
        assert_eq!(canon("/api//orders").unwrap(), "/api/orders");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/a/.").unwrap(), "/a/");
        assert_eq!(canon("/a/").unwrap(), "/a/");
        assert_eq!(canon("/a//").unwrap(), "/a/");
        assert_eq!(canon("/").unwrap(), "/");
        assert_eq!(canon("/a/..").unwrap(), "/");
        assert_eq!(canon("/.well-known/x").unwrap(), "/.well-known/x");
        assert_eq!(canon("/a/...").unwrap(), "/a/...");
        assert_eq!(canon("/..").unwrap_err(), Refusal::AboveRoot);
        assert_eq!(canon("/a/../..").unwrap_err(), Refusal::AboveRoot);
    }

    #[test]
    fn escapes() {
        assert_eq!(canon("/%61pi/orders").unwrap(), "/api/orders");
        assert_eq!(canon("/x/%2e%2e/api").unwrap(), "/api");
        assert_eq!(canon("/x/%2E%2E/api").unwrap(), "/api");
        assert_eq!(canon("/x/.%2e/api").unwrap(), "/api");
        assert_eq!(canon("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canon("/x/..%2fapi").unwrap_err(), Refusal::EncodedSlash);
        assert_eq!(canon("/x/..%5capi").unwrap_err(), Refusal::EncodedSlash);
        assert_eq!(canon("/x\\..\\api").unwrap_err(), Refusal::EncodedSlash);
        assert_eq!(
            canon("/%252e%252e/api").unwrap_err(),
            Refusal::DoubleEncoding
        );
        assert_eq!(canon("/%252f").unwrap_err(), Refusal::DoubleEncoding);
        assert_eq!(canon("/%25%32%65").unwrap_err(), Refusal::DoubleEncoding);
        assert_eq!(canon("/100%25").unwrap(), "/100%25");
        assert_eq!(canon("/%zz").unwrap_err(), Refusal::InvalidPercentEncoding);
        assert_eq!(canon("/%4").unwrap_err(), Refusal::InvalidPercentEncoding);
        assert_eq!(canon("/%00").unwrap_err(), Refusal::ControlCharacter);
        assert_eq!(canon("/a\tb").unwrap_err(), Refusal::ControlCharacter);
        assert_eq!(canon("/a b").unwrap_err(), Refusal::InvalidCharacter);
        assert_eq!(canon("/caf\u{e9}").unwrap_err(), Refusal::InvalidCharacter);
    }

    #[test]
    fn separators_kept_on_request() {
        let keep = Normalization {
            escaped_slashes: EscapedSlashes::Keep,
            path_parameters: PathParameters::Strip,
        };
        let c = |p| canonical_path(p, &keep).map(Cow::into_owned);
        assert_eq!(c("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(c("/a\\b").unwrap(), "/a%5Cb");
        assert_eq!(c("/api;x=1/orders").unwrap(), "/api/orders");
        assert_eq!(c("/a/..;/b").unwrap(), "/b");
        assert_eq!(
            canon("/api;x=1/orders").unwrap_err(),
            Refusal::PathParameter
        );
    }

    #[test]
    fn targets() {
        let n = Normalization::default();
        let t = canonicalize("GET", b"/a/../b?x=%2e%2e&y", &n).unwrap();
        assert_eq!((t.path.as_ref(), t.query), ("/b", Some("x=%2e%2e&y")));
        assert!(!t.unchanged());
        assert!(canonicalize("GET", b"/b?x", &n).unwrap().unchanged());
        let t = canonicalize("GET", b"http://Api.Local:80/x?q", &n).unwrap();
        assert_eq!(
            (t.path.as_ref(), t.query, t.authority),
            ("/x", Some("q"), Some("Api.Local:80"))
        );
        assert_eq!(canonicalize("GET", b"http://h", &n).unwrap().path, "/");
        assert_eq!(
            canonicalize("GET", b"api/orders", &n).unwrap_err(),
            Refusal::NotOriginForm
        );
        assert_eq!(
            canonicalize("GET", b"*", &n).unwrap_err(),
            Refusal::NotOriginForm
        );
        assert_eq!(canonicalize("OPTIONS", b"*", &n).unwrap().path, "*");
        assert_eq!(
            canonicalize("GET", b"foo:bar://x/", &n).unwrap_err(),
            Refusal::NotOriginForm
        );
        assert_eq!(
            canonicalize("GET", b"http://u@h/", &n).unwrap_err(),
            Refusal::InvalidHost
        );
        assert_eq!(
            canonicalize("GET", b"/a#b", &n).unwrap_err(),
            Refusal::Fragment
        );
        assert_eq!(
            canonicalize("GET", b"/a?b c", &n).unwrap_err(),
            Refusal::InvalidQuery
        );
    }

    #[test]
    fn methods() {
        assert!(check_method("GET").is_ok());
        assert!(check_method("PURGE").is_ok());
        assert!(check_method("purge").is_ok());
        assert_eq!(check_method("delete"), Err(Refusal::MethodCase));
        assert_eq!(check_method("Post"), Err(Refusal::MethodCase));
    }

    #[test]
    fn hosts() {
        assert_eq!(canonical_host("Admin.Local.").unwrap(), "admin.local");
        assert_eq!(canonical_host("admin.local.:8080").unwrap(), "admin.local");
        assert_eq!(canonical_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(canonical_host("").unwrap(), "");
        for bad in [
            "admin.local..",
            ".admin",
            "a b",
            "a:x",
            "a@b",
            "[zz]",
            "a:123456",
        ] {
            assert_eq!(
                canonical_host(bad).unwrap_err(),
                Refusal::InvalidHost,
                "{bad}"
            );
        }
    }
}
