//! Claim rules applied after the signature: exp/nbf with clock skew, issuer, audience,
//! client-application-ids, required-claims, scopes, roles. Cheap enough to run on every request,
//! including token-cache hits: values are compared in place, and text is only built for an error.
//!
//! Every jsonwebtoken `Validation` default the contract overrides is decided here, because we do
//! not use `Validation` at all: leeway is `clock-skew` (default 0, jsonwebtoken: 60 s); `nbf` is
//! always checked (jsonwebtoken: off); `aud` is only checked when the policy lists audiences
//! (jsonwebtoken rejects any token carrying `aud` when none is configured); a non-numeric `exp` is
//! `JwtInvalid` (rejected in `verify_token`; jsonwebtoken reports a missing claim).

use std::borrow::Cow;

use std::sync::Arc;

use crate::json::{Claim, Claims, Elements};
use crate::Verified;
use crate::{AuthError, ClaimKind, KeySnapshot, Match, Policy, UnixTime, VerifiedToken};

/// A claim seen as a list of strings (string split by a separator, array of strings, scalar as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimValues(pub Vec<String>);

impl ClaimValues {
    /// The values of a claim: a string (split by `separator` when given), an array element-wise,
    /// numbers and booleans as text; `null`, objects and nested arrays yield nothing.
    pub fn from_claim(value: Claim<'_>, separator: Option<&str>) -> ClaimValues {
        ClaimValues(
            claim_values(value, separator)
                .map(Cow::into_owned)
                .collect(),
        )
    }
}

/// Iterate over a claim's values without allocating (numbers are the exception: their text is
/// built). An enum rather than a boxed iterator: this runs for every rule of every request.
fn claim_values<'v>(value: Claim<'v>, separator: Option<&'v str>) -> ClaimIter<'v> {
    if value.is_array() {
        return ClaimIter::Array(value.elements());
    }
    let (Some(s), Some(sep)) = (value.as_str(), separator) else {
        return ClaimIter::One(scalar_text(value));
    };
    let mut chars = sep.chars();
    match (chars.next(), chars.next()) {
        // A one-character separator (the usual space or comma) splits on the char: memchr, not
        // the substring searcher.
        (Some(c), None) => ClaimIter::SplitChar(s.split(c)),
        (Some(_), Some(_)) => ClaimIter::Split(s.split(sep)),
        (None, _) => ClaimIter::One(scalar_text(value)),
    }
}

/// The values of one claim, see [`claim_values`].
enum ClaimIter<'v> {
    /// Array elements that are scalars.
    Array(Elements<'v>),
    /// A string split by the separator: trimmed, empty parts skipped.
    Split(std::str::Split<'v, &'v str>),
    /// The same, split by a one-character separator.
    SplitChar(std::str::Split<'v, char>),
    /// A single value (or none).
    One(Option<Cow<'v, str>>),
}

impl<'v> Iterator for ClaimIter<'v> {
    type Item = Cow<'v, str>;

    fn next(&mut self) -> Option<Cow<'v, str>> {
        match self {
            ClaimIter::Array(items) => items.find_map(scalar_text),
            ClaimIter::Split(parts) => next_part(parts),
            ClaimIter::SplitChar(parts) => next_part(parts),
            ClaimIter::One(value) => value.take(),
        }
    }
}

/// The next part of a split string: trimmed, empty parts skipped.
fn next_part<'v>(parts: &mut impl Iterator<Item = &'v str>) -> Option<Cow<'v, str>> {
    parts
        .map(str::trim)
        .find(|v| !v.is_empty())
        .map(Cow::Borrowed)
}

