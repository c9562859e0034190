//! The verified-token cache: the signature check (the expensive half of validation, 3-40 µs) is
//! done once per distinct token; every later request with the same token pays one map lookup
//! (a fast hash of the token and a byte comparison with the cached one) and the claim rules.
//!
//! Why it is shaped like this (each rule answers a way a token cache can let a bad token in):
//! - **Key**: the policy's key scope and the *whole* raw token, compared byte for byte. A
//!   prototype keyed on the signature bytes accepted a token whose payload had been changed under
//!   an old signature; keying on everything the signature covers (and the signature) rules that
//!   out, and comparing the bytes leaves nothing to a hash: a hit is the very token that was
//!   verified. The map's hash (foldhash, seeded at random per cache, over the key scope, the
//!   token's length and its last [`HASHED_TAIL`] bytes: the signature's) only picks the bucket.
//!   (Until 2026-12-07 the key was a SHA-256 of scope and token: most of a hot hit's cost, 1.2 µs
//!   against 0.37 µs now in the `token_cache` bench, and its safety rested on collision
//!   resistance.) Only verified tokens are inserted, so no client can fill a bucket with tokens
//!   of its choosing. The key scope ([`KeyScope`]) is a digest of the policy's key sources and of
//!   `require-signed-tokens`, so a token verified for policy A is never a hit for a policy B whose
//!   keys differ (policies with the same sources share entries; their claim rules still run
//!   separately).
//! - **Encrypted tokens (JWE)**: keyed on the JWE as received, and the key scope also digests the
//!   policy's `decryption-keys` (material fingerprint, kid, alg, enc). A hit therefore needs the
//!   very bytes that were decrypted and verified before, under the same decryption keys: decryption
//!   is deterministic, so skipping it returns what it would return. Any change to the JWE (header,
//!   wrapped key, IV, ciphertext, tag) is a different key and a full decryption; a policy without
//!   those decryption keys never hits (it would refuse the JWE). What the entry keeps and re-checks
//!   is the *inner* JWS's verifying key, exactly as for a plain token. Failures, decryption ones
//!   included, are never cached, so the cache answers no question an attacker could not already
//!   ask, and its hit/miss timing only tells apart tokens that were already accepted.
//! - **Value**: the `Arc<VerifiedToken>` (claims parsed once) with the kid and the fingerprint of
//!   the key that verified it.
//! - **Key rotation**: on every hit the verifying key (kid + fingerprint, usable for the token's
//!   alg) must still be in the policy's *current* [`KeySnapshot`]; if it left the key set the entry
//!   is invalidated and the request is a miss (and then fails or re-verifies against the new keys).
//! - **Time**: each entry lives at most until the token's `exp` (also capped at [`MAX_TTL`]): a
//!   lookup that finds it past that drops it and is a miss. `exp`, `nbf` and `iat` are re-checked
//!   with the policy's clock skew on every hit.
//! - **The other claim rules** (issuer, audience, client application, required claims, scopes,
//!   roles) run on a hit unless the token already passed them under the same policy and the same
//!   key snapshot ([`portcullis_auth::check_claims_memo`]; the memo is in the cached token and is
//!   tied to the policy's index in this cache's configuration and to the snapshot's generation).
//!   Those rules read nothing else, so their answer could not differ; a key refresh publishes a
//!   new snapshot and they run again. What it saves: the hit no longer reads the cached claims,
//!   memory the core no longer holds under a rotation of many tokens (issue 17).
//! - **Failures are never cached**: only a token that passed the signature and the claim rules of
//!   the policy it arrived under is inserted. Unsigned tokens (`require-signed-tokens: false`) are
//!   not cached: there is no signature to save.
//! - **Size in bytes**: each entry weighs its raw token length (the key holds the token) plus
//!   the heap its parsed claims hold, at least [`ENTRY_UNIT_BYTES`]; the capacity is
//!   `max-entries` x [`ENTRY_UNIT_BYTES`].
//!   So `max-entries` typical tokens always fit, and a large token (an Entra token with many
//!   groups) counts as several entries. The map is sharded and a token's hash picks its shard, so
//!   each shard has room for its share of the budget plus the spread of that hash ([`map_room`]):
//!   memory stays under `max-entries` x 2 KiB plus that headroom (about 210 MB at the default
//!   100000) whatever the tokens look like. `max-entries: 0` turns the cache off (every request
//!   verified); the smallest cache holds two units (see [`TokenCache::with_scopes`]).
//! - **The map**: `quick_cache` (a sharded hash table with CLOCK-Pro-style eviction), not moka.
//!   A hit under load reads memory the core no longer holds; moka's hit reads its bucket, the
//!   entry's node, its access-time and expiry fields, and records the read for its frequency
//!   sketch and access-order list (more cold lines, several written), where quick_cache's reads
//!   one slot of its table and sets a reference counter beside the entry. Measured over 10,000
//!   tokens in random order: 1.1 µs against 0.44 µs a lookup (see docs/performance.md, "The map
//!   without moka"). There is no timer wheel: an entry past its life is dropped by the lookup
//!   that finds it, by an eviction, or by a sweep of the whole map that an insertion (a miss,
//!   never a hit) runs at most every [`SWEEP_EVERY`], so entries past their life do not hold
//!   room that live tokens need. Each is counted as `expired`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_auth::{
    DecryptionKey, JoseAlg, KeyManagement, KeySnapshot, RulesTag, UnixTime, VerifiedToken,
    VerifyingKey,
};
use portcullis_config::{KeySource, Model, PolicyId};
use prometheus::{IntCounter, IntCounterVec};
use quick_cache::sync::GuardResult;
use quick_cache::{Equivalent, Lifecycle, Weighter};
use sha2::{Digest, Sha256};

