//! The token endpoint: client authentication (secret in Basic header or body, private_key_jwt),
//! the grants (client_credentials, password, refresh_token, RFC 7523 jwt-bearer; its
//! on-behalf-of use lives in `obo`), resource and
//! scope resolution, and RFC 6749 §5.2 error responses. No I/O: the server hands in parameters.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::config::{AuthMethod, Client, GrantType, Resource, User};
use crate::profile::{Profile, TokenSpec};
use crate::state::{Idp, LoadedClient, RefreshGrant};

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// OIDC / Keycloak scopes that name no API permission; accepted and ignored.
const IGNORED_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "offline_access",
    "roles",
    "web-origins",
];

/// A token endpoint error (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status (400 or 401).
    pub status: u16,
    /// `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
    /// Answer with `WWW-Authenticate: Basic` (the client tried Basic authentication).
    pub basic_challenge: bool,
    /// Entra's AADSTS code, sent as `error_codes` (and prefixed to the description) like Entra
    /// does; only where this server imitates a specific Entra answer (on-behalf-of).
    pub aadsts: Option<u32>,
}

impl OAuthError {
    /// A 400 answer.
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: 400,
            error,
            description: description.into(),
            basic_challenge: false,
            aadsts: None,
        }
    }

    /// A 400 answer carrying an Entra AADSTS code.
    pub(crate) fn entra(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            aadsts: Some(code),
            ..Self::new(error, format!("AADSTS{code}: {}", description.into()))
        }
    }

    /// A 401 `invalid_client`.
    pub(crate) fn client(description: impl Into<String>, basic: bool) -> Self {
        Self {
            status: 401,
            basic_challenge: basic,
            ..Self::new("invalid_client", description)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.error, "error_description": self.description});
        if let Some(code) = self.aadsts {
            body["error_codes"] = json!([code]);
        }
        body
    }
}

/// A parsed token request.
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// Body parameters (form or JSON).
    pub params: HashMap<String, String>,
    /// Credentials from `Authorization: Basic`.
    pub basic: Option<(String, String)>,
    /// The URL the request was sent to (an accepted assertion `aud`).
    pub endpoint_url: String,
    /// `scheme://host` of the request (assertion `aud` values under it are accepted).
    pub origin: String,
}

impl TokenRequest {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.param(name)
            .ok_or_else(|| OAuthError::new("invalid_request", format!("missing parameter {name}")))
    }
}

/// Parses `Authorization: Basic` (RFC 6749 §2.3.1: both parts form-urlencoded).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .map_or_else(|| s.to_owned(), |(_, v)| v)
    };
    Some((unescape(id), unescape(secret)))
}

struct Authenticated<'a> {
    client: &'a LoadedClient,
    /// azpacr / appidacr: "0" public, "1" secret, "2" assertion.
    strength: &'static str,
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authenticate<'a>(
    idp: &'a Idp,
    req: &TokenRequest,
    now: f64,
) -> Result<Authenticated<'a>, OAuthError> {
    let basic = req.basic.is_some();
    let lookup = |id: &str| {
        idp.clients
            .get(id)
            .ok_or_else(|| OAuthError::client(format!("unknown client {id:?}"), basic))
    };
    if let Some((id, secret)) = &req.basic {
        let client = lookup(id)?;
        return check_secret(client, secret, true);
    }
    if let Some(assertion) = req.param("client_assertion") {
        if req.param("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}"),
            ));
        }
        return check_client_assertion(idp, req, assertion, now);
    }
    let client = lookup(req.require("client_id")?)?;
    match req.param("client_secret") {
        Some(secret) => check_secret(client, secret, false),
        None if client.client.auth_method == AuthMethod::None => Ok(Authenticated {
            client,
            strength: "0",
        }),
        None => Err(OAuthError::client("client authentication required", false)),
    }
}

