//! The one integration-test binary of portcullis-auth (modules keep link time down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod algorithms;
mod claims;
mod differential;
mod extract;
mod fuzz_regressions;
mod groups;
mod headers;
mod hostile;
mod jwe;
mod keys;
mod mutations;
mod response;
mod review;
mod sts;
mod support;
mod wycheproof;
mod wycheproof_jwe;
