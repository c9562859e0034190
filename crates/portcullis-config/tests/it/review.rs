//! Config side of the security review (issue 13, step 4): the `min-refresh-interval` knob, the
//! issuers an openid-config document's keys speak for, and the warning about key URLs over plain
//! http.

use std::path::Path;
use std::time::Duration;

use portcullis_config::{KeyLifecycle, KeySource, Model};

use crate::render;

fn load(yaml: &str) -> (Model, String) {
    let (m, warnings) = portcullis_config::load_str(yaml, Path::new("gw.yaml"))
        .unwrap_or_else(|d| panic!("{}", render(&d)));
    (m, render(&warnings))
}

fn policy(body: &str) -> String {
    format!(
        r#"server: {{ listen: "127.0.0.1:0" }}
policies:
  p:
    validate-jwt:
      audiences: [api://x]
{body}
routes:
  - {{ name: r, match: {{ path-prefix: / }}, upstream: "http://127.0.0.1:1", policy: p }}
"#
    )
}

fn lifecycle(source: &KeySource) -> KeyLifecycle {
    match source {
        KeySource::OpenIdConfig { lifecycle, .. } | KeySource::JwksUri { lifecycle, .. } => {
            *lifecycle
        }
        KeySource::Static { .. } => panic!("static source"),
    }
}

fn speaks_for(source: &KeySource) -> &[String] {
    match source {
        KeySource::OpenIdConfig { issuers, .. } => issuers,
        _ => panic!("not openid-config"),
    }
}

#[test]
fn min_refresh_interval_defaults_to_30_seconds_and_is_set_per_policy_or_source() {
    assert_eq!(
        KeyLifecycle::default().min_refresh_interval,
        Duration::from_secs(30)
    );
    let (m, warnings) = load(&policy(
        r#"      min-refresh-interval: 10s
      openid-config:
        - url: https://a.example/.well-known/openid-configuration
        - { url: "https://b.example/.well-known/openid-configuration", min-refresh-interval: 2 }
      issuer-signing-keys:
        - { jwks-uri: "https://c.example/jwks", min-refresh-interval: 1m }"#,
    ));
    assert_eq!(warnings, "");
    let got: Vec<Duration> = m.policies[0]
        .key_sources
        .iter()
        .map(|s| lifecycle(s).min_refresh_interval)
        .collect();
    let s = Duration::from_secs;
    assert_eq!(got, [s(10), s(2), s(60)]);
}

#[test]
fn min_refresh_interval_must_be_a_positive_duration_on_a_remote_source() {
    let text = policy(
        r#"      issuer-signing-keys:
        - { jwks-uri: "https://c.example/jwks", min-refresh-interval: 0 }
        - { base64: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", min-refresh-interval: 5s }"#,
    );
    let errors = render(&portcullis_config::load_str(&text, Path::new("gw.yaml")).unwrap_err());
    assert!(errors.contains("min-refresh-interval"), "{errors}");
    assert!(
        errors.contains("`min-refresh-interval` applies to remote keys"),
        "{errors}"
    );
}

#[test]
fn the_only_openid_config_entry_speaks_for_the_policy_issuers() {
    // Entra v1 tokens checked with the v2 document, Google's two spellings: one document, the
    // policy's issuers.
    let (m, _) = load(&policy(
        r#"      openid-config: [{ url: "https://a.example/.well-known/openid-configuration" }]
      issuers: [https://a.example, a.example]"#,
    ));
    assert_eq!(
        speaks_for(&m.policies[0].key_sources[0]),
        ["https://a.example", "a.example"]
    );
}

#[test]
fn several_openid_config_entries_speak_only_for_their_own_issuers() {
    let (m, _) = load(&policy(
        r#"      openid-config:
        - url: https://a.example/.well-known/openid-configuration
        - { url: "https://b.example/.well-known/openid-configuration", issuers: [b.example] }
      issuers: [https://a.example, https://b.example, b.example]"#,
    ));
    let sources = &m.policies[0].key_sources;
    assert!(speaks_for(&sources[0]).is_empty());
    assert_eq!(speaks_for(&sources[1]), ["b.example"]);
}

#[test]
fn azure_ad_token_keys_speak_for_the_tenant_v1_and_v2_issuers() {
    let tid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let (m, _) = load(&format!(
        r#"server: {{ listen: "127.0.0.1:0" }}
policies:
  p:
    validate-azure-ad-token:
      tenant-id: "{tid}"
      client-application-ids: [app]
routes:
  - {{ name: r, match: {{ path-prefix: / }}, upstream: "http://127.0.0.1:1", policy: p }}
"#
    ));
    assert_eq!(
        speaks_for(&m.policies[0].key_sources[0]),
        [
            format!("https://sts.windows.net/{tid}/"),
            format!("https://login.microsoftonline.com/{tid}/v2.0")
        ]
    );
}

#[test]
fn check_warns_about_key_urls_over_plain_http_to_other_hosts() {
    let (_, warnings) = load(&policy(
        r#"      openid-config:
        - url: http://idp.example/.well-known/openid-configuration
        - url: http://127.0.0.1:8081/.well-known/openid-configuration
        - url: https://idp.example/.well-known/openid-configuration
      issuer-signing-keys:
        - jwks-uri: http://10.0.0.5/jwks
        - jwks-uri: http://localhost:8081/jwks
        - jwks-uri: "http://[::1]:8081/jwks"
      issuers: [https://idp.example]"#,
    ));
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines.len(), 2, "{warnings}");
    assert!(
        lines[0].starts_with("gw.yaml:7:16: warning: `url` fetches signing keys over plain http"),
        "{warnings}"
    );
    assert!(
        lines[1]
            .starts_with("gw.yaml:11:21: warning: `jwks-uri` fetches signing keys over plain http"),
        "{warnings}"
    );
}
