//! Tokens from a real token endpoint (OAuth 2.0 client credentials), for targets whose issuer's
//! signing key the load tester does not hold: an APIM instance in front of Entra ID, an Envoy
//! trusting Keycloak, a gateway trusting `portcullis idp`.
//!
//! The client authenticates with a secret (`client_secret` in the form body) or with a
//! certificate: a `client_assertion` JWT signed with the certificate's key, carrying its SHA-1
//! and SHA-256 thumbprints (`x5t`, `x5t#S256`) as Entra ID and MSAL do
//! (`../shared/design/flows.md` flows 2 and 4). The token is fetched once before the run and again
//! before it expires, so a long run keeps sending a token its issuer still vouches for.
//!
//! Which invalid kinds exist without the signing key: only what can be made by *breaking* a real
//! token, which a gateway must refuse whatever its policy: a flipped signature byte
//! (`bad-signature`), the header swapped for `alg: none` with the signature removed (`alg-none`),
//! no token (`missing`), not a JWT (`malformed`). Expired, not-yet-valid, wrong-issuer,
//! wrong-audience and unknown-kid tokens would need a new signature, so they are not produced
//! and the report says so instead of counting a kind it never sent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use crate::keys::{parse_key, Alg, SigningKey};
use crate::mint::{Kind, Minted, Plan};

/// The invalid kinds made from a fetched token.
pub const DERIVED: [Kind; 4] = [
    Kind::BadSignature,
    Kind::AlgNone,
    Kind::Missing,
    Kind::Malformed,
];

/// Why a kind is not produced with an endpoint token source (report).
pub const NOT_PRODUCED: &str = "needs the issuer's signing key (tokens come from a token endpoint)";

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is.
pub enum Credential {
    /// `client_secret` in the form body.
    Secret(String),
    /// A `client_assertion` signed with the certificate's key.
    Certificate {
        /// The certificate's private key.
        key: SigningKey,
        /// Its algorithm (RS256 for RSA keys, as Entra ID requires).
        alg: Alg,
        /// base64url SHA-1 of the certificate (DER).
        x5t: String,
        /// base64url SHA-256 of the certificate (DER).
        x5t_s256: String,
    },
}

/// A token endpoint and the client credentials grant sent to it.
pub struct TokenEndpoint {
    /// The endpoint URL.
    pub url: String,
    /// `client_id`.
    pub client_id: String,
    /// Secret or certificate.
    pub credential: Credential,
    /// `scope` (e.g. `api://orders/.default`).
    pub scope: Option<String>,
    /// `resource` (Entra v1, ADFS).
    pub resource: Option<String>,
    /// Extra CA certificates the endpoint's certificate may chain to (PEM, `--cacert`).
    pub cacert: Option<PathBuf>,
}

/// A token as the endpoint returned it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `access_token`.
    pub token: String,
    /// `expires_in` (an hour when absent).
    pub lifetime: Duration,
}

impl Credential {
    /// The certificate credential from a PEM certificate and its private key.
    pub fn certificate(cert: &Path, key: &Path) -> Result<Credential, String> {
        let der = CertificateDer::from_pem_file(cert)
            .map_err(|e| format!("--client-cert {}: {e}", cert.display()))?;
        let bytes =
            std::fs::read(key).map_err(|e| format!("--client-key {}: {e}", key.display()))?;
        let (key_pair, alg) =
            parse_key(&bytes, None).map_err(|e| format!("--client-key {}: {e}", key.display()))?;
        let thumb = |alg| URL_SAFE_NO_PAD.encode(digest::digest(alg, der.as_ref()));
        Ok(Credential::Certificate {
            key: key_pair,
            alg,
            x5t: thumb(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            x5t_s256: thumb(&digest::SHA256),
        })
    }
}

impl TokenEndpoint {
    /// The form body of one client credentials request at Unix time `now`.
    fn form(&self, now: u64) -> Result<Vec<(&'static str, String)>, String> {
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
        ];
        match &self.credential {
            Credential::Secret(secret) => form.push(("client_secret", secret.clone())),
            Credential::Certificate {
                key,
                alg,
                x5t,
                x5t_s256,
            } => {
                let header =
                    json!({"alg": alg.name(), "typ": "JWT", "x5t": x5t, "x5t#S256": x5t_s256});
                let claims = json!({
                    "iss": self.client_id, "sub": self.client_id, "aud": self.url,
                    "jti": format!("{:032x}", rand::random::<u128>()),
                    "iat": now, "nbf": now, "exp": now + 300,
                });
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(claims.to_string())
                );
                let signature = key
                    .sign(input.as_bytes())
                    .map_err(|e| format!("signing the client assertion: {e}"))?;
                let assertion = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
                form.push(("client_assertion_type", ASSERTION_TYPE.to_owned()));
                form.push(("client_assertion", assertion));
            }
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(resource) = &self.resource {
            form.push(("resource", resource.clone()));
        }
        Ok(form)
    }

