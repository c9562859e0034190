//! End to end at the library level: each corpus document is converted, the YAML is loaded with
//! `portcullis_config::load_str`, and `portcullis_auth::evaluate` must make the decision APIM's
//! documented semantics give, for tokens minted here (HS* with the corpus' base64 secrets, RS256/PS256
//! with the fixture keys, unsigned where the policy allows it). The table holds APIM's decision and
//! reason per token; where the gateway knowingly differs (always reported by the converter, or a
//! documented design choice) the row says what the gateway does and why.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_auth::{
    evaluate, forward_headers, KeySnapshot, RequestParts, UnixTime, VerifyingKey,
};
use portcullis_config::{KeySource, PolicyModel};
use serde_json::{json, Value};

use crate::corpus;

const NOW: i64 = 1_800_000_000;
/// The tenant id, as a literal so the issuers below are built from it (they agree by construction).
macro_rules! tid {
    () => {
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    };
}
const V2_ISS: &str = concat!("https://login.microsoftonline.com/", tid!(), "/v2.0");
const V1_ISS: &str = concat!("https://sts.windows.net/", tid!(), "/");
const API_APP: &str = "6e2f1c7a-3b4d-4e5f-9a0b-1c2d3e4f5a6b";
const CLIENT_APP: &str = "11111111-2222-4333-8444-555555555555";
const HS_A: &str = "/Mo4WEtHiloNxlbaIlwHdmFMK4QKQCmV28KT5UMhwYg=";
const HS_B: &str = "KlQbjNMQTPov4uTTjxHxFZ7fZDJBFaFP2KdlkmFmT/Y=";
const HS_NAMED: &str = "V99eVrvSteZ1WCl6btPdXCWXNvFFXgle0sTtgPMNDepZPz8pbcG3eto7epZ/hjJy";
const HS_WRONG: &str = "Vu1mfaUgcu//CZ6cmESN7ciZsMAgJOVdxMA7ddOqUR4=";
/// The inline decryption keys of 17-certificate-and-decryption.xml and 24-azure-decryption-keys.xml.
const ENC_32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ENC_16: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// kid under which the discovery key of openid-config corpora is published.
const OIDC_KID: &str = "oidc-1";

type Decision = Result<(), &'static str>;
const ACCEPT: Decision = Ok(());
fn reject(reason: &'static str) -> Decision {
    Err(reason)
}

