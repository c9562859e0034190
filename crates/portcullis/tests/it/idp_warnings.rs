//! `portcullis idp` says loudly that it is for development only, and warns when it listens
//! beyond loopback (issue 13, step 4).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// Starts `portcullis idp` with `listen`, waits for its ready banner, stops it and returns what
/// it wrote on stderr.
fn stderr_of_idp_listening_on(listen: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idp.yaml");
    std::fs::write(
        &config,
        format!("listen: \"{listen}\"\nissuer: \"http://127.0.0.1:{{port}}/realm\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["idp", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("http:"));
    child.kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(ready, "idp never printed its address; stderr:\n{stderr}");
    stderr
}

#[test]
fn idp_says_it_is_for_development_only() {
    let stderr = stderr_of_idp_listening_on("127.0.0.1:0");
    assert!(
        stderr
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("WARNING: DEVELOPMENT ONLY.")),
        "{stderr}"
    );
    assert!(!stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn idp_warns_when_it_listens_beyond_loopback() {
    let stderr = stderr_of_idp_listening_on("0.0.0.0:0");
    assert!(stderr.contains("WARNING: DEVELOPMENT ONLY."), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("WARNING: listening on 0.0.0.0:")
                && l.contains("not a loopback address")),
        "{stderr}"
    );
}
