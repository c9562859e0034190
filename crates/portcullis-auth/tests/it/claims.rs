//! Claim rules, every reason code, and the jsonwebtoken defaults the contract overrides.

use jsonwebtoken::Algorithm;
use portcullis_auth::{
    check_claims, check_claims_memo, evaluate, AuthError, ClaimKind, ClaimRule, ClaimValues, Match,
    RolesRule, RulesTag, ScopesRule,
};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::support::*;

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &hmac_encoding())
}

fn keys() -> portcullis_auth::KeySnapshot {
    snapshot(vec![hmac_key(None)])
}

fn run(claims: &Value, policy: &portcullis_auth::Policy) -> Result<(), AuthError> {
    check(&hs(claims), &keys(), policy).map(|_| ())
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = claims();
    edit(&mut c);
    c
}

// --- jsonwebtoken defaults the contract overrides (one test each) ---

#[test]
fn default_leeway_is_zero_not_sixty_seconds() {
    // jsonwebtoken's Validation allows 60 s after exp by default; we allow clock-skew (0).
    let c = with(|c| c["exp"] = json!(NOW.0 - 1));
    assert_eq!(run(&c, &policy()), Err(AuthError::TokenExpired));
    let exactly_now = with(|c| c["exp"] = json!(NOW.0));
    assert_eq!(run(&exactly_now, &policy()), Err(AuthError::TokenExpired));
    let mut skewed = policy();
    skewed.clock_skew = 60;
    assert_eq!(run(&c, &skewed), Ok(()));
}

#[test]
fn nbf_is_checked() {
    // jsonwebtoken's Validation has validate_nbf = false by default.
    let c = with(|c| c["nbf"] = json!(NOW.0 + 1));
    assert_eq!(run(&c, &policy()), Err(AuthError::TokenNotYetValid));
    let mut skewed = policy();
    skewed.clock_skew = 1;
    assert_eq!(run(&c, &skewed), Ok(()));
}

#[test]
fn aud_passes_when_no_audiences_are_configured() {
    // jsonwebtoken rejects a token carrying aud when Validation names no audience.
    let mut p = policy();
    p.audiences.clear();
    assert_eq!(run(&with(|c| c["aud"] = json!("anything")), &p), Ok(()));
}

#[test]
fn exp_as_a_string_is_invalid_not_missing() {
    // jsonwebtoken reports a string exp as MissingRequiredClaim.
    let t = hs(&with(|c| c["exp"] = json!("1700000300")));
    assert_eq!(
        portcullis_auth::verify_token(&t, &keys(), true)
            .unwrap_err()
            .reason(),
        "JwtInvalid"
    );
}

// --- time ---

