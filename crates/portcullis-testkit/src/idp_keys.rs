//! One dev-token-server setup that signs with every algorithm it supports, shared by the token
//! server's own tests and the gateway's end-to-end tests, so both check the same thing: a PKCS#8
//! key file of each type (none given an `alg`: the PEM decides) and a resource per algorithm.

use std::path::Path;

/// idp.yaml (paths relative to the directory [`write_key_files`] wrote to): keys `rsa`, `p256`,
/// `p384`, `ed` without `alg`; the resources of [`RESOURCES`]; client `c` / `s`
/// (client_secret_post) and `sts` / `s` (the dotnet-sts profile).
pub const IDP_YAML: &str = r#"
listen: "127.0.0.1:0"
issuer: "http://127.0.0.1:{port}/realm"
signing-keys:
  - { id: rsa, private-key-file: rsa.pem }
  - { id: p256, private-key-file: p256.pem }
  - { id: p384, private-key-file: p384.pem }
  - { id: ed, private-key-file: ed.pem }
resources:
  "api://rs256": {}
  "api://ps256": { signing-alg: PS256 }
  "api://es256": { signing-alg: ES256 }
  "api://es384": { signing-alg: ES384 }
  "api://eddsa": { signing-alg: EdDSA }
clients:
  - { client-id: c, client-secret: s, auth-method: client_secret_post }
  - { client-id: sts, client-secret: s, auth-method: client_secret_post, profile: dotnet-sts }
"#;

/// (resource, the JOSE `alg` its tokens are signed with) of [`IDP_YAML`].
pub const RESOURCES: [(&str, &str); 5] = [
    ("api://rs256", "RS256"),
    ("api://ps256", "PS256"),
    ("api://es256", "ES256"),
    ("api://es384", "ES384"),
    ("api://eddsa", "EdDSA"),
];

/// Writes fresh `rsa.pem`, `p256.pem`, `p384.pem` and `ed.pem` (PKCS#8 PEM private keys) to `dir`.
pub fn write_key_files(dir: &Path) -> std::io::Result<()> {
    for (file, alg) in [
        ("rsa.pem", &rcgen::PKCS_RSA_SHA256),
        ("p256.pem", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("p384.pem", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed.pem", &rcgen::PKCS_ED25519),
    ] {
        let pair = rcgen::KeyPair::generate_for(alg).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(file), pair.serialize_pem())?;
    }
    Ok(())
}
