//! Token extraction: header with and without scheme, custom headers, query parameters.

use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_auth::{extract_token, TokenSource, MAX_TOKEN_BYTES};

use crate::support::*;

fn bearer() -> TokenSource {
    TokenSource::Header {
        name: http::header::AUTHORIZATION,
        require_scheme: Some("Bearer".into()),
    }
}

fn from_auth(source: &TokenSource, values: &[&str]) -> Result<String, &'static str> {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap(),
        );
    }
    extract_token(&request(&headers, None), source)
        .map(|t| t.into_owned())
        .map_err(|e| e.reason())
}

#[test]
fn require_scheme_is_case_insensitive_with_exactly_one_space() {
    let s = bearer();
    assert_eq!(
        from_auth(&s, &["Bearer abc.def.ghi"]),
        Ok("abc.def.ghi".into())
    );
    assert_eq!(from_auth(&s, &["bearer abc"]), Ok("abc".into()));
    assert_eq!(from_auth(&s, &["BEARER abc"]), Ok("abc".into()));
    assert_eq!(from_auth(&s, &["Bearer  abc"]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["Bearer abc def"]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["Bearer abc "]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["Bearer\tabc"]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["Basic abc"]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["abc"]), Err("JwtInvalid"));
    assert_eq!(from_auth(&s, &["Bearer"]), Err("TokenNotPresent"));
    assert_eq!(from_auth(&s, &["Bearer "]), Err("TokenNotPresent"));
    assert_eq!(from_auth(&s, &[""]), Err("TokenNotPresent"));
    assert_eq!(from_auth(&s, &[]), Err("TokenNotPresent"));
}

#[test]
fn several_authorization_headers_are_rejected() {
    assert_eq!(
        from_auth(&bearer(), &["Bearer a", "Bearer a"]),
        Err("JwtInvalid")
    );
}

#[test]
fn without_required_scheme_bearer_or_bare_token() {
    let s = TokenSource::Header {
        name: http::header::AUTHORIZATION,
        require_scheme: None,
    };
    assert_eq!(from_auth(&s, &["Bearer abc"]), Ok("abc".into()));
    assert_eq!(from_auth(&s, &["abc"]), Ok("abc".into()));
    assert_eq!(from_auth(&s, &["Basic abc"]), Err("JwtInvalid"));
}

#[test]
fn custom_header_value_is_the_token() {
    let name = HeaderName::from_static("x-token");
    let s = TokenSource::Header {
        name: name.clone(),
        require_scheme: Some("Bearer".into()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(name.clone(), HeaderValue::from_static("abc.def.ghi"));
    let t = extract_token(&request(&headers, None), &s).unwrap();
    assert_eq!(t, "abc.def.ghi");
    headers.insert(name, HeaderValue::from_static("Bearer abc"));
    assert_eq!(
        reason(extract_token(&request(&headers, None), &s)),
        "JwtInvalid"
    );
}

#[test]
fn query_parameter_is_percent_decoded() {
    let s = TokenSource::Query {
        name: "access_token".into(),
    };
    let h = HeaderMap::new();
    let get = |q: Option<&str>| {
        extract_token(&request(&h, q), &s)
            .map(|t| t.into_owned())
            .map_err(|e| e.reason())
    };
    assert_eq!(
        get(Some("a=1&access_token=abc.d%2De.f")),
        Ok("abc.d-e.f".into())
    );
    assert_eq!(get(Some("access_token=")), Err("TokenNotPresent"));
    assert_eq!(get(Some("other=1")), Err("TokenNotPresent"));
    assert_eq!(get(None), Err("TokenNotPresent"));
    assert_eq!(
        get(Some("access_token=a&access_token=b")),
        Err("JwtInvalid")
    );
    assert_eq!(get(Some("access_token=a%20b")), Err("JwtInvalid"));
    assert_eq!(get(Some("access_token=%FF")), Err("JwtInvalid"));
}

#[test]
fn oversized_tokens_are_rejected() {
    let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
    assert_eq!(from_auth(&bearer(), &[&big]), Err("JwtInvalid"));
}
