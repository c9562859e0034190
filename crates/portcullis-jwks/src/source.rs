//! One remote key source (an openid-config or jwks-uri URL) and its fetch state.
//!
//! Why it exists: the state machine of a source (last good keys, when they were fetched, when to
//! fetch next, the unknown-kid cooldown) is independent of which policies use it, so sources
//! shared by several policies are fetched once. The state sits behind a plain mutex touched only
//! by fetches and snapshot rebuilds, never by the request path, which reads published snapshots.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use portcullis_auth::{parse_jwks, KeyFamily, VerifyingKey};
use portcullis_config::{KeyLifecycle, KeySource};
use tokio::time::Instant;

use crate::fetch::{parse_discovery, FetchError, Fetcher};
use crate::schedule::{after_failure, after_success, RefreshBounds};

/// What kind of URL a remote source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RemoteKind {
    /// OpenID discovery document (-> issuer, jwks_uri -> JWKS).
    OpenIdConfig,
    /// A JWKS URL.
    JwksUri,
}

/// Identity of a remote source: the same kind and URL in several policies is one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SourceId {
    pub(crate) kind: RemoteKind,
    pub(crate) url: String,
}

impl SourceId {
    /// The remote identity and lifecycle of a config key source (`None` for static keys).
    pub(crate) fn of(source: &KeySource) -> Option<(SourceId, KeyLifecycle)> {
        match source {
            KeySource::OpenIdConfig { url, lifecycle, .. } => Some((
                SourceId {
                    kind: RemoteKind::OpenIdConfig,
                    url: url.clone(),
                },
                *lifecycle,
            )),
            KeySource::JwksUri { url, lifecycle } => Some((
                SourceId {
                    kind: RemoteKind::JwksUri,
                    url: url.clone(),
                },
                *lifecycle,
            )),
            KeySource::Static { .. } => None,
        }
    }
}

/// The mutable state of a source.
#[derive(Debug, Clone)]
pub(crate) struct SourceState {
    /// Last good key set (empty until the first successful fetch).
    pub(crate) keys: Arc<[VerifyingKey]>,
    /// Issuer of the last good discovery document.
    pub(crate) issuer: Option<String>,
    /// When the last good key set was fetched.
    pub(crate) last_success: Option<Instant>,
    /// Consecutive failed fetches.
    pub(crate) failures: u32,
    /// When the background refresher fetches next.
    pub(crate) next_due: Instant,
    /// Unknown-kid refetches are suppressed until then.
    pub(crate) cooldown_until: Option<Instant>,
    /// When the last fetch (good or bad) finished.
    pub(crate) last_completed: Option<Instant>,
    /// An unknown-kid refetch is in flight (callers wait for it rather than fail fast).
    pub(crate) unknown_kid_in_flight: bool,
}

impl SourceState {
    fn new(now: Instant) -> Self {
        SourceState {
            keys: Arc::from(Vec::new()),
            issuer: None,
            last_success: None,
            failures: 0,
            next_due: now,
            cooldown_until: None,
            last_completed: None,
            unknown_kid_in_flight: false,
        }
    }

    /// The last good keys, unless never fetched or older than `max_stale`.
    pub(crate) fn usable_keys(&self, now: Instant, max_stale: Duration) -> Option<&[VerifyingKey]> {
        let fetched = self.last_success?;
        (now.saturating_duration_since(fetched) <= max_stale).then_some(&*self.keys)
    }

    /// When the last good keys go stale (`None` when there are none).
    pub(crate) fn stale_at(&self, max_stale: Duration) -> Option<Instant> {
        self.last_success.map(|t| t + max_stale)
    }
}

/// A successful fetch.
#[derive(Debug)]
pub(crate) struct FetchedKeys {
    pub(crate) keys: Vec<VerifyingKey>,
    pub(crate) issuer: Option<String>,
    pub(crate) max_age: Option<Duration>,
}

/// One remote source.
#[derive(Debug)]
pub(crate) struct RemoteSource {
    pub(crate) id: SourceId,
    /// Label for the `issuer` metric label (stable for the life of the source).
    pub(crate) issuer_label: String,
    pub(crate) lifecycle: KeyLifecycle,
    /// Held for the duration of every fetch: concurrent fetch requests queue here and coalesce.
    pub(crate) fetch_lock: tokio::sync::Mutex<()>,
    state: Mutex<SourceState>,
}

impl RemoteSource {
    pub(crate) fn new(
        id: SourceId,
        issuer_label: String,
        lifecycle: KeyLifecycle,
        carried: Option<SourceState>,
    ) -> Self {
        let state = carried.unwrap_or_else(|| SourceState::new(Instant::now()));
        RemoteSource {
            id,
            issuer_label,
            lifecycle,
            fetch_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
        }
    }

