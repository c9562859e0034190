//! Integration tests of `portcullis-config`: one test binary (link time), one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod files;
mod golden;
mod review;
mod subscriptions;
mod templates;
mod valid;

use std::path::Path;

use portcullis_config::Diagnostic;

/// Diagnostics as `check` prints them, one per line.
pub fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// The crate directory (cargo runs integration tests there too).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
