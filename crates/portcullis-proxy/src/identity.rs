//! Request headers the gateway owns: identity headers (what `forward-claims` sets), the request id,
//! and the X-Forwarded-* family.
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
use portcullis_config::Model;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let id = HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"));
    req.insert_header(X_REQUEST_ID, id.clone())?;
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

/// Set X-Forwarded-For (appended), -Proto and -Host on the upstream request.
pub fn set_forwarded(
    upstream: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    https: bool,
    host: Option<&HeaderValue>,
) -> Result<()> {
    if let Some(ip) = client_ip {
        let value = match upstream.headers.get(&X_FORWARDED_FOR) {
            Some(prior) => {
                let mut v = Vec::with_capacity(prior.len() + 41);
                v.extend_from_slice(prior.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip.to_string().as_bytes());
                HeaderValue::from_bytes(&v).ok()
            }
            None => HeaderValue::from_str(&ip.to_string()).ok(),
        };
        if let Some(value) = value {
            upstream.insert_header(X_FORWARDED_FOR, value)?;
        }
    }
    let proto = if https { "https" } else { "http" };
    upstream.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    if let Some(host) = host {
        upstream.insert_header(X_FORWARDED_HOST, host.clone())?;
    }
    Ok(())
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

    #[test]
    fn forwarded_for_appends() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Forwarded-For", "10.0.0.1").unwrap();
        let host = HeaderValue::from_static("api.local");
        set_forwarded(
            &mut req,
            Some("127.0.0.1".parse().unwrap()),
            true,
            Some(&host),
        )
        .unwrap();
        assert_eq!(req.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(req.headers["x-forwarded-proto"], "https");
        assert_eq!(req.headers["x-forwarded-host"], "api.local");
    }
}
