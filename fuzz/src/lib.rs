//! Fixtures and properties shared by the fuzz targets in `fuzz_targets/`.
//!
//! Why a library: each target is a one-line `fuzz_target!` over a function here, so the properties
//! (what counts as a bug besides a panic) are written once and can be replayed on a single input
//! (`cargo run --bin <target> -- <file>` after a scripts/fuzz build). See docs/fuzzing.md.
//!
//! The properties, beyond "never panics" (libFuzzer reports panics and, with `-timeout`, hangs):
//! - tokens: whatever `evaluate` / `verify_token` + `check_claims` accept was signed with the
//!   configured HMAC secret (checked independently with aws-lc's HMAC; RSA, EC and Ed25519 keys are
//!   generated per process, so nothing the fuzzer makes can carry their signature), every segment is
//!   canonical base64url, the payload parses to the same claims with plain serde_json, and the time,
//!   issuer and audience claims hold. Unsigned tokens pass only under `require-signed-tokens: false`,
//!   with `alg: none` and an empty signature;
//! - encrypted tokens (JWE): one failure reason, only canonical and authenticated JWEs decrypt,
//!   and what the token core accepts from one is a nested token the plain-token oracle accepts
//!   (see `jwe`);
//! - config: `load_str_with` never panics and is deterministic;
//! - APIM import: `convert` never panics, its YAML is well-formed, and loading it never panics.

pub mod apim;
pub mod config;
pub mod jwe;
pub mod token;
