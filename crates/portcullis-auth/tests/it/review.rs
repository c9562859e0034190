//! Findings of the security review (issue 13, step 4) that the auth core answers: the JOSE header
//! is bounded before it is parsed, a `null` required claim is absent, a token issued in the future
//! is not yet valid, and a key speaks only for the issuers it is bound to.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use portcullis_auth::{
    verify_token, AuthError, ClaimRule, KeySnapshot, Match, MAX_HEADER_BYTES, MAX_HEADER_MEMBERS,
    MAX_TOKEN_BYTES,
};
use serde_json::{json, Value};

use crate::support::*;

fn hs_keys() -> KeySnapshot {
    snapshot(vec![hmac_key(None)])
}

/// A header `{"alg":"HS256", <members>}` over valid claims, correctly signed.
fn with_header_members(members: &str) -> String {
    let header = format!(r#"{{"alg":"HS256"{members}}}"#);
    sign_raw(
        &header,
        &claims().to_string(),
        &hmac_encoding(),
        Algorithm::HS256,
    )
}

/// `n` distinct two-letter-or-longer members: `,"a0":0,"a1":0,...`.
fn members(n: usize) -> String {
    (0..n).map(|i| format!(r#","m{i}":0"#)).collect()
}

#[test]
fn a_header_with_too_many_members_is_refused() {
    // alg plus 63 more: exactly the bound, accepted.
    let at_bound = with_header_members(&members(MAX_HEADER_MEMBERS - 1));
    assert!(verify_token(&at_bound, &hs_keys(), true).is_ok());
    // One more member than the bound: refused, although correctly signed.
    let over = with_header_members(&members(MAX_HEADER_MEMBERS));
    assert_eq!(
        verify_token(&over, &hs_keys(), true).unwrap_err(),
        AuthError::JwtInvalid {
            detail: "header has too many members"
        }
    );
}

#[test]
fn an_oversized_header_is_refused_before_it_is_decoded() {
    // Under the bound (a long `x5c`-like member): accepted.
    let filler = "a".repeat(MAX_HEADER_BYTES - 64);
    let under = with_header_members(&format!(r#","x":"{filler}""#));
    assert!(verify_token(&under, &hs_keys(), true).is_ok());
    let filler = "a".repeat(MAX_HEADER_BYTES);
    let over = with_header_members(&format!(r#","x":"{filler}""#));
    assert_eq!(
        verify_token(&over, &hs_keys(), true).unwrap_err(),
        AuthError::JwtInvalid {
            detail: "header too large"
        }
    );
}

#[test]
fn thousands_of_header_members_are_refused_before_the_signature_check() {
    // The review's input: ~3,500 two-letter members filling a 32 KiB token, with a made-up
    // signature. It used to be parsed in full (a quadratic duplicate scan) and reach the signature
    // check; now the header's size bound stops it before any decoding.
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let two_letter: String = alphabet
        .iter()
        .flat_map(|a| alphabet.iter().map(move |b| format!(r#","{a}{b}":0"#)))
        .take(3_500)
        .collect();
    let header = b64(format!(r#"{{"alg":"HS256"{two_letter}}}"#).as_bytes());
    let token = format!("{header}.{}.{}", b64(b"{}"), b64(&[7; 32]));
    assert!(token.len() <= MAX_TOKEN_BYTES, "{}", token.len());
    assert_eq!(
        verify_token(&token, &hs_keys(), true).unwrap_err(),
        AuthError::JwtInvalid {
            detail: "header too large"
        }
    );
    // Within the size bound, a header of too many members is refused by its count, also before
    // the signature check.
    let header = b64(format!(r#"{{"alg":"HS256"{}}}"#, members(MAX_HEADER_MEMBERS)).as_bytes());
    let token = format!("{header}.{}.{}", b64(b"{}"), b64(&[7; 32]));
    assert_eq!(
        verify_token(&token, &hs_keys(), true).unwrap_err(),
        AuthError::JwtInvalid {
            detail: "header has too many members"
        }
    );
}

#[test]
fn duplicate_header_members_are_still_refused() {
    // Names sharing a tag (same length and first seven bytes) are told apart; equal ones are not.
    let distinct = with_header_members(r#","abcdefgX":1,"abcdefgY":2,"typ":"JWT""#);
    assert!(verify_token(&distinct, &hs_keys(), true).is_ok());
    for dup in [
        r#","typ":"JWT","typ":"JWT""#,
        r#","abcdefgX":1,"abcdefgX":2"#,
        r#","alg":"HS256""#,
    ] {
        let t = with_header_members(dup);
        assert_eq!(
            reason(verify_token(&t, &hs_keys(), true)),
            "JwtInvalid",
            "{dup}"
        );
    }
    // A duplicate after the first eight members (past the inline names) too.
    let late = with_header_members(&format!(r#"{},"m3":1"#, members(20)));
    assert_eq!(reason(verify_token(&late, &hs_keys(), true)), "JwtInvalid");
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &hmac_encoding())
}

#[test]
fn a_null_required_claim_counts_as_absent() {
    let mut p = policy();
    p.required_claims = vec![ClaimRule {
        name: "tid".into(),
        r#match: Match::All,
        separator: None,
        values: Vec::new(),
    }];
    let mut c = claims();
    c["tid"] = json!(null);
    assert_eq!(
        check(&hs(&c), &hs_keys(), &p).unwrap_err(),
        AuthError::TokenClaimNotFound {
            claims: vec!["tid".into()]
        }
    );
    // Nested (dotted path) the same.
    p.required_claims[0].name = "org.tid".into();
    c["org"] = json!({ "tid": null });
    assert_eq!(reason(check(&hs(&c), &hs_keys(), &p)), "TokenClaimNotFound");
    // Present with a value: fine.
    c["org"] = json!({ "tid": "t1" });
    assert!(check(&hs(&c), &hs_keys(), &p).is_ok());
}

#[test]
fn a_token_issued_in_the_future_is_not_yet_valid() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("nbf");
    c["iat"] = json!(NOW.0 + 60);
    assert_eq!(
        check(&hs(&c), &hs_keys(), &policy()).unwrap_err(),
        AuthError::TokenNotYetValid
    );
    // Within the clock skew: accepted.
    let mut skewed = policy();
    skewed.clock_skew = 60;
    assert!(check(&hs(&c), &hs_keys(), &skewed).is_ok());
    // Issued earlier in the current second (the gateway's clock has whole seconds): accepted;
    // the next second is the future.
    c["iat"] = json!(NOW.0 as f64 + 0.75);
    assert!(check(&hs(&c), &hs_keys(), &policy()).is_ok());
    c["iat"] = json!(NOW.0 + 1);
    assert_eq!(
        reason(check(&hs(&c), &hs_keys(), &policy())),
        "TokenNotYetValid"
    );
}

#[test]
fn a_bound_key_verifies_only_tokens_of_its_issuers() {
    let a = "https://idp-a.test/";
    let b = "https://idp-b.test/";
    let key_a = rsa()
        .verifying(Some("a"))
        .bound_to(Arc::from(vec![a.to_owned()]));
    let key_b = rsa2()
        .verifying(Some("b"))
        .bound_to(Arc::from(vec![b.to_owned()]));
    let keys = snapshot(vec![key_a, key_b]);
    let mut p = policy();
    p.issuers = vec![a.into(), b.into()];
    let token = |key: &TestKey, kid: &str, iss: &str| {
        let mut c = claims();
        c["iss"] = json!(iss);
        sign(Algorithm::RS256, Some(kid), &c, &key.encoding)
    };
    assert!(check(&token(rsa(), "a", a), &keys, &p).is_ok());
    assert!(check(&token(rsa2(), "b", b), &keys, &p).is_ok());
    // B's key minting a token in A's name: refused although the policy accepts both issuers.
    assert_eq!(
        check(&token(rsa2(), "b", a), &keys, &p).unwrap_err(),
        AuthError::TokenIssuerNotAllowed
    );
    // An unbound key (static config) is held to the policy's issuers only.
    let unbound = snapshot(vec![rsa2().verifying(Some("b"))]);
    assert!(check(&token(rsa2(), "b", a), &unbound, &p).is_ok());
}

#[test]
fn a_pending_discovery_issuer_fails_closed() {
    // The policy lists no issuers and a discovery document has not answered yet: a token that a
    // static key verifies is not let through unchecked.
    let mut p = policy();
    p.issuers.clear();
    let mut keys = hs_keys();
    keys.issuers_pending = true;
    assert_eq!(
        check(&hs(&claims()), &keys, &p).unwrap_err(),
        AuthError::KeysUnavailable
    );
    // One discovery issuer known, another pending: a known issuer passes.
    keys.issuers = Arc::from(vec!["https://issuer.test/".to_owned()]);
    assert!(check(&hs(&claims()), &keys, &p).is_ok());
    let mut other = claims();
    other["iss"] = json!("https://elsewhere.test/");
    assert_eq!(reason(check(&hs(&other), &keys, &p)), "KeysUnavailable");
}