#[derive(Clone, Copy)]
enum Signer {
    Hs(&'static str),
    RsStatic(Algorithm),
    RsOidc,
    Unsigned,
}

#[derive(Clone)]
enum Place {
    Bearer,
    Raw(&'static str),
    Prefixed(&'static str, &'static str),
    Scheme(&'static str),
    Query(&'static str),
    Missing,
}

struct Tok {
    label: &'static str,
    signer: Signer,
    kid: Option<&'static str>,
    claims: Value,
    place: Place,
    apim: Decision,
    /// The gateway's decision where it knowingly differs from APIM, and why.
    gateway: Option<(Decision, &'static str)>,
    forwards: Vec<(&'static str, &'static str)>,
    /// Sent as a JWE: (alg, enc, base64 symmetric key) around the signed token.
    sealed: Option<(&'static str, &'static str, &'static str)>,
}

fn tok(label: &'static str, signer: Signer, claims: Value, apim: Decision) -> Tok {
    Tok {
        label,
        signer,
        kid: None,
        claims,
        place: Place::Bearer,
        apim,
        gateway: None,
        forwards: Vec::new(),
        sealed: None,
    }
}

impl Tok {
    fn kid(mut self, kid: &'static str) -> Tok {
        self.kid = Some(kid);
        self
    }
    fn place(mut self, place: Place) -> Tok {
        self.place = place;
        self
    }
    fn differs(mut self, gateway: Decision, why: &'static str) -> Tok {
        self.gateway = Some((gateway, why));
        self
    }
    fn sealed(mut self, alg: &'static str, enc: &'static str, key: &'static str) -> Tok {
        self.sealed = Some((alg, enc, key));
        self
    }
    fn forwards(mut self, headers: &[(&'static str, &'static str)]) -> Tok {
        self.forwards = headers.to_vec();
        self
    }
}

struct Case {
    doc: &'static str,
    /// Policy to evaluate; default: the one the generated route uses.
    policy: Option<&'static str>,
    /// Issuers the discovery documents of the policy's openid-config sources announce.
    discovered: &'static [&'static str],
    httpcode: u16,
    message: Option<&'static str>,
    forward_token: bool,
    tokens: Vec<Tok>,
}

fn case(doc: &'static str, tokens: Vec<Tok>) -> Case {
    Case {
        doc,
        policy: None,
        discovered: &[],
        httpcode: 401,
        message: None,
        forward_token: true,
        tokens,
    }
}

/// Standard claims valid at NOW, merged with `extra` (a `null` value removes the claim).
fn claims(iss: &str, aud: &str, extra: Value) -> Value {
    let mut base = json!({
        "iss": iss, "aud": aud, "sub": "user-1",
        "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600,
    });
    let obj = base.as_object_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    base
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(corpus::dir().join("keys").join(name)).unwrap()
}

fn mint(t: &Tok) -> String {
    let (alg, key) = match t.signer {
        Signer::Hs(secret) => (
            Algorithm::HS256,
            EncodingKey::from_base64_secret(secret).unwrap(),
        ),
        Signer::RsStatic(alg) => (
            alg,
            EncodingKey::from_rsa_pem(&key_file("rsa-static.pem")).unwrap(),
        ),
        Signer::RsOidc => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key_file("rsa-oidc.pem")).unwrap(),
        ),
        Signer::Unsigned => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(t.claims.to_string());
            return format!("{header}.{payload}.");
        }
    };
    let mut header = Header::new(alg);
    header.kid = t.kid.map(str::to_owned);
    let signed = jsonwebtoken::encode(&header, &t.claims, &key).unwrap();
    match t.sealed {
        None => signed,
        Some((alg, enc, secret)) => {
            use base64::engine::general_purpose::STANDARD;
            use portcullis_testkit::jwe::{encrypt, EncryptionKey};
            let secret = STANDARD.decode(secret).unwrap();
            let header = json!({ "alg": alg, "enc": enc, "cty": "JWT" });
            encrypt(
                &header,
                &EncryptionKey::Symmetric(&secret),
                signed.as_bytes(),
            )
            .unwrap()
        }
    }
}

/// The key snapshot the key store would hold: static keys from the model, plus the discovery key
/// (and issuers) for openid-config sources.
fn snapshot(pm: &PolicyModel, discovered: &[&str]) -> KeySnapshot {
    let mut keys = Vec::new();
    let mut discovery = false;
    for source in &pm.key_sources {
        match source {
            KeySource::Static { keys: k, .. } => keys.extend(k.iter().cloned()),
            KeySource::OpenIdConfig { .. } | KeySource::JwksUri { .. } => discovery = true,
        }
    }
    if discovery {
        let pem = key_file("rsa-oidc.pub.pem");
        keys.extend(VerifyingKey::from_pem(Some(OIDC_KID.into()), &pem, "test discovery").unwrap());
    }
    let mut snap = KeySnapshot::new(keys);
    // as the key store carries it (APIM's key matching, set by the importer)
    snap.try_all_keys = pm.policy.try_all_signing_keys;
    if discovery {
        snap.issuers = discovered
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into();
    }
    snap
}

fn request(t: &Tok, token: &str) -> (HeaderMap, Option<String>) {
    let mut headers = HeaderMap::new();
    let mut set = |name: &str, value: String| {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    };
    let mut query = None;
    match &t.place {
        Place::Bearer => set("authorization", format!("Bearer {token}")),
        Place::Scheme(s) => set("authorization", format!("{s}{token}")),
        Place::Raw(h) => set(h, token.to_owned()),
        Place::Prefixed(h, p) => set(h, format!("{p}{token}")),
        Place::Query(q) => query = Some(format!("x=1&{q}={token}")),
        Place::Missing => {}
    }
    (headers, query)
}

fn run_case(c: &Case, failures: &mut Vec<String>) {
    let conv = corpus::convert(c.doc);
    let yaml_name = c.doc.replace(".xml", ".yaml");
    let (model, _warnings) = match portcullis_config::load_str(&conv.yaml, Path::new(&yaml_name)) {
        Ok(m) => m,
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{}: converted config rejected:\n{}\n{}",
                c.doc,
                text.join("\n"),
                conv.yaml
            ));
            return;
        }
    };
    let wanted = match c.policy {
        Some(p) => p.to_owned(),
        None => model.routes[0].policy.clone().expect("route has a policy"),
    };
    let pm = model
        .policies
        .iter()
        .find(|p| p.policy.name == wanted)
        .unwrap_or_else(|| panic!("{}: no policy {wanted}", c.doc));
    let policy = &pm.policy;
    let mut fail = |msg: String| failures.push(format!("{}: {msg}", c.doc));
    if policy.failed_validation_httpcode != c.httpcode {
        fail(format!(
            "httpcode {} != {}",
            policy.failed_validation_httpcode, c.httpcode
        ));
    }
    if policy.failed_validation_error_message.as_deref() != c.message {
        fail(format!(
            "message {:?} != {:?}",
            policy.failed_validation_error_message, c.message
        ));
    }
    if policy.forward_token != c.forward_token {
        fail(format!(
            "forward-token {} != {}",
            policy.forward_token, c.forward_token
        ));
    }
    let keys = snapshot(pm, c.discovered);
    for t in &c.tokens {
        let token = mint(t);
        let (headers, query) = request(t, &token);
        let parts = RequestParts {
            headers: &headers,
            query: query.as_deref(),
        };
        let result = evaluate(&parts, policy, &keys, UnixTime(NOW));
        let got: Decision = match &result {
            Ok(_) => ACCEPT,
            Err(e) => Err(e.reason()),
        };
        let want = t.gateway.map_or(t.apim, |(g, _)| g);
        if got != want {
            fail(format!(
                "token `{}`: gateway decided {got:?}, expected {want:?} (APIM: {:?})",
                t.label, t.apim
            ));
        }
        if let Ok(verified) = &result {
            let set = forward_headers(verified, policy);
            for (h, v) in &t.forwards {
                let found = set
                    .iter()
                    .find(|(name, _)| name.as_str().eq_ignore_ascii_case(h));
                if found.map(|(_, value)| value.to_str().unwrap_or("")) != Some(v) {
                    fail(format!(
                        "token `{}`: header {h} = {found:?}, expected {v}",
                        t.label
                    ));
                }
            }
        }
    }
}

