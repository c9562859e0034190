//! Arbitrary text as an APIM policy document (see `portcullis_fuzz::apim::run`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::apim::run(data));
