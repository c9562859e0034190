//! On-behalf-of over real HTTP: a user's token to the BFF exchanged by the BFF for a token to the
//! downstream API, and every refusal with the error Entra gives for it.

use portcullis_idp::MintRequest;
use serde_json::{json, Value};

use crate::{base, post_form, start_yaml, verify};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const CONFIG: &str = r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
profile: entra-v2
resources:
  "api://bff": { scopes: [access_as_user] }
  "api://downstream": { scopes: [data.read, data.write], signing-alg: PS256 }
  "api://elsewhere": { scopes: [x] }
clients:
  - { client-id: spa, auth-method: none, grant-types: [password], default-resource: "api://bff" }
  - { client-id: bff, client-secret: bff-secret, auth-method: client_secret_post,
      identifier-uris: ["api://bff"], on-behalf-of: ["api://downstream"],
      default-resource: "api://bff" }
  - { client-id: other, client-secret: other-secret, auth-method: client_secret_post,
      identifier-uris: ["api://elsewhere"], on-behalf-of: ["api://downstream"] }
  - { client-id: no-obo, client-secret: s, auth-method: client_secret_post,
      identifier-uris: ["api://bff"] }
users:
  - { username: alice, password: alice-pw, roles: [Bff.User],
      resource-roles: { "api://downstream": [Data.Reader] }, claims: { name: Alice Example } }
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    handle: portcullis_idp::IdpHandle,
    url: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_yaml(CONFIG, dir.path()).await;
    let url = format!("{}/tenant/oauth2/v2.0/token", base(&handle));
    Fixture {
        _dir: dir,
        handle,
        url,
    }
}

