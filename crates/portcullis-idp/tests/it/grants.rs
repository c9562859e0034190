//! Each grant and client authentication method over real HTTP, and the RFC 6749 error shapes.

use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use sha1::Digest;

use crate::{base, post_form, split, start_yaml, verify};

struct Fixture {
    _dir: tempfile::TempDir,
    handle: portcullis_idp::IdpHandle,
    cert_key: EncodingKey,
    cert_der: Vec<u8>,
    assert_key: EncodingKey,
}

fn now() -> f64 {
    #[allow(clippy::disallowed_methods)] // tests build assertions with wall-clock times
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cert_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["svc-cert".to_owned()])
        .unwrap()
        .self_signed(&cert_pair)
        .unwrap();
    std::fs::write(dir.path().join("svc-cert.pem"), cert.pem()).unwrap();
    let assert_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let assert_key = EncodingKey::from_rsa_pem(assert_pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&assert_key, jsonwebtoken::Algorithm::RS256)
            .unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!("conn-key");
    let yaml = format!(
        r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{{port}}/realm"
signing-keys: [{{ id: rsa-1, private-key-file: keys/rsa-1.pem }}]
resources:
  "api://orders": {{ scopes: [orders.read, orders.write], token-lifetime: 300 }}
  "api://other": {{ audience: "api://other-aud", scopes: [x] }}
clients:
  - {{ client-id: svc-basic, client-secret: "s3cret", auth-method: client_secret_basic,
      default-resource: "api://orders", roles: [Orders.Reader], claims: {{ tid: tenant-a }} }}
  - {{ client-id: svc-post, client-secret: "p0st", auth-method: client_secret_post,
      grant-types: [client_credentials, password, refresh_token], default-resource: "api://orders" }}
  - {{ client-id: svc-cert, auth-method: private_key_jwt, certificate-file: svc-cert.pem,
      default-resource: "api://orders" }}
  - {{ client-id: svc-assert, auth-method: none, assertion-jwks: {{ "keys": [{jwk}] }},
      grant-types: ["urn:ietf:params:oauth:grant-type:jwt-bearer", refresh_token],
      default-resource: "api://orders", profile: dotnet-sts, roles: [Reader] }}
users:
  - {{ username: alice, password: "alice-pw", roles: [orders-reader] }}
"#
    );
    let handle = start_yaml(&yaml, dir.path()).await;
    assert!(dir.path().join("keys/rsa-1.pem").exists(), "key persisted");
    Fixture {
        handle,
        cert_key: EncodingKey::from_rsa_pem(cert_pair.serialize_pem().as_bytes()).unwrap(),
        cert_der: cert.der().to_vec(),
        assert_key,
        _dir: dir,
    }
}

fn token_url(f: &Fixture) -> String {
    f.handle.token_endpoint()
}

#[tokio::test]
async fn client_credentials_with_basic_secret_and_default_scope() {
    let f = fixture().await;
    let resp = reqwest::Client::new()
        .post(token_url(&f))
        .basic_auth("svc-basic", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "api://other/.default"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body, _) = split(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(body.get("refresh_token").is_none());
    let claims = verify(
        &f.handle,
        body["access_token"].as_str().unwrap(),
        "api://other-aud",
    )
    .await;
    assert_eq!(claims["sub"], "svc-basic");
    assert_eq!(claims["iss"], f.handle.issuer());
    assert_eq!(claims["roles"], json!(["Orders.Reader"]));
    assert_eq!(claims["tid"], "tenant-a");
}

#[tokio::test]
async fn secret_in_body_resource_param_and_ignored_oidc_scopes() {
    let f = fixture().await;
    let (status, body, _) = post_form(
        &token_url(&f),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc-post"),
            ("client_secret", "p0st"),
            ("scope", "openid profile offline_access"),
            ("resource", "api://orders"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(
        &f.handle,
        body["access_token"].as_str().unwrap(),
        "api://orders",
    )
    .await;
    assert_eq!(claims["scope"], "orders.read orders.write");
}

#[tokio::test]
async fn errors_follow_rfc6749() {
    let f = fixture().await;
    let resp = reqwest::Client::new()
        .post(token_url(&f))
        .basic_auth("svc-basic", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let (status, body, headers) = split(resp).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(headers["www-authenticate"].starts_with("Basic"));
    assert!(body["error_description"].is_string());

    let (status, body, headers) = post_form(
        &token_url(&f),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc-post"),
            ("client_secret", "no"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(!headers.contains_key("www-authenticate"));

    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("grant_type", "magic"), ("client_id", "svc-post")],
            "unsupported_grant_type",
        ),
        (&[("client_id", "svc-post")], "invalid_request"),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "svc-post"),
                ("client_secret", "p0st"),
                ("username", "alice"),
                ("password", "bad"),
            ],
            "invalid_grant",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "svc-post"),
                ("client_secret", "p0st"),
                ("scope", "orders.delete"),
            ],
            "invalid_scope",
        ),
        (
            &[
                ("grant_type", "password"),
                ("client_id", "svc-basic"),
                ("client_secret", "s3cret"),
                ("username", "alice"),
                ("password", "alice-pw"),
            ],
            "unauthorized_client",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "svc-post"),
                ("client_secret", "p0st"),
                ("refresh_token", "nope"),
            ],
            "invalid_grant",
        ),
    ];
    for (form, error) in cases {
        let (status, body, _) = post_form(&token_url(&f), form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(*error)),
            "{form:?}"
        );
    }
}

