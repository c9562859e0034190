//! End-to-end tests: every shipped policy in `policies/` that has a matching dev-token-server
//! profile, run as written through `portcullis run`, with a token of that profile.
//!
//! Only the identity provider's origin (and the upstream and listen addresses) are rewritten: each
//! policy file is read from `policies/`, its provider URL is pointed at an in-process dev token
//! server whose issuer has the provider's path shape, and the gateway binary runs it. A token minted
//! with the matching profile must pass and reach the backend with the policy's identity headers; a
//! token that breaks the policy's own rule (wrong tenant, missing role) must not. This keeps the
//! shipped policies and the token profiles honest with each other: a policy that drifts from the
//! token shape it documents fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_idp::{IdpConfig, IdpHandle, MintRequest, Profile};
use portcullis_testkit::backend::Backend;
use serde_json::{json, Map, Value};

use crate::support::Gateway;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ENTRA_API_APP: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
const ENTRA_CLIENT_APP: &str = "1950a258-227b-4e31-a9cf-717495945fc2";

fn policy_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../policies/{name}.yaml"))
}

/// A dev token server whose issuer has `issuer_path` (e.g. `/realms/compliance`).
async fn idp(issuer_path: &str, profile: Profile) -> (IdpHandle, String) {
    let mut config = IdpConfig::demo();
    config.issuer = Some(format!("http://127.0.0.1:{{port}}{issuer_path}"));
    config.tenant_id = TENANT.into();
    config.profile = profile;
    let handle = portcullis_idp::start(config).await.unwrap();
    let origin = format!("http://{}", handle.http_addr().unwrap());
    (handle, origin)
}

/// The shipped policy with provider URLs, listeners and upstream rewritten.
fn rewrite(policy: &str, replacements: &[(&str, String)], backend: &Backend) -> String {
    let mut text = std::fs::read_to_string(policy_path(policy)).unwrap();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{policy}.yaml no longer mentions {from}"
        );
        text = text.replace(from, to);
    }
    let upstream = "upstream: http://127.0.0.1:3000";
    assert!(text.contains(upstream), "{policy}.yaml: upstream moved");
    text = text.replace(upstream, &format!("upstream: {}", backend.url()));
    text.replace(
        "listen: \"127.0.0.1:8080\"",
        "listen: \"127.0.0.1:0\"\n  admin: \"127.0.0.1:0\"",
    )
}

