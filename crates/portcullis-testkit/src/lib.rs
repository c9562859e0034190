//! Test and demo helpers: a recording echo backend, a JWKS/discovery server, an OTLP trace
//! receiver, a real `redis-server`, port-0 helpers and readiness waits. Real HTTP (and RESP) over loopback; nothing
//! here mocks the thing under test.
#![warn(missing_docs)]

pub mod backend;
pub mod fixtures;
pub mod idp_keys;
pub mod jwe;
pub mod jwks_server;
pub mod otlp;
pub mod pki;
pub mod ports;
pub mod redis;
pub mod shipped;
pub mod wait;
