//! `--map-upstream FROM=TO`: rewrite an upstream origin at load, without editing the config.
//!
//! Why: an APIM export (and a config written for one environment) names cloud backends such as
//! `https://api.contoso.com`; on a laptop the same service runs at `http://127.0.0.1:3000`. The
//! mapping is applied to every upstream URL the gateway will connect to (route upstreams,
//! `backends:` entries, `set-backend-service` base URLs) by `import-apim` and `run`, so the folder
//! or file stays as exported.
//!
//! Matching is on the origin only: scheme, host (ASCII case-insensitive, as DNS is) and port (the
//! scheme's default when absent). The URL's path is kept and appended to TO's path, and its query
//! is kept, so `https://api.contoso.com/orders/v1` with `https://api.contoso.com=http://127.0.0.1:3000/contoso`
//! becomes `http://127.0.0.1:3000/contoso/orders/v1`. The first matching mapping wins.

use std::fmt;
use std::str::FromStr;

/// One `FROM=TO` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamMap {
    from: Origin,
    to: url::Url,
}

/// Scheme, lower-cased host and effective port: what a URL is matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &url::Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_ascii_lowercase(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// Why a `FROM=TO` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamMapError(String);

impl fmt::Display for UpstreamMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamMapError {}

fn http_url(text: &str, side: &str) -> Result<url::Url, UpstreamMapError> {
    let url = url::Url::parse(text)
        .map_err(|e| UpstreamMapError(format!("{side} `{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UpstreamMapError(format!(
            "{side} `{text}` must be an http:// or https:// URL"
        )));
    }
    if url.host_str().is_none() {
        return Err(UpstreamMapError(format!("{side} `{text}` has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(UpstreamMapError(format!(
            "{side} `{text}` must not carry a query, fragment or user info"
        )));
    }
    Ok(url)
}

impl FromStr for UpstreamMap {
    type Err = UpstreamMapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The first `=` after the FROM origin separates the sides: origins cannot contain `=`.
        let (from, to) = s.split_once('=').ok_or_else(|| {
            UpstreamMapError(format!(
                "`{s}`: expected FROM=TO, e.g. https://api.contoso.com=http://127.0.0.1:3000"
            ))
        })?;
        let from_url = http_url(from, "FROM")?;
        if from_url.path() != "/" {
            return Err(UpstreamMapError(format!(
                "FROM `{from}` must be an origin (scheme://host[:port]) without a path"
            )));
        }
        let to = http_url(to, "TO")?;
        let from = Origin::of(&from_url)
            .ok_or_else(|| UpstreamMapError(format!("FROM `{s}` has no host or port")))?;
        Ok(UpstreamMap { from, to })
    }
}

impl fmt::Display for UpstreamMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}={}",
            self.from.scheme, self.from.host, self.from.port, self.to
        )
    }
}

impl UpstreamMap {
    /// `url` rewritten by this mapping, or `None` when its origin is not FROM (or it is not a URL).
    pub fn apply(&self, url: &str) -> Option<String> {
        let parsed = url::Url::parse(url).ok()?;
        if Origin::of(&parsed)? != self.from {
            return None;
        }
        let base = self.to.path().trim_end_matches('/');
        let mut out = format!(
            "{}://{}",
            self.to.scheme(),
            self.to.host_str().unwrap_or_default()
        );
        if let Some(port) = self.to.port() {
            out.push_str(&format!(":{port}"));
        }
        // Keep the URL's own path exactly as written (no trailing slash added to a bare origin).
        let rest = match parsed.path() {
            "/" if !url.trim_end_matches(['?', '#']).ends_with('/') && parsed.query().is_none() => {
                ""
            }
            p => p,
        };
        out.push_str(base);
        out.push_str(rest);
        if let Some(q) = parsed.query() {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// `url` rewritten by the first mapping whose FROM is its origin; `None` when none applies.
pub fn map_upstream(maps: &[UpstreamMap], url: &str) -> Option<String> {
    maps.iter().find_map(|m| m.apply(url))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(s: &str) -> UpstreamMap {
        s.parse().unwrap()
    }

    #[test]
    fn maps_the_origin_and_keeps_path_and_query() {
        let map = m("https://api.contoso.com=http://127.0.0.1:3000");
        assert_eq!(
            map.apply("https://api.contoso.com").as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(
            map.apply("https://API.Contoso.com:443/orders/v1?x=1")
                .as_deref(),
            Some("http://127.0.0.1:3000/orders/v1?x=1")
        );
        assert_eq!(
            map.apply("https://api.contoso.com/").as_deref(),
            Some("http://127.0.0.1:3000/")
        );
    }

    #[test]
    fn to_may_carry_a_base_path() {
        let map = m("https://api.contoso.com=http://127.0.0.1:3000/contoso/");
        assert_eq!(
            map.apply("https://api.contoso.com/orders").as_deref(),
            Some("http://127.0.0.1:3000/contoso/orders")
        );
    }

    #[test]
    fn other_origins_are_left_alone() {
        let map = m("https://api.contoso.com=http://127.0.0.1:3000");
        for url in [
            "http://api.contoso.com/orders",
            "https://api.contoso.com:8443/orders",
            "https://api.contoso.com.evil/orders",
            "https://xapi.contoso.com/orders",
            "not a url",
        ] {
            assert_eq!(map.apply(url), None, "{url}");
        }
        let maps = [
            m("https://a.example=http://127.0.0.1:1"),
            m("https://b.example=http://127.0.0.1:2"),
        ];
        assert_eq!(
            map_upstream(&maps, "https://b.example/x").as_deref(),
            Some("http://127.0.0.1:2/x")
        );
        assert_eq!(map_upstream(&maps, "https://c.example/x"), None);
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for bad in [
            "https://api.contoso.com",
            "https://api.contoso.com/path=http://127.0.0.1:3000",
            "ftp://x=http://127.0.0.1:3000",
            "https://x=127.0.0.1:3000",
            "https://x=http://127.0.0.1:3000/?q=1",
        ] {
            let err = bad.parse::<UpstreamMap>().unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }
}
