//! On-behalf-of: Entra's OBO flow, the jwt-bearer grant with `requested_token_use=on_behalf_of`.
//! A confidential client (the BFF, a middle-tier API) that received a user's access token
//! exchanges it for a token to a downstream resource, for the same user, so the downstream API
//! (and the gateway in front of it) sees who the user is and which app acts for them.
//!
//! The assertion must be a token this server issued (verified against its own published keys,
//! with each JWK's `alg` honoured, and one of its issuers), unexpired, to the calling client (its
//! `aud` is the client id or one of its `identifier-uris`) and about a user (not an application
//! token). The client must be confidential and list the target in `on-behalf-of`. Failures answer
//! as Entra does: `invalid_grant` with the AADSTS code for the assertion's fault,
//! `unauthorized_client` when the client may not do this.

use serde_json::{Map, Value};

use crate::assertion::{self, AssertionError};
use crate::config::Client;
use crate::grants::{resolve_target, respond, Grant, OAuthError, TokenRequest};
use crate::profile::Profile;
use crate::state::Idp;

/// Identity claims of the assertion that the new token keeps (names, object and tenant id).
const KEPT_CLAIMS: &[&str] = &[
    "oid",
    "tid",
    "name",
    "given_name",
    "family_name",
    "email",
    "upn",
];

/// Handles a jwt-bearer request that carries `requested_token_use` (its value `usage`), for an
/// authenticated `client`.
pub fn exchange(
    idp: &Idp,
    req: &TokenRequest,
    client: &Client,
    strength: &'static str,
    usage: &str,
    now: u64,
) -> Result<Value, OAuthError> {
    if usage != "on_behalf_of" {
        return Err(OAuthError::new(
            "invalid_request",
            format!("requested_token_use {usage:?} is not supported (on_behalf_of is)"),
        ));
    }
    if strength == "0" {
        return Err(OAuthError::client(
            "AADSTS7000218: the on-behalf-of flow needs a confidential client: send \
             client_secret or client_assertion",
            false,
        ));
    }
    if client.on_behalf_of.is_empty() {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!(
                "client {} may not use the on-behalf-of flow (its on-behalf-of lists no resource)",
                client.client_id
            ),
        ));
    }
    let claims = verify_assertion(idp, req.require("assertion")?, client, now)?;
    let (resource, scopes) = resolve_target(idp, req, client)?;
    if !client.may_act_for(resource) {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!(
                "client {} may not get tokens for {} on behalf of users (not in its on-behalf-of)",
                client.client_id, resource.name
            ),
        ));
    }
    let grant = user_grant(idp, client, &claims);
    respond(idp, client, strength, grant, resource, scopes, now)
}

fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

/// The assertion's claims once it is known to be this server's unexpired user token to `client`.
fn verify_assertion(
    idp: &Idp,
    assertion: &str,
    client: &Client,
    now: u64,
) -> Result<Map<String, Value>, OAuthError> {
    let invalid = |code, msg: String| OAuthError::entra("invalid_grant", code, msg);
    let ring = idp.ring();
    let claims =
        assertion::verify(assertion, ring.verify_keys(), now as f64).map_err(|e| match e {
            AssertionError::Malformed(m) => {
                invalid(50027, format!("JWT token is invalid or malformed: {m}"))
            }
            AssertionError::Signature => invalid(
                50013,
                "Assertion failed signature validation: it was not signed by a key this server \
                 publishes"
                    .into(),
            ),
            AssertionError::Expired | AssertionError::NotYetValid | AssertionError::NoExpiry => {
                invalid(
                    500133,
                    format!("Assertion is not within its valid time range ({e})"),
                )
            }
        })?;
    let tenant = text(&claims, "tid").unwrap_or(&idp.config.tenant_id);
    let issuer = text(&claims, "iss").unwrap_or_default();
    let ours = [Profile::Plain, Profile::EntraV1, Profile::EntraV2]
        .map(|p| idp.issuers.for_profile(p, tenant));
    if !ours.iter().any(|i| i == issuer) {
        return Err(invalid(
            50013,
            format!("Assertion issuer {issuer:?} is not this server"),
        ));
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.iter().any(|a| client.is_audience(a)) {
        return Err(invalid(
            500131,
            format!(
                "Assertion audience does not match the Client app presenting the assertion. The \
                 audience in the assertion was '{}' and the expected audience is '{}' or one of \
                 its identifier-uris",
                auds.join(" "),
                client.client_id
            ),
        ));
    }
    let subject = text(&claims, "sub").unwrap_or_default();
    let app = ["azp", "appid", "client_id"]
        .iter()
        .any(|c| text(&claims, c) == Some(subject));
    if subject.is_empty() || app || text(&claims, "idtyp") == Some("app") {
        return Err(OAuthError::new(
            "invalid_grant",
            "the assertion is an application token (no user): on-behalf-of exchanges a user's \
             token",
        ));
    }
    Ok(claims)
}

/// The user the new token is about: a configured user (by `sub`) keeps their profile, claims and
/// roles for the target resource; anyone else keeps the assertion's identity claims and gets no
/// roles (the assertion's were for the calling client, not the target).
fn user_grant<'a>(idp: &'a Idp, client: &Client, claims: &Map<String, Value>) -> Grant<'a> {
    let subject = text(claims, "sub").unwrap_or_default().to_owned();
    let user = idp.config.user(&subject);
    let mut extra = client.claims.clone();
    for name in KEPT_CLAIMS {
        if let Some(v) = claims.get(*name) {
            extra.insert((*name).to_owned(), v.clone());
        }
    }
    if let Some(u) = user {
        extra.extend(u.claims.clone());
    }
    let username = user.map(|u| u.username.clone()).or_else(|| {
        ["preferred_username", "unique_name", "upn"]
            .iter()
            .find_map(|c| text(claims, c).map(str::to_owned))
    });
    Grant {
        subject,
        username,
        user,
        roles: Vec::new(),
        claims: extra,
        profile: user
            .and_then(|u| u.profile)
            .or(client.profile)
            .unwrap_or(idp.config.profile),
        refreshable: true,
        app_only: false,
    }
}
