//! The running token server's state: config, issuer, the swappable key ring, the clients' loaded
//! verification keys and the refresh-token store; and the one place tokens are signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use crate::assertion::KeySet;
use crate::config::{key_algs, Client, IdpConfig, KeyKind, SigningAlg};
use crate::error::IdpError;
use crate::keys::{KeyRing, SigningKey, XMLDSIG_RSA_SHA512};
use crate::profile::{self, Issuers, Profile, TokenSpec};

/// A client with its verification keys loaded once at start.
#[derive(Debug)]
pub struct LoadedClient {
    /// The configured client.
    pub client: Client,
    /// private_key_jwt keys.
    pub client_keys: Option<KeySet>,
    /// jwt-bearer grant keys.
    pub assertion_keys: Option<KeySet>,
}

/// What a refresh token stands for.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// Client it was issued to.
    pub client_id: String,
    /// `sub`.
    pub subject: String,
    /// User name (password grant).
    pub username: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Extra claims.
    pub claims: Map<String, Value>,
    /// Resource name.
    pub resource: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Profile.
    pub profile: Profile,
    /// How the client authenticated originally.
    pub client_auth: &'static str,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
}

/// Arguments of [`Idp::mint`] (and `portcullis token`).
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// `sub`.
    pub subject: String,
    /// `aud`.
    pub audience: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Profile (default: the config's).
    pub profile: Option<Profile>,
    /// Algorithm (default: the audience's resource's `signing-alg`, else the first key's).
    pub alg: Option<SigningAlg>,
    /// Client id (`azp`, `appid`, `client_id`).
    pub client_id: Option<String>,
    /// Extra claims, merged last.
    pub claims: Map<String, Value>,
}

impl MintRequest {
    /// A request for `sub` / `aud` with a 5-minute lifetime and nothing else.
    pub fn new(subject: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            audience: audience.into(),
            scopes: Vec::new(),
            roles: Vec::new(),
            ttl: crate::config::DEFAULT_TOKEN_LIFETIME,
            profile: None,
            alg: None,
            client_id: None,
            claims: Map::new(),
        }
    }
}

/// The token server's state.
#[derive(Debug)]
pub struct Idp {
    /// The checked config.
    pub config: IdpConfig,
    /// The issuer and its origin.
    pub issuers: Issuers,
    ring: ArcSwap<KeyRing>,
    /// Clients by id.
    pub clients: HashMap<String, LoadedClient>,
    /// Refresh tokens (rotating: taken out on use).
    pub refresh: Mutex<HashMap<String, RefreshGrant>>,
}

impl Idp {
    /// Loads keys (generating and persisting them as configured) and clients' keys.
    pub fn new(config: IdpConfig, issuer: String) -> Result<Self, IdpError> {
        let keys = config
            .signing_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let algs = key_algs(&config.signing_keys, &config.resources, i);
                SigningKey::load_or_generate(k, algs)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let load = |s: &Option<crate::config::KeySource>| s.as_ref().map(KeySet::load).transpose();
        let clients = config
            .clients
            .iter()
            .map(|c| {
                let loaded = LoadedClient {
                    client: c.clone(),
                    client_keys: load(&c.client_keys)?,
                    assertion_keys: load(&c.assertion_keys)?,
                };
                Ok((c.client_id.clone(), loaded))
            })
            .collect::<Result<HashMap<_, _>, IdpError>>()?;
        Ok(Self {
            config,
            issuers: Issuers::new(issuer),
            ring: ArcSwap::from_pointee(KeyRing::new(keys)),
            clients,
            refresh: Mutex::new(HashMap::new()),
        })
    }

    /// The current key ring.
    pub fn ring(&self) -> arc_swap::Guard<Arc<KeyRing>> {
        self.ring.load()
    }

    /// Replaces every signer with a fresh key; the old ones stay published for the grace period.
    /// Returns the ids of the active keys.
    pub fn rotate(&self) -> Result<Vec<String>, IdpError> {
        let next = self
            .ring
            .load()
            .rotated(Instant::now(), self.config.rotation_grace)?;
        let ids = next.active_ids();
        self.ring.store(Arc::new(next));
        tracing::info!(active = ?ids, "rotated signing keys");
        Ok(ids)
    }

    /// Drops retired keys whose grace period is over.
    pub fn prune(&self) {
        if let Some(next) = self.ring.load().pruned(Instant::now()) {
            self.ring.store(Arc::new(next));
        }
    }

    /// Signs a token of `profile` for `spec`; `alg` picks the key (the signer of its kind) and
    /// the kid (that key's JWK for `alg`; an algorithm no JWK is published for is refused, so a
    /// token never names a JWK whose `alg` differs). The STS profile always signs RS512 with the
    /// RSA key under its thumbprint kid and names the algorithm by its XML-DSig URI.
    pub fn issue(
        &self,
        profile: Profile,
        spec: &TokenSpec<'_>,
        alg: SigningAlg,
    ) -> Result<String, IdpError> {
        let ring = self.ring.load();
        let claims = profile::claims(profile, spec, &self.issuers);
        let kind = if profile == Profile::DotnetSts {
            KeyKind::Rsa
        } else {
            alg.kind()
        };
        let key = ring
            .signer(kind)
            .ok_or_else(|| IdpError::Sign(format!("no {kind:?} signing key configured")))?;
        if profile == Profile::DotnetSts {
            let kid = key.sts_kid.as_deref().unwrap_or(&key.id);
            let header = json!({"alg": XMLDSIG_RSA_SHA512, "kid": kid, "typ": "JWT"});
            return key.sign(&header, &claims, jsonwebtoken::Algorithm::RS512);
        }
        let kid =
            key.kid_for(alg).ok_or_else(|| {
                IdpError::Sign(format!(
                "no JWK is published for {} (key {} publishes {}): give a signing key alg: {0} or \
                 a resource signing-alg: {0}",
                alg.name(),
                key.id,
                key.algs().map(SigningAlg::name).collect::<Vec<_>>().join(", ")
            ))
            })?;
        let header = json!({"alg": alg.name(), "kid": kid, "typ": "JWT"});
        key.sign(&header, &claims, alg.jose())
    }

    /// Mints a token directly (no client, no grant): `portcullis token`, the demo, tests.
    pub fn mint(&self, req: &MintRequest, now: u64) -> Result<String, IdpError> {
        let spec = TokenSpec {
            subject: &req.subject,
            client_id: req.client_id.as_deref(),
            username: None,
            audience: &req.audience,
            scopes: &req.scopes,
            roles: &req.roles,
            extra: &req.claims,
            tenant: &self.config.tenant_id,
            lifetime: req.ttl,
            now,
            client_auth: "1",
            app_only: false,
        };
        let profile = req.profile.unwrap_or(self.config.profile);
        self.issue(profile, &spec, self.mint_alg(req))
    }

    /// The algorithm a minted token is signed with: the requested one, else the resource's
    /// whose audience it is for, else the first signing key's.
    fn mint_alg(&self, req: &MintRequest) -> SigningAlg {
        req.alg
            .or_else(|| self.config.resource(&req.audience).map(|r| r.signing_alg))
            .or_else(|| self.config.signing_keys.first().map(|k| k.alg))
            .unwrap_or(SigningAlg::RS256)
    }
}

/// Seconds since the Unix epoch: the crate's one reading of the wall clock.
#[allow(clippy::disallowed_methods)] // the idp's single clock: token iat/exp need wall time
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
