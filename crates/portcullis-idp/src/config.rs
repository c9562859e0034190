//! idp.yaml: the raw serde shape (kebab-case, unknown keys rejected so a typo never silently
//! changes behaviour) and the checked [`IdpConfig`] the server is built from. Paths in the file are
//! resolved against the file's directory here, once, so nothing downstream guesses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::IdpError;
use crate::profile::Profile;

/// Default http listen address when the file names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default access-token lifetime (Keycloak's default, seconds).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(1800);
const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(600);
/// Tenant id used by the Entra profiles when neither the file nor the client names one.
pub const DEFAULT_TENANT_ID: &str = "7d3c1b9a-0c5e-4f2a-9b61-2f6d8e4a1c00";

/// A signature algorithm for signing keys and resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256 (RSA key).
    PS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The kind of key an algorithm needs; one signing key per kind is current. Read from the PEM
/// when a key's `alg` is omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA (RS256, PS256, RS512 for the dotnet-sts profile).
    Rsa,
    /// EC P-256 (ES256).
    P256,
    /// EC P-384 (ES384).
    P384,
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl KeyKind {
    /// The algorithm a key of this kind signs with when none is configured.
    pub fn default_alg(self) -> SigningAlg {
        match self {
            Self::Rsa => SigningAlg::RS256,
            Self::P256 => SigningAlg::ES256,
            Self::P384 => SigningAlg::ES384,
            Self::Ed25519 => SigningAlg::EdDSA,
        }
    }

    /// How a message names the kind ("an RSA key").
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA key (RS256 or PS256)",
            Self::P256 => "an EC P-256 key (ES256)",
            Self::P384 => "an EC P-384 key (ES384)",
            Self::Ed25519 => "an Ed25519 key (EdDSA)",
        }
    }
}

impl SigningAlg {
    /// The kind of key this algorithm signs with.
    pub fn kind(self) -> KeyKind {
        match self {
            Self::RS256 | Self::PS256 => KeyKind::Rsa,
            Self::ES256 => KeyKind::P256,
            Self::ES384 => KeyKind::P384,
            Self::EdDSA => KeyKind::Ed25519,
        }
    }

    /// The JOSE name (`RS256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
        }
    }

    /// The jsonwebtoken algorithm.
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::PS256 => jsonwebtoken::Algorithm::PS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::ES384 => jsonwebtoken::Algorithm::ES384,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Secret in the Authorization: Basic header (the body is accepted too).
    ClientSecretBasic,
    /// Secret as `client_secret` in the body (the Basic header is accepted too).
    ClientSecretPost,
    /// A signed `client_assertion` (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// Public client: `client_id` only (jwt-bearer and password grants).
    None,
}

