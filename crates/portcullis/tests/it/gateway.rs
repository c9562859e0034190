//! End-to-end tests: gateway.