fn check_secret<'a>(
    client: &'a LoadedClient,
    secret: &str,
    basic: bool,
) -> Result<Authenticated<'a>, OAuthError> {
    match &client.client.client_secret {
        Some(expected) if constant_time_eq(expected, secret) => Ok(Authenticated {
            client,
            strength: "1",
        }),
        Some(_) => Err(OAuthError::client("invalid client secret", basic)),
        None => Err(OAuthError::client(
            "client does not authenticate with a secret",
            basic,
        )),
    }
}

fn check_client_assertion<'a>(
    idp: &'a Idp,
    req: &TokenRequest,
    assertion: &str,
    now: f64,
) -> Result<Authenticated<'a>, OAuthError> {
    let unverified_iss = unverified_claim(assertion, "iss");
    let id = req
        .param("client_id")
        .map(str::to_owned)
        .or(unverified_iss)
        .ok_or_else(|| OAuthError::client("client_id missing", false))?;
    let client = idp
        .clients
        .get(&id)
        .ok_or_else(|| OAuthError::client(format!("unknown client {id:?}"), false))?;
    let keys = client
        .client_keys
        .as_ref()
        .ok_or_else(|| OAuthError::client("client has no registered assertion keys", false))?;
    let claims = crate::assertion::verify(assertion, keys, now)
        .map_err(|e| OAuthError::client(e.to_string(), false))?;
    let text = |n: &str| claims.get(n).and_then(Value::as_str);
    if text("iss") != Some(id.as_str()) || text("sub") != Some(id.as_str()) {
        return Err(OAuthError::client(
            "client assertion iss and sub must equal the client_id",
            false,
        ));
    }
    check_audience(idp, req, &claims).map_err(|e| OAuthError::client(e, false))?;
    Ok(Authenticated {
        client,
        strength: "2",
    })
}

fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// `aud` must name this server: the issuer, the token endpoint URL, or a URL under the request's
/// or the issuer's origin.
fn check_audience(
    idp: &Idp,
    req: &TokenRequest,
    claims: &Map<String, Value>,
) -> Result<(), String> {
    let accepted = |aud: &str| {
        aud == idp.issuers.base
            || aud == req.endpoint_url
            || aud.starts_with(&req.origin)
            || aud.starts_with(&idp.issuers.origin)
    };
    let ok = match claims.get("aud") {
        Some(Value::String(s)) => accepted(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(accepted),
        _ => return Err("assertion has no aud".into()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "assertion aud does not name this server ({})",
            req.endpoint_url
        ))
    }
}

/// Everything needed to issue, whatever the grant.
pub(crate) struct Grant<'a> {
    pub(crate) subject: String,
    pub(crate) username: Option<String>,
    /// Roles, unless `user` is set: then the user's roles for the resource.
    pub(crate) roles: Vec<String>,
    /// The configured user the token is about (password, on-behalf-of).
    pub(crate) user: Option<&'a User>,
    pub(crate) claims: Map<String, Value>,
    pub(crate) profile: Profile,
    pub(crate) refreshable: bool,
    pub(crate) app_only: bool,
}

/// Handles one token request; returns the JSON response body.
pub fn handle(idp: &Idp, req: &TokenRequest, now: u64) -> Result<Value, OAuthError> {
    let grant_name = req.require("grant_type")?;
    let grant_type = GrantType::parse(grant_name).ok_or_else(|| {
        OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type {grant_name:?} is not supported"),
        )
    })?;
    let auth = authenticate(idp, req, now as f64)?;
    let client = &auth.client.client;
    if grant_type == GrantType::JwtBearer {
        if let Some(usage) = req.param("requested_token_use") {
            return crate::obo::exchange(idp, req, client, auth.strength, usage, now);
        }
    }
    if !client.grant_types.contains(&grant_type) {
        return Err(OAuthError::new(
            "unauthorized_client",
            format!("client {} may not use grant {grant_name}", client.client_id),
        ));
    }
    let default_profile = client.profile.unwrap_or(idp.config.profile);
    let grant = match grant_type {
        GrantType::ClientCredentials => Grant {
            subject: client.client_id.clone(),
            username: None,
            user: None,
            roles: client.roles.clone(),
            claims: client.claims.clone(),
            profile: default_profile,
            refreshable: false,
            app_only: true,
        },
        GrantType::Password => password_grant(idp, req, client, default_profile)?,
        GrantType::JwtBearer => jwt_bearer_grant(idp, req, auth.client, default_profile, now)?,
        GrantType::RefreshToken => return refresh_grant(idp, req, client, now),
    };
    let (resource, scopes) = resolve_target(idp, req, client)?;
    respond(idp, client, auth.strength, grant, resource, scopes, now)
}