/// One cache entry's budget; `max-entries` is a count of these.
pub const ENTRY_UNIT_BYTES: u32 = 2048;
/// Longest life of an entry, whatever the token's `exp` says (and the life of tokens without one).
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How often an insertion sweeps out the entries past their life (at 100,000 entries a sweep
/// takes a few milliseconds, on one request that is a miss anyway).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Fixed overhead of an entry: the `VerifiedToken`, the key, the map's slot and bookkeeping.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// Identity of a policy's key sources, part of every cache key of that policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyScope([u8; 32]);

impl KeyScope {
    /// Digest of the key sources (kind and URL of remote ones; kid, alg, family and fingerprint of
    /// static keys), of the decryption keys (kid, alg, enc, fingerprint) and of
    /// `require-signed-tokens`.
    pub fn of(
        sources: &[KeySource],
        decryption: &[DecryptionKey],
        require_signed_tokens: bool,
    ) -> KeyScope {
        let mut h = Sha256::new();
        h.update([u8::from(require_signed_tokens)]);
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        for key in decryption {
            field(&mut h, b"decryption");
            field(&mut h, key.kid.as_deref().unwrap_or("").as_bytes());
            field(&mut h, key.alg.map_or("", KeyManagement::name).as_bytes());
            for enc in &key.enc {
                field(&mut h, enc.name().as_bytes());
            }
            h.update(key.fingerprint.to_be_bytes());
        }
        for source in sources {
            match source {
                KeySource::OpenIdConfig { url, .. } => {
                    field(&mut h, b"openid-config");
                    field(&mut h, url.as_bytes());
                }
                KeySource::JwksUri { url, .. } => {
                    field(&mut h, b"jwks-uri");
                    field(&mut h, url.as_bytes());
                }
                KeySource::Static { keys, .. } => {
                    field(&mut h, b"static");
                    for key in keys {
                        field(&mut h, key.kid.as_deref().unwrap_or("").as_bytes());
                        field(&mut h, key.alg.map_or("", JoseAlg::name).as_bytes());
                        field(&mut h, format!("{:?}", key.family).as_bytes());
                        h.update(key.fingerprint.to_be_bytes());
                    }
                }
            }
        }
        KeyScope(h.finalize().into())
    }
}

/// The lookup key of one token under one key scope: borrowed from the request, so a lookup copies
/// nothing. Its `Debug` does not show the token (a bearer credential).
#[derive(Clone, Copy)]
pub struct CacheKey<'t> {
    scope: KeyScope,
    token: &'t str,
    /// The index of the policy the lookup is for (not part of the key: policies with the same key
    /// sources share entries): what the claim-rule memo is tied to ([`CacheKey::rules_tag`]).
    policy: usize,
}

impl CacheKey<'_> {
    /// The memo tag of this key's policy under `keys`: a cache lives for one configuration, so
    /// within it a policy index always names the same policy ([`RulesTag`]'s condition).
    pub fn rules_tag(&self, keys: &KeySnapshot) -> Option<RulesTag> {
        RulesTag::new(self.policy, keys)
    }
}

/// The key an entry is stored under: [`CacheKey`] with the token owned. Its hash and equality are
/// those of [`StoredKey::lookup`], so a `CacheKey` finds it (`Equivalent`).
#[derive(Clone)]
struct StoredKey {
    scope: KeyScope,
    token: Box<str>,
}

impl StoredKey {
    /// The same key, borrowed: what a lookup of this entry presents.
    fn lookup(&self) -> CacheKey<'_> {
        CacheKey {
            scope: self.scope,
            token: &self.token,
            // Not part of the key (hashing and equality ignore it); a stored key has no policy.
            policy: 0,
        }
    }
}

/// Bytes of the token's end that the map's hash reads (with the token's length): for every
/// signed token, all of them signature (43 characters for HS256, 86 for ES256, 342 for RS256),
/// or the authentication tag and ciphertext of a JWE. The bytes that tell one verified token
/// from another (an issuer's tokens share their first hundred bytes or so); hashing the other
/// several hundred was a tenth of a hit's added instructions. Equality still compares every
/// byte ([`same_token`]).
const HASHED_TAIL: usize = 64;

impl Hash for CacheKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let token = self.token.as_bytes();
        state.write(&self.scope.0);
        state.write_usize(token.len());
        state.write(&token[token.len().saturating_sub(HASHED_TAIL)..]);
    }
}

impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.lookup().hash(state);
    }
}

/// A hit is the same scope and the same token, every byte.
impl Equivalent<StoredKey> for CacheKey<'_> {
    fn equivalent(&self, stored: &StoredKey) -> bool {
        self.scope == stored.scope && same_token(self.token, &stored.token)
    }
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &StoredKey) -> bool {
        self.lookup().equivalent(other)
    }
}

