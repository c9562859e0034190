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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::json::{Claim, Claims, Elements};
use crate::Verified;
use crate::{AuthError, ClaimKind, ClaimRule, KeySnapshot, Match, Policy, UnixTime, VerifiedToken};

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
///
/// With `any-of`, the issuer, audience and required-claims rules are those of one group, and the
/// token must satisfy one group entirely (with a key of that group); otherwise the failure is
/// that of the closest group ([`check_any_of`]). Lifetime, scopes and roles are the policy's.
pub fn check_claims(
    token: &Arc<VerifiedToken>,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
) -> Result<Verified, AuthError> {
    check_lifetime(token, policy, now)?;
    if policy.any_of.is_empty() {
        let rules = Rules {
            issuers: &policy.issuers,
            tenants: &policy.tenants,
            audiences: &policy.audiences,
            client_application_ids: &policy.client_application_ids,
            required_claims: &policy.required_claims,
            group: None,
        };
        rules.check(token, keys).map_err(|(_, e)| e)?;
    } else {
        check_any_of(token, policy, keys)?;
    }
    let claims = &token.claims;
    check_scopes(claims, policy)?;
    check_roles(claims, policy)?;
    Ok(Verified {
        token: Arc::clone(token),
    })
}

/// What a claim-rule memo is tied to: one policy (by its index in the configuration the caller's
/// cache serves) under one key snapshot ([`KeySnapshot::generation`], never shared by two
/// snapshots).
///
/// Why a memo is sound: the rules other than the lifetime (issuer with its tenant and key binding,
/// audience, client application, required claims, `any-of` groups, scopes, roles) read nothing but
/// the token's claims and key, the policy and the key snapshot, all immutable. So the answer they
/// gave for one (token, policy, snapshot) is the answer they give again, and a token-cache hit
/// under the same policy and the same snapshot need not read the claims again (under load they are
/// memory the core no longer holds: issue 17). A new snapshot (a key refresh, a discovered issuer)
/// has a new generation and runs every rule again; the lifetime (`exp`, `nbf`, `iat` with the
/// clock skew) is checked on every request. The caller guarantees that an index names one policy
/// for as long as the tokens it checks live (the proxy's token cache lives for one configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulesTag(u64);

impl RulesTag {
    /// Bits of the tag that hold the policy index.
    const POLICY_BITS: u32 = 16;

    /// The tag of `policy_index` under `keys`; `None` (no memo: every rule runs) for a snapshot
    /// without a generation, or numbers too large to pack.
    pub fn new(policy_index: usize, keys: &KeySnapshot) -> Option<RulesTag> {
        let index = u64::try_from(policy_index).ok()?;
        let generation = keys.generation.get();
        if generation == 0
            || index >= 1 << Self::POLICY_BITS
            || generation >= 1 << (64 - Self::POLICY_BITS)
        {
            return None;
        }
        Some(RulesTag(generation << Self::POLICY_BITS | index))
    }
}

/// A token's claim-rule memo: the [`RulesTag`] it last passed every rule under (`0`: none). Only
/// [`check_claims_memo`] writes it, after the rules passed.
#[derive(Debug, Default)]
pub struct RulesMemo(AtomicU64);

impl Clone for RulesMemo {
    /// A copy remembers nothing.
    fn clone(&self) -> RulesMemo {
        RulesMemo::default()
    }
}

impl RulesMemo {
    /// Whether the token passed every rule under `tag`. Relaxed: the memo publishes no other
    /// memory, and a stale read only means the rules run once more.
    fn holds(&self, tag: RulesTag) -> bool {
        self.0.load(Ordering::Relaxed) == tag.0
    }

    fn set(&self, tag: RulesTag) {
        if !self.holds(tag) {
            self.0.store(tag.0, Ordering::Relaxed);
        }
    }
}

/// [`check_claims`] with a memo: when `token` already passed the rules under `tag`, only the
/// lifetime is checked (against `now`, with the clock skew); otherwise every rule runs and a pass
/// is remembered under `tag`. `tag: None` is [`check_claims`]. The answer is
/// [`check_claims`]'s in every case (see [`RulesTag`] for why).
pub fn check_claims_memo(
    token: &Arc<VerifiedToken>,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
    tag: Option<RulesTag>,
) -> Result<Verified, AuthError> {
    let Some(tag) = tag else {
        return check_claims(token, policy, keys, now);
    };
    if token.rules_passed.holds(tag) {
        check_lifetime(token, policy, now)?;
        return Ok(Verified {
            token: Arc::clone(token),
        });
    }
    let verified = check_claims(token, policy, keys, now)?;
    token.rules_passed.set(tag);
    Ok(verified)
}

/// The rules of one requirement group: the policy's own (the keyed form), or one `any-of` entry.
struct Rules<'p> {
    issuers: &'p [String],
    tenants: &'p [String],
    audiences: &'p [String],
    client_application_ids: &'p [String],
    required_claims: &'p [ClaimRule],
    /// The `any-of` group index; `None` for the policy's single group.
    group: Option<usize>,
}

/// How far a token got through a group's rules before one failed: the closest group is the one
/// that got furthest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Issuer,
    Audience,
    ClientApplication,
    RequiredClaims,
}

