//! The sans-I/O core of Portcullis: extract a token from request parts, verify it against a key
//! snapshot, apply a policy's claim rules, and turn claims into header values.
//!
//! Why it is shaped like this: every decision that lets a request through is made here, so it must be
//! testable without sockets, files or a clock. Time is passed in ([`UnixTime`]), keys arrive as an
//! immutable [`KeySnapshot`], and failures are typed ([`AuthError`]) and mapped to the client response
//! in exactly one place ([`failure_response`]).
//!
//! The verification pipeline is split in two so a verified-token cache can sit between the halves:
//! [`verify_token`] (parse once + signature, policy-independent apart from the key snapshot) and
//! [`check_claims`] (time, issuer, audience, required claims, scopes, roles; cheap, runs on every
//! request, cached or not; on a cache hit [`check_claims_memo`] skips the rules other than the
//! lifetime when the token passed them under the same policy and key snapshot). [`evaluate`]
//! composes token extraction and both halves.

#![warn(missing_docs)]

mod b64;
pub mod claims;
pub mod error;
pub mod headers;
pub mod issuer;
pub mod json;
pub mod jwe;
pub mod keys;
pub mod policy;
pub mod response;
mod sig;
pub mod time;
pub mod token;

pub use claims::{check_claims, check_claims_memo, ClaimValues, RulesMemo, RulesTag};
pub use error::{AuthError, ClaimKind};
pub use headers::{
    claim_header_value, claim_headers, claim_to_header_value, forward_headers, Unforwardable,
};
pub use issuer::{is_template, is_tenant_id, issuer_matches, TENANT_PLACEHOLDER};
pub use json::{Claim, Claims};
pub use jwe::{ContentEncryption, DecryptionKey, DecryptionKeys, KeyManagement};
pub use keys::{
    parse_jwks, DiscoveredIssuers, Generation, KeyError, KeyFamily, KeySnapshot, ParsedJwks,
    SkippedKey, VerifyingKey,
};
pub use policy::{
    ClaimRule, Match, Policy, Requirements, RolesRule, ScopesRule, TokenSource, DEFAULT_ROLES_CLAIM,
};
pub use response::{failure_response, FailureResponse};
pub use time::UnixTime;
pub use token::{
    extract_token, query_without_param, verify_signature, verify_token, verify_token_decrypting,
    JoseAlg, RequestParts, VerifiedJws, VerifiedToken, MAX_HEADER_BYTES, MAX_HEADER_MEMBERS,
    MAX_TOKEN_BYTES,
};

use std::sync::Arc;

/// A token that passed the signature check **and** the policy's time and claim rules: made only by
/// [`check_claims`] and [`check_claims_memo`] (so by [`evaluate`] too), the only value that may
/// feed `forward-claims` and claim-keyed rate limits. ([`VerifiedToken`] is the earlier stage:
/// signature checked, rules not yet applied.)
#[derive(Debug, Clone)]
pub struct Verified {
    token: Arc<VerifiedToken>,
}

impl Verified {
    /// The token (claims parsed once). Shared with the token cache.
    pub fn token(&self) -> &Arc<VerifiedToken> {
        &self.token
    }
}

/// Read access to the token's claims and metadata; there is no way back from a token to a
/// `Verified` but [`check_claims`] (or [`check_claims_memo`]).
impl std::ops::Deref for Verified {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        &self.token
    }
}

/// Full evaluation of one request against one policy: extract, verify, check claims.
///
/// `now` is the caller's clock reading; the core never reads the system clock.
pub fn evaluate(
    req: &RequestParts<'_>,
    policy: &Policy,
    keys: &KeySnapshot,
    now: UnixTime,
) -> Result<Verified, AuthError> {
    let raw = extract_token(req, &policy.token_source)?;
    let token = Arc::new(verify_token_decrypting(
        &raw,
        keys,
        &policy.decryption_keys,
        policy.require_signed_tokens,
    )?);
    check_claims(&token, policy, keys, now)
}
