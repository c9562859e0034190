//! A small JWKS and OpenID discovery server for key-store and gateway tests.