impl Rules<'_> {
    /// Issuer (with tenants and the key binding), audience, client application, required claims,
    /// in that order; a failure says at which stage.
    fn check(&self, token: &VerifiedToken, keys: &KeySnapshot) -> Result<(), (Stage, AuthError)> {
        let claims = &token.claims;
        check_issuer(token, self, keys).map_err(|e| (Stage::Issuer, e))?;
        check_audience(claims, self.audiences).map_err(|e| (Stage::Audience, e))?;
        check_client_application(claims, self.client_application_ids)
            .map_err(|e| (Stage::ClientApplication, e))?;
        check_required_claims(claims, self.required_claims).map_err(|e| (Stage::RequiredClaims, e))
    }
}

/// `any-of`: the first group the token satisfies entirely lets it through. Otherwise the failure
/// of the closest group: the one whose rules the token got furthest through (issuer, then
/// audience, then required claims), the first listed among equals. So a token of issuer A with
/// B's audience fails with A's audience failure, and a token no group's issuer (or keys) accept
/// fails with the first group's issuer failure.
fn check_any_of(
    token: &VerifiedToken,
    policy: &Policy,
    keys: &KeySnapshot,
) -> Result<(), AuthError> {
    let mut closest: Option<(Stage, AuthError)> = None;
    for (g, group) in policy.any_of.iter().enumerate() {
        let rules = Rules {
            issuers: &group.issuers,
            tenants: &group.tenants,
            audiences: &group.audiences,
            client_application_ids: &[],
            required_claims: &group.required_claims,
            group: Some(g),
        };
        match rules.check(token, keys) {
            Ok(()) => return Ok(()),
            Err(failure) => {
                if closest.as_ref().is_none_or(|(stage, _)| failure.0 > *stage) {
                    closest = Some(failure);
                }
            }
        }
    }
    Err(closest.map_or(AuthError::TokenIssuerNotAllowed, |(_, e)| e))
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

/// Against the group's issuers, else its discovered ones; neither: not checked. An issuer is an
/// exact string or a `{tenantid}` template matched with the token's `tid`
/// ([`crate::issuer_matches`]). While a discovery issuer is still unknown (and the group lists
/// none), a token whose `iss` is not among the known ones fails closed with `KeysUnavailable`.
/// Then `tenants`, when listed, must hold the token's `tid`. Then the key that verified the token
/// must speak for its `iss` (keys of a discovery document are bound to its issuer, so one
/// identity provider's key cannot mint tokens in another's name) and, under `any-of`, belong to
/// the group.
fn check_issuer(
    token: &VerifiedToken,
    rules: &Rules<'_>,
    keys: &KeySnapshot,
) -> Result<(), AuthError> {
    let iss = token.claims.get("iss").and_then(Claim::as_str);
    let tid = token.claims.get("tid").and_then(Claim::as_str);
    let discovered = rules.issuers.is_empty();
    let (allowed, pending): (&[String], bool) = match (discovered, rules.group) {
        (false, _) => (rules.issuers, false),
        (true, None) => (&keys.issuers, keys.issuers_pending),
        (true, Some(g)) => keys
            .groups
            .get(g)
            .map_or((&[], true), |d| (&d.issuers, d.pending)),
    };
    let listed = iss.is_some_and(|iss| allowed.iter().any(|a| crate::issuer_matches(a, iss, tid)));
    if !listed {
        if pending {
            return Err(AuthError::KeysUnavailable);
        }
        if !allowed.is_empty() {
            return Err(AuthError::TokenIssuerNotAllowed);
        }
    }
    let tenant_listed =
        rules.tenants.is_empty() || tid.is_some_and(|tid| rules.tenants.iter().any(|t| t == tid));
    if !tenant_listed {
        return Err(AuthError::TokenIssuerNotAllowed);
    }
    if key_speaks_for(token, keys, rules.group, iss, tid) {
        Ok(())
    } else {
        Err(AuthError::TokenIssuerNotAllowed)
    }
}

/// Whether a key of the snapshot with the material that verified the token speaks for `iss` (and,
/// under `any-of`, was published by the group's own sources). Unsigned tokens (accepted only
/// under `require-signed-tokens: false`) have no key to ask. The same material may be published
/// by several sources: any of them speaking for `iss` is enough. No such key in the snapshot at
/// all: refused (fail closed).
fn key_speaks_for(
    token: &VerifiedToken,
    keys: &KeySnapshot,
    group: Option<usize>,
    iss: Option<&str>,
    tid: Option<&str>,
) -> bool {
    let Some(fingerprint) = token.key_fingerprint else {
        return true;
    };
    keys.keys.iter().any(|k| {
        k.fingerprint == fingerprint
            && group.is_none_or(|g| k.in_group(g))
            && k.speaks_for(iss, tid)
    })
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
    // RFC 7519 4.1.3: a string or an array of strings. An array holding anything else is not an
    // audience claim, whatever else it lists (no IdP writes one; a token that does is refused).
    let ok = match aud.as_str() {
        Some(aud) => allowed(aud),
        None => {
            aud.elements().all(|e| e.as_str().is_some())
                && aud.elements().filter_map(Claim::as_str).any(allowed)
        }
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
fn check_required_claims(claims: &Claims, rules: &[ClaimRule]) -> Result<(), AuthError> {
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