/// A scalar as text: strings as they are, numbers and booleans as JSON text.
fn scalar_text(value: Claim<'_>) -> Option<Cow<'_, str>> {
    if let Some(s) = value.as_str() {
        return Some(Cow::Borrowed(s));
    }
    if let Some(n) = value.as_number() {
        return Some(Cow::Owned(n.to_string()));
    }
    value
        .as_bool()
        .map(|b| Cow::Borrowed(if b { "true" } else { "false" }))
}

/// Whether the claim's values satisfy `wanted` under `m` (all: every wanted value present; any: one).
fn values_match(value: Claim<'_>, separator: Option<&str>, m: Match, wanted: &[String]) -> bool {
    let present = |w: &String| claim_values(value, separator).any(|v| v == w.as_str());
    match m {
        Match::All => wanted.iter().all(present),
        Match::Any => wanted.iter().any(present),
    }
}

fn not_allowed(claim: &str, value: Option<Claim<'_>>, kind: ClaimKind) -> AuthError {
    let value = value
        .map(|v| ClaimValues::from_claim(v, None).0.join(","))
        .unwrap_or_default();
    AuthError::TokenClaimValueNotAllowed {
        claim: claim.to_owned(),
        value,
        kind,
    }
}

/// Apply the policy's time and claim rules to a token whose signature was checked. The only way to
/// get a [`Verified`]: what `forward-claims` and claim-keyed rate limits read.
pub fn check_claims(
    token: &Arc<VerifiedToken>,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
) -> Result<Verified, AuthError> {
    check_lifetime(token, policy, now)?;
    check_issuer(token, policy, keys)?;
    let claims = &token.claims;
    check_audience(claims, &policy.audiences)?;
    check_client_application(claims, &policy.client_application_ids)?;
    check_required_claims(claims, policy)?;
    check_scopes(claims, policy)?;
    check_roles(claims, policy)?;
    Ok(Verified {
        token: Arc::clone(token),
    })
}

/// exp (required per policy), nbf and iat, all with clock skew: expired when `now >= exp + skew`,
/// not yet valid when `nbf > now + skew`, or when `iat` falls in a second later than `now + skew`
/// (a token issued in the future was minted by a clock that is wrong, or by someone pre-minting
/// tokens; `iat` is compared by whole seconds because `now` is, so a token issued earlier in the
/// current second is never refused).
fn check_lifetime(token: &VerifiedToken, policy: &Policy, now: UnixTime) -> Result<(), AuthError> {
    let now = now.secs() as f64;
    let skew = policy.clock_skew as f64;
    match token.exp {
        Some(exp) if now >= exp + skew => return Err(AuthError::TokenExpired),
        None if policy.require_expiration_time => {
            return Err(AuthError::JwtInvalid {
                detail: "missing exp",
            })
        }
        _ => {}
    }
    let not_yet_valid = token.nbf.is_some_and(|nbf| nbf > now + skew)
        || token.iat.is_some_and(|iat| iat.floor() > now + skew);
    if not_yet_valid {
        Err(AuthError::TokenNotYetValid)
    } else {
        Ok(())
    }
}

/// Exact match against the policy's issuers, else the discovered ones; neither: not checked.
/// While a discovery issuer is still unknown (and the policy lists none), a token whose `iss` is
/// not among the known ones fails closed with `KeysUnavailable`. Then the key that verified the
/// token must speak for its `iss` (keys of a discovery document are bound to its issuer, so one
/// identity provider's key cannot mint tokens in another's name).
fn check_issuer(
    token: &VerifiedToken,
    policy: &Policy,
    keys: &KeySnapshot,
) -> Result<(), AuthError> {
    let iss = token.claims.get("iss").and_then(Claim::as_str);
    let discovered = policy.issuers.is_empty();
    let allowed: &[String] = if discovered {
        &keys.issuers
    } else {
        &policy.issuers
    };
    let listed = iss.is_some_and(|iss| allowed.iter().any(|a| a == iss));
    if !listed {
        if discovered && keys.issuers_pending {
            return Err(AuthError::KeysUnavailable);
        }
        if !allowed.is_empty() {
            return Err(AuthError::TokenIssuerNotAllowed);
        }
    }
    if key_speaks_for(token, keys, iss) {
        Ok(())
    } else {
        Err(AuthError::TokenIssuerNotAllowed)
    }
}

/// Whether a key of the snapshot with the material that verified the token speaks for `iss`.
/// Unsigned tokens (accepted only under `require-signed-tokens: false`) have no key to ask.
/// The same material may be published by several sources: any of them speaking for `iss` is
/// enough. No such key in the snapshot at all: refused (fail closed).
fn key_speaks_for(token: &VerifiedToken, keys: &KeySnapshot, iss: Option<&str>) -> bool {
    let Some(fingerprint) = token.key_fingerprint else {
        return true;
    };
    keys.keys
        .iter()
        .any(|k| k.fingerprint == fingerprint && k.speaks_for(iss))
}

/// `aud` (a string or an array of strings) must contain one of the audiences, when any are given.
fn check_audience(claims: &Claims, audiences: &[String]) -> Result<(), AuthError> {
    if audiences.is_empty() {
        return Ok(());
    }
    let Some(aud) = claims.get("aud") else {
        return Err(AuthError::TokenAudienceNotAllowed);
    };
    let allowed = |aud: &str| audiences.iter().any(|a| a == aud);
    let ok = match aud.as_str() {
        Some(aud) => allowed(aud),
        None => aud.elements().filter_map(Claim::as_str).any(allowed),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::TokenAudienceNotAllowed)
    }
}

