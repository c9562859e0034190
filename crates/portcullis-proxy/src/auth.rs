//! Per-request token validation against the key store: the auth core's pipeline spelt out step by
//! step (extract, verify, check claims) so that a verified-token cache can sit between `verify_token`
//! and `check_claims`, and so that an unknown `kid` triggers exactly one refetch and re-evaluation.

use std::sync::Arc;

use portcullis_auth::{
    check_claims, extract_token, verify_token, AuthError, KeySnapshot, Policy, RequestParts,
    UnixTime, VerifiedToken,
};

use crate::KeyStore;

/// Wall-clock seconds for `exp`/`nbf` checks. The proxy's one wall-clock read.
#[allow(clippy::disallowed_methods)] // the single clock read of the proxy; the auth core takes time as data
pub fn unix_now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Validate a request under a policy with the policy's current keys; on an unknown `kid`, ask the
/// key store for one (coalesced, cooled-down) refetch and try once more.
pub async fn authenticate(
    parts: &RequestParts<'_>,
    policy: &Policy,
    keys: &KeyStore,
    policy_idx: usize,
) -> Result<Arc<VerifiedToken>, AuthError> {
    let raw = extract_token(parts, &policy.token_source)?;
    let now = unix_now();
    let snapshot = keys.snapshot(policy_idx);
    match verify_and_check(&raw, policy, &snapshot, now) {
        Err(AuthError::TokenSignatureKeyNotFound { kid: Some(kid) }) => {
            let refreshed = keys.refetch_for_unknown_kid(policy_idx, &kid).await;
            verify_and_check(&raw, policy, &refreshed, now)
        }
        other => other,
    }
}

/// Signature, then claims. The verified-token cache (keyed by the whole token, bounded by `exp`)
/// goes in front of `verify_token` here; `check_claims` always runs.
fn verify_and_check(
    raw: &str,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
) -> Result<Arc<VerifiedToken>, AuthError> {
    let token = Arc::new(verify_token(raw, keys, policy.require_signed_tokens)?);
    check_claims(&token, policy, keys, now)?;
    Ok(token)
}
