//! The report of one token: where it came from, its decoded header and claims, the signature
//! check, and each claim rule of the policy with the values expected and found. Never the whole
//! token, never its signature: [`excerpt`] shows the first characters and the length.
//!
//! The verdicts are the auth core's: the rule the [`AuthError`] names failed, the rules the core
//! checks before it passed, the ones after were not reached (the order of
//! `portcullis_auth::check_claims`: lifetime, issuer, audience, client application, required
//! claims, scopes, roles). Nothing is re-judged here.

use base64::Engine;
use portcullis_auth::{
    AuthError, ClaimKind, ClaimValues, Claims, KeySnapshot, Match, Policy, TokenSource, UnixTime,
    VerifiedToken,
};
use serde_json::{Map, Value};

use crate::advice::{token_fix, Facts};
use crate::model::{RuleCheck, TokenReport, Verdict};

/// Characters of a token shown (a JWT starts with its base64url header: nothing secret).
const SHOWN: usize = 8;

/// The first characters of a token and its length: `eyJhbGci... (812 chars)`.
pub fn excerpt(raw: &str) -> String {
    let head: String = raw.chars().take(SHOWN).collect();
    format!("{head}... ({} chars)", raw.len())
}

/// What [`report`] reads.
#[derive(Debug)]
pub struct TokenInput<'a> {
    /// The token as extracted from the request.
    pub raw: &'a str,
    /// The policy that judged it.
    pub policy: &'a Policy,
    /// The keys it was judged with.
    pub keys: &'a KeySnapshot,
    /// When.
    pub now: UnixTime,
    /// The token once its signature was checked (`None`: the check failed or was not reached).
    pub verified: Option<&'a VerifiedToken>,
    /// Why the token was refused (`None`: it passed).
    pub error: Option<&'a AuthError>,
    /// The request's headers.
    pub headers: &'a http::HeaderMap,
    /// The request's query.
    pub query: Option<&'a str>,
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Where a policy reads its token, in words.
pub fn source_words(source: &TokenSource) -> String {
    match source {
        TokenSource::Header {
            name,
            require_scheme: Some(s),
        } if name == http::header::AUTHORIZATION => format!("Authorization: {s}"),
        TokenSource::Header { name, .. } if name == http::header::AUTHORIZATION => {
            "Authorization: Bearer (or a bare token)".to_owned()
        }
        TokenSource::Header { name, .. } => format!("header {name}"),
        TokenSource::Query { name } => format!("query parameter {name}"),
    }
}

/// The report of a token and, when it was refused, the fix sentence.
pub fn report(input: &TokenInput<'_>) -> (TokenReport, Option<String>) {
    let mut parts = input.raw.split('.');
    let header = parts.next().and_then(decode_part).unwrap_or_default();
    let segments = input.raw.split('.').count();
    let (claims, claims_verified) = match input.verified {
        Some(t) => (Some(t.claims.to_map()), true),
        // A signed token's payload, decoded without trust, to help read a refusal (an encrypted
        // token's second part is its encrypted key: nothing to show).
        None if segments == 3 => (input.raw.split('.').nth(1).and_then(decode_part), false),
        None => (None, false),
    };
    let str_of =
        |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let kid = str_of(&header, "kid");
    let alg = str_of(&header, "alg");
    let signature = match (input.verified, input.error) {
        (Some(t), _) => match (&t.kid, t.alg) {
            _ if t.key_fingerprint.is_none() => {
                "not signed (accepted: require-signed-tokens is false)".to_owned()
            }
            (Some(kid), Some(alg)) => format!("verified ({}, key `{kid}`)", alg.name()),
            (None, Some(alg)) => format!("verified ({}, a key without kid)", alg.name()),
            _ => "verified".to_owned(),
        },
        (None, Some(AuthError::TokenSignatureInvalid)) => {
            "NOT verified: no key of the policy verifies it".to_owned()
        }
        (None, Some(AuthError::TokenSignatureKeyNotFound { .. })) => {
            "NOT verified: no key with its kid".to_owned()
        }
        (None, Some(AuthError::TokenDecryptionFailed { .. })) => {
            "not checked: the token could not be decrypted".to_owned()
        }
        (None, Some(AuthError::KeysUnavailable)) => "not checked: no keys".to_owned(),
        (None, _) => "not checked: the token was refused before".to_owned(),
    };
    let rules = input
        .verified
        .map(|t| rules(t, input.policy, input.now, input.error))
        .unwrap_or_default();
    let verified_claims;
    let facts_claims: Option<&Claims> = match input.verified {
        Some(t) => Some(&t.claims),
        None => {
            verified_claims = claims
                .as_ref()
                .and_then(|m| Claims::parse(Value::Object(m.clone()).to_string()).ok());
            verified_claims.as_ref()
        }
    };
    let fix = input.error.map(|err| {
        let facts = Facts {
            policy: input.policy,
            claims: facts_claims,
            kid: kid.as_deref(),
            alg: alg.as_deref(),
            kids: input
                .keys
                .keys
                .iter()
                .filter_map(|k| k.kid.clone())
                .collect(),
            now: input.now.secs(),
            headers: input.headers,
            query: input.query,
        };
        token_fix(err, &facts)
    });
    let report = TokenReport {
        source: source_words(&input.policy.token_source),
        excerpt: excerpt(input.raw),
        header,
        claims,
        claims_verified,
        signature,
        rules,
    };
    (report, fix)
}

fn values(claims: &Claims, name: &str, separator: Option<&str>) -> Vec<String> {
    claims
        .lookup(name)
        .map(|c| ClaimValues::from_claim(c, separator).0)
        .unwrap_or_default()
}

fn how(m: Match) -> &'static str {
    match m {
        Match::All => "all of",
        Match::Any => "one of",
    }
}

