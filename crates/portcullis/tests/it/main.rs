//! End-to-end tests of the `portcullis` binary: one test binary (link time), one module per area.
//! Each test starts real processes/servers on loopback port 0 and waits on readiness.

mod adversarial;
mod apim_apiops;
mod apim_corpus;
mod cache;
mod check;
mod checks;
mod dashboard;
mod explain;
mod faults;
mod forwarding;
mod gateway;
mod header_tricks;
mod health;
mod https;
mod identity;
mod idp;
mod idp_gateway;
mod idp_warnings;
mod jwe;
mod key_fetch;
mod listener_certs;
mod loadtest_tls;
mod logs;
mod pipeline;
mod profiles;
mod redis_limits;
mod reload;
mod routing_tricks;
mod runtime;
mod subscriptions;
mod support;
mod telemetry;
mod templates;
mod transforms;
mod upstream_tls;
