//! `portcullis explain` and request tracing end to end: real dev-token-server tokens, the real
//! config loader, the gateway's own decision. For each reason a request can produce, explain names
//! the step that failed and a fix sentence; the binary's exit codes; a traced live request's
//! explanation at the admin listener, and the trace header never forwarded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use portcullis_auth::UnixTime;
use portcullis_explain::{Explanation, Verdict};
use portcullis_idp::{IdpConfig, IdpHandle, MintRequest};
use portcullis_proxy::explain::{explain, Question};
use portcullis_testkit::backend::Backend;

use crate::support::{now, Gateway};

const TRACE_KEY: &str = "dev-trace-key-0123456789";

async fn idp(dir: &std::path::Path) -> IdpHandle {
    let yaml = r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
signing-keys:
  - { id: rsa-1, alg: RS256, private-key-file: keys/rsa-1.pem }
resources:
  "api://order": { audience: "api://order", scopes: [orders.read] }
"#;
    portcullis_idp::start(IdpConfig::from_yaml(yaml, dir).unwrap())
        .await
        .unwrap()
}

/// One gateway config with a route per failure the token can have, and the pipeline's own.
/// `nokeys`: with a policy whose key source never answers (the gateway is then never ready).
fn gateway_yaml(idp: &IdpHandle, upstream: &str, nokeys: bool) -> String {
    let nokeys_route = match nokeys {
        true => format!("  - {{ name: nokeys, match: {{ path-prefix: /nokeys }}, upstream: \"{upstream}\", policy: nokeys }}"),
        false => String::new(),
    };
    let nokeys_policy = match nokeys {
        true => "  nokeys:\n    validate-jwt: { issuer-signing-keys: [{ jwks-uri: \"http://127.0.0.1:1/jwks\" }], audiences: [api://order] }",
        false => "",
    };
    let disc = idp.discovery_url();
    let iss = idp.issuer();
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
  admin: "127.0.0.1:0"
  trace: {{ key: "{TRACE_KEY}" }}
policies:
  aud:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], audiences: [api://orders] }}
  ok:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], audiences: [api://order], require-scheme: Bearer }}
  iss:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], issuers: ["{iss}/"], audiences: [api://order] }}
  scp:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], required-claims: [{{ name: scp }}], audiences: [api://order] }}
  scopes:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], audiences: [api://order] }}
    scopes: {{ values: [orders.write] }}
{nokeys_policy}
  header:
    check-header: {{ name: X-Tenant, values: [a], failed-check-httpcode: 403, failed-check-error-message: "no tenant" }}
routes:
  - {{ name: health, match: {{ path: /health }}, upstream: "{upstream}", policy: none }}
  - {{ name: aud, match: {{ path-prefix: /aud }}, upstream: "{upstream}", policy: aud }}
  - {{ name: ok, match: {{ path-prefix: /ok, methods: [GET] }}, upstream: "{upstream}", policy: ok }}
  - {{ name: iss, match: {{ path-prefix: /iss }}, upstream: "{upstream}", policy: iss }}
  - {{ name: scp, match: {{ path-prefix: /scp }}, upstream: "{upstream}", policy: scp }}
  - {{ name: scopes, match: {{ path-prefix: /scopes }}, upstream: "{upstream}", policy: scopes }}
{nokeys_route}
  - {{ name: header, match: {{ path-prefix: /header }}, upstream: "{upstream}", policy: header }}
"#
    )
}

struct Setup {
    idp: IdpHandle,
    model: portcullis_config::Model,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let idp = idp(dir.path()).await;
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        gateway_yaml(&idp, "http://backend.invalid:8080", true),
    )
    .unwrap();
    let (model, _) = portcullis_config::load(&path).unwrap();
    Setup {
        idp,
        model,
        _dir: dir,
    }
}

fn token(idp: &IdpHandle) -> String {
    let mut req = MintRequest::new("alice", "api://order");
    req.scopes = vec!["orders.read".into()];
    idp.mint(&req).unwrap()
}

async fn ask(s: &Setup, path: &str, token: Option<&str>, headers: &[&str]) -> Explanation {
    let q = Question {
        method: "GET".into(),
        url: format!("http://api.test{path}"),
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        token: token.map(str::to_owned),
        ..Default::default()
    };
    explain(&s.model, &q).await.unwrap()
}

