//! Shared token fixtures for benches: one claim set, so the auth core's and the proxy's benches
//! measure the same token shape and their figures can be compared.

use serde_json::{json, Value};

/// An Entra ID v2 access token's claims (16 claims, the size real tokens have), issued by
/// `issuer` for `api://orders`, valid from `now - 60` to `now + 3600`.
pub fn entra_v2_claims(issuer: &str, now: i64) -> Value {
    json!({
        "aud": "api://orders",
        "iss": issuer,
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "azp": "6e0c9f2a-1b3d-4c5e-8f7a-9b0c1d2e3f4a",
        "azpacr": "1",
        "name": "Alice Example",
        "oid": "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
        "preferred_username": "alice@example.com",
        "rh": "0.AXEAHo9rPC16jk-cGy0-T1prfA",
        "roles": ["Orders.Reader", "Orders.Writer"],
        "scp": "orders.read orders.write profile",
        "sub": "x1y2z3w4v5u6t7s8r9q0p1o2n3m4l5k6j7i8h9g0f1e",
        "tid": "3c6b8f1e-7a2d-4f8e-9c1b-2d3e4f5a6b7c",
        "uti": "AbCdEfGhIjKlMnOpQrStUv",
        "ver": "2.0"
    })
}
