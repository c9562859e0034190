//! Token parsing and evaluation: raw bytes as the token, and tokens built from arbitrary JSON.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_auth::{
    check_claims, evaluate, extract_token, failure_response, forward_headers, verify_token,
    AuthError, JoseAlg, KeySnapshot, Match, Policy, RequestParts, RolesRule, ScopesRule,
    TokenSource, UnixTime, Verified, VerifyingKey,
};
use serde_json::Value;

/// The clock of every evaluation.
pub const NOW: UnixTime = UnixTime(1_700_000_000);
/// The HMAC secret of the `hs` key (seed tokens are signed with it).
pub const HMAC_SECRET: &[u8] = b"portcullis-fuzz-hmac-secret-0123456789abcdef";
/// The issuer every policy requires.
pub const ISSUER: &str = "https://issuer.fuzz/";
/// The audience every policy requires.
pub const AUDIENCE: &str = "api://fuzz";
/// Clock skew of the `rules` policy.
const SKEW: u64 = 30;

/// Keys and policies, built once per process.
pub struct Fixture {
    /// RSA (kid `rsa`), EC P-256 (kid `ec`), EC P-384 (no kid), Ed25519 (kid `ed`), HMAC (kid `hs`).
    pub keys: KeySnapshot,
    /// `Authorization: Bearer`, issuer and audience.
    pub bearer: Policy,
    /// Token in the `access_token` query parameter.
    pub query: Policy,
    /// Bearer plus required claims, scopes, roles, clock skew and forwarded claims.
    pub rules: Policy,
    /// `rules` with `require-signed-tokens: false`.
    pub unsigned: Policy,
}

fn public_key(alg: &'static rcgen::SignatureAlgorithm, kid: Option<&str>) -> VerifyingKey {
    let pair = rcgen::KeyPair::generate_for(alg).expect("key generation");
    VerifyingKey::from_pem(
        kid.map(str::to_owned),
        pair.public_key_pem().as_bytes(),
        "fuzz",
    )
    .expect("generated public key parses")
    .remove(0)
}

/// The process-wide fixture.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = KeySnapshot::new(vec![
            public_key(&rcgen::PKCS_RSA_SHA256, Some("rsa")),
            public_key(&rcgen::PKCS_ECDSA_P256_SHA256, Some("ec")),
            public_key(&rcgen::PKCS_ECDSA_P384_SHA384, None),
            public_key(&rcgen::PKCS_ED25519, Some("ed")),
            VerifyingKey::from_hmac_secret(Some("hs".to_owned()), HMAC_SECRET, "fuzz"),
        ]);
        let mut bearer = Policy::new("bearer");
        bearer.issuers = vec![ISSUER.to_owned()];
        bearer.audiences = vec![AUDIENCE.to_owned()];
        let mut query = bearer.clone();
        query.name = "query".to_owned();
        query.token_source = TokenSource::Query {
            name: "access_token".to_owned(),
        };
        let mut rules = bearer.clone();
        rules.name = "rules".to_owned();
        rules.clock_skew = SKEW;
        rules.required_claims = vec![portcullis_auth::ClaimRule {
            name: "tid".to_owned(),
            r#match: Match::Any,
            separator: Some(",".to_owned()),
            values: vec!["t1".to_owned(), "t2".to_owned()],
        }];
        rules.scopes = Some(ScopesRule {
            r#match: Match::All,
            values: vec!["read".to_owned()],
        });
        rules.roles = Some(RolesRule {
            r#match: Match::Any,
            values: vec!["admin".to_owned()],
            claim: "realm_access.roles".to_owned(),
        });
        rules.client_application_ids = vec!["app".to_owned()];
        rules.forward_claims = vec![
            (HeaderName::from_static("x-user"), "sub".to_owned()),
            (
                HeaderName::from_static("x-roles"),
                "realm_access.roles".to_owned(),
            ),
        ];
        rules.insufficient_scope_httpcode = Some(403);
        let mut unsigned = rules.clone();
        unsigned.name = "unsigned".to_owned();
        unsigned.require_signed_tokens = false;
        Fixture {
            keys,
            bearer,
            query,
            rules,
            unsigned,
        }
    })
}

