//! Arbitrary JWKS documents and PEM text as verifying keys (see `portcullis_fuzz::token::run_keys`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::token::run_keys(data));
