//! TEMPORARY stand-in for `portcullis_jwks::KeyStore` (same API), serving static key sources only,
//! until the key-store crate lands. Deleted when the real one is wired in.

use std::sync::Arc;

use portcullis_auth::KeySnapshot;
use portcullis_config::{KeySource, Model};
use tokio::sync::watch;

/// Keys per policy.
#[derive(Debug)]
pub struct KeyStore {
    snapshots: Vec<Arc<KeySnapshot>>,
}

impl KeyStore {
    /// Build from the model.
    pub fn new(model: &Model, _registry: &prometheus::Registry) -> Arc<KeyStore> {
        let snapshots = model
            .policies
            .iter()
            .map(|p| {
                let keys = p
                    .key_sources
                    .iter()
                    .flat_map(|s| match s {
                        KeySource::Static { keys, .. } => keys.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                Arc::new(KeySnapshot::new(keys))
            })
            .collect();
        Arc::new(KeyStore { snapshots })
    }

    /// Current keys of a policy.
    pub fn snapshot(&self, policy_idx: usize) -> Arc<KeySnapshot> {
        self.snapshots.get(policy_idx).cloned().unwrap_or_default()
    }

    /// Refetch (no-op here).
    pub async fn refetch_for_unknown_kid(
        &self,
        policy_idx: usize,
        _kid: Option<&str>,
    ) -> Arc<KeySnapshot> {
        self.snapshot(policy_idx)
    }

    /// Refresher.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let _ = shutdown.wait_for(|s| *s).await;
    }

    /// Ready.
    pub fn is_ready(&self) -> bool {
        true
    }
}
