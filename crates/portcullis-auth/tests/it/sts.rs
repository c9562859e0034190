//! The .NET-style STS token of flows.md: XML-DSig URI alg, hex thumbprint kid, URI claim names,
//! a role claim holding an array.

use http::HeaderName;
use jsonwebtoken::Algorithm;
use portcullis_auth::{forward_headers, JoseAlg, Match, RolesRule, VerifyingKey};
use serde_json::json;
use sha1::Digest as _;

use crate::support::*;

const ROLE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";
const NAME: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const TENANT: &str = "http://schemas.example.com/identity/claims/tenantid";

fn signer_certificate() -> (String, String) {
    let params = rcgen::CertificateParams::new(vec!["sts.test".to_owned()]).unwrap();
    let cert = params.self_signed(&rsa().pair).unwrap();
    let thumbprint = hex::encode_upper(sha1::Sha1::digest(cert.der()));
    (cert.pem(), thumbprint)
}

#[test]
fn xmldsig_rs512_token_validates_and_forwards_uri_claims() {
    let (pem, thumbprint) = signer_certificate();
    let key = VerifyingKey::from_pem(Some(thumbprint.clone()), pem.as_bytes(), "sts").unwrap();
    let keys = snapshot(key);
    let header = json!({
        "alg": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "kid": thumbprint,
        "typ": "JWT",
    });
    let claims = json!({
        "iss": "https://sts.test/",
        "aud": "client",
        "exp": NOW.0 + 3600,
        "nbf": NOW.0 - 5,
        "iat": NOW.0 - 5,
        NAME: "svc@tenant",
        ROLE: ["Integration", "Orders.Reader"],
        TENANT: "tenant-a",
    });
    let token = sign_raw(
        &header.to_string(),
        &claims.to_string(),
        &rsa().encoding,
        Algorithm::RS512,
    );
    let mut p = policy();
    p.issuers = vec!["https://sts.test/".into()];
    p.audiences = vec!["client".into()];
    p.roles = Some(RolesRule {
        r#match: Match::All,
        values: vec!["Orders.Reader".into()],
        claim: ROLE.into(),
    });
    p.forward_claims = vec![
        (HeaderName::from_static("x-user-roles"), ROLE.into()),
        (HeaderName::from_static("x-user-name"), NAME.into()),
        (HeaderName::from_static("x-tenant-id"), TENANT.into()),
    ];
    let verified = check(&token, &keys, &p).unwrap();
    assert_eq!(verified.alg, Some(JoseAlg::RS512));
    let headers: Vec<String> = forward_headers(&verified, &p)
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [
            "x-user-roles: Integration,Orders.Reader",
            "x-user-name: svc@tenant",
            "x-tenant-id: tenant-a"
        ]
    );
}

#[test]
fn xmldsig_names_map_to_jose_and_only_against_their_key_type() {
    let base = "http://www.w3.org/2001/04/xmldsig-more#";
    let table = [
        ("rsa-sha256", JoseAlg::RS256),
        ("rsa-sha384", JoseAlg::RS384),
        ("rsa-sha512", JoseAlg::RS512),
        ("ecdsa-sha256", JoseAlg::ES256),
        ("ecdsa-sha384", JoseAlg::ES384),
        ("hmac-sha256", JoseAlg::HS256),
        ("hmac-sha384", JoseAlg::HS384),
        ("hmac-sha512", JoseAlg::HS512),
    ];
    for (suffix, alg) in table {
        assert_eq!(
            JoseAlg::from_header_name(&format!("{base}{suffix}")),
            Some(alg)
        );
    }
    assert_eq!(
        JoseAlg::from_header_name("http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
        None
    );
    // An HMAC URI over the RSA certificate key: never verified with it.
    let (pem, thumbprint) = signer_certificate();
    let keys =
        snapshot(VerifyingKey::from_pem(Some(thumbprint.clone()), pem.as_bytes(), "sts").unwrap());
    let header = json!({ "alg": format!("{base}hmac-sha256"), "kid": thumbprint });
    let secret = jsonwebtoken::EncodingKey::from_secret(pem.as_bytes());
    let token = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        &secret,
        Algorithm::HS256,
    );
    assert_eq!(
        reason(check(&token, &keys, &policy())),
        "TokenSignatureInvalid"
    );
}
