//! Discovery documents, the JWKS and rotation, https with a generated certificate, config errors,
//! and the claim shapes of each token profile.

use portcullis_idp::{IdpConfig, MintRequest, Profile};
use serde_json::{json, Value};

use crate::{base, jwks, start_yaml, verify};

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn discovery_aliases_follow_the_listener() {
    let handle = portcullis_idp::start(IdpConfig::demo()).await.unwrap();
    let client = reqwest::Client::new();
    let b = base(&handle);
    let doc = get_json(&client, &handle.discovery_url()).await;
    assert_eq!(doc["issuer"], handle.issuer());
    assert_eq!(doc["token_endpoint"], format!("{b}/realm/token"));
    assert_eq!(doc["jwks_uri"], format!("{b}/realm/jwks"));
    for key in [
        "authorization_endpoint",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
    ] {
        assert!(!doc[key].is_null(), "{key}");
    }
    let msal = get_json(
        &client,
        &format!("{}/v2.0/.well-known/openid-configuration", handle.issuer()),
    )
    .await;
    assert_eq!(msal["issuer"], handle.issuer());
    let entra = get_json(
        &client,
        &format!("{b}/tenant-x/v2.0/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(entra["issuer"], format!("{b}/tenant-x/v2.0"));
    assert_eq!(
        entra["token_endpoint"],
        format!("{b}/tenant-x/oauth2/v2.0/token")
    );
    let kc = get_json(
        &client,
        &format!("{b}/realms/dev/.well-known/openid-configuration"),
    )
    .await;
    assert_eq!(
        kc["token_endpoint"],
        format!("{b}/realms/dev/protocol/openid-connect/token")
    );
    let keys = get_json(&client, kc["jwks_uri"].as_str().unwrap()).await;
    assert!(!keys["keys"].as_array().unwrap().is_empty());
    let via_localhost = get_json(
        &client,
        &format!(
            "http://localhost:{}/realm/.well-known/openid-configuration",
            handle.http_addr().unwrap().port()
        ),
    )
    .await;
    assert!(via_localhost["token_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://localhost:"));
    handle.shutdown().await;
}

#[tokio::test]
async fn rotation_keeps_the_previous_key_published_during_grace() {
    let mut config = IdpConfig::demo();
    // Long enough that a loaded CI machine verifies the old token before the grace ends (800 ms
    // was seen to expire first); the prune is then polled, not slept for.
    config.rotation_grace = std::time::Duration::from_secs(4);
    let handle = portcullis_idp::start(config).await.unwrap();
    let old = handle
        .mint(&MintRequest::new("u", "api://default"))
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/admin/rotate", base(&handle)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let active: Value = resp.json().await.unwrap();
    let new_kid = active["active"][0].as_str().unwrap().to_owned();
    assert_ne!(new_kid, "rsa-1");
    let new = handle
        .mint(&MintRequest::new("u", "api://default"))
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    verify(&handle, &old, "api://default").await;
    verify(&handle, &new, "api://default").await;
    // after the grace period the old key disappears (polled, bounded)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while jwks(&handle).await.find("rsa-1").is_some() {
        assert!(std::time::Instant::now() < deadline, "old key never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(jwks(&handle).await.find(&new_kid).is_some());
    handle.shutdown().await;
}

#[tokio::test]
async fn https_with_generated_certificate_and_issuer_port_substitution() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
listen: "127.0.0.1:0"
https: { listen: "127.0.0.1:0", generate: true }
issuer: "https://127.0.0.1:{https-port}/realm"
signing-keys:
  - { id: ec-1, alg: ES256 }
  - { id: ed-1, alg: EdDSA }
  - { id: rsa-1, alg: PS256 }
resources:
  "api://ec": { signing-alg: ES256 }
  "api://ed": { signing-alg: EdDSA }
  "api://ps": { signing-alg: PS256 }
clients:
  - { client-id: c, client-secret: s, auth-method: client_secret_basic }
"#;
    let handle = start_yaml(yaml, dir.path()).await;
    let https = handle.https_addr().unwrap();
    assert_eq!(
        handle.issuer(),
        format!("https://127.0.0.1:{}/realm", https.port())
    );
    let ca = std::fs::read(dir.path().join(".portcullis/idp-tls/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let doc = get_json(&client, &handle.discovery_url()).await;
    assert_eq!(
        doc["token_endpoint"],
        format!("https://127.0.0.1:{}/realm/token", https.port())
    );
    for (aud, alg) in [
        ("api://ec", "ES256"),
        ("api://ed", "EdDSA"),
        ("api://ps", "PS256"),
    ] {
        let resp = client
            .post(doc["token_endpoint"].as_str().unwrap())
            .basic_auth("c", Some("s"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", &format!("{aud}/.default")),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(token).unwrap().alg,
            alg.parse().unwrap()
        );
        let jwks: jsonwebtoken::jwk::JwkSet = get_json(&client, doc["jwks_uri"].as_str().unwrap())
            .await
            .pipe(serde_json::from_value)
            .unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let mut v = jsonwebtoken::Validation::new(alg.parse().unwrap());
        v.set_audience(&[aud]);
        jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap(),
            &v,
        )
        .unwrap();
    }
    handle.shutdown().await;
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for Value {}

#[test]
fn config_errors_name_the_problem() {
    let dir = std::path::Path::new(".");
    let cases = [
        ("listen: 127.0.0.1:0\naudience: x\n", "unknown field"),
        ("issuer: http://127.0.0.1:8081\n", "path segment"),
        (
            "clients: [{ client-id: a, auth-method: client_secret_basic }]\n",
            "client-secret is required",
        ),
        (
            "clients: [{ client-id: a, auth-method: private_key_jwt }]\n",
            "private_key_jwt needs",
        ),
        (
            "resources: { x: { token-lifetime: soon } }\n",
            "invalid duration",
        ),
        ("profile: entra-v3\n", "entra-v3"),
    ];
    for (yaml, needle) in cases {
        let err = IdpConfig::from_yaml(yaml, dir).unwrap_err().to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
}

#[tokio::test]
async fn profiles_shape_claims() {
    let handle = portcullis_idp::start(IdpConfig::demo()).await.unwrap();
    let mint = |profile| {
        let mut req = MintRequest::new("user-1", "api://default");
        req.profile = Some(profile);
        req.scopes = vec!["orders.read".into(), "orders.write".into()];
        req.roles = vec!["Orders.Reader".into()];
        req.client_id = Some("app-1".into());
        handle.mint(&req).unwrap()
    };
    let v2 = verify(&handle, &mint(Profile::EntraV2), "api://default").await;
    assert_eq!(v2["iss"], handle.issuer_for(Profile::EntraV2));
    assert!(v2["iss"].as_str().unwrap().ends_with("/v2.0"));
    assert_eq!(
        (v2["scp"].as_str(), v2["azp"].as_str(), v2["ver"].as_str()),
        (Some("orders.read orders.write"), Some("app-1"), Some("2.0"))
    );
    assert_eq!(v2["roles"], json!(["Orders.Reader"]));
    assert!(v2["tid"].is_string() && v2["oid"].is_string());
    let v1 = verify(&handle, &mint(Profile::EntraV1), "api://default").await;
    assert!(v1["iss"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/{}/", v1["tid"].as_str().unwrap())));
    assert_eq!(
        (v1["appid"].as_str(), v1["ver"].as_str()),
        (Some("app-1"), Some("1.0"))
    );
    let kc = verify(&handle, &mint(Profile::Keycloak), "api://default").await;
    assert_eq!(kc["realm_access"]["roles"], json!(["Orders.Reader"]));
    assert_eq!(
        kc["resource_access"]["app-1"]["roles"],
        json!(["Orders.Reader"])
    );
    assert_eq!(
        (kc["scope"].as_str(), kc["azp"].as_str()),
        (Some("orders.read orders.write"), Some("app-1"))
    );
    let plain = verify(&handle, &mint(Profile::Plain), "api://default").await;
    assert_eq!(plain["iss"], handle.issuer());
    assert_eq!(plain["scope"], "orders.read orders.write");
    handle.shutdown().await;
}

#[test]
fn shipped_idp_configs_load() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = vec![examples.join("idp.yaml")];
    for entry in std::fs::read_dir(&examples).unwrap() {
        let candidate = entry.unwrap().path().join("idp.yaml");
        if candidate.is_file() {
            files.push(candidate);
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        IdpConfig::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