fn mint(idp: &IdpHandle, build: impl FnOnce(&mut MintRequest)) -> String {
    let mut req = MintRequest::new("alice", "unset");
    build(&mut req);
    idp.mint(&req).unwrap()
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// The sum of `portcullis_requests_total` samples whose labels contain `label`.
fn requests_total(metrics: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_requests_total{") && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `/metrics` once `n` requests are counted (polled, bounded; the last text either way).
async fn counted(gateway: &Gateway, n: u64) -> String {
    let mut metrics = gateway.metrics().await;
    for _ in 0..500 {
        if requests_total(&metrics, "reason=") >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        metrics = gateway.metrics().await;
    }
    metrics
}

/// A token the policy must reject: why (for messages), the token, the status, and the reason the
/// gateway records for it (`reason=` in its log and metrics; the client sees only the policy's
/// message), so a row is caught by the rule it is about, not by another rule's 401.
type Bad<'a> = (&'a str, String, u16, &'a str);

/// Runs `good` through the gateway (200, headers at the backend) and each of `bad` (its status and
/// reason, and the backend never sees it).
async fn exercise(
    gateway: &Gateway,
    backend: &Backend,
    path: &str,
    good: &str,
    headers: &[(&str, &str)],
    bad: &[Bad<'_>],
) {
    let (status, body) = gateway.call(path, good).await;
    assert_eq!(status, 200, "valid token rejected: {body}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    for (name, value) in headers {
        assert_eq!(seen[0].header(name), Some(*value), "header {name}");
    }
    // Requests are counted in the `logging` hook, just after the response: each read waits
    // (polled, bounded) until every request sent so far is counted.
    let mut sent = 1;
    for (why, token, want, reason) in bad {
        let before = counted(gateway, sent).await;
        let (status, body) = gateway.call(path, token).await;
        assert_eq!(status, *want, "{why}: {body}");
        sent += 1;
        let after = counted(gateway, sent).await;
        let label = format!(r#"reason="{reason}""#);
        assert_eq!(
            requests_total(&after, &label),
            requests_total(&before, &label) + 1,
            "{why}: not rejected as {reason}:\n{after}"
        );
    }
    assert_eq!(
        backend.request_count(),
        1,
        "a rejected token reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_v1_policy_accepts_entra_v1_client_credentials_tokens() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realm", Profile::EntraV1).await;
    let text = rewrite(
        "entra-v1",
        &[
            ("https://login.microsoftonline.com", origin.clone()),
            ("https://sts.windows.net", origin.clone()),
        ],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&idp, |r| {
        r.audience = "api://orders".into();
        r.roles = vec!["Orders.Reader".into()];
        r.client_id = Some(ENTRA_CLIENT_APP.into());
    });
    let no_role = mint(&idp, |r| {
        r.audience = "api://orders".into();
        r.client_id = Some(ENTRA_CLIENT_APP.into());
    });
    let v2 = mint(&idp, |r| {
        r.audience = "api://orders".into();
        r.roles = vec!["Orders.Reader".into()];
        r.profile = Some(Profile::EntraV2);
    });
    exercise(
        &gw,
        &backend,
        "/api/orders",
        &good,
        &[
            ("x-tenant-id", TENANT),
            ("x-client-id", ENTRA_CLIENT_APP),
            ("x-user-roles", "Orders.Reader"),
        ],
        &[
            ("no app role", no_role, 401, "TokenClaimValueNotAllowed"),
            (
                "v2 issuer on the v1 policy",
                v2,
                401,
                "TokenIssuerNotAllowed",
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_v2_policy_accepts_entra_v2_user_tokens() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realm", Profile::EntraV2).await;
    let text = rewrite(
        "entra-v2",
        &[("https://login.microsoftonline.com", origin.clone())],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.scopes = vec!["Orders.Read".into()];
        r.client_id = Some(ENTRA_CLIENT_APP.into());
    });
    let other_tenant = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.scopes = vec!["Orders.Read".into()];
        r.claims = claims(json!({ "tid": "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50" }));
    });
    // Only the tid differs: the issuer is the configured tenant's, so the tid rule alone rejects.
    let tid_only = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.scopes = vec!["Orders.Read".into()];
        r.claims = claims(json!({
            "tid": "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50",
            "iss": format!("{origin}/{TENANT}/v2.0"),
        }));
    });
    let other_api = mint(&idp, |r| {
        r.audience = "api://someone-else".into();
        r.scopes = vec!["Orders.Read".into()];
    });
    let no_scope = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.scopes = vec!["Orders.Write".into()];
    });
    exercise(
        &gw,
        &backend,
        "/api/orders",
        &good,
        &[("x-tenant-id", TENANT), ("x-client-id", ENTRA_CLIENT_APP)],
        &[
            (
                "another tenant (issuer and tid differ)",
                other_tenant,
                401,
                "TokenIssuerNotAllowed",
            ),
            (
                "the right issuer, another tid",
                tid_only,
                401,
                "TokenClaimValueNotAllowed",
            ),
            (
                "another API's audience",
                other_api,
                401,
                "TokenAudienceNotAllowed",
            ),
            (
                "no Orders.Read scope",
                no_scope,
                401,
                "TokenClaimValueNotAllowed",
            ),
        ],
    )
    .await;
    assert!(backend.requests()[0].header("x-user-id").is_some(), "oid");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_azure_ad_token_policy_accepts_v1_and_v2_tokens_via_authority() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realm", Profile::EntraV2).await;
    let text = rewrite(
        "entra-ad-token",
        &[(
            "      tenant-id: ",
            format!("      authority: {origin}\n      tenant-id: "),
        )],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let v2 = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.roles = vec!["Orders.Reader".into()];
        r.client_id = Some(ENTRA_CLIENT_APP.into());
    });
    let v1 = mint(&idp, |r| {
        r.audience = "api://orders".into();
        r.roles = vec!["Orders.Reader".into()];
        r.client_id = Some(ENTRA_CLIENT_APP.into());
        r.profile = Some(Profile::EntraV1);
    });
    let wrong_client = mint(&idp, |r| {
        r.audience = ENTRA_API_APP.into();
        r.roles = vec!["Orders.Reader".into()];
        r.client_id = Some("00000000-0000-0000-0000-00000000dead".into());
    });
    exercise(
        &gw,
        &backend,
        "/api/orders",
        &v2,
        &[("x-tenant-id", TENANT)],
        &[(
            "client application not allowed",
            wrong_client,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
    let (status, body) = gw.call("/api/orders", &v1).await;
    assert_eq!(status, 200, "v1 token: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_multi_tenant_policy_checks_tenants_by_tid() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realm", Profile::EntraV2).await;
    let text = rewrite(
        "entra-multi-tenant",
        &[(
            "      tenant-id: ",
            format!("      authority: {origin}\n      tenant-id: "),
        )],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let second_tenant = "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50";
    // The organizations document's issuer is a template: each token's iss names its own tenant.
    let token_of = |tid: &str| {
        mint(&idp, |r| {
            r.audience = ENTRA_API_APP.into();
            r.claims = claims(json!({ "tid": tid, "iss": format!("{origin}/{tid}/v2.0") }));
        })
    };
    let good = token_of(second_tenant);
    let stranger = token_of("11111111-2222-3333-4444-555555555555");
    exercise(
        &gw,
        &backend,
        "/api/x",
        &good,
        &[("x-tenant-id", second_tenant)],
        &[(
            "a tenant not in the list",
            stranger,
            401,
            "TokenIssuerNotAllowed",
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_realm_roles_policy_accepts_keycloak_tokens() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realms/compliance", Profile::Keycloak).await;
    let text = rewrite(
        "keycloak-realm-roles",
        &[("https://keycloak.example.com", origin)],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&idp, |r| {
        r.audience = "compliance-api".into();
        r.scopes = vec!["profile".into(), "email".into()];
        r.roles = vec!["compliance-reader".into()];
        r.client_id = Some("compliance-ui".into());
        r.claims = claims(json!({ "preferred_username": "alice" }));
    });
    let wrong_role = mint(&idp, |r| {
        r.audience = "compliance-api".into();
        r.scopes = vec!["profile".into()];
        r.roles = vec!["compliance-viewer".into()];
    });
    exercise(
        &gw,
        &backend,
        "/api/reports",
        &good,
        &[
            ("x-user-id", "alice"),
            ("x-user-name", "alice"),
            ("x-user-roles", "compliance-reader"),
        ],
        &[(
            "realm role missing",
            wrong_role,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_client_roles_policy_reads_resource_access() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/realms/compliance", Profile::Keycloak).await;
    let text = rewrite(
        "keycloak-client-roles",
        &[("https://keycloak.example.com", origin)],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    // The profile puts the roles under the calling client; the API's roles (client "compliance-api")
    // come from Keycloak's client-role mapper, given here as the claim Keycloak would add.
    let api_roles =
        json!({ "resource_access": { "compliance-api": { "roles": ["reports.read"] } } });
    let good = mint(&idp, |r| {
        r.audience = "compliance-api".into();
        r.client_id = Some("compliance-batch".into());
        r.claims = claims(api_roles.clone());
    });
    let other_client = mint(&idp, |r| {
        r.audience = "compliance-api".into();
        r.client_id = Some("someone-else".into());
        r.claims = claims(api_roles.clone());
    });
    exercise(
        &gw,
        &backend,
        "/reports/q3",
        &good,
        &[("x-user-id", "alice"), ("x-client-roles", "reports.read")],
        &[(
            "azp not allowed",
            other_client,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dotnet_sts_policy_validates_the_uri_alg_and_forwards_uri_claims() {
    let backend = Backend::start().unwrap();
    let (idp, origin) = idp("/sts", Profile::DotnetSts).await;
    let text = rewrite(
        "dotnet-sts",
        &[("https://sts.example.com", format!("{origin}/sts"))],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&idp, |r| {
        r.audience = "client".into();
        r.subject = "integration-7@tenant".into();
        r.roles = vec!["Integration.Read".into(), "Integration.Write".into()];
    });
    let header = good.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).unwrap();
    assert_eq!(
        header["alg"],
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    );
    let no_role = mint(&idp, |r| {
        r.audience = "client".into();
        r.roles = vec!["Other".into()];
    });
    exercise(
        &gw,
        &backend,
        "/integration/jobs",
        &good,
        &[
            ("x-user-roles", "Integration.Read,Integration.Write"),
            ("x-tenant-id", TENANT),
        ],
        &[(
            "role claim without Integration.Read",
            no_role,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
    assert!(backend.requests()[0].header("x-user-name").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn okta_auth0_and_google_policies_accept_matching_plain_tokens() {
    let backend = Backend::start().unwrap();

    let (okta, origin) = idp("/oauth2/default", Profile::Plain).await;
    let text = rewrite("okta", &[("https://example.okta.com", origin)], &backend);
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&okta, |r| {
        r.audience = "api://default".into();
        r.subject = "alice@example.com".into();
        r.scopes = vec!["orders.read".into()];
        r.claims = claims(json!({ "uid": "00u1", "cid": "0oa1" }));
    });
    let no_scope = mint(&okta, |r| r.audience = "api://default".into());
    exercise(
        &gw,
        &backend,
        "/api/orders",
        &good,
        &[
            ("x-user-id", "00u1"),
            ("x-user-email", "alice@example.com"),
            ("x-client-id", "0oa1"),
        ],
        &[("scope missing", no_scope, 401, "TokenClaimValueNotAllowed")],
    )
    .await;
    drop(gw);
    backend.clear();

    let (auth0, origin) = idp("/auth0", Profile::Plain).await;
    let text = rewrite(
        "auth0",
        &[("https://example.eu.auth0.com", format!("{origin}/auth0"))],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let good = mint(&auth0, |r| {
        r.audience = "https://api.example.com/orders".into();
        r.scopes = vec!["read:orders".into()];
        r.claims = claims(json!({ "permissions": ["read:orders"] }));
    });
    let no_permission = mint(&auth0, |r| {
        r.audience = "https://api.example.com/orders".into();
        r.scopes = vec!["read:orders".into()];
    });
    exercise(
        &gw,
        &backend,
        "/api/orders",
        &good,
        &[("x-user-id", "alice")],
        &[(
            "permissions claim missing",
            no_permission,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
    drop(gw);
    backend.clear();

    let (google, origin) = idp("/google", Profile::Plain).await;
    let text = rewrite(
        "google",
        &[("https://accounts.google.com", format!("{origin}/google"))],
        &backend,
    );
    let gw = Gateway::run(&text, &reqwest::Client::new()).await;
    let aud = "1234567890-example.apps.googleusercontent.com";
    let good = mint(&google, |r| {
        r.audience = aud.into();
        r.claims = claims(
            json!({ "email": "alice@example.com", "email_verified": true, "hd": "example.com" }),
        );
    });
    let unverified = mint(&google, |r| {
        r.audience = aud.into();
        r.claims = claims(
            json!({ "email": "alice@example.com", "email_verified": false, "hd": "example.com" }),
        );
    });
    exercise(
        &gw,
        &backend,
        "/api/me",
        &good,
        &[("x-user-email", "alice@example.com")],
        &[(
            "email not verified",
            unverified,
            401,
            "TokenClaimValueNotAllowed",
        )],
    )
    .await;
}