/// alice's token to the BFF, through the SPA's password grant.
async fn user_token(f: &Fixture) -> String {
    let (status, body, _) = post_form(
        &f.url,
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", "alice"),
            ("password", "alice-pw"),
            ("scope", "api://bff/access_as_user"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The OBO request MSAL sends (secret in the body, `offline_access openid profile` added).
async fn obo(
    f: &Fixture,
    client: &str,
    secret: &str,
    assertion: &str,
    scope: &str,
) -> (u16, Value) {
    let (status, body, _) = post_form(
        &f.url,
        &[
            ("grant_type", JWT_BEARER),
            ("client_id", client),
            ("client_secret", secret),
            ("assertion", assertion),
            ("requested_token_use", "on_behalf_of"),
            ("scope", &format!("{scope} offline_access openid profile")),
        ],
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn obo_keeps_the_user_and_names_the_calling_client() {
    let f = fixture().await;
    let user = user_token(&f).await;
    let user_claims = verify(&f.handle, &user, "api://bff").await;
    assert_eq!(user_claims["roles"], json!(["Bff.User"]));

    let (status, body) = obo(&f, "bff", "bff-secret", &user, "api://downstream/.default").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    // Signed PS256 under a kid whose JWK says PS256 (verify() checks the JWK's alg).
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().alg,
        jsonwebtoken::Algorithm::PS256
    );
    let claims = verify(&f.handle, token, "api://downstream").await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["oid"], user_claims["oid"]);
    assert_eq!(claims["tid"], user_claims["tid"]);
    assert_eq!(claims["iss"], user_claims["iss"]);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["azp"], "bff");
    assert_eq!(claims["azpacr"], "1");
    assert_eq!(claims["roles"], json!(["Data.Reader"]));
    assert_eq!(claims["scp"], "data.read data.write");
    assert_eq!(body["scope"], "data.read data.write");

    // A named scope narrows the grant.
    let (status, body) = obo(&f, "bff", "bff-secret", &user, "api://downstream/data.read").await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(
        &f.handle,
        body["access_token"].as_str().unwrap(),
        "api://downstream",
    )
    .await;
    assert_eq!(claims["scp"], "data.read");
    f.handle.shutdown().await;
}

/// why, client id, secret, assertion, status, `error`, Entra's `error_codes[0]`.
type Refusal<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    u16,
    &'a str,
    Option<u64>,
);

#[tokio::test]
async fn obo_refusals_answer_as_entra_does() {
    let f = fixture().await;
    let user = user_token(&f).await;
    #[allow(clippy::disallowed_methods)] // an expired token needs the wall clock
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut expired = MintRequest::new("alice", "api://bff");
    expired.claims.insert("exp".into(), json!(now - 600));
    expired.claims.insert("nbf".into(), json!(now - 900));
    let expired = f.handle.mint(&expired).unwrap();
    // The same shape of token from another server (other keys): not this server's.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = start_yaml(CONFIG, stranger_dir.path()).await;
    let foreign = stranger
        .mint(&MintRequest::new("alice", "api://bff"))
        .unwrap();
    // An application token to the BFF (client credentials of the BFF itself): no user.
    let (_, app, _) = post_form(
        &f.url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "bff"),
            ("client_secret", "bff-secret"),
            ("scope", "api://bff/.default"),
        ],
    )
    .await;
    let app = app["access_token"].as_str().unwrap().to_owned();
    // A user token whose kid names a published key but is re-labelled: header alg changed.
    let relabelled = {
        let mut parts: Vec<String> = user.split('.').map(str::to_owned).collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut header: Value =
            serde_json::from_slice(&base64::Engine::decode(&b64, &parts[0]).unwrap()).unwrap();
        header["alg"] = json!("PS256");
        parts[0] = base64::Engine::encode(&b64, header.to_string());
        parts.join(".")
    };

    let down = "api://downstream/.default";
    let cases: [Refusal<'_>; 11] = [
        (
            "expired",
            "bff",
            "bff-secret",
            &expired,
            400,
            "invalid_grant",
            Some(500133),
        ),
        (
            "foreign",
            "bff",
            "bff-secret",
            &foreign,
            400,
            "invalid_grant",
            Some(50013),
        ),
        (
            "relabelled alg",
            "bff",
            "bff-secret",
            &relabelled,
            400,
            "invalid_grant",
            Some(50013),
        ),
        (
            "garbage",
            "bff",
            "bff-secret",
            "not-a-jwt",
            400,
            "invalid_grant",
            Some(50027),
        ),
        (
            "another client's token",
            "other",
            "other-secret",
            &user,
            400,
            "invalid_grant",
            Some(500131),
        ),
        (
            "app token",
            "bff",
            "bff-secret",
            &app,
            400,
            "invalid_grant",
            None,
        ),
        (
            "no on-behalf-of",
            "no-obo",
            "s",
            &user,
            400,
            "unauthorized_client",
            None,
        ),
        (
            "public client",
            "spa",
            "",
            &user,
            401,
            "invalid_client",
            None,
        ),
        (
            "wrong secret",
            "bff",
            "nope",
            &user,
            401,
            "invalid_client",
            None,
        ),
        (
            "missing assertion",
            "bff",
            "bff-secret",
            "",
            400,
            "invalid_request",
            None,
        ),
        (
            "target not allowed",
            "bff",
            "bff-secret",
            &user,
            400,
            "unauthorized_client",
            None,
        ),
    ];
    for (why, client, secret, assertion, status, error, code) in cases {
        let scope = if why == "target not allowed" {
            "api://elsewhere/.default"
        } else {
            down
        };
        let (got, body) = obo(&f, client, secret, assertion, scope).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{why}: {body}"
        );
        assert_eq!(body["error_codes"][0].as_u64(), code, "{why}: {body}");
        assert!(body.get("access_token").is_none(), "{why}");
    }
    let (status, body, _) = post_form(
        &f.url,
        &[
            ("grant_type", JWT_BEARER),
            ("client_id", "bff"),
            ("client_secret", "bff-secret"),
            ("assertion", &user),
            ("requested_token_use", "impersonate"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // The refused ones did not disturb the good path.
    let (status, body) = obo(&f, "bff", "bff-secret", &user, down).await;
    assert_eq!(status, 200, "{body}");
    stranger.shutdown().await;
    f.handle.shutdown().await;
}

#[test]
fn obo_config_errors_name_the_problem() {
    let dir = std::path::Path::new(".");
    let cases = [
        (
            "resources: { a: {} }\nclients: [{ client-id: b, client-secret: s, auth-method: client_secret_post, on-behalf-of: [nope] }]\n",
            "clients[b]: on-behalf-of: \"nope\" is not in resources",
        ),
        (
            "resources: { a: {} }\nclients: [{ client-id: b, auth-method: none, on-behalf-of: [a] }]\n",
            "on-behalf-of needs a confidential client",
        ),
        (
            "resources: { a: {} }\nusers: [{ username: u, password: p, resource-roles: { nope: [r] } }]\n",
            "users[u].resource-roles: \"nope\" is not in resources",
        ),
    ];
    for (yaml, needle) in cases {
        let err = portcullis_idp::IdpConfig::from_yaml(yaml, dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
}
