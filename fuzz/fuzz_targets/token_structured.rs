//! Tokens built from arbitrary header and claim JSON, some HMAC-signed with the configured secret
//! so claim checks run (see `portcullis_fuzz::token::run_structured`).
#![no_main]

libfuzzer_sys::fuzz_target!(|spec: portcullis_fuzz::token::TokenSpec| {
    portcullis_fuzz::token::run_structured(&spec)
});
