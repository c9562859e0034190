//! End-to-end tests: `portcullis loadtest` against the gateway's https listener, with real tokens
//! from `portcullis idp`'s token endpoint (client credentials with a secret, and with a
//! certificate assertion), over HTTP/1.1 and HTTP/2, judged per token kind.
//!
//! Everything is real and on loopback: the dev token server (http and https listeners, its
//! generated CA and 127.0.0.1 certificate), the gateway binary serving that certificate, the
//! recording backend, and the loadtest binary with `--json`. Runs are a second or so of load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use portcullis_testkit::backend::Backend;
use serde_json::Value;

use crate::support::Gateway;

const KINDS_FROM_A_REAL_TOKEN: [&str; 5] =
    ["valid", "bad-signature", "alg-none", "missing", "malformed"];
const KINDS_NEEDING_THE_KEY: [&str; 5] = [
    "expired",
    "wrong-audience",
    "unknown-kid",
    "wrong-issuer",
    "not-yet-valid",
];

/// The dev token server (https with a generated CA, tokens for `api://orders` living 4 s so a
/// short run sees a refresh), a client with a secret and one with a certificate; the gateway
/// with an https listener (the idp's certificate for 127.0.0.1), a validating route `/api` and an
/// anonymous one `/open`.
struct Stack {
    dir: tempfile::TempDir,
    idp: portcullis_idp::IdpHandle,
    gateway: Gateway,
    backend: Backend,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let client =
            rcgen::generate_simple_self_signed(vec!["loadtest-client".to_owned()]).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("client-key.pem"),
            client.signing_key.serialize_pem(),
        )
        .unwrap();
        let idp_yaml = r#"
listen: "127.0.0.1:0"
https: { listen: "127.0.0.1:0", generate: true, cert-file: tls/cert.pem, key-file: tls/key.pem, ca-file: tls/ca.pem }
issuer: "http://127.0.0.1:{port}/realm"
resources:
  orders: { audience: "api://orders", scopes: [orders.read], token-lifetime: 4s }
clients:
  - { client-id: lt-secret, auth-method: client_secret_post, client-secret: s3cret-for-tests }
  - { client-id: lt-cert, auth-method: private_key_jwt, certificate-file: client.pem }
