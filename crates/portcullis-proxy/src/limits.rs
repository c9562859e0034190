//! Counters for `rate-limit`, `rate-limit-by-key` and `quota-by-key`: the window arithmetic
//! ([`decide`]), the in-process store ([`LocalStore`]), the Redis store ([`RedisStore`], see
//! `redis_store.rs`) and the [`Store`] the gateway holds (one of them, chosen at start by
//! `server.rate-limit-store`; it outlives config reloads).
//!
//! **Semantics.** A rate limit is a sliding window of `renewal-period` seconds (APIM documents a
//! sliding window), approximated the way Cloudflare and nginx-style limiters do: counters of the
//! current and the previous fixed window (aligned to the Unix epoch, so replicas and Redis agree),
//! the previous one weighted by how much of it still overlaps the sliding window. Exact within a
//! key's first window (`calls` pass, the next is refused), and never more than `calls` within one
//! fixed window; across a window edge the estimate assumes the previous window's calls were spread
//! evenly, so bursts on both sides of an edge can admit up to `calls` more within one sliding
//! period than a true sliding log would. Quotas (`quota-by-key`) use plain fixed windows, as APIM's
//! renewal periods do.
//!
//! **In-process store.** 64 shards, each a mutex over a map from a 64-bit hash of (statement id,
//! counter key) to two counters; a request takes one shard lock for a few nanoseconds. Entries
//! older than two periods are swept when a shard fills; at most [`MAX_ENTRIES_PER_SHARD`] live
//! keys per shard (about a million in all): beyond that a new key is not counted (fail-open) and
//! `portcullis_rate_limit_untracked_total` says so. Two keys whose 64-bit hashes collide share a
//! counter (odds about 2^-64 per pair).
//!
//! **Redis store.** The same arithmetic in one Lua script, for several replicas: see
//! `redis_store.rs` for keys, clock, exactness, connections and failures.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use portcullis_config::{RateLimitStore, StoreFailure};

use crate::error::BuildError;

mod redis_store;

pub use redis_store::{RedisStore, StoreError, KEY_PREFIX, RECONNECT_BACKOFF, WARN_EVERY};

/// Shards of the in-process store.
const SHARDS: usize = 64;
/// Live keys per shard before new ones go uncounted.
pub const MAX_ENTRIES_PER_SHARD: usize = 16_384;

/// One counting request against a limit.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// Statement id (`policy#n`, plus a suffix per counter of a quota).
    pub id: &'a str,
    /// Counter key (claim value, header value, client IP, constant).
    pub key: &'a str,
    /// Window length in milliseconds.
    pub period_ms: u64,
    /// Allowed per window.
    pub limit: u64,
    /// What this request adds.
    pub amount: u64,
    /// Sliding (rate limits) or fixed (quotas) window.
    pub sliding: bool,
    /// Add `amount` when allowed (false: only look).
    pub commit: bool,
}

/// What a hit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Within the limit.
    pub allowed: bool,
    /// Calls left in the window after this one.
    pub remaining: u64,
    /// When refused: milliseconds until this hit would be allowed (no other traffic assumed).
    pub retry_after_ms: u64,
}

/// Two fixed windows of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    /// Index of the current window (`now_ms / period_ms`).
    pub window: u64,
    /// Count in the current window.
    pub curr: u64,
    /// Count in the window before it.
    pub prev: u64,
}

