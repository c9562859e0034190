//! End-to-end tests: idp. The real `portcullis idp` and `portcullis token` binaries: a minted
//! token's key is served by the running server, and the server answers discovery and grants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

const CONFIG: &str = r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
signing-keys: [{ id: rsa-1, private-key-file: keys/rsa-1.pem }]
resources:
  "api://orders": { scopes: [orders.read] }
clients:
  - { client-id: svc, client-secret: s3cret, auth-method: client_secret_post, default-resource: "api://orders" }
"#;

/// Kills the child on drop so a failing test leaves no server behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `portcullis idp -c <config> [extra...]` and reads its printed http URL (printed once
/// listening).
fn start_idp(config: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["idp", "-c"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn portcullis idp");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let line = lines
        .find(|l| l.starts_with("http:"))
        .expect("idp printed its http address");
    // Keep reading what it prints later, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    let url = line.trim_start_matches("http:").trim().to_owned();
    (server, url)
}

/// `portcullis token -c <config> [args]`: the minted token.
fn mint_with(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The served JWKS, fetched on a fresh connection: a pooled one may be closed by the server just
/// as it is reused (seen once under load), which is a client race, not what these tests are about.
async fn served_jwks(client: &reqwest::Client, base: &str) -> Vec<u8> {
    client
        .get(format!("{base}/realm/jwks"))
        .header("connection", "close")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Whether `token`'s signature verifies against the keys in `jwks` (the gateway's verifier, no
/// claim checks): the independent check that a token and a server share the key.
fn verifies(token: &str, jwks: &[u8]) -> Result<(), String> {
    let keys = portcullis_auth::parse_jwks(jwks, "idp").map_err(|e| format!("{e:?}"))?;
    let snapshot = portcullis_auth::KeySnapshot::new(keys.keys);
    portcullis_auth::verify_token(token, &snapshot, true)
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

fn part(token: &str, i: usize) -> Value {
    let segment = token.split('.').nth(i).expect("part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("json")
}

#[tokio::test]
async fn token_command_key_is_served_by_idp_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idp.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let token = mint_with(
        &config,
        &[
            "--sub",
            "alice",
            "--aud",
            "api://orders",
            "--scope",
            "orders.read",
            "--roles",
            "A,B",
            "--ttl",
            "5m",
            "--profile",
            "keycloak",
            "--claim",
            "tid=t1",
        ],
    );
    let (header, claims) = (part(&token, 0), part(&token, 1));
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("rsa-1"))
    );
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["realm_access"]["roles"],
        serde_json::json!(["A", "B"])
    );
    assert_eq!(claims["tid"], "t1");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert!(dir.path().join("keys/rsa-1.pem").exists());

    let (_server, base) = start_idp(&config, &[]);
    let client = reqwest::Client::new();
    let jwks = served_jwks(&client, &base).await;
    // The token minted before the server started verifies against what the server publishes: both
    // commands use the persisted key (a server that made a fresh key under the same kid fails).
    verifies(&token, &jwks).unwrap_or_else(|e| panic!("token vs served JWKS: {e}"));
    // And a token minted while the server runs, too (the file is read, not rewritten).
    let again = mint_with(&config, &[]);
    verifies(&again, &jwks).unwrap_or_else(|e| panic!("second token vs served JWKS: {e}"));

    let resp = client
        .post(format!("{base}/realm/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=svc&client_secret=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let claims = part(body["access_token"].as_str().unwrap(), 1);
    assert_eq!(claims["iss"], format!("{base}/realm"));
    assert_eq!(claims["aud"], "api://orders");
}

#[test]
fn idp_rejects_an_invalid_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idp.yaml");
    std::fs::write(&config, "listen: 127.0.0.1:0\naudiences: [x]\n").unwrap();
    let out = Command::new(BIN)
        .args(["idp", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

/// The kids the running server publishes.
async fn published_kids(client: &reqwest::Client, base: &str) -> Vec<String> {
    kids_of(&served_jwks(client, base).await)
}

/// The kids in a JWKS document.
fn kids_of(jwks: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(jwks).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn rotate_every_replaces_the_key_and_retires_the_old_one_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idp.yaml");
    // The grace (4 s) is twice the rotation period (2 s): the first key must still be published
    // when the second rotation's key appears, and leave only afterwards. Ordering, not timing:
    // with a grace shorter than the period it would be gone before the second rotation.
    std::fs::write(&config, format!("{CONFIG}rotation-grace: 4s\n")).unwrap();
    let (_server, base) = start_idp(&config, &["--rotate-every", "2s"]);
    let client = reqwest::Client::new();
    let old_token = mint_with(&config, &[]);
    // rsa-1 and its STS-style alias (kid = the key's SHA-1 thumbprint); each rotation publishes
    // as many fresh kids.
    let initial = published_kids(&client, &base).await;
    assert!(initial.contains(&"rsa-1".to_owned()), "{initial:?}");
    // Polled every 100 ms, bounded by a generous 40 s for ~6 s of timers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let mut seen_new = BTreeSet::new();
    let mut seen_beside_old = BTreeSet::new();
    loop {
        let jwks = served_jwks(&client, &base).await;
        let kids = kids_of(&jwks);
        let fresh: Vec<String> = kids
            .iter()
            .filter(|k| !initial.contains(k))
            .cloned()
            .collect();
        if kids.contains(&"rsa-1".to_owned()) {
            if !fresh.is_empty() {
                // Rotated, in the grace: a token signed with the old key still verifies.
                verifies(&old_token, &jwks).unwrap_or_else(|e| panic!("old key in grace: {e}"));
            }
            seen_beside_old.extend(fresh.iter().cloned());
        } else {
            assert!(
                seen_beside_old.len() >= 2 * initial.len(),
                "the old key left before the second rotation's key was published beside it: \
                 {kids:?}, seen beside it: {seen_beside_old:?}"
            );
        }
        seen_new.extend(fresh);
        if !kids.contains(&"rsa-1".to_owned()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kids: {kids:?}, new so far: {seen_new:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Tokens minted through the grant now carry a rotated kid, which the JWKS serves.
    let resp = client
        .post(format!("{base}/realm/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=svc&client_secret=s3cret")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let kid = part(body["access_token"].as_str().unwrap(), 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(kid, "rsa-1");
    assert!(seen_new.contains(&kid) || published_kids(&client, &base).await.contains(&kid));
}
