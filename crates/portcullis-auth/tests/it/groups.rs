//! `any-of` requirement groups, `{tenantid}` issuer templates and `tenants`, in the pure core:
//! what the gateway tests show end to end, here with every branch of the closest-group rule and
//! the key-group membership that issuer binding alone would not give.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis_auth::{check_claims, AuthError, DiscoveredIssuers, Requirements, VerifyingKey};
use serde_json::{json, Value};

use crate::support::*;

const SECRET_B: &[u8] = b"another-secret-another-secret-another-secret";
const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn group(issuer: &str, audience: &str) -> Requirements {
    Requirements {
        issuers: vec![issuer.into()],
        audiences: vec![audience.into()],
        ..Requirements::default()
    }
}

/// Key A (group bit 0) and key B (group bit 1), both kid `k`.
fn keys() -> portcullis_auth::KeySnapshot {
    let mut a = VerifyingKey::from_hmac_secret(Some("k".into()), HMAC_SECRET, "a");
    a.groups = 0b01;
    let mut b = VerifyingKey::from_hmac_secret(Some("k".into()), SECRET_B, "b");
    b.groups = 0b10;
    snapshot(vec![a, b])
}

fn token(secret: &[u8], claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        Some("k"),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

fn run(
    secret: &[u8],
    edit: impl FnOnce(&mut Value),
    policy: &portcullis_auth::Policy,
) -> Result<(), AuthError> {
    let mut c = claims();
    edit(&mut c);
    let k = keys();
    let t = portcullis_auth::verify_token(&token(secret, &c), &k, true)?;
    check_claims(&Arc::new(t), policy, &k, NOW).map(|_| ())
}

fn two_groups() -> portcullis_auth::Policy {
    let mut p = policy();
    p.issuers.clear();
    p.audiences.clear();
    p.any_of = vec![
        group("https://a/", "api://a"),
        group("https://b/", "api://b"),
    ];
    p
}

#[test]
fn a_token_must_satisfy_one_group_entirely() {
    let p = two_groups();
    let iss_aud = |iss: &'static str, aud: &'static str| {
        move |c: &mut Value| {
            c["iss"] = json!(iss);
            c["aud"] = json!(aud);
        }
    };
    assert_eq!(
        run(HMAC_SECRET, iss_aud("https://a/", "api://a"), &p),
        Ok(())
    );
    assert_eq!(run(SECRET_B, iss_aud("https://b/", "api://b"), &p), Ok(()));
    // Closest group: the one whose issuer matched, so the audience is the reason.
    assert_eq!(
        run(HMAC_SECRET, iss_aud("https://a/", "api://b"), &p),
        Err(AuthError::TokenAudienceNotAllowed)
    );
    // No group's issuer: the first group's issuer failure.
    assert_eq!(
        run(HMAC_SECRET, iss_aud("https://c/", "api://a"), &p),
        Err(AuthError::TokenIssuerNotAllowed)
    );
}

#[test]
fn a_groups_issuer_is_accepted_only_from_its_own_keys() {
    // Both groups trust issuer X, with different keys and audiences: B's key cannot satisfy A,
    // although it speaks for X (unbound) and A lists X.
    let mut p = two_groups();
    p.any_of = vec![
        group("https://x/", "api://a"),
        group("https://x/", "api://b"),
    ];
    let edit = |c: &mut Value| {
        c["iss"] = json!("https://x/");
        c["aud"] = json!("api://a");
    };
    assert_eq!(run(HMAC_SECRET, edit, &p), Ok(()));
    // Refused: group A does not take B's key; the closest group is B (its key, its issuer),
    // whose audience refuses the token.
    assert_eq!(
        run(SECRET_B, edit, &p),
        Err(AuthError::TokenAudienceNotAllowed)
    );
    // When B's own issuer differs too, B's key fails at the issuer of both groups.
    p.any_of[1] = group("https://y/", "api://a");
    assert_eq!(
        run(SECRET_B, edit, &p),
        Err(AuthError::TokenIssuerNotAllowed)
    );
}

#[test]
fn the_furthest_stage_wins_and_ties_go_to_the_first_group() {
    let mut p = two_groups();
    p.any_of[1].required_claims = vec![portcullis_auth::ClaimRule {
        name: "team".into(),
        r#match: portcullis_auth::Match::All,
        separator: None,
        values: vec!["red".into()],
    }];
    p.any_of[1].issuers = vec!["https://a/".into()];
    p.any_of[1].audiences = vec!["api://a".into()];
    // Group 1 (A's key only): audience fails. Group 2 lists A's issuer but not A's key.
    let edit = |c: &mut Value| {
        c["iss"] = json!("https://a/");
        c["aud"] = json!("api://other");
    };
    assert_eq!(
        run(HMAC_SECRET, edit, &p),
        Err(AuthError::TokenAudienceNotAllowed)
    );
    // B's key, A's issuer and audience, no team: group 1 refuses the key (issuer stage), group 2
    // gets to its required claims: that is the reason.
    let edit = |c: &mut Value| {
        c["iss"] = json!("https://a/");
        c["aud"] = json!("api://a");
    };
    assert_eq!(
        run(SECRET_B, edit, &p),
        Err(AuthError::TokenClaimNotFound {
            claims: vec!["team".into()]
        })
    );
}

#[test]
fn a_group_without_issuers_uses_its_own_discovered_ones_and_fails_closed_while_pending() {
    let mut p = two_groups();
    p.any_of[0].issuers.clear();
    let mut k = keys();
    let edit = json!({ "iss": "https://a/", "aud": "api://a" });
    let mut c = claims();
    c.as_object_mut()
        .unwrap()
        .extend(edit.as_object().unwrap().clone());
    let t = Arc::new(portcullis_auth::verify_token(&token(HMAC_SECRET, &c), &k, true).unwrap());
    // Nothing known about group 0 yet: fail closed.
    assert_eq!(
        check_claims(&t, &p, &k, NOW).map(|_| ()),
        Err(AuthError::KeysUnavailable)
    );
    let discovered = |issuer: &str, pending: bool| DiscoveredIssuers {
        issuers: vec![issuer.into()],
        pending,
    };
    // Group 1's discovered issuer does not count for group 0.
    k.groups = vec![
        discovered("https://b/", false),
        discovered("https://a/", false),
    ]
    .into();
    assert_eq!(
        check_claims(&t, &p, &k, NOW).map(|_| ()),
        Err(AuthError::TokenIssuerNotAllowed)
    );
    k.groups = vec![
        discovered("https://a/", false),
        discovered("https://b/", false),
    ]
    .into();
    assert_eq!(check_claims(&t, &p, &k, NOW).map(|_| ()), Ok(()));
}

#[test]
fn templates_and_tenants_in_the_keyed_form() {
    let mut p = policy();
    p.issuers = vec!["https://login.microsoftonline.com/{tenantid}/v2.0".into()];
    let entra = |tid: &'static str, iss_tid: &'static str| {
        move |c: &mut Value| {
            c["tid"] = json!(tid);
            c["iss"] = json!(format!("https://login.microsoftonline.com/{iss_tid}/v2.0"));
        }
    };
    let other = "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50";
    assert_eq!(run(HMAC_SECRET, entra(TID, TID), &p), Ok(()));
    assert_eq!(
        run(HMAC_SECRET, entra(TID, other), &p),
        Err(AuthError::TokenIssuerNotAllowed)
    );
    p.tenants = vec![other.into()];
    assert_eq!(
        run(HMAC_SECRET, entra(TID, TID), &p),
        Err(AuthError::TokenIssuerNotAllowed)
    );
    assert_eq!(run(HMAC_SECRET, entra(other, other), &p), Ok(()));
}

#[test]
fn a_key_bound_to_a_template_speaks_for_its_tenants_only_through_tid() {
    let mut key = hmac_key(None);
    key = key.bound_to(vec!["https://login.microsoftonline.com/{tenantid}/v2.0".to_owned()].into());
    let iss = format!("https://login.microsoftonline.com/{TID}/v2.0");
    assert!(key.speaks_for(Some(&iss), Some(TID)));
    assert!(!key.speaks_for(Some(&iss), None));
    assert!(!key.speaks_for(Some("https://evil/"), Some(TID)));
}