/// A grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum GrantType {
    /// `client_credentials`
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// `password`
    #[serde(rename = "password")]
    Password,
    /// `refresh_token`
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer`
    #[serde(rename = "urn:ietf:params:oauth:grant-type:jwt-bearer")]
    JwtBearer,
}

impl GrantType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ClientCredentials,
            Self::Password,
            Self::RefreshToken,
            Self::JwtBearer,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

/// A duration given as integer seconds or a humantime string ("5m", "1h").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

impl RawDuration {
    fn resolve(self, key: &str) -> Result<Duration, IdpError> {
        match self {
            Self::Secs(s) => Ok(Duration::from_secs(s)),
            Self::Text(t) => humantime::parse_duration(&t)
                .map_err(|e| IdpError::Config(format!("{key}: invalid duration {t:?}: {e}"))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    https: Option<RawHttps>,
    issuer: Option<String>,
    tenant_id: Option<String>,
    #[serde(default)]
    profile: Profile,
    #[serde(default)]
    signing_keys: Vec<RawKey>,
    rotation_grace: Option<RawDuration>,
    refresh_token_lifetime: Option<RawDuration>,
    #[serde(default)]
    resources: BTreeMap<String, RawResource>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawHttps {
    listen: String,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    generate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawKey {
    id: String,
    alg: Option<SigningAlg>,
    private_key_file: Option<PathBuf>,
}

fn default_alg() -> SigningAlg {
    SigningAlg::RS256
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawResource {
    audience: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_alg")]
    signing_alg: SigningAlg,
    token_lifetime: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawClient {
    client_id: String,
    client_secret: Option<String>,
    auth_method: AuthMethod,
    certificate_file: Option<PathBuf>,
    jwks: Option<serde_json::Value>,
    jwks_file: Option<PathBuf>,
    assertion_jwks: Option<serde_json::Value>,
    assertion_jwks_file: Option<PathBuf>,
    #[serde(default = "default_grants")]
    grant_types: Vec<GrantType>,
    default_resource: Option<String>,
    profile: Option<Profile>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    identifier_uris: Vec<String>,
    #[serde(default)]
    on_behalf_of: Vec<String>,
}

fn default_grants() -> Vec<GrantType> {
    vec![GrantType::ClientCredentials]
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawUser {
    username: String,
    password: String,
    profile: Option<Profile>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    resource_roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
}

/// The https listener.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    /// Bind address (port 0 allowed).
    pub listen: SocketAddr,
    /// PEM certificate chain served.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// Generated CA certificate clients trust (only with `generate`).
    pub ca_file: PathBuf,
    /// Generate a CA + certificate for 127.0.0.1/localhost when the files are absent.
    pub generate: bool,
}

/// A configured signing key.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// `kid` (of the JWK for `alg`; other algorithms the key signs get `<id>-<ALG>`).
    pub id: String,
    /// Algorithm (decides the key type); from the PEM's key type when the file leaves it out.
    pub alg: SigningAlg,
    /// PKCS#8 PEM file; generated and written when absent. `None`: in memory only.
    pub private_key_file: Option<PathBuf>,
}

/// A resource (API) tokens are issued for.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The name in the file (what `scope=<name>/.default` and `resource=` refer to).
    pub name: String,
    /// `aud` of its tokens.
    pub audience: String,
    /// Scopes it knows.
    pub scopes: Vec<String>,
    /// Algorithm its tokens are signed with.
    pub signing_alg: SigningAlg,
    /// Access-token lifetime.
    pub token_lifetime: Duration,
}

/// Where a client's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A PEM certificate (x5t / x5t#S256 computed from it).
    Certificate(PathBuf),
    /// An inline JWKS document.
    Jwks(serde_json::Value),
    /// A JWKS file.
    JwksFile(PathBuf),
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id`.
    pub client_id: String,
    /// Secret for the client_secret_* methods.
    pub client_secret: Option<String>,
    /// Authentication method.
    pub auth_method: AuthMethod,
    /// Keys for private_key_jwt client assertions.
    pub client_keys: Option<KeySource>,
    /// Keys for jwt-bearer grant assertions.
    pub assertion_keys: Option<KeySource>,
    /// Grants it may use.
    pub grant_types: Vec<GrantType>,
    /// Resource used when the request names none.
    pub default_resource: Option<String>,
    /// Token profile override.
    pub profile: Option<Profile>,
    /// Application roles.
    pub roles: Vec<String>,
    /// Extra claims copied into its tokens.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Audiences that name this client besides its client id (Entra's Application ID URIs): a
    /// user token to one of them may be exchanged by this client on-behalf-of the user.
    pub identifier_uris: Vec<String>,
    /// Resources (names or audiences) this client may get on-behalf-of tokens for; empty: none.
    pub on_behalf_of: Vec<String>,
}

impl Client {
    /// Whether an `aud` value names this client (its id or an identifier URI).
    pub fn is_audience(&self, aud: &str) -> bool {
        aud == self.client_id || self.identifier_uris.iter().any(|u| u == aud)
    }

