//! HTTP(S) serving: the accept loops, routing by path suffix (so the Entra, Keycloak and STS
//! path shapes all reach the same handlers), discovery documents whose URLs follow the listener
//! and Host the request came in on, the JWKS, the token endpoint and `POST /admin/rotate`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::grants::{self, TokenRequest};
use crate::profile::{Issuers, Profile};
use crate::state::{now_unix, Idp};

const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";
const MAX_BODY: usize = 64 * 1024;

type Resp = Response<Full<Bytes>>;

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    idp: Arc<Idp>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let local = stream.local_addr().unwrap_or(peer);
        let idp = idp.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let idp = idp.clone();
                async move { Ok::<_, Infallible>(route(&idp, scheme, peer, local, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => http.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "tls handshake failed");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection error");
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type)
            .unwrap_or(header::HeaderValue::from_static("application/json")),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_resp(status: StatusCode, body: &Value) -> Resp {
    respond(status, "application/json", Bytes::from(body.to_string()))
}

fn not_found() -> Resp {
    json_resp(StatusCode::NOT_FOUND, &json!({"error": "not_found"}))
}

async fn route(
    idp: &Idp,
    scheme: &str,
    peer: SocketAddr,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| local.to_string(), str::to_owned);
    let origin = format!("{scheme}://{host}");
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, p) if p.ends_with(DISCOVERY_SUFFIX) => {
            let prefix = &p[..p.len() - DISCOVERY_SUFFIX.len()];
            json_resp(StatusCode::OK, &discovery(idp, &origin, prefix))
        }
        (&Method::GET, p) if is_jwks_path(p) => {
            let mut resp = respond(
                StatusCode::OK,
                "application/json",
                idp.ring().jwks().clone(),
            );
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("max-age=60"),
            );
            resp
        }
        (&Method::POST, p) if p.ends_with("/token") => {
            let endpoint_url = format!("{origin}{p}");
            token(idp, req, endpoint_url, origin).await
        }
        (&Method::POST, "/admin/rotate") => rotate(idp, peer),
        (&Method::GET, "/healthz") => json_resp(StatusCode::OK, &json!({"status": "ok"})),
        (_, p) if p.ends_with("/authorize") => json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_response_type", "error_description": "the dev token server has no interactive login; use a token grant"}),
        ),
        _ => not_found(),
    }
}

fn is_jwks_path(p: &str) -> bool {
    ["/jwks", "/jwks.json", "/keys", "/certs"]
        .iter()
        .any(|s| p.ends_with(s))
}

/// The tenant part of an Entra discovery document's issuer: the multi-tenant authorities
/// (`common`, `organizations`, `consumers`) publish the `{tenantid}` template, as Entra does, since
/// each token names its own tenant.
fn issuer_tenant(tenant: &str) -> &str {
    match tenant {
        "common" | "organizations" | "consumers" => "{tenantid}",
        t => t,
    }
}

/// The discovery document for a path prefix: Keycloak (`/realms/<r>`), Entra v2 (`/<t>/v2.0`),
/// Entra v1 (`/<t>`), or the configured issuer (any other prefix, e.g. MSAL's
/// `{issuer}/v2.0`).
fn discovery(idp: &Idp, origin: &str, prefix: &str) -> Value {
    let issuers = &idp.issuers;
    let issuer_path = url::Url::parse(&issuers.base)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let segments: Vec<&str> = prefix.trim_start_matches('/').split('/').collect();
    let plain = prefix == issuer_path
        || prefix.is_empty()
        || prefix.strip_suffix("/v2.0") == Some(issuer_path.as_str());
    let (issuer, token, jwks) = match segments.as_slice() {
        _ if plain => (
            issuers.base.clone(),
            format!("{prefix}/token"),
            format!("{prefix}/jwks"),
        ),
        ["realms", realm] => (
            format!("{}/realms/{realm}", issuers.origin),
            format!("{prefix}/protocol/openid-connect/token"),
            format!("{prefix}/protocol/openid-connect/certs"),
        ),
        [tenant, "v2.0"] => (
            Issuers::for_profile(issuers, Profile::EntraV2, issuer_tenant(tenant)),
            format!("/{tenant}/oauth2/v2.0/token"),
            format!("/{tenant}/discovery/v2.0/keys"),
        ),
        [tenant] => (
            Issuers::for_profile(issuers, Profile::EntraV1, issuer_tenant(tenant)),
            format!("/{tenant}/oauth2/token"),
            format!("/{tenant}/discovery/keys"),
        ),
        _ => (
            issuers.base.clone(),
            format!("{prefix}/token"),
            format!("{prefix}/jwks"),
        ),
    };
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{origin}{jwks}"),
        "token_endpoint": format!("{origin}{token}"),
        "authorization_endpoint": format!("{origin}{prefix}/authorize"),
        "grant_types_supported": ["client_credentials", "password", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "scopes_supported": idp.config.resources.iter().flat_map(|r| r.scopes.iter()).collect::<Vec<_>>(),
        "tenant_region_scope": null,
    })
}

async fn read_params(
    req: Request<Incoming>,
) -> Result<(http::request::Parts, HashMap<String, String>), grants::OAuthError> {
    let bad = |d: &str| grants::OAuthError {
        status: 400,
        error: "invalid_request",
        description: d.into(),
        basic_challenge: false,
        aadsts: None,
    };
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| bad("request body unreadable or larger than 64 KiB"))?
        .to_bytes();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    let params = if is_json {
        let map: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| bad("body is not a JSON object"))?;
        map.into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Number(n) => Some((k, n.to_string())),
                Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect()
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .map_err(|_| bad("body is not application/x-www-form-urlencoded"))?
            .into_iter()
            .collect()
    };
    Ok((parts, params))
}

async fn token(idp: &Idp, req: Request<Incoming>, endpoint_url: String, origin: String) -> Resp {
    let result = match read_params(req).await {
        Ok((parts, params)) => {
            let basic = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(grants::parse_basic);
            let request = TokenRequest {
                params,
                basic,
                endpoint_url,
                origin,
            };
            grants::handle(idp, &request, now_unix())
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(body) => json_resp(StatusCode::OK, &body),
        Err(e) => {
            tracing::info!(error = e.error, description = %e.description, "token request refused");
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = json_resp(status, &e.body());
            if e.basic_challenge {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"portcullis-idp\""),
                );
            }
            resp
        }
    }
}

fn rotate(idp: &Idp, peer: SocketAddr) -> Resp {
    if !peer.ip().is_loopback() {
        return json_resp(
            StatusCode::FORBIDDEN,
            &json!({"error": "forbidden", "error_description": "admin endpoints answer loopback peers only"}),
        );
    }
    match idp.rotate() {
        Ok(active) => json_resp(StatusCode::OK, &json!({"active": active})),
        Err(e) => json_resp(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "server_error", "error_description": e.to_string()}),
        ),
    }
}