fn password_grant<'a>(
    idp: &'a Idp,
    req: &TokenRequest,
    client: &Client,
    profile: Profile,
) -> Result<Grant<'a>, OAuthError> {
    let username = req.require("username")?;
    let password = req.require("password")?;
    let user = idp
        .config
        .users
        .iter()
        .find(|u| u.username == username && constant_time_eq(&u.password, password))
        .ok_or_else(|| OAuthError::new("invalid_grant", "Invalid user credentials"))?;
    let mut claims = client.claims.clone();
    claims.extend(user.claims.clone());
    Ok(Grant {
        subject: user.username.clone(),
        username: Some(user.username.clone()),
        user: Some(user),
        roles: Vec::new(),
        claims,
        profile: user.profile.unwrap_or(profile),
        refreshable: true,
        app_only: false,
    })
}

fn jwt_bearer_grant<'a>(
    idp: &Idp,
    req: &TokenRequest,
    client: &LoadedClient,
    profile: Profile,
    now: u64,
) -> Result<Grant<'a>, OAuthError> {
    let assertion = req.require("assertion")?;
    let keys = client
        .assertion_keys
        .as_ref()
        .ok_or_else(|| OAuthError::new("invalid_grant", "client has no assertion keys"))?;
    let claims = crate::assertion::verify(assertion, keys, now as f64)
        .map_err(|e| OAuthError::new("invalid_grant", e.to_string()))?;
    check_audience(idp, req, &claims).map_err(|e| OAuthError::new("invalid_grant", e))?;
    let subject = claims
        .get("sub")
        .or_else(|| claims.get("iss"))
        .and_then(Value::as_str)
        .ok_or_else(|| OAuthError::new("invalid_grant", "assertion has no sub"))?;
    let mut extra = client.client.claims.clone();
    if let Some((_, tenant)) = subject.split_once('@') {
        extra.entry("tid").or_insert_with(|| json!(tenant));
    }
    Ok(Grant {
        subject: subject.to_owned(),
        username: None,
        user: None,
        roles: client.client.roles.clone(),
        claims: extra,
        profile,
        refreshable: true,
        app_only: false,
    })
}

fn refresh_grant(
    idp: &Idp,
    req: &TokenRequest,
    client: &Client,
    now: u64,
) -> Result<Value, OAuthError> {
    let token = req.require("refresh_token")?;
    let invalid = || {
        OAuthError::new(
            "invalid_grant",
            "refresh token is invalid, expired or already used",
        )
    };
    let stored = {
        let mut store = idp.refresh.lock().map_err(|_| invalid())?;
        match store.get(token) {
            Some(g) if g.client_id == client.client_id => store.remove(token),
            _ => None,
        }
    }
    .filter(|g| g.expires > now)
    .ok_or_else(invalid)?;
    let resource = lookup_resource(idp, &stored.resource)?;
    let grant = Grant {
        subject: stored.subject,
        username: stored.username,
        user: None,
        roles: stored.roles,
        claims: stored.claims,
        profile: stored.profile,
        refreshable: true,
        app_only: false,
    };
    respond(
        idp,
        client,
        stored.client_auth,
        grant,
        resource,
        stored.scopes,
        now,
    )
}

fn lookup_resource<'a>(idp: &'a Idp, name: &str) -> Result<&'a Resource, OAuthError> {
    idp.config
        .resource(name)
        .ok_or_else(|| OAuthError::new("invalid_target", format!("unknown resource {name:?}")))
}

