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
use portcullis_testkit::jwks_server::{b64url, hmac_signature, Algorithm};
use reqwest::{Client, Response};
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
    let secret = STANDARD.decode(CORPUS_KEY).unwrap();
    let head = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let signing = format!("{head}.{body}");
    let sig = hmac_signature(&secret, signing.as_bytes(), Algorithm::HS256).unwrap();
    format!("{signing}.{}", b64url(&sig))
}

async fn get(gw: &InProcess, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = Client::new()
        .get(format!("http://{}{path}", gw.proxy()))
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
    assert_eq!(
        header(&r, "api-supported-versions").as_deref(),
        Some("2023-01-01, 2024-05-01")
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
    let r = get(&gw, "/anything", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-mocked").as_deref(), Some("true"));
    assert_eq!(header(&r, "x-never"), None);
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn admin_api_refuses_callers_outside_its_ranges() {
    let backend = Backend::start().unwrap();
    let gw = gateway("28-internal-admin.xml", "/", &backend.url(), &[], &[]).await;
    let r = get(&gw, "/admin/users", &[("X-Admin-Client", "ops-console")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(backend.request_count(), 0);
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