#[tokio::test]
async fn password_grant_and_rotating_refresh_on_keycloak_path() {
    let f = fixture().await;
    let url = format!(
        "{}/realms/dev/protocol/openid-connect/token",
        base(&f.handle)
    );
    let creds = [("client_id", "svc-post"), ("client_secret", "p0st")];
    let mut form = vec![
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-pw"),
        ("scope", "openid orders.read"),
    ];
    form.extend(creds);
    let (status, body, _) = post_form(&url, &form).await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(
        &f.handle,
        body["access_token"].as_str().unwrap(),
        "api://orders",
    )
    .await;
    assert_eq!(claims["scope"], "orders.read");
    assert_eq!(claims["preferred_username"], "alice");
    let first = body["refresh_token"].as_str().unwrap().to_owned();

    let mut refresh = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", first.as_str()),
    ];
    refresh.extend(creds);
    let (status, body, _) = post_form(&url, &refresh).await;
    assert_eq!(status, 200, "{body}");
    let second = body["refresh_token"].as_str().unwrap();
    assert_ne!(second, first);
    let claims = verify(
        &f.handle,
        body["access_token"].as_str().unwrap(),
        "api://orders",
    )
    .await;
    assert_eq!(claims["sub"], "alice");

    let (status, body, _) = post_form(&url, &refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "old refresh token must stop working"
    );
}

fn cert_assertion(f: &Fixture, aud: &str, padded: bool) -> String {
    let digest = sha1::Sha1::digest(&f.cert_der);
    let mut header = Header::new(jsonwebtoken::Algorithm::PS256);
    header.x5t = Some(if padded {
        base64::engine::general_purpose::URL_SAFE.encode(digest)
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    });
    let now = now();
    let claims = json!({"iss": "svc-cert", "sub": "svc-cert", "aud": aud, "iat": now, "nbf": now, "exp": now + 600.5, "jti": "same"});
    jsonwebtoken::encode(&header, &claims, &f.cert_key).unwrap()
}

#[tokio::test]
async fn private_key_jwt_by_x5t_without_kid_reusable_on_entra_path() {
    let f = fixture().await;
    let url = format!("{}/tenant-a/oauth2/v2.0/token", base(&f.handle));
    let assertion = cert_assertion(&f, &url, true);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "svc-cert"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
        ("scope", "api://orders/.default"),
    ];
    for _ in 0..2 {
        let (status, body, _) = post_form(&url, &form).await;
        assert_eq!(status, 200, "{body}");
        let claims = verify(
            &f.handle,
            body["access_token"].as_str().unwrap(),
            "api://orders",
        )
        .await;
        assert_eq!(claims["sub"], "svc-cert");
    }
    let unpadded = cert_assertion(&f, f.handle.issuer(), false);
    let form2 = [
        form[0],
        form[1],
        form[2],
        ("client_assertion", unpadded.as_str()),
    ];
    assert_eq!(post_form(&url, &form2).await.0, 200);

    let wrong_aud = cert_assertion(&f, "https://elsewhere.example/token", true);
    let form3 = [
        form[0],
        form[1],
        form[2],
        ("client_assertion", wrong_aud.as_str()),
    ];
    let (status, body, _) = post_form(&url, &form3).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let mut tampered = assertion.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let form4 = [
        form[0],
        form[1],
        form[2],
        ("client_assertion", tampered.as_str()),
    ];
    assert_eq!(post_form(&url, &form4).await.0, 401);
}

fn bearer_assertion(f: &Fixture, aud: &str) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("conn-key".into());
    let now = now() as u64;
    let sub = "5f1c0a3e-sp@tenant-42";
    let claims =
        json!({"iss": sub, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 3600});
    jsonwebtoken::encode(&header, &claims, &f.assert_key).unwrap()
}

/// Verifies a dotnet-sts token by hand: its header alg is an XML-DSig URI jsonwebtoken cannot parse.
async fn verify_sts(f: &Fixture, token: &str) -> Value {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], portcullis_idp::XMLDSIG_RSA_SHA512);
    let kid = header["kid"].as_str().unwrap();
    assert!(
        kid.len() == 40 && kid.chars().all(|c| c.is_ascii_hexdigit()),
        "hex thumbprint kid {kid}"
    );
    let set = crate::jwks(&f.handle).await;
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(kid).unwrap()).unwrap();
    let message = format!("{}.{}", parts[0], parts[1]);
    assert!(jsonwebtoken::crypto::verify(
        parts[2],
        message.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::RS512
    )
    .unwrap());
    serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test]
async fn jwt_bearer_grant_form_and_json_bodies_with_sts_tokens() {
    let f = fixture().await;
    let url = format!("{}/connect/token", base(&f.handle));
    let assertion = bearer_assertion(&f, &url);
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let (status, form_body, _) = post_form(
        &url,
        &[
            ("grant_type", grant),
            ("client_id", "svc-assert"),
            ("assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(status, 200, "{form_body}");
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"grant_type": grant, "client_id": "svc-assert", "assertion": assertion}))
        .send()
        .await
        .unwrap();
    let (status, json_body, _) = split(resp).await;
    assert_eq!(status, 200, "{json_body}");
    for body in [&form_body, &json_body] {
        let claims = verify_sts(&f, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], "client");
        assert_eq!(claims[portcullis_idp::sts::NAME], "5f1c0a3e-sp@tenant-42");
        assert_eq!(claims[portcullis_idp::sts::ROLE], json!(["Reader"]));
        assert_eq!(claims[portcullis_idp::sts::TENANT_ID], "tenant-42");
        assert!(body["refresh_token"].is_string());
    }
    let refresh = form_body["refresh_token"].as_str().unwrap();
    let (status, body, _) = post_form(
        &url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "svc-assert"),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let other = bearer_assertion(&f, "https://elsewhere.example/");
    let (status, body, _) = post_form(
        &url,
        &[
            ("grant_type", grant),
            ("client_id", "svc-assert"),
            ("assertion", &other),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}