    /// One client credentials request. `Err`: the endpoint's `error` and `error_description`, or
    /// the transport error (never the credential).
    pub async fn fetch(&self, now: u64) -> Result<Fetched, String> {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(path) = &self.cacert {
            let pem =
                std::fs::read(path).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--cacert {}: {e}", path.display()))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client.build().map_err(|e| e.to_string())?;
        let response = client
            .post(&self.url)
            .form(&self.form(now)?)
            .send()
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.url))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("token endpoint {}: {status}, not JSON: {e}", self.url))?;
        let text = |k: &str| body.get(k).and_then(Value::as_str);
        match text("access_token") {
            Some(token) if status.is_success() => {
                let expires_in = body
                    .get("expires_in")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .unwrap_or(3600);
                // A JWT's own `exp` is what gateways check, in whole seconds: it can end up to a
                // second before `expires_in` says.
                let lifetime = claim_u64(token, "exp")
                    .map_or(expires_in, |exp| expires_in.min(exp.saturating_sub(now)));
                Ok(Fetched {
                    token: token.to_owned(),
                    lifetime: Duration::from_secs(lifetime),
                })
            }
            _ => Err(format!(
                "token endpoint {}: {status}: {} {}",
                self.url,
                text("error").unwrap_or("no access_token"),
                text("error_description").unwrap_or_default()
            )),
        }
    }
}

/// When to fetch again: half-way through the token's life, or five minutes before it ends when
/// that is later (an hour-long Entra token is refreshed after 55 minutes).
pub fn refresh_after(lifetime: Duration) -> Duration {
    (lifetime / 2).max(lifetime.saturating_sub(Duration::from_secs(300)))
}

/// The invalid kinds `token` can be broken into: all of [`DERIVED`] for a JWS, only the ones
/// that need no token (`missing`, `malformed`) for an opaque token.
pub fn derivable(token: &str) -> Vec<Kind> {
    if token.split('.').count() == 3 {
        DERIVED.to_vec()
    } else {
        vec![Kind::Missing, Kind::Malformed]
    }
}

/// Part `part` (0 header, 1 claims) of a JWS, decoded; `None` for anything else.
fn jws_part(token: &str, part: usize) -> Option<Value> {
    let text = token.split('.').nth(part)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
}

/// The `alg` in a JWS header (report), `opaque` for anything else.
pub fn alg_of(token: &str) -> String {
    jws_part(token, 0)
        .and_then(|h| h.get("alg")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "opaque".to_owned())
}

/// A numeric claim of a JWS (unverified: only used to time the refresh).
fn claim_u64(token: &str, name: &str) -> Option<u64> {
    jws_part(token, 1)?.get(name)?.as_u64()
}

/// The request set's tokens for `plan`: the fetched token in every valid slot, broken copies of
/// it in the invalid ones.
pub fn tokens(token: &str, plan: &Plan) -> Vec<Minted> {
    (0..plan.total())
        .map(|i| {
            let kind = plan.kind(i);
            Minted {
                kind,
                token: derive(token, kind, i),
            }
        })
        .collect()
}

/// `token` turned into `kind` (`None` for `missing`).
fn derive(token: &str, kind: Kind, i: usize) -> Option<String> {
    match kind {
        Kind::Missing => None,
        Kind::Malformed => Some(format!("not-a-jwt.{i}")),
        Kind::BadSignature => {
            let (input, signature) = token.rsplit_once('.')?;
            let mut bytes = URL_SAFE_NO_PAD.decode(signature).ok()?;
            if let Some(b) = bytes.first_mut() {
                *b ^= 0x01;
            }
            Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes)))
        }
        Kind::AlgNone => {
            let payload = token.split('.').nth(1)?;
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
            Some(format!("{header}.{payload}."))
        }
        _ => Some(token.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn broken_copies_differ_from_the_token_as_their_kind_says() {
        let sig = URL_SAFE_NO_PAD.encode([7u8, 8, 9]);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.{sig}");
        assert_eq!(alg_of(&token), "RS256");
        assert_eq!(
            claim_u64("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjEyfQ.c2ln", "exp"),
            Some(12)
        );
        let bad = derive(&token, Kind::BadSignature, 0).unwrap();
        assert_eq!(
            bad,
            format!(
                "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.{}",
                URL_SAFE_NO_PAD.encode([6u8, 8, 9])
            )
        );
        let none = derive(&token, Kind::AlgNone, 0).unwrap();
        assert!(none.ends_with(".eyJzdWIiOiJhIn0."), "{none}");
        assert_eq!(alg_of(&none), "none");
        assert_eq!(derive(&token, Kind::Missing, 0), None);
        assert_eq!(derive(&token, Kind::Valid, 0).unwrap(), token);
        assert_eq!(derivable(&token), DERIVED);
        assert_eq!(derivable("opaque-token"), [Kind::Missing, Kind::Malformed]);
        assert_eq!(alg_of("opaque-token"), "opaque");
    }

    #[test]
    fn refresh_is_half_way_or_five_minutes_before_the_end() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(3600)), s(3300));
        assert_eq!(refresh_after(s(300)), s(150));
        assert_eq!(refresh_after(s(2)), s(1));
    }
}
