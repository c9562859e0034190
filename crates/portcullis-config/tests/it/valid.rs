//! Every valid construct and every default, read back from the model.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_auth::{KeyFamily, Match, TokenSource};
use portcullis_config::{KeyLifecycle, KeySource, Model, Severity};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

fn vars(name: &str) -> Option<String> {
    match name {
        "IDP" => Some("http://127.0.0.1:8081/realm".into()),
        "CODE" => Some("403".into()),
        "TENANT_ID" => Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        _ => None,
    }
}

const SERVER: &str = "server:\n  listen: \"127.0.0.1:8080\"\n";

fn route(policy: &str) -> String {
    format!("routes:\n  - name: r\n    upstream: http://127.0.0.1:3000\n    policy: {policy}\n")
}

/// Loads `yaml` as `dir/gateway.yaml`; panics with the diagnostics when invalid.
fn load_in(dir: &Path, yaml: &str) -> (Model, Vec<portcullis_config::Diagnostic>) {
    let path = dir.join("gateway.yaml");
    match portcullis_config::load_str_with(yaml, &path, &vars) {
        Ok(ok) => ok,
        Err(diags) => panic!("invalid:\n{}\n{yaml}", crate::render(&diags)),
    }
}

fn load_ok(yaml: &str) -> (Model, Vec<portcullis_config::Diagnostic>) {
    load_in(Path::new("/nonexistent"), yaml)
}

fn policy_yaml(body: &str) -> String {
    format!("{SERVER}policies:\n  p:\n{body}{}", route("p"))
}

#[test]
fn minimal_config_gets_every_default() {
    let (m, warnings) = load_ok(&format!("{SERVER}{}", route("none")));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(m.server.listen.len(), 1);
    assert_eq!(m.server.listen[0].addr, "127.0.0.1:8080");
    assert!(m.server.listen[0].tls.is_empty());
    assert_eq!(m.server.admin, None);
    assert_eq!(m.server.token_cache_max_entries, 100_000);
    assert_eq!(m.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(m.server.threads, None);
    assert!(
        !m.server.work_stealing,
        "each worker keeps its connections unless asked"
    );
    let r = &m.routes[0];
    assert_eq!(r.name, "r");
    assert_eq!(
        (
            r.matcher.host.as_deref(),
            r.matcher.path.as_deref(),
            r.matcher.path_prefix.as_deref()
        ),
        (None, None, None)
    );
    assert!(r.matcher.methods.is_empty());
    assert_eq!(r.policy, None);
    assert_eq!(r.timeout, Duration::from_secs(30));
    assert_eq!(r.connect_timeout, Duration::from_secs(5));
    assert!(!r.strip_prefix);
    assert_eq!(r.rewrite_prefix, None);
    let u = &r.upstreams[0];
    assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 3000, false));
}

#[test]
fn tls_takes_one_certificate_or_a_list() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.cert.pem()).unwrap();
        let key = cert.signing_key.serialize_pem();
        std::fs::write(dir.path().join(format!("{name}-key.pem")), key).unwrap();
    }
    let yaml = format!(
        "server:\n  listen:\n    - {{ addr: \"127.0.0.1:0\", tls: [{{ cert: a.pem, key: a-key.pem }}, {{ cert: b.pem, key: b-key.pem }}] }}\n{}",
        route("none")
    );
    let (m, _) = load_in(dir.path(), &yaml);
    let files: Vec<_> = m.server.listen[0]
        .tls
        .iter()
        .map(|t| t.cert.clone())
        .collect();
    assert_eq!(files, [dir.path().join("a.pem"), dir.path().join("b.pem")]);

    let empty = format!(
        "server:\n  listen:\n    - {{ addr: \"127.0.0.1:0\", tls: [] }}\n{}",
        route("none")
    );
    let diags = portcullis_config::load_str_with(&empty, &dir.path().join("g.yaml"), &vars)
        .map(drop)
        .unwrap_err();
    let text = crate::render(&diags);
    assert!(
        text.contains("g.yaml:3:35: error: `tls` lists no certificate"),
        "{text}"
    );
}

#[test]
fn server_block_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("tls.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("tls-key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let yaml = format!(
        "server:\n  listen:\n    - 127.0.0.1:0\n    - \"[::1]:8080\"\n    - {{ addr: \"0.0.0.0:8443\", tls: {{ cert: tls.pem, key: tls-key.pem }} }}\n  admin: 127.0.0.1:9901\n  token-cache: {{ max-entries: 0 }}\n  shutdown-grace: 500ms\n  threads: 2\n  work-stealing: true\n{}",
        route("none")
    );
    let (m, _) = load_in(dir.path(), &yaml);
    let addrs: Vec<&str> = m.server.listen.iter().map(|l| l.addr.as_str()).collect();
    assert_eq!(addrs, ["127.0.0.1:0", "[::1]:8080", "0.0.0.0:8443"]);
    let tls = &m.server.listen[2].tls[0];
    assert_eq!(tls.cert, dir.path().join("tls.pem"));
    assert_eq!(tls.key, dir.path().join("tls-key.pem"));
    assert_eq!(m.server.admin.as_deref(), Some("127.0.0.1:9901"));
    assert_eq!(m.server.token_cache_max_entries, 0);
    assert_eq!(m.server.shutdown_grace, Duration::from_millis(500));
    assert_eq!(m.server.threads, Some(2));
    assert!(m.server.work_stealing);
}