/// HMAC-SHA-2 of `input` with the fixture secret, for an `HS*` algorithm name.
pub fn hmac_sign(alg: &str, input: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => return None,
    };
    let key = hmac::Key::new(algorithm, HMAC_SECRET);
    Some(hmac::sign(&key, input).as_ref().to_vec())
}

/// A seed token: `header` and `claims` JSON text, HMAC-signed per the header's alg (HS256 if none).
pub fn sign_hmac(header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let alg = serde_json::from_str::<Value>(header)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let sig = hmac_sign(&alg, input.as_bytes())
        .or_else(|| hmac_sign("HS256", input.as_bytes()))
        .unwrap_or_default();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Decode a segment that must be canonical unpadded base64url.
pub(crate) fn canonical_segment(segment: &str, what: &str, token: &str) -> Vec<u8> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|_| panic!("accepted a token whose {what} is not base64url: {token:?}"));
    assert_eq!(
        URL_SAFE_NO_PAD.encode(&bytes),
        segment,
        "accepted a non-canonical {what} segment: {token:?}"
    );
    bytes
}

fn as_number(claims: &serde_json::Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).map(|v| {
        v.as_f64()
            .unwrap_or_else(|| panic!("accepted a non-numeric {name}: {v}"))
    })
}

/// What must hold for a token `policy` accepted (the oracle of both token targets).
pub fn check_accepted(token: &str, verified: &Verified, policy: &Policy) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "accepted a token without three segments: {token:?}"
    );
    let header_bytes = canonical_segment(parts[0], "header", token);
    let payload = canonical_segment(parts[1], "payload", token);
    let header: Value = serde_json::from_slice(&header_bytes)
        .unwrap_or_else(|e| panic!("accepted a header serde_json cannot read ({e}): {token:?}"));
    let alg = header.get("alg").and_then(Value::as_str);
    match verified.alg {
        None => {
            assert!(
                !policy.require_signed_tokens,
                "unsigned token accepted: {token:?}"
            );
            assert_eq!(
                alg,
                Some("none"),
                "unsigned token without alg none: {token:?}"
            );
            assert!(
                parts[2].is_empty(),
                "unsigned token with a signature: {token:?}"
            );
        }
        Some(used) => {
            // XML-DSig URIs name JOSE algorithms on purpose (.NET STSs).
            assert_eq!(
                alg.and_then(JoseAlg::from_header_name),
                Some(used),
                "verified alg is not the header's: {token:?}"
            );
            let signature = canonical_segment(parts[2], "signature", token);
            let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
            let expected = hmac_sign(used.name(), signing_input.as_bytes()).unwrap_or_else(|| {
                panic!(
                    "accepted a {} token the fuzzer cannot sign: {token:?}",
                    used.name()
                )
            });
            assert_eq!(
                signature, expected,
                "accepted a forged signature: {token:?}"
            );
        }
    }
    let claims: serde_json::Map<String, Value> = serde_json::from_slice(&payload)
        .unwrap_or_else(|e| panic!("accepted claims serde_json cannot read ({e}): {token:?}"));
    assert_eq!(
        claims,
        verified.claims.to_map(),
        "claims differ from serde_json's reading"
    );
    let now = NOW.0 as f64;
    let skew = policy.clock_skew as f64;
    match as_number(&claims, "exp") {
        Some(exp) => assert!(exp + skew >= now, "accepted an expired token: {token:?}"),
        None => assert!(
            !policy.require_expiration_time,
            "accepted a token without exp"
        ),
    }
    if let Some(nbf) = as_number(&claims, "nbf") {
        assert!(nbf - skew <= now, "accepted a token before nbf: {token:?}");
    }
    let _ = as_number(&claims, "iat");
    assert_eq!(
        claims.get("iss").and_then(Value::as_str),
        Some(ISSUER),
        "accepted a foreign issuer: {token:?}"
    );
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(aud_ok, "accepted a foreign audience: {token:?}");
    let _ = forward_headers(verified, policy);
}