impl Slot {
    fn roll(&mut self, window: u64) {
        if self.window == window {
            return;
        }
        self.prev = if self.window + 1 == window {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        self.window = window;
    }
}

/// The window arithmetic, shared by every store: roll `slot` to `now_ms`, decide, and count when
/// allowed and `commit`.
pub fn decide(slot: &mut Slot, hit: &Hit<'_>, now_ms: u64) -> Verdict {
    let period = u128::from(hit.period_ms.max(1));
    let window = now_ms / hit.period_ms.max(1);
    slot.roll(window);
    let elapsed = u128::from(now_ms % hit.period_ms.max(1));
    let prev_weight = if hit.sliding { period - elapsed } else { 0 };
    // Everything scaled by `period` to stay in integers.
    let used = u128::from(slot.prev) * prev_weight + u128::from(slot.curr) * period;
    let limit = u128::from(hit.limit) * period;
    let amount = u128::from(hit.amount) * period;
    let allowed = used + amount <= limit;
    if allowed && hit.commit {
        slot.curr = slot.curr.saturating_add(hit.amount);
    }
    let after = used + if allowed && hit.commit { amount } else { 0 };
    let remaining = u64::try_from(limit.saturating_sub(after) / period).unwrap_or(u64::MAX);
    let retry_after_ms = if allowed {
        0
    } else {
        retry_after(slot, hit, elapsed, period)
    };
    Verdict {
        allowed,
        remaining,
        retry_after_ms,
    }
}

fn retry_after(slot: &Slot, hit: &Hit<'_>, elapsed: u128, period: u128) -> u64 {
    let to_end = period - elapsed;
    if hit.amount > hit.limit {
        return u64::try_from(period).unwrap_or(u64::MAX);
    }
    let need = u128::from(hit.limit - hit.amount);
    let (prev, curr) = (u128::from(slot.prev), u128::from(slot.curr));
    let ms = if !hit.sliding {
        to_end
    } else if curr <= need && prev > 0 {
        // Within this window, as the previous one's weight shrinks.
        (prev * to_end + curr * period - need * period).div_ceil(prev)
    } else if curr <= need {
        0
    } else {
        // After this window: the current count becomes the previous one and shrinks.
        to_end + (period - (need * period) / curr)
    };
    u64::try_from(ms.min(2 * period)).unwrap_or(u64::MAX)
}

/// The in-process store.
#[derive(Debug)]
pub struct LocalStore {
    shards: Vec<Mutex<HashMap<u64, (Slot, u64)>>>,
    hasher: RandomState,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// Whether a store could count a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Decided by the counters.
    Yes(Verdict),
    /// No room for a new key: not counted, allowed.
    Untracked,
    /// The store did not answer (Redis down, slow or erroring): counted in
    /// `portcullis_rate_limit_store_errors_total`; the caller applies [`Store::fail_closed`].
    Failed(StoreError),
}

/// Where the gateway's counters live (`server.rate-limit-store`).
#[derive(Debug)]
pub enum Store {
    /// In this process (the default).
    Local(LocalStore),
    /// In Redis, shared by every replica.
    Redis {
        /// The connections and the script (boxed: the enum is built once, and the in-process
        /// variant stays small).
        store: Box<RedisStore>,
        /// `rate-limit-store-failure: closed`: a call Redis could not count is refused (503).
        fail_closed: bool,
    },
}

impl Default for Store {
    fn default() -> Self {
        Store::Local(LocalStore::default())
    }
}

impl Store {
    /// The store the config asks for; `errors` counts Redis failures.
    pub fn build(
        model: &RateLimitStore,
        errors: prometheus::IntCounterVec,
    ) -> Result<Store, BuildError> {
        match model {
            RateLimitStore::InProcess => Ok(Store::default()),
            RateLimitStore::Redis(r) => {
                let store = RedisStore::new(&r.url, &r.display, r.pool_size, r.timeout, errors)
                    .map_err(|e| BuildError::RateLimitStore {
                        url: r.display.clone(),
                        detail: e.to_string(),
                    })?;
                Ok(Store::Redis {
                    store: Box::new(store),
                    fail_closed: r.failure == StoreFailure::Closed,
                })
            }
        }
    }

    /// Count (or look at) one hit. The in-process store answers without awaiting anything;
    /// `now_ms` is the gateway's clock, which the Redis store ignores (it uses Redis's).
    #[inline]
    pub async fn hit(&self, hit: &Hit<'_>, now_ms: u64) -> Counted {
        match self {
            Store::Local(local) => local.hit(hit, now_ms),
            Store::Redis { store, .. } => store.hit(hit).await,
        }
    }

