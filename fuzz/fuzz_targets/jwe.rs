//! Raw bytes as an encrypted token (JWE) under decryption keys (see `portcullis_fuzz::jwe::run_jwe`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::jwe::run_jwe(data));