/// What a rejection must look like: a status the policy configures, a JSON body carrying it, and a
/// `WWW-Authenticate` value that is a valid header value (an error may quote a token's kid).
fn check_rejected(err: &AuthError, policy: &Policy) {
    let response = failure_response(err, policy);
    assert!(
        response.status == policy.failed_validation_httpcode
            || Some(response.status) == policy.insufficient_scope_httpcode,
        "unexpected status {} for {err:?}",
        response.status
    );
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", response.body));
    assert_eq!(body["statusCode"], Value::from(response.status));
    assert!(HeaderValue::from_str(&response.www_authenticate).is_ok());
    let _ = format!("{err} {err:?} {}", err.reason());
}

/// With `PORTCULLIS_FUZZ_TRACE` set, every outcome is printed (replaying one input by hand).
fn trace<T>(policy: &Policy, result: &Result<T, AuthError>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("PORTCULLIS_FUZZ_TRACE").is_some()) {
        match result {
            Ok(_) => eprintln!("{}: accepted", policy.name),
            Err(e) => eprintln!("{}: {e:?}", policy.name),
        }
    }
}

/// `evaluate` on a request; an accepted token goes through the oracle.
fn evaluate_request(req: &RequestParts<'_>, policy: &Policy) {
    let fx = fixture();
    let result = evaluate(req, policy, &fx.keys, NOW);
    trace(policy, &result);
    match result {
        Ok(verified) => {
            let token = extract_token(req, &policy.token_source)
                .expect("evaluate accepted what extract_token refuses");
            check_accepted(&token, &verified, policy);
        }
        Err(err) => check_rejected(&err, policy),
    }
}

/// `verify_token` + `check_claims` on a bare token; an accepted token goes through the oracle.
pub fn verify_and_check(token: &str, policy: &Policy) -> Result<Verified, AuthError> {
    let fx = fixture();
    let result = verify_token(token, &fx.keys, policy.require_signed_tokens)
        .and_then(|v| check_claims(&std::sync::Arc::new(v), policy, &fx.keys, NOW));
    trace(policy, &result);
    let verified = result?;
    check_accepted(token, &verified, policy);
    Ok(verified)
}

/// The raw target. The first byte picks where the rest goes: after `Bearer ` in Authorization, as
/// the whole Authorization value, as a query string, or straight into `verify_token` under the
/// rules and unsigned policies.
pub fn run_raw(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    match mode % 4 {
        0 | 1 => {
            let value = if mode % 4 == 0 {
                [b"Bearer ".as_slice(), rest].concat()
            } else {
                rest.to_vec()
            };
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                return;
            };
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            let req = RequestParts {
                headers: &headers,
                query: None,
            };
            evaluate_request(&req, &fx.bearer);
        }
        2 => {
            let Ok(query) = std::str::from_utf8(rest) else {
                return;
            };
            let headers = HeaderMap::new();
            let req = RequestParts {
                headers: &headers,
                query: Some(query),
            };
            evaluate_request(&req, &fx.query);
        }
        _ => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            for policy in [&fx.rules, &fx.unsigned] {
                if let Err(err) = verify_and_check(token, policy) {
                    check_rejected(&err, policy);
                }
            }
        }
    }
}

