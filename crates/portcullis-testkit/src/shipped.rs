//! The one list of shipped gateway configs that must pass `portcullis check` (used by the config
//! crate's load test and the binary's check test; CI runs both through `cargo test`).
//!
//! Shipped: every `*.yaml` directly under `examples/` and `policies/`, except [`SKIPPED`]: files in
//! those folders that are not gateway configs. (`examples/*/gateway.yaml`, the per-platform stacks,
//! are checked by `scripts/run-example-clients`.)

use std::path::{Path, PathBuf};

/// The folders, relative to the repository root.
pub const DIRS: [&str; 2] = ["examples", "policies"];

/// File-name patterns (`*` at the end: a prefix) that are not gateway configs, and why.
pub const SKIPPED: &[(&str, &str)] = &[
    (
        "idp.yaml",
        "the dev token server's config (`portcullis idp -c`)",
    ),
    ("compose*", "container compose files"),
    ("docker-compose*", "container compose files"),
];

/// The repository root (this crate is `crates/portcullis-testkit`), canonical, so the paths
/// returned here can be compared and stripped.
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// Whether `name` matches a [`SKIPPED`] pattern.
pub fn is_skipped(name: &str) -> bool {
    SKIPPED
        .iter()
        .any(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
}

/// The `*.yaml` files directly under the [`DIRS`], sorted, split into (gateway configs, skipped).
pub fn yaml_files() -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut configs, mut skipped) = (Vec::new(), Vec::new());
    for dir in DIRS {
        for entry in std::fs::read_dir(repo_root().join(dir))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") || !path.is_file() {
                continue;
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if is_skipped(&name) {
                skipped.push(path);
            } else {
                configs.push(path);
            }
        }
    }
    configs.sort();
    skipped.sort();
    Ok((configs, skipped))
}

/// The shipped gateway configs (see the module docs).
pub fn gateway_configs() -> std::io::Result<Vec<PathBuf>> {
    Ok(yaml_files()?.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_list_covers_both_folders_and_skips_only_what_is_not_a_gateway_config() {
        let (configs, skipped) = yaml_files().unwrap();
        let names = |v: &[PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let (configs, skipped) = (names(&configs), names(&skipped));
        assert!(configs.contains(&"demo.yaml".to_owned()), "{configs:?}");
        assert!(configs.contains(&"entra-v2.yaml".to_owned()), "{configs:?}");
        assert!(configs.len() >= 13, "{configs:?}");
        assert!(skipped.contains(&"idp.yaml".to_owned()), "{skipped:?}");
        assert!(skipped.contains(&"compose.yaml".to_owned()), "{skipped:?}");
        assert!(!is_skipped("gateway.yaml") && is_skipped("docker-compose.dev.yaml"));
    }
}
