//! One integration-test binary for portcullis-apim: golden conversions of the corpus, the
//! `import-apim` command's exit codes and files, and end-to-end decisions of the converted configs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod apiops;
mod cli;
mod corpus;
mod decisions;
mod edge;
mod fuzz_regressions;
mod golden;
mod inbound;
mod mutations;
mod transforms;
