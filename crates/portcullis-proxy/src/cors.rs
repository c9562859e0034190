//! APIM's `cors` statement at run time.
//!
//! As in APIM, a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) runs the
//! `cors` statement only: it is answered here, before any token check, and never reaches the
//! backend; a preflight that does not match the settings gets an empty `200` without CORS headers
//! (the browser then refuses the actual request). An actual cross-origin request from an allowed
//! origin goes on, and **every** answer to it (the backend's, or the gateway's own 401, 403, 429)
//! carries `Access-Control-Allow-Origin` and friends, so browser code can read the error. From an
//! origin that is not allowed, a `GET`/`HEAD` is ended with an empty `200` under
//! `terminate-unmatched-request: true` (APIM's default), and otherwise goes on without CORS headers.
//! `Vary: Origin` is on every answer that depends on the origin.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use pingora_http::RequestHeader;
use portcullis_config::{AnyOr, Cors};

use crate::respond::{Answer, REASON_CORS_PREFLIGHT, REASON_CORS_UNMATCHED};

/// What the `cors` statement decided.
#[derive(Debug)]
pub enum Verdict {
    /// Answer now: a preflight, or an unmatched GET/HEAD under `terminate-unmatched-request`.
    Answer(Answer),
    /// Go on; whatever answers the request carries these headers.
    Continue(Vec<(HeaderName, HeaderValue)>),
}

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about (routes are matched with it, as APIM matches the operation).
pub fn preflight_method(req: &RequestHeader) -> Option<Method> {
    if !is_preflight(req) {
        return None;
    }
    let value = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(value.as_bytes()).ok()
}

