//! The APIOps extractor folders (crates/portcullis-apim/tests/apiops) end to end: each folder is
//! imported by `import-apim --apiops` with its cloud origins mapped (`--map-upstream`) to recording
//! backends, loaded as `portcullis check` loads it, and driven through the real gateway: the
//! client gets the answer APIM would give (status, body, headers) and the backend receives the
//! path and headers APIM would send, for the policy APIM would compose for that operation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use portcullis_apim::apiops::{self, Import, Options};
use portcullis_proxy::SubscriptionKeys;
use portcullis_testkit::backend::{Backend, RecordedRequest};
use portcullis_testkit::jwks_server::{b64url, hmac_signature, Algorithm};
use reqwest::{Client, Method, Response};
use serde_json::json;

use crate::support::InProcess;

fn folder(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../portcullis-apim/tests/apiops")
        .join(name)
}

/// Imports `name` with `maps` (`FROM=TO`), loads it with the folder's named values (and `vars`)
/// and starts the gateway.
fn import(name: &str, maps: &[String]) -> Import {
    let options = Options {
        map_upstream: maps.iter().map(|m| m.parse().unwrap()).collect(),
    };
    apiops::import(&folder(name), &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn gateway(import: &Import, vars: &[(&str, &str)]) -> InProcess {
    gateway_with_keys(import, vars, &[]).await
}

/// As [`gateway`], with subscription keys (`NAME`, `KEY`) given as `--subscription-key` gives them.
async fn gateway_with_keys(
    import: &Import,
    vars: &[(&str, &str)],
    keys: &[(&str, &str)],
) -> InProcess {
    let text = import
        .yaml
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"");
    let lookup = |n: &str| {
        vars.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| {
                import
                    .named_values
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })
    };
    let path = folder("gateway.yaml");
    let (model, warnings) = portcullis_config::load_str_with(&text, &path, &lookup)
        .unwrap_or_else(|d| panic!("imported config rejected: {d:#?}\n{text}"));
    let errors: Vec<_> = warnings
        .iter()
        .filter(|d| d.severity == portcullis_config::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut subscription_keys = SubscriptionKeys::new();
    for (name, key) in keys {
        subscription_keys.add(name, key);
    }
    InProcess::start_with_keys(&model, subscription_keys).await
}

/// The secret named value `jwt-key` of the fabrikam folder (base64, as APIM's `<key>`).
const JWT_KEY: &str = "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg=";

/// An HS256 token under [`JWT_KEY`] for the fabrikam users API.
fn token() -> String {
    hs_token(json!({"sub": "alice", "aud": "api://users"}))
}

/// An HS256 token under [`JWT_KEY`] with `claims` (and an `exp` 10 minutes ahead).
fn hs_token(mut claims: serde_json::Value) -> String {
    claims["exp"] = json!(crate::support::now() + 600);
    let secret = STANDARD.decode(JWT_KEY).unwrap();
    let head = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let signing = format!("{head}.{body}");
    let sig = hmac_signature(&secret, signing.as_bytes(), Algorithm::HS256).unwrap();
    format!("{signing}.{}", b64url(&sig))
}

const MISSING_KEY: &str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
const INVALID_KEY: &str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";

async fn refused(r: Response, message: &str) {
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"statusCode": 401, "message": message}));
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

async fn get(gw: &InProcess, path: &str, headers: &[(&str, &str)]) -> Response {
    send(gw, Method::GET, path, headers).await
}

