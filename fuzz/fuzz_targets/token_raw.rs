//! Arbitrary bytes as a token: in `Authorization: Bearer`, as the whole header, in the query, or
//! straight into `verify_token` (see `portcullis_fuzz::token::run_raw`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::token::run_raw(data));
