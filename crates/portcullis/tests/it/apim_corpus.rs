//! The realistic APIM corpus (crates/portcullis-apim/tests/corpus/25-34) end to end: each document
//! is converted by `import-apim` with a route to recording backends, loaded as `portcullis check`
//! loads it, and driven through the real gateway; the backend must receive exactly the method,
//! path, query and headers APIM would send, and the client the answer APIM would give.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis_testkit::backend::{Backend, RecordedRequest};
use portcullis_testkit::jwks_server::{
    b64url, hmac_signature, Algorithm, Endpoint, JwksServer, TestKey,
};
use reqwest::{Client, Method, Response};
use serde_json::json;

use crate::support::InProcess;

/// The HMAC secret of the corpus' validate-jwt policies (base64, as in the XML).
const CORPUS_KEY: &str = "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg=";

fn corpus(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../portcullis-apim/tests/corpus")
        .join(name);
    let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (path, xml)
}

/// Converts `name` with one route `/` (or `prefix`) to `upstream`, applies `replace` to the YAML
/// (placeholder URLs -> recording backends), loads it (named values from `vars`) and starts it.
async fn gateway(
    name: &str,
    prefix: &str,
    upstream: &str,
    replace: &[(&str, String)],
    vars: &[(&str, &str)],
) -> InProcess {
    let (_, xml) = corpus(name);
    let route: portcullis_apim::RouteSpec = format!("api={prefix}={upstream}").parse().unwrap();
    let conv = portcullis_apim::convert(&xml, name, &[route]).unwrap();
    let mut text = conv
        .yaml
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"");
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let lookup = |n: &str| {
        vars.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| (*v).to_owned())
    };
    let (model, warnings) =
        portcullis_config::load_str_with(&text, Path::new("imported.yaml"), &lookup)
            .unwrap_or_else(|d| panic!("{name}: converted config rejected: {d:?}\n{text}"));
    let errors: Vec<_> = warnings
        .iter()
        .filter(|d| d.severity == portcullis_config::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}");
    InProcess::start(&model).await
}

/// An HS256 token under the corpus key.
fn token(claims: serde_json::Value) -> String {
    signed(CORPUS_KEY, None, claims)
}

/// An HS256 token under `secret` (base64), with `kid` in its header when given.
fn signed(secret: &str, kid: Option<&str>, claims: serde_json::Value) -> String {
    let secret = STANDARD.decode(secret).unwrap();
    let header = match kid {
        Some(kid) => json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        None => json!({"alg": "HS256", "typ": "JWT"}),
    };
    let head = b64url(header.to_string().as_bytes());
    let body = b64url(claims.to_string().as_bytes());
    let signing = format!("{head}.{body}");
    let sig = hmac_signature(&secret, signing.as_bytes(), Algorithm::HS256).unwrap();
    format!("{signing}.{}", b64url(&sig))
}

async fn get(gw: &InProcess, path: &str, headers: &[(&str, &str)]) -> Response {
    send(gw, Method::GET, path, headers).await
}

async fn send(gw: &InProcess, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Client::new()
        .request(method, format!("http://{}{path}", gw.proxy()))
        .timeout(Duration::from_secs(10));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap()
}