#[test]
fn exp_is_required_unless_the_policy_says_otherwise() {
    let c = with(|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    assert_eq!(run(&c, &policy()).unwrap_err().reason(), "JwtInvalid");
    let mut p = policy();
    p.require_expiration_time = false;
    assert_eq!(run(&c, &p), Ok(()));
}

#[test]
fn fractional_dates_are_compared_as_numbers() {
    assert_eq!(
        run(&with(|c| c["exp"] = json!(NOW.0 as f64 + 0.5)), &policy()),
        Ok(())
    );
    assert_eq!(
        run(&with(|c| c["nbf"] = json!(NOW.0 as f64 + 0.5)), &policy()),
        Err(AuthError::TokenNotYetValid)
    );
}

// --- issuer and audience ---

#[test]
fn issuer_is_an_exact_match() {
    for iss in [
        json!("https://issuer.test"),
        json!("HTTPS://ISSUER.TEST/"),
        json!(1),
    ] {
        let c = with(|c| c["iss"] = iss.clone());
        assert_eq!(
            run(&c, &policy()),
            Err(AuthError::TokenIssuerNotAllowed),
            "{iss}"
        );
    }
    let missing = with(|c| {
        c.as_object_mut().unwrap().remove("iss");
    });
    assert_eq!(
        run(&missing, &policy()),
        Err(AuthError::TokenIssuerNotAllowed)
    );
}

#[test]
fn discovered_issuers_apply_when_the_policy_lists_none() {
    let mut p = policy();
    p.issuers.clear();
    let mut k = keys();
    k.issuers = vec!["https://other.test/".to_owned()].into();
    let t = portcullis_auth::verify_token(&hs(&claims()), &k, true).unwrap();
    assert_eq!(
        check_claims(&Arc::new(t.clone()), &p, &k, NOW).map(|_| ()),
        Err(AuthError::TokenIssuerNotAllowed)
    );
    k.issuers = vec!["https://issuer.test/".to_owned()].into();
    assert_eq!(
        check_claims(&Arc::new(t.clone()), &p, &k, NOW).map(|_| ()),
        Ok(())
    );
    k.issuers = Vec::new().into();
    let c = with(|c| c["iss"] = json!("https://anyone/"));
    let t = portcullis_auth::verify_token(&hs(&c), &k, true).unwrap();
    assert_eq!(
        check_claims(&Arc::new(t.clone()), &p, &k, NOW).map(|_| ()),
        Ok(())
    );
}

#[test]
fn audience_string_or_array_any_of() {
    let ok = with(|c| c["aud"] = json!(["x", "api://orders"]));
    assert_eq!(run(&ok, &policy()), Ok(()));
    let odd = [json!([1, "api://orders"]), json!([null, "api://orders"])];
    let odd = odd.into_iter().chain([json!(["api://orders", ["x"]])]);
    for aud in [json!("api://other"), json!(["x", "y"]), json!([]), json!(1)]
        .into_iter()
        .chain(odd)
    {
        let c = with(|c| c["aud"] = aud.clone());
        assert_eq!(run(&c, &policy()), Err(AuthError::TokenAudienceNotAllowed));
    }
    let missing = with(|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    assert_eq!(
        run(&missing, &policy()),
        Err(AuthError::TokenAudienceNotAllowed)
    );
}

// --- client application ids ---

#[test]
fn client_application_ids_use_azp_then_appid() {
    let mut p = policy();
    p.client_application_ids = vec!["app-1".into()];
    assert_eq!(run(&with(|c| c["azp"] = json!("app-1")), &p), Ok(()));
    assert_eq!(run(&with(|c| c["appid"] = json!("app-1")), &p), Ok(()));
    let err = run(&with(|c| c["azp"] = json!("app-2")), &p).unwrap_err();
    assert_eq!(
        err,
        AuthError::TokenClaimValueNotAllowed {
            claim: "azp".into(),
            value: "app-2".into(),
            kind: ClaimKind::Claim
        }
    );
    assert_eq!(
        run(&claims(), &p).unwrap_err().reason(),
        "TokenClaimValueNotAllowed"
    );
}

// --- required claims ---

fn rule(name: &str, m: Match, sep: Option<&str>, values: &[&str]) -> ClaimRule {
    ClaimRule {
        name: name.into(),
        r#match: m,
        separator: sep.map(str::to_owned),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn missing_required_claims_are_all_named() {
    let mut p = policy();
    p.required_claims = vec![
        rule("tid", Match::All, None, &[]),
        rule("sub", Match::All, None, &[]),
        rule("http://schemas.example/claims/x", Match::All, None, &[]),
    ];
    let err = run(&claims(), &p).unwrap_err();
    assert_eq!(
        err,
        AuthError::TokenClaimNotFound {
            claims: vec!["tid".into(), "http://schemas.example/claims/x".into()]
        }
    );
    assert_eq!(
        err.default_message(),
        "JWT token is missing the following claims: tid, http://schemas.example/claims/x. Access denied."
    );
}

#[test]
fn required_claim_values_all_and_any() {
    let c = with(|c| {
        c["tid"] = json!("tenant-a");
        c["groups"] = json!(["g1", "g2"]);
        c["csv"] = json!("a;b;c");
        c["level"] = json!(3);
        c["admin"] = json!(true);
    });
    let cases = [
        (rule("tid", Match::All, None, &["tenant-a"]), true),
        (rule("tid", Match::All, None, &["tenant-b"]), false),
        (rule("groups", Match::All, None, &["g1", "g2"]), true),
        (rule("groups", Match::All, None, &["g1", "g3"]), false),
        (rule("groups", Match::Any, None, &["g3", "g2"]), true),
        (rule("groups", Match::Any, None, &["g3", "g4"]), false),
        (rule("csv", Match::All, Some(";"), &["a", "c"]), true),
        (rule("csv", Match::All, None, &["a"]), false),
        (rule("level", Match::All, None, &["3"]), true),
        (rule("admin", Match::Any, None, &["true"]), true),
    ];
    for (r, ok) in cases {
        let mut p = policy();
        p.required_claims = vec![r.clone()];
        let result = run(&c, &p);
        assert_eq!(result.is_ok(), ok, "{r:?}: {result:?}");
        if let Err(e) = result {
            assert!(matches!(
                e,
                AuthError::TokenClaimValueNotAllowed {
                    kind: ClaimKind::Claim,
                    ..
                }
            ));
        }
    }
    let err = {
        let mut p = policy();
        p.required_claims = vec![rule("groups", Match::All, None, &["g9"])];
        run(&c, &p).unwrap_err()
    };
    assert_eq!(
        err.default_message(),
        "Claim groups value of g1,g2 is not allowed. Access denied."
    );
}

// --- scopes and roles ---

#[test]
fn scopes_from_scp_then_scope_string_or_array() {
    let mut p = policy();
    p.scopes = Some(ScopesRule {
        r#match: Match::Any,
        values: vec!["orders.read".into()],
    });
    assert_eq!(
        run(&with(|c| c["scp"] = json!("profile orders.read")), &p),
        Ok(())
    );
    assert_eq!(
        run(&with(|c| c["scope"] = json!("orders.read openid")), &p),
        Ok(())
    );
    assert_eq!(
        run(&with(|c| c["scp"] = json!(["orders.read"])), &p),
        Ok(())
    );
    let err = run(&with(|c| c["scp"] = json!("orders.write")), &p).unwrap_err();
    assert!(matches!(
        err,
        AuthError::TokenClaimValueNotAllowed {
            kind: ClaimKind::Scope,
            ..
        }
    ));
    let err = run(&claims(), &p).unwrap_err();
    assert_eq!(
        err,
        AuthError::TokenClaimValueNotAllowed {
            claim: "scope".into(),
            value: String::new(),
            kind: ClaimKind::Scope
        }
    );
    // scp wins over scope even when scope would pass.
    let both = with(|c| {
        c["scp"] = json!("x");
        c["scope"] = json!("orders.read");
    });
    assert!(run(&both, &p).is_err());
}

#[test]
fn roles_by_claim_name_or_dotted_path() {
    let mut p = policy();
    p.roles = Some(RolesRule {
        r#match: Match::All,
        values: vec!["orders-reader".into()],
        claim: "realm_access.roles".into(),
    });
    let keycloak = with(|c| c["realm_access"] = json!({ "roles": ["orders-reader", "x"] }));
    assert_eq!(run(&keycloak, &p), Ok(()));
    let verbatim = with(|c| {
        c["realm_access.roles"] = json!("orders-reader");
        c["realm_access"] = json!({ "roles": ["nope"] });
    });
    assert_eq!(run(&verbatim, &p), Ok(()));
    let err = run(&with(|c| c["realm_access"] = json!({ "roles": [] })), &p).unwrap_err();
    assert!(matches!(
        err,
        AuthError::TokenClaimValueNotAllowed {
            kind: ClaimKind::Role,
            ..
        }
    ));
    p.roles.as_mut().unwrap().claim = "resource_access.orders-api.roles".into();
    let client =
        with(|c| c["resource_access"] = json!({ "orders-api": { "roles": ["orders-reader"] } }));
    assert_eq!(run(&client, &p), Ok(()));
}

#[test]
fn claim_values_view() {
    let claims = portcullis_auth::Claims::parse(
        json!({ "list": ["a", 1, true, null, {"x": 1}], "text": "a b  c" }).to_string(),
    )
    .unwrap();
    assert_eq!(
        ClaimValues::from_claim(claims.get("list").unwrap(), None),
        ClaimValues(vec!["a".into(), "1".into(), "true".into()])
    );
    assert_eq!(
        ClaimValues::from_claim(claims.get("text").unwrap(), Some(" ")),
        ClaimValues(vec!["a".into(), "b".into(), "c".into()])
    );
}

// --- evaluate end to end ---

#[test]
fn evaluate_extracts_verifies_and_checks() {
    let mut headers = http::HeaderMap::new();
    let token = hs(&claims());
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let v = evaluate(&request(&headers, None), &policy(), &keys(), NOW).unwrap();
    assert_eq!(v.token().claims.get("sub").unwrap().as_str(), Some("alice"));
    let later = portcullis_auth::UnixTime(NOW.0 + 301);
    assert_eq!(
        evaluate(&request(&headers, None), &policy(), &keys(), later).unwrap_err(),
        AuthError::TokenExpired
    );
    let empty = http::HeaderMap::new();
    assert_eq!(
        evaluate(&request(&empty, None), &policy(), &keys(), NOW).unwrap_err(),
        AuthError::TokenNotPresent
    );
}

// --- the claim-rule memo of cached tokens (check_claims_memo) ---

fn verified(
    claims: &Value,
    keys: &portcullis_auth::KeySnapshot,
) -> Arc<portcullis_auth::VerifiedToken> {
    Arc::new(portcullis_auth::verify_token(&hs(claims), keys, true).unwrap())
}

#[test]
fn a_memo_never_skips_the_lifetime_and_never_remembers_a_failure() {
    let k = keys();
    let tag = RulesTag::new(0, &k);
    assert!(tag.is_some());
    let t = verified(&claims(), &k);
    assert_eq!(
        check_claims_memo(&t, &policy(), &k, NOW, tag).map(|_| ()),
        Ok(())
    );
    // The rules passed under `tag`; the lifetime is still checked on every call.
    let later = portcullis_auth::UnixTime(NOW.0 + 301);
    assert_eq!(
        check_claims_memo(&t, &policy(), &k, later, tag).map(|_| ()),
        Err(AuthError::TokenExpired)
    );
    // A token failing the audience fails every time: a failure is not remembered.
    let other = verified(&with(|c| c["aud"] = json!("api://other")), &k);
    for _ in 0..2 {
        assert_eq!(
            reason(check_claims_memo(&other, &policy(), &k, NOW, tag)),
            "TokenAudienceNotAllowed"
        );
    }
    // What the memo saves: under a tag it holds, the rules are not read again. (So the caller
    // must never let one policy index name two policies: the proxy's cache lives for one
    // configuration.)
    let mut strict = policy();
    strict.audiences = vec!["api://billing".into()];
    assert_eq!(reason(check_claims_memo(&t, &strict, &k, NOW, tag)), "ok");
    assert_eq!(
        reason(check_claims_memo(&t, &strict, &k, NOW, None)),
        "TokenAudienceNotAllowed"
    );
}

#[test]
fn a_memo_holds_for_one_policy_under_one_key_snapshot() {
    let k = keys();
    let t = verified(&claims(), &k);
    assert_eq!(
        check_claims_memo(&t, &policy(), &k, NOW, RulesTag::new(0, &k)).map(|_| ()),
        Ok(())
    );
    // Another policy (index 1) with another audience: its own rules run and refuse.
    let mut strict = policy();
    strict.audiences = vec!["api://billing".into()];
    assert_eq!(
        reason(check_claims_memo(
            &t,
            &strict,
            &k,
            NOW,
            RulesTag::new(1, &k)
        )),
        "TokenAudienceNotAllowed"
    );
    // The same policy under a new snapshot that discovered another issuer: the issuer rule runs
    // again and refuses.
    let mut open = policy();
    open.issuers.clear();
    let mut first = keys();
    first.issuers = vec!["https://issuer.test/".to_owned()].into();
    let t = verified(&claims(), &first);
    assert_eq!(
        check_claims_memo(&t, &open, &first, NOW, RulesTag::new(0, &first)).map(|_| ()),
        Ok(())
    );
    let mut second = first.clone();
    second.issuers = vec!["https://other.test/".to_owned()].into();
    assert_ne!(
        first.generation, second.generation,
        "a clone is a new snapshot"
    );
    assert_eq!(
        reason(check_claims_memo(
            &t,
            &open,
            &second,
            NOW,
            RulesTag::new(0, &second)
        )),
        "TokenIssuerNotAllowed"
    );
    // And a snapshot without a generation gets no memo at all.
    assert_eq!(
        RulesTag::new(0, &portcullis_auth::KeySnapshot::default()),
        None
    );
    // A copy of a token remembers nothing.
    let copy = Arc::new((*t).clone());
    assert_eq!(
        reason(check_claims_memo(
            &copy,
            &strict,
            &first,
            NOW,
            RulesTag::new(0, &first)
        )),
        "TokenAudienceNotAllowed"
    );
}