    /// Whether the client may get on-behalf-of tokens for `resource`.
    pub fn may_act_for(&self, resource: &Resource) -> bool {
        self.on_behalf_of
            .iter()
            .any(|r| *r == resource.name || *r == resource.audience)
    }
}

/// A user for the password grant.
#[derive(Debug, Clone)]
pub struct User {
    /// Username (also `sub` and `preferred_username`).
    pub username: String,
    /// Password.
    pub password: String,
    /// Token profile override.
    pub profile: Option<Profile>,
    /// Roles.
    pub roles: Vec<String>,
    /// Roles for particular resources (by name or audience), instead of `roles`.
    pub resource_roles: BTreeMap<String, Vec<String>>,
    /// Extra claims copied into their tokens.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl User {
    /// The user's roles in tokens for `resource`: its `resource-roles` entry, else `roles`.
    pub fn roles_for(&self, resource: &Resource) -> &[String] {
        self.resource_roles
            .get(&resource.name)
            .or_else(|| self.resource_roles.get(&resource.audience))
            .unwrap_or(&self.roles)
    }
}

/// The checked dev token server configuration.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// Http listener (port 0 allowed); `None` for https only.
    pub listen: Option<SocketAddr>,
    /// Https listener.
    pub https: Option<HttpsConfig>,
    /// Issuer; `{port}` / `{https-port}` are replaced with the bound ports. `None`: `http://<http
    /// addr>/realm` (or the https one when there is no http listener).
    pub issuer: Option<String>,
    /// Tenant id for the Entra profiles and the STS tenant claim.
    pub tenant_id: String,
    /// Default token profile.
    pub profile: Profile,
    /// Signing keys (the first of each kind signs).
    pub signing_keys: Vec<KeyConfig>,
    /// How long a rotated-out key stays published.
    pub rotation_grace: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_lifetime: Duration,
    /// Resources by name.
    pub resources: Vec<Resource>,
    /// Clients.
    pub clients: Vec<Client>,
    /// Users.
    pub users: Vec<User>,
}

impl IdpConfig {
    /// Reads and checks an idp.yaml file; relative paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, IdpError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| IdpError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base)
            .map_err(|e| IdpError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks idp.yaml text; relative paths resolve against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, IdpError> {
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|e| IdpError::Config(e.to_string()))?;
        check(raw, base_dir)
    }

    /// The configuration `portcullis idp` and `portcullis token` use without `-c`: http on
    /// 127.0.0.1:8081, one RS256 key persisted at `.portcullis/idp-keys/rsa-1.pem` (relative to
    /// `base_dir`), resource `api://default`, client `dev-client` / `dev-secret`, user `alice` /
    /// `alice`.
    pub fn default_dev(base_dir: &Path) -> Self {
        let mut config = Self::demo();
        config.listen = DEFAULT_LISTEN.parse().ok();
        config.issuer = Some("http://127.0.0.1:{port}/realm".into());
        config.signing_keys[0].private_key_file =
            Some(base_dir.join(".portcullis/idp-keys/rsa-1.pem"));
        config
    }