impl Eq for StoredKey {}

/// Byte equality, the last 16 bytes first: tokens of one issuer share their first hundred bytes
/// or so (the same header, often the same leading claims), and end in their signatures. A probe
/// of the table that lands on another token's entry then reads one cache line of it, not two
/// or three. A hit compares every byte either way.
///
/// Not constant-time, and it need not be: which entries a presented token is compared with
/// depends on a hash seeded at random, which a client cannot steer, and the comparison reads past
/// the length only for an entry whose signature ends in the same 16 bytes. So its timing can tell
/// a client nothing about a cached token that it does not already hold.
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let tail = a.len().saturating_sub(16);
    a.len() == b.len() && a[tail..] == b[tail..] && a == b
}

impl std::fmt::Debug for CacheKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("token_len", &self.token.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Entry {
    token: Arc<VerifiedToken>,
    /// The end of the entry's life: the token's remaining life at insertion, capped.
    expires: Instant,
    weight: u32,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

/// An entry weighs what [`entry_weight`] computed at insertion.
#[derive(Clone)]
struct ByWeight;

impl Weighter<StoredKey, Entry> for ByWeight {
    fn weight(&self, _: &StoredKey, entry: &Entry) -> u64 {
        u64::from(entry.weight)
    }
}

/// Counts entries the map evicts to make room: `expired` when the entry's life was over anyway,
/// `size` otherwise. (Replacing an entry is not an eviction.)
#[derive(Clone)]
struct CountEvictions(IntCounterVec);

impl Lifecycle<StoredKey, Entry> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut (), _: StoredKey, entry: Entry) {
        let cause = if entry.expired(Instant::now()) {
            "expired"
        } else {
            "size"
        };
        self.0.with_label_values(&[cause]).inc();
    }
}

type Map = quick_cache::sync::Cache<
    StoredKey,
    Entry,
    ByWeight,
    foldhash::fast::RandomState,
    CountEvictions,
>;

/// Prometheus counters of the cache (registered with the gateway's registry in `metrics.rs`).
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    /// `portcullis_token_cache_hits_total`.
    pub hits: IntCounter,
    /// `portcullis_token_cache_misses_total`.
    pub misses: IntCounter,
    /// `portcullis_token_cache_evictions_total{cause}`: `size`, `expired`, `key_removed`.
    pub evictions: IntCounterVec,
}

/// The map and when it was last swept.
struct Inner {
    map: Map,
    born: Instant,
    /// Milliseconds after `born` at which the next insertion sweeps the map.
    next_sweep_ms: AtomicU64,
}

/// The verified-token cache, shared by every worker thread (a sharded map: a lookup takes one
/// shard's read lock, never awaits). Cloning shares the cache.
#[derive(Clone)]
pub struct TokenCache {
    inner: Option<Arc<Inner>>,
    scopes: Arc<[KeyScope]>,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("enabled", &self.inner.is_some())
            .field("entries", &self.inner.as_ref().map(|c| c.map.len()))
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache for `model`'s policies sized by `server.token-cache.max-entries` (0: off).
    pub fn new(model: &Model, metrics: CacheMetrics) -> TokenCache {
        let scopes = model
            .policies
            .iter()
            .map(|p| {
                KeyScope::of(
                    &p.key_sources,
                    &p.policy.decryption_keys,
                    p.policy.require_signed_tokens,
                )
            })
            .collect();
        Self::with_scopes(model.server.token_cache_max_entries, scopes, metrics)
    }

    /// A cache of `max_entries` units over explicit key scopes, by policy index (benches, tests).
    pub fn with_scopes(
        max_entries: u64,
        scopes: Vec<KeyScope>,
        metrics: CacheMetrics,
    ) -> TokenCache {
        let inner = (max_entries > 0).then(|| {
            // foldhash (random seed) picks the shard and the slot: the keys are verified tokens
            // only, and a lookup compares every byte, so the hash needs no DoS resistance of its
            // own, and it is several times faster than SipHash over a 1 KB token.
            //
            // The map keeps 3 % of its room for entries on probation and refuses an entry that
            // would need more than the other 97 %: at `max-entries: 1` that is every token, so
            // the smallest map has room for two units.
            let units = max_entries.max(2);
            let (shards, capacity) = map_room(units);
            let estimated = usize::try_from(units).unwrap_or(usize::MAX);
            let options = quick_cache::OptionsBuilder::new()
                .shards(shards)
                .estimated_items_capacity(estimated)
                .weight_capacity(capacity.saturating_mul(u64::from(ENTRY_UNIT_BYTES)))
                .build();
            let (hasher, count) = (
                foldhash::fast::RandomState::default(),
                CountEvictions(metrics.evictions.clone()),
            );
            let bytes = capacity.saturating_mul(u64::from(ENTRY_UNIT_BYTES));
            let map = match options {
                Ok(options) => Map::with_options(options, ByWeight, hasher, count),
                // Not reached (both required options are set): the same room, the map's shards.
                Err(_) => Map::with(estimated, bytes, ByWeight, hasher, count),
            };
            Arc::new(Inner {
                map,
                born: Instant::now(),
                next_sweep_ms: AtomicU64::new(millis(SWEEP_EVERY)),
            })
        });
        TokenCache {
            inner,
            scopes: scopes.into(),
            metrics,
        }
    }

