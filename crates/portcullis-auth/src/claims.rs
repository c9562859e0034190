//! Claim rules applied after the signature: exp/nbf with clock skew, issuer, audience,
//! client-application-ids, required-claims, scopes, roles. Cheap enough to run on every request,
//! including token-cache hits.

use crate::{AuthError, KeySnapshot, Policy, UnixTime, VerifiedToken};

/// A claim seen as a list of strings (string split by a separator, array of strings, scalar as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimValues(pub Vec<String>);

/// Apply the policy's time and claim rules to a verified token.
pub fn check_claims(
    token: &VerifiedToken,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
) -> Result<(), AuthError> {
    todo!("{token:?} {policy:?} {keys:?} {now:?}")
}
