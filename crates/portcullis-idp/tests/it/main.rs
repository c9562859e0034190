//! Integration tests of the dev token server: real HTTP over loopback against servers started on
//! port 0, tokens verified independently with jsonwebtoken and the published JWKS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod algs;
mod grants;
mod keys_and_profiles;
mod obo;

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use portcullis_idp::{IdpConfig, IdpHandle};
use serde_json::Value;

/// Starts a server from YAML text (paths relative to `dir`).
pub async fn start_yaml(yaml: &str, dir: &std::path::Path) -> IdpHandle {
    let config = IdpConfig::from_yaml(yaml, dir).expect("config");
    portcullis_idp::start(config).await.expect("start")
}

pub fn base(handle: &IdpHandle) -> String {
    format!("http://{}", handle.http_addr().unwrap())
}

pub async fn jwks(handle: &IdpHandle) -> JwkSet {
    reqwest::get(format!("{}/jwks", handle.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a JOSE-alg token against the server's JWKS, as a verifier that honours the JWK's
/// `alg` does (the JWK must name the token's algorithm); returns the claims.
pub async fn verify(handle: &IdpHandle, token: &str, aud: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let set = jwks(handle).await;
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    let jwk_alg = jwk.common.key_algorithm.expect("the JWK names its alg");
    assert_eq!(
        jsonwebtoken::Algorithm::try_from(jwk_alg).ok(),
        Some(header.alg),
        "token alg vs its JWK's alg"
    );
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[aud]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("token verifies")
        .claims
}

pub async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value, HashMap<String, String>) {
    let resp = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    split(resp).await
}

pub async fn split(resp: reqwest::Response) -> (u16, Value, HashMap<String, String>) {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    (status, resp.json().await.unwrap(), headers)
}
