//! Claims to header values for forward-claims.

use http::HeaderName;
use portcullis_auth::{
    claim_header_value, claim_to_header_value, forward_headers, verify_token, Claims,
};
use serde_json::json;

use crate::support::*;

/// A claim value as its header text, read from a parsed payload as the gateway reads it.
fn render(v: serde_json::Value) -> Option<String> {
    let claims = Claims::parse(json!({ "v": v }).to_string()).unwrap();
    claim_to_header_value(claims.get("v").unwrap())
        .map(|h| String::from_utf8(h.as_bytes().to_vec()).unwrap())
}

#[test]
fn values_render_as_documented() {
    assert_eq!(render(json!("alice")), Some("alice".into()));
    assert_eq!(
        render(json!(["a", "b", 3, true])),
        Some("a,b,3,true".into())
    );
    assert_eq!(render(json!(42)), Some("42".into()));
    assert_eq!(render(json!(1.5)), Some("1.5".into()));
    assert_eq!(render(json!(false)), Some("false".into()));
    assert_eq!(
        render(json!({"b": 1, "a": [1, 2]})),
        Some(r#"{"a":[1,2],"b":1}"#.into())
    );
    assert_eq!(
        render(json!([{"a": 1}, [1], null])),
        Some(r#"{"a":1},[1]"#.into())
    );
    assert_eq!(render(json!("Zoë")), Some("Zoë".into()));
    assert_eq!(render(json!("tab\there")), Some("tab\there".into()));
    assert_eq!(render(json!(null)), None);
}

#[test]
fn values_a_header_cannot_carry_are_rejected() {
    for bad in [
        "a\r\nX-Admin: true",
        "a\nb",
        "a\rb",
        "a\0b",
        "a\u{1b}b",
        "a\u{7f}b",
    ] {
        assert_eq!(render(json!(bad)), None, "{bad:?}");
        assert_eq!(render(json!(["ok", bad])), None, "{bad:?}");
    }
}

/// Why a value is refused (`Ok` when it is forwarded).
fn refusal(v: serde_json::Value) -> Result<(), &'static str> {
    let claims = Claims::parse(json!({ "v": v }).to_string()).unwrap();
    claim_header_value(claims.get("v").unwrap())
        .map(|_| ())
        .map_err(|why| why.reason())
}

#[test]
fn an_array_element_holding_the_separator_is_refused_not_split() {
    // Joined, ["reader", "x,admin"] would read as three roles, one of them admin.
    let sep = Err("SeparatorInElement");
    assert_eq!(refusal(json!(["reader", "x,admin"])), sep);
    assert_eq!(refusal(json!([","])), sep);
    assert_eq!(refusal(json!(["CN=Admins,OU=Groups"])), sep);
    assert_eq!(refusal(json!(["a", [1, 2]])), sep);
    assert_eq!(refusal(json!([{"a": 1, "b": 2}])), sep);
    // A scalar is one value: its commas are the claim's own.
    assert_eq!(refusal(json!("Smith, John")), Ok(()));
    assert_eq!(refusal(json!(["a", "b"])), Ok(()));
    assert_eq!(render(json!(["a,b"])), None);
}

#[test]
fn surrounding_whitespace_that_parsers_trim_is_refused() {
    // An HTTP parser drops it, and list parsers trim each element: " admin" would read as admin.
    let ws = Err("SurroundingWhitespace");
    for bad in [" admin", "admin ", "\tadmin", "admin\t"] {
        assert_eq!(refusal(json!(bad)), ws, "{bad:?}");
        assert_eq!(refusal(json!(["reader", bad])), ws, "{bad:?}");
    }
    assert_eq!(refusal(json!("two words")), Ok(()));
    assert_eq!(refusal(json!("")), Ok(()));
}

#[test]
fn control_characters_are_refused_with_their_reason() {
    for bad in ["a\r\nX-Admin: true", "a\0b", "a\u{7f}b"] {
        assert_eq!(refusal(json!(bad)), Err("ControlCharacter"), "{bad:?}");
    }
}

#[test]
fn forward_headers_follow_the_policy() {
    let mut c = claims();
    c["roles"] = json!(["r1", "r2"]);
    c["evil"] = json!("x\r\nInjected: 1");
    let token = sign(jsonwebtoken::Algorithm::HS256, None, &c, &hmac_encoding());
    let t = verify_token(&token, &snapshot(vec![hmac_key(None)]), true).unwrap();
    let mut p = policy();
    p.forward_claims = vec![
        (HeaderName::from_static("x-user-id"), "sub".into()),
        (HeaderName::from_static("x-roles"), "roles".into()),
        (HeaderName::from_static("x-missing"), "tid".into()),
        (HeaderName::from_static("x-evil"), "evil".into()),
    ];
    let keys = snapshot(vec![hmac_key(None)]);
    let v = portcullis_auth::check_claims(&std::sync::Arc::new(t), &p, &keys, NOW).unwrap();
    let h = forward_headers(&v, &p);
    let h: Vec<(String, String)> = h
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        h,
        vec![
            ("x-user-id".to_owned(), "alice".to_owned()),
            ("x-roles".to_owned(), "r1,r2".to_owned())
        ]
    );
}