fn only(backend: &Backend) -> RecordedRequest {
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    backend.clear();
    requests.into_iter().next().unwrap()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn contoso_open_api_and_mocked_operation() {
    let catalog = Backend::start().unwrap();
    let other = Backend::start().unwrap();
    let import = import(
        "contoso",
        &[
            format!("http://catalog.contoso.com={}", catalog.url()),
            format!("https://orders.contoso.com={}", other.url()),
            format!("https://orders-v2.contoso.com={}", other.url()),
            format!("https://inventory.contoso.com={}", other.url()),
        ],
    );
    let gw = gateway(&import, &[]).await;
    // global inbound and outbound (the catalog API and operation inherit: no policy files)
    let r = get(&gw, "/catalog/items?page=2", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-global-out").as_deref(), Some("global"));
    let got = only(&catalog);
    assert_eq!(got.method, "GET");
    assert_eq!(got.path, "/items");
    assert_eq!(got.query.as_deref(), Some("page=2"));
    assert_eq!(got.header("x-global"), Some("global"));
    // the mocked operation answers with the OpenAPI v2 example and never calls the backend
    let r = get(&gw, "/catalog/items/42", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"id": "42", "name": "Widget"}));
    assert_eq!(catalog.request_count(), 0);
    // an operation the specification does not have: no route
    let r = send(&gw, Method::DELETE, "/catalog/items/42", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(catalog.request_count(), 0);
    assert_eq!(other.request_count(), 0);
}

#[tokio::test]

async fn fabrikam_header_and_query_version_sets() {
    let billing = Backend::start().unwrap();
    let reports = Backend::start().unwrap();
    let users = Backend::start().unwrap();
    let import = import(
        "fabrikam",
        &[
            format!("https://billing.fabrikam.io={}", billing.url()),
            format!("https://reports.fabrikam.io={}", reports.url()),
            format!("https://users.fabrikam.io={}", users.url()),
        ],
    );
    let gw = gateway(&import, &[("jwt-key", "a2V5"), ("audit-token", "t")]).await;
    // Header scheme: the version header picks the API version (and its serviceUrl path)
    for version in ["2024-01", "2024-06"] {
        let r = get(&gw, "/billing/invoices/7", &[("Api-Version", version)]).await;
        assert_eq!(r.status(), 200, "{version}");
        let got = only(&billing);
        assert_eq!(got.path, format!("/{version}/invoices/7"));
        // the global named value, from the folder
        assert_eq!(got.header("x-region"), Some("westeurope"));
    }
    for bad in [&[("Api-Version", "2023-01")][..], &[][..]] {
        let r = get(&gw, "/billing/invoices/7", bad).await;
        assert_eq!(r.status(), 404, "{bad:?}");
    }
    assert_eq!(billing.request_count(), 0);
    // Query scheme
    let r = get(&gw, "/reports/daily?api-version=1.0&day=3", &[]).await;
    assert_eq!(r.status(), 200);
    let got = only(&reports);
    assert_eq!(got.path, "/daily");
    assert_eq!(got.query.as_deref(), Some("api-version=1.0&day=3"));
    let r = get(&gw, "/reports/daily?api-version=2.0", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(reports.request_count(), 0);
    assert_eq!(users.request_count(), 0);
}

#[tokio::test]
async fn contoso_subscription_keys_choose_the_product_policy() {
    let orders = Backend::start().unwrap();
    let orders_v2 = Backend::start().unwrap();
    let other = Backend::start().unwrap();
    let import = import(
        "contoso",
        &[
            format!("https://orders.contoso.com={}", orders.url()),
            format!("https://orders-v2.contoso.com={}", orders_v2.url()),
            format!("http://catalog.contoso.com={}", other.url()),
            format!("https://inventory.contoso.com={}", other.url()),
        ],
    );
    let keys = [
        ("starter-dev", "k-starter"),
        ("orders-only", "k-orders"),
        ("all-access", "k-all"),
        ("unlimited-suspended", "k-suspended"),
    ];
    let gw = gateway_with_keys(&import, &[], &keys).await;
    let key = |k: &'static str| [("Ocp-Apim-Subscription-Key", k)];
    // no key, an unknown key, a suspended subscription's key: refused before any policy
    refused(get(&gw, "/orders/orders/42", &[]).await, MISSING_KEY).await;
    refused(
        get(&gw, "/orders/orders/42", &key("nope")).await,
        INVALID_KEY,
    )
    .await;
    refused(
        get(&gw, "/orders/orders/42", &key("k-suspended")).await,
        INVALID_KEY,
    )
    .await;
    assert_eq!(orders.request_count(), 0);
    // a key of product starter: global -> product (with its fragment) -> API -> operation, each
    // <base /> where it stands: operation's first statement, API's, global, product's, operation's last
    let r = get(&gw, "/orders/orders/42?x=1", &key("k-starter")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-api-out").as_deref(), Some("orders"));
    // the API's <outbound> has no <base />: the global outbound statement does not run
    assert_eq!(header(&r, "x-global-out"), None);
    let got = only(&orders);
    assert_eq!(got.path, "/api/orders/42");
    assert_eq!(got.query.as_deref(), Some("x=1"));
    for (name, value) in [
        ("x-op-before", "before"),
        ("x-api", "orders"),
        ("x-global", "global"),
        ("x-trace", "fragment"),
        ("x-product", "starter"),
        ("x-tier", "gold"),
    ] {
        assert_eq!(got.header(name), Some(value), "{name}: {got:?}");
    }
    // an API-scoped key (in the query) and an all-scoped key: no product policy
    for (path, k) in [
        ("/orders/orders/42?subscription-key=k-orders", None),
        ("/orders/orders/42", Some("k-all")),
    ] {
        let headers: Vec<(&str, &str)> = k
            .map(|k| ("Ocp-Apim-Subscription-Key", k))
            .into_iter()
            .collect();
        let r = get(&gw, path, &headers).await;
        assert_eq!(r.status(), 200, "{path}");
        let got = only(&orders);
        assert_eq!(got.path, "/api/orders/42");
        assert_eq!(got.header("x-product"), None, "{got:?}");
        assert_eq!(got.header("x-trace"), None, "{got:?}");
        assert_eq!(got.header("x-api"), Some("orders"));
        assert_eq!(got.header("x-tier"), Some("gold"));
    }
    // the literal template wins over {id}; its policy has no X-Tier
    let r = get(&gw, "/orders/orders/export", &key("k-starter")).await;
    assert_eq!(r.status(), 200);
    let got = only(&orders);
    assert_eq!(got.path, "/api/orders/export");
    assert_eq!(got.header("x-tier"), None);
    assert_eq!(got.header("x-product"), Some("starter"));
    // the operation's set-backend-service backend-id: the backends/ entry, mapped
    let r = send(&gw, Method::POST, "/orders/orders", &key("k-all")).await;
    assert_eq!(r.status(), 200);
    let got = only(&orders_v2);
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("POST", "/v2/orders")
    );
    assert_eq!(orders.request_count(), 0);
    // starter does not hold inventory: its key opens nothing there; an all-scoped key does
    refused(
        get(&gw, "/inventory/v2/stock/abc", &key("k-starter")).await,
        INVALID_KEY,
    )
    .await;
    let r = get(&gw, "/inventory/v2/stock/abc", &key("k-all")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&other).path, "/v2/stock/abc");
    // an API that requires no subscription ignores a key, even an unknown one
    let r = get(&gw, "/catalog/items", &key("nope")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&other).path, "/items");
}

