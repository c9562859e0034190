//! `import-apim --apiops`: the two extractor folders under tests/apiops (contoso, fabrikam)
//! imported to golden YAML and reports (`UPDATE_GOLDEN=1` rewrites them; review the diff), the
//! output loaded as `portcullis check` loads it, the exit codes, and the findings' positions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use portcullis_apim::apiops::{self, Import, Options};
use portcullis_apim::{run, ImportArgs};

/// The test folders, as given on the command line (relative to the crate, where tests run).
fn folder(name: &str) -> PathBuf {
    Path::new("tests/apiops").join(name)
}

/// The `--map-upstream`s the contoso golden output is made with.
pub const CONTOSO_MAPS: [&str; 2] = [
    "https://orders.contoso.com=http://127.0.0.1:3000",
    "https://orders-v2.contoso.com=http://127.0.0.1:3001/orders-v2",
];

fn import(name: &str, maps: &[&str]) -> Import {
    let options = Options {
        map_upstream: maps.iter().map(|m| m.parse().unwrap()).collect(),
    };
    apiops::import(&folder(name), &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The YAML with the folder's absolute path (in `openapi.spec`) as `<DIR>`.
fn portable(yaml: &str, name: &str) -> String {
    let abs = std::path::absolute(folder(name)).unwrap();
    yaml.replace(&abs.display().to_string(), "<DIR>")
}

#[test]
fn folders_match_golden_outputs() {
    let mut failures = Vec::new();
    for (name, maps) in [("contoso", &CONTOSO_MAPS[..]), ("fabrikam", &[][..])] {
        let import = import(name, maps);
        let dir = Path::new("tests/apiops");
        crate::golden::check_golden(
            &dir.join(format!("{name}.yaml")),
            &portable(&import.yaml, name),
            &mut failures,
        );
        crate::golden::check_golden(
            &dir.join(format!("{name}.stderr")),
            &import.report.to_string(),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Named values for loading: the folder's values, and test values for the secret ones.
fn lookup(import: &Import) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        import
            .named_values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| match name {
                "jwt-key" => Some("/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg=".to_owned()),
                "audit-token" => Some("audit".to_owned()),
                _ => None,
            })
    }
}

#[test]
fn imported_configs_load_without_errors() {
    for (name, maps) in [("contoso", &CONTOSO_MAPS[..]), ("fabrikam", &[][..])] {
        let import = import(name, maps);
        let path = std::path::absolute(folder(name))
            .unwrap()
            .join("gateway.yaml");
        let (_, warnings) = portcullis_config::load_str_with(&import.yaml, &path, &lookup(&import))
            .unwrap_or_else(|d| panic!("{name}: rejected: {d:#?}\n{}", import.yaml));
        let errors: Vec<_> = warnings
            .iter()
            .filter(|d| d.severity == portcullis_config::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

#[test]
fn every_finding_names_an_existing_file_and_a_position() {
    for name in ["contoso", "fabrikam"] {
        let import = import(name, &[]);
        assert!(!import.report.findings.is_empty());
        for f in &import.report.findings {
            assert!(Path::new(&f.file).is_file(), "{f}");
            let lines = std::fs::read_to_string(&f.file).unwrap().lines().count();
            assert!(f.line >= 1 && f.line <= lines.max(1) && f.col >= 1, "{f}");
            let shown = f.to_string();
            assert!(
                shown.starts_with(&format!("{}:{}:{}: ", f.file, f.line, f.col)),
                "{shown}"
            );
        }
        let text = import.report.to_string();
        assert!(
            text.lines().last().unwrap().starts_with("coverage: "),
            "{text}"
        );
    }
}

#[test]
fn what_the_reports_say() {
    let contoso = import("contoso", &CONTOSO_MAPS).report.to_string();
    // a section without <base />, a revision not served, a template the gateway cannot express
    for expected in [
        "apis/orders/policy.xml:13:5: note outbound: no <base />",
        "apis/orders;rev=2/apiInformation.json:1:1: note revision: revision 2 is not the current revision",
        "apis/orders/specification.yaml:37:1: unsupported URL template: GET /files/{name}.{ext}",
        "coverage: 9/9 operations imported (100%)",
    ] {
        assert!(contoso.contains(expected), "{expected}\n{contoso}");
    }
    let fabrikam = import("fabrikam", &[]).report.to_string();
    for expected in [
        "apis/graph/apiInformation.json:1:1: unsupported api: GraphQL APIs are not imported",
        "apis/legacy-soap/apiInformation.json:1:1: unsupported api: SOAP APIs are not imported",
        "named values/jwt-key/namedValueInformation.json:1:1: note secret: {{jwt-key}} is secret",
        "named values/audit-token/namedValueInformation.json:1:1: note keyVault: {{audit-token}} is a Key Vault reference",
        "apis/users/operations/delete-user/policy.xml:4:5: note inbound: no <base />: the 3 statement(s)",
        "apis/users/operations/get-user/policy.xml:4:9: unsupported include-fragment: fragment \"missing-fragment\"",
        "apis/users/policy.xml:13:9: unsupported send-request",
        "  DELETE /users/{id}: route users.delete-user, policy users.delete-user: converted 3/4 statements",
    ] {
        assert!(fabrikam.contains(expected), "{expected}\n{fabrikam}");
    }
    // secrets are never written out: the folder holds none, and the YAML keeps the placeholder
    let fabrikam = import("fabrikam", &[]);
    assert_eq!(fabrikam.named_value("region"), Some("westeurope"));
    assert_eq!(fabrikam.named_value("jwt-key"), None);
    let yaml = fabrikam.yaml;
    // the global <forward-request timeout="60"> is every route's timeout
    assert_eq!(yaml.matches("    timeout: \"60s\"\n").count(), 7, "{yaml}");
    assert!(yaml.contains("{{jwt-key}}") && yaml.contains("{{audit-token}}"));
}

#[test]
fn map_upstream_rewrites_service_urls_and_backends() {
    let yaml = import("contoso", &CONTOSO_MAPS).yaml;
    assert!(
        yaml.contains("base-url: \"http://127.0.0.1:3000/api\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("url: \"http://127.0.0.1:3001/orders-v2/v2\""),
        "{yaml}"
    );
    assert!(!yaml.contains("orders.contoso.com"), "{yaml}");
    let unmapped = import("contoso", &[]).yaml;
    assert!(unmapped.contains("base-url: \"https://orders.contoso.com/api\""));
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ImportArgs,
}

fn cli(args: &[&str]) -> ExitCode {
    let cli = Cli::try_parse_from(std::iter::once("import-apim").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    run(cli.args)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A minimal folder that imports completely.
fn minimal(dir: &Path) {
    write(
        dir,
        "apis/echo/apiInformation.json",
        r#"{"properties": {"path": "echo", "serviceUrl": "http://127.0.0.1:3000", "subscriptionRequired": false, "isCurrent": true}}"#,
    );
    write(
        dir,
        "apis/echo/specification.yaml",
        "openapi: 3.0.1\npaths:\n  /ping:\n    get:\n      operationId: ping\n",
    );
}

#[test]
fn exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gateway.yaml");
    let out_s = out.to_str().unwrap();
    let ok = tmp.path().join("ok");
    minimal(&ok);
    assert_eq!(
        cli(&["--apiops", ok.to_str().unwrap(), "-o", out_s]),
        ExitCode::from(0)
    );
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.contains("path: \"/echo/ping\""), "{yaml}");
    // partial: exit 3, the YAML still written
    std::fs::remove_file(&out).unwrap();
    let partial = folder("fabrikam");
    assert_eq!(
        cli(&["--apiops", partial.to_str().unwrap(), "-o", out_s]),
        ExitCode::from(3)
    );
    assert!(out.is_file());
    // not well-formed: exit 2, no YAML
    std::fs::remove_file(&out).unwrap();
    let bad = tmp.path().join("bad");
    minimal(&bad);
    write(
        &bad,
        "apis/echo/policy.xml",
        "<policies>\n  <inbound>\n</policies>\n",
    );
    assert_eq!(
        cli(&["--apiops", bad.to_str().unwrap(), "-o", out_s]),
        ExitCode::from(2)
    );
    assert!(!out.exists());
    let Err(apiops::Error::Invalid(lines)) = apiops::import(&bad, &Options::default()) else {
        panic!("invalid XML accepted")
    };
    assert!(lines[0].contains("apis/echo/policy.xml:3:"), "{lines:?}");
    write(&bad, "apis/echo/policy.xml", "<policies/>");
    write(
        &bad,
        "apis/echo/apiInformation.json",
        "{\n  \"properties\": \n}",
    );
    let Err(apiops::Error::Invalid(lines)) = apiops::import(&bad, &Options::default()) else {
        panic!("invalid JSON accepted")
    };
    assert!(
        lines[0].contains("apiInformation.json:3:1: invalid JSON"),
        "{lines:?}"
    );
    // no such folder: exit 1
    let missing = tmp.path().join("missing");
    assert_eq!(
        cli(&["--apiops", missing.to_str().unwrap(), "-o", out_s]),
        ExitCode::from(1)
    );
}

#[test]
fn file_and_apiops_are_exclusive() {
    let parsed = Cli::try_parse_from(["import-apim", "policy.xml", "--apiops", "dir"]);
    assert!(parsed.is_err());
    let parsed = Cli::try_parse_from(["import-apim", "--map-upstream", "nonsense", "x.xml"]);
    assert!(parsed.is_err(), "FROM=TO is checked");
    assert!(Cli::try_parse_from(["import-apim"]).is_err());
}

#[test]
fn order_revisions_and_unreachable_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let info = |current: bool, rev: &str| {
        format!(
            r#"{{"properties": {{"path": "a", "serviceUrl": "http://127.0.0.1:3000", "subscriptionRequired": false, "isCurrent": {current}, "apiRevision": "{rev}"}}}}"#
        )
    };
    // the folder without ;rev= is an old revision; ;rev=2 is the current one
    write(dir, "apis/a/apiInformation.json", &info(false, "1"));
    write(
        dir,
        "apis/a/specification.yaml",
        "openapi: 3.0.1\npaths:\n  /old:\n    get:\n      operationId: old\n",
    );
    write(dir, "apis/a;rev=2/apiInformation.json", &info(true, "2"));
    write(
        dir,
        "apis/a;rev=2/specification.yaml",
        "openapi: 3.0.1\npaths:\n  '/x/{id}':\n    get:\n      operationId: get\n    head:\n      operationId: head\n  '/x/{other}':\n    get:\n      operationId: shadowed\n  /x/special:\n    get:\n      operationId: special\n  '/x/{*rest}':\n    get:\n      operationId: rest\n",
    );
    let import = apiops::import(dir, &Options::default()).unwrap();
    let names: Vec<&str> = import
        .yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .collect();
    assert_eq!(
        names,
        ["\"a.special\"", "\"a.head\"", "\"a.get\"", "\"a.rest\""],
        "{}",
        import.yaml
    );
    let report = import.report.to_string();
    assert!(
        report.contains("note revision: revision 1 is not the current revision"),
        "{report}"
    );
    assert!(
        report.contains(
            "GET /x/{other}: dropped: route a.get already matches every GET /a/x/{other} request"
        ),
        "{report}"
    );
    assert!(!import.complete);
    // the order is one the gateway accepts (no route that can never match)
    let (_, warnings) = portcullis_config::load_str(&import.yaml, &dir.join("gateway.yaml"))
        .unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(warnings
        .iter()
        .all(|w| w.severity != portcullis_config::Severity::Error));
}

/// Limits around two token checks no one policy enforces: under --apiops the operation is not
/// imported and no policy is written for it, so no note names policies the limits went into.
#[test]
fn limits_note_names_only_policies_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    minimal(dir);
    let key =
        "<issuer-signing-keys><key>c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0</key></issuer-signing-keys>";
    write(
        dir,
        "apis/echo/policy.xml",
        &format!(
            r#"<policies><inbound><base /><rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" /><validate-jwt header-name="Authorization">{key}</validate-jwt></inbound></policies>"#
        ),
    );
    write(
        dir,
        "apis/echo/operations/ping/policy.xml",
        &format!(
            r#"<policies><inbound><base /><validate-jwt header-name="Authorization" failed-validation-httpcode="403">{key}</validate-jwt></inbound></policies>"#
        ),
    );
    let import = apiops::import(dir, &Options::default()).unwrap();
    let report = import.report.to_string();
    assert!(
        report.contains("unsupported operation: GET /ping: its policy has checks no one gateway policy enforces together"),
        "{report}"
    );
    assert!(
        !report.contains("written into every converted policy"),
        "{report}"
    );
    assert!(!import.yaml.contains("echo.ping"), "{}", import.yaml);
}