/// validate-azure-ad-token's client-application-ids: `azp` (v2), else `appid` (v1).
fn check_client_application(claims: &Claims, ids: &[String]) -> Result<(), AuthError> {
    if ids.is_empty() {
        return Ok(());
    }
    let (name, value) = match claims.get("azp") {
        Some(v) => ("azp", Some(v)),
        None => ("appid", claims.get("appid")),
    };
    match value.and_then(Claim::as_str) {
        Some(id) if ids.iter().any(|a| a == id) => Ok(()),
        _ => Err(not_allowed(name, value, ClaimKind::Claim)),
    }
}

/// A required claim's value: `null` counts as absent (a claim set to `null` asserts nothing, and
/// some issuers emit `"tid": null` rather than leaving the claim out).
fn present<'c>(claims: &'c Claims, name: &str) -> Option<Claim<'c>> {
    claims.lookup(name).filter(|v| !v.is_null())
}

/// required-claims: every missing (or `null`) claim is named in one error; then each rule's values.
fn check_required_claims(claims: &Claims, policy: &Policy) -> Result<(), AuthError> {
    let rules = &policy.required_claims;
    if rules.iter().any(|r| present(claims, &r.name).is_none()) {
        let missing = rules
            .iter()
            .filter(|r| present(claims, &r.name).is_none())
            .map(|r| r.name.clone())
            .collect();
        return Err(AuthError::TokenClaimNotFound { claims: missing });
    }
    for rule in rules.iter().filter(|r| !r.values.is_empty()) {
        let value = present(claims, &rule.name);
        let ok = value.is_some_and(|v| {
            values_match(v, rule.separator.as_deref(), rule.r#match, &rule.values)
        });
        if !ok {
            return Err(not_allowed(&rule.name, value, ClaimKind::Claim));
        }
    }
    Ok(())
}

/// scopes: claim `scp`, else `scope`; a space-separated string or an array.
fn check_scopes(claims: &Claims, policy: &Policy) -> Result<(), AuthError> {
    let Some(rule) = &policy.scopes else {
        return Ok(());
    };
    let (name, value) = match claims.get("scp") {
        Some(v) => ("scp", Some(v)),
        None => ("scope", claims.get("scope")),
    };
    let ok = value.is_some_and(|v| values_match(v, Some(" "), rule.r#match, &rule.values));
    if ok {
        Ok(())
    } else {
        Err(not_allowed(name, value, ClaimKind::Scope))
    }
}

/// roles: the configured claim (verbatim name first, then dotted path); an array or a string.
fn check_roles(claims: &Claims, policy: &Policy) -> Result<(), AuthError> {
    let Some(rule) = &policy.roles else {
        return Ok(());
    };
    let value = claims.lookup(&rule.claim);
    let ok = value.is_some_and(|v| values_match(v, None, rule.r#match, &rule.values));
    if ok {
        Ok(())
    } else {
        Err(not_allowed(&rule.claim, value, ClaimKind::Role))
    }
}