fn header(r: &Response, name: &str) -> Option<String> {
    let values: Vec<String> = r
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn only(backend: &Backend) -> RecordedRequest {
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    backend.clear();
    requests.into_iter().next().unwrap()
}

#[tokio::test]
async fn bff_in_front_of_a_legacy_service() {
    let front = Backend::start().unwrap();
    let legacy = Backend::start().unwrap();
    legacy.set_response_header("X-Powered-By", "Legacy/1.0");
    let gw = gateway(
        "25-bff-legacy.xml",
        "/customers/{customerId}",
        &front.url(),
        &[(
            "url: \"http://127.0.0.1:3000\"",
            format!("url: \"{}/legacy\"", legacy.url()),
        )],
        &[],
    )
    .await;
    let t = token(json!({"sub": "alice", "aud": "crm-bff", "exp": crate::support::now() + 600}));
    let r = get(
        &gw,
        "/customers/42?x=1",
        &[
            ("Authorization", &format!("Bearer {t}")),
            ("Cookie", "session=s1"),
            ("X-Request-Id", "r-1"),
            ("X-User-Id", "forged"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-powered-by"), None);
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(front.request_count(), 0);
    let got = only(&legacy);
    assert_eq!(got.method, "GET");
    assert_eq!(got.path, "/legacy/crm/api/v1/customers/42");
    assert_eq!(got.query.as_deref(), Some("x=1&format=json"));
    assert_eq!(got.header_values("x-user-id"), ["alice"]);
    assert!(got.header_values("cookie").is_empty(), "{got:?}");
    assert_eq!(got.header("x-legacy-client"), Some("crm-bff"));
    assert_eq!(got.header("x-correlation-id"), Some("r-1"));
    // no token: refused before anything reaches a backend
    let r = get(&gw, "/customers/42", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(legacy.request_count() + front.request_count(), 0);
}

#[tokio::test]
async fn versioned_api_rewrites_by_header() {
    let backend = Backend::start().unwrap();
    let gw = gateway(
        "26-versioned-rewrite.xml",
        "/orders/{orderId}",
        &backend.url(),
        &[],
        &[],
    )
    .await;
    let r = get(&gw, "/orders/7?a=1", &[("Api-Version", "2024-05-01")]).await;
    assert_eq!(r.status(), 200);
    // one header line, the values joined with "," as APIM joins a set-header's <value>s
    assert_eq!(
        r.headers().get_all("api-supported-versions").iter().count(),
        1
    );
    assert_eq!(
        header(&r, "api-supported-versions").as_deref(),
        Some("2023-01-01,2024-05-01")
    );
    assert_eq!(
        header(&r, "x-served-version").as_deref(),
        Some("2024-05-01")
    );
    let got = only(&backend);
    assert_eq!(got.path, "/v3/orders/7");
    assert_eq!(got.query.as_deref(), Some("a=1&api-version=2024-05-01"));
    assert!(got.header_values("api-version").is_empty(), "{got:?}");
    assert_eq!(got.header("x-requested-path"), Some("/orders/7"));
    // default version: the v2 path, unmatched parameters not copied
    let r = get(&gw, "/orders/7?a=1", &[]).await;
    assert_eq!(
        header(&r, "x-served-version").as_deref(),
        Some("2023-01-01")
    );
    let got = only(&backend);
    assert_eq!(got.path, "/v2/orders/7");
    assert_eq!(got.query.as_deref(), Some("api-version=2023-01-01"));
}

#[tokio::test]
async fn mocked_operation_never_reaches_the_backend() {
    let backend = Backend::start().unwrap();
    let gw = gateway("27-mocked-operation.xml", "/", &backend.url(), &[], &[]).await;
    let r = get(&gw, "/anything", &[("Origin", "http://localhost:5173")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-mocked").as_deref(), Some("true"));
    assert_eq!(header(&r, "x-never"), None);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    // no OpenAPI example on the route: an empty body
    assert_eq!(r.text().await.unwrap(), "");
    assert_eq!(backend.request_count(), 0);
}

/// The Entra tenant of 28-internal-admin.xml.
const ADMIN_TENANT: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// A stand-in for Entra ID serving the tenant's v1 and v2 discovery documents, with Entra's real
/// issuer strings, and `key`; returns the server and the (v1, v2) issuers. `authority:` is pointed
/// at it in the converted YAML: the gateway must take the issuers from the documents (issue 16,
/// step 3), not build `{authority}/<tid>/` from the authority.
async fn entra(key: &TestKey) -> (JwksServer, String, String) {
    let idp = JwksServer::start().await.unwrap();
    idp.set_keys(&[key]);
    let v1 = format!("https://sts.windows.net/{ADMIN_TENANT}/");
    let v2 = format!("https://login.microsoftonline.com/{ADMIN_TENANT}/v2.0");
    for (path, issuer) in [("", &v1), ("/v2.0", &v2)] {
        let doc = json!({"issuer": issuer, "jwks_uri": idp.jwks_url()}).to_string();
        idp.update(
            &format!("/{ADMIN_TENANT}{path}/.well-known/openid-configuration"),
            |ep| *ep = Endpoint::json(doc),
        );
    }
    (idp, v1, v2)
}

#[tokio::test]
async fn admin_api_only_for_its_ranges_header_token_and_role() {
    let front = Backend::start().unwrap();
    let admin = Backend::start().unwrap();
    let key = TestKey::rsa("entra-1").unwrap();
    let (idp, v1_issuer, issuer) = entra(&key).await;
    let gw = gateway(
        "28-internal-admin.xml",
        "/",
        &front.url(),
        &[
            // the gateway stands behind a load balancer on 127.0.0.1 that says who called
            (
                "  admin: \"127.0.0.1:0\"\n",
                "  admin: \"127.0.0.1:0\"\n  trusted-proxies: [\"127.0.0.1\"]\n".to_owned(),
            ),
            (
                &format!("tenant-id: \"{ADMIN_TENANT}\""),
                format!(
                    "tenant-id: \"{ADMIN_TENANT}\"\n          authority: \"{}\"",
                    idp.base_url
                ),
            ),
            (
                "http://127.0.0.1:3001/admin",
                format!("{}/admin", admin.url()),
            ),
        ],
        &[],
    )
    .await;
    let now = crate::support::now();
    let reader = key
        .sign(&json!({"iss": issuer, "aud": "api://admin", "oid": "oid-9", "roles": ["Admin.Read"], "exp": now + 600, "nbf": now - 10}))
        .unwrap();
    let writer = key
        .sign(&json!({"iss": issuer, "aud": "api://admin", "oid": "oid-w", "roles": ["Admin.Write"], "exp": now + 600, "nbf": now - 10}))
        .unwrap();
    let bearer = |t: &str| format!("Bearer {t}");
    let (reader, writer) = (bearer(&reader), bearer(&writer));
    let office = ("X-Forwarded-For", "10.8.1.2");
    let console = ("X-Admin-Client", "ops-console");

    // the load balancer itself (127.0.0.1) is not in the ranges
    let r = get(&gw, "/users", &[console, ("Authorization", &reader)]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"statusCode": 403, "message": "Forbidden"})
    );
    // in range, no admin client header: check-header's answer
    let r = get(&gw, "/users", &[office, ("Authorization", &reader)]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"statusCode": 403, "message": "Not an admin client"})
    );
    // no token
    let r = get(&gw, "/users", &[office, console]).await;
    assert_eq!(r.status(), 401);
    // a read: the backend's base path, the admin's object id; the client's own copy replaced
    let r = get(
        &gw,
        "/users?top=5",
        &[
            office,
            console,
            ("Authorization", &reader),
            ("X-Admin-Oid", "forged"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&admin);
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("GET", "/admin/users")
    );
    assert_eq!(got.query.as_deref(), Some("top=5"));
    assert_eq!(got.header_values("x-admin-oid"), ["oid-9"]);
    assert_eq!(got.header("x-admin-client"), Some("ops-console"));
    // a write without Admin.Write: the policy's JSON answer naming the caller's address
    let r = send(
        &gw,
        Method::DELETE,
        "/users/7",
        &[office, console, ("Authorization", &reader)],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":"write access denied for 10.8.1.2"}"#
    );
    assert_eq!(admin.request_count(), 0);
    // a write with it, from the IPv6 range
    let r = send(
        &gw,
        Method::DELETE,
        "/users/7",
        &[
            ("X-Forwarded-For", "fd00::12"),
            console,
            ("Authorization", &writer),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&admin);
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("DELETE", "/admin/users/7")
    );
    assert_eq!(got.header_values("x-admin-oid"), ["oid-w"]);
    // Entra's v1 issuer, taken from the stand-in's v1 discovery document, passes too; an issuer
    // built from the authority (what the gateway used to expect) is refused, as APIM refuses it.
    let v1_reader = key
        .sign(&json!({"iss": v1_issuer, "aud": "api://admin", "oid": "oid-1", "roles": ["Admin.Read"], "exp": now + 600, "nbf": now - 10}))
        .unwrap();
    let r = get(
        &gw,
        "/users",
        &[office, console, ("Authorization", &bearer(&v1_reader))],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&admin).header_values("x-admin-oid"), ["oid-1"]);
    let built = key
        .sign(&json!({"iss": format!("{}/{ADMIN_TENANT}/v2.0", idp.base_url), "aud": "api://admin", "oid": "oid-x", "roles": ["Admin.Read"], "exp": now + 600, "nbf": now - 10}))
        .unwrap();
    let r = get(
        &gw,
        "/users",
        &[office, console, ("Authorization", &bearer(&built))],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["message"],
        "Issuer validation failed. Access denied."
    );
    assert_eq!(front.request_count(), 0);
}

#[tokio::test]
async fn tenants_are_routed_by_header() {
    let default = Backend::start().unwrap();
    let contoso = Backend::start().unwrap();
    let shared = Backend::start().unwrap();
    let fabrikam = Backend::start().unwrap();
    let gw = gateway(
        "30-multi-tenant-routing.xml",
        "/",
        &default.url(),
        &[
            ("http://127.0.0.1:3101", contoso.url()),
            ("http://127.0.0.1:3100", shared.url()),
            ("http://127.0.0.1:3000", fabrikam.url()),
        ],
        &[],
    )
    .await;
    let r = get(&gw, "/orders?x=1", &[("X-Tenant-Id", "contoso")]).await;
    assert_eq!(r.status(), 200);
    let got = only(&contoso);
    assert_eq!(
        (got.path.as_str(), got.query.as_deref()),
        ("/contoso/orders", Some("x=1"))
    );
    assert_eq!(got.header("x-tenant"), Some("contoso"));
    assert!(got.header_values("x-tenant-id").is_empty(), "{got:?}");
    assert!(got.header_values("x-dedicated").is_empty(), "{got:?}");

    get(&gw, "/orders", &[("X-Tenant-Id", "fabrikam")]).await;
    let got = only(&fabrikam);
    assert_eq!(got.path, "/orders");
    assert_eq!(got.header("x-dedicated"), Some("true"));
    assert_eq!(got.header("x-tenant"), Some("fabrikam"));

    get(&gw, "/orders", &[]).await;
    assert_eq!(only(&shared).header("x-tenant"), Some("shared"));

    let r = get(&gw, "/orders", &[("X-Tenant-Id", "acme")]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "content-type").as_deref(), Some("text/plain"));
    assert_eq!(r.text().await.unwrap(), "unknown tenant acme");
    let reached = [&default, &contoso, &shared, &fabrikam]
        .iter()
        .map(|b| b.request_count())
        .sum::<usize>();
    assert_eq!(reached, 0);
}

#[tokio::test]
async fn response_headers_are_cleaned_up() {
    let backend = Backend::start().unwrap();
    backend.set_response_header("X-Powered-By", "ASP.NET");
    backend.set_response_header("X-AspNet-Version", "4.0.30319");
    let gw = gateway("31-response-hygiene.xml", "/", &backend.url(), &[], &[]).await;
    let r = get(&gw, "/items", &[("X-Request-Id", "req-9")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-powered-by"), None);
    assert_eq!(header(&r, "x-aspnet-version"), None);
    assert_eq!(
        header(&r, "cache-control").as_deref(),
        Some("public, max-age=60")
    );
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("req-9"));
    assert!(
        header(&r, "vary").is_some_and(|v| v.contains("Accept-Encoding")),
        "{:?}",
        r.headers()
    );
    let got = only(&backend);
    assert_eq!((got.method.as_str(), got.path.as_str()), ("GET", "/items"));
}

#[tokio::test]
async fn maintenance_answers_unless_bypassed() {
    let backend = Backend::start().unwrap();
    let gw = gateway(
        "32-maintenance-window.xml",
        "/",
        &backend.url(),
        &[],
        &[("maintenance-bypass-key", "let-me-in")],
    )
    .await;
    let r = get(&gw, "/x", &[("X-Maintenance-Bypass", "guess")]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("3600"));
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"statusCode": 503, "message": "Down for maintenance until 06:00 UTC"})
    );
    assert_eq!(backend.request_count(), 0);
    let r = get(&gw, "/x", &[("X-Maintenance-Bypass", "let-me-in")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        only(&backend).header("x-maintenance-bypass"),
        Some("granted")
    );
}

#[tokio::test]
async fn debug_headers_only_when_asked_for() {
    let backend = Backend::start().unwrap();
    backend.set_response_header("X-Debug-Echo", "internal");
    let gw = gateway("33-debug-headers.xml", "/", &backend.url(), &[], &[]).await;
    let r = get(&gw, "/p/q?debug=1&keep=2", &[("X-Debug", "1")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-traced").as_deref(), Some("yes"));
    assert_eq!(header(&r, "x-debug-echo"), None);
    let got = only(&backend);
    assert_eq!(got.query.as_deref(), Some("keep=2"));
    assert_eq!(got.header("x-debug-client-ip"), Some("127.0.0.1"));
    assert_eq!(got.header("x-debug-request"), Some("GET /p/q on 127.0.0.1"));
    let r = get(&gw, "/p/q?debug=1&keep=2", &[]).await;
    assert_eq!(header(&r, "x-traced"), None);
    let got = only(&backend);
    assert_eq!(got.query.as_deref(), Some("keep=2"));
    assert!(got.header_values("x-debug-client-ip").is_empty(), "{got:?}");
}

/// The six-statement policy of issue 14 (corpus 20), given the operation's URL template as its
/// route: the backend gets what APIM sends (the public host in X-Forwarded-Host, the rewritten path
/// under set-backend-service's base path, the query copied), the browser its CORS headers and the
/// per-user limit's headers.
#[tokio::test]
async fn six_statement_policy_reaches_the_backend_as_apim_sends_it() {
    let front = Backend::start().unwrap();
    let orders = Backend::start().unwrap();
    let gw = gateway(
        "20-inbound-pipeline.xml",
        "/orders/{id}",
        &front.url(),
        &[(
            "https://orders-backend.contoso.example/api",
            format!("{}/api", orders.url()),
        )],
        &[],
    )
    .await;
    let t = token(json!({
        "iss": "https://sts.contoso.example/", "aud": "api://orders", "sub": "alice",
        "exp": crate::support::now() + 600,
    }));
    let auth = format!("Bearer {t}");
    let origin = ("Origin", "https://app.contoso.example");
    let r = get(
        &gw,
        "/orders/42?expand=lines&v=1",
        &[
            origin,
            ("Authorization", &auth),
            ("X-Forwarded-Host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.contoso.example")
    );
    assert_eq!(
        header(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("10"));
    assert!(
        header(&r, "x-ratelimit-remaining").is_some(),
        "{:?}",
        r.headers()
    );
    let got = only(&orders);
    assert_eq!(got.method, "GET");
    assert_eq!(got.path, "/api/v2/orders/42");
    assert_eq!(got.query.as_deref(), Some("expand=lines&v=1"));
    assert_eq!(
        got.header_values("x-forwarded-host"),
        ["api.contoso.example"]
    );
    assert_eq!(got.header("authorization"), Some(auth.as_str()));
    assert_eq!(front.request_count(), 0);

    // the operation's template: another path is not this operation
    let r = get(&gw, "/orders/42/lines", &[origin, ("Authorization", &auth)]).await;
    assert_eq!(r.status(), 404);
    // an origin the policy does not list: APIM's empty 200 (terminate-unmatched-request), no CORS
    // headers, not forwarded
    let r = get(
        &gw,
        "/orders/42",
        &[("Origin", "https://evil.example"), ("Authorization", &auth)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(r.text().await.unwrap(), "");
    // no token: the policy's message
    let r = get(&gw, "/orders/42", &[origin]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"statusCode": 401, "message": "Unauthorized. Access token is missing or invalid."})
    );
    assert_eq!(orders.request_count() + front.request_count(), 0);
}

/// Corpus 29: the single-page app's preflight is answered by `cors` alone (no token needed), the
/// actual call validated, limited per user, the user and calling app forwarded, and security
/// headers on the answer.
#[tokio::test]
async fn spa_preflight_token_and_limits() {
    let backend = Backend::start().unwrap();
    backend.set_response_header("Server", "Kestrel");
    let gw = gateway(
        "29-spa-cors-jwt-ratelimit.xml",
        "/",
        &backend.url(),
        &[],
        &[],
    )
    .await;
    let origin = ("Origin", "https://app.contoso.example");
    let r = send(
        &gw,
        Method::OPTIONS,
        "/todos",
        &[
            origin,
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.contoso.example")
    );
    assert!(
        header(&r, "access-control-allow-methods").is_some_and(|m| m.contains("POST")),
        "{:?}",
        r.headers()
    );
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(backend.request_count(), 0);

    let now = crate::support::now();
    let alice = format!(
        "Bearer {}",
        token(json!({"sub": "alice", "azp": "web", "exp": now + 600}))
    );
    let r = send(
        &gw,
        Method::POST,
        "/todos",
        &[origin, ("Authorization", &alice), ("X-User-Id", "mallory")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.contoso.example")
    );
    assert_eq!(
        header(&r, "strict-transport-security").as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        header(&r, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(header(&r, "server"), None);
    assert!(
        header(&r, "vary").is_some_and(|v| v.contains("Origin")),
        "{:?}",
        r.headers()
    );
    let got = only(&backend);
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/todos"));
    assert_eq!(got.header_values("x-user-id"), ["alice"]);
    assert_eq!(got.header("x-calling-app"), Some("spa/web"));
    // a token without azp: APIM's GetValueOrDefault default
    let bob = format!("Bearer {}", token(json!({"sub": "bob", "exp": now + 600})));
    get(&gw, "/todos", &[("Authorization", &bob)]).await;
    assert_eq!(only(&backend).header("x-calling-app"), Some("spa/unknown"));
    // 30 calls per user per minute: alice has used one
    for _ in 0..29 {
        let r = get(&gw, "/todos", &[("Authorization", &alice)]).await;
        assert_eq!(r.status(), 200);
    }
    let r = get(&gw, "/todos", &[("Authorization", &alice)]).await;
    assert_eq!(r.status(), 429);
    assert!(header(&r, "retry-after").is_some(), "{:?}", r.headers());
    // bob's own counter is untouched
    let r = get(&gw, "/todos", &[("Authorization", &bob)]).await;
    assert_eq!(r.status(), 200);
    // no token: refused, the preflight never needed one
    let r = get(&gw, "/todos", &[origin]).await;
    assert_eq!(r.status(), 401);
}

/// Corpus 34: the body-dependent branch answers without the backend (a `return-response`) and is
/// left out, so the route refuses every request (`-refused`), as a valid token shows. Pointed at
/// the converted policy by hand, what converts (token check, header from the route parameter,
/// rewrite with a claim) behaves as in APIM; what was reported and left out (cache, timestamp
/// header, the branch) does nothing.
#[tokio::test]
async fn partner_api_keeps_what_converts() {
    let backend = Backend::start().unwrap();
    let t =
        token(json!({"sub": "p", "partner_id": "north wind", "exp": crate::support::now() + 600}));
    let name = "34-partner-api-unsupported";
    let gw = gateway(
        &format!("{name}.xml"),
        "/orders/{orderId}",
        &backend.url(),
        &[],
        &[],
    )
    .await;
    let r = get(
        &gw,
        "/orders/o-7",
        &[("Authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(backend.request_count(), 0);
    let by_hand = [(
        "policy: \"34-partner-api-unsupported-refused\"",
        format!("policy: \"{name}\""),
    )];
    let gw = gateway(
        &format!("{name}.xml"),
        "/orders/{orderId}",
        &backend.url(),
        &by_hand,
        &[],
    )
    .await;
    let r = get(
        &gw,
        "/orders/o-7?x=1",
        &[("Authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&backend);
    assert_eq!(got.path, "/partners/north%20wind/orders/o-7");
    assert_eq!(got.query.as_deref(), Some("x=1"));
    assert_eq!(got.header("x-partner-order"), Some("order-o-7"));
    assert!(got.header_values("x-timestamp").is_empty(), "{got:?}");
    let r = get(&gw, "/orders/o-7", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(backend.request_count(), 0);
}

/// Corpus 35 (issue 16, step 4): APIM tries every configured key when the token's `kid` names
/// none, so a partner's token that names the shared secret by its own id passes, as in APIM; the
/// same policy written by hand (strict key matching, the default) refuses it.
#[tokio::test]
async fn partner_kid_mismatch_makes_apims_key_decision() {
    let backend = Backend::start().unwrap();
    let gw = gateway("35-partner-kid-mismatch.xml", "/", &backend.url(), &[], &[]).await;
    let now = crate::support::now();
    let claims = |sub: &str| json!({"sub": sub, "iss": "https://sts.partner.example/", "aud": "api://partner-orders", "exp": now + 600});
    let bearer = |t: String| format!("Bearer {t}");
    let cases = [
        ("the partner's own kid", Some("7F3A9C"), "p-1", 200),
        ("the configured id", Some("partner-shared-2024"), "p-2", 200),
        ("no kid", None, "p-3", 200),
    ];
    for (why, kid, sub, status) in cases {
        let auth = bearer(signed(CORPUS_KEY, kid, claims(sub)));
        let r = get(&gw, "/orders", &[("Authorization", &auth)]).await;
        assert_eq!(r.status(), status, "{why}");
        assert_eq!(only(&backend).header("x-partner-id"), Some(sub), "{why}");
    }
    // Every key tried, none verifies: refused, never forwarded. Another secret under an unknown
    // kid, and another secret under the configured id (that kid selects its key only).
    let other = STANDARD.encode([9u8; 32]);
    for kid in ["7F3A9C", "partner-shared-2024"] {
        let auth = bearer(signed(&other, Some(kid), claims("mallory")));
        let r = get(&gw, "/orders", &[("Authorization", &auth)]).await;
        assert_eq!(r.status(), 401, "{kid}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"statusCode": 401, "message": "Unauthorized"})
        );
    }
    assert_eq!(backend.request_count(), 0);

    // Hand-written: the same policy without the importer's compatibility setting.
    let strict = gateway(
        "35-partner-kid-mismatch.xml",
        "/",
        &backend.url(),
        &[(
            "try-all-signing-keys: true",
            "try-all-signing-keys: false".to_owned(),
        )],
        &[],
    )
    .await;
    let auth = bearer(signed(CORPUS_KEY, Some("7F3A9C"), claims("p-1")));
    let r = get(&strict, "/orders", &[("Authorization", &auth)]).await;
    assert_eq!(r.status(), 401);
    let auth = bearer(signed(
        CORPUS_KEY,
        Some("partner-shared-2024"),
        claims("p-2"),
    ));
    let r = get(&strict, "/orders", &[("Authorization", &auth)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&backend).header("x-partner-id"), Some("p-2"));
}

/// Every converted corpus document (the goldens next to the XML, as `import-apim` writes them) passes
/// the real `portcullis check`, named values given as the environment gives them.
#[test]
fn every_converted_corpus_document_passes_check() {
    let dir = corpus("01-entra-v2-openid.xml")
        .0
        .parent()
        .unwrap()
        .to_owned();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "-c"])
            .arg(&path)
            .env("jwt-signing-key", STANDARD.encode([7u8; 32]))
            .env("token-issuer", "https://nv.contoso.test/")
            .env("maintenance-bypass-key", "let-me-in")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 33, "{checked} documents checked");
}

/// Corpus 13: identity to the backend from the verified token, a claim with APIM's default, the
/// client's address (the client's own X-Client-Ip replaced), the token itself not forwarded.
#[tokio::test]
async fn identity_headers_from_the_token_and_the_connection() {
    let backend = Backend::start().unwrap();
    let gw = gateway("13-set-header-claims.xml", "/", &backend.url(), &[], &[]).await;
    let now = crate::support::now();
    let name = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
    let named = token(json!({
        "sub": "u-1", "oid": "oid-1", "tid": "t-1", "roles": ["a", "b"], "jti": "j-1",
        "iss": "https://sts.contoso.test/", name: "Alice", "exp": now + 600,
    }));
    let r = get(
        &gw,
        "/me",
        &[
            ("Authorization", &format!("Bearer {named}")),
            ("X-Client-Ip", "203.0.113.9"),
            ("X-Name", "forged"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&backend);
    for (h, v) in [
        ("x-user-oid", "oid-1"),
        ("x-user-sub", "u-1"),
        ("x-tenant", "t-1"),
        ("x-roles", "a,b"),
        ("x-issuer", "https://sts.contoso.test/"),
        ("x-token-id", "j-1"),
        ("x-name", "Alice"),
        ("x-client-ip", "127.0.0.1"),
    ] {
        assert_eq!(got.header_values(h), [v], "{h}: {got:?}");
    }
    assert!(got.header_values("authorization").is_empty(), "{got:?}");
    // no name claim: APIM's GetValueOrDefault default
    let anonymous = token(json!({"sub": "u-2", "exp": now + 600}));
    get(
        &gw,
        "/me",
        &[("Authorization", &format!("Bearer {anonymous}"))],
    )
    .await;
    assert_eq!(only(&backend).header_values("x-name"), ["anonymous"]);
}
