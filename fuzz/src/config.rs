//! gateway.yaml parsing and checking on arbitrary text.

use std::path::Path;

/// Named values resolve to nothing: the run must not depend on the environment.
fn no_values(_: &str) -> Option<String> {
    None
}

/// Load `text` as a gateway.yaml (key files resolve under a directory that does not exist).
pub fn load(text: &str) -> portcullis_config::LoadResult {
    portcullis_config::load_str_with(
        text,
        Path::new("/nonexistent/fuzz/gateway.yaml"),
        &no_values,
    )
}

/// The config target: never panics; the same text gives the same diagnostics twice.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = load(text);
    let second = load(text);
    let summary = |r: &portcullis_config::LoadResult| match r {
        Ok((_, warnings)) => (true, warnings.clone()),
        Err(errors) => (false, errors.clone()),
    };
    assert_eq!(
        summary(&first),
        summary(&second),
        "load_str is not deterministic"
    );
}
