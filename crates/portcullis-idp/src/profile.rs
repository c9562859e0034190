//! Token profiles: the same grant yields tokens shaped like the issuer being imitated (issuer
//! form, `aud`, `scp` vs `scope`, `roles` vs `realm_access.roles`, tenant and client claims, URI
//! claim names, the STS's XML-DSig `alg`). Pure functions from a [`TokenSpec`] to claims.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Which issuer the tokens imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Neutral OIDC: `scope` string, `roles` array.
    #[default]
    Plain,
    /// Entra ID v1 tokens: issuer `<origin>/<tid>/`, `appid`, `scp`, `roles`, `ver: 1.0`.
    EntraV1,
    /// Entra ID v2 tokens: issuer `<origin>/<tid>/v2.0`, `azp`, `scp`, `roles`, `ver: 2.0`.
    EntraV2,
    /// Keycloak: `scope` string, `realm_access.roles`, `resource_access.<client>.roles`, `azp`.
    Keycloak,
    /// .NET STS: XML-DSig URI `alg`, hex thumbprint `kid`, URI claim names, `aud: client`.
    DotnetSts,
}

/// Claim names of the .NET STS profile.
pub mod sts {
    /// Name claim.
    pub const NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
    /// Role claim (an array).
    pub const ROLE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";
    /// Tenant id claim.
    pub const TENANT_ID: &str = "http://schemas.microsoft.com/identity/claims/tenantid";
    /// The fixed audience.
    pub const AUDIENCE: &str = "client";
}

/// What a token is about, independent of its shape.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// `sub`.
    pub subject: &'a str,
    /// The client the token was issued to (`azp`, `appid`, `client_id`).
    pub client_id: Option<&'a str>,
    /// The user's name for user tokens.
    pub username: Option<&'a str>,
    /// `aud`.
    pub audience: &'a str,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// Roles.
    pub roles: &'a [String],
    /// Extra claims, merged last (they win).
    pub extra: &'a Map<String, Value>,
    /// Tenant id (`tid`).
    pub tenant: &'a str,
    /// Lifetime.
    pub lifetime: Duration,
    /// Issued-at, seconds since the epoch.
    pub now: u64,
    /// How the client authenticated: "0" none, "1" secret, "2" certificate/assertion.
    pub client_auth: &'static str,
    /// An application token (client_credentials): Entra profiles then omit `scp`.
    pub app_only: bool,
}

/// The configured issuer and its origin (`scheme://host:port`), for the Entra issuer forms.
#[derive(Debug, Clone)]
pub struct Issuers {
    /// The configured issuer.
    pub base: String,
    /// Its origin.
    pub origin: String,
}

impl Issuers {
    /// Splits the configured issuer.
    pub fn new(base: String) -> Self {
        let origin = url::Url::parse(&base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| base.clone());
        Self { base, origin }
    }

    /// The `iss` a profile's tokens carry for a tenant.
    pub fn for_profile(&self, profile: Profile, tenant: &str) -> String {
        match profile {
            Profile::EntraV1 => format!("{}/{tenant}/", self.origin),
            Profile::EntraV2 => format!("{}/{tenant}/v2.0", self.origin),
            Profile::Plain | Profile::Keycloak | Profile::DotnetSts => self.base.clone(),
        }
    }
}

/// The claims of a token of this profile.
pub fn claims(profile: Profile, spec: &TokenSpec<'_>, issuers: &Issuers) -> Value {
    let tenant = spec
        .extra
        .get("tid")
        .and_then(Value::as_str)
        .unwrap_or(spec.tenant);
    let mut c = Map::new();
    c.insert("iss".into(), json!(issuers.for_profile(profile, tenant)));
    c.insert("sub".into(), json!(spec.subject));
    c.insert("iat".into(), json!(spec.now));
    c.insert("nbf".into(), json!(spec.now));
    c.insert("exp".into(), json!(spec.now + spec.lifetime.as_secs()));
    c.insert(
        "jti".into(),
        json!(format!("{:032x}", rand::random::<u128>())),
    );
    let scope = spec.scopes.join(" ");
    let has_scopes = !spec.scopes.is_empty();
    let has_roles = !spec.roles.is_empty();
    match profile {
        Profile::Plain => {
            c.insert("aud".into(), json!(spec.audience));
            opt(&mut c, "client_id", spec.client_id);
            opt(&mut c, "azp", spec.client_id);
            opt(&mut c, "preferred_username", spec.username);
            when(&mut c, has_scopes, "scope", json!(scope));
            when(&mut c, has_roles, "roles", json!(spec.roles));
        }
        Profile::EntraV1 | Profile::EntraV2 => entra(&mut c, profile, spec, tenant, scope),
        Profile::Keycloak => {
            c.insert("aud".into(), json!(spec.audience));
            c.insert("typ".into(), json!("Bearer"));
            opt(&mut c, "azp", spec.client_id);
            opt(&mut c, "preferred_username", spec.username);
            c.insert("scope".into(), json!(scope));
            c.insert("realm_access".into(), json!({ "roles": spec.roles }));
            if let (Some(client), true) = (spec.client_id, has_roles) {
                c.insert(
                    "resource_access".into(),
                    json!({ client: { "roles": spec.roles } }),
                );
            }
        }
        Profile::DotnetSts => {
            c.insert("aud".into(), json!(sts::AUDIENCE));
            opt(&mut c, "client_id", spec.client_id);
            c.insert(sts::NAME.into(), json!(spec.subject));
            c.insert(sts::ROLE.into(), json!(spec.roles));
            c.insert(sts::TENANT_ID.into(), json!(tenant));
            when(&mut c, has_scopes, "scope", json!(spec.scopes));
        }
    }
    for (k, v) in spec.extra {
        c.insert(k.clone(), v.clone());
    }
    Value::Object(c)
}

fn entra(
    c: &mut Map<String, Value>,
    profile: Profile,
    spec: &TokenSpec<'_>,
    tenant: &str,
    scope: String,
) {
    let v1 = profile == Profile::EntraV1;
    c.insert("aud".into(), json!(spec.audience));
    c.insert("tid".into(), json!(tenant));
    c.insert("oid".into(), json!(spec.subject));
    c.insert("ver".into(), json!(if v1 { "1.0" } else { "2.0" }));
    let (client_claim, acr_claim) = if v1 {
        ("appid", "appidacr")
    } else {
        ("azp", "azpacr")
    };
    opt(c, client_claim, spec.client_id);
    c.insert(acr_claim.into(), json!(spec.client_auth));
    let user_claim = if v1 {
        "unique_name"
    } else {
        "preferred_username"
    };
    opt(c, user_claim, spec.username);
    when(
        c,
        !spec.scopes.is_empty() && !spec.app_only,
        "scp",
        json!(scope),
    );
    when(c, !spec.roles.is_empty(), "roles", json!(spec.roles));
}

fn opt(c: &mut Map<String, Value>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        c.insert(name.into(), json!(v));
    }
}

fn when(c: &mut Map<String, Value>, cond: bool, name: &str, value: Value) {
    if cond {
        c.insert(name.into(), value);
    }
}