fn origin_allowed(cors: &Cors, origin: &HeaderValue) -> bool {
    match &cors.allowed_origins {
        AnyOr::Any => true,
        AnyOr::List(list) => origin
            .to_str()
            .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

fn method_allowed(cors: &Cors, method: &[u8]) -> bool {
    match &cors.allowed_methods {
        AnyOr::Any => true,
        AnyOr::List(list) => list.iter().any(|m| m.as_str().as_bytes() == method),
    }
}

fn headers_allowed(cors: &Cors, requested: Option<&HeaderValue>) -> bool {
    let Some(requested) = requested else {
        return true;
    };
    let Ok(text) = requested.to_str() else {
        return false;
    };
    match &cors.allowed_headers {
        AnyOr::Any => true,
        AnyOr::List(list) => text
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| list.iter().any(|a| a.eq_ignore_ascii_case(h))),
    }
}

fn allow_origin(cors: &Cors, origin: &HeaderValue) -> HeaderValue {
    if cors.allowed_origins == AnyOr::Any && !cors.allow_credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    (!text.is_empty())
        .then(|| HeaderValue::from_str(&text).ok())
        .flatten()
}

/// A `cors` statement with the header values it always sends, built once per config.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    cors: Arc<Cors>,
    /// `Access-Control-Allow-Methods` for a listed `allowed-methods` (`None`: `*`, echoed).
    allow_methods: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers` (`None`: none listed).
    expose_headers: Option<HeaderValue>,
}

impl CorsPolicy {
    /// Derive the fixed header values of a statement.
    pub fn new(cors: Arc<Cors>) -> CorsPolicy {
        let allow_methods = match &cors.allowed_methods {
            AnyOr::Any => None,
            AnyOr::List(list) => joined(list.iter().map(Method::as_str)),
        };
        let expose_headers = joined(cors.expose_headers.iter().map(String::as_str));
        CorsPolicy {
            cors,
            allow_methods,
            expose_headers,
        }
    }

    /// Evaluate the statement for a request.
    pub fn evaluate(&self, req: &RequestHeader) -> Verdict {
        let cors = &*self.cors;
        let Some(origin) = req.headers.get(ORIGIN) else {
            return Verdict::Continue(Vec::new());
        };
        let vary_origin = (VARY, HeaderValue::from_static("Origin"));
        let origin_ok = origin_allowed(cors, origin);
        if is_preflight(req) {
            let requested = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD);
            let requested_headers = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
            let method_ok = requested.is_some_and(|m| method_allowed(cors, m.as_bytes()));
            let vary = HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            );
            if !(origin_ok && method_ok && headers_allowed(cors, requested_headers)) {
                return Verdict::Answer(Answer::empty(200, REASON_CORS_UNMATCHED).with(VARY, vary));
            }
            let mut answer = Answer::empty(200, REASON_CORS_PREFLIGHT)
                .with(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(cors, origin));
            if cors.allow_credentials {
                answer = answer.with(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            let methods = self.allow_methods.clone().or_else(|| requested.cloned());
            if let Some(methods) = methods {
                answer = answer.with(ACCESS_CONTROL_ALLOW_METHODS, methods);
            }
            if let Some(headers) = requested_headers {
                answer = answer.with(ACCESS_CONTROL_ALLOW_HEADERS, headers.clone());
            }
            if let Some(age) = cors.preflight_result_max_age {
                answer = answer.with(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
            }
            return Verdict::Answer(answer.with(VARY, vary));
        }
        if !origin_ok {
            let simple = req.method == Method::GET || req.method == Method::HEAD;
            if cors.terminate_unmatched_request && simple {
                return Verdict::Answer(
                    Answer::empty(200, REASON_CORS_UNMATCHED).with(vary_origin.0, vary_origin.1),
                );
            }
            return Verdict::Continue(vec![vary_origin]);
        }
        let mut headers = vec![(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(cors, origin))];
        if cors.allow_credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(expose) = &self.expose_headers {
            headers.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        headers.push(vary_origin);
        Verdict::Continue(headers)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn cors() -> Cors {
        Cors {
            allowed_origins: AnyOr::List(vec!["https://app.local".to_owned()]),
            allowed_methods: AnyOr::List(vec![Method::GET, Method::POST]),
            preflight_result_max_age: Some(300),
            allowed_headers: AnyOr::List(vec!["authorization".to_owned()]),
            expose_headers: vec!["X-Request-Id".to_owned()],
            allow_credentials: false,
            terminate_unmatched_request: true,
        }
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
        a.headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn preflight_allowed_and_not() {
        let ok = req(
            "OPTIONS",
            &[
                ("Origin", "https://app.local"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "Authorization"),
            ],
        );
        let Verdict::Answer(a) = CorsPolicy::new(Arc::new(cors())).evaluate(&ok) else {
            panic!("a preflight is answered")
        };
        assert_eq!(a.reason, REASON_CORS_PREFLIGHT);
        assert_eq!(
            header(&a, "access-control-allow-origin"),
            Some("https://app.local")
        );
        assert_eq!(
            header(&a, "access-control-allow-methods"),
            Some("GET, POST")
        );
        assert_eq!(
            header(&a, "access-control-allow-headers"),
            Some("Authorization")
        );
        assert_eq!(header(&a, "access-control-max-age"), Some("300"));
        for bad in [
            ("https://evil.local", "POST", "Authorization"),
            ("https://app.local", "DELETE", "Authorization"),
            ("https://app.local", "POST", "X-Other"),
        ] {
            let r = req(
                "OPTIONS",
                &[
                    ("Origin", bad.0),
                    ("Access-Control-Request-Method", bad.1),
                    ("Access-Control-Request-Headers", bad.2),
                ],
            );
            let Verdict::Answer(a) = CorsPolicy::new(Arc::new(cors())).evaluate(&r) else {
                panic!("an unmatched preflight is answered too")
            };
            assert_eq!(a.reason, REASON_CORS_UNMATCHED, "{bad:?}");
            assert_eq!(header(&a, "access-control-allow-origin"), None, "{bad:?}");
        }
    }

    #[test]
    fn actual_requests() {
        let r = req("GET", &[("Origin", "https://APP.local")]);
        let Verdict::Continue(h) = CorsPolicy::new(Arc::new(cors())).evaluate(&r) else {
            panic!("an allowed origin goes on")
        };
        assert!(h
            .iter()
            .any(|(n, v)| n == ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://APP.local"));
        assert!(h
            .iter()
            .any(|(n, v)| n == ACCESS_CONTROL_EXPOSE_HEADERS && v == "X-Request-Id"));
        let evil_get = req("GET", &[("Origin", "https://evil.local")]);
        assert!(matches!(
            CorsPolicy::new(Arc::new(cors())).evaluate(&evil_get),
            Verdict::Answer(_)
        ));
        let evil_post = req("POST", &[("Origin", "https://evil.local")]);
        let Verdict::Continue(h) = CorsPolicy::new(Arc::new(cors())).evaluate(&evil_post) else {
            panic!("an unmatched POST goes on without CORS headers")
        };
        assert!(!h.iter().any(|(n, _)| n == ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut open = cors();
        open.allowed_origins = AnyOr::Any;
        let Verdict::Continue(h) = CorsPolicy::new(Arc::new(open)).evaluate(&r) else {
            panic!()
        };
        assert!(h
            .iter()
            .any(|(n, v)| n == ACCESS_CONTROL_ALLOW_ORIGIN && v == "*"));
    }
}