    /// Whether the cache is on.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The key of `raw` under `policy`; `None` when the cache is off (or the
    /// index is unknown: never shared with another policy).
    pub fn key<'t>(&self, policy: PolicyId, raw: &'t str) -> Option<CacheKey<'t>> {
        self.inner.as_ref()?;
        let scope = *self.scopes.get(policy.index())?;
        Some(CacheKey {
            scope,
            token: raw,
            policy: policy.index(),
        })
    }

    /// The cached token, if present and its verifying key is still in `keys`. An entry whose key
    /// left the key set is invalidated. Counts a hit or a miss.
    pub fn get(&self, key: &CacheKey<'_>, keys: &KeySnapshot) -> Option<Arc<VerifiedToken>> {
        self.get_at(key, keys, Instant::now())
    }

    /// [`TokenCache::get`] at the monotonic time `now`.
    fn get_at(
        &self,
        key: &CacheKey<'_>,
        keys: &KeySnapshot,
        now: Instant,
    ) -> Option<Arc<VerifiedToken>> {
        let cache = &self.inner.as_ref()?.map;
        let found = cache.get(key).and_then(|entry| {
            if entry.expired(now) {
                self.remove(cache, key, "expired");
                None
            } else if key_still_present(&entry.token, keys) {
                Some(entry.token)
            } else {
                self.remove(cache, key, "key_removed");
                None
            }
        });
        match &found {
            Some(_) => self.metrics.hits.inc(),
            None => self.metrics.misses.inc(),
        }
        found
    }

    /// Remember a token that passed verification and the claim rules. `now` bounds the entry's
    /// life by the token's `exp`; a token with a second or less left is not inserted.
    pub fn insert(&self, key: &CacheKey<'_>, token: &Arc<VerifiedToken>, now: UnixTime) {
        self.insert_at(key, token, now, Instant::now());
    }

    /// [`TokenCache::insert`] with the entry's life counted from the monotonic time `at`.
    fn insert_at(
        &self,
        key: &CacheKey<'_>,
        token: &Arc<VerifiedToken>,
        now: UnixTime,
        at: Instant,
    ) {
        let Some(inner) = &self.inner else { return };
        self.sweep_if_due(inner, at);
        if token.key_fingerprint.is_none() {
            return;
        }
        let ttl = match token.exp {
            Some(exp) => {
                // `now` is whole seconds (the real time may be up to 1 s later): one second off
                // keeps the TTL within the token's remaining life.
                let left = exp - now.secs() as f64 - 1.0;
                if left <= 0.0 {
                    return;
                }
                Duration::try_from_secs_f64(left).map_or(MAX_TTL, |d| d.min(MAX_TTL))
            }
            None => MAX_TTL,
        };
        let weight = entry_weight(key.token.len(), token);
        let stored = StoredKey {
            scope: key.scope,
            token: key.token.into(),
        };
        let entry = Entry {
            token: token.clone(),
            expires: at + ttl,
            weight,
        };
        // Only into a free slot: the map counts a replaced value as evicted, and an entry that
        // is there already holds the same bytes, verified (another request verified the token
        // at the same time, or is inserting it right now: no wait for it).
        if let GuardResult::Guard(slot) =
            inner.map.get_value_or_guard(&stored, Some(Duration::ZERO))
        {
            let _ = slot.insert(entry);
        }
    }

    /// Drop one entry (counted as `key_removed`).
    pub fn invalidate(&self, key: &CacheKey<'_>) {
        if let Some(inner) = &self.inner {
            self.remove(&inner.map, key, "key_removed");
        }
    }

    /// Drops every entry past its life, when [`SWEEP_EVERY`] has passed since the last sweep
    /// (one caller wins the turn; the others go on).
    fn sweep_if_due(&self, inner: &Inner, at: Instant) {
        let elapsed = millis(at.saturating_duration_since(inner.born));
        let due = inner.next_sweep_ms.load(Ordering::Relaxed);
        if elapsed < due
            || inner
                .next_sweep_ms
                .compare_exchange(
                    due,
                    elapsed.saturating_add(millis(SWEEP_EVERY)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let expired = self.metrics.evictions.with_label_values(&["expired"]);
        inner.map.retain(|_, entry| {
            let keep = !entry.expired(at);
            if !keep {
                expired.inc();
            }
            keep
        });
    }

    fn remove(&self, cache: &Map, key: &CacheKey<'_>, cause: &str) {
        if cache.remove(key).is_some() {
            self.metrics.evictions.with_label_values(&[cause]).inc();
        }
    }

    /// Entries currently held, those past their life included until a lookup or an eviction
    /// drops them.
    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.map.len() as u64)
    }
}

