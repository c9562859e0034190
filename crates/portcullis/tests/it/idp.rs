//! End-to-end tests: idp.
