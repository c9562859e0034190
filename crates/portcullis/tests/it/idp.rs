//! End-to-end tests: idp. The real `portcullis idp` and `portcullis token` binaries: a minted
//! token's key is served by the running server, and the server answers discovery and grants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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

/// Starts `portcullis idp -c <config>` and reads its printed http URL (printed once listening).
fn start_idp(config: &std::path::Path) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["idp", "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn portcullis idp");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("http:"))
        .expect("idp printed its http address");
    let url = line.trim_start_matches("http:").trim().to_owned();
    (server, url)
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(value).collect();
    bits.chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(q.len() - 1)
        })
        .collect()
}

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').nth(i).expect("part"))).expect("json")
}

#[tokio::test]
async fn token_command_key_is_served_by_idp_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idp.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(BIN)
        .args([
            "token",
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
            "-c",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
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

    let (_server, base) = start_idp(&config);
    let client = reqwest::Client::new();
    let jwks: Value = client
        .get(format!("{base}/realm/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "rsa-1")
        .expect("rsa-1 served");
    let again = Command::new(BIN)
        .args(["token", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(
        served["kty"], "RSA",
        "the persisted key is the one both commands use"
    );

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