/// A JSON value; nesting is cut at [`MAX_DEPTH`] when written.
#[derive(Arbitrary, Debug, Clone)]
pub enum Json {
    /// null
    Null,
    /// true / false
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (non-finite ones are written as 1e999, which JSON parsers read differently).
    Float(f64),
    /// A string (escaped).
    Str(String),
    /// Raw JSON text, written as is (malformed JSON, odd number spellings).
    Raw(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object (duplicate member names allowed).
    Obj(Vec<(String, Json)>),
}

/// Deepest nesting written; deeper values become `null`.
pub const MAX_DEPTH: usize = 200;

impl Json {
    fn write(&self, out: &mut String, depth: usize) {
        if depth > MAX_DEPTH {
            out.push_str("null");
            return;
        }
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Float(f) if f.is_finite() => out.push_str(&format!("{f:e}")),
            Json::Float(_) => out.push_str("1e999"),
            Json::Str(s) => write_str(out, s),
            Json::Raw(s) => out.push_str(s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, depth + 1);
                }
                out.push(']');
            }
            Json::Obj(members) => write_object(
                out,
                members.iter().map(|(k, v)| (k.as_str(), Member::Json(v))),
                depth,
            ),
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

enum Member<'a> {
    Json(&'a Json),
    Text(String),
}

fn write_object<'a>(
    out: &mut String,
    members: impl Iterator<Item = (&'a str, Member<'a>)>,
    depth: usize,
) {
    out.push('{');
    for (i, (name, value)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, name);
        out.push(':');
        match value {
            Member::Json(v) => v.write(out, depth + 1),
            Member::Text(t) => out.push_str(&t),
        }
    }
    out.push('}');
}

/// A string claim: usually one the policies want, sometimes anything.
#[derive(Arbitrary, Debug, Clone)]
pub enum Text {
    /// The expected issuer.
    Issuer,
    /// The expected audience.
    Audience,
    /// A near miss of `0` (changed case, a trailing slash or space).
    NearMiss(u8, String),
    /// Anything.
    Other(Json),
}

impl Text {
    fn json(&self, expected: &str) -> String {
        let mut out = String::new();
        match self {
            Text::Issuer => write_str(&mut out, ISSUER),
            Text::Audience => write_str(&mut out, expected),
            Text::NearMiss(kind, s) => {
                let near = match kind % 4 {
                    0 => expected.to_uppercase(),
                    1 => format!("{expected}/"),
                    2 => format!("{expected} "),
                    _ => format!("{expected}{s}"),
                };
                write_str(&mut out, &near);
            }
            Text::Other(v) => v.write(&mut out, 1),
        }
        out
    }
}

/// A NumericDate claim.
#[derive(Arbitrary, Debug, Clone)]
pub enum Date {
    /// NOW + offset seconds.
    Rel(i32),
    /// NOW + offset, written as a float with a fraction.
    RelFloat(i32, u16),
    /// Anything.
    Other(Json),
}

impl Date {
    fn json(&self) -> String {
        match self {
            Date::Rel(d) => (NOW.0 + i64::from(*d)).to_string(),
            Date::RelFloat(d, frac) => format!("{}.{frac}", NOW.0 + i64::from(*d)),
            Date::Other(v) => {
                let mut out = String::new();
                v.write(&mut out, 1);
                out
            }
        }
    }
}

/// The header `alg`.
#[derive(Arbitrary, Debug, Clone)]
pub enum Alg {
    /// HS256, HS384 or HS512 (signable).
    Hs(u8),
    /// A name from the list below.
    Named(u8),
    /// Absent.
    Missing,
    /// Anything.
    Other(Json),
}

const ALG_NAMES: [&str; 12] = [
    "RS256",
    "ES256",
    "ES384",
    "PS256",
    "EdDSA",
    "none",
    "None",
    "NONE",
    "hs256",
    "HS256 ",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
];

/// The header `kid`.
#[derive(Arbitrary, Debug, Clone)]
pub enum Kid {
    /// Absent.
    Missing,
    /// One of the fixture's kids.
    Known(u8),
    /// Anything.
    Other(Json),
}

/// How the token is signed.
#[derive(Arbitrary, Debug, Clone)]
pub enum Signature {
    /// HMAC with the fixture secret, under the header's alg (HS256 when it is not HS*).
    Hmac,
    /// HMAC with the fixture secret under a named HS alg, whatever the header says.
    HmacAs(u8),
    /// These bytes, base64url-encoded.
    Bytes(Vec<u8>),
    /// This text as the signature segment.
    Text(String),
}

