//! End-to-end tests of identity breadth through `portcullis run`: Entra multi-tenant issuer
//! templates (`{tenantid}` matched with `tid`, `tenants`), validate-azure-ad-token with `common`,
//! `token-optional`, and `any-of` requirement groups.
//!
//! Tokens are signed by dev token servers (`portcullis_idp`, claims such as `iss` and `tid`
//! overridden per token); Entra's multi-tenant discovery documents, whose `issuer` is the
//! template, are served by the testkit JWKS server and point at a dev token server's JWKS. Every
//! rejection is checked by its documented message (the per-cause default: which rule refused it)
//! and by the backend never seeing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_idp::{IdpConfig, IdpHandle, MintRequest};
use portcullis_testkit::backend::Backend;
use portcullis_testkit::jwks_server::{Endpoint, JwksServer};
use serde_json::{json, Value};

use crate::support::Gateway;

const T1: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const T2: &str = "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50";
const T3: &str = "11111111-2222-3333-4444-555555555555";
const ENTRA_V2: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

const ISSUER: &str = "Issuer validation failed. Access denied.";
const AUDIENCE: &str = "Audience validation failed. Access denied.";

async fn idp() -> IdpHandle {
    portcullis_idp::start(IdpConfig::demo()).await.unwrap()
}

/// A token of `idp`'s key for `aud`, subject alice, with `extra` claims merged last (`iss`, `tid`).
fn mint(idp: &IdpHandle, aud: &str, extra: Value) -> String {
    let mut req = MintRequest::new("alice", aud);
    req.claims = extra.as_object().unwrap().clone();
    idp.mint(&req).unwrap()
}

/// Serves an Entra-style multi-tenant discovery document at `{base}/{which}/v2.0/...` whose
/// issuer is `issuer` (a template) and whose keys are `keys`'s JWKS. Returns its URL.
fn multi_tenant_document(
    server: &JwksServer,
    which: &str,
    issuer: &str,
    keys: &IdpHandle,
) -> String {
    let path = format!("/{which}/v2.0/.well-known/openid-configuration");
    let doc = json!({ "issuer": issuer, "jwks_uri": keys.jwks_uri() });
    server.update(&path, |ep| *ep = Endpoint::json(doc.to_string()));
    // The v1 document names the v1 template (`<origin>/{tenantid}/`, as Entra's
    // `https://sts.windows.net/{tenantid}/`): validate-azure-ad-token with an `authority` takes
    // its issuers from both documents.
    if let Some(v1) = issuer.strip_suffix("v2.0") {
        let doc = json!({ "issuer": v1.replace("login.microsoftonline.com", "sts.windows.net"), "jwks_uri": keys.jwks_uri() });
        server.update(
            &format!("/{which}/.well-known/openid-configuration"),
            |ep| *ep = Endpoint::json(doc.to_string()),
        );
    }
    format!("{}{path}", server.base_url)
}

fn gateway_yaml(policies: &str, backend: &Backend) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"\npolicies:\n{policies}routes:\n  - name: api\n    match: {{ path-prefix: /api }}\n    upstream: {}\n    policy: p\n",
        backend.url()
    )
}