    /// Lock the state (a poisoned lock still holds consistent plain data).
    pub(crate) fn state(&self) -> MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start an unknown-kid refetch: `None` within the cooldown, else the cooldown starts now.
    pub(crate) fn begin_unknown_kid(&self, arrived: Instant) -> Option<UnknownKidFetch<'_>> {
        let mut st = self.state();
        if st.cooldown_until.is_some_and(|until| arrived < until) {
            return None;
        }
        let previous_cooldown = st
            .cooldown_until
            .replace(arrived + self.lifecycle.unknown_kid_cooldown);
        st.unknown_kid_in_flight = true;
        Some(UnknownKidFetch {
            src: self,
            previous_cooldown,
            done: false,
        })
    }

    /// Within the cooldown while only a background fetch is in flight: an unknown kid fails fast
    /// instead of waiting for a refresh (which may be a slow retry against a hanging IdP).
    pub(crate) fn fails_fast(&self, arrived: Instant) -> bool {
        let st = self.state();
        st.cooldown_until.is_some_and(|until| arrived < until) && !st.unknown_kid_in_flight
    }

    /// Metric label values.
    pub(crate) fn labels(&self) -> [&str; 2] {
        [&self.issuer_label, &self.id.url]
    }

    /// Fetch the discovery document (if any) and the JWKS, and parse them.
    pub(crate) async fn fetch(&self, fetcher: &Fetcher) -> Result<FetchedKeys, FetchError> {
        let (issuer, jwks_uri) = match self.id.kind {
            RemoteKind::JwksUri => (None, self.id.url.clone()),
            RemoteKind::OpenIdConfig => {
                let doc = fetcher.get(&self.id.url).await?;
                let discovery = parse_discovery(&doc.body)?;
                (Some(discovery.issuer), discovery.jwks_uri)
            }
        };
        let fetched = fetcher.get(&jwks_uri).await?;
        let parsed = parse_jwks(&fetched.body, &jwks_uri).map_err(|e| FetchError::Invalid(e.0))?;
        for skipped in &parsed.skipped {
            tracing::info!(source = %self.id.url, kid = ?skipped.kid, reason = %skipped.reason,
                "JWKS entry skipped");
        }
        let keys = without_secrets(parsed.keys, &self.id.url);
        if keys.is_empty() {
            return Err(FetchError::NoKeys);
        }
        Ok(FetchedKeys {
            keys,
            issuer,
            max_age: fetched.max_age,
        })
    }

    /// Record a fetch outcome and schedule the next fetch. Returns true when a successful fetch
    /// discovered a different issuer than before (including the first one).
    pub(crate) fn record(
        &self,
        outcome: &Result<FetchedKeys, FetchError>,
        bounds: &RefreshBounds,
    ) -> bool {
        let now = Instant::now();
        let mut st = self.state();
        st.last_completed = Some(now);
        match outcome {
            Ok(fetched) => {
                st.keys = fetched.keys.clone().into();
                let previous = std::mem::replace(&mut st.issuer, fetched.issuer.clone());
                st.last_success = Some(now);
                st.failures = 0;
                st.next_due = now + after_success(fetched.max_age, &self.lifecycle, bounds);
                previous != st.issuer
            }
            Err(_) => {
                st.failures = st.failures.saturating_add(1);
                let jitter: f64 = rand::random();
                st.next_due = now + after_failure(st.failures, &self.lifecycle, bounds, jitter);
                false
            }
        }
    }
}

/// A fetched JWKS is public: a symmetric (`kty: oct`) key in it is a secret anyone can read, and
/// with it sign any token. Such keys are dropped (with a warning); HMAC keys come only from local
/// files or inline config.
fn without_secrets(keys: Vec<VerifyingKey>, source: &str) -> Vec<VerifyingKey> {
    keys.into_iter()
        .filter(|k| {
            let secret = k.family == KeyFamily::Hmac;
            if secret {
                tracing::warn!(source, kid = ?k.kid,
                    "symmetric (kty oct) key in a fetched JWKS ignored: HMAC secrets are accepted only from local files or inline config");
            }
            !secret
        })
        .collect()
}

/// An unknown-kid refetch in progress. If the caller's future is dropped before
/// [`UnknownKidFetch::finish`] (the client went away mid-fetch), the cooldown it started is
/// withdrawn, so the next unknown kid fetches again instead of failing for a whole cooldown.
#[derive(Debug)]
pub(crate) struct UnknownKidFetch<'a> {
    src: &'a RemoteSource,
    previous_cooldown: Option<Instant>,
    done: bool,
}

impl UnknownKidFetch<'_> {
    /// The fetch completed (good or bad): the cooldown stands.
    pub(crate) fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for UnknownKidFetch<'_> {
    fn drop(&mut self) {
        let mut st = self.src.state();
        st.unknown_kid_in_flight = false;
        if !self.done {
            st.cooldown_until = self.previous_cooldown;
        }
    }
}
