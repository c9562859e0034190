//! Golden `check` output: each `tests/broken/*.yaml` is loaded and its diagnostics compared with
//! the `.stderr` file beside it. `UPDATE_GOLDEN=1 cargo test -p portcullis-config` rewrites them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::render;

fn broken_files() -> Vec<PathBuf> {
    let dir = crate::crate_dir().join("tests/broken");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The diagnostics `load` gives for `rel` (a path relative to the crate, as a user would type it).
fn diagnostics(rel: &Path) -> (String, bool) {
    match portcullis_config::load(rel) {
        Ok((_, warnings)) => (render(&warnings), true),
        Err(diags) => (render(&diags), false),
    }
}

#[test]
fn broken_configs_match_their_golden_stderr() {
    std::env::set_current_dir(crate::crate_dir()).unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = broken_files();
    assert!(files.len() >= 15, "only {} broken configs", files.len());
    let mut mismatches = Vec::new();
    for abs in files {
        let rel = abs.strip_prefix(crate::crate_dir()).unwrap().to_path_buf();
        let (actual, _) = diagnostics(&rel);
        assert!(!actual.is_empty(), "{} gives no diagnostics", rel.display());
        let golden = abs.with_extension("stderr");
        if update {
            fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "--- {}\n{expected}+++ actual\n{actual}",
                golden.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_broken_config_is_invalid_except_the_warnings_only_one() {
    std::env::set_current_dir(crate::crate_dir()).unwrap();
    for abs in broken_files() {
        let rel = abs.strip_prefix(crate::crate_dir()).unwrap();
        let (text, ok) = diagnostics(rel);
        let warnings_only = rel.ends_with("warnings-only.yaml");
        assert_eq!(ok, warnings_only, "{}:\n{text}", rel.display());
        for line in text.lines() {
            assert!(
                line.starts_with(&format!("{}:", rel.display())),
                "not file:line:col: {line}"
            );
        }
    }
}
