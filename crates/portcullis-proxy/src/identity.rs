//! Request headers the gateway owns: identity headers (what `forward-claims` sets), the request id,
//! the token (`forward-token: false`), and the X-Forwarded-* family with its relatives.
//!
//! Why identity headers are stripped on every route: a backend trusts `X-User-Id` because only the
//! gateway sets it. A client that sends it itself, on any route (anonymous ones too), must not get it
//! through, in either spelling: many servers (CGI, nginx with `underscores_in_headers`, some
//! frameworks) treat `X_User_Id` and `X-User-Id` as the same header.

use std::collections::HashSet;
use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use portcullis_auth::{query_without_param, TokenSource};
use portcullis_config::{is_connection_header, IpNet, Model};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The names above as pingora's `insert_header` takes them without a copy, for the headers the
/// gateway sets on every request. Given a `HeaderName` of a non-standard header, pingora copies
/// the name into a new buffer (its title-case form, which for these is the lower-case name) on
/// every insert; given a `&'static str` it keeps it. The same bytes go on the wire.
pub(crate) mod wire {
    /// `X-Request-Id`.
    pub const X_REQUEST_ID: &str = "x-request-id";
    /// `X-Forwarded-For`.
    pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
    /// `X-Forwarded-Proto`.
    pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
    /// `X-Forwarded-Host`.
    pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
    /// `X-Forwarded-Port`.
    pub const X_FORWARDED_PORT: &str = "x-forwarded-port";
}

/// Every header named in any policy's `forward-claims`, normalised (lower case, `_` as `-`).
#[derive(Debug, Default)]
pub struct IdentityHeaders {
    /// Dash spellings, as header names (direct removal, no scan).
    names: Vec<HeaderName>,
    /// Normalised spellings, for the scan that catches underscore and mixed spellings.
    normalised: HashSet<String>,
}

fn normalise(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            other => char::from(other.to_ascii_lowercase()),
        })
        .collect()
}

impl IdentityHeaders {
    /// Collect from every policy of the model.
    pub fn from_model(model: &Model) -> IdentityHeaders {
        let mut out = IdentityHeaders::default();
        for (name, _) in model.policies.iter().flat_map(|p| &p.policy.forward_claims) {
            let norm = normalise(name.as_str());
            if out.normalised.insert(norm.clone()) {
                if let Ok(dash) = HeaderName::from_bytes(norm.as_bytes()) {
                    out.names.push(dash);
                }
            }
        }
        out
    }

    /// Remove every spelling of every identity header from a client request.
    pub fn strip(&self, req: &mut RequestHeader) {
        if self.names.is_empty() {
            return;
        }
        for name in &self.names {
            req.remove_header(name);
        }
        // Underscore (or mixed) spellings: only scan when some header name has an underscore.
        let has_underscore = req.headers.keys().any(|n| n.as_str().contains('_'));
        if !has_underscore {
            return;
        }
        let spoofed: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| {
                n.as_str().contains('_') && self.normalised.contains(&normalise(n.as_str()))
            })
            .cloned()
            .collect();
        for name in spoofed {
            req.remove_header(&name);
        }
    }
}

/// The request's id: the client's `X-Request-Id` when present, else a fresh UUID v4 set on the request.
pub fn ensure_request_id(req: &mut RequestHeader) -> Result<HeaderValue> {
    if let Some(id) = req.headers.get(&X_REQUEST_ID) {
        return Ok(id.clone());
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // One allocation for the request's copy, the context's and the response's: a `Bytes` owning
    // the buffer is reference-counted, so the clones are counts (`from_str` copies, and the first
    // clone of that copy allocates again to share it).
    let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or(HeaderValue::from_static("-"));
    req.insert_header(wire::X_REQUEST_ID, id.clone())?;
    Ok(id)
}

/// `forward-token: false`: remove the token from the upstream request wherever the policy reads it
/// from: every copy of its header, or every query parameter of its name (the rest of the query is
/// kept byte for byte). Removed whether or not the token was valid (report-only forwards both).
pub fn remove_token(upstream: &mut RequestHeader, source: &TokenSource) -> Result<()> {
    match source {
        TokenSource::Header { name, .. } => {
            upstream.remove_header(name);
        }
        TokenSource::Query { name } => {
            let uri = &upstream.uri;
            let Some(query) = uri.query() else {
                return Ok(());
            };
            let Some(kept) = query_without_param(query, name) else {
                return Ok(());
            };
            let target = if kept.is_empty() {
                uri.path().to_owned()
            } else {
                format!("{}?{kept}", uri.path())
            };
            let uri = http::Uri::try_from(target)
                .map_err(|e| Error::because(ErrorType::InternalError, "query without token", e))?;
            upstream.set_uri(uri);
        }
    }
    Ok(())
}

/// What the gateway itself knows about the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The peer's address (a trusted proxy's, or the client's).
    pub client_ip: Option<IpAddr>,
    /// Whether the connection is TLS.
    pub https: bool,
    /// The Host the client asked for (HTTP/1.1 `Host`, HTTP/2 `:authority`).
    pub host: Option<&'a HeaderValue>,
    /// The gateway's port the client connected to.
    pub port: Option<u16>,
}

