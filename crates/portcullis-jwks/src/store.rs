//! The key store: builds per-policy [`KeySnapshot`]s from static and remote sources, publishes
//! them lock-free, refreshes remote sources in the background, and refetches on unknown `kid`s.
//!
//! Why it exists: the request path must read keys without a lock or an await (one `ArcSwap` load),
//! while fetching, retrying, going stale and recovering happen elsewhere. Every state change of a
//! source rebuilds the snapshots of the policies that use it, so a key removed from a JWKS stops
//! validating after the next refresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis_auth::{DiscoveredIssuers, Generation, KeySnapshot, VerifyingKey};
use portcullis_config::{KeyLifecycle, KeySource, Model, PolicyId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fetch::{FetchError, FetchOptions, Fetcher};
use crate::metrics::Metrics;
use crate::schedule::RefreshBounds;
use crate::source::{FetchedKeys, RemoteKind, RemoteSource, SourceId};

/// Bounds that are not per-policy config. [`Default`] suits real identity providers; tests shorten
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyStoreOptions {
    /// HTTP bounds (timeouts, body size, redirects).
    pub fetch: FetchOptions,
    /// Refresh and retry timing bounds.
    pub refresh: RefreshBounds,
}

/// Building a key store failed (only at start-up, never per request).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Metric registration failed (for example the families are already registered).
    #[error("cannot register key store metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One policy's key sources.
#[derive(Debug)]
struct PolicyKeys {
    name: String,
    /// Keys of its static sources (jwks-file, n/e, certificate-file, base64), tagged with their
    /// `any-of` group.
    static_keys: Vec<VerifyingKey>,
    /// Its remote sources.
    sources: Vec<PolicySource>,
    /// Number of `any-of` groups (0: the keyed single-group form).
    groups: usize,
    /// The policy's `try-all-signing-keys`, carried into its snapshots.
    try_all_keys: bool,
}

/// A remote source as one policy uses it.
#[derive(Debug)]
struct PolicySource {
    /// Index into `KeyStore::sources`.
    idx: usize,
    /// The issuers its keys speak for besides the discovered one (openid-config sources; see
    /// `KeySource::OpenIdConfig::issuers`).
    extra_issuers: Vec<String>,
    /// The `any-of` groups that list it (bit per group; 0 without `any-of`).
    groups: u64,
    /// The configured `issuers` of each group (or of the policy) that uses it, to warn about a
    /// differing discovery issuer; an empty list there means the discovered issuer is enforced.
    configured: Vec<Vec<String>>,
}

/// The `any-of` group bits of the policy's key source at `index` in `pm.key_sources`, and the
/// issuers configured where it is listed (the group's, or the policy's without `any-of`).
fn source_scope(pm: &portcullis_config::PolicyModel, index: usize) -> (u64, &[String]) {
    let policy = &pm.policy;
    policy
        .any_of
        .iter()
        .enumerate()
        .find(|(_, group)| group.key_sources.contains(&index))
        .map_or((0, policy.issuers.as_slice()), |(g, group)| {
            let bit = u32::try_from(g).ok().and_then(|g| 1u64.checked_shl(g));
            (bit.unwrap_or(0), group.issuers.as_slice())
        })
}

/// Keys for every policy of a [`Model`], kept fresh.
///
/// Use:
/// 1. [`KeyStore::new`] at start-up (registers metrics on the given registry);
/// 2. spawn [`KeyStore::run`] (the proxy wraps it in a pingora background service): it fetches
///    every remote source at once, retries with backoff until each has keys, then refreshes;
/// 3. per request: [`KeyStore::snapshot`] (lock-free), and when the token's `kid` is not in it,
///    [`KeyStore::refetch_for_unknown_kid`], then verify against the snapshot it returns;
/// 4. `/readyz`: [`KeyStore::is_ready`];
/// 5. config reload: [`KeyStore::rebuild`], stop the old `run` (its shutdown channel), spawn the
///    new store's `run`; sources that still exist keep their keys and schedule.
#[derive(Debug)]
pub struct KeyStore {
    sources: Vec<Arc<RemoteSource>>,
    policies: Vec<PolicyKeys>,
    by_name: HashMap<String, usize>,
    snapshots: Vec<ArcSwap<KeySnapshot>>,
    /// Returned for an out-of-range policy index: no keys, unavailable (fails closed).
    missing: Arc<KeySnapshot>,
    fetcher: Fetcher,
    metrics: Metrics,
    options: KeyStoreOptions,
}

impl KeyStore {
    /// A store for `model` with default bounds; registers its metrics on `registry`.
    /// Nothing is fetched until [`KeyStore::run`] starts: remote sources start unavailable.
    pub fn new(model: &Model, registry: &prometheus::Registry) -> Result<Arc<KeyStore>, JwksError> {
        Self::with_options(model, registry, KeyStoreOptions::default())
    }

    /// As [`KeyStore::new`] with explicit bounds.
    pub fn with_options(
        model: &Model,
        registry: &prometheus::Registry,
        options: KeyStoreOptions,
    ) -> Result<Arc<KeyStore>, JwksError> {
        let metrics = Metrics::register(registry)?;
        let fetcher = Fetcher::new(&options.fetch)?;
        Ok(Arc::new(Self::build(
            model, metrics, fetcher, options, None,
        )))
    }

    /// A store for a reloaded config that shares this one's metrics and HTTP client and carries
    /// over the keys, schedule and cooldown of every remote source that still exists (same kind
    /// and URL), so a reload causes no refetch storm. The caller stops this store's `run` and
    /// spawns the new one's.
    pub fn rebuild(&self, new_model: &Model) -> Arc<KeyStore> {
        let store = Self::build(
            new_model,
            self.metrics.clone(),
            self.fetcher.clone(),
            self.options,
            Some(self),
        );
        for old in &self.sources {
            if !store.sources.iter().any(|s| s.id == old.id) {
                let labels = old.labels();
                // Absent series are fine: removal only tidies /metrics.
                let _ = store.metrics.age.remove_label_values(&labels);
                let _ = store.metrics.max_stale.remove_label_values(&labels);
                let _ = store.metrics.keys.remove_label_values(&labels);
            }
        }
        Arc::new(store)
    }

    fn build(
        model: &Model,
        metrics: Metrics,
        fetcher: Fetcher,
        options: KeyStoreOptions,
        previous: Option<&KeyStore>,
    ) -> KeyStore {
        let mut found: Vec<(SourceId, KeyLifecycle, String)> = Vec::new();
        let mut policies = Vec::with_capacity(model.policies.len());
        for pm in &model.policies {
            let mut policy = PolicyKeys {
                name: pm.policy.name.clone(),
                static_keys: Vec::new(),
                sources: Vec::new(),
                groups: pm.policy.any_of.len(),
                try_all_keys: pm.policy.try_all_signing_keys,
            };
            for (index, source) in pm.key_sources.iter().enumerate() {
                let (groups, configured) = source_scope(pm, index);
                if let KeySource::Static { keys, .. } = source {
                    policy.static_keys.extend(keys.iter().map(|k| {
                        let mut key = k.clone();
                        key.groups = groups;
                        key
                    }));
                }
                let Some((id, lifecycle)) = SourceId::of(source) else {
                    continue;
                };
                let idx = match found.iter().position(|(known, _, _)| *known == id) {
                    Some(idx) => {
                        found[idx].1 = strictest(&found[idx].1, &lifecycle);
                        idx
                    }
                    None => {
                        let label = issuer_label(&id, configured);
                        found.push((id, lifecycle, label));
                        found.len() - 1
                    }
                };
                let extra = match source {
                    KeySource::OpenIdConfig { issuers, .. } => issuers.as_slice(),
                    _ => &[],
                };
                match policy.sources.iter_mut().find(|s| s.idx == idx) {
                    Some(known) => {
                        known.extra_issuers.extend_from_slice(extra);
                        known.groups |= groups;
                        known.configured.push(configured.to_vec());
                    }
                    None => policy.sources.push(PolicySource {
                        idx,
                        extra_issuers: extra.to_vec(),
                        groups,
                        configured: vec![configured.to_vec()],
                    }),
                }
            }
            policies.push(policy);
        }
        let sources = found
            .into_iter()
            .map(|(id, lifecycle, label)| {
                let carried = previous
                    .and_then(|p| p.sources.iter().find(|s| s.id == id))
                    .map(|s| s.state().clone());
                Arc::new(RemoteSource::new(id, label, lifecycle, carried))
            })
            .collect();
        let by_name = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let store = KeyStore {
            sources,
            snapshots: policies.iter().map(|_| ArcSwap::default()).collect(),
            policies,
            by_name,
            missing: Arc::new(KeySnapshot {
                unavailable: true,
                ..KeySnapshot::default()
            }),
            fetcher,
            metrics,
            options,
        };
        for p in 0..store.policies.len() {
            store.publish_policy(p);
        }
        for s in 0..store.sources.len() {
            store.update_metrics(s);
        }
        store
    }

    /// The current keys of a policy. Lock-free and await-free. An id out of range gets an empty,
    /// unavailable snapshot.
    pub fn snapshot(&self, policy: PolicyId) -> Arc<KeySnapshot> {
        match self.snapshots.get(policy.index()) {
            Some(slot) => slot.load_full(),
            None => self.missing.clone(),
        }
    }

    /// Id of the policy named `name` (for [`KeyStore::snapshot`]).
    pub fn policy_id(&self, name: &str) -> Option<PolicyId> {
        self.by_name.get(name).copied().map(PolicyId::new)
    }

    /// The current keys of the policy named `name`.
    pub fn snapshot_by_name(&self, name: &str) -> Option<Arc<KeySnapshot>> {
        self.policy_id(name).map(|id| self.snapshot(id))
    }

    /// True when every remote source has usable keys (fetched, not beyond max-stale). Static
    /// sources are always ready. This is what `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        let now = Instant::now();
        self.sources
            .iter()
            .all(|s| s.state().usable_keys(now, s.lifecycle.max_stale).is_some())
    }

    /// Called when a token names a `kid` the policy's snapshot lacks. Refetches each of the
    /// policy's remote sources, at most once per `unknown-kid-cooldown` per source:
    /// - within the cooldown of the last unknown-kid refetch: return at once (suppressed, counted),
    ///   unless that refetch is still in flight: then wait for it and use its result (coalesced);
    /// - outside the cooldown with a background fetch in flight: wait for it (coalesced);
    /// - else: fetch now (the cooldown starts), and return the rebuilt snapshot. If the caller is
    ///   dropped mid-fetch (client gone), the cooldown it started is withdrawn.
    ///
    /// Returns the policy's snapshot afterwards; if it still lacks the kid, the token fails with
    /// `TokenSignatureKeyNotFound` (or `KeysUnavailable` when the snapshot is unavailable). A
    /// waiting caller is bounded by the fetch timeouts.
    pub async fn refetch_for_unknown_kid(
        &self,
        policy_id: PolicyId,
        kid: &str,
    ) -> Arc<KeySnapshot> {
        let Some(policy) = self.policies.get(policy_id.index()) else {
            return self.missing.clone();
        };
        let current = self.snapshot(policy_id);
        if current.keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
            return current;
        }
        tracing::debug!(policy = %policy.name, kid, "unknown kid: refetching keys");
        for source in &policy.sources {
            self.refetch_source(source.idx).await;
        }
        self.snapshot(policy_id)
    }

    /// Fetches every remote source of the policy now, once, as the refresher would (each under
    /// its fetch lock): for `portcullis explain`, which has no refresher running and judges one
    /// request with the keys the gateway would have.
    pub async fn fetch_now(&self, policy_id: PolicyId) {
        let Some(policy) = self.policies.get(policy_id.index()) else {
            return;
        };
        for source in &policy.sources {
            let _guard = self.sources[source.idx].fetch_lock.lock().await;
            self.fetch_source(source.idx, "explain").await;
        }
    }

    async fn refetch_source(&self, idx: usize) {
        let src = &self.sources[idx];
        let arrived = Instant::now();
        let _guard = match src.fetch_lock.try_lock() {
            Ok(guard) => guard,
            Err(_) if src.fails_fast(arrived) => {
                self.count_suppressed(src, "cooldown");
                return;
            }
            Err(_) => {
                let guard = src.fetch_lock.lock().await;
                if src.state().last_completed.is_some_and(|t| t >= arrived) {
                    self.count_suppressed(src, "coalesced");
                    return;
                }
                guard
            }
        };
        let Some(pending) = src.begin_unknown_kid(arrived) else {
            self.count_suppressed(src, "cooldown");
            return;
        };
        self.fetch_source(idx, "unknown-kid").await;
        pending.finish();
    }

    fn count_suppressed(&self, src: &RemoteSource, why: &str) {
        let [issuer, source] = src.labels();
        self.metrics
            .suppressed
            .with_label_values(&[issuer, source, why])
            .inc();
    }

    /// The background refresher: fetches every remote source now (sources carried over by
    /// [`KeyStore::rebuild`] keep their schedule), retries failures with exponential backoff and
    /// jitter, refreshes per `Cache-Control: max-age` within bounds (else `refresh-interval`),
    /// marks a source unavailable once its keys pass `max-stale`. Returns when `shutdown` becomes
    /// true or its sender is dropped; an in-flight fetch is abandoned then.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for idx in 0..self.sources.len() {
            tasks.spawn(self.clone().refresh_loop(idx, shutdown.clone()));
        }
        tasks.spawn(self.clone().metrics_loop(shutdown));
        while tasks.join_next().await.is_some() {}
    }

    async fn refresh_loop(self: Arc<Self>, idx: usize, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let work = async {
                tokio::time::sleep_until(self.next_wake(idx)).await;
                self.refresh_if_due(idx).await;
            };
            tokio::select! {
                () = work => {}
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Next fetch, or the moment the last good keys go stale, whichever comes first.
    fn next_wake(&self, idx: usize) -> Instant {
        let src = &self.sources[idx];
        let st = src.state();
        let now = Instant::now();
        match st.stale_at(src.lifecycle.max_stale) {
            Some(stale) if stale >= now => st.next_due.min(stale + Duration::from_millis(1)),
            _ => st.next_due,
        }
    }

    async fn refresh_if_due(&self, idx: usize) {
        let src = &self.sources[idx];
        let _guard = src.fetch_lock.lock().await;
        if Instant::now() >= src.state().next_due {
            self.fetch_source(idx, "refresh").await;
        } else {
            // Woken by max-stale, or an unknown-kid refetch ran meanwhile.
            self.publish_users(idx);
            self.update_metrics(idx);
        }
    }

    /// Fetch source `idx` now, record the outcome, publish. The caller holds its fetch lock.
    async fn fetch_source(&self, idx: usize, trigger: &'static str) {
        let src = &self.sources[idx];
        let labels = src.labels();
        self.metrics.fetches.with_label_values(&labels).inc();
        let kind = match src.id.kind {
            RemoteKind::OpenIdConfig => "openid-config",
            RemoteKind::JwksUri => "jwks-uri",
        };
        let mut span = self.fetcher.span(&src.id.url, kind, trigger);
        let outcome = src.fetch(&self.fetcher).await;
        if let Some(span) = span.as_mut() {
            record_fetch(span, &outcome);
        }
        let issuer_changed = src.record(&outcome, &self.options.refresh);
        match &outcome {
            Ok(fetched) => {
                tracing::info!(source = %src.id.url, keys = fetched.keys.len(), trigger,
                    issuer = fetched.issuer.as_deref().unwrap_or(""), "signing keys fetched");
                if let (true, Some(issuer)) = (issuer_changed, &fetched.issuer) {
                    self.check_discovered_issuer(idx, issuer);
                }
            }
            Err(err) => {
                let [issuer, source] = labels;
                self.metrics
                    .failures
                    .with_label_values(&[issuer, source, err.reason()])
                    .inc();
                tracing::warn!(source = %src.id.url, reason = err.reason(), error = %err, trigger,
                    "signing key fetch failed; last good keys serve until max-stale");
            }
        }
        self.publish_users(idx);
        self.update_metrics(idx);
    }

    /// Trace every fetch from now on (the gateway's `server.telemetry`): a span per fetch with the
    /// source URL and the outcome. Stores a reload makes from this one keep tracing.
    pub fn trace_fetches(&self, tracer: opentelemetry::global::BoxedTracer) {
        self.fetcher.trace_with(tracer);
    }

    /// A policy (or `any-of` group) that lists issuers checks tokens against those, not the
    /// discovered one; say so when the discovery document names an issuer it does not list.
    fn check_discovered_issuer(&self, idx: usize, discovered: &str) {
        for policy in &self.policies {
            let Some(source) = policy.sources.iter().find(|s| s.idx == idx) else {
                continue;
            };
            for configured in &source.configured {
                if !configured.is_empty() && !configured.iter().any(|i| i == discovered) {
                    tracing::warn!(policy = %policy.name, source = %self.sources[idx].id.url,
                        discovered, configured = ?configured,
                        "discovery issuer is not among the policy's issuers; the configured issuers are enforced");
                }
            }
        }
    }

    fn publish_users(&self, idx: usize) {
        for (p, policy) in self.policies.iter().enumerate() {
            if policy.sources.iter().any(|s| s.idx == idx) {
                self.publish_policy(p);
            }
        }
    }

    /// Rebuild and publish the snapshot of policy `p` from its sources' current state. Keys of
    /// an openid-config source are bound to the issuers they speak for (the discovered one plus
    /// the source's extra issuers for this policy); a key published by several sources speaks for
    /// the issuers of each, and belongs to the `any-of` groups of each.
    fn publish_policy(&self, p: usize) {
        let policy = &self.policies[p];
        let now = Instant::now();
        let mut keys = policy.static_keys.clone();
        let mut issuers: Vec<String> = Vec::new();
        let mut groups = vec![DiscoveredIssuers::default(); policy.groups];
        let mut unavailable = false;
        let mut issuers_pending = false;
        for source in &policy.sources {
            let src = &self.sources[source.idx];
            let st = src.state();
            let discovery = src.id.kind == RemoteKind::OpenIdConfig;
            let in_source = |g: &usize| {
                u32::try_from(*g)
                    .ok()
                    .and_then(|g| 1u64.checked_shl(g))
                    .is_some_and(|bit| source.groups & bit != 0)
            };
            if let Some(issuer) = &st.issuer {
                push_new(&mut issuers, issuer);
                for g in (0..groups.len()).filter(in_source) {
                    push_new(&mut groups[g].issuers, issuer);
                }
            } else if discovery {
                issuers_pending = true;
                for g in (0..groups.len()).filter(in_source) {
                    groups[g].pending = true;
                }
            }
            let Some(usable) = st.usable_keys(now, src.lifecycle.max_stale) else {
                unavailable = true;
                continue;
            };
            let binding: Option<Arc<[String]>> = discovery.then(|| {
                let mut speaks_for: Vec<String> = st.issuer.iter().cloned().collect();
                for issuer in &source.extra_issuers {
                    push_new(&mut speaks_for, issuer);
                }
                speaks_for.into()
            });
            for key in usable {
                let same = keys
                    .iter_mut()
                    .find(|k| k.fingerprint == key.fingerprint && k.kid == key.kid);
                match (same, &binding) {
                    (Some(known), Some(bound)) => {
                        merge_binding(known, bound);
                        known.groups |= source.groups;
                    }
                    (Some(known), None) => {
                        known.issuers = None;
                        known.groups |= source.groups;
                    }
                    (None, binding) => {
                        let mut key = key.clone();
                        key.issuers = binding.clone();
                        key.groups = source.groups;
                        keys.push(key);
                    }
                }
            }
        }
        self.snapshots[p].store(Arc::new(KeySnapshot {
            keys: keys.into(),
            issuers: issuers.into(),
            unavailable,
            issuers_pending,
            groups: groups.into(),
            try_all_keys: policy.try_all_keys,
            generation: Generation::fresh(),
        }));
    }

    async fn metrics_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(METRICS_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for idx in 0..self.sources.len() {
                        self.update_metrics(idx);
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    fn update_metrics(&self, idx: usize) {
        let src = &self.sources[idx];
        let labels = src.labels();
        let now = Instant::now();
        let st = src.state();
        let usable = st
            .usable_keys(now, src.lifecycle.max_stale)
            .map_or(0, <[_]>::len);
        let age = st
            .last_success
            .map_or(-1.0, |t| now.saturating_duration_since(t).as_secs_f64());
        drop(st);
        self.metrics
            .keys
            .with_label_values(&labels)
            .set(i64::try_from(usable).unwrap_or(i64::MAX));
        self.metrics.age.with_label_values(&labels).set(age);
        self.metrics
            .max_stale
            .with_label_values(&labels)
            .set(src.lifecycle.max_stale.as_secs_f64());
    }
}

fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|known| known == item) {
        list.push(item.to_owned());
    }
}

/// A key published by another source too: it speaks for the issuers of both (an unbound copy,
/// from a static or jwks-uri source, stays unbound).
fn merge_binding(key: &mut VerifyingKey, more: &Arc<[String]>) {
    if let Some(bound) = &key.issuers {
        let mut all = bound.to_vec();
        all.extend(more.iter().filter(|i| !bound.contains(i)).cloned());
        key.issuers = Some(all.into());
    }
}

/// How often the key-set age gauge is updated between fetches.
const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// Several policies naming the same URL share one source; it gets the shortest of each knob.
fn strictest(a: &KeyLifecycle, b: &KeyLifecycle) -> KeyLifecycle {
    KeyLifecycle {
        unknown_kid_cooldown: a.unknown_kid_cooldown.min(b.unknown_kid_cooldown),
        refresh_interval: a.refresh_interval.min(b.refresh_interval),
        min_refresh_interval: a.min_refresh_interval.min(b.min_refresh_interval),
        max_stale: a.max_stale.min(b.max_stale),
    }
}

/// The `issuer` metric label of a source, fixed when the source is created so series never split:
/// for openid-config the URL without `/.well-known/openid-configuration` (what OpenID Discovery
/// says the issuer is); for jwks-uri the first configured issuer of the first policy using it.
fn issuer_label(id: &SourceId, configured: &[String]) -> String {
    match id.kind {
        RemoteKind::OpenIdConfig => id
            .url
            .strip_suffix("/.well-known/openid-configuration")
            .unwrap_or(&id.url)
            .to_owned(),
        RemoteKind::JwksUri => configured.first().cloned().unwrap_or_default(),
    }
}

/// The outcome of a fetch on its span, which ends.
fn record_fetch(
    span: &mut opentelemetry::global::BoxedSpan,
    outcome: &Result<FetchedKeys, FetchError>,
) {
    use opentelemetry::trace::{Span as _, Status};
    use opentelemetry::KeyValue;
    match outcome {
        Ok(fetched) => {
            span.set_attribute(KeyValue::new("portcullis.key_fetch.outcome", "ok"));
            let keys = i64::try_from(fetched.keys.len()).unwrap_or(i64::MAX);
            span.set_attribute(KeyValue::new("portcullis.key_fetch.keys", keys));
            if let Some(issuer) = &fetched.issuer {
                span.set_attribute(KeyValue::new("portcullis.issuer", issuer.clone()));
            }
        }
        Err(err) => {
            span.set_attribute(KeyValue::new("portcullis.key_fetch.outcome", err.reason()));
            span.set_status(Status::error(err.reason()));
        }
    }
    span.end();
}