    /// An in-memory configuration for embedding (`portcullis demo`, tests): http on
    /// 127.0.0.1:0, issuer `http://127.0.0.1:<port>/realm`, an ephemeral RS256 key `rsa-1`,
    /// resource `api://default` (scopes `orders.read orders.write`), confidential client
    /// `dev-client` / `dev-secret` (client_credentials, password, refresh_token) and user
    /// `alice` / `alice` (role `orders-reader`).
    pub fn demo() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            https: None,
            issuer: None,
            tenant_id: DEFAULT_TENANT_ID.into(),
            profile: Profile::Plain,
            signing_keys: vec![KeyConfig {
                id: "rsa-1".into(),
                alg: SigningAlg::RS256,
                private_key_file: None,
            }],
            rotation_grace: DEFAULT_ROTATION_GRACE,
            refresh_token_lifetime: DEFAULT_REFRESH_LIFETIME,
            resources: vec![Resource {
                name: "api://default".into(),
                audience: "api://default".into(),
                scopes: vec!["orders.read".into(), "orders.write".into()],
                signing_alg: SigningAlg::RS256,
                token_lifetime: DEFAULT_TOKEN_LIFETIME,
            }],
            clients: vec![Client {
                client_id: "dev-client".into(),
                client_secret: Some("dev-secret".into()),
                auth_method: AuthMethod::ClientSecretBasic,
                client_keys: None,
                assertion_keys: None,
                grant_types: vec![
                    GrantType::ClientCredentials,
                    GrantType::Password,
                    GrantType::RefreshToken,
                ],
                default_resource: Some("api://default".into()),
                profile: None,
                roles: vec![],
                claims: serde_json::Map::new(),
                identifier_uris: vec![],
                on_behalf_of: vec![],
            }],
            users: vec![User {
                username: "alice".into(),
                password: "alice".into(),
                profile: None,
                roles: vec!["orders-reader".into()],
                resource_roles: BTreeMap::new(),
                claims: serde_json::Map::new(),
            }],
        }
    }

    /// A configured user by name.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    /// Looks a resource up by name or audience.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| r.name == name || r.audience == name)
    }
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, IdpError> {
    s.parse()
        .map_err(|e| IdpError::Config(format!("{key}: {s:?} is not an ip:port address: {e}")))
}

fn check(raw: RawConfig, base: &Path) -> Result<IdpConfig, IdpError> {
    let listen = Some(parse_addr(
        "listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
    )?);
    let https = raw.https.map(|h| check_https(h, base)).transpose()?;
    if let Some(issuer) = &raw.issuer {
        check_issuer(issuer)?;
    }
    let signing_keys = if raw.signing_keys.is_empty() {
        vec![KeyConfig {
            id: "rsa-1".into(),
            alg: SigningAlg::RS256,
            private_key_file: Some(base.join(".portcullis/idp-keys/rsa-1.pem")),
        }]
    } else {
        raw.signing_keys
            .into_iter()
            .map(|k| check_key(k, base))
            .collect::<Result<Vec<_>, _>>()?
    };
    let resources = raw
        .resources
        .into_iter()
        .map(|(name, r)| check_resource(name, r))
        .collect::<Result<Vec<_>, _>>()?;
    for r in &resources {
        if !signing_keys
            .iter()
            .any(|k| k.alg.kind() == r.signing_alg.kind())
        {
            return Err(IdpError::Config(format!(
                "resources.{}.signing-alg: {} needs a signing key of that type in signing-keys \
                 ({})",
                r.name,
                r.signing_alg.name(),
                r.signing_alg.kind().describe()
            )));
        }
    }
    check_kids(&signing_keys, &resources)?;
    let clients = raw
        .clients
        .into_iter()
        .map(|c| check_client(c, base, &resources))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IdpConfig {
        listen,
        https,
        issuer: raw.issuer,
        tenant_id: raw.tenant_id.unwrap_or_else(|| DEFAULT_TENANT_ID.into()),
        profile: raw.profile,
        signing_keys,
        rotation_grace: opt_duration(raw.rotation_grace, "rotation-grace", DEFAULT_ROTATION_GRACE)?,
        refresh_token_lifetime: opt_duration(
            raw.refresh_token_lifetime,
            "refresh-token-lifetime",
            DEFAULT_REFRESH_LIFETIME,
        )?,
        users: raw
            .users
            .into_iter()
            .map(|u| check_user(u, &resources))
            .collect::<Result<Vec<_>, _>>()?,
        resources,
        clients,
    })
}