"#;
        let config = portcullis_idp::IdpConfig::from_yaml(idp_yaml, dir.path()).unwrap();
        let idp = portcullis_idp::start(config).await.unwrap();
        let tls = dir.path().join("tls");
        let backend = Backend::start().unwrap();
        let gateway_yaml = format!(
            r#"server:
  listen:
    - {{ addr: "127.0.0.1:0", tls: {{ cert: "{cert}", key: "{key}" }} }}
  admin: "127.0.0.1:0"
policies:
  p:
    validate-jwt:
      openid-config: [{{ url: "{discovery}" }}]
      audiences: [api://orders]
routes:
  - name: api
    match: {{ path-prefix: /api }}
    upstream: {backend}
    policy: p
  - name: open
    match: {{ path-prefix: /open }}
    upstream: {backend}
    policy: none
"#,
            cert = tls.join("cert.pem").display(),
            key = tls.join("key.pem").display(),
            discovery = idp.discovery_url(),
            backend = backend.url(),
        );
        let client = crate::support::client_trusting(&tls.join("ca.pem"));
        let gateway = Gateway::run(&gateway_yaml, &client).await;
        assert!(gateway.proxy.starts_with("https://127.0.0.1:"));
        Stack {
            dir,
            idp,
            gateway,
            backend,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn https_token_endpoint(&self) -> String {
        format!("https://{}/token", self.idp.https_addr().unwrap())
    }
}

/// `portcullis loadtest ARGS --json --quiet`: (exit code, the report, stderr).
fn loadtest(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("loadtest")
        .args(args)
        .args(["--json", "--quiet", "--threads", "1", "--connections", "4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    (out.status.code().unwrap(), report, stderr)
}

fn kind<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["correctness"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap_or_else(|| panic!("no kind {name}: {report:#}"))
}

/// Every kind a real token can be turned into was sent and answered as expected; the kinds that
/// need the signing key are listed as not produced, with no responses.
fn assert_correct_per_kind(report: &Value) {
    for name in KINDS_FROM_A_REAL_TOKEN {
        let k = kind(report, name);
        assert_eq!(k["produced"], true, "{name}: {report:#}");
        assert!(k["responses"].as_u64().unwrap() > 0, "{name}: {report:#}");
        assert_eq!(k["unexpected"], 0, "{name}: {report:#}");
    }
    for name in KINDS_NEEDING_THE_KEY {
        let k = kind(report, name);
        assert_eq!(k["produced"], false, "{name}: {report:#}");
        assert_eq!(k["responses"], 0, "{name}: {report:#}");
        assert!(
            k["not_produced"].as_str().unwrap().contains("signing key"),
            "{k}"
        );
    }
    assert_eq!(
        report["setup"]["kinds_produced"],
        serde_json::json!(["valid", "bad-signature", "alg-none", "missing", "malformed"])
    );
}

fn common<'a>(url: &'a str, endpoint: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "--url",
        url,
        "--cacert",
        ca,
        "--token-endpoint",
        endpoint,
        "--token-scope",
        "api://orders/.default",
        "--tokens",
        "40",
        "--invalid",
        "20%",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_tokens_over_https_are_judged_per_kind() {
    let stack = Stack::start().await;
    let url = format!("{}/api/orders", stack.gateway.proxy);
    let (endpoint, ca) = (stack.https_token_endpoint(), stack.path("tls/ca.pem"));
    let mut args = common(&url, &endpoint, &ca);
    args.extend([
        "--client-id",
        "lt-secret",
        "--client-secret",
        "s3cret-for-tests",
    ]);
    args.extend(["--duration", "2500ms"]);
    let (code, report, stderr) = loadtest(&args);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["verdict"]["pass"], true);
    assert_correct_per_kind(&report);
    let setup = &report["setup"];
    assert_eq!(setup["tls"], "verified");
    assert_eq!(setup["protocol"], "http/1.1");
    assert_eq!(setup["token_source"], endpoint.as_str());
    assert_eq!(setup["alg"], "RS256");
    // Tokens live 4 s (3 to 4 by their `exp`): refreshed after half of that, within the run.
    assert!(setup["token_fetches"].as_u64().unwrap() >= 2, "{setup}");
    assert_eq!(report["errors"]["connect"], 0);
    assert!(!stderr.contains("s3cret-for-tests"), "{stderr}");
    // Only valid tokens reached the backend, each with the client's identity.
    let valid = kind(&report, "valid")["responses"].as_u64().unwrap();
    assert!(stack.backend.request_count() as u64 >= valid);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_client_tokens_over_http2_are_judged_per_kind() {
    let stack = Stack::start().await;
    let url = format!("{}/api/orders", stack.gateway.proxy);
    let (endpoint, ca) = (stack.https_token_endpoint(), stack.path("tls/ca.pem"));
    let (cert, key) = (stack.path("client.pem"), stack.path("client-key.pem"));
    let mut args = common(&url, &endpoint, &ca);
    args.extend([
        "--client-id",
        "lt-cert",
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]);
    args.extend(["--http2", "--duration", "1s"]);
    let (code, report, stderr) = loadtest(&args);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_correct_per_kind(&report);
    assert_eq!(report["setup"]["protocol"], "h2");
    assert_eq!(
        report["statuses"]["200"],
        kind(&report, "valid")["responses"]
    );

    // A wrong certificate key: the token endpoint refuses the assertion, nothing is sent.
    let mut args = common(&url, &endpoint, &ca);
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    let other_key = Path::new(&stack.path("other-key.pem")).to_owned();
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let other_key = other_key.display().to_string();
    args.extend([
        "--client-id",
        "lt-cert",
        "--client-cert",
        &cert,
        "--client-key",
        &other_key,
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("loadtest")
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_client"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_is_loud_and_an_unverified_certificate_fails_without_it() {
    let stack = Stack::start().await;
    let url = format!("{}/api/orders", stack.gateway.proxy);
    // The token endpoint over plain http: `--insecure` concerns the target only.
    let endpoint = format!("http://{}/token", stack.idp.http_addr().unwrap());
    let base = [
        "--url",
        url.as_str(),
        "--token-endpoint",
        endpoint.as_str(),
        "--client-id",
        "lt-secret",
        "--client-secret",
        "s3cret-for-tests",
        "--tokens",
        "20",
        "--invalid",
        "20%",
        "--duration",
        "500ms",
    ];
    // Without the CA the gateway's certificate is not trusted: every connect fails.
    let (code, report, _) = loadtest(&base);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["requests"], 0);
    assert!(report["errors"]["connect"].as_u64().unwrap() > 0);

    let mut args = base.to_vec();
    args.push("--insecure");
    let (code, report, stderr) = loadtest(&args);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert!(
        stderr.contains("WARNING: --insecure") && stderr.contains("NOT verified"),
        "{stderr}"
    );
    assert_eq!(report["setup"]["tls"], "insecure");
    assert_correct_per_kind(&report);

    // A route that checks nothing: the broken tokens pass, and the run says so.
    let open = format!("{}/open/x", stack.gateway.proxy);
    args[1] = open.as_str();
    let (code, report, _) = loadtest(&args);
    assert_eq!(code, 1, "{report:#}");
    assert!(
        kind(&report, "bad-signature")["unexpected"]
            .as_u64()
            .unwrap()
            > 0
    );
    let problems = report["verdict"]["problems"].to_string();
    assert!(
        problems.contains("bad-signature tokens not rejected with 401/403"),
        "{problems}"
    );
}
