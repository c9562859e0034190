//! End-to-end tests: encrypted tokens (JWE) under `decryption-keys`.
//!
//! The real gateway (in process), the recording backend and a JWKS server publishing the signing
//! key, all on loopback port 0. Each token is a JWS signed by the JWKS server's key and encrypted by
//! the test kit's encryptor (independent of the gateway's decryptor) for one alg/enc family. A
//! passing token must reach the backend with its claims as headers; every decryption failure must
//! give the one same answer and never reach the backend. The last test drives the `portcullis`
//! binary from a gateway.yaml with a `file:` RSA key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_auth::{DecryptionKey, DecryptionKeys, KeyManagement, Policy};
use portcullis_config::{KeyLifecycle, KeySource};
use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwe::{encrypt, EncryptionKey, RsaEncryptionKey};
use portcullis_testkit::jwks_server::{b64url, b64url_decode, JwksServer, TestKey};
use serde_json::{json, Value};

use crate::support::{self, route, InProcess};

const ORDERS: &str = "api://orders";
const DECRYPTION_FAILED: &str = "Token decryption failed. Access denied.";
const INVALID: &str = "Invalid JWT.";

/// Every supported content encryption, by its JOSE name.
fn encs() -> impl Iterator<Item = &'static str> {
    portcullis_auth::ContentEncryption::ALL
        .into_iter()
        .map(|e| e.name())
}

/// The symmetric key of a length: one per length the policy holds (16/24/32 bytes serve both
/// AES key wrap and `dir`; 48 and 64 only `dir`).
fn secret(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + len) as u8).collect()
}

struct Fixture {
    backend: Backend,
    _idp: JwksServer,
    signer: TestKey,
    rsa: RsaEncryptionKey,
    gw: InProcess,
    client: reqwest::Client,
}

fn policy(name: &str, issuer: &str, decryption: Vec<DecryptionKey>) -> Policy {
    let mut p = Policy::new(name);
    p.issuers = vec![issuer.to_owned()];
    p.audiences = vec![ORDERS.to_owned()];
    p.decryption_keys = DecryptionKeys::new(decryption);
    p.forward_claims = vec![
        (
            reqwest::header::HeaderName::from_static("x-user-id"),
            "sub".to_owned(),
        ),
        (
            reqwest::header::HeaderName::from_static("x-tenant"),
            "tid".to_owned(),
        ),
    ];
    p
}

async fn fixture(cache_entries: u64) -> Fixture {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let signer = TestKey::rsa("sig-1").unwrap();
    idp.set_keys(&[&signer]);
    let rsa = RsaEncryptionKey::generate().unwrap();
    let mut keys: Vec<DecryptionKey> = [16, 24, 32, 48, 64]
        .into_iter()
        .map(|len| DecryptionKey::symmetric(None, &secret(len), None, vec![], "test").unwrap())
        .collect();
    keys.push(
        DecryptionKey::rsa_from_pem(
            None,
            rsa.private_pem().unwrap().as_bytes(),
            None,
            vec![],
            "test",
        )
        .unwrap(),
    );
    let source = || KeySource::JwksUri {
        url: idp.jwks_url(),
        lifecycle: KeyLifecycle::default(),
    };
    let policies = vec![
        (policy("encrypted", idp.issuer(), keys), vec![source()]),
        (policy("plain", idp.issuer(), Vec::new()), vec![source()]),
    ];
    let routes = vec![
        route(
            "encrypted",
            "/api/orders",
            backend.addr(),
            Some("encrypted"),
        ),
        route("plain", "/api/plain", backend.addr(), Some("plain")),
    ];
    let mut model = support::model("jwe-test.yaml", policies, routes);
    model.server.token_cache_max_entries = cache_entries;
    let gw = InProcess::start(&model).await;
    Fixture {
        backend,
        _idp: idp,
        signer,
        rsa,
        gw,
        client: reqwest::Client::new(),
    }
}

impl Fixture {
    /// A JWS signed by the identity provider's key.
    fn signed(&self, sub: &str) -> String {
        let now = support::now();
        self.signer
            .sign(&json!({
                "iss": self._idp.issuer(), "aud": ORDERS, "sub": sub, "tid": "tenant-a",
                "iat": now, "nbf": now - 5, "exp": now + 300,
            }))
            .unwrap()
    }

    /// `signed(sub)` encrypted for `alg`/`enc` (the matching key of the policy).
    fn jwe(&self, alg: &str, enc: &str, sub: &str) -> String {
        self.jwe_with(&json!({ "alg": alg, "enc": enc, "cty": "JWT" }), sub)
    }

    fn jwe_with(&self, header: &Value, sub: &str) -> String {
        let alg = header["alg"].as_str().unwrap();
        let enc = header["enc"].as_str().unwrap();
        let cek_len = portcullis_auth::ContentEncryption::from_name(enc)
            .unwrap()
            .cek_len();
        let sym;
        let key = match alg {
            "dir" => {
                sym = secret(cek_len);
                EncryptionKey::Symmetric(&sym)
            }
            "A128KW" | "A192KW" | "A256KW" => {
                sym = secret(KeyManagement::from_name(alg).map_or(0, kek_len));
                EncryptionKey::Symmetric(&sym)
            }
            _ => EncryptionKey::Rsa(&self.rsa),
        };
        encrypt(header, &key, self.signed(sub).as_bytes()).unwrap()
    }

