//! Per-request token validation against the key store: the auth core's pipeline spelt out step by
//! step (extract, verify, check claims) so that the verified-token cache ([`crate::cache`]) can sit
//! between `verify_token` and `check_claims`, and so that an unknown `kid` triggers exactly one
//! refetch and re-evaluation.

use std::sync::Arc;

use portcullis_auth::{
    check_claims_memo, extract_token, verify_token_decrypting, AuthError, KeySnapshot, Policy,
    RequestParts, UnixTime, Verified,
};

use portcullis_config::PolicyId;

use crate::cache::{CacheKey, TokenCache};
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

/// Wall-clock milliseconds, for rate-limit windows (aligned to the epoch so replicas agree).
#[allow(clippy::disallowed_methods)] // the proxy's clock, as above
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Validate a request under a policy with the policy's current keys; on an unknown `kid`, ask the
/// key store for one (coalesced, cooled-down) refetch and try once more. `at`: the time to judge
/// the token at (`portcullis explain --at`); `None`, as on every live request: the clock.
pub async fn authenticate(
    parts: &RequestParts<'_>,
    policy: &Policy,
    keys: &KeyStore,
    policy_id: PolicyId,
    cache: &TokenCache,
    at: Option<UnixTime>,
) -> Result<Verified, AuthError> {
    let raw = extract_token(parts, &policy.token_source)?;
    let now = at.unwrap_or_else(unix_now);
    let snapshot = keys.snapshot(policy_id);
    let key = cache.key(policy_id, &raw);
    match verify_and_check(&raw, policy, &snapshot, now, cache, key.as_ref()) {
        Err(AuthError::TokenSignatureKeyNotFound { kid: Some(kid) }) => {
            let refreshed = keys.refetch_for_unknown_kid(policy_id, &kid).await;
            // The lookup already missed: verify against the new keys (and cache on success).
            verify_fresh(&raw, policy, &refreshed, now, cache, key.as_ref())
        }
        other => other,
    }
}

/// Signature (or a cache hit whose key is still in `keys`), then claims. The lifetime (`exp`,
/// `nbf`, `iat` with the policy's clock skew) is checked on every request, cached or not; the other
/// rules run on every request too, except on a cache hit for a token that already passed them
/// under this policy and this very key snapshot ([`check_claims_memo`]: their answer could not
/// differ). Only a token that passed both is inserted; failures are never cached.
/// `key` is [`TokenCache::key`] of `raw` for this policy (`None`: cache off).
pub fn verify_and_check(
    raw: &str,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
    cache: &TokenCache,
    key: Option<&CacheKey<'_>>,
) -> Result<Verified, AuthError> {
    if let Some(key) = key {
        if let Some(token) = cache.get(key, keys) {
            return check_claims_memo(&token, policy, keys, now, key.rules_tag(keys));
        }
    }
    verify_fresh(raw, policy, keys, now, cache, key)
}

/// The miss path: signature, claims, insert on success.
fn verify_fresh(
    raw: &str,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
    cache: &TokenCache,
    key: Option<&CacheKey<'_>>,
) -> Result<Verified, AuthError> {
    let token = Arc::new(verify_token_decrypting(
        raw,
        keys,
        &policy.decryption_keys,
        policy.require_signed_tokens,
    )?);
    let tag = key.and_then(|k| k.rules_tag(keys));
    let verified = check_claims_memo(&token, policy, keys, now, tag)?;
    if let Some(key) = key {
        cache.insert(key, &token, now);
    }
    Ok(verified)
}