/// Which rule an error names (an index into the rules [`rules`] lists), or `None` for an error
/// raised before the rules (every rule then shows `skip`).
fn failing(
    rules: &[(String, Vec<String>, Vec<String>)],
    policy: &Policy,
    err: &AuthError,
) -> Option<Vec<usize>> {
    let find = |name: &str| rules.iter().position(|(r, _, _)| r == name);
    let idx = match err {
        AuthError::TokenExpired | AuthError::TokenNotYetValid => vec![find("lifetime")?],
        AuthError::JwtInvalid {
            detail: "missing exp",
        } => vec![find("lifetime")?],
        AuthError::TokenIssuerNotAllowed | AuthError::KeysUnavailable => vec![find("issuer")?],
        AuthError::TokenAudienceNotAllowed => vec![find("audience")?],
        AuthError::TokenClaimNotFound { claims } => claims
            .iter()
            .filter_map(|c| find(&format!("required claim {c}")))
            .collect(),
        AuthError::TokenClaimValueNotAllowed { claim, kind, .. } => match kind {
            ClaimKind::Scope => vec![find("scopes")?],
            ClaimKind::Role => vec![find("roles")?],
            ClaimKind::Claim => {
                let named = find(&format!("required claim {claim}"));
                let client = (!policy.client_application_ids.is_empty())
                    .then(|| find("client application"))
                    .flatten();
                vec![named.or(client)?]
            }
        },
        _ => return None,
    };
    Some(idx)
}

/// A requirement group: label prefix, issuers, audiences, required claims.
type Group<'p> = (
    String,
    &'p [String],
    &'p [String],
    &'p [portcullis_auth::ClaimRule],
);

/// The policy's rules with the token's values; verdicts from the auth core's error.
fn rules(t: &VerifiedToken, p: &Policy, now: UnixTime, err: Option<&AuthError>) -> Vec<RuleCheck> {
    let c = &t.claims;
    let mut out: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let num = |v: Option<f64>, name: &str| {
        v.map(|v| {
            format!(
                "{name} {} ({:+} s from now)",
                v as i64,
                v as i64 - now.secs()
            )
        })
    };
    let mut life = Vec::new();
    life.extend(num(t.exp, "exp"));
    life.extend(num(t.nbf, "nbf"));
    life.extend(num(t.iat, "iat"));
    out.push((
        "lifetime".into(),
        vec![format!(
            "exp after now ({}){}, clock-skew {} s",
            now.secs(),
            if p.require_expiration_time {
                ", exp required"
            } else {
                ""
            },
            p.clock_skew
        )],
        life,
    ));
    let groups: Vec<Group<'_>> = if p.any_of.is_empty() {
        vec![(String::new(), &p.issuers, &p.audiences, &p.required_claims)]
    } else {
        p.any_of
            .iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    format!("any-of[{i}] "),
                    g.issuers.as_slice(),
                    g.audiences.as_slice(),
                    g.required_claims.as_slice(),
                )
            })
            .collect()
    };
    for (prefix, issuers, audiences, required) in groups {
        if !issuers.is_empty() || prefix.is_empty() {
            let expected = if issuers.is_empty() {
                vec!["(the discovery documents' issuers)".to_owned()]
            } else {
                issuers.to_vec()
            };
            out.push((format!("{prefix}issuer"), expected, values(c, "iss", None)));
        }
        if !audiences.is_empty() {
            out.push((
                format!("{prefix}audience"),
                audiences.to_vec(),
                values(c, "aud", None),
            ));
        }
        if prefix.is_empty() && !p.client_application_ids.is_empty() {
            let name = if c.get("azp").is_some() {
                "azp"
            } else {
                "appid"
            };
            out.push((
                "client application".into(),
                p.client_application_ids.clone(),
                values(c, name, None),
            ));
        }
        for r in required {
            let expected = if r.values.is_empty() {
                vec!["(present)".to_owned()]
            } else {
                vec![format!("{} {}", how(r.r#match), r.values.join(", "))]
            };
            out.push((
                format!("{prefix}required claim {}", r.name),
                expected,
                values(c, &r.name, r.separator.as_deref()),
            ));
        }
    }
    if let Some(s) = &p.scopes {
        let name = if c.get("scp").is_some() {
            "scp"
        } else {
            "scope"
        };
        out.push((
            "scopes".into(),
            vec![format!(
                "{} {} (in {name})",
                how(s.r#match),
                s.values.join(" ")
            )],
            values(c, name, Some(" ")),
        ));
    }
    if let Some(r) = &p.roles {
        out.push((
            "roles".into(),
            vec![format!(
                "{} {} (in {})",
                how(r.r#match),
                r.values.join(", "),
                r.claim
            )],
            values(c, &r.claim, None),
        ));
    }
    let failed = err.map(|e| failing(&out, p, e));
    let any_of = !p.any_of.is_empty();
    out.into_iter()
        .enumerate()
        .map(|(i, (rule, expected, found))| {
            let verdict = match &failed {
                None => Verdict::Pass,
                Some(None) => Verdict::Skip,
                Some(Some(bad)) if bad.contains(&i) => Verdict::Fail,
                // Under any-of each group is tried: only the closest group's failure is known.
                Some(Some(_)) if any_of && rule.starts_with("any-of") => Verdict::Skip,
                Some(Some(bad)) if bad.first().is_some_and(|b| i < *b) => Verdict::Pass,
                Some(Some(_)) => Verdict::Skip,
            };
            RuleCheck {
                rule,
                expected,
                found,
                verdict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_never_shows_more_than_the_head() {
        let raw = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let e = excerpt(raw);
        assert_eq!(e, format!("eyJhbGci... ({} chars)", raw.len()));
        assert!(!e.contains("c2lnbmF0dXJl"));
    }
}