    /// Whether a call the store could not count is refused.
    pub fn fail_closed(&self) -> bool {
        matches!(
            self,
            Store::Redis {
                fail_closed: true,
                ..
            }
        )
    }
}

impl LocalStore {
    /// Count (or look at) one hit.
    pub fn hit(&self, hit: &Hit<'_>, now_ms: u64) -> Counted {
        let h = self.hasher.hash_one((hit.id, hit.key));
        let shard = &self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)];
        let Ok(mut map) = shard.lock() else {
            return Counted::Untracked;
        };
        // Entries carry the time after which they are stale (two periods past their window).
        let stale_after = now_ms.saturating_add(hit.period_ms.saturating_mul(2));
        if !map.contains_key(&h) && map.len() >= MAX_ENTRIES_PER_SHARD {
            map.retain(|_, (_, until)| *until > now_ms);
            if map.len() >= MAX_ENTRIES_PER_SHARD {
                return Counted::Untracked;
            }
        }
        let entry = map.entry(h).or_insert((Slot::default(), stale_after));
        entry.1 = stale_after;
        Counted::Yes(decide(&mut entry.0, hit, now_ms))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn hit(limit: u64, sliding: bool) -> Hit<'static> {
        Hit {
            id: "p#0",
            key: "k",
            period_ms: 10_000,
            limit,
            amount: 1,
            sliding,
            commit: true,
        }
    }

    fn verdict(c: Counted) -> Verdict {
        match c {
            Counted::Yes(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_in_the_first_window_then_refused() {
        let store = LocalStore::default();
        let start = 1_000_000_000; // a window boundary for 10 s
        for i in 0..5 {
            let v = verdict(store.hit(&hit(5, true), start + i));
            assert!(v.allowed, "call {i}");
            assert_eq!(v.remaining, 4 - i);
        }
        let v = verdict(store.hit(&hit(5, true), start + 10));
        assert!(!v.allowed);
        assert!(v.retry_after_ms > 0 && v.retry_after_ms <= 20_000, "{v:?}");
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let store = LocalStore::default();
        let start = 1_000_000_000;
        for _ in 0..10 {
            assert!(verdict(store.hit(&hit(10, true), start)).allowed);
        }
        // Half way into the next window, half of the previous 10 still count: 5 more pass.
        let mid = start + 15_000;
        let passed = (0..10)
            .filter(|_| verdict(store.hit(&hit(10, true), mid)).allowed)
            .count();
        assert_eq!(passed, 5);
        // Two windows on, nothing of the old ones is left.
        let later = start + 30_000;
        assert_eq!(verdict(store.hit(&hit(10, true), later)).remaining, 9);
    }

    #[test]
    fn fixed_windows_renew_whole() {
        let store = LocalStore::default();
        let start = 1_000_000_000;
        for _ in 0..3 {
            assert!(verdict(store.hit(&hit(3, false), start)).allowed);
        }
        let refused = verdict(store.hit(&hit(3, false), start + 4_000));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 6_000);
        assert!(verdict(store.hit(&hit(3, false), start + 10_000)).allowed);
    }

    #[test]
    fn keys_and_statements_are_isolated() {
        let store = LocalStore::default();
        let start = 1_000_000_000;
        assert!(verdict(store.hit(&hit(1, true), start)).allowed);
        assert!(!verdict(store.hit(&hit(1, true), start)).allowed);
        let other_key = Hit {
            key: "k2",
            ..hit(1, true)
        };
        assert!(verdict(store.hit(&other_key, start)).allowed);
        let other_id = Hit {
            id: "p#1",
            ..hit(1, true)
        };
        assert!(verdict(store.hit(&other_id, start)).allowed);
    }

    #[test]
    fn looking_does_not_count() {
        let store = LocalStore::default();
        let look = Hit {
            commit: false,
            ..hit(1, true)
        };
        for _ in 0..3 {
            assert!(verdict(store.hit(&look, 1_000_000_000)).allowed);
        }
    }
}