/// A change to the finished token.
#[derive(Arbitrary, Debug, Clone)]
pub enum Tamper {
    /// Replace the byte at (index mod len).
    Set(u16, u8),
    /// Insert a byte.
    Insert(u16, u8),
    /// Remove a byte.
    Remove(u16),
    /// Append text.
    Append(String),
    /// Prepend text.
    Prepend(String),
}

/// A token built from parts, for the structure-aware target.
#[derive(Arbitrary, Debug, Clone)]
pub struct TokenSpec {
    /// Header alg.
    pub alg: Alg,
    /// Header kid.
    pub kid: Kid,
    /// More header members, after alg and kid (duplicates possible).
    pub header_extra: Vec<(String, Json)>,
    /// iss (absent when `None`).
    pub iss: Option<Text>,
    /// aud.
    pub aud: Option<Text>,
    /// exp.
    pub exp: Option<Date>,
    /// nbf.
    pub nbf: Option<Date>,
    /// iat.
    pub iat: Option<Date>,
    /// Claims the rules policy looks at (`tid`, `scp`, `realm_access`, `azp`, `sub`) and others.
    pub claims_extra: Vec<(u8, String, Json)>,
    /// Signature.
    pub signature: Signature,
    /// Tampering with the finished token.
    pub tamper: Vec<Tamper>,
    /// Which policy checks it (bearer, rules, unsigned).
    pub policy: u8,
}

const CLAIM_NAMES: [&str; 9] = [
    "tid",
    "scp",
    "scope",
    "realm_access",
    "azp",
    "appid",
    "sub",
    "roles",
    "realm_access.roles",
];

impl TokenSpec {
    /// Header JSON text.
    pub fn header(&self) -> String {
        let mut members: Vec<(&str, Member<'_>)> = Vec::new();
        match &self.alg {
            Alg::Hs(i) => members.push(("alg", Member::Text(format!("\"HS{}\"", hs_bits(*i))))),
            Alg::Named(i) => {
                let mut t = String::new();
                write_str(&mut t, ALG_NAMES[*i as usize % ALG_NAMES.len()]);
                members.push(("alg", Member::Text(t)));
            }
            Alg::Missing => {}
            Alg::Other(v) => members.push(("alg", Member::Json(v))),
        }
        match &self.kid {
            Kid::Missing => {}
            Kid::Known(i) => {
                let kid = ["hs", "rsa", "ec", "ed", "HS", ""][*i as usize % 6];
                members.push(("kid", Member::Text(format!("\"{kid}\""))));
            }
            Kid::Other(v) => members.push(("kid", Member::Json(v))),
        }
        members.push(("typ", Member::Text("\"JWT\"".to_owned())));
        members.extend(
            self.header_extra
                .iter()
                .map(|(k, v)| (k.as_str(), Member::Json(v))),
        );
        let mut out = String::new();
        write_object(&mut out, members.into_iter(), 0);
        out
    }

    /// Claims JSON text.
    pub fn claims(&self) -> String {
        let mut members: Vec<(&str, Member<'_>)> = Vec::new();
        if let Some(iss) = &self.iss {
            members.push(("iss", Member::Text(iss.json(ISSUER))));
        }
        if let Some(aud) = &self.aud {
            members.push(("aud", Member::Text(aud.json(AUDIENCE))));
        }
        for (name, date) in [("exp", &self.exp), ("nbf", &self.nbf), ("iat", &self.iat)] {
            if let Some(d) = date {
                members.push((name, Member::Text(d.json())));
            }
        }
        for (i, other, value) in &self.claims_extra {
            let name = CLAIM_NAMES
                .get(*i as usize)
                .copied()
                .unwrap_or(other.as_str());
            members.push((name, Member::Json(value)));
        }
        let mut out = String::new();
        write_object(&mut out, members.into_iter(), 0);
        out
    }

    /// The finished (possibly tampered) token.
    pub fn token(&self) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.header()),
            URL_SAFE_NO_PAD.encode(self.claims())
        );
        let signature = match &self.signature {
            Signature::Hmac => {
                let alg = match &self.alg {
                    Alg::Hs(i) => format!("HS{}", hs_bits(*i)),
                    _ => "HS256".to_owned(),
                };
                URL_SAFE_NO_PAD.encode(hmac_sign(&alg, input.as_bytes()).unwrap_or_default())
            }
            Signature::HmacAs(i) => URL_SAFE_NO_PAD.encode(
                hmac_sign(&format!("HS{}", hs_bits(*i)), input.as_bytes()).unwrap_or_default(),
            ),
            Signature::Bytes(b) => URL_SAFE_NO_PAD.encode(b),
            Signature::Text(t) => t.clone(),
        };
        let mut token = format!("{input}.{signature}").into_bytes();
        for t in &self.tamper {
            let at = |i: u16, len: usize| if len == 0 { 0 } else { i as usize % len };
            match t {
                Tamper::Set(i, b) if !token.is_empty() => {
                    let i = at(*i, token.len());
                    token[i] = *b;
                }
                Tamper::Set(..) => {}
                Tamper::Insert(i, b) => {
                    let i = at(*i, token.len() + 1);
                    token.insert(i, *b);
                }
                Tamper::Remove(i) if !token.is_empty() => {
                    let i = at(*i, token.len());
                    token.remove(i);
                }
                Tamper::Remove(_) => {}
                Tamper::Append(s) => token.extend_from_slice(s.as_bytes()),
                Tamper::Prepend(s) => {
                    token.splice(0..0, s.bytes());
                }
            }
        }
        String::from_utf8_lossy(&token).into_owned()
    }
}