#[tokio::test]
async fn fabrikam_scopes_token_check_and_product_limit() {
    let users = Backend::start().unwrap();
    let other = Backend::start().unwrap();
    let import = import(
        "fabrikam",
        &[
            format!("https://users.fabrikam.io={}", users.url()),
            format!("https://billing.fabrikam.io={}", other.url()),
            format!("https://reports.fabrikam.io={}", other.url()),
        ],
    );
    let vars = [("jwt-key", JWT_KEY), ("audit-token", "audit-1")];
    let keys = [("gold-sub", "k-gold"), ("free-sub", "k-free")];
    let gw = gateway_with_keys(&import, &vars, &keys).await;
    let bearer = format!("Bearer {}", token());
    // the API names its own key header: APIM's default header is not read
    refused(
        get(
            &gw,
            "/users/users/search",
            &[("Ocp-Apim-Subscription-Key", "k-free")],
        )
        .await,
        MISSING_KEY,
    )
    .await;
    // a key but no token: the API policy's validate-jwt (after <base />) answers
    let r = get(&gw, "/users/users/search", &[("X-Api-Key", "k-free")]).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Unauthorized");
    assert_eq!(users.request_count(), 0);
    // key (in the API's query parameter) and token: global, then API statements; API outbound
    let r = get(
        &gw,
        "/users/users/search?key=k-free",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-users").as_deref(), Some("users"));
    let got = only(&users);
    assert_eq!(got.path, "/users/search");
    assert_eq!(got.header("x-region"), Some("westeurope"));
    assert_eq!(got.header("x-audit"), None);
    // the operation's own rewrite-uri replaces the operation path
    let r = get(
        &gw,
        "/users/users/7",
        &[("X-Api-Key", "k-free"), ("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&users).path, "/v2/users/7");
    // DELETE's <inbound> has no <base />: no token check, no global statement, as in APIM
    let r = send(
        &gw,
        Method::DELETE,
        "/users/users/7",
        &[("X-Api-Key", "k-free")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&users);
    assert_eq!(got.path, "/users/7");
    assert_eq!(got.header("x-delete"), Some("unchecked"));
    assert_eq!(got.header("x-region"), None);
    // a gold key: the product's rate-limit (before <base />) and its fragment with a Key Vault
    // named value given by the environment
    for _ in 0..2 {
        let r = get(
            &gw,
            "/users/users/search",
            &[("X-Api-Key", "k-gold"), ("Authorization", &bearer)],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(only(&users).header("x-audit"), Some("audit-1"));
    }
    let r = get(
        &gw,
        "/users/users/search",
        &[("X-Api-Key", "k-gold"), ("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(users.request_count(), 0);
    // the free product has no policy: no limit
    for _ in 0..3 {
        let r = get(
            &gw,
            "/users/users/search",
            &[("X-Api-Key", "k-free"), ("Authorization", &bearer)],
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(other.request_count(), 0);
}

/// `portcullis run --apiops DIR`: the one command, no intermediate file. The folder is imported in
/// memory (its report on stderr), origins mapped at load, listeners and keys from the flags, the
/// folder's own named values used; the first 401 and 200 of the walk-through in import-apim.md.
#[tokio::test]
async fn run_apiops_serves_the_folder_with_one_command() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let catalog = Backend::start().unwrap();
    let orders = Backend::start().unwrap();
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        keys.path(),
        "# the starter product's key\nstarter-dev = k-starter-file\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--apiops"])
        .arg(folder("contoso"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args([
            "--map-upstream",
            &format!("http://catalog.contoso.com={}", catalog.url()),
        ])
        .args([
            "--map-upstream",
            &format!("https://orders.contoso.com={}", orders.url()),
        ])
        .args([
            "--map-upstream",
            &format!("https://orders-v2.contoso.com={}", orders.url()),
        ])
        .args([
            "--map-upstream",
            &format!("https://inventory.contoso.com={}", orders.url()),
        ])
        .args(["--subscription-key", "all-access=k-all-flag"])
        .arg("--subscription-keys")
        .arg(keys.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    /// Stopped however the test ends.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Stopped(child);
    let banner = crate::support::await_ready(&mut child.0, || "run --apiops".to_owned()).await;
    let client = Client::new();
    let url = |path: &str| format!("{}{path}", banner.proxies);
    let r = client.get(url("/orders/orders")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"statusCode": 401, "message": "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."})
    );
    for key in ["k-starter-file", "k-all-flag"] {
        let r = client
            .get(url("/orders/orders"))
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key}");
        let got = only(&orders);
        assert_eq!(got.path, "/api/orders", "{key}");
    }
    let r = client.get(url("/catalog/items")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(only(&catalog).path, "/items");
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("coverage: 9/9 operations imported"),
        "{stderr}"
    );
    for key in ["k-starter-file", "k-all-flag"] {
        assert!(!stderr.contains(key), "a key in the log:\n{stderr}");
    }
}

/// An export in the extractor's default `rawxml` form: expressions hold raw `"`, `&&`, `<` and `>`
/// as authored in APIM's editor (the global policy is Microsoft's 405 snippet). The folder imports,
/// and the raw-quoted condition decides as APIM would: the gold branch only for a GET with
/// `X-Tier: gold`, every other request answered 403 without reaching the backend.
#[tokio::test]
async fn rawxml_expressions_import_and_decide_through_the_gateway() {
    let echo = Backend::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = tmp.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "policy.xml",
        r#"<policies>
    <inbound><base /></inbound>
    <backend><base /></backend>
    <outbound><base /></outbound>
    <on-error>
        <base />
        <choose>
            <when condition="@(context.LastError.Source == "configuration" && context.Request.Url.Path == "/echo/resource-cached")">
                <return-response><set-status code="405" reason="Method not allowed" /></return-response>
            </when>
            <otherwise />
        </choose>
    </on-error>
</policies>
"#,
    );
    write(
        "apis/echo/apiInformation.json",
        r#"{"properties": {"path": "echo", "serviceUrl": "https://echo.contoso.com", "subscriptionRequired": false, "isCurrent": true}}"#,
    );
    write(
        "apis/echo/specification.yaml",
        "openapi: 3.0.1\npaths:\n  /ping:\n    get:\n      operationId: ping\n    post:\n      operationId: send\n",
    );
    write(
        "apis/echo/policy.xml",
        r#"<policies>
    <inbound>
        <base />
        <choose>
            <when condition="@(context.Request.Headers.GetValueOrDefault("X-Tier","") == "gold" && context.Request.Method == "GET")">
                <set-header name="X-Route" exists-action="override">
                    <value>@(context.Request.Headers.GetValueOrDefault("X-Tier", "none") + "-route")</value>
                </set-header>
            </when>
            <otherwise>
                <return-response>
                    <set-status code="403" reason="Forbidden" />
                </return-response>
            </otherwise>
        </choose>
    </inbound>
    <backend><base /></backend>
    <outbound><base /></outbound>
    <on-error><base /></on-error>
</policies>
"#,
    );
    let options = Options {
        map_upstream: vec![format!("https://echo.contoso.com={}", echo.url())
            .parse()
            .unwrap()],
    };
    let import = apiops::import(tmp.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    let report = import.report.to_string();
    // only the on-error choose is left out (the gateway answers failures itself)
    assert!(
        report.contains("policy.xml:7:9: unsupported choose: on-error is not converted"),
        "{report}"
    );
    assert!(!report.contains("apis/echo/policy.xml:"), "{report}");
    let gw = gateway(&import, &[]).await;
    let r = get(&gw, "/echo/ping", &[("X-Tier", "gold")]).await;
    assert_eq!(r.status(), 200);
    let got = only(&echo);
    assert_eq!(got.path, "/ping");
    assert_eq!(got.header("x-route"), Some("gold-route"));
    for (method, tier) in [
        (Method::GET, None),
        (Method::GET, Some("silver")),
        (Method::GET, Some("Gold")),
        (Method::POST, Some("gold")),
    ] {
        let headers: Vec<(&str, &str)> = tier.map(|t| ("X-Tier", t)).into_iter().collect();
        let r = send(&gw, method.clone(), "/echo/ping", &headers).await;
        assert_eq!(r.status(), 403, "{method} {tier:?}");
    }
    assert_eq!(echo.request_count(), 0);
}

/// A `validate-jwt` under [`JWT_KEY`] requiring `scope` to hold `scope`.
fn scope_check(scope: &str) -> String {
    format!(
        r#"<validate-jwt header-name="Authorization"><issuer-signing-keys><key>{JWT_KEY}</key></issuer-signing-keys><required-claims><claim name="scope" match="any" separator=" "><value>{scope}</value></claim></required-claims></validate-jwt>"#
    )
}

/// Writes an APIOps folder with one API `orders` (path `orders`, upstream
/// `https://orders.example`): `operations` are (method, path, operationId); `policies` are (file
/// below the API folder, XML).
fn orders_folder(
    operations: &[(&str, &str, &str)],
    policies: &[(&str, String)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("apis/orders");
    std::fs::create_dir_all(&api).unwrap();
    let info = json!({"properties": {"displayName": "orders", "path": "orders", "serviceUrl": "https://orders.example", "subscriptionRequired": false, "isCurrent": true, "type": "http"}});
    std::fs::write(api.join("apiInformation.json"), info.to_string()).unwrap();
    let mut paths = serde_json::Map::new();
    for (method, path, id) in operations {
        let ops = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        ops[method.to_ascii_lowercase()] =
            json!({"operationId": id, "responses": {"200": {"description": "ok"}}});
    }
    let spec =
        json!({"openapi": "3.0.1", "info": {"title": "orders", "version": "1"}, "paths": paths});
    std::fs::write(api.join("specification.json"), spec.to_string()).unwrap();
    for (file, xml) in policies {
        let path = api.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, xml).unwrap();
    }
    dir
}

/// Imports an [`orders_folder`] with its upstream mapped to `backend`.
/// The report says the `orders` API's `GET /{op}` was not imported: its policy (line 1 of its
/// file) has checks no one gateway policy enforces together.
#[track_caller]
fn assert_left_out(report: &str, op: &str) {
    let line = format!(
        "unsupported operation: GET /{op}: its policy has checks no one gateway policy enforces \
         together (apis/orders/operations/{op}/policy.xml:1;"
    );
    assert!(report.contains(&line), "{line}\n{report}");
}

fn import_orders(dir: &tempfile::TempDir, backend: &Backend) -> Import {
    let options = Options {
        map_upstream: vec![format!("https://orders.example={}", backend.url())
            .parse()
            .unwrap()],
    };
    apiops::import(dir.path(), &options).unwrap()
}

/// A `choose` on the method with a token check in each branch: each operation gets the check of
/// the branch APIM runs for its method (not the first branch's for every route).
#[tokio::test]
async fn a_choose_on_the_method_gives_each_operation_its_branchs_token_check() {
    let backend = Backend::start().unwrap();
    let policy = format!(
        r#"<policies><inbound><base /><choose><when condition="@(context.Request.Method == &quot;GET&quot;)">{}</when><otherwise>{}</otherwise></choose></inbound><backend><forward-request /></backend></policies>"#,
        scope_check("orders.read"),
        scope_check("orders.write")
    );
    let dir = orders_folder(
        &[("GET", "/orders", "list"), ("POST", "/orders", "create")],
        &[("policy.xml", policy)],
    );
    let import = import_orders(&dir, &backend);
    assert!(import.complete, "{}", import.report);
    let gw = gateway(&import, &[]).await;
    let read = format!("Bearer {}", hs_token(json!({"scope": "orders.read"})));
    let write = format!("Bearer {}", hs_token(json!({"scope": "orders.write"})));
    let auth = |t: &str| [("Authorization", t.to_owned())];
    for (method, token, status) in [
        (Method::POST, &read, 401),
        (Method::POST, &write, 200),
        (Method::GET, &read, 200),
        (Method::GET, &write, 401),
    ] {
        let h = auth(token);
        let r = send(
            &gw,
            method.clone(),
            "/orders/orders",
            &[(h[0].0, h[0].1.as_str())],
        )
        .await;
        assert_eq!(r.status(), status, "{method} with {token}");
    }
    assert_eq!(backend.requests().len(), 2);
}

/// Two token checks in one composed policy (the API's, and the operation's adding a claim) that
/// read the token differently (here: the operation's answers 403): APIM runs both; no one gateway
/// policy does, so the operation is not imported (404), reported.
#[tokio::test]
async fn two_token_checks_in_one_policy_leave_the_operation_out() {
    let backend = Backend::start().unwrap();
    let api = format!(
        "<policies><inbound><base />{}</inbound><backend><forward-request /></backend></policies>",
        scope_check("orders.read")
    );
    let admin = format!(
        "<policies><inbound><base />{}</inbound><backend><base /></backend></policies>",
        scope_check("orders.admin").replace(
            "<validate-jwt ",
            r#"<validate-jwt failed-validation-httpcode="403" "#
        )
    );
    let dir = orders_folder(
        &[("GET", "/orders", "list"), ("GET", "/admin", "admin")],
        &[("policy.xml", api), ("operations/admin/policy.xml", admin)],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let report = import.report.to_string();
    assert!(
        report.contains("apis/orders/operations/admin/policy.xml:1:28: unsupported validate-jwt: a second token check in one policy"),
        "{report}"
    );
    assert_left_out(&report, "admin");
    assert!(!import.yaml.contains("orders.admin"), "{}", import.yaml);
    let gw = gateway(&import, &[]).await;
    let read = format!("Bearer {}", hs_token(json!({"scope": "orders.read"})));
    let r = get(&gw, "/orders/admin", &[("Authorization", &read)]).await;
    assert_eq!(r.status(), 404);
    let r = get(&gw, "/orders/orders", &[("Authorization", &read)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&backend).path, "/orders");
}

/// The API's validate-jwt checks the audience, the admin operation's adds a required role, both
/// on the same token with the same key: merged into one policy for the operation, which refuses a
/// token without the role (401) and passes one with it, as APIM's two checks do; the other
/// operation keeps the API's check alone.
#[tokio::test]
async fn two_token_checks_reading_one_token_alike_merge() {
    let backend = Backend::start().unwrap();
    let check = |rules: &str| {
        format!(
            r#"<validate-jwt header-name="Authorization" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized. Access token is missing or invalid."><issuer-signing-keys><key>{JWT_KEY}</key></issuer-signing-keys>{rules}</validate-jwt>"#
        )
    };
    let api = format!(
        "<policies><inbound><base />{}</inbound><backend><forward-request /></backend></policies>",
        check("<audiences><audience>api://orders</audience></audiences>")
    );
    let admin = format!(
        "<policies><inbound><base />{}</inbound><backend><base /></backend></policies>",
        check(
            r#"<required-claims><claim name="roles" match="any"><value>Orders.Admin</value></claim></required-claims>"#
        )
    );
    let dir = orders_folder(
        &[("GET", "/orders", "list"), ("GET", "/admin", "admin")],
        &[("policy.xml", api), ("operations/admin/policy.xml", admin)],
    );
    let import = import_orders(&dir, &backend);
    let report = import.report.to_string();
    assert!(import.complete, "{report}");
    assert!(
        report.contains(
            "apis/orders/operations/admin/policy.xml:1:28: note validate-jwt: merged into policy"
        ),
        "{report}"
    );
    let gw = gateway(&import, &[]).await;
    let bearer = |claims| format!("Bearer {}", hs_token(claims));
    let user = bearer(json!({"aud": "api://orders", "roles": ["Orders.Read"]}));
    let admin = bearer(json!({"aud": "api://orders", "roles": ["Orders.Read", "Orders.Admin"]}));
    let other_api = bearer(json!({"aud": "api://billing", "roles": ["Orders.Admin"]}));
    for (path, token, status) in [
        ("/orders/admin", &user, 401),
        ("/orders/admin", &other_api, 401),
        ("/orders/admin", &admin, 200),
        ("/orders/orders", &user, 200),
        ("/orders/orders", &other_api, 401),
    ] {
        let r = get(&gw, path, &[("Authorization", token)]).await;
        assert_eq!(r.status(), status, "{path} {token}");
        if status == 401 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                body,
                json!({"statusCode": 401, "message": "Unauthorized. Access token is missing or invalid."})
            );
        }
    }
    let paths: Vec<String> = backend.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/admin", "/orders"]);
}

/// Checks the importer cannot evaluate fail closed: an `ip-filter` allow list whose only address is
/// an expression refuses every caller (403, as the gateway's ip-filter does); inside a `choose`
/// whose condition is not converted, the operation is not imported (404); an overriding
/// `set-header` whose value is not converted removes the client's own copy of the header (APIM
/// always replaces it).
#[tokio::test]
async fn unconvertible_allow_lists_refuse_and_unconvertible_overrides_delete() {
    let backend = Backend::start().unwrap();
    let wrap = |inbound: &str| {
        format!("<policies><inbound><base />{inbound}</inbound><backend><forward-request /></backend></policies>")
    };
    let dir = orders_folder(
        &[
            ("GET", "/expr", "expr"),
            ("GET", "/choose", "choose"),
            ("GET", "/ident", "ident"),
        ],
        &[
            (
                "operations/expr/policy.xml",
                wrap(
                    r#"<ip-filter action="allow"><address>@(context.Variables.GetValueOrDefault&lt;string&gt;("allowed"))</address></ip-filter>"#,
                ),
            ),
            (
                "operations/choose/policy.xml",
                wrap(
                    r#"<choose><when condition="@(context.Request.Url.Path.Contains(&quot;admin&quot;) || true)"><ip-filter action="allow"><address>10.9.9.9</address></ip-filter></when></choose>"#,
                ),
            ),
            (
                "operations/ident/policy.xml",
                wrap(
                    r#"<set-header name="X-Client-Cert-Thumbprint" exists-action="override"><value>@(context.Request.Certificate == null ? "" : context.Request.Certificate.Thumbprint)</value></set-header><set-header name="X-User-Id"><value>@(context.Request.Headers.GetValueOrDefault("Authorization","").AsJwt()?.Claims.GetValueOrDefault("oid", ""))</value></set-header>"#,
                ),
            ),
        ],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let gw = gateway(&import, &[]).await;
    let r = get(&gw, "/orders/expr", &[]).await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"statusCode": 403, "message": "Forbidden"}));
    assert_eq!(get(&gw, "/orders/choose", &[]).await.status(), 404);
    assert!(backend.requests().is_empty());
    let r = get(
        &gw,
        "/orders/ident",
        &[
            ("X-Client-Cert-Thumbprint", "A1B2C3TRUSTEDPARTNER"),
            ("X-User-Id", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let got = only(&backend);
    assert_eq!(got.header("x-client-cert-thumbprint"), None);
    assert_eq!(got.header("x-user-id"), None);
}

/// An API that requires a subscription, in an open product (no subscription required, with a
/// policy of its own) and a protected one: a call without a key runs in the open product's
/// context (APIM: "check first for ... a product that includes the API but doesn't require a
/// subscription"), a key is still checked, and a protected product's key runs its own policy.
#[tokio::test]
async fn a_call_without_a_key_runs_in_the_open_products_context() {
    let backend = Backend::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, text: String| {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "apis/orders/apiInformation.json",
        json!({"properties": {"displayName": "orders", "path": "orders", "serviceUrl": "https://orders.example", "subscriptionRequired": true, "isCurrent": true, "type": "http"}}).to_string(),
    );
    write(
        "apis/orders/specification.json",
        json!({"openapi": "3.0.1", "info": {"title": "orders", "version": "1"}, "paths": {"/orders": {"get": {"operationId": "list", "responses": {"200": {"description": "ok"}}}}}}).to_string(),
    );
    let product_policy = |name: &str| {
        format!(
            r#"<policies><inbound><base /><set-header name="X-Product" exists-action="override"><value>{name}</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#
        )
    };
    for (product, required) in [("free", false), ("gold", true)] {
        write(
            &format!("products/{product}/productInformation.json"),
            json!({"properties": {"displayName": product, "subscriptionRequired": required, "state": "published"}}).to_string(),
        );
        write(
            &format!("products/{product}/apis.json"),
            json!([{"name": "orders"}]).to_string(),
        );
        write(
            &format!("products/{product}/policy.xml"),
            product_policy(product),
        );
    }
    write(
        "subscriptions/gold-dev/subscriptionInformation.json",
        json!({"properties": {"displayName": "gold-dev", "scope": "/products/gold", "state": "active"}}).to_string(),
    );
    let import = import_orders(&dir, &backend);
    assert!(
        import.yaml.contains("open-product: \"free\""),
        "{}",
        import.yaml
    );
    let gw = gateway_with_keys(&import, &[], &[("gold-dev", "k-gold")]).await;
    // no key: the open product's policy
    let r = get(&gw, "/orders/orders", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&backend).header("x-product"), Some("free"));
    // a key is checked all the same: an unknown one is refused before any policy
    refused(
        get(
            &gw,
            "/orders/orders",
            &[("Ocp-Apim-Subscription-Key", "nope")],
        )
        .await,
        INVALID_KEY,
    )
    .await;
    assert_eq!(backend.request_count(), 0);
    // a key of the protected product: its own policy
    let r = get(
        &gw,
        "/orders/orders",
        &[("Ocp-Apim-Subscription-Key", "k-gold")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&backend).header("x-product"), Some("gold"));
}

/// A `choose` whose condition is not converted, holding (at any depth) a statement that refuses or
/// limits requests: leaving it out would let through what APIM refuses, so the operation is not
/// imported (404, reported at the choose); one holding only a request transform is left out with a
/// report and the operation is served.
#[tokio::test]
async fn a_left_out_choose_holding_a_refusal_leaves_the_operation_out() {
    let backend = Backend::start().unwrap();
    let wrap = |inbound: &str| {
        format!("<policies><inbound><base />{inbound}</inbound><backend><forward-request /></backend></policies>")
    };
    let unknown = r#"<when condition="@(context.Request.Url.Path.Contains(&quot;admin&quot;))">"#;
    let dir = orders_folder(
        &[
            ("GET", "/refusing", "refusing"),
            ("GET", "/limited", "limited"),
            ("GET", "/shaping", "shaping"),
        ],
        &[
            (
                "operations/refusing/policy.xml",
                wrap(&format!(
                    r#"<choose><when condition="@(context.Request.Method == &quot;GET&quot;)"><choose>{unknown}<return-response><set-status code="403" reason="Forbidden" /></return-response></when></choose></when></choose>"#
                )),
            ),
            (
                "operations/limited/policy.xml",
                wrap(&format!(
                    r#"<choose>{unknown}<rate-limit-by-key calls="1" renewal-period="60" counter-key="@(context.Request.IpAddress)" /></when></choose>"#
                )),
            ),
            (
                "operations/shaping/policy.xml",
                wrap(&format!(
                    r#"<choose>{unknown}<set-header name="X-Admin" exists-action="skip"><value>yes</value></set-header></when></choose>"#
                )),
            ),
        ],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let report = import.report.to_string();
    for op in ["refusing", "limited"] {
        assert_left_out(&report, op);
    }
    assert!(
        report.contains("operations/shaping/policy.xml:1:28: unsupported choose: left out with the 1 statement(s)"),
        "{report}"
    );
    let gw = gateway(&import, &[]).await;
    for path in ["/orders/refusing", "/orders/limited"] {
        assert_eq!(get(&gw, path, &[]).await.status(), 404, "{path}");
    }
    assert!(backend.requests().is_empty());
    let r = get(&gw, "/orders/shaping", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(only(&backend).path, "/shaping");
}

/// A `set-header` that cannot be read whole is left out, but the copy APIM would replace never
/// passes: the client's `X-Role` (exists-action an expression) never reaches the backend, the
/// backend's `X-Internal-Route` (outbound override of an unconverted value) never reaches the
/// client.
#[tokio::test]
async fn unreadable_set_headers_never_pass_the_copy_apim_replaces() {
    let backend = Backend::start().unwrap();
    backend.set_response_header("X-Internal-Route", "pod-7.internal");
    let policy = r#"<policies><inbound><base /><set-header name="X-Role" exists-action="@(context.Variables.ContainsKey(&quot;r&quot;) ? &quot;skip&quot; : &quot;override&quot;)"><value>user</value></set-header></inbound><backend><forward-request /></backend><outbound><set-header name="X-Internal-Route" exists-action="override"><value>@(context.Deployment.Region)</value></set-header></outbound></policies>"#;
    let dir = orders_folder(
        &[("GET", "/orders", "list")],
        &[("policy.xml", policy.to_owned())],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let gw = gateway(&import, &[]).await;
    let r = get(&gw, "/orders/orders", &[("X-Role", "admin")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-internal-route"), None);
    let got = only(&backend);
    assert_eq!(got.header("x-role"), None);
}

/// A `return-response` that is not converted (its `WWW-Authenticate` value is an expression):
/// APIM answers 401 without the backend, so the operation is not imported (404) rather than
/// forwarded; the other operation is served.
#[tokio::test]
async fn a_return_response_not_converted_leaves_the_operation_out() {
    let backend = Backend::start().unwrap();
    let policy = r#"<policies><inbound><base /><return-response><set-status code="401" reason="Unauthorized" /><set-header name="WWW-Authenticate" exists-action="override"><value>@("Bearer realm=" + context.Api.Name)</value></set-header></return-response></inbound><backend><base /></backend></policies>"#;
    let dir = orders_folder(
        &[("GET", "/legacy", "legacy"), ("GET", "/orders", "list")],
        &[
            (
                "policy.xml",
                "<policies><inbound><base /></inbound><backend><forward-request /></backend></policies>".to_owned(),
            ),
            ("operations/legacy/policy.xml", policy.to_owned()),
        ],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let report = import.report.to_string();
    assert!(
        report.contains("unsupported return-response: not converted: APIM answers here without the backend, so the routes refuse every request"),
        "{report}"
    );
    let gw = gateway(&import, &[]).await;
    assert_eq!(get(&gw, "/orders/legacy", &[]).await.status(), 404);
    assert!(backend.requests().is_empty());
    assert_eq!(get(&gw, "/orders/orders", &[]).await.status(), 200);
    assert_eq!(only(&backend).path, "/orders");
}

/// Statements that refuse requests but are not converted (a check-header without a usable name, a
/// forbid list with an address left out, validate-client-certificate, validate-parameters with
/// action prevent) leave the operation out (404, nothing reaches the backend), where leaving the
/// statement out would let through the requests APIM refuses. A validation that only detects, and
/// an allow list with an entry left out (it only narrows), keep the operation served.
#[tokio::test]
async fn unconverted_access_checks_leave_the_operation_out() {
    let backend = Backend::start().unwrap();
    let wrap = |inbound: &str| {
        format!("<policies><inbound><base />{inbound}</inbound><backend><forward-request /></backend></policies>")
    };
    let ops = [
        (
            "header",
            r#"<check-header name="@(&quot;X-Key&quot;)" failed-check-httpcode="401" failed-check-error-message="no"><value>k</value></check-header>"#,
        ),
        (
            "forbid",
            r#"<ip-filter action="forbid"><address>10.9.9.9</address><address>@(context.Variables.GetValueOrDefault&lt;string&gt;(&quot;blocked&quot;))</address></ip-filter>"#,
        ),
        (
            "cert",
            r#"<validate-client-certificate validate-revocation="true" validate-trust="true" />"#,
        ),
        (
            "params",
            r#"<validate-parameters specified-parameter-action="prevent" unspecified-parameter-action="prevent" />"#,
        ),
        (
            "detect",
            r#"<validate-parameters specified-parameter-action="detect" unspecified-parameter-action="ignore" />"#,
        ),
        (
            "allow",
            r#"<ip-filter action="allow"><address>127.0.0.1</address><address>::1</address><address>@(&quot;10.0.0.1&quot;)</address></ip-filter>"#,
        ),
    ];
    let specs: Vec<(&str, String, &str)> = ops
        .iter()
        .map(|(op, _)| ("GET", format!("/{op}"), *op))
        .collect();
    let specs: Vec<(&str, &str, &str)> =
        specs.iter().map(|(m, p, o)| (*m, p.as_str(), *o)).collect();
    let files: Vec<(String, String)> = ops
        .iter()
        .map(|(op, s)| (format!("operations/{op}/policy.xml"), wrap(s)))
        .collect();
    let files: Vec<(&str, String)> = files.iter().map(|(f, x)| (f.as_str(), x.clone())).collect();
    let dir = orders_folder(&specs, &files);
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let report = import.report.to_string();
    for op in ["header", "forbid", "cert", "params"] {
        assert_left_out(&report, op);
    }
    assert!(
        report.contains("unsupported validate-client-certificate: no gateway.yaml equivalent, and APIM refuses the requests that fail it"),
        "{report}"
    );
    let gw = gateway(&import, &[]).await;
    for op in ["header", "forbid", "cert", "params"] {
        let path = format!("/orders/{op}");
        let r = get(&gw, &path, &[("X-Key", "k")]).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    assert!(backend.requests().is_empty());
    for op in ["detect", "allow"] {
        let path = format!("/orders/{op}");
        assert_eq!(get(&gw, &path, &[]).await.status(), 200, "{path}");
    }
    assert_eq!(backend.requests().len(), 2);
}

/// An overriding `set-query-parameter` whose value is not converted removes the client's own copy
/// of the parameter (APIM always replaces it), keeping the rest of the query; one whose name is an
/// expression leaves the operation out (404).
#[tokio::test]
async fn unconverted_query_overrides_never_pass_the_clients_copy() {
    let backend = Backend::start().unwrap();
    let wrap = |inbound: &str| {
        format!("<policies><inbound><base />{inbound}</inbound><backend><forward-request /></backend></policies>")
    };
    let dir = orders_folder(
        &[("GET", "/value", "value"), ("GET", "/name", "name")],
        &[
            (
                "operations/value/policy.xml",
                wrap(
                    r#"<set-query-parameter name="tenant" exists-action="override"><value>@(context.Request.Body.As&lt;string&gt;())</value></set-query-parameter>"#,
                ),
            ),
            (
                "operations/name/policy.xml",
                wrap(
                    r#"<set-query-parameter name="@((string)context.Variables[&quot;q&quot;])" exists-action="override"><value>1</value></set-query-parameter>"#,
                ),
            ),
        ],
    );
    let import = import_orders(&dir, &backend);
    assert!(!import.complete);
    let gw = gateway(&import, &[]).await;
    assert_eq!(
        get(&gw, "/orders/name?tenant=evil", &[]).await.status(),
        404
    );
    assert!(backend.requests().is_empty());
    let r = get(&gw, "/orders/value?tenant=evil&page=2&tenant=x", &[]).await;
    assert_eq!(r.status(), 200);
    let got = only(&backend);
    assert_eq!(got.path, "/value");
    assert_eq!(got.query.as_deref(), Some("page=2"));
}