/// The algorithm of a configured key: `alg` when given (it must fit the key in an existing
/// file), else the key type of the existing PEM file, else RS256 (a fresh RSA key is generated).
fn check_key(k: RawKey, base: &Path) -> Result<KeyConfig, IdpError> {
    let private_key_file = k.private_key_file.map(|p| base.join(p));
    let fail = |msg: String| IdpError::Config(format!("signing-keys[{}]: {msg}", k.id));
    let found = match &private_key_file {
        Some(path) if path.exists() => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("private-key-file {}: {e}", path.display())))?;
            let kind = crate::keys::kind_of_pem(&pem)
                .map_err(|e| fail(format!("private-key-file {}: {e}", path.display())))?;
            Some((path, kind))
        }
        _ => None,
    };
    let alg = match (k.alg, found) {
        (Some(alg), Some((path, kind))) if alg.kind() != kind => {
            return Err(fail(format!(
                "alg: {} does not fit the key in {}, {}; give a fitting alg or leave alg out",
                alg.name(),
                path.display(),
                kind.describe()
            )))
        }
        (Some(alg), _) => alg,
        (None, Some((_, kind))) => kind.default_alg(),
        (None, None) => SigningAlg::RS256,
    };
    Ok(KeyConfig {
        id: k.id,
        alg,
        private_key_file,
    })
}

/// Every kid the JWKS will publish is distinct (key ids and the `<id>-<ALG>` ones for the
/// further algorithms a signer signs).
fn check_kids(keys: &[KeyConfig], resources: &[Resource]) -> Result<(), IdpError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, key) in keys.iter().enumerate() {
        for (kid, _) in key_algs(keys, resources, i) {
            if !seen.insert(kid.clone()) {
                return Err(IdpError::Config(format!(
                    "signing-keys[{}]: kid {kid:?} is published twice (key ids must be unique; a key \
                     that signs several algorithms also publishes <id>-<ALG>)",
                    key.id
                )));
            }
        }
    }
    Ok(())
}

/// The (kid, algorithm) pairs key `index` is published under: its own `alg` under its id, and,
/// when it is the signer of its kind (the first key of that kind), every other algorithm of that
/// kind a resource is signed with under `<id>-<ALG>`.
pub fn key_algs(
    keys: &[KeyConfig],
    resources: &[Resource],
    index: usize,
) -> Vec<(String, SigningAlg)> {
    let key = &keys[index];
    let kind = key.alg.kind();
    let mut algs = vec![(key.id.clone(), key.alg)];
    if keys[..index].iter().all(|k| k.alg.kind() != kind) {
        for r in resources {
            let alg = r.signing_alg;
            if alg.kind() == kind && !algs.iter().any(|(_, a)| *a == alg) {
                algs.push((derived_kid(&key.id, alg), alg));
            }
        }
    }
    algs
}

/// The kid of a key's JWK for an algorithm other than its own.
pub fn derived_kid(id: &str, alg: SigningAlg) -> String {
    format!("{id}-{}", alg.name())
}

fn check_user(u: RawUser, resources: &[Resource]) -> Result<User, IdpError> {
    if let Some(r) = u
        .resource_roles
        .keys()
        .find(|r| !resources.iter().any(|x| &x.name == *r || &x.audience == *r))
    {
        return Err(IdpError::Config(format!(
            "users[{}].resource-roles: {r:?} is not in resources",
            u.username
        )));
    }
    Ok(User {
        username: u.username,
        password: u.password,
        profile: u.profile,
        roles: u.roles,
        resource_roles: u.resource_roles,
        claims: u.claims,
    })
}

fn opt_duration(
    raw: Option<RawDuration>,
    key: &str,
    default: Duration,
) -> Result<Duration, IdpError> {
    raw.map_or(Ok(default), |d| d.resolve(key))
}

