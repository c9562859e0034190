//! Arbitrary text as gateway.yaml (see `portcullis_fuzz::config::run`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::config::run(data));