/// The map's shards and its room in units for a budget of `units`. Shards as the map would pick
/// them: four per core the process may run on, fewer for a small cache so that each holds at
/// least 32 units. Each shard holds the tokens whose hash falls in it, which is never exactly its
/// share: it gets room for its share plus five standard deviations of that spread (and one
/// unit), so that `max-entries` typical tokens all fit, as they did in one map. The room is that
/// much larger than the budget: about 4.5 % at the default 100,000 units on 2 cores, 10-15 % at
/// 10,000 (1-2 cores), more for a few hundred units.
fn map_room(units: u64) -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut shards = cores.saturating_mul(4).next_power_of_two() as u64;
    while shards > 1 && units / shards < 32 {
        shards /= 2;
    }
    let share = units.div_ceil(shards);
    // A shard's count is binomial: its standard deviation is under the square root of the share.
    let spare = (share as f64).sqrt().ceil() as u64 * 5 + 1;
    let shard_count = usize::try_from(shards).unwrap_or(1);
    (
        shard_count,
        share.saturating_add(spare).saturating_mul(shards),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a key of the snapshot could have verified this token: same fingerprint, the same kid
/// rule as the verifier (a kid selects keys with that kid or none), usable for the token's alg.
fn key_still_present(token: &VerifiedToken, keys: &KeySnapshot) -> bool {
    let (Some(fingerprint), Some(alg)) = (token.key_fingerprint, token.alg) else {
        return false;
    };
    let kid_selects = keys.kid_rule(token.kid.as_deref());
    let usable = |k: &VerifyingKey| {
        k.fingerprint == fingerprint
            && kid_selects(k)
            && alg.fits(k.family)
            && k.alg.is_none_or(|a| a == alg)
    };
    keys.keys.iter().any(usable)
}

/// Bytes an entry holds, at least one unit: the raw token (its key), and the parsed claims with
/// what they hold on the heap.
fn entry_weight(raw_len: usize, token: &VerifiedToken) -> u32 {
    let bytes = ENTRY_OVERHEAD_BYTES + raw_len + token.claims.heap_bytes();
    u32::try_from(bytes)
        .unwrap_or(u32::MAX)
        .max(ENTRY_UNIT_BYTES)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn metrics() -> CacheMetrics {
        CacheMetrics {
            hits: IntCounter::new("h", "h").unwrap(),
            misses: IntCounter::new("m", "m").unwrap(),
            evictions: IntCounterVec::new(prometheus::Opts::new("e", "e"), &["cause"]).unwrap(),
        }
    }

    fn hmac(kid: &str, secret: &[u8]) -> VerifyingKey {
        VerifyingKey::from_hmac_secret(Some(kid.to_owned()), secret, "test")
    }

    fn token(key: &VerifyingKey, exp: Option<f64>) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            claims: portcullis_auth::Claims::parse("{}".to_owned()).unwrap(),
            alg: Some(JoseAlg::HS256),
            kid: key.kid.clone(),
            key_fingerprint: Some(key.fingerprint),
            exp,
            nbf: None,
            iat: None,
            rules_passed: portcullis_auth::RulesMemo::default(),
        })
    }

    fn scope(n: u8) -> KeyScope {
        KeyScope([n; 32])
    }

    /// Through the lookup: a token one byte off anywhere (header, payload, signature, or a byte
    /// longer or shorter) is a miss, and so is the same token under a policy whose key sources
    /// differ; the same bytes under the same scope hit. These misses mostly come from the hash
    /// picking another bucket, so they cannot show a comparison that is too lenient: that is
    /// the next test's job.
    #[test]
    fn a_hit_needs_the_same_token_and_scope() {
        let m = metrics();
        let c = TokenCache::with_scopes(10, vec![scope(1), scope(2), scope(1)], m.clone());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let snap = KeySnapshot::new(vec![k1.clone()]);
        let raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let key = c.key(PolicyId::new(0), raw).unwrap();
        c.insert(&key, &token(&k1, Some(2_000.0)), UnixTime(1_000));
        assert!(c.get(&key, &snap).is_some());
        // the same bytes in another string, and a policy with the same scope: hits
        let copy = raw.to_owned();
        assert!(c
            .get(&c.key(PolicyId::new(0), &copy).unwrap(), &snap)
            .is_some());
        assert!(c
            .get(&c.key(PolicyId::new(2), raw).unwrap(), &snap)
            .is_some());
        let mut others: Vec<String> = (0..raw.len())
            .map(|i| {
                let mut bytes = raw.as_bytes().to_vec();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        others.push(format!("{raw}A"));
        others.push(raw[..raw.len() - 1].to_owned());
        others.push(String::new());
        for other in &others {
            let other_key = c.key(PolicyId::new(0), other).unwrap();
            assert!(c.get(&other_key, &snap).is_none(), "{other} hit");
        }
        assert!(c
            .get(&c.key(PolicyId::new(1), raw).unwrap(), &snap)
            .is_none());
        assert_eq!(m.hits.get(), 3);
        assert_eq!(m.misses.get(), others.len() as u64 + 1);
        assert!(
            c.key(PolicyId::new(3), raw).is_none(),
            "unknown policy index"
        );
        let off = TokenCache::with_scopes(0, vec![scope(1)], metrics());
        assert!(!off.enabled());
        assert!(off.key(PolicyId::new(0), raw).is_none());
        assert_eq!(format!("{key:?}"), "CacheKey { token_len: 49, .. }");
    }

    /// A token longer than the hashed tail: a change before the tail hashes to the same bucket
    /// (so the lookup reaches the comparison), and every such change is a miss all the same.
    #[test]
    fn a_change_outside_the_hashed_tail_is_a_miss() {
        use std::hash::BuildHasher;
        let m = metrics();
        let c = TokenCache::with_scopes(10, vec![scope(1)], m.clone());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let snap = KeySnapshot::new(vec![k1.clone()]);
        let raw = format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.{}",
            "eyJzdWIiOiJhIn0".repeat(8),
            "c2lnbmF0dXJl".repeat(6)
        );
        assert!(raw.len() > 2 * HASHED_TAIL);
        let key = c.key(PolicyId::new(0), &raw).unwrap();
        c.insert(&key, &token(&k1, Some(2_000.0)), UnixTime(1_000));
        let hasher = foldhash::fast::RandomState::default();
        for i in 0..raw.len() - HASHED_TAIL {
            let mut bytes = raw.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let other = String::from_utf8(bytes).unwrap();
            let other_key = c.key(PolicyId::new(0), &other).unwrap();
            assert_eq!(hasher.hash_one(other_key), hasher.hash_one(key), "{i}");
            assert!(c.get(&other_key, &snap).is_none(), "changed at {i}: hit");
        }
        assert!(c.get(&key, &snap).is_some());
        assert_eq!(m.hits.get(), 1);
        let stored = StoredKey {
            scope: scope(1),
            token: raw.as_str().into(),
        };
        assert_eq!(hasher.hash_one(&stored), hasher.hash_one(key));
    }

    /// The comparison itself: moka only calls it when two keys' hashes pick the same bucket, so
    /// the lookups above cannot show a comparison that is too lenient. Every one-byte change,
    /// a byte more or less, and another scope must compare unequal.
    #[test]
    fn the_key_comparison_is_every_byte_and_the_scope() {
        let raw = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let key = |scope: KeyScope, token: &str| StoredKey {
            scope,
            token: token.into(),
        };
        let lookup = |scope: KeyScope, token| CacheKey {
            scope,
            token,
            policy: 0,
        };
        let stored = key(scope(1), raw);
        assert!(lookup(scope(1), raw).equivalent(&stored));
        assert!(stored == key(scope(1), raw));
        assert!(!lookup(scope(2), raw).equivalent(&stored));
        assert!(stored != key(scope(2), raw));
        let mut others: Vec<String> = (0..raw.len())
            .map(|i| {
                let mut bytes = raw.as_bytes().to_vec();
                bytes[i] ^= 0x01;
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        others.extend([format!("{raw}l"), raw[1..].to_owned(), String::new()]);
        others.extend([raw[..raw.len() - 1].to_owned(), format!("x{raw}")]);
        for other in &others {
            assert!(!lookup(scope(1), other).equivalent(&stored), "{other}");
            assert!(stored != key(scope(1), other), "{other}");
        }
        // short tokens (under the 16-byte tail) too
        assert!(lookup(scope(1), "a.b").equivalent(&key(scope(1), "a.b")));
        assert!(!lookup(scope(1), "a.c").equivalent(&key(scope(1), "a.b")));
        assert!(!lookup(scope(1), "b.b").equivalent(&key(scope(1), "a.b")));
    }

    #[test]
    fn a_hit_needs_the_verifying_key_in_the_current_snapshot() {
        let m = metrics();
        let c = TokenCache::with_scopes(10, vec![scope(1)], m.clone());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let k2 = hmac("k2", b"secret-two-secret-two-secret-two");
        let now = UnixTime(1_000);
        let key = c.key(PolicyId::new(0), "t").unwrap();
        c.insert(&key, &token(&k1, Some(2_000.0)), now);
        let with_k1 = KeySnapshot::new(vec![k1.clone(), k2.clone()]);
        assert!(c.get(&key, &with_k1).is_some());
        // same material published under another kid: not the key that verified it
        let renamed = KeySnapshot::new(vec![hmac("other", b"secret-one-secret-one-secret-one")]);
        assert!(c.get(&key, &renamed).is_none());
        // the entry was dropped: even the old snapshot misses now
        assert!(c.get(&key, &with_k1).is_none());
        assert_eq!((m.hits.get(), m.misses.get()), (1, 2));
    }

    /// Under `try-all-signing-keys` a token whose kid names no key was verified by another key:
    /// its hits are kept while that key is present (the verifier's own kid rule), and dropped once
    /// its kid names a key (which would then be the only one tried).
    #[test]
    fn a_try_all_keys_hit_follows_the_verifiers_kid_rule() {
        let c = TokenCache::with_scopes(10, vec![scope(1)], metrics());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let mut verified = (*token(&k1, Some(2_000.0))).clone();
        verified.kid = Some("partner-kid".to_owned());
        let key = c.key(PolicyId::new(0), "t").unwrap();
        c.insert(&key, &Arc::new(verified), UnixTime(1_000));
        let strict = KeySnapshot::new(vec![k1.clone()]);
        let mut try_all = strict.clone();
        try_all.try_all_keys = true;
        assert!(c.get(&key, &try_all).is_some());
        assert!(c.get(&key, &try_all).is_some());
        let mut named = KeySnapshot::new(vec![
            k1.clone(),
            hmac("partner-kid", b"secret-two-secret-two-secret-two"),
        ]);
        named.try_all_keys = true;
        assert!(c.get(&key, &named).is_none());
        assert!(c.get(&key, &strict).is_none());
    }

    /// A cache of `units` for one scope, its metrics, a key and a snapshot holding it.
    fn timed_cache(units: u64) -> (CacheMetrics, TokenCache, VerifyingKey, KeySnapshot) {
        let m = metrics();
        let c = TokenCache::with_scopes(units, vec![scope(1)], m.clone());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let snap = KeySnapshot::new(vec![k1.clone()]);
        (m, c, k1, snap)
    }

    fn evicted(m: &CacheMetrics, cause: &str) -> u64 {
        m.evictions.with_label_values(&[cause]).get()
    }

    /// An entry lives until the token's `exp` less a second, at most [`MAX_TTL`]: a lookup at
    /// the end of that is a miss that drops the entry and counts it as `expired`.
    #[test]
    fn an_entry_ends_with_its_tokens_life() {
        let (m, c, k1, snap) = timed_cache(10);
        let (t0, now, secs) = (Instant::now(), UnixTime(1_000), Duration::from_secs);
        let short = c.key(PolicyId::new(0), "short").unwrap();
        c.insert_at(&short, &token(&k1, Some(1_031.0)), now, t0);
        assert!(c.get_at(&short, &snap, t0 + secs(29)).is_some());
        assert!(c.get_at(&short, &snap, t0 + secs(30)).is_none());
        assert_eq!((c.entry_count(), evicted(&m, "expired")), (0, 1));
        assert!(c.get_at(&short, &snap, t0).is_none(), "dropped, not hidden");
        let long = c.key(PolicyId::new(0), "long").unwrap();
        c.insert_at(&long, &token(&k1, Some(1e12)), now, t0);
        let none = c.key(PolicyId::new(0), "none").unwrap();
        c.insert_at(&none, &token(&k1, None), now, t0);
        for key in [&long, &none] {
            assert!(c.get_at(key, &snap, t0 + MAX_TTL - secs(1)).is_some());
            assert!(c.get_at(key, &snap, t0 + MAX_TTL).is_none());
        }
        assert_eq!((c.entry_count(), evicted(&m, "expired")), (0, 3));
        assert_eq!(evicted(&m, "size") + evicted(&m, "key_removed"), 0);
    }

    /// Room is made by evicting: an entry evicted after its life is counted as `expired`, a live
    /// one as `size`. An insertion [`SWEEP_EVERY`] after the last sweep first drops every entry
    /// past its life, so they do not crowd out live ones; sooner, it does not sweep.
    #[test]
    fn room_is_made_by_sweeps_and_evictions_counted_by_cause() {
        let (m, c, k1, snap) = timed_cache(2);
        let (_, room) = map_room(2);
        let (t0, now, secs) = (Instant::now(), UnixTime(1_000), Duration::from_secs);
        fn key<'t>(c: &TokenCache, name: &'t str) -> CacheKey<'t> {
            c.key(PolicyId::new(0), name).unwrap()
        }
        let live = token(&k1, Some(100_000.0));
        let brief = token(&k1, Some(1_031.0)); // 30 s of life
        let names: Vec<String> = (1..room).map(|i| format!("live-{i}")).collect();
        c.insert_at(&key(&c, "brief"), &brief, now, t0);
        for name in &names {
            c.insert_at(&key(&c, name), &live, now, t0);
        }
        // full; not yet due: "brief" is past its life but stays until a lookup, eviction or sweep
        c.insert_at(&key(&c, "live-1"), &live, now, t0 + SWEEP_EVERY - secs(1));
        assert_eq!((c.entry_count(), evicted(&m, "expired")), (room, 0));
        // due: the sweep drops "brief", so "new" fits without evicting a live entry
        c.insert_at(&key(&c, "new"), &live, now, t0 + SWEEP_EVERY);
        assert_eq!((c.entry_count(), evicted(&m, "expired")), (room, 1));
        assert_eq!(evicted(&m, "size"), 0);
        let later = t0 + SWEEP_EVERY + secs(1);
        for name in names.iter().map(String::as_str).chain(["new"]) {
            assert!(c.get_at(&key(&c, name), &snap, later).is_some(), "{name}");
        }
        // full of live entries: the next one evicts a live entry
        c.insert_at(&key(&c, "one-more"), &live, now, later);
        assert_eq!((c.entry_count(), evicted(&m, "size")), (room, 1));
        // an entry evicted when its life is already over (by the real clock) counts as expired:
        // one live entry, then entries inserted a minute ago with 30 s to live, one too many
        let past = Instant::now().checked_sub(secs(60)).unwrap();
        let (e_metrics, e, _, _) = timed_cache(2);
        e.insert_at(&e.key(PolicyId::new(0), "live").unwrap(), &live, now, t0);
        for i in 0..room {
            let name = format!("over-{i}");
            e.insert_at(&e.key(PolicyId::new(0), &name).unwrap(), &brief, now, past);
        }
        let causes = (evicted(&e_metrics, "expired"), evicted(&e_metrics, "size"));
        assert_eq!(causes, (1, 0), "an entry past its life made room");
    }

    /// `max-entries` typical tokens all fit, although the map's shards each hold their own
    /// share: nothing is evicted and every one of them hits.
    #[test]
    fn max_entries_typical_tokens_all_fit() {
        for units in [40, 1_000, 10_000] {
            let (m, c, k1, snap) = timed_cache(units);
            let cached = token(&k1, None);
            let names: Vec<String> = (0..units).map(|i| format!("token-{i}")).collect();
            for name in &names {
                c.insert(
                    &c.key(PolicyId::new(0), name).unwrap(),
                    &cached,
                    UnixTime(1_000),
                );
            }
            assert_eq!(evicted(&m, "size"), 0, "{units} units");
            for name in &names {
                assert!(c
                    .get(&c.key(PolicyId::new(0), name).unwrap(), &snap)
                    .is_some());
            }
        }
    }

    /// `max-entries: 1` still caches a token (the map refuses an entry that needs more than 97 %
    /// of its room, so the smallest map has two units).
    #[test]
    fn the_smallest_cache_holds_a_token() {
        let c = TokenCache::with_scopes(1, vec![scope(1)], metrics());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let key = c.key(PolicyId::new(0), "t").unwrap();
        c.insert(&key, &token(&k1, None), UnixTime(1_000));
        assert!(c.get(&key, &KeySnapshot::new(vec![k1])).is_some());
    }

    #[test]
    fn expired_unsigned_and_off_are_not_inserted() {
        let c = TokenCache::with_scopes(10, vec![scope(1)], metrics());
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let snap = KeySnapshot::new(vec![k1.clone()]);
        let now = UnixTime(1_000);
        let key = c.key(PolicyId::new(0), "expired").unwrap();
        c.insert(&key, &token(&k1, Some(1_001.0)), now);
        assert!(c.get(&key, &snap).is_none());
        let mut unsigned = (*token(&k1, Some(2_000.0))).clone();
        unsigned.key_fingerprint = None;
        unsigned.alg = None;
        let key = c.key(PolicyId::new(0), "unsigned").unwrap();
        c.insert(&key, &Arc::new(unsigned), now);
        assert!(c.get(&key, &snap).is_none());
    }

    #[test]
    fn weight_is_at_least_one_unit_and_grows_with_the_token() {
        let k1 = hmac("k1", b"secret-one-secret-one-secret-one");
        let small = token(&k1, None);
        assert_eq!(entry_weight(300, &small), ENTRY_UNIT_BYTES);
        let mut big = (*small).clone();
        let groups: Vec<String> = (0..200)
            .map(|i| format!("group-{i:04}-00000000-0000-0000-0000"))
            .collect();
        big.claims =
            portcullis_auth::Claims::parse(serde_json::json!({ "groups": groups }).to_string())
                .unwrap();
        assert!(entry_weight(12_000, &big) > 4 * ENTRY_UNIT_BYTES);
    }

    #[test]
    fn key_scope_follows_sources_and_signed_tokens() {
        let jwks = |url: &str| KeySource::JwksUri {
            url: url.to_owned(),
            lifecycle: portcullis_config::KeyLifecycle::default(),
        };
        let a = KeyScope::of(&[jwks("http://a/jwks")], &[], true);
        assert_eq!(a, KeyScope::of(&[jwks("http://a/jwks")], &[], true));
        assert_ne!(a, KeyScope::of(&[jwks("http://b/jwks")], &[], true));
        assert_ne!(a, KeyScope::of(&[jwks("http://a/jwks")], &[], false));
        let fixed = |secret: &[u8]| KeySource::Static {
            label: "inline".to_owned(),
            keys: vec![hmac("k", secret)],
        };
        assert_ne!(
            KeyScope::of(&[fixed(b"one-one-one-one-one-one-one-one!")], &[], true),
            KeyScope::of(&[fixed(b"two-two-two-two-two-two-two-two!")], &[], true)
        );
        let decrypting = |secret: &[u8]| {
            vec![DecryptionKey::symmetric(None, secret, None, vec![], "t").unwrap()]
        };
        assert_ne!(
            a,
            KeyScope::of(&[jwks("http://a/jwks")], &decrypting(&[1; 32]), true)
        );
        assert_ne!(
            KeyScope::of(&[jwks("http://a/jwks")], &decrypting(&[1; 32]), true),
            KeyScope::of(&[jwks("http://a/jwks")], &decrypting(&[2; 32]), true)
        );
    }

    #[test]
    fn an_entra_v2_token_weighs_between_one_and_a_half_and_two_units() {
        // docs/configuration.md (`token-cache`) sizes caches by this: an Entra v2 access token
        // (16 claims, RS256: a 342-character signature) counts as 1.5 to 2 units.
        let issuer = "https://login.microsoftonline.com/3c6b8f1e-7a2d-4f8e-9c1b-2d3e4f5a6b7c/v2.0";
        let payload =
            portcullis_testkit::fixtures::entra_v2_claims(issuer, 1_700_000_000).to_string();
        let header = r#"{"alg":"RS256","typ":"JWT","kid":"a-typical-kid-0123456789"}"#;
        let b64 = |n: usize| n.div_ceil(3) * 4;
        let raw_len = b64(header.len()) + 1 + b64(payload.len()) + 1 + 342;
        let key = hmac("k", b"one-one-one-one-one-one-one-one!");
        let mut token = Arc::into_inner(token(&key, None)).unwrap();
        token.claims = portcullis_auth::Claims::parse(payload).unwrap();
        let weight = entry_weight(raw_len, &token);
        assert!(
            weight > ENTRY_UNIT_BYTES * 3 / 2 && weight < ENTRY_UNIT_BYTES * 2,
            "{weight} bytes"
        );
    }
}