#[test]
fn rate_limit_store_redis_with_knobs_and_the_fail_open_warning() {
    use portcullis_config::{RateLimitStore, RedisStore, StoreFailure};
    let (m, _) = load_ok(&format!("{SERVER}{}", route("none")));
    assert_eq!(m.server.rate_limit_store, RateLimitStore::InProcess);

    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  rate-limit-store: redis://:s3cret@10.0.0.5/2\n{}",
        route("none")
    );
    let (m, warnings) = load_ok(&yaml);
    assert_eq!(
        m.server.rate_limit_store,
        RateLimitStore::Redis(RedisStore {
            url: "redis://:s3cret@10.0.0.5/2".into(),
            display: "redis://:***@10.0.0.5:6379/2".into(),
            failure: StoreFailure::Open,
            timeout: Duration::from_millis(100),
            pool_size: 4,
        })
    );
    // Fail-open (the default) is a warning where the store is named.
    let rendered = crate::render(&warnings);
    assert!(
        rendered
            .contains("gateway.yaml:3:21: warning: rate-limit-store-failure: open (the default)"),
        "{rendered}"
    );

    let yaml = format!(
        "server:\n  listen: 127.0.0.1:0\n  rate-limit-store: redis://127.0.0.1:6380\n  rate-limit-store-failure: closed\n  rate-limit-store-timeout: 250ms\n  rate-limit-store-pool-size: 8\n{}",
        route("none")
    );
    let (m, warnings) = load_ok(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let RateLimitStore::Redis(store) = m.server.rate_limit_store else {
        panic!("not redis");
    };
    assert_eq!(store.display, "redis://127.0.0.1:6380");
    assert_eq!(store.failure, StoreFailure::Closed);
    assert_eq!(store.timeout, Duration::from_millis(250));
    assert_eq!(store.pool_size, 8);
}

/// The diagnostics of an invalid `yaml`, rendered.
fn refused(yaml: &str) -> String {
    crate::render(&portcullis_config::load_str_with(yaml, Path::new("g.yaml"), &vars).unwrap_err())
}

#[test]
fn rate_limit_store_knobs_need_a_redis_store() {
    for store in ["", "  rate-limit-store: in-process\n"] {
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n{store}  rate-limit-store-failure: closed\n{}",
            route("none")
        );
        let rendered = refused(&yaml);
        assert!(
            rendered.contains("`rate-limit-store-failure` needs a Redis store"),
            "{rendered}"
        );
    }
    for bad in [
        "http://cache:6379",
        "redis://",
        "redis://cache/zero",
        "redis://cache?db=1",
    ] {
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n  rate-limit-store: \"{bad}\"\n{}",
            route("none")
        );
        let rendered = refused(&yaml);
        assert!(
            rendered.contains("g.yaml:3:21: error: `rate-limit-store` must be"),
            "{bad}: {rendered}"
        );
    }
}

#[test]
fn validate_jwt_defaults_follow_apim() {
    let (m, _) = load_ok(&policy_yaml(
        "    validate-jwt:\n      openid-config: [{ url: \"https://idp.example/.well-known/openid-configuration\" }]\n      audiences: [api://a]\n",
    ));
    let pm = &m.policies[0];
    let p = &pm.policy;
    assert_eq!(p.name, "p");
    assert_eq!(
        p.token_source,
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            require_scheme: None
        }
    );
    assert!(p.require_expiration_time && p.require_signed_tokens && p.forward_token);
    assert!(!p.report_only);
    assert_eq!(p.clock_skew, 0);
    assert_eq!(p.failed_validation_httpcode, 401);
    assert_eq!(p.failed_validation_error_message, None);
    assert_eq!(p.insufficient_scope_httpcode, None);
    assert!(p.issuers.is_empty() && p.required_claims.is_empty());
    assert!(p.scopes.is_none() && p.roles.is_none() && p.forward_claims.is_empty());
    let KeySource::OpenIdConfig { url, lifecycle, .. } = &pm.key_sources[0] else {
        panic!()
    };
    assert_eq!(url, "https://idp.example/.well-known/openid-configuration");
    assert_eq!(*lifecycle, KeyLifecycle::default());
    assert_eq!(lifecycle.unknown_kid_cooldown, Duration::from_secs(30));
    assert_eq!(lifecycle.refresh_interval, Duration::from_secs(3600));
    assert_eq!(lifecycle.max_stale, Duration::from_secs(86400));
    assert_eq!(m.routes[0].policy.as_deref(), Some("p"));
}

