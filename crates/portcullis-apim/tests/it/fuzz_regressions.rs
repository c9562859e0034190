//! Inputs the fuzz/ `apim` target found (docs/fuzzing.md), kept as regression tests.

use std::path::Path;

use crate::corpus;

fn load(yaml: &str) -> portcullis_config::LoadResult {
    portcullis_config::load_str_with(yaml, Path::new("gw.yaml"), &|_| None)
}

/// A set-header name longer than YAML's 1024-character limit on implicit keys was written as a
/// plain key, so the converted gateway.yaml did not parse. Found with 60 NULs in a header name
/// (each written as `\u0000`); a long name of ordinary characters broke it the same way.
#[test]
fn header_names_longer_than_a_yaml_implicit_key_still_give_valid_yaml() {
    let found =
        std::fs::read_to_string(corpus::dir().join("../fuzz/crash-nul-header-name.xml")).unwrap();
    let conv = portcullis_apim::convert(&found, "crash.xml", &[]).unwrap();
    if let Err(diags) = load(&conv.yaml) {
        // Refusing the header name is fine; a YAML syntax error is not.
        assert!(
            diags.iter().all(|d| !d.message.contains("simple key")),
            "{diags:?}\n{}",
            conv.yaml
        );
    }

    let name = format!("X-{}", "a".repeat(1100));
    let xml = format!(
        r#"<policies><inbound>
        <validate-jwt header-name="Authorization" output-token-variable-name="jwt">
            <issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>
        </validate-jwt>
        <set-header name="{name}" exists-action="override">
            <value>@(((Jwt)context.Variables["jwt"]).Subject)</value>
        </set-header>
        </inbound></policies>"#
    );
    let conv = portcullis_apim::convert(&xml, "long.xml", &[]).unwrap();
    assert!(conv.is_complete(), "{}", conv.report("long.xml"));
    let (model, _) = load(&conv.yaml).unwrap_or_else(|d| panic!("{d:?}\n{}", conv.yaml));
    let forwarded: Vec<&str> = model
        .policies
        .iter()
        .flat_map(|p| p.policy.forward_claims.iter().map(|(h, _)| h.as_str()))
        .collect();
    assert_eq!(forwarded, [name.to_ascii_lowercase().as_str()]);
}
