//! Every shipped example and ready-made policy loads without errors (as CI's `portcullis check`
//! loop requires), and without warnings unless the file exists to show one.

use std::path::PathBuf;

/// Named values the shipped files use (the same CI exports).
fn demo_vars(name: &str) -> Option<String> {
    match name {
        "PORTCULLIS_DEMO_IDP" => Some("http://127.0.0.1:8081".into()),
        "PORTCULLIS_DEMO_BACKEND" => Some("http://127.0.0.1:3000".into()),
        _ => None,
    }
}

/// Files whose point is a warned-about choice, and the warning they must give.
const EXPECTED_WARNINGS: &[(&str, &str)] = &[("report-only.yaml", "report-only")];

/// The shipped gateway configs under `dir` (the one list: portcullis_testkit::shipped).
fn shipped(dir: &str) -> Vec<PathBuf> {
    let dir = portcullis_testkit::shipped::repo_root().join(dir);
    portcullis_testkit::shipped::gateway_configs()
        .unwrap()
        .into_iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .collect()
}

fn check_all(dir: &str, at_least: usize) {
    let files = shipped(dir);
    assert!(files.len() >= at_least, "{dir}: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let (model, warnings) = portcullis_config::load_str_with(&text, &path, &demo_vars)
            .unwrap_or_else(|d| panic!("{} is invalid:\n{}", path.display(), crate::render(&d)));
        assert!(!model.routes.is_empty(), "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        match EXPECTED_WARNINGS.iter().find(|(f, _)| *f == name) {
            Some((_, text)) => assert!(
                warnings.iter().any(|w| w.message.contains(text)),
                "{name}: {warnings:?}"
            ),
            None => assert!(warnings.is_empty(), "{name}:\n{}", crate::render(&warnings)),
        }
    }
}

#[test]
fn examples_load() {
    check_all("examples", 4);
}

#[test]
fn policies_load() {
    check_all("policies", 9);
}

#[test]
fn demo_config_protects_orders_and_leaves_public_open() {
    let path = crate::crate_dir().join("../../examples/demo.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (m, _) = portcullis_config::load_str_with(&text, &path, &demo_vars).unwrap();
    let orders = m
        .routes
        .iter()
        .find(|r| r.matcher.path_prefix.as_deref() == Some("/api/orders"))
        .unwrap();
    let policy = m
        .policies
        .iter()
        .find(|p| Some(p.policy.name.as_str()) == orders.policy.as_deref())
        .unwrap();
    let headers: Vec<(&str, &str)> = policy
        .policy
        .forward_claims
        .iter()
        .map(|(h, c)| (h.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-user-id", "sub"),
            ("x-tenant-id", "tid"),
            ("x-user-roles", "roles")
        ]
    );
    assert!(policy.policy.scopes.is_some() && policy.policy.roles.is_some());
    let Some(portcullis_config::KeySource::OpenIdConfig { url, .. }) = policy.key_sources.first()
    else {
        panic!("{:?}", policy.key_sources)
    };
    assert_eq!(
        url,
        "http://127.0.0.1:8081/realm/.well-known/openid-configuration"
    );
    let public = m
        .routes
        .iter()
        .find(|r| r.matcher.path_prefix.as_deref() == Some("/public"))
        .unwrap();
    assert_eq!(public.policy, None);
    assert_eq!(public.upstreams[0].port, 3000);
}
