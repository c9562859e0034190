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

use http::{header, HeaderMap};

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
}