/// The failure is named: reason, failed step, and a fix sentence containing `fix`.
fn refused(e: &Explanation, reason: &str, step: &str, fix: &str) {
    let o = &e.outcome;
    let shown = serde_json::to_string_pretty(e).unwrap();
    assert!(!o.passed, "{shown}");
    assert_eq!(o.reason, reason, "{shown}");
    assert_eq!(o.failed_step.as_deref(), Some(step), "{shown}");
    let failed = e
        .steps
        .iter()
        .find(|s| s.verdict == Verdict::Fail)
        .expect("a failed step");
    assert_eq!(failed.step, step);
    let sentence = o.fix.as_deref().unwrap_or_default();
    assert!(
        sentence.contains(fix),
        "fix {sentence:?} lacks {fix:?}\n{shown}"
    );
    let text = portcullis_explain::render_text(e);
    assert!(text.contains(&format!("Failed at   {step}")), "{text}");
    assert!(text.contains(&format!("Fix         {sentence}")), "{text}");
}

fn b64(json: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_reason_names_its_step_and_fix() {
    let s = setup().await;
    let good = token(&s.idp);

    let e = ask(&s, "/ok/1", Some(&good), &[]).await;
    assert!(e.outcome.passed && e.outcome.forwarded, "{e:?}");
    let t = e.token.as_ref().unwrap();
    assert_eq!(t.signature, "verified (RS256, key `rsa-1`)");
    assert!(t.claims_verified);
    assert!(t.rules.iter().all(|r| r.verdict == Verdict::Pass), "{t:?}");
    // Never the whole token, never its signature.
    let json = serde_json::to_string(&e).unwrap();
    let signature = good.rsplit('.').next().unwrap();
    assert!(!json.contains(&good) && !json.contains(signature));
    assert_eq!(
        t.excerpt,
        format!("{}... ({} chars)", &good[..8], good.len())
    );

    let e = ask(&s, "/aud", Some(&good), &[]).await;
    refused(
        &e,
        "TokenAudienceNotAllowed",
        "validate-jwt",
        "audience `api://orders` is not in the token's `aud` [`api://order`]: a typo?",
    );
    let rule = e
        .token
        .as_ref()
        .unwrap()
        .rules
        .iter()
        .find(|r| r.rule == "audience")
        .unwrap();
    assert_eq!(
        (rule.expected.clone(), rule.found.clone(), rule.verdict),
        (
            vec!["api://orders".to_owned()],
            vec!["api://order".to_owned()],
            Verdict::Fail
        )
    );

    let e = ask(&s, "/ok", None, &[]).await;
    refused(
        &e,
        "TokenNotPresent",
        "validate-jwt",
        "carries no token: send it as `Authorization: Bearer <token>`",
    );
    let e = ask(&s, "/ok", None, &[&format!("X-Token: {good}")]).await;
    refused(
        &e,
        "TokenNotPresent",
        "validate-jwt",
        "carries a token in the header `x-token`",
    );

    let mut q = Question {
        method: "GET".into(),
        url: "http://api.test/ok".into(),
        token: Some(good.clone()),
        ..Default::default()
    };
    let at = now() + 1000;
    q.at = Some(UnixTime(at));
    let e = explain(&s.model, &q).await.unwrap();
    let exp = e.token.as_ref().unwrap().claims.as_ref().unwrap()["exp"]
        .as_i64()
        .unwrap();
    refused(
        &e,
        "TokenExpired",
        "validate-jwt",
        &format!("The token expired {} s ago", at - exp),
    );
    let at = now() - 1000;
    q.at = Some(UnixTime(at));
    let e = explain(&s.model, &q).await.unwrap();
    let nbf = e.token.as_ref().unwrap().claims.as_ref().unwrap()["nbf"]
        .as_i64()
        .unwrap();
    refused(
        &e,
        "TokenNotYetValid",
        "validate-jwt",
        &format!("`nbf` is {} s in the future", nbf - at),
    );

    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_sig = format!("{}AAAA", &parts[2][..parts[2].len() - 4]);
    parts[2] = &forged_sig;
    let e = ask(&s, "/ok", Some(&parts.join(".")), &[]).await;
    refused(
        &e,
        "TokenSignatureInvalid",
        "validate-jwt",
        "does not verify the signature",
    );
    assert!(!e.token.as_ref().unwrap().claims_verified);

    let header = b64(r#"{"alg":"RS256","kid":"rsa-9","typ":"JWT"}"#);
    let payload = good.split('.').nth(1).unwrap();
    let e = ask(
        &s,
        "/ok",
        Some(&format!("{header}.{payload}.{signature}")),
        &[],
    )
    .await;
    refused(
        &e,
        "TokenSignatureKeyNotFound",
        "validate-jwt",
        "kid `rsa-9` is not among the",
    );
    assert!(
        e.outcome.fix.as_deref().unwrap().contains("`rsa-1`"),
        "names the kids there are"
    );

    let e = ask(&s, "/iss", Some(&good), &[]).await;
    refused(
        &e,
        "TokenIssuerNotAllowed",
        "validate-jwt",
        "a typo (or a trailing `/`)?",
    );

    let e = ask(&s, "/scp", Some(&good), &[]).await;
    refused(
        &e,
        "TokenClaimNotFound",
        "validate-jwt",
        "it carries `scope` instead of `scp`",
    );

    let e = ask(&s, "/scopes", Some(&good), &[]).await;
    refused(&e, "TokenClaimValueNotAllowed", "validate-jwt",
        "The `scopes` rule wants all of [`orders.write`] in `scope`; the token's `scope` has [`orders.read`]");

    let e = ask(&s, "/ok", None, &["Authorization: Basic dXNlcjpwdw=="]).await;
    refused(
        &e,
        "JwtInvalid",
        "validate-jwt",
        "The `Authorization` header has the scheme `Basic`",
    );

    let e = ask(&s, "/nokeys", Some(&good), &[]).await;
    refused(
        &e,
        "KeysUnavailable",
        "validate-jwt",
        "check that the identity provider's discovery / JWKS URL is reachable",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_reasons_name_their_step_and_fix() {
    let s = setup().await;
    let e = ask(&s, "/nothing", None, &[]).await;
    assert_eq!(e.outcome.reason, "NoRoute");
    assert!(e
        .outcome
        .fix
        .as_deref()
        .unwrap()
        .contains("No route's `match:`"));
    let why: Vec<_> = e
        .routes
        .iter()
        .map(|r| r.why_not.clone().unwrap())
        .collect();
    assert_eq!(
        why[0],
        "path: wants exactly `/health`, the request has `/nothing`"
    );
    assert_eq!(
        why[1],
        "path: wants `/aud` or below, the request has `/nothing`"
    );

    let q = Question {
        method: "POST".into(),
        url: "http://api.test/ok".into(),
        ..Default::default()
    };
    let e = explain(&s.model, &q).await.unwrap();
    assert_eq!(e.outcome.reason, "NoRoute");
    let ok = e.routes.iter().find(|r| r.name == "ok").unwrap();
    assert_eq!(
        ok.why_not.as_deref(),
        Some("method: wants GET, the request is POST")
    );

    let e = ask(&s, "/header", None, &[]).await;
    refused(
        &e,
        "HeaderNotFound",
        "check-header x-tenant",
        "Send the header",
    );
    let e = ask(&s, "/header", None, &["X-Tenant: b"]).await;
    refused(
        &e,
        "HeaderValueNotAllowed",
        "check-header x-tenant",
        "one of the values",
    );
    assert_eq!(e.outcome.status, Some(403));

    let e = ask(&s, "/a/%2e%2e/%2e%2e/x", None, &[]).await;
    refused(
        &e,
        "PathTraversal",
        "request target",
        "Remove the `..` segments",
    );
    let e = ask(&s, "/a%2Fb", None, &[]).await;
    refused(&e, "EncodedSlash", "request target", "encode `/` as `%2F`");
    let big = format!("X-Big: {}", "a".repeat(70 * 1024));
    let e = ask(&s, "/health", None, &[&big]).await;
    refused(
        &e,
        "RequestHeaderFieldsTooLarge",
        "request headers",
        "64 KiB",
    );
}

/// The binary: text by default, JSON with --json, exit 0 pass / 1 refused / 2 bad config.
#[tokio::test(flavor = "multi_thread")]
async fn binary_exit_codes_and_json() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        gateway_yaml(&s.idp, "http://backend.invalid:8080", true),
    )
    .unwrap();
    let good = token(&s.idp);
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("explain")
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, _) = tokio::task::spawn_blocking({
        let good = good.clone();
        let run = run.clone();
        move || run(vec!["http://api.test/ok".into(), "--token".into(), good])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Verdict     PASS"), "{out}");
    let (code, out, _) = tokio::task::spawn_blocking({
        let good = good.clone();
        let run = run.clone();
        move || {
            run(vec![
                "http://api.test/aud".into(),
                "--json".into(),
                "-H".into(),
                format!("Authorization: Bearer {good}"),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    let e: Explanation = serde_json::from_str(&out).unwrap();
    assert_eq!(e.outcome.reason, "TokenAudienceNotAllowed");
    assert!(!out.contains(&good));
    std::fs::write(dir.path().join("gateway.yaml"), "server: {}\n").unwrap();
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(vec!["http://api.test/ok".into()]))
            .await
            .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("gateway.yaml:"), "{err}");
}

/// A live request with the trace key: its explanation at the admin listener; without the key or
/// with a wrong one, no trace; the trace header never reaches the backend.
#[tokio::test(flavor = "multi_thread")]
async fn traced_requests_leave_their_explanation_at_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let idp = idp(dir.path()).await;
    let backend = Backend::start().unwrap();
    let client = reqwest::Client::new();
    let gw = Gateway::run(&gateway_yaml(&idp, &backend.url(), false), &client).await;
    let good = token(&idp);

    let send = |path: &str, key: Option<&str>| {
        let mut req = client.get(format!("{}{path}", gw.proxy)).bearer_auth(&good);
        if let Some(k) = key {
            req = req.header("Portcullis-Trace", k);
        }
        req.send()
    };
    // Passed and forwarded: the explanation says so, the backend never sees the trace header.
    let resp = send("/ok/1", Some(TRACE_KEY)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let location = resp.headers()["portcullis-trace-location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.starts_with("/trace/"), "{location}");
    let trace: Explanation = client
        .get(format!("{}{location}", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(trace.outcome.passed && trace.outcome.forwarded, "{trace:?}");
    assert_eq!(trace.route.as_deref(), Some("ok"));
    assert_eq!(
        trace.token.as_ref().unwrap().signature,
        "verified (RS256, key `rsa-1`)"
    );
    let json = serde_json::to_string(&trace).unwrap();
    assert!(
        !json.contains(&good) && !json.contains(TRACE_KEY),
        "no token, no key"
    );

    // Refused: the trace names the failing step.
    let resp = send("/aud", Some(TRACE_KEY)).await.unwrap();
    assert_eq!(resp.status(), 401);
    let location = resp.headers()["portcullis-trace-location"]
        .to_str()
        .unwrap()
        .to_owned();
    let trace: Explanation = client
        .get(format!("{}{location}", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace.outcome.failed_step.as_deref(), Some("validate-jwt"));
    assert!(trace.outcome.fix.as_deref().unwrap().contains("a typo?"));

    // No key, a wrong key: no trace, and the header is not forwarded either way.
    for key in [None, Some("wrong-key-wrong-key-wrong")] {
        let resp = send("/ok/2", key).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("portcullis-trace-location").is_none());
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 3, "three forwarded requests");
    for r in &seen {
        assert!(
            r.headers.iter().all(|(n, _)| n != "portcullis-trace"),
            "{:?}",
            r.headers
        );
    }
    let resp = client
        .get(format!("{}/trace/unknown", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// The config of [`more_reasons_name_their_step_and_fix`]: a route per pipeline answer, a route
/// with a subscription, and policies that refuse an encrypted token and a missing scope with 403.
fn more_yaml(idp: &IdpHandle) -> String {
    let disc = idp.discovery_url();
    let up = "http://backend.invalid:8080";
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
policies:
  scope403:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], audiences: [api://order] }}
    scopes: {{ values: [orders.write] }}
    insufficient-scope-httpcode: 403
  jwe:
    validate-jwt:
      openid-config: [{{ url: "{disc}" }}]
      audiences: [api://order]
      decryption-keys: [{{ value: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", alg: A256KW }}]
  qtok:
    validate-jwt: {{ openid-config: [{{ url: "{disc}" }}], audiences: [api://order], query-parameter-name: access_token }}
  ipf:
    ip-filter: {{ action: allow, addresses: ["10.0.0.0/8"] }}
  spa:
    cors: {{ allowed-origins: ["http://app.local"], allowed-methods: [GET] }}
  ret:
    inbound:
      - return-response: {{ status: 200, body: "hello" }}
  mock:
    inbound:
      - mock-response: {{ status-code: 200, content-type: application/json }}
  rw:
    inbound:
      - rewrite-uri: {{ template: "/${{query:seg}}/{{id}}" }}
  base:
    inbound:
      - set-header: {{ name: x-p, value: base }}
  gold:
    inbound:
      - set-header: {{ name: x-p, value: gold }}
subscriptions:
  gold-dev: {{ scope: product, product: gold }}
  orders-dev: {{ scope: api, api: orders }}
  old: {{ scope: all, state: suspended }}
routes:
  - {{ name: scope403, match: {{ path-prefix: /scope403 }}, upstream: "{up}", policy: scope403 }}
  - {{ name: jwe, match: {{ path-prefix: /jwe }}, upstream: "{up}", policy: jwe }}
  - {{ name: qtok, match: {{ path-prefix: /qtok }}, upstream: "{up}", policy: qtok }}
  - {{ name: ipf, match: {{ path-prefix: /ipf }}, upstream: "{up}", policy: ipf }}
  - {{ name: spa, match: {{ path-prefix: /spa }}, upstream: "{up}", policy: spa }}
  - {{ name: ret, match: {{ path-prefix: /ret }}, upstream: "{up}", policy: ret }}
  - {{ name: mock, match: {{ path-prefix: /mock }}, upstream: "{up}", policy: mock }}
  - {{ name: rw, match: {{ path: "/rw/{{id}}" }}, upstream: "{up}", policy: rw }}
  - name: sub
    match: {{ path-prefix: /sub }}
    upstream: "{up}"
    subscription: {{ api: orders, products: {{ gold: gold }} }}
    policy: base
  - {{ name: any, match: {{ path-prefix: / }}, upstream: "{up}", policy: none }}
"#
    )
}

/// What explain says for a request the policy answers on purpose: passed, not forwarded, the
/// answering step named, and the "nothing to fix" sentence.
fn answered(e: &Explanation, reason: &str, step: &str) {
    let shown = serde_json::to_string_pretty(e).unwrap();
    let o = &e.outcome;
    assert!(o.passed && !o.forwarded, "{shown}");
    assert_eq!(o.reason, reason, "{shown}");
    assert!(
        e.steps
            .iter()
            .any(|s| s.step == step && s.verdict == Verdict::Answer),
        "{shown}"
    );
    assert!(
        o.fix
            .as_deref()
            .unwrap_or_default()
            .starts_with("Nothing to fix"),
        "{shown}"
    );
}

/// The reasons of the pipeline, the request target and subscriptions that
/// `every_token_reason...` and `gateway_reasons...` do not reach: each names its step and fix.
#[tokio::test(flavor = "multi_thread")]
async fn more_reasons_name_their_step_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let idp = idp(dir.path()).await;
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, more_yaml(&idp)).unwrap();
    let (model, _) = portcullis_config::load(&path).unwrap();
    let good = token(&idp);
    let q = |method: &str, path: &str, headers: &[&str]| Question {
        method: method.into(),
        url: format!("http://api.test{path}"),
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        ..Default::default()
    };
    let ask = |q: Question| {
        let model = model.clone();
        async move { explain(&model, &q).await.unwrap() }
    };

    // 403 for a missing scope (`insufficient-scope-httpcode`).
    let mut r = q("GET", "/scope403", &[]);
    r.token = Some(good.clone());
    let e = ask(r).await;
    refused(
        &e,
        "TokenClaimValueNotAllowed",
        "validate-jwt",
        "wants all of [`orders.write`]",
    );
    assert_eq!(e.outcome.status, Some(403));

    // A JWE no decryption key opens.
    let header = b64(r#"{"alg":"A256KW","enc":"A256GCM","cty":"JWT"}"#);
    let jwe = format!(
        "{header}.{}.{}.{}.{}",
        b64("k".repeat(40).as_str()),
        b64("iviviviviviv"),
        b64("cipher"),
        b64("tagtagtagtagtagt")
    );
    let mut r = q("GET", "/jwe", &[]);
    r.token = Some(jwe);
    let e = ask(r).await;
    refused(
        &e,
        "TokenDecryptionFailed",
        "validate-jwt",
        "`decryption-keys`",
    );

    // A token read from the query: accepted, and hidden in the recorded target.
    let mut r = q("GET", "/qtok?x=1", &[]);
    r.token = Some(good.clone());
    let e = ask(r).await;
    assert!(e.outcome.forwarded, "{e:?}");
    assert_eq!(e.request.target, "/qtok?x=1&access_token=***");
    assert!(!serde_json::to_string(&e).unwrap().contains(&good));

    // ip-filter: an address outside the list, and no address at all.
    let mut r = q("GET", "/ipf", &[]);
    r.client_ip = Some("192.0.2.7".parse().unwrap());
    let e = ask(r).await;
    refused(
        &e,
        "CallerIpNotAllowed",
        "ip-filter",
        "`server.trusted-proxies`",
    );
    assert!(
        e.steps.iter().any(|s| s.detail.contains("192.0.2.7")),
        "{e:?}"
    );
    let mut r = q("GET", "/ipf", &[]);
    r.client_ip = Some("10.1.2.3".parse().unwrap());
    assert!(ask(r).await.outcome.forwarded);

    // CORS: an origin not allowed; an allowed preflight answered by the gateway.
    let e = ask(q(
        "OPTIONS",
        "/spa",
        &[
            "Origin: http://evil.test",
            "Access-Control-Request-Method: GET",
        ],
    ))
    .await;
    // APIM's answer: an empty 200 without CORS headers (the browser blocks the call), so the
    // request is not "refused" by status; the reason, the step and the fix say what to change.
    assert_eq!(e.outcome.reason, "CorsOriginNotAllowed", "{e:?}");
    assert_eq!(e.outcome.status, Some(200));
    assert!(
        e.steps
            .iter()
            .any(|s| s.step == "cors" && s.detail.contains("not allowed")),
        "{e:?}"
    );
    assert!(
        e.outcome
            .fix
            .as_deref()
            .unwrap()
            .contains("`allowed-origins`"),
        "{e:?}"
    );
    let text = portcullis_explain::render_text(&e);
    assert!(text.contains("Fix         Add the page's origin"), "{text}");
    let e = ask(q(
        "OPTIONS",
        "/spa",
        &[
            "Origin: http://app.local",
            "Access-Control-Request-Method: GET",
        ],
    ))
    .await;
    answered(&e, "CorsPreflight", "cors");

    let e = ask(q("GET", "/ret", &[])).await;
    answered(&e, "ReturnResponse", "return-response");
    let e = ask(q("GET", "/mock", &[])).await;
    answered(&e, "MockResponse", "mock-response");

    let e = ask(q("GET", "/rw/7?seg=%2e%2e", &[])).await;
    refused(
        &e,
        "InvalidRewrite",
        "rewrite-uri",
        "fix the template or the value it takes",
    );

    // The request target and the Host header.
    for (method, path, headers, reason, fix) in [
        ("get", "/x", &[][..], "MethodCase", "upper case"),
        (
            "GET",
            "/a;jsessionid=1/b",
            &[][..],
            "PathParameter",
            "`;` path parameter",
        ),
        (
            "GET",
            "/a/%252e%252e/b",
            &[][..],
            "DoubleEncodedPath",
            "Encode the path once",
        ),
        (
            "GET",
            "/x",
            &["Host: a.test", "Host: b.test"][..],
            "InvalidHost",
            "exactly one well-formed `Host`",
        ),
    ] {
        let e = ask(q(method, path, headers)).await;
        refused(&e, reason, "request target", fix);
    }
    // Subscriptions: missing, invalid (unknown key, suspended, sent twice), accepted (product
    // key: the product's policy; API key: the route's), never the key in the explanation.
    let mut keys = portcullis_proxy::SubscriptionKeys::new();
    for arg in ["gold-dev=g-key-1", "orders-dev=o-key-1", "old=x-key-1"] {
        keys.add_arg(arg).unwrap();
    }
    let sub = |headers: &[&str]| {
        let mut r = q("GET", "/sub", headers);
        r.subscription_keys = keys.clone();
        r
    };
    let e = ask(sub(&[])).await;
    refused(&e, "SubscriptionKeyMissing", "subscription key",
        "in the `ocp-apim-subscription-key` header or the `subscription-key` query parameter: a subscription of scope `all`, API `orders`, product `gold` (active ones that do: gold-dev, orders-dev)");
    for key in ["nope", "x-key-1"] {
        let e = ask(sub(&[&format!("Ocp-Apim-Subscription-Key: {key}")])).await;
        refused(&e, "SubscriptionKeyInvalid", "subscription key",
            "not the key of an active subscription covering route `sub`: send the key of a subscription of scope `all`, API `orders`, product `gold` (active ones that do: gold-dev, orders-dev)");
        assert!(!serde_json::to_string(&e).unwrap().contains(key));
    }
    let e = ask(sub(&[
        "Ocp-Apim-Subscription-Key: g-key-1",
        "Ocp-Apim-Subscription-Key: g-key-1",
    ]))
    .await;
    refused(
        &e,
        "SubscriptionKeyInvalid",
        "subscription key",
        "Send the subscription key once",
    );
    let e = ask(sub(&["Ocp-Apim-Subscription-Key: g-key-1"])).await;
    assert!(e.outcome.forwarded, "{e:?}");
    assert_eq!(e.policy.as_deref(), Some("gold"));
    let step = e
        .steps
        .iter()
        .find(|s| s.step == "subscription key")
        .unwrap();
    assert_eq!(step.detail, "key of subscription `gold-dev` (product `gold`) accepted; runs the product's policy `gold`");
    let mut r = sub(&[]);
    r.url = "http://api.test/sub?subscription-key=o-key-1".into();
    let e = ask(r).await;
    assert!(e.outcome.forwarded, "{e:?}");
    let step = e
        .steps
        .iter()
        .find(|s| s.step == "subscription key")
        .unwrap();
    assert_eq!(
        step.detail,
        "key of subscription `orders-dev` (API `orders`) accepted; runs the route's policy `base`"
    );
    // The key sent in the query is hidden in the recorded target too.
    assert_eq!(e.request.target, "/sub?subscription-key=***");
    assert!(!serde_json::to_string(&e).unwrap().contains("o-key-1"));
    // The binary takes `run`'s flags: a keys file and `--subscription-key`; without them the key
    // opens nothing; a bad keys file is an argument error (exit 2) that does not show the key.
    let keys_file = dir.path().join("keys.txt");
    std::fs::write(&keys_file, "# keys\norders-dev=o-key-1\n").unwrap();
    let bad_file = dir.path().join("bad.txt");
    std::fs::write(&bad_file, "o-key-1\n").unwrap();
    let run = {
        let path = path.clone();
        move |args: Vec<String>| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .args(["explain", "-c"])
                .arg(&path)
                .args([
                    "http://api.test/sub",
                    "-H",
                    "Ocp-Apim-Subscription-Key: o-key-1",
                ])
                .args(args)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.code().unwrap(), text)
        }
    };
    let file = keys_file.display().to_string();
    let bad = bad_file.display().to_string();
    let (results, text) = tokio::task::spawn_blocking(move || {
        let results = [
            run(vec!["--subscription-keys".into(), file]),
            run(vec![
                "--subscription-key".into(),
                "orders-dev=o-key-1".into(),
            ]),
            run(vec![]),
        ];
        (results, run(vec!["--subscription-keys".into(), bad]))
    })
    .await
    .unwrap();
    for (code, out) in &results[..2] {
        assert_eq!(*code, 0, "{out}");
        assert!(
            out.contains("key of subscription `orders-dev` (API `orders`) accepted"),
            "{out}"
        );
    }
    assert_eq!(results[2].0, 1, "{}", results[2].1);
    assert!(
        results[2].1.contains("SubscriptionKeyInvalid"),
        "{}",
        results[2].1
    );
    assert_eq!(text.0, 2, "{}", text.1);
    assert!(
        text.1.contains("line 1: expected NAME=KEY") && !text.1.contains("o-key-1"),
        "{}",
        text.1
    );

    // A key for a subscription the config does not name: refused, as `run` refuses it.
    let mut r = sub(&[]);
    r.subscription_keys.add_arg("typo=secret-9").unwrap();
    let err = explain(&model, &r).await.unwrap_err();
    assert!(err.contains("`typo`") && !err.contains("secret-9"), "{err}");

    let e = ask(Question {
        method: "GET".into(),
        url: "*".into(),
        ..Default::default()
    })
    .await;
    refused(&e, "InvalidRequestTarget", "request target", "origin-form");
}