fn hs_bits(i: u8) -> u16 {
    [256, 384, 512][i as usize % 3]
}

/// The structure-aware target: the spec's token under the chosen policy, also sent as a header.
pub fn run_structured(spec: &TokenSpec) {
    let fx = fixture();
    let token = spec.token();
    let policy = match spec.policy % 3 {
        0 => &fx.bearer,
        1 => &fx.rules,
        _ => &fx.unsigned,
    };
    if let Err(err) = verify_and_check(&token, policy) {
        check_rejected(&err, policy);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        let req = RequestParts {
            headers: &headers,
            query: None,
        };
        evaluate_request(&req, policy);
    }
}

/// The keys target: the first byte picks JWKS document or PEM text; whatever keys parse are put in
/// a snapshot and a fixed HMAC-signed token is verified against it (never panics; accepted only
/// when the snapshot holds an HMAC key).
pub fn run_keys(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = if mode % 2 == 0 {
        match portcullis_auth::parse_jwks(rest, "fuzz") {
            Ok(parsed) => parsed.keys,
            Err(_) => return,
        }
    } else {
        match VerifyingKey::from_pem(Some("k".to_owned()), rest, "fuzz") {
            Ok(keys) => keys,
            Err(_) => return,
        }
    };
    for key in &keys {
        let _ = format!("{key:?}");
    }
    let snapshot = KeySnapshot::new(keys);
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| {
        let claims = format!(r#"{{"iss":"{ISSUER}","exp":{}}}"#, NOW.0 + 60);
        ["HS256", "RS256", "ES256", "ES384", "EdDSA", "PS256"]
            .iter()
            .map(|alg| sign_hmac(&format!(r#"{{"alg":"{alg}"}}"#), &claims))
            .collect()
    });
    for token in tokens {
        if let Ok(verified) = verify_token(token, &snapshot, true) {
            assert!(
                snapshot.keys.iter().any(|k| k.family == portcullis_auth::KeyFamily::Hmac),
                "a token HMAC-signed with the fuzz secret verified without an HMAC key: {verified:?}"
            );
        }
    }
}
