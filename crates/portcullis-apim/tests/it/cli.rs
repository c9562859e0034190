//! The `import-apim` command: exit codes 0 (converted), 3 (partial), 2 (invalid XML), 1 (unreadable),
//! the `-o` file, and `--route`.

use std::process::ExitCode;

use clap::Parser;
use portcullis_apim::{run, ImportArgs};

use crate::corpus;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ImportArgs,
}

fn import(args: &[&str]) -> ExitCode {
    let cli = Cli::try_parse_from(std::iter::once("import-apim").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    run(cli.args)
}

fn corpus_path(name: &str) -> String {
    corpus::dir().join(name).display().to_string()
}

#[test]
fn exit_codes_follow_the_conversion() {
    let out = tempfile::tempdir().unwrap();
    let yaml = out.path().join("gateway.yaml");
    let o = yaml.to_str().unwrap();
    assert_eq!(
        import(&[&corpus_path("01-entra-v2-openid.xml"), "-o", o]),
        ExitCode::from(0)
    );
    let written = std::fs::read_to_string(&yaml).unwrap();
    assert!(written.contains("validate-jwt:"), "{written}");
    assert_eq!(
        import(&[&corpus_path("23-admin-ip-filter.xml"), "-o", o]),
        ExitCode::from(3)
    );
    assert_eq!(
        import(&[&corpus_path("19-invalid.xml"), "-o", o]),
        ExitCode::from(2)
    );
    let missing = out.path().join("missing.xml");
    assert_eq!(
        import(&[missing.to_str().unwrap(), "-o", o]),
        ExitCode::from(1)
    );
}

#[test]
fn routes_from_the_command_line() {
    let out = tempfile::tempdir().unwrap();
    let yaml = out.path().join("gateway.yaml");
    let code = import(&[
        &corpus_path("03-hs256-base64.xml"),
        "--route",
        "orders=/api/orders=http://127.0.0.1:3001",
        "--route",
        "admin=/admin=https://admin.internal:8443",
        "--map-upstream",
        "https://admin.internal:8443=http://127.0.0.1:3002",
        "-o",
        yaml.to_str().unwrap(),
    ]);
    assert_eq!(code, ExitCode::from(0));
    let written = std::fs::read_to_string(&yaml).unwrap();
    assert!(written.contains("  - name: \"orders\"\n    match:\n      path-prefix: \"/api/orders\"\n    upstream: \"http://127.0.0.1:3001\"\n    policy: \"03-hs256-base64\"\n"), "{written}");
    assert!(written.contains("  - name: \"admin\""), "{written}");
    // --map-upstream rewrites a --route upstream
    assert!(
        written.contains("upstream: \"http://127.0.0.1:3002\""),
        "{written}"
    );
    assert!(!written.contains("catch-all"), "{written}");
    let (model, _) = portcullis_config::load(&yaml).unwrap_or_else(|d| panic!("{d:?}"));
    let names: Vec<&str> = model.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["orders", "admin"]);
}

#[test]
fn bad_route_is_a_usage_error() {
    let err = Cli::try_parse_from(["import-apim", "x.xml", "--route", "orders=api"]).unwrap_err();
    assert!(err.to_string().contains("NAME=PATH=UPSTREAM"), "{err}");
}
