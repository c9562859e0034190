//! End-to-end tests: the dev token server's tokens through the gateway binary. On-behalf-of: a
//! user's token to the BFF, exchanged by the BFF, reaches a route that requires the downstream
//! audience with the user's identity; the BFF token itself does not. Algorithms: a token for every
//! algorithm the server signs passes a gateway that honours the JWK's `alg`, and a token signed
//! under a kid whose JWK names another algorithm (what the server used to issue) does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_idp::{IdpConfig, IdpHandle, MintRequest};
use portcullis_testkit::backend::Backend;
use portcullis_testkit::idp_keys::{write_key_files, IDP_YAML, RESOURCES};
use serde_json::Value;

use crate::support::Gateway;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TENANT: &str = "3f1c2b9e-8a47-4d0e-9b1a-6c5d4e3f2a10";

async fn start(yaml: &str, dir: &std::path::Path) -> IdpHandle {
    portcullis_idp::start(IdpConfig::from_yaml(yaml, dir).unwrap())
        .await
        .unwrap()
}

async fn post(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn gateway_yaml(discovery: &str, audiences: &[&str], backend: &Backend) -> String {
    let audiences = audiences
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  api:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [{audiences}]
    forward-claims:
      X-User: sub
      X-Oid: oid
      X-Name: name
      X-Client: azp
      X-Roles: roles
      X-Scopes: scp
routes:
  - {{ name: api, match: {{ path-prefix: /api }}, upstream: "{}", policy: api }}
"#,
        backend.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn obo_token_reaches_the_downstream_route_as_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let idp = start(
        &format!(
            r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{{port}}/realm"
tenant-id: "{TENANT}"
profile: entra-v2
resources:
  "api://bff": {{ scopes: [access_as_user] }}
  "api://downstream": {{ scopes: [data.read], signing-alg: PS256 }}
clients:
  - {{ client-id: spa, auth-method: none, grant-types: [password], default-resource: "api://bff" }}
  - {{ client-id: bff, client-secret: bff-secret, auth-method: client_secret_post,
      identifier-uris: ["api://bff"], on-behalf-of: ["api://downstream"] }}
users:
  - {{ username: alice, password: alice-pw, roles: [Bff.User],
      resource-roles: {{ "api://downstream": [Data.Reader] }}, claims: {{ name: Alice }} }}
"#
        ),
        dir.path(),
    )
    .await;
    let origin = format!("http://{}", idp.http_addr().unwrap());
    let token_url = format!("{origin}/{TENANT}/oauth2/v2.0/token");
    let backend = Backend::start().unwrap();
    let discovery = format!("{origin}/{TENANT}/v2.0/.well-known/openid-configuration");
    let gw = Gateway::run(
        &gateway_yaml(&discovery, &["api://downstream"], &backend),
        &reqwest::Client::new(),
    )
    .await;

    let (status, body) = post(
        &token_url,
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("scope", "api://bff/.default"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let user = body["access_token"].as_str().unwrap().to_owned();
    // The user's token is for the BFF, not the downstream API.
    let (status, _) = gw.call("/api/data", &user).await;
    assert_eq!(status, 401);

    let (status, body) = post(
        &token_url,
        &[
            ("grant_type", JWT_BEARER),
            ("client_id", "bff"),
            ("client_secret", "bff-secret"),
            ("assertion", &user),
            ("requested_token_use", "on_behalf_of"),
            (
                "scope",
                "api://downstream/.default offline_access openid profile",
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let obo = body["access_token"].as_str().unwrap();
    let (status, body) = gw.call("/api/data", obo).await;
    assert_eq!(status, 200, "{body}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "only the OBO call reached the backend");
    let header = |n| seen[0].header(n).map(str::to_owned);
    assert_eq!(header("x-user").as_deref(), Some("alice"));
    assert_eq!(header("x-oid").as_deref(), Some("alice"));
    assert_eq!(header("x-name").as_deref(), Some("Alice"));
    assert_eq!(header("x-client").as_deref(), Some("bff"));
    assert_eq!(header("x-roles").as_deref(), Some("Data.Reader"));
    assert_eq!(header("x-scopes").as_deref(), Some("data.read"));
    idp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_idp_algorithm_passes_a_gateway_that_honours_the_jwk_alg() {
    let dir = tempfile::tempdir().unwrap();
    // Key files without `alg`: the PEM says what each key is.
    write_key_files(dir.path()).unwrap();
    let idp = start(IDP_YAML, dir.path()).await;
    let backend = Backend::start().unwrap();
    let audiences: Vec<&str> = RESOURCES.iter().map(|(a, _)| *a).collect();
    let gw = Gateway::run(
        &gateway_yaml(&idp.discovery_url(), &audiences, &backend),
        &reqwest::Client::new(),
    )
    .await;
    for (resource, alg) in RESOURCES {
        let (status, body) = post(
            &idp.token_endpoint(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("client_secret", "s"),
                ("scope", &format!("{resource}/.default")),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                token.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        let (status, body) = gw.call("/api/x", token).await;
        assert_eq!(
            status, 200,
            "{resource} ({alg}, kid {}): {body}",
            header["kid"]
        );
    }
    assert_eq!(backend.request_count(), RESOURCES.len());

    // The same RSA key signing PS256 under the kid its JWK publishes as RS256 (what the server
    // did before JWKs were published per algorithm): valid signature, refused for the alg.
    let mislabelled = start(
        &format!(
            "listen: \"127.0.0.1:0\"\nissuer: \"{}\"\nsigning-keys: [{{ id: rsa, alg: PS256, private-key-file: rsa.pem }}]\n",
            idp.issuer()
        ),
        dir.path(),
    )
    .await;
    let mut req = MintRequest::new("alice", "api://ps256");
    req.alg = Some(portcullis_idp::SigningAlg::PS256);
    let forged = mislabelled.mint(&req).unwrap();
    let (status, _) = gw.call("/api/x", &forged).await;
    assert_eq!(status, 401, "a token whose alg is not its JWK's passed");
    assert_eq!(backend.request_count(), RESOURCES.len());
    mislabelled.shutdown().await;
    idp.shutdown().await;
}
