//! Rendering a config [`Value`] for one request, and checking the result for where it goes.
//!
//! The request is seen through a [`View`]: the (canonical, already routed) request header, the
//! connection's peer and the trusted proxies (for `${client-ip}`), the route's URL-template
//! captures, the verified token and the request's variables. Rendering borrows whatever it can: a
//! literal value, or a value that is one source read as is (one header, a variable, the path),
//! costs no allocation.
//!
//! Why a rendered value is checked before it is used rather than escaped: a value built from what
//! the client sent (`${header:...}`, `${query:...}`) could otherwise smuggle a second header
//! line (CR/LF) to the backend or the client. Such a value is refused, not repaired: the header is
//! left unset, and the caller logs and counts why (never the value itself, which may be a secret).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use pingora_http::RequestHeader;
use portcullis_auth::{claim_to_header_value, Verified};
use portcullis_config::{IpNet, Part, Source, Value};

/// A request's variables (`set-variable`), in the order first set. Empty (no allocation) for a
/// policy that sets none.
pub type Vars = Vec<(Arc<str>, String)>;

/// The value of variable `name`, if set.
pub fn var<'v>(vars: &'v Vars, name: &str) -> Option<&'v str> {
    vars.iter()
        .find(|(n, _)| &**n == name)
        .map(|(_, v)| v.as_str())
}

/// Sets variable `name` (replacing an earlier value).
pub fn set_var(vars: &mut Vars, name: &Arc<str>, value: String) {
    match vars.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value,
        None => vars.push((name.clone(), value)),
    }
}

/// What a value is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The request (its URI is the canonical target once routed).
    pub req: &'a RequestHeader,
    /// The connection's peer address.
    pub peer: Option<IpAddr>,
    /// `server.trusted-proxies` (whose `X-Forwarded-For` names the client).
    pub trusted: &'a [IpNet],
    /// The route's URL-template captures: name, canonical (percent-encoded) text.
    pub params: &'a [(Arc<str>, String)],
    /// The verified token, once `validate-jwt` has passed.
    pub identity: Option<&'a Verified>,
    /// The request's variables.
    pub vars: &'a Vars,
    /// The name of the subscription whose key was accepted, if any.
    pub subscription: Option<&'a str>,
}

impl<'a> View<'a> {
    /// The client address (a trusted proxy's forwarded one, else the peer).
    pub fn client_ip(&self) -> Option<IpAddr> {
        crate::identity::client_ip(self.req, self.peer, self.trusted)
    }

    /// Request header `name`, several values joined with `,`; `None` when absent.
    pub fn header(&self, name: &http::HeaderName) -> Option<Cow<'a, str>> {
        let mut values = self.req.headers.get_all(name).iter();
        let first = values.next()?;
        let mut out = String::from_utf8_lossy(first.as_bytes());
        for v in values {
            let joined = out.to_mut();
            joined.push(',');
            joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        Some(out)
    }