/// The forwarding headers of the upstream request, set from the gateway's own knowledge.
///
/// Every client copy of `Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `X-Client-IP`,
/// `True-Client-IP`, `X-Original-URL`, `X-Rewrite-URL` and the client-address headers of CDNs and
/// load balancers (`CF-Connecting-IP`, `Fastly-Client-IP`, ...: the list is
/// [`is_connection_header`]'s) in any spelling is removed. Then
/// `X-Forwarded-For` is the peer's address, `X-Forwarded-Proto` the listener's scheme,
/// `X-Forwarded-Host` the requested host and `X-Forwarded-Port` the listener's port. From a peer in
/// `trusted` (a proxy in front of the gateway) the client's `X-Forwarded-For` is kept with the
/// peer's address appended, and its `X-Forwarded-Proto`/`-Host`/`-Port` are kept when present.
pub fn set_forwarded(
    upstream: &mut RequestHeader,
    conn: &Connection<'_>,
    trusted: &[IpNet],
) -> Result<()> {
    let from_proxy = conn
        .client_ip
        .is_some_and(|ip| trusted.iter().any(|net| net.contains(ip)));
    let mut kept: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if from_proxy {
        let prior: Vec<&[u8]> = upstream
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if !prior.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&prior.join(&b", "[..])) {
                kept.push((X_FORWARDED_FOR, v));
            }
        }
        for name in [X_FORWARDED_PROTO, X_FORWARDED_HOST, X_FORWARDED_PORT] {
            if let Some(v) = upstream.headers.get(&name) {
                kept.push((name, v.clone()));
            }
        }
    }
    let owned: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|n| is_connection_header(n.as_str()))
        .cloned()
        .collect();
    for name in owned {
        upstream.remove_header(&name);
    }
    let prior_for = kept
        .iter()
        .position(|(n, _)| *n == X_FORWARDED_FOR)
        .map(|i| kept.swap_remove(i).1);
    if let Some(ip) = conn.client_ip {
        let ip = ip.to_canonical().to_string();
        let value = match prior_for {
            Some(prior) => {
                HeaderValue::from_bytes(&[prior.as_bytes(), b", ", ip.as_bytes()].concat())
            }
            // The text's own buffer becomes the value (checked, not copied).
            None => HeaderValue::from_maybe_shared(bytes::Bytes::from(ip)),
        };
        if let Ok(value) = value {
            upstream.insert_header(wire::X_FORWARDED_FOR, value)?;
        }
    }
    let proto = HeaderValue::from_static(if conn.https { "https" } else { "http" });
    let own = [
        (X_FORWARDED_PROTO, wire::X_FORWARDED_PROTO, Some(proto)),
        (X_FORWARDED_HOST, wire::X_FORWARDED_HOST, conn.host.cloned()),
        (
            X_FORWARDED_PORT,
            wire::X_FORWARDED_PORT,
            conn.port.map(HeaderValue::from),
        ),
    ];
    for (name, wire_name, mine) in own {
        let from_trusted = kept
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone());
        if let Some(value) = from_trusted.or(mine) {
            upstream.insert_header(wire_name, value)?;
        }
    }
    Ok(())
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy (the one the nearest trusted hop saw).
pub fn client_ip(req: &RequestHeader, peer: Option<IpAddr>, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in req.headers.get_all(&X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !is_trusted(*ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(names: &[&str]) -> IdentityHeaders {
        let mut out = IdentityHeaders::default();
        for n in names {
            let norm = normalise(n);
            out.names
                .push(HeaderName::from_bytes(norm.as_bytes()).unwrap());
            out.normalised.insert(norm);
        }
        out
    }

    #[test]
    fn strips_every_spelling() {
        let ids = headers(&["X-User-Id"]);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-User-Id", "a").unwrap();
        req.append_header("x_user_id", "b").unwrap();
        req.append_header("X-User_Id", "c").unwrap();
        req.append_header("X-Other", "keep").unwrap();
        ids.strip(&mut req);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, vec!["x-other"]);
    }

    #[test]
    fn remove_token_takes_only_the_token() {
        let query = TokenSource::Query {
            name: "access_token".to_owned(),
        };
        let mut req = RequestHeader::build("GET", b"/d?x=%41&access_token=t&y", None).unwrap();
        remove_token(&mut req, &query).unwrap();
        assert_eq!(req.uri, "/d?x=%41&y");
        let mut req = RequestHeader::build("GET", b"/d?access_token=t", None).unwrap();
        remove_token(&mut req, &query).unwrap();
        assert_eq!(req.uri, "/d");
        let header = TokenSource::Header {
            name: HeaderName::from_static("x-api-token"),
            require_scheme: None,
        };
        let mut req = RequestHeader::build("GET", b"/d?access_token=t", None).unwrap();
        req.append_header("X-Api-Token", "a").unwrap();
        req.append_header("x-api-token", "b").unwrap();
        remove_token(&mut req, &header).unwrap();
        assert!(req.headers.get("x-api-token").is_none());
        assert_eq!(req.uri, "/d?access_token=t");
    }

    fn forwarded(req: &mut RequestHeader, peer: &str, trusted: &[&str]) {
        let host = HeaderValue::from_static("api.local");
        let conn = Connection {
            client_ip: Some(peer.parse().unwrap()),
            https: true,
            host: Some(&host),
            port: Some(8443),
        };
        let trusted: Vec<IpNet> = trusted.iter().map(|t| IpNet::parse(t).unwrap()).collect();
        set_forwarded(req, &conn, &trusted).unwrap();
    }

    fn spoofed() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in [
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("X-Forwarded-Proto", "gopher"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-Port", "1"),
            ("X-Forwarded-Prefix", "/admin"),
            ("X-Forwarded-Client-Cert", "Hash=x"),
            ("X_Forwarded_For", "10.0.0.3"),
            ("Forwarded", "for=10.0.0.4"),
            ("X-Real-IP", "10.0.0.5"),
            ("x_real_ip", "10.0.0.6"),
            ("True-Client-IP", "10.0.0.7"),
            ("X-Original-URL", "/admin"),
            ("CF-Connecting-IP", "10.0.0.8"),
            ("Fastly_Client_IP", "10.0.0.9"),
            ("X-Forwarded", "keep: not in the family"),
            ("X-Other", "keep"),
        ] {
            req.append_header(n, v).unwrap();
        }
        req
    }

    #[test]
    fn an_untrusted_peer_gets_every_forwarding_header_overwritten() {
        let mut req = spoofed();
        forwarded(&mut req, "127.0.0.1", &["10.0.0.0/8"]);
        let mut left: Vec<_> = req
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "x-forwarded-for: 127.0.0.1",
                "x-forwarded-host: api.local",
                "x-forwarded-port: 8443",
                "x-forwarded-proto: https",
                "x-forwarded: keep: not in the family",
                "x-other: keep",
            ]
        );
    }

    #[test]
    fn a_trusted_proxy_extends_x_forwarded_for_and_keeps_its_proto_host_port() {
        let mut req = spoofed();
        forwarded(&mut req, "::ffff:10.1.2.3", &["192.168.0.1", "10.0.0.0/8"]);
        assert_eq!(
            req.headers["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.1.2.3"
        );
        assert_eq!(req.headers["x-forwarded-proto"], "gopher");
        assert_eq!(req.headers["x-forwarded-host"], "evil");
        assert_eq!(req.headers["x-forwarded-port"], "1");
        assert!(req.headers.get("x-forwarded-prefix").is_none());
        assert!(req.headers.get("forwarded").is_none());
        assert!(req.headers.get("x_forwarded_for").is_none());
        // Nothing from the client: the gateway's own values.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        forwarded(&mut req, "10.1.2.3", &["10.0.0.0/8"]);
        assert_eq!(req.headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(req.headers["x-forwarded-proto"], "https");
        assert_eq!(req.headers["x-forwarded-host"], "api.local");
    }
}