/// Picks the resource (`resource=`, `audience=`, `scope=X/.default`, `scope=X/name`, the
/// client's default-resource, or the only one) and the granted scopes (the requested ones, which
/// must exist, else all of the resource's).
pub(crate) fn resolve_target<'a>(
    idp: &'a Idp,
    req: &TokenRequest,
    client: &Client,
) -> Result<(&'a Resource, Vec<String>), OAuthError> {
    let mut named = req
        .param("resource")
        .or_else(|| req.param("audience"))
        .map(str::to_owned);
    let mut plain = Vec::new();
    for scope in req.param("scope").unwrap_or("").split_whitespace() {
        if IGNORED_SCOPES.contains(&scope) {
            continue;
        }
        if let Some(prefix) = scope.strip_suffix("/.default") {
            named.get_or_insert_with(|| prefix.to_owned());
            continue;
        }
        match scope.rsplit_once('/') {
            Some((prefix, name)) if idp.config.resource(prefix).is_some() => {
                named.get_or_insert_with(|| prefix.to_owned());
                plain.push(name.to_owned());
            }
            _ => plain.push(scope.to_owned()),
        }
    }
    let name = named
        .or_else(|| client.default_resource.clone())
        .or_else(|| (idp.config.resources.len() == 1).then(|| idp.config.resources[0].name.clone()))
        .ok_or_else(|| OAuthError::new("invalid_request", "no resource named (scope=<resource>/.default or resource=) and the client has no default-resource"))?;
    let resource = lookup_resource(idp, &name)?;
    if let Some(bad) = plain.iter().find(|s| !resource.scopes.contains(s)) {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("scope {bad:?} is not defined for {}", resource.name),
        ));
    }
    let scopes = if plain.is_empty() {
        resource.scopes.clone()
    } else {
        plain
    };
    Ok((resource, scopes))
}

/// Signs the access token (and stores a refresh token when the grant and client allow one);
/// returns the token response body.
pub(crate) fn respond(
    idp: &Idp,
    client: &Client,
    strength: &'static str,
    grant: Grant<'_>,
    resource: &Resource,
    scopes: Vec<String>,
    now: u64,
) -> Result<Value, OAuthError> {
    let roles = match grant.user {
        Some(user) => user.roles_for(resource).to_vec(),
        None => grant.roles,
    };
    let spec = TokenSpec {
        subject: &grant.subject,
        client_id: Some(&client.client_id),
        username: grant.username.as_deref(),
        audience: &resource.audience,
        scopes: &scopes,
        roles: &roles,
        extra: &grant.claims,
        tenant: &idp.config.tenant_id,
        lifetime: resource.token_lifetime,
        now,
        client_auth: strength,
        app_only: grant.app_only,
    };
    let token = idp
        .issue(grant.profile, &spec, resource.signing_alg)
        .map_err(|e| OAuthError {
            status: 500,
            aadsts: None,
            ..OAuthError::new("server_error", e.to_string())
        })?;
    let lifetime = resource.token_lifetime.as_secs();
    let mut body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "scope": scopes.join(" "),
    });
    if grant.refreshable && client.grant_types.contains(&GrantType::RefreshToken) {
        let refresh_lifetime = idp.config.refresh_token_lifetime.as_secs();
        let refresh_token = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        let stored = RefreshGrant {
            client_id: client.client_id.clone(),
            subject: grant.subject,
            username: grant.username,
            roles,
            claims: grant.claims,
            resource: resource.name.clone(),
            scopes,
            profile: grant.profile,
            client_auth: strength,
            expires: now + refresh_lifetime,
        };
        if let Ok(mut store) = idp.refresh.lock() {
            store.retain(|_, g| g.expires > now);
            store.insert(refresh_token.clone(), stored);
        }
        body["refresh_token"] = json!(refresh_token);
        body["refresh_expires_in"] = json!(refresh_lifetime);
    }
    Ok(body)
}
