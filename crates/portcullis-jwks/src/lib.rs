//! Key sources and the key store: OpenID discovery, JWKS fetching, background refresh, coalesced
//! unknown-kid refetch with cooldown, stale-on-error up to max-stale.
#![warn(missing_docs)]