    /// Status, JSON body (the backend's echo when it answered) of `GET path` with `token`.
    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("http://{}{path}", self.gw.proxy()))
            .header("Authorization", format!("Bearer {token}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn counter(&self, sample: &str) -> u64 {
        let text = self.gw.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

fn kek_len(alg: KeyManagement) -> usize {
    match alg {
        KeyManagement::A128KW => 16,
        KeyManagement::A192KW => 24,
        _ => 32,
    }
}

/// Tamper with one segment of a compact JWE (flip a bit of its last decoded byte).
fn tamper(token: &str, segment: usize) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = b64url_decode(&parts[segment]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    parts[segment] = b64url(&bytes);
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_alg_and_enc_family_reaches_the_backend_with_its_claims() {
    let f = fixture(0).await;
    let mut families = Vec::new();
    for enc in encs() {
        for alg in [
            "dir",
            "A128KW",
            "A192KW",
            "A256KW",
            "RSA-OAEP",
            "RSA-OAEP-256",
        ] {
            families.push((alg, enc));
        }
    }
    for (i, (alg, enc)) in families.iter().enumerate() {
        let sub = format!("user-{i}");
        let token = f.jwe(alg, enc, &sub);
        let before = f.backend.request_count();
        let (status, body) = f.get("/api/orders/1", &token).await;
        assert_eq!(status, 200, "{alg} {enc}: {body}");
        assert_eq!(f.backend.request_count(), before + 1);
        let seen = f.backend.requests().pop().unwrap();
        assert_eq!(seen.header("x-user-id"), Some(sub.as_str()), "{alg} {enc}");
        assert_eq!(seen.header("x-tenant"), Some("tenant-a"));
        // the token is forwarded as received (encrypted)
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
    }
    assert_eq!(families.len(), 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decryption_failure_gets_the_same_answer() {
    let f = fixture(0).await;
    let mut cases: Vec<(String, String)> = Vec::new();
    for (alg, enc) in [
        ("A256KW", "A256GCM"),
        ("dir", "A128CBC-HS256"),
        ("RSA-OAEP-256", "A256CBC-HS512"),
        ("RSA-OAEP", "A128GCM"),
    ] {
        let good = f.jwe(alg, enc, "alice");
        assert_eq!(f.get("/api/orders", &good).await.0, 200, "{alg} {enc}");
        cases.push((format!("{alg} {enc}: tampered tag"), tamper(&good, 4)));
        cases.push((
            format!("{alg} {enc}: tampered ciphertext"),
            tamper(&good, 3),
        ));
        cases.push((format!("{alg} {enc}: tampered iv"), tamper(&good, 2)));
        if alg != "dir" {
            cases.push((
                format!("{alg} {enc}: tampered wrapped key"),
                tamper(&good, 1),
            ));
        }
    }
    // wrong keys: a KEK, a direct key and an RSA key the gateway does not hold
    let signed = f.signed("mallory");
    let seal = |alg: &str, enc: &str, key: EncryptionKey<'_>| {
        let header = json!({ "alg": alg, "enc": enc, "cty": "JWT" });
        encrypt(&header, &key, signed.as_bytes()).unwrap()
    };
    let wrong_kek = [0x5au8; 32];
    cases.push((
        "A256KW wrong key".into(),
        seal("A256KW", "A256GCM", EncryptionKey::Symmetric(&wrong_kek)),
    ));
    cases.push((
        "dir wrong key".into(),
        seal("dir", "A256GCM", EncryptionKey::Symmetric(&wrong_kek)),
    ));
    let stranger = RsaEncryptionKey::generate().unwrap();
    cases.push((
        "RSA-OAEP-256 wrong key".into(),
        seal("RSA-OAEP-256", "A256GCM", EncryptionKey::Rsa(&stranger)),
    ));
    // refused algorithms and features, with keys the gateway does hold
    cases.push((
        "RSA1_5".into(),
        seal("RSA1_5", "A128CBC-HS256", EncryptionKey::Rsa(&f.rsa)),
    ));
    cases.push((
        "zip".into(),
        f.jwe_with(
            &json!({ "alg": "A256KW", "enc": "A256GCM", "zip": "DEF" }),
            "alice",
        ),
    ));
    cases.push((
        "crit".into(),
        f.jwe_with(
            &json!({ "alg": "A256KW", "enc": "A256GCM", "crit": ["x"], "x": 1 }),
            "alice",
        ),
    ));
    for (name, token) in &cases {
        let (status, body) = f.get("/api/orders", token).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some(DECRYPTION_FAILED)),
            "{name}: {body}"
        );
    }
    assert_eq!(
        f.backend.request_count(),
        4,
        "only the four good tokens reached the backend"
    );
    let metrics = f.gw.metrics().await;
    assert!(
        metrics.contains("reason=\"TokenDecryptionFailed\""),
        "the reason is counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_signed_token_still_passes_and_a_policy_without_keys_refuses_jwe() {
    let f = fixture(0).await;
    let (status, _) = f.get("/api/orders", &f.signed("bob")).await;
    assert_eq!(status, 200);
    assert_eq!(
        f.backend.requests().pop().unwrap().header("x-user-id"),
        Some("bob")
    );
    let (status, body) = f
        .get("/api/plain", &f.jwe("A256KW", "A256GCM", "bob"))
        .await;
    assert_eq!((status, body["message"].as_str()), (401, Some(INVALID)));
    assert_eq!(f.backend.request_count(), 1);
}

/// A JWE whose plaintext is a bare claims set: not a signed token, refused (require-signed-tokens
/// is on by default), with the answer for invalid tokens (decryption itself succeeded).
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_but_unsigned_token_is_refused() {
    let f = fixture(0).await;
    let claims =
        json!({ "iss": f._idp.issuer(), "aud": ORDERS, "sub": "eve", "exp": support::now() + 300 });
    let kek = secret(32);
    let token = encrypt(
        &json!({ "alg": "A256KW", "enc": "A256GCM" }),
        &EncryptionKey::Symmetric(&kek),
        claims.to_string().as_bytes(),
    )
    .unwrap();
    let (status, body) = f.get("/api/orders", &token).await;
    assert_eq!((status, body["message"].as_str()), (401, Some(INVALID)));
    assert_eq!(f.backend.request_count(), 0);
}

/// With the token cache on, a repeated JWE is a hit (its claims reach the backend again), and a
/// tampered copy of it is not: it misses and fails decryption.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_keys_on_the_jwe_as_received() {
    let f = fixture(1000).await;
    let token = f.jwe("RSA-OAEP-256", "A256GCM", "carol");
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    assert_eq!(f.get("/api/orders", &token).await.0, 200);
    assert_eq!(f.counter("portcullis_token_cache_hits_total").await, 1);
    assert_eq!(
        f.backend.requests().pop().unwrap().header("x-user-id"),
        Some("carol")
    );
    let (status, body) = f.get("/api/orders", &tamper(&token, 4)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some(DECRYPTION_FAILED))
    );
    assert_eq!(f.counter("portcullis_token_cache_hits_total").await, 1);
    // the same JWE under the policy without decryption keys: a different key scope, no hit
    let (status, _) = f.get("/api/plain", &token).await;
    assert_eq!(status, 401);
    assert_eq!(f.counter("portcullis_token_cache_hits_total").await, 1);
}

/// The binary from a gateway.yaml: `decryption-keys` with an RSA private key file and an inline
/// base64 key, checked by `portcullis run` like any config.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_yaml_with_decryption_keys_decrypts() {
    let backend = Backend::start().unwrap();
    let idp = JwksServer::start().await.unwrap();
    let signer = TestKey::rsa("sig-1").unwrap();
    idp.set_keys(&[&signer]);
    let rsa = RsaEncryptionKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("enc-private.pem");
    std::fs::write(&pem_path, rsa.private_pem().unwrap()).unwrap();
    let kek = secret(16);
    let yaml = format!(
        r#"server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
policies:
  encrypted:
    validate-jwt:
      issuers: ["{issuer}"]
      audiences: ["{ORDERS}"]
      issuer-signing-keys: [{{ jwks-uri: "{jwks}" }}]
      decryption-keys:
        - {{ file: "{pem}", alg: RSA-OAEP-256 }}
        - {{ value: "{b64}", alg: A128KW }}
    forward-claims: {{ X-User-Id: sub }}
routes:
  - name: orders
    match: {{ path-prefix: /api }}
    upstream: http://{backend}
    policy: encrypted
"#,
        issuer = idp.issuer(),
        jwks = idp.jwks_url(),
        pem = pem_path.display(),
        b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &kek),
        backend = backend.addr(),
    );
    let client = reqwest::Client::new();
    let gw = support::Gateway::run(&yaml, &client).await;
    let now = support::now();
    let signed = signer
        .sign(&json!({ "iss": idp.issuer(), "aud": ORDERS, "sub": "dave", "exp": now + 300 }))
        .unwrap();
    let seal = |alg: &str, key: EncryptionKey<'_>| {
        let header = json!({ "alg": alg, "enc": "A128CBC-HS256", "cty": "JWT" });
        encrypt(&header, &key, signed.as_bytes()).unwrap()
    };
    let send = |token: String| {
        let request = client.get(format!("{}/api/x", gw.proxy)).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    for token in [
        seal("RSA-OAEP-256", EncryptionKey::Rsa(&rsa)),
        seal("A128KW", EncryptionKey::Symmetric(&kek)),
    ] {
        assert_eq!(send(token).await.status(), 200);
    }
    // RSA-OAEP (SHA-1) is not configured for the file key: refused like any decryption failure
    let resp = send(seal("RSA-OAEP", EncryptionKey::Rsa(&rsa))).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], DECRYPTION_FAILED);
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.header("x-user-id") == Some("dave")));
}