#[test]
fn validate_jwt_every_attribute() {
    let (m, warnings) = load_ok(&policy_yaml(
        r#"    validate-jwt:
      header-name: Authorization
      require-scheme: Bearer
      failed-validation-httpcode: "{{CODE}}"
      failed-validation-error-message: "Unauthorized. Access token is missing or invalid."
      require-expiration-time: true
      require-signed-tokens: true
      clock-skew: 2m
      openid-config:
        - url: "{{IDP}}/.well-known/openid-configuration"
          max-stale: 1h
      unknown-kid-cooldown: 10s
      refresh-interval: 120
      issuer-signing-keys:
        - jwks-uri: http://127.0.0.1:8081/jwks
          unknown-kid-cooldown: 1s
      audiences: [api://orders, "00000000-0000-0000-0000-000000000001"]
      issuers: ["http://127.0.0.1:8081/realm"]
      required-claims:
        - { name: tid, values: [tenant-a] }
        - { name: groups, match: any, separator: ",", values: [a, b] }
        - { name: "http://schemas.microsoft.com/ws/2008/06/identity/claims/role" }
        - { name: scp, separator: " ", values: [orders.read] }
    scopes: { values: [orders.read, orders.write] }
    roles: { match: any, values: [admin], claim: realm_access.roles }
    forward-claims:
      X-User-Id: sub
      X-Tenant-Id: tid
    mode: enforce
    insufficient-scope-httpcode: 403
    forward-token: false
"#,
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    let pm = &m.policies[0];
    let p = &pm.policy;
    assert_eq!(
        p.token_source,
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            require_scheme: Some("Bearer".into())
        }
    );
    assert_eq!(p.failed_validation_httpcode, 403);
    assert_eq!(
        p.failed_validation_error_message.as_deref(),
        Some("Unauthorized. Access token is missing or invalid.")
    );
    assert_eq!(p.clock_skew, 120);
    assert_eq!(
        p.audiences,
        ["api://orders", "00000000-0000-0000-0000-000000000001"]
    );
    assert_eq!(p.issuers, ["http://127.0.0.1:8081/realm"]);
    assert_eq!(p.required_claims.len(), 4);
    assert_eq!(p.required_claims[0].r#match, Match::All);
    assert_eq!(p.required_claims[1].r#match, Match::Any);
    assert_eq!(p.required_claims[1].separator.as_deref(), Some(","));
    assert!(p.required_claims[2].values.is_empty());
    // A space is a delimiter like any other (APIM's scp claims are space-separated).
    assert_eq!(p.required_claims[3].separator.as_deref(), Some(" "));
    let scopes = p.scopes.as_ref().unwrap();
    assert_eq!((scopes.r#match, scopes.values.len()), (Match::All, 2));
    let roles = p.roles.as_ref().unwrap();
    assert_eq!(
        (roles.r#match, roles.claim.as_str()),
        (Match::Any, "realm_access.roles")
    );
    let headers: Vec<(&str, &str)> = p
        .forward_claims
        .iter()
        .map(|(h, c)| (h.as_str(), c.as_str()))
        .collect();
    assert_eq!(headers, [("x-user-id", "sub"), ("x-tenant-id", "tid")]);
    assert_eq!(p.insufficient_scope_httpcode, Some(403));
    assert!(!p.forward_token);
    let KeySource::OpenIdConfig { url, lifecycle, .. } = &pm.key_sources[0] else {
        panic!()
    };
    assert_eq!(
        url,
        "http://127.0.0.1:8081/realm/.well-known/openid-configuration"
    );
    let policy_level = KeyLifecycle {
        unknown_kid_cooldown: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(120),
        max_stale: Duration::from_secs(86400),
        ..KeyLifecycle::default()
    };
    assert_eq!(
        *lifecycle,
        KeyLifecycle {
            max_stale: Duration::from_secs(3600),
            ..policy_level
        }
    );
    let KeySource::JwksUri { url, lifecycle } = &pm.key_sources[1] else {
        panic!()
    };
    assert_eq!(url, "http://127.0.0.1:8081/jwks");
    assert_eq!(
        *lifecycle,
        KeyLifecycle {
            unknown_kid_cooldown: Duration::from_secs(1),
            ..policy_level
        }
    );
}

#[test]
fn token_sources() {
    let keys =
        "      openid-config: [{ url: \"https://idp.example/oidc\" }]\n      audiences: [a]\n";
    let (m, _) = load_ok(&policy_yaml(&format!(
        "    validate-jwt:\n      query-parameter-name: access_token\n{keys}"
    )));
    assert_eq!(
        m.policies[0].policy.token_source,
        TokenSource::Query {
            name: "access_token".into()
        }
    );
    let (m, w) = load_ok(&policy_yaml(&format!(
        "    validate-jwt:\n      header-name: X-Api-Token\n      require-scheme: Bearer\n{keys}"
    )));
    assert_eq!(
        m.policies[0].policy.token_source,
        TokenSource::Header {
            name: http::HeaderName::from_static("x-api-token"),
            require_scheme: Some("Bearer".into())
        }
    );
    assert!(w[0].message.contains("require-scheme is ignored"), "{w:?}");
}

#[test]
fn clock_skew_forms() {
    for (text, secs) in [
        ("0", 0),
        ("30", 30),
        ("\"45\"", 45),
        ("1m", 60),
        ("\"1h 1s\"", 3601),
    ] {
        let (m, _) = load_ok(&policy_yaml(&format!(
            "    validate-jwt:\n      clock-skew: {text}\n      openid-config: [{{ url: \"https://i.example/o\" }}]\n      audiences: [a]\n"
        )));
        assert_eq!(m.policies[0].policy.clock_skew, secs, "{text}");
    }
}

/// An RSA public key as base64url (n, e), taken from a freshly generated key.
fn rsa_components(key: &rcgen::KeyPair) -> (String, String) {
    let der = rcgen::PublicKeyData::subject_public_key_info(key);
    let (_, spki) = SubjectPublicKeyInfo::from_der(&der).unwrap();
    let PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("not RSA")
    };
    let trim = |b: &[u8]| URL_SAFE_NO_PAD.encode(b.strip_prefix(&[0u8]).unwrap_or(b));
    (trim(rsa.modulus), trim(rsa.exponent))
}

#[test]
fn static_key_sources_are_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let (n, e) = rsa_components(&rsa);
    let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"file-1","n":"{n}","e":"{e}"}}]}}"#);
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/jwks.json"), jwks).unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["signer".into()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    std::fs::write(dir.path().join("keys/signer.pem"), cert.pem()).unwrap();
    let yaml = policy_yaml(&format!(
        r#"    validate-jwt:
      issuers: [https://sts.example/]
      issuer-signing-keys:
        - jwks-file: keys/jwks.json
        - {{ id: inline-1, n: "{n}", e: "{e}" }}
        - certificate-file: keys/signer.pem
        - {{ id: hmac-1, base64: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=" }}
"#
    ));
    let (m, warnings) = load_in(dir.path(), &yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let families: Vec<(String, Option<String>, KeyFamily)> = m.policies[0]
        .key_sources
        .iter()
        .flat_map(|s| {
            let KeySource::Static { label, keys } = s else {
                panic!("{s:?}")
            };
            keys.iter()
                .map(|k| (label.clone(), k.kid.clone(), k.family))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        families[0],
        (
            "jwks-file keys/jwks.json".into(),
            Some("file-1".into()),
            KeyFamily::Rsa
        )
    );
    assert_eq!(
        families[1],
        (
            "inline n/e kid=inline-1".into(),
            Some("inline-1".into()),
            KeyFamily::Rsa
        )
    );
    assert_eq!(families[2].2, KeyFamily::EcP256);
    assert_eq!(
        families[3],
        (
            "base64 secret kid=hmac-1".into(),
            Some("hmac-1".into()),
            KeyFamily::Hmac
        )
    );
    for (label, _, _) in &families {
        assert!(!label.contains("c2VjcmV0"), "secret in label {label}");
    }
}

#[test]
fn azure_ad_single_tenant_expands_to_discovery_and_both_issuers() {
    let (m, w) = load_ok(&policy_yaml(
        r#"    validate-azure-ad-token:
      tenant-id: "{{TENANT_ID}}"
      client-application-ids: [11111111-1111-1111-1111-111111111111]
      backend-application-ids: [22222222-2222-2222-2222-222222222222]
      audiences: [api://orders]
      required-claims: [{ name: tid, values: ["72f988bf-86f1-41af-91ab-2d7cd011db47"] }]
      failed-validation-httpcode: 403
      failed-validation-error-message: nope
      query-parameter-name: token
    scopes: { values: [orders.read] }
    forward-token: false
"#,
    ));
    assert!(w.is_empty(), "{w:?}");
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let pm = &m.policies[0];
    let p = &pm.policy;
    assert_eq!(
        p.issuers,
        [
            format!("https://sts.windows.net/{tid}/"),
            format!("https://login.microsoftonline.com/{tid}/v2.0")
        ]
    );
    assert_eq!(
        p.audiences,
        ["22222222-2222-2222-2222-222222222222", "api://orders"]
    );
    assert_eq!(
        p.client_application_ids,
        ["11111111-1111-1111-1111-111111111111"]
    );
    assert_eq!(p.required_claims.len(), 1);
    assert_eq!(p.failed_validation_httpcode, 403);
    assert_eq!(
        p.token_source,
        TokenSource::Query {
            name: "token".into()
        }
    );
    assert!(p.scopes.is_some());
    let KeySource::OpenIdConfig { url, .. } = &pm.key_sources[0] else {
        panic!()
    };
    assert_eq!(
        url,
        &format!("https://login.microsoftonline.com/{tid}/v2.0/.well-known/openid-configuration")
    );
}

#[test]
fn azure_ad_authority_override_and_default_header() {
    let (m, w) = load_ok(&policy_yaml(
        "    validate-azure-ad-token:\n      tenant-id: 72F988BF-86F1-41AF-91AB-2D7CD011DB47\n      authority: http://127.0.0.1:8081/\n      audiences: [api://orders]\n      output-token-variable-name: jwt\n",
    ));
    assert!(
        w[0].message
            .contains("output-token-variable-name is ignored"),
        "{w:?}"
    );
    let p = &m.policies[0].policy;
    // Another authority: no issuer is assumed, both discovery documents name them.
    assert!(p.issuers.is_empty(), "{:?}", p.issuers);
    assert_eq!(
        p.token_source,
        TokenSource::Header {
            name: http::header::AUTHORIZATION,
            require_scheme: None
        }
    );
    // Entra's tenant ids are lower case in its URLs.
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let urls: Vec<_> = m.policies[0]
        .key_sources
        .iter()
        .map(|s| match s {
            KeySource::OpenIdConfig { url, issuers, .. } => {
                assert!(issuers.is_empty(), "{issuers:?}");
                url.clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        urls,
        [
            format!("http://127.0.0.1:8081/{tid}/.well-known/openid-configuration"),
            format!("http://127.0.0.1:8081/{tid}/v2.0/.well-known/openid-configuration")
        ]
    );
}

#[test]
fn azure_ad_multi_tenant_checks_the_issuer_template_and_warns_without_tenants() {
    let (m, w) = load_ok(&policy_yaml(
        "    validate-azure-ad-token:\n      tenant-id: organizations\n      client-application-ids: [11111111-1111-1111-1111-111111111111]\n",
    ));
    let templates = [
        "https://sts.windows.net/{tenantid}/",
        "https://login.microsoftonline.com/{tenantid}/v2.0",
    ];
    assert_eq!(m.policies[0].policy.issuers, templates);
    assert!(m.policies[0].policy.tenants.is_empty());
    let KeySource::OpenIdConfig { url, issuers, .. } = &m.policies[0].key_sources[0] else {
        panic!()
    };
    assert_eq!(
        url,
        "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
    );
    assert_eq!(
        issuers, &templates,
        "the document's keys speak for the templates"
    );
    assert!(
        w.iter()
            .any(|d| d.message.contains("list the tenants you serve")),
        "{w:?}"
    );
    // With `tenants` (upper case in the file, lower-cased as Entra writes tid): no warning.
    let (m, w) = load_ok(&policy_yaml(
        "    validate-azure-ad-token:\n      tenant-id: common\n      audiences: [api://a]\n      tenants: [72F988BF-86F1-41AF-91AB-2D7CD011DB47]\n",
    ));
    assert_eq!(
        m.policies[0].policy.tenants,
        ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
    );
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn routes_every_key() {
    let (m, w) = load_ok(&format!(
        r#"{SERVER}routes:
  - name: orders
    match: {{ host: API.Local, path-prefix: /api/orders, methods: [GET, POST] }}
    upstreams: ["http://127.0.0.1:3000", "https://backend.internal"]
    timeout: 2s
    connect-timeout: 250ms
    strip-prefix: true
    rewrite-prefix: /v1/orders
    policy: none
  - name: exact
    match: {{ path: /health, path-prefix: /health }}
    upstream: http://[::1]:3001
    policy: none
"#
    ));
    assert!(w.is_empty(), "{w:?}");
    let r = &m.routes[0];
    assert_eq!(r.matcher.host.as_deref(), Some("api.local"));
    assert_eq!(r.matcher.path_prefix.as_deref(), Some("/api/orders"));
    assert_eq!(r.matcher.methods, [http::Method::GET, http::Method::POST]);
    assert_eq!(r.upstreams.len(), 2);
    assert_eq!(
        (
            r.upstreams[1].host.as_str(),
            r.upstreams[1].port,
            r.upstreams[1].tls
        ),
        ("backend.internal", 443, true)
    );
    assert_eq!(r.timeout, Duration::from_secs(2));
    assert_eq!(r.connect_timeout, Duration::from_millis(250));
    assert!(r.strip_prefix);
    assert_eq!(r.rewrite_prefix.as_deref(), Some("/v1/orders"));
    assert_eq!(m.routes[1].matcher.path.as_deref(), Some("/health"));
    assert_eq!(m.routes[1].upstreams[0].host, "[::1]");
}

#[test]
fn shadowed_route_is_an_error_with_both_lines() {
    let yaml = format!(
        "{SERVER}routes:\n  - {{ name: a, match: {{ host: a.local }}, upstream: \"http://127.0.0.1:1\", policy: none }}\n  - {{ name: b, match: {{ path-prefix: /x }}, upstream: \"http://127.0.0.1:1\", policy: none }}\n  - {{ name: c, match: {{ path-prefix: /x/y, methods: [GET] }}, upstream: \"http://127.0.0.1:1\", policy: none }}\n"
    );
    let diags = portcullis_config::load_str_with(&yaml, Path::new("g.yaml"), &vars).unwrap_err();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].severity, Severity::Error);
    assert_eq!(diags[0].line, 6);
    assert!(diags[0].message.contains("route `b` (line 5)"), "{diags:?}");
}

#[test]
fn named_values_fall_back_to_env_style_names() {
    let lookup = |name: &str| (name == "MY_IDP_URL").then(|| "https://idp.example".to_owned());
    let yaml = policy_yaml(
        "    validate-jwt:\n      openid-config: [{ url: \"{{my-idp.url}}/oidc\" }]\n      audiences: [a]\n",
    );
    let (m, _) = portcullis_config::load_str_with(&yaml, Path::new("g.yaml"), &lookup).unwrap();
    let KeySource::OpenIdConfig { url, .. } = &m.policies[0].key_sources[0] else {
        panic!()
    };
    assert_eq!(url, "https://idp.example/oidc");
}

#[test]
fn load_reads_the_environment_for_named_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  listen: \"127.0.0.1:{{{{PORTCULLIS_CONFIG_IT_PORT}}}}\"\n{}",
            route("none")
        ),
    )
    .unwrap();
    std::env::set_var("PORTCULLIS_CONFIG_IT_PORT", "18080");
    let (m, _) = portcullis_config::load(&path).unwrap();
    assert_eq!(m.server.listen[0].addr, "127.0.0.1:18080");
}

#[test]
fn unreadable_file_is_one_diagnostic() {
    let diags = portcullis_config::load(Path::new("/nonexistent/gateway.yaml")).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert!(diags[0]
        .to_string()
        .starts_with("/nonexistent/gateway.yaml:0:0: error: cannot read config"));
}

#[test]
fn trusted_proxies_are_addresses_or_ranges() {
    let server = |list: &str| {
        format!(
            "server:\n  listen: 127.0.0.1:8080\n  trusted-proxies: {list}\n{}",
            route("none")
        )
    };
    let (m, w) = load_ok(&server(
        "[10.0.0.0/8, \"::1\", 192.168.1.7, \"2001:db8::/32\"]",
    ));
    assert!(w.is_empty(), "{w:?}");
    let nets = &m.server.trusted_proxies;
    assert_eq!(nets.len(), 4);
    assert!(nets[0].contains("10.200.0.1".parse().unwrap()));
    assert!(!nets[0].contains("11.0.0.1".parse().unwrap()));
    assert!(nets[1].contains("::1".parse().unwrap()));
    assert!(nets[2].contains("::ffff:192.168.1.7".parse().unwrap()));
    assert!(!nets[2].contains("192.168.1.8".parse().unwrap()));
    assert!(nets[3].contains("2001:db8:1::5".parse().unwrap()));
    assert!(!nets[3].contains("10.0.0.1".parse().unwrap()));
    let (m, w) = load_ok(&server("[0.0.0.0/0]"));
    assert!(m.server.trusted_proxies[0].contains("8.8.8.8".parse().unwrap()));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].message.contains("trusts every client"), "{w:?}");
    let diags = portcullis_config::load_str_with(
        &server("[10.0.0.0/33, proxy.local, \"\"]"),
        Path::new("g.yaml"),
        &vars,
    )
    .unwrap_err();
    let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("`10.0.0.0/33` is not an IP address or CIDR range"));
    assert!(messages[1].contains("`proxy.local` is not an IP address or CIDR range"));
}

#[test]
fn ip_filter_and_check_header_read_back_in_their_place() {
    use portcullis_config::{HeaderCheck, IpNet, Statement};
    use std::net::IpAddr;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // Keyed form: fixed order ip-filter, cors, check-header, validate-jwt.
    let (m, _) = load_ok(&policy_yaml(
        "    check-header: { name: X-Tenant, values: [a, B], ignore-case: true, failed-check-httpcode: 401, failed-check-error-message: nope }\n    cors: { allowed-origins: [\"https://a.example\"] }\n    ip-filter:\n      action: forbid\n      addresses: [\"10.0.0.1\", \"2001:db8::/32\"]\n      address-ranges: [{ from: 192.0.2.10, to: 192.0.2.20 }, { from: \"fe80::1\", to: \"fe80::ff\" }]\n    validate-jwt:\n      openid-config: [{ url: \"https://idp.example/.well-known/openid-configuration\" }]\n      audiences: [api://orders]\n",
    ));
    let inbound = &m.policies[0].inbound;
    let kinds: Vec<&str> = inbound
        .iter()
        .map(|s| match s {
            Statement::Limit(_) => "limit",
            other => other.element(),
        })
        .collect();
    assert_eq!(kinds, ["ip-filter", "cors", "check-header", "validate-jwt"]);
    let Statement::IpFilter(f) = &inbound[0] else {
        panic!()
    };
    assert!(!f.allow);
    assert_eq!(f.addresses[1], IpNet::parse("2001:db8::/32").unwrap());
    for (listed, addr) in [
        (true, "10.0.0.1"),
        (false, "10.0.0.2"),
        (true, "::ffff:10.0.0.1"),
        (true, "2001:db8:1::5"),
        (true, "192.0.2.10"),
        (true, "192.0.2.20"),
        (false, "192.0.2.21"),
        (false, "192.0.2.9"),
        (true, "fe80::80"),
        (false, "fe80::100"),
    ] {
        assert_eq!(f.lists(ip(addr)), listed, "{addr}");
        assert_eq!(f.permits(Some(ip(addr))), !listed, "{addr}");
    }
    assert!(f.permits(None), "forbid: an unknown address is not listed");
    let Statement::CheckHeader(c) = &inbound[2] else {
        panic!()
    };
    assert_eq!(c.name.as_str(), "x-tenant");
    assert_eq!(
        (
            c.failed_check_httpcode,
            c.failed_check_error_message.as_str()
        ),
        (401, "nope")
    );
    let headers = |v: &[&str]| {
        let mut h = http::HeaderMap::new();
        for v in v {
            h.append("x-tenant", v.parse().unwrap());
        }
        h
    };
    assert_eq!(c.check(&headers(&[])), HeaderCheck::NotFound);
    assert_eq!(c.check(&headers(&["b"])), HeaderCheck::Passed);
    assert_eq!(c.check(&headers(&["c", "A"])), HeaderCheck::Passed);
    assert_eq!(c.check(&headers(&["c"])), HeaderCheck::ValueNotAllowed);

    // Ordered form: list order, and allow with no address known refuses.
    let (m, _) = load_ok(&policy_yaml(
        "    inbound:\n      - check-header: { name: x-a, failed-check-httpcode: 400, failed-check-error-message: m }\n      - ip-filter: { action: allow, addresses: [\"127.0.0.1\"] }\n",
    ));
    let inbound = &m.policies[0].inbound;
    assert!(matches!(inbound[0], Statement::CheckHeader(_)));
    let Statement::IpFilter(f) = &inbound[1] else {
        panic!()
    };
    assert!(f.permits(Some(ip("127.0.0.1"))));
    assert!(!f.permits(Some(ip("127.0.0.2"))));
    assert!(!f.permits(None));
    let Statement::CheckHeader(c) = &inbound[0] else {
        panic!()
    };
    assert!(c.values.is_empty());
    assert_eq!(c.check(&headers(&[])), HeaderCheck::NotFound);
    let mut any = http::HeaderMap::new();
    any.insert("x-a", "".parse().unwrap());
    assert_eq!(c.check(&any), HeaderCheck::Passed, "present is enough");
    assert!(!c.ignore_case);
}

#[test]
fn transformation_statements_and_their_model() {
    use portcullis_config::{
        ClaimTest, Condition, ExistsAction, Part, Source, Statement, Test, Value,
    };
    let (m, warnings) = load_ok(&policy_yaml(
        r#"    inbound:
      - set-variable: { name: tenant, value: "${header:X-Tenant|public}" }
      - validate-jwt:
          issuer-signing-keys: [{ base64: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==" }]
          issuers: [https://idp.example]
      - set-header: { name: X-Tags, exists-action: append, values: [a, "${var:tenant}"] }
      - set-header: { name: X-Debug, exists-action: delete }
      - choose:
          - when: { claim: { name: roles, contains: admin, ignore-case: true } }
            steps:
              - set-variable: { name: inner, value: "${query:inner|x}" }
              - rate-limit-by-key: { calls: 5, renewal-period: 60, counter-key: { claim: sub } }
          - otherwise:
              - return-response: { status: 403, headers: { X-Why: [a, b] }, body: "no ${claim:sub}" }
      - set-header: { name: Host, value: backend.internal }
    outbound:
      - set-header: { name: X-Tenant, exists-action: skip, value: "${var:tenant}" }
      - choose: [ { when: { status: [200, 201] }, steps: [ { set-header: { name: X-Ok, value: "1" } } ] } ]
"#,
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    let p = &m.policies[0];
    let kinds: Vec<&str> = p.inbound.iter().map(Statement::element).collect();
    assert_eq!(
        kinds,
        [
            "set-variable",
            "validate-jwt",
            "set-header",
            "set-header",
            "choose",
            "set-header"
        ]
    );
    let Statement::SetHeader(tags) = &p.inbound[2] else {
        panic!()
    };
    assert_eq!(tags.action, ExistsAction::Append);
    assert_eq!(tags.values[0], Value::literal("a"));
    assert_eq!(
        tags.values[1].parts(),
        [Part::Source {
            source: Source::Var("tenant".into()),
            fallback: None
        }]
    );
    let Statement::SetHeader(debug) = &p.inbound[3] else {
        panic!()
    };
    assert_eq!(
        (debug.action, debug.values.len()),
        (ExistsAction::Delete, 0)
    );
    let Statement::Choose(choose) = &p.inbound[4] else {
        panic!()
    };
    assert_eq!(
        choose.branches[0].when,
        Condition::Claim(
            "roles".to_owned(),
            ClaimTest::Contains(Test {
                values: vec!["admin".to_owned()],
                ignore_case: true
            })
        )
    );
    // A limit inside a branch has a counter id of its own.
    let Statement::Limit(limit) = &choose.branches[0].steps[1] else {
        panic!()
    };
    assert_eq!(limit.id, "p#4.0.1");
    let Statement::ReturnResponse(r) = &choose.otherwise[0] else {
        panic!()
    };
    assert_eq!(r.status, 403);
    assert_eq!(r.headers[0].0, "x-why");
    assert_eq!(r.headers[0].1.len(), 2);
    assert_eq!(r.body.claims().collect::<Vec<_>>(), ["sub"]);
    assert_eq!(p.outbound.len(), 2);
    let Statement::Choose(out) = &p.outbound[1] else {
        panic!()
    };
    assert_eq!(out.branches[0].when, Condition::Status(vec![200, 201]));
    assert!(out.otherwise.is_empty());
}

#[test]
fn a_variable_set_in_a_branch_stays_in_the_branch() {
    let text = policy_yaml(
        r#"    inbound:
      - choose:
          - when: { method: GET }
            steps: [ { set-variable: { name: v, value: x } }, { set-header: { name: X-In, value: "${var:v}" } } ]
      - set-header: { name: X-After, value: "${var:v}" }
"#,
    );
    let errors = refused(&text);
    assert_eq!(
        errors,
        "g.yaml:9:45: error: `value` reads variable `v` before any set-variable sets it\n"
    );
}

#[test]
fn an_outbound_list_goes_with_the_keyed_form_too() {
    let (m, _) = load_ok(&policy_yaml(
        "    validate-jwt:\n      issuer-signing-keys: [{ base64: \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\" }]\n      issuers: [https://idp.example]\n    outbound:\n      - set-header: { name: X-Sub, value: \"${claim:sub}\" }\n",
    ));
    assert_eq!(m.policies[0].outbound.len(), 1);
    // Transformation statements are not policy keys.
    let errors = refused(&policy_yaml(
        "    set-header: { name: X-A, value: b }\n    validate-jwt: { issuers: [x] }\n",
    ));
    assert!(
        errors.contains("g.yaml:5:5: error: unknown key `set-header`"),
        "{errors}"
    );
}

#[test]
fn decryption_keys_in_validate_jwt_and_validate_azure_ad_token() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = portcullis_testkit::jwe::RsaEncryptionKey::generate().unwrap();
    std::fs::write(dir.path().join("enc.pem"), rsa.private_pem().unwrap()).unwrap();
    let yaml = format!(
        "{SERVER}policies:
  jwt:
    validate-jwt:
      issuers: [https://sts.example/]
      audiences: [api://orders]
      issuer-signing-keys: [{{ base64: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA== }}]
      decryption-keys:
        - {{ value: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=, alg: A256KW, id: k1 }}
        - {{ value: AAECAwQFBgcICQoLDA0ODw==, alg: dir, enc: A128GCM }}
        - {{ file: enc.pem, alg: RSA-OAEP-256, enc: [A256GCM, A128CBC-HS256] }}
  aad:
    validate-azure-ad-token:
      tenant-id: 72f988bf-86f1-41af-91ab-2d7cd011db47
      client-application-ids: [11111111-2222-3333-4444-555555555555]
      decryption-keys: [{{ file: enc.pem }}]
{}",
        route("jwt")
    );
    let (m, _) = load_in(dir.path(), &yaml);
    let keys = &m.policies[0].policy.decryption_keys;
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0].kid.as_deref(), Some("k1"));
    assert_eq!(keys[0].alg, Some(portcullis_auth::KeyManagement::A256KW));
    assert_eq!(keys[1].enc, [portcullis_auth::ContentEncryption::A128GCM]);
    assert_eq!(keys[2].enc.len(), 2);
    assert_eq!(m.policies[1].policy.decryption_keys.len(), 1);
    assert!(m.policies[1].policy.decryption_keys[0].alg.is_none());
    // The model's debug output (what a log line could show) never carries key material.
    let debug = format!("{:?}", m.policies[0].policy);
    assert!(
        !debug.contains("AAECAwQF") && !debug.contains("PRIVATE"),
        "{debug}"
    );
}

#[test]
fn telemetry_defaults_and_every_key() {
    use portcullis_config::telemetry::{OtlpProtocol, Telemetry};
    let (m, _) = load_ok(&format!("{SERVER}{}", route("none")));
    assert_eq!(m.server.telemetry, None);

    // An http/protobuf endpoint without a path gets the OTLP traces path; defaults elsewhere.
    let yaml = format!(
        "{SERVER}  telemetry:\n    otlp: {{ endpoint: \"http://collector:4318\" }}\n{}",
        route("none")
    );
    let (m, warnings) = load_ok(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let t: Telemetry = m.server.telemetry.expect("telemetry");
    assert_eq!(t.otlp.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(t.otlp.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(t.otlp.timeout, Duration::from_secs(10));
    assert_eq!(t.otlp.max_queue_size, 2048);
    assert_eq!(t.otlp.export_interval, Duration::from_secs(5));
    assert!(t.otlp.headers.is_empty());
    assert_eq!(t.service_name, "portcullis");
    assert!((t.sample_ratio - 1.0).abs() < f64::EPSILON);

    let yaml = format!(
        "{SERVER}  telemetry:\n    service-name: edge-gw\n    sample-ratio: 0.25\n    otlp:\n      endpoint: http://collector:4317\n      protocol: grpc\n      headers: {{ X-Api-Key: k3y }}\n      timeout: 2s\n      max-queue-size: 64\n      export-interval: 100ms\n{}",
        route("none")
    );
    let (m, _) = load_ok(&yaml);
    let t = m.server.telemetry.expect("telemetry");
    assert_eq!(t.otlp.endpoint, "http://collector:4317");
    assert_eq!(t.otlp.protocol, OtlpProtocol::Grpc);
    assert_eq!(
        t.otlp.headers,
        vec![("x-api-key".to_owned(), "k3y".to_owned())]
    );
    assert_eq!(t.otlp.timeout, Duration::from_secs(2));
    assert_eq!(t.otlp.max_queue_size, 64);
    assert_eq!(t.otlp.export_interval, Duration::from_millis(100));
    assert_eq!(t.service_name, "edge-gw");
    assert!((t.sample_ratio - 0.25).abs() < f64::EPSILON);

    // An http/protobuf endpoint with a path is used as written.
    let yaml = format!(
        "{SERVER}  telemetry:\n    sample-ratio: 0\n    otlp: {{ endpoint: \"https://otel.example/otlp/traces\" }}\n{}",
        route("none")
    );
    let t = load_ok(&yaml).0.server.telemetry.expect("telemetry");
    assert_eq!(t.otlp.endpoint, "https://otel.example/otlp/traces");
    assert_eq!(t.sample_ratio, 0.0);
}

#[test]
fn telemetry_needs_an_endpoint_and_never_quotes_header_values() {
    let rendered = refused(&format!(
        "{SERVER}  telemetry: {{ service-name: gw }}\n{}",
        route("none")
    ));
    assert!(
        rendered.contains("g.yaml:3:14: error: telemetry needs `otlp:"),
        "{rendered}"
    );
    let rendered = refused(&format!(
        "{SERVER}  telemetry:\n    otlp: {{ protocol: grpc }}\n{}",
        route("none")
    ));
    assert!(
        rendered.contains("g.yaml:4:11: error: otlp needs `endpoint:`"),
        "{rendered}"
    );
    let rendered = refused(&format!(
        "{SERVER}  telemetry:\n    otlp: {{ endpoint: \"http://c:4318\", headers: {{ authorization: \"Bearer s3cret\\n\" }} }}\n{}",
        route("none")
    ));
    assert!(
        rendered.contains("the value of header `authorization` is not a valid header value"),
        "{rendered}"
    );
    assert!(!rendered.contains("s3cret"), "{rendered}");
}