fn cases() -> Vec<Case> {
    use Signer::*;
    let v2 = |aud: &str, extra: Value| claims(V2_ISS, aud, extra);
    let hs = |extra: Value| claims("https://sts.contoso.test/", "orders-api", extra);
    let scp = |s: &str| json!({ "scp": s });
    vec![
        Case {
            discovered: &[V2_ISS],
            message: Some("Unauthorized. Access token is missing or invalid."),
            ..case("01-entra-v2-openid.xml", vec![
                tok("v2 token, app id URI audience", RsOidc, v2("api://orders", scp("User.Read Orders.Read")), ACCEPT).kid(OIDC_KID),
                tok("v2 token, client id audience", RsOidc, v2(API_APP, scp("Orders.Write")), ACCEPT).kid(OIDC_KID),
                tok("no token", RsOidc, v2("api://orders", scp("Orders.Read")), reject("TokenNotPresent")).place(Place::Missing),
                tok("v1 issuer against v2 metadata", RsOidc, claims(V1_ISS, "api://orders", scp("Orders.Read")), reject("TokenIssuerNotAllowed")).kid(OIDC_KID),
                tok("Graph token", RsOidc, v2("00000003-0000-0000-c000-000000000000", scp("Orders.Read")), reject("TokenAudienceNotAllowed")).kid(OIDC_KID),
                tok("scope missing from scp", RsOidc, v2("api://orders", scp("User.Read openid")), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID),
                tok("expired", RsOidc, v2("api://orders", json!({"scp": "Orders.Read", "exp": NOW - 1})), reject("TokenExpired")).kid(OIDC_KID),
                tok("kid not published", RsStatic(Algorithm::RS256), v2("api://orders", scp("Orders.Read")), reject("TokenSignatureKeyNotFound")).kid("rogue"),
                tok("published kid, other key", RsStatic(Algorithm::RS256), v2("api://orders", scp("Orders.Read")), reject("TokenSignatureInvalid")).kid(OIDC_KID),
            ])
        },
        Case {
            discovered: &[V1_ISS],
            ..case("02-entra-v1-openid.xml", vec![
                tok("v1 token, app id URI", RsOidc, claims(V1_ISS, &format!("api://{API_APP}"), json!({"appid": CLIENT_APP})), ACCEPT).kid(OIDC_KID),
                tok("v1 token, bare app id", RsOidc, claims(V1_ISS, API_APP, json!({"appid": CLIENT_APP})), ACCEPT).kid(OIDC_KID),
                tok("Basic scheme", RsOidc, claims(V1_ISS, API_APP, json!({"appid": CLIENT_APP})), reject("JwtInvalid")).kid(OIDC_KID).place(Place::Scheme("Basic ")),
                tok("no scheme", RsOidc, claims(V1_ISS, API_APP, json!({"appid": CLIENT_APP})), reject("JwtInvalid")).kid(OIDC_KID).place(Place::Scheme("")),
                tok("v2 issuer not listed", RsOidc, claims(V2_ISS, API_APP, json!({"appid": CLIENT_APP})), reject("TokenIssuerNotAllowed")).kid(OIDC_KID),
                tok("other client", RsOidc, claims(V1_ISS, API_APP, json!({"appid": "99999999-2222-4333-8444-555555555555"})), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID),
                tok("no appid", RsOidc, claims(V1_ISS, API_APP, json!({})), reject("TokenClaimNotFound")).kid(OIDC_KID),
            ])
        },
        Case {
            message: Some("Unauthorized"),
            ..case("03-hs256-base64.xml", vec![
                tok("first key", Hs(HS_A), hs(json!({})), ACCEPT).forwards(&[("X-User-Id", "user-1")]),
                tok("rollover key", Hs(HS_B), hs(json!({})), ACCEPT),
                tok("unknown secret", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
                tok("other audience", Hs(HS_A), hs(json!({"aud": "billing-api"})), reject("TokenAudienceNotAllowed")),
                tok("other issuer", Hs(HS_A), hs(json!({"iss": "https://evil.test/"})), reject("TokenIssuerNotAllowed")),
                tok("RS256 against HMAC keys", RsStatic(Algorithm::RS256), hs(json!({})), reject("TokenSignatureKeyNotFound")),
                tok("alg none", Unsigned, hs(json!({})), reject("JwtInvalid")),
            ])
        },
        case("04-rsa-n-e.xml", vec![
            tok("kid matches", RsStatic(Algorithm::RS256), claims("https://issuer.contoso.test", "any", json!({})), ACCEPT).kid("static-1"),
            tok("no kid: every key tried", RsStatic(Algorithm::RS256), claims("https://issuer.contoso.test", "any", json!({})), ACCEPT),
            tok("PS256 with the same key", RsStatic(Algorithm::PS256), claims("https://issuer.contoso.test", "any", json!({})), ACCEPT).kid("static-1"),
            tok("unknown kid, signed by the key", RsStatic(Algorithm::RS256), claims("https://issuer.contoso.test", "any", json!({})), ACCEPT)
                .kid("rotated-2"),
            tok("other key under the right kid", RsOidc, claims("https://issuer.contoso.test", "any", json!({})), reject("TokenSignatureInvalid")).kid("static-1"),
            tok("issuer not listed", RsStatic(Algorithm::RS256), claims("https://issuer.contoso.test/", "any", json!({})), reject("TokenIssuerNotAllowed")).kid("static-1"),
        ]),
        case("05-required-claims-all-separator.xml", vec![
            tok("all groups in a string", Hs(HS_A), hs(json!({"groups": "finance,approvers,readers", "tid": "tenant-a"})), ACCEPT),
            tok("all groups in an array", Hs(HS_A), hs(json!({"groups": ["approvers", "finance"], "tid": "tenant-b"})), ACCEPT),
            tok("one group missing", Hs(HS_A), hs(json!({"groups": "finance", "tid": "tenant-a"})), reject("TokenClaimValueNotAllowed")),
            tok("tenant not listed", Hs(HS_A), hs(json!({"groups": "finance,approvers", "tid": "tenant-c"})), reject("TokenClaimValueNotAllowed")),
            tok("claims absent", Hs(HS_A), hs(json!({})), reject("TokenClaimNotFound")),
        ]),
        Case {
            discovered: &[V2_ISS],
            httpcode: 403,
            message: Some("Forbidden: missing application role."),
            ..case("06-roles-any.xml", vec![
                tok("reader role", RsOidc, v2("api://orders", json!({"roles": ["Orders.Reader"]})), ACCEPT).kid(OIDC_KID),
                tok("admin among others", RsOidc, v2("api://orders", json!({"roles": ["Other", "Orders.Admin"]})), ACCEPT).kid(OIDC_KID),
                tok("other role", RsOidc, v2("api://orders", json!({"roles": ["Other"]})), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID),
                tok("no roles", RsOidc, v2("api://orders", json!({})), reject("TokenClaimNotFound")).kid(OIDC_KID),
            ])
        },
        Case {
            message: Some("This message never reaches the client"),
            ..case("07-on-error.xml", vec![
                tok("valid", Hs(HS_A), hs(json!({})), ACCEPT),
                tok("missing", Hs(HS_A), hs(json!({})), reject("TokenNotPresent")).place(Place::Missing),
            ])
        },
        Case {
            message: Some("Access token in the access_token parameter is missing or invalid."),
            ..case("08-query-parameter.xml", vec![
                tok("in the query", Hs(HS_A), claims("any", "events", json!({})), ACCEPT).place(Place::Query("access_token")),
                tok("in the header only", Hs(HS_A), claims("any", "events", json!({})), reject("TokenNotPresent")),
                tok("other audience", Hs(HS_A), claims("any", "orders", json!({})), reject("TokenAudienceNotAllowed")).place(Place::Query("access_token")),
            ])
        },
        case("09-clock-skew.xml", vec![
            tok("expired within skew", Hs(HS_A), claims("accounts.contoso.test", "a", json!({"exp": NOW - 60})), ACCEPT),
            tok("expired beyond skew", Hs(HS_A), claims("accounts.contoso.test", "a", json!({"exp": NOW - 200})), reject("TokenExpired")),
            tok("nbf within skew", Hs(HS_A), claims("https://accounts.contoso.test", "a", json!({"nbf": NOW + 60})), ACCEPT),
            tok("nbf beyond skew", Hs(HS_A), claims("https://accounts.contoso.test", "a", json!({"nbf": NOW + 200})), reject("TokenNotYetValid")),
            tok("issuer spelling not listed", Hs(HS_A), claims("https://accounts.contoso.test/", "a", json!({})), reject("TokenIssuerNotAllowed")),
            tok("no exp", Hs(HS_A), claims("accounts.contoso.test", "a", json!({"exp": null})), reject("JwtInvalid")),
        ]),
        Case {
            message: Some("Unauthorized"),
            ..case("10-no-expiration.xml", vec![
                tok("no exp, raw header", RsStatic(Algorithm::RS256), claims("legacy", "a", json!({"exp": null})), ACCEPT).place(Place::Raw("x-legacy-token")),
                tok("exp still checked when present", RsStatic(Algorithm::RS256), claims("legacy", "a", json!({"exp": NOW - 5})), reject("TokenExpired")).place(Place::Raw("x-legacy-token")),
                tok("in Authorization instead", RsStatic(Algorithm::RS256), claims("legacy", "a", json!({"exp": null})), reject("TokenNotPresent")),
                tok("Bearer prefix in the custom header", RsStatic(Algorithm::RS256), claims("legacy", "a", json!({"exp": null})), reject("JwtInvalid")).place(Place::Prefixed("x-legacy-token", "Bearer ")),
            ])
        },
        // the branch is not known without the operation's method: the route refuses every request
        // (11-choose-refused); each branch's policy decides as APIM's branch does
        Case {
            policy: Some("11-choose"),
            ..case("11-choose.xml", vec![
                tok("read claim", Hs(HS_A), hs(json!({"read": true})), ACCEPT),
                tok("edit claim only", Hs(HS_A), hs(json!({"edit": true})), reject("TokenClaimNotFound")),
                tok("read false", Hs(HS_A), hs(json!({"read": false})), reject("TokenClaimValueNotAllowed")),
            ])
        },
        Case {
            policy: Some("11-choose-2"),
            httpcode: 403,
            ..case("11-choose.xml", vec![
                tok("edit claim", Hs(HS_A), hs(json!({"edit": "true"})), ACCEPT),
                tok("read claim only", Hs(HS_A), hs(json!({"read": true})), reject("TokenClaimNotFound")),
            ])
        },
        Case {
            discovered: &[V1_ISS, V2_ISS],
            message: Some("Unauthorized. Access token is missing or invalid."),
            ..case("12-azure-ad-token.xml", vec![
                tok("v2 token from the client app", RsOidc, v2("api://orders", json!({"azp": CLIENT_APP, "roles": ["Orders.Reader"], "oid": "oid-7"})), ACCEPT).kid(OIDC_KID).forwards(&[("X-Caller-Oid", "oid-7")]),
                tok("v1 token for the backend app id", RsOidc, claims(V1_ISS, API_APP, json!({"appid": CLIENT_APP, "roles": ["Orders.Reader"]})), ACCEPT).kid(OIDC_KID),
                tok("other client app", RsOidc, v2("api://orders", json!({"azp": "99999999-2222-4333-8444-555555555555", "roles": ["Orders.Reader"]})), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID),
                tok("other audience", RsOidc, v2("api://billing", json!({"azp": CLIENT_APP, "roles": ["Orders.Reader"]})), reject("TokenAudienceNotAllowed")).kid(OIDC_KID),
                tok("other tenant", RsOidc, claims("https://login.microsoftonline.com/ffffffff-4e5f-4a6b-8c7d-9e0f1a2b3c4d/v2.0", "api://orders", json!({"azp": CLIENT_APP, "roles": ["Orders.Reader"]})), reject("TokenIssuerNotAllowed")).kid(OIDC_KID),
                tok("role missing", RsOidc, v2("api://orders", json!({"azp": CLIENT_APP, "roles": ["Other"]})), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID),
            ])
        },
        Case {
            forward_token: false,
            ..case("13-set-header-claims.xml", vec![
                tok("identity forwarded", Hs(HS_A), hs(json!({
                    "oid": "oid-1", "tid": "tenant-a", "roles": ["a", "b"], "jti": "token-9",
                    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name": "Alice",
                })), ACCEPT).forwards(&[
                    ("X-User-Oid", "oid-1"), ("X-User-Sub", "user-1"), ("X-Tenant", "tenant-a"),
                    ("X-Roles", "a,b"), ("X-Issuer", "https://sts.contoso.test/"), ("X-Token-Id", "token-9"),
                    // X-Name has a default ("anonymous"), which forward-claims cannot give: it is a
                    // set-header with `${claim:...|anonymous}` (end to end: apim_corpus.rs)
                ]),
            ])
        },
        case("14-check-header.xml", vec![
            // The token check only: the converted check-header is evaluated in inbound.rs
            // (statement semantics) and end to end in crates/portcullis/tests/it/checks.rs.
            tok("valid token", Hs(HS_A), hs(json!({})), ACCEPT),
            tok("bad signature", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
        ]),
        case("15-named-values.xml", vec![
            tok("named-value secret and issuer", Hs(HS_NAMED), claims("https://nv.contoso.test/", "a", json!({})), ACCEPT),
            tok("other secret", Hs(HS_A), claims("https://nv.contoso.test/", "a", json!({})), reject("TokenSignatureInvalid")),
            tok("other issuer", Hs(HS_NAMED), claims("https://other.test/", "a", json!({})), reject("TokenIssuerNotAllowed")),
        ]),
        case("16-expressions.xml", vec![
            tok("audience equal to the request host", Hs(HS_A), claims("i", "api.contoso.test", json!({})), ACCEPT)
                .place(Place::Raw("x-api-token"))
                .differs(reject("TokenAudienceNotAllowed"), "the audience expression is kept literally and reported, so the check fails closed"),
            tok("token in Authorization instead", Hs(HS_A), claims("i", "api.contoso.test", json!({})), reject("TokenNotPresent")),
        ]),
        case("17-certificate-and-decryption.xml", vec![
            tok("inline key by id", Hs(HS_A), claims("i", "api://payments", json!({})), ACCEPT).kid("hmac-1"),
            tok("other audience", Hs(HS_A), claims("i", "api://other", json!({})), reject("TokenAudienceNotAllowed")).kid("hmac-1"),
            tok("encrypted with the inline decryption key", Hs(HS_A), claims("i", "api://payments", json!({})), ACCEPT).kid("hmac-1").sealed("A256KW", "A128CBC-HS256", ENC_32),
            tok("encrypted, other audience inside", Hs(HS_A), claims("i", "api://other", json!({})), reject("TokenAudienceNotAllowed")).kid("hmac-1").sealed("dir", "A256GCM", ENC_32),
            tok("encrypted with another key", Hs(HS_A), claims("i", "api://payments", json!({})), reject("TokenDecryptionFailed")).kid("hmac-1").sealed("A256KW", "A256GCM", HS_WRONG),
        ]),
        case("18-fragment.xml", vec![
            tok("unsigned with svc", Unsigned, claims("i", "a", json!({"svc": "billing", "exp": null})), ACCEPT).place(Place::Raw("x-internal-token")).forwards(&[("X-Service", "billing")]),
            tok("unsigned without svc", Unsigned, claims("i", "a", json!({"exp": null})), reject("TokenClaimNotFound")).place(Place::Raw("x-internal-token")),
        ]),
        Case {
            message: Some("Unauthorized. Access token is missing or invalid."),
            ..case("20-inbound-pipeline.xml", vec![
                tok("valid", Hs(HS_A), claims("https://sts.contoso.example/", "api://orders", json!({})), ACCEPT),
                tok("other audience", Hs(HS_A), claims("https://sts.contoso.example/", "api://other", json!({})), reject("TokenAudienceNotAllowed")),
                tok("bad signature", Hs(HS_WRONG), claims("https://sts.contoso.example/", "api://orders", json!({})), reject("TokenSignatureInvalid")),
            ])
        },
        case("21-limits.xml", vec![
            tok("valid", Hs(HS_A), hs(json!({})), ACCEPT),
            tok("bad signature", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
        ]),
        case("22-claim-keys.xml", vec![
            tok("valid", Hs(HS_A), hs(json!({})), ACCEPT),
            tok("bad signature", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
        ]),
        Case {
            discovered: &[V1_ISS, V2_ISS],
            ..case("24-azure-decryption-keys.xml", vec![
                tok("encrypted v2 token", RsOidc, v2(API_APP, json!({"azp": CLIENT_APP})), ACCEPT).kid(OIDC_KID).sealed("A128KW", "A256GCM", ENC_16),
                tok("plain v2 token", RsOidc, v2(API_APP, json!({"azp": CLIENT_APP})), ACCEPT).kid(OIDC_KID),
                tok("encrypted, other client inside", RsOidc, v2(API_APP, json!({"azp": "99999999-2222-4333-8444-555555555555"})), reject("TokenClaimValueNotAllowed")).kid(OIDC_KID).sealed("dir", "A128GCM", ENC_16),
                tok("alg A256KW, which the 16-byte key cannot be", RsOidc, v2(API_APP, json!({"azp": CLIENT_APP})), reject("TokenDecryptionFailed")).kid(OIDC_KID).sealed("A256KW", "A256GCM", ENC_16),
            ])
        },
        // The token check only; ip-filter and check-header: inbound.rs and checks.rs (see above).
        case("23-admin-ip-filter.xml", vec![
            tok("valid", Hs(HS_A), claims("https://sts.contoso.test/", "api://admin", json!({})), ACCEPT),
            tok("other audience", Hs(HS_A), hs(json!({})), reject("TokenAudienceNotAllowed")),
        ]),
        // 25-34: the token check only; their statements: transforms.rs and the gateway's apim_corpus.
        Case {
            message: Some("Unauthorized"),
            ..case("25-bff-legacy.xml", vec![
                tok("valid", Hs(HS_A), claims("i", "crm-bff", json!({})), ACCEPT),
                tok("other audience", Hs(HS_A), claims("i", "crm", json!({})), reject("TokenAudienceNotAllowed")),
            ])
        },
        Case {
            discovered: &[V1_ISS, V2_ISS],
            ..case("28-internal-admin.xml", vec![
                tok("v2 token for the admin API", RsOidc, v2("api://admin", json!({"roles": ["Admin.Write"], "oid": "oid-9"})), ACCEPT).kid(OIDC_KID),
                tok("other audience", RsOidc, v2("api://orders", json!({})), reject("TokenAudienceNotAllowed")).kid(OIDC_KID),
                tok("other tenant", RsOidc, claims("https://login.microsoftonline.com/ffffffff-4e5f-4a6b-8c7d-9e0f1a2b3c4d/v2.0", "api://admin", json!({})), reject("TokenIssuerNotAllowed")).kid(OIDC_KID),
            ])
        },
        case("29-spa-cors-jwt-ratelimit.xml", vec![
            tok("valid", Hs(HS_A), hs(json!({"azp": "spa"})), ACCEPT),
            tok("bad signature", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
        ]),
        // the route refuses every request (a choose answering without the backend is left out);
        // the converted policy decides tokens as APIM does
        Case {
            policy: Some("34-partner-api-unsupported"),
            ..case("34-partner-api-unsupported.xml", vec![
                tok("valid", Hs(HS_A), hs(json!({"partner_id": "p-1"})), ACCEPT),
                tok("bad signature", Hs(HS_WRONG), hs(json!({})), reject("TokenSignatureInvalid")),
            ])
        },
        Case {
            message: Some("Unauthorized"),
            ..case("35-partner-kid-mismatch.xml", vec![
            tok("the partner's own kid", Hs(HS_A), claims("https://sts.partner.example/", "api://partner-orders", json!({})), ACCEPT).kid("7F3A9C"),
            tok("the configured key id", Hs(HS_A), claims("https://sts.partner.example/", "api://partner-orders", json!({})), ACCEPT).kid("partner-shared-2024"),
            tok("no kid", Hs(HS_A), claims("https://sts.partner.example/", "api://partner-orders", json!({})), ACCEPT),
            tok("unknown kid, other secret", Hs(HS_WRONG), claims("https://sts.partner.example/", "api://partner-orders", json!({})), reject("TokenSignatureKeyNotFound")).kid("7F3A9C"),
            tok("configured key id, other secret", Hs(HS_WRONG), claims("https://sts.partner.example/", "api://partner-orders", json!({})), reject("TokenSignatureInvalid")).kid("partner-shared-2024"),
            tok("other issuer", Hs(HS_A), claims("https://sts.other.example/", "api://partner-orders", json!({})), reject("TokenIssuerNotAllowed")).kid("7F3A9C"),
            ])
        },
    ]
}

/// Named values of 15-named-values.xml, as the config loader reads them from the environment.
fn set_named_values() {
    for (name, value) in [
        ("jwt-signing-key", HS_NAMED),
        ("token-issuer", "https://nv.contoso.test/"),
    ] {
        std::env::set_var(name, value);
    }
}

#[test]
fn converted_configs_decide_like_apim() {
    set_named_values();
    let mut failures = Vec::new();
    let all = cases();
    let covered: std::collections::BTreeSet<&str> = all.iter().map(|c| c.doc).collect();
    for doc in corpus::documents() {
        // a document without a token check has no decision to make
        let checks_tokens = corpus::read(&doc).contains("<validate-");
        if doc != "19-invalid.xml" && checks_tokens {
            assert!(
                covered.contains(doc.as_str()),
                "{doc} has no decision table"
            );
        }
    }
    for c in &all {
        run_case(c, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_n_matches_fixture_key() {
    let conv = corpus::convert("04-rsa-n-e.xml");
    let n = conv
        .yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"n\": \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    let key = VerifyingKey::from_rsa_components(None, n, "AQAB", "corpus").unwrap();
    let t = tok(
        "probe",
        Signer::RsStatic(Algorithm::RS256),
        claims("i", "a", json!({})),
        ACCEPT,
    );
    let snap = KeySnapshot::new(vec![key]);
    portcullis_auth::verify_signature(&mint(&t), &snap, true).expect(
        "04-rsa-n-e.xml's n is not rsa-static.pem's modulus: see tests/corpus/keys/README.md",
    );
}