    /// Query parameter `name` (names compared decoded), first occurrence, percent-decoded (`+`
    /// as a space, as forms encode it).
    pub fn query(&self, name: &str) -> Option<Cow<'a, str>> {
        portcullis_route::query::values(self.req.uri.query()?, name).next()
    }

    /// URL-template parameter `name`, percent-decoded.
    pub fn param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    }

    /// A claim of the verified token, rendered as `forward-claims` renders it; a claim that
    /// cannot be carried in a header reads as absent.
    pub fn claim(&self, name: &str) -> Option<String> {
        let claims = &self.identity?.token().claims;
        let value = claim_to_header_value(claims.lookup(name)?)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    /// The canonical host (no port, lower case): `Host`, or the HTTP/2 authority.
    pub fn host(&self) -> Cow<'a, str> {
        let raw = match self.req.headers.get(http::header::HOST) {
            Some(h) => h.to_str().ok(),
            None => self.req.uri.authority().map(|a| a.as_str()),
        };
        raw.and_then(|h| portcullis_route::canonical_host(h).ok())
            .unwrap_or(Cow::Borrowed(""))
    }

    /// One source's value; empty when absent.
    pub fn source(&self, source: &'a Source) -> Cow<'a, str> {
        let absent = Cow::Borrowed("");
        match source {
            Source::Header(name) => self.header(name).unwrap_or(absent),
            Source::Query(name) => self.query(name).unwrap_or(absent),
            Source::Param(name) => self.param(name).unwrap_or(absent),
            Source::Claim(name) => self.claim(name).map_or(absent, Cow::Owned),
            Source::Var(name) => var(self.vars, name).map_or(absent, Cow::Borrowed),
            Source::ClientIp => self
                .client_ip()
                .map_or(absent, |ip| Cow::Owned(ip.to_canonical().to_string())),
            Source::Method => Cow::Borrowed(self.req.method.as_str()),
            Source::Path => Cow::Borrowed(self.req.uri.path()),
            Source::Host => self.host(),
            Source::QueryString => Cow::Borrowed(self.req.uri.query().unwrap_or("")),
            Source::Subscription => Cow::Borrowed(self.subscription.unwrap_or("")),
        }
    }

    /// A value for this request: borrowed when it is literal or one source read as is.
    pub fn render(&self, value: &'a Value) -> Cow<'a, str> {
        let piece = |part: &'a Part| match part {
            Part::Literal(text) => Cow::Borrowed(text.as_str()),
            Part::Source { source, fallback } => {
                let v = self.source(source);
                match fallback {
                    Some(f) if v.is_empty() => Cow::Borrowed(f.as_str()),
                    _ => v,
                }
            }
        };
        match value.parts() {
            [] => Cow::Borrowed(""),
            [one] => piece(one),
            parts => {
                let mut out = String::new();
                for part in parts {
                    out.push_str(&piece(part));
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Why a rendered value was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// CR, LF, NUL, another control character or DEL.
    ControlCharacter,
    /// A byte outside ASCII, in a header value.
    NonAscii,
}

impl Refused {
    /// Stable code for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::ControlCharacter => "ControlCharacter",
            Refused::NonAscii => "NonAscii",
        }
    }
}

/// `Err` when the text holds a control character (CR, LF, NUL, tab ...) or DEL.
pub fn no_controls(text: &str) -> Result<(), Refused> {
    match text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        true => Err(Refused::ControlCharacter),
        false => Ok(()),
    }
}

/// A rendered value as a header value: printable ASCII only.
pub fn header_value(text: &str) -> Result<HeaderValue, Refused> {
    no_controls(text)?;
    if !text.is_ascii() {
        return Err(Refused::NonAscii);
    }
    HeaderValue::from_str(text).map_err(|_| Refused::ControlCharacter)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", target.as_bytes(), None).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn render(text: &str, view: &View<'_>) -> String {
        let value = Value::parse(text).unwrap();
        view.render(&value).into_owned()
    }

    #[test]
    fn every_source() {
        let req = request(
            "/orders/a%2Fb?x=1&q=a%20b+c&q=second&e=",
            &[
                ("Host", "API.Local:8443"),
                ("X-Tag", "a"),
                ("x-tag", "b"),
                ("X-Forwarded-For", "203.0.113.9"),
            ],
        );
        let params = [(Arc::from("id"), "a%2Fb".to_owned())];
        let mut vars = Vars::new();
        set_var(&mut vars, &Arc::from("tier"), "silver".to_owned());
        set_var(&mut vars, &Arc::from("tier"), "gold".to_owned());
        let trusted = [IpNet::parse("127.0.0.1").unwrap()];
        let view = View {
            req: &req,
            peer: Some("127.0.0.1".parse().unwrap()),
            trusted: &trusted,
            params: &params,
            identity: None,
            vars: &vars,
            subscription: None,
        };
        assert_eq!(render("${header:x-tag}", &view), "a,b");
        assert_eq!(render("${query:q}", &view), "a b c");
        assert_eq!(render("${query:e|none}", &view), "none");
        assert_eq!(render("${query:absent}", &view), "");
        assert_eq!(render("${param:id}", &view), "a/b");
        assert_eq!(render("${var:tier}", &view), "gold");
        assert_eq!(vars.len(), 1);
        assert_eq!(render("${client-ip}", &view), "203.0.113.9");
        assert_eq!(
            render("${method} ${path}?${query} @${host}", &view),
            "POST /orders/a%2Fb?x=1&q=a%20b+c&q=second&e= @api.local"
        );
        assert_eq!(render("${claim:sub|anonymous}", &view), "anonymous");
        assert_eq!(render("$${x} ${var:none|-}", &view), "${x} -");
    }

    #[test]
    fn literal_and_single_sources_borrow() {
        let req = request("/p", &[("X-One", "v")]);
        let vars = vec![(Arc::from("v"), "x".to_owned())];
        let view = View {
            req: &req,
            peer: None,
            trusted: &[],
            params: &[],
            identity: None,
            vars: &vars,
            subscription: None,
        };
        for text in [
            "literal",
            "${header:x-one}",
            "${var:v}",
            "${path}",
            "${method}",
        ] {
            let value = Value::parse(text).unwrap();
            assert!(matches!(view.render(&value), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn header_values_are_printable_ascii() {
        assert!(header_value("a b\"c").is_ok());
        assert_eq!(header_value("a\r\nX: y"), Err(Refused::ControlCharacter));
        assert_eq!(header_value("a\0"), Err(Refused::ControlCharacter));
        assert_eq!(header_value("a\tb"), Err(Refused::ControlCharacter));
        assert_eq!(header_value("caf\u{e9}"), Err(Refused::NonAscii));
        assert_eq!(no_controls("caf\u{e9}"), Ok(()));
    }
}
