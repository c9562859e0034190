//! Key sources and the key store: OpenID discovery, JWKS fetching, background refresh, coalesced
//! unknown-kid refetch with cooldown, stale-on-error up to max-stale.
//!
//! Why this crate exists: signing keys live at the identity provider and change over time, while
//! the auth core ([`portcullis_auth`]) is pure and wants an immutable [`portcullis_auth::KeySnapshot`].
//! This crate does the network side: it turns the config model's key sources into per-policy
//! snapshots published lock-free, keeps them fresh, survives identity-provider outages up to a
//! bound, and protects the identity provider from floods of made-up `kid`s. No pingora here: the
//! proxy wraps [`KeyStore::run`] in its background service. The behaviour and every knob are
//! described in `docs/key-lifecycle.md`.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod fetch;
mod metrics;
mod schedule;
mod source;
mod store;

pub use fetch::{FetchError, FetchOptions};
pub use schedule::RefreshBounds;
pub use store::{JwksError, KeyStore, KeyStoreOptions};