/// Sends each `(why, token, status, message)` and checks the answer; a refused one must not reach
/// the backend.
async fn expect(gw: &Gateway, backend: &Backend, cases: &[(&str, &str, u16, &str)]) {
    for (why, token, status, message) in cases {
        let before = backend.request_count();
        let (got, body) = gw.call("/api/x", token).await;
        assert_eq!(got, *status, "{why}: {body}");
        if *status == 200 {
            assert_eq!(backend.request_count(), before + 1, "{why}: not forwarded");
        } else {
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["message"], *message, "{why}");
            assert_eq!(
                backend.request_count(),
                before,
                "{why}: reached the backend"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_tenant_discovery_document_checks_tid_against_its_issuer_template() {
    let backend = Backend::start().unwrap();
    let entra = idp().await;
    let other = idp().await;
    let server = JwksServer::start().await.unwrap();
    let common = multi_tenant_document(&server, "common", ENTRA_V2, &entra);
    // A second provider in the same policy: its keys are bound to its own issuer, so they cannot
    // mint a token that claims an Entra tenant.
    let policies = format!(
        "  p:\n    validate-jwt:\n      openid-config: [{{ url: \"{common}\" }}, {{ url: \"{}\" }}]\n      audiences: [api://mt]\n      tenants: [{T1}, {T2}]\n    forward-claims: {{ X-Tenant-Id: tid }}\n",
        other.discovery_url()
    );
    let gw = Gateway::run(&gateway_yaml(&policies, &backend), &reqwest::Client::new()).await;
    let v2 = |tid: &str| format!("https://login.microsoftonline.com/{tid}/v2.0");

    let t1 = mint(&entra, "api://mt", json!({ "iss": v2(T1), "tid": T1 }));
    let t2 = mint(&entra, "api://mt", json!({ "iss": v2(T2), "tid": T2 }));
    let unlisted = mint(&entra, "api://mt", json!({ "iss": v2(T3), "tid": T3 }));
    let iss_differs = mint(&entra, "api://mt", json!({ "iss": v2(T2), "tid": T1 }));
    let no_tid = mint(&entra, "api://mt", json!({ "iss": v2(T1) }));
    let upper = T1.to_ascii_uppercase();
    let upper_case = mint(
        &entra,
        "api://mt",
        json!({ "iss": v2(&upper), "tid": upper }),
    );
    let literal_template = mint(&entra, "api://mt", json!({ "iss": ENTRA_V2, "tid": T1 }));
    let forged = mint(&other, "api://mt", json!({ "iss": v2(T1), "tid": T1 }));
    let other_own = mint(&other, "api://mt", json!({ "tid": T1 }));
    expect(
        &gw,
        &backend,
        &[
            ("listed tenant", &t1, 200, ""),
            ("second listed tenant", &t2, 200, ""),
            ("tenant not in `tenants`", &unlisted, 401, ISSUER),
            (
                "iss names another tenant than tid",
                &iss_differs,
                401,
                ISSUER,
            ),
            ("no tid", &no_tid, 401, ISSUER),
            ("upper-case tid", &upper_case, 401, ISSUER),
            ("the template itself as iss", &literal_template, 401, ISSUER),
            (
                "another provider's key claiming an Entra tenant",
                &forged,
                401,
                ISSUER,
            ),
            ("the other provider's own token", &other_own, 200, ""),
        ],
    )
    .await;
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-tenant-id"), Some(T1));
    assert_eq!(seen[1].header("x-tenant-id"), Some(T2));
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_azure_ad_token_with_common_checks_the_v1_and_v2_issuer_templates() {
    let backend = Backend::start().unwrap();
    let entra = idp().await;
    let authority = JwksServer::start().await.unwrap();
    let base = authority.base_url.clone();
    multi_tenant_document(
        &authority,
        "common",
        &format!("{base}/{{tenantid}}/v2.0"),
        &entra,
    );
    let policies = format!(
        "  p:\n    validate-azure-ad-token:\n      tenant-id: common\n      authority: {base}\n      backend-application-ids: [api://mt]\n      tenants: [{T1}, {T2}]\n    forward-claims: {{ X-Tenant-Id: tid }}\n"
    );
    let gw = Gateway::run(&gateway_yaml(&policies, &backend), &reqwest::Client::new()).await;
    let v2 = |tid: &str| format!("{base}/{tid}/v2.0");
    let v1 = |tid: &str| format!("{base}/{tid}/");

    let v2_token = mint(&entra, "api://mt", json!({ "iss": v2(T1), "tid": T1 }));
    let v1_token = mint(&entra, "api://mt", json!({ "iss": v1(T2), "tid": T2 }));
    let unlisted = mint(&entra, "api://mt", json!({ "iss": v2(T3), "tid": T3 }));
    let iss_differs = mint(&entra, "api://mt", json!({ "iss": v1(T2), "tid": T1 }));
    let not_entra = mint(&entra, "api://mt", json!({ "tid": T1 }));
    let wrong_audience = mint(&entra, "api://other", json!({ "iss": v2(T1), "tid": T1 }));
    expect(
        &gw,
        &backend,
        &[
            ("v2 token of a listed tenant", &v2_token, 200, ""),
            ("v1 token of a listed tenant", &v1_token, 200, ""),
            ("tenant not listed", &unlisted, 401, ISSUER),
            ("iss of another tenant than tid", &iss_differs, 401, ISSUER),
            (
                "an issuer that is no Entra template",
                &not_entra,
                401,
                ISSUER,
            ),
            ("wrong audience", &wrong_audience, 401, AUDIENCE),
        ],
    )
    .await;
    let seen = backend.requests();
    assert_eq!(seen[1].header("x-tenant-id"), Some(T2));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_optional_passes_requests_without_a_token_and_refuses_bad_ones() {
    let backend = Backend::start().unwrap();
    let idp = idp().await;
    let policies = format!(
        "  p:\n    validate-jwt:\n      token-optional: true\n      openid-config: [{{ url: \"{}\" }}]\n      audiences: [api://orders]\n    forward-claims: {{ X-User-Id: sub }}\n  q:\n    validate-jwt:\n      token-optional: true\n      query-parameter-name: access_token\n      openid-config: [{{ url: \"{}\" }}]\n      audiences: [api://orders]\n    forward-claims: {{ X-User-Id: sub }}\n",
        idp.discovery_url(),
        idp.discovery_url()
    );
    let yaml = gateway_yaml(&policies, &backend).replace(
        "routes:\n",
        &format!(
            "routes:\n  - name: query\n    match: {{ path-prefix: /query }}\n    upstream: {}\n    policy: q\n",
            backend.url()
        ),
    );
    let client = reqwest::Client::new();
    let gw = Gateway::run(&yaml, &client).await;
    let get = |path: &str| client.get(format!("{}{path}", gw.proxy));

    // No token at all, and a forged identity header: forwarded, with no identity.
    let resp = get("/api/x")
        .header("X-User-Id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-user-id"),
        None,
        "client identity header kept"
    );

    // A good token still yields the identity.
    let good = mint(&idp, "api://orders", json!({}));
    let (status, _) = gw.call("/api/x", &good).await;
    assert_eq!(status, 200);
    assert_eq!(backend.requests()[1].header("x-user-id"), Some("alice"));

    // A token that is present but bad is refused as always, empty ones included.
    let wrong_audience = mint(&idp, "api://other", json!({}));
    let cases: [(&str, &str, &str); 4] = [
        ("garbage", "Bearer not-a-jwt", "Invalid JWT."),
        (
            "wrong audience",
            &format!("Bearer {wrong_audience}"),
            AUDIENCE,
        ),
        ("empty bearer", "Bearer ", "JWT not present."),
        ("empty header", "", "JWT not present."),
    ];
    for (why, header, message) in cases {
        let resp = get("/api/x")
            .header("Authorization", header)
            .header("X-User-Id", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{why}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["message"], message, "{why}");
    }
    assert_eq!(
        backend.request_count(),
        2,
        "a refused request reached the backend"
    );

    // The same for a token read from the query string.
    let resp = get("/query/x?page=1").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for bad in ["/query/x?access_token=not-a-jwt", "/query/x?access_token="] {
        let resp = get(bad).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
    }
    let resp = get(&format!("/query/x?access_token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = backend.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].header("x-user-id"), None);
    assert_eq!(seen[3].header("x-user-id"), Some("alice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn any_of_groups_are_satisfied_whole_and_fail_with_the_closest_groups_reason() {
    let backend = Backend::start().unwrap();
    let a = idp().await;
    let b = idp().await;
    assert_ne!(a.issuer(), b.issuer());
    let policies = format!(
        "  p:\n    validate-jwt:\n      any-of:\n        - openid-config: [{{ url: \"{}\" }}]\n          audiences: [api://a]\n          required-claims: [{{ name: team, values: [red] }}]\n        - openid-config: [{{ url: \"{}\" }}]\n          audiences: [api://b]\n    forward-claims: {{ X-User-Id: sub, X-Issuer: iss }}\n",
        a.discovery_url(),
        b.discovery_url()
    );
    let gw = Gateway::run(&gateway_yaml(&policies, &backend), &reqwest::Client::new()).await;

    let a_with_a = mint(&a, "api://a", json!({ "team": "red" }));
    let b_with_b = mint(&b, "api://b", json!({}));
    let a_with_b = mint(&a, "api://b", json!({ "team": "red" }));
    let b_with_a = mint(&b, "api://a", json!({ "team": "red" }));
    let a_without_claim = mint(&a, "api://a", json!({}));
    // B's key (same kid as A's: both servers call it rsa-1) signing a token in A's name.
    let b_as_a = mint(&b, "api://a", json!({ "iss": a.issuer(), "team": "red" }));
    let unknown_issuer = mint(
        &a,
        "api://a",
        json!({ "iss": "https://elsewhere/", "team": "red" }),
    );
    expect(
        &gw,
        &backend,
        &[
            ("A with A's audience", &a_with_a, 200, ""),
            ("B with B's audience", &b_with_b, 200, ""),
            ("A with B's audience", &a_with_b, 401, AUDIENCE),
            ("B with A's audience", &b_with_a, 401, AUDIENCE),
            (
                "A without A's required claim",
                &a_without_claim,
                401,
                "JWT token is missing the following claims: team. Access denied.",
            ),
            ("B's key claiming A's issuer", &b_as_a, 401, ISSUER),
            ("no group's issuer", &unknown_issuer, 401, ISSUER),
        ],
    )
    .await;
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-issuer"), Some(a.issuer()));
    assert_eq!(seen[1].header("x-issuer"), Some(b.issuer()));
}