fn check_issuer(issuer: &str) -> Result<(), IdpError> {
    let probe = issuer.replace("{https-port}", "1").replace("{port}", "1");
    let url = url::Url::parse(&probe)
        .map_err(|e| IdpError::Config(format!("issuer: {issuer:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.path().trim_matches('/').is_empty() {
        return Err(IdpError::Config(format!(
            "issuer: {issuer:?} must be an http(s) URL with a path segment, e.g. http://127.0.0.1:8081/realm"
        )));
    }
    Ok(())
}

fn check_https(h: RawHttps, base: &Path) -> Result<HttpsConfig, IdpError> {
    let listen = parse_addr("https.listen", &h.listen)?;
    let dir = base.join(".portcullis/idp-tls");
    let (cert_file, key_file) = match (h.cert_file, h.key_file, h.generate) {
        (Some(c), Some(k), _) => (base.join(c), base.join(k)),
        (None, None, true) => (dir.join("cert.pem"), dir.join("key.pem")),
        _ => {
            return Err(IdpError::Config(
                "https: give both cert-file and key-file, or generate: true".into(),
            ))
        }
    };
    let ca_file = h
        .ca_file
        .map_or_else(|| cert_file.with_file_name("ca.pem"), |p| base.join(p));
    Ok(HttpsConfig {
        listen,
        cert_file,
        key_file,
        ca_file,
        generate: h.generate,
    })
}

fn check_resource(name: String, r: RawResource) -> Result<Resource, IdpError> {
    let key = format!("resources.{name}.token-lifetime");
    Ok(Resource {
        audience: r.audience.unwrap_or_else(|| name.clone()),
        scopes: r.scopes,
        signing_alg: r.signing_alg,
        token_lifetime: opt_duration(r.token_lifetime, &key, DEFAULT_TOKEN_LIFETIME)?,
        name,
    })
}

fn key_source(
    inline: Option<serde_json::Value>,
    file: Option<PathBuf>,
    cert: Option<PathBuf>,
    base: &Path,
) -> Option<KeySource> {
    cert.map(|c| KeySource::Certificate(base.join(c)))
        .or_else(|| inline.map(KeySource::Jwks))
        .or_else(|| file.map(|f| KeySource::JwksFile(base.join(f))))
}

fn check_client(c: RawClient, base: &Path, resources: &[Resource]) -> Result<Client, IdpError> {
    let id = &c.client_id;
    let client_keys = key_source(c.jwks, c.jwks_file, c.certificate_file, base);
    let assertion_keys = key_source(c.assertion_jwks, c.assertion_jwks_file, None, base);
    let fail = |msg: &str| Err(IdpError::Config(format!("clients[{id}]: {msg}")));
    match c.auth_method {
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
            if c.client_secret.is_none() =>
        {
            return fail("client-secret is required for client_secret_basic/post")
        }
        AuthMethod::PrivateKeyJwt if client_keys.is_none() => {
            return fail("private_key_jwt needs certificate-file, jwks or jwks-file")
        }
        _ => {}
    }
    if c.grant_types.contains(&GrantType::JwtBearer) && assertion_keys.is_none() {
        return fail("the jwt-bearer grant needs assertion-jwks or assertion-jwks-file");
    }
    let known = |r: &String| resources.iter().any(|x| &x.name == r || &x.audience == r);
    if let Some(r) = c.default_resource.as_ref().filter(|r| !known(r)) {
        return fail(&format!("default-resource {r:?} is not in resources"));
    }
    if let Some(r) = c.on_behalf_of.iter().find(|r| !known(r)) {
        return fail(&format!("on-behalf-of: {r:?} is not in resources"));
    }
    if !c.on_behalf_of.is_empty() && matches!(c.auth_method, AuthMethod::None) {
        return fail("on-behalf-of needs a confidential client (auth-method other than none)");
    }
    Ok(Client {
        client_id: c.client_id,
        client_secret: c.client_secret,
        auth_method: c.auth_method,
        client_keys,
        assertion_keys,
        grant_types: c.grant_types,
        default_resource: c.default_resource,
        profile: c.profile,
        roles: c.roles,
        claims: c.claims,
        identifier_uris: c.identifier_uris,
        on_behalf_of: c.on_behalf_of,
    })
}
