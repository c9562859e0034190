//! End-to-end tests: check. The real `portcullis check` binary: exit codes (0 valid, 2 invalid),
//! the `file:line:col: severity: message` lines on stderr, every shipped example and policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The workspace root (shipped files are named relative to it, as a user in a checkout would).
fn check(dir: &Path, file: &str) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(["check", "-c", file])
        .env("PORTCULLIS_DEMO_IDP", "http://127.0.0.1:8081")
        .env("PORTCULLIS_DEMO_BACKEND", "http://127.0.0.1:3000")
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn valid_config_exits_0_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ok.yaml",
        "server:\n  listen: \"127.0.0.1:8080\"\nroutes:\n  - { name: r, upstream: \"http://127.0.0.1:3000\", policy: none }\n",
    );
    let out = check(dir.path(), "ok.yaml");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, "ok.yaml: ok (0 policies, 1 routes, 0 warnings)\n");
}

#[test]
fn warnings_keep_exit_0_and_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lax.yaml",
        "server:\n  listen: \"127.0.0.1:8080\"\npolicies:\n  p:\n    validate-jwt:\n      require-signed-tokens: false\n      issuers: [https://sts.example/]\n      issuer-signing-keys: [{ jwks-uri: \"https://sts.example/jwks\" }]\n      audiences: [a]\nroutes:\n  - { name: r, upstream: \"http://127.0.0.1:3000\", policy: p }\n",
    );
    let out = check(dir.path(), "lax.yaml");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("lax.yaml:6:30: warning: require-signed-tokens: false"),
        "{stderr}"
    );
}

#[test]
fn invalid_config_exits_2_with_every_problem_as_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    write(
        &dir.path().join("conf"),
        "bad.yaml",
        "server:\n  listen: \"127.0.0.1:8080\"\npolicies:\n  p:\n    validate-jwt:\n      audience: [a]\n      clock-skew: -1\n      issuer-signing-keys: [{ jwks-file: missing.json }]\nroutes:\n  - { name: r, upstream: \"http://127.0.0.1:3000\", policy: q }\n",
    );
    let out = check(dir.path(), "conf/bad.yaml");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "conf/bad.yaml:4:3: warning: policy `p` is not used by any route",
            "conf/bad.yaml:6:7: error: unknown key `audience` in validate-jwt (did you mean `audiences`?)",
            "conf/bad.yaml:7:19: error: negative clock-skew (-1): use 0 or more seconds",
            "conf/bad.yaml:8:42: error: cannot read jwks-file `missing.json`: No such file or directory (os error 2)",
            "conf/bad.yaml:10:59: error: unknown policy `q` (did you mean `p`?)",
        ],
        "{stderr}"
    );
}

#[test]
fn syntax_error_and_missing_file_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "syntax.yaml",
        "server:\n  listen: [\"127.0.0.1:8080\"\n",
    );
    let out = check(dir.path(), "syntax.yaml");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("syntax.yaml:"), "{stderr}");
    assert!(stderr.contains(": error: "), "{stderr}");
    let out = check(dir.path(), "absent.yaml");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("absent.yaml:0:0: error: cannot read config"),
        "{stderr}"
    );
}

#[test]
fn every_shipped_example_and_policy_passes() {
    let mut checked = 0;
    // The one list (portcullis_testkit::shipped): examples/*.yaml and policies/*.yaml that are
    // gateway configs.
    let root = portcullis_testkit::shipped::repo_root();
    for path in portcullis_testkit::shipped::gateway_configs().unwrap() {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let out = check(&root, &rel);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{rel}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} files");
}
