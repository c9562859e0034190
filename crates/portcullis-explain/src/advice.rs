//! Fix sentences: one per reason code a request can produce ([`fix_for`]), and, for a refused
//! token, one built from the token and the policy ([`token_fix`]): the audience that is almost
//! the expected one, the Entra v1 issuer where v2 is expected, the scopes in `scope` where `scp`
//! is read, the seconds a clock is off, the kids the key set does hold, the token in the wrong
//! header.
//!
//! The reason codes are those of `docs/errors.md`; a test in `portcullis-proxy` fails when the
//! catalogue of answers gains a reason [`fix_for`] does not know.

use portcullis_auth::{AuthError, Claim, ClaimKind, Claims, Policy, TokenSource};

/// The fix for a reason code, in general terms (the step's own detail names the specifics).
/// `None` for a code this module does not know (a test keeps the catalogue covered).
pub fn fix_for(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "ok" => "Nothing to fix: the request is forwarded to the backend.",
        "TokenNotPresent" => "Send the token where the policy reads it: by default `Authorization: Bearer <token>` (see `header-name` / `query-parameter-name` of the policy).",
        "TokenExpired" => "Get a new token. If it was issued moments ago, the clocks of the identity provider and the gateway disagree: fix them (NTP) or raise `clock-skew`.",
        "TokenNotYetValid" => "The token is valid only later (`nbf`, or `iat` in the future): the identity provider's clock runs ahead of the gateway's. Fix the clocks (NTP) or raise `clock-skew`.",
        "TokenSignatureInvalid" => "No key of the policy verifies the signature: the token was changed after it was issued, or signed with a key the policy does not trust. Get a new token from the issuer the policy names.",
        "TokenSignatureKeyNotFound" => "The token's `kid` names no key the gateway has, even after refetching: the token comes from another issuer, tenant or environment than the policy's key sources.",
        "TokenIssuerNotAllowed" => "Add the token's `iss` to the policy's `issuers` (or get a token from a listed issuer).",
        "TokenAudienceNotAllowed" => "Request the token for one of the policy's `audiences` (the resource / scope you ask the identity provider for), or add the token's `aud` to `audiences`.",
        "TokenClaimNotFound" => "The token lacks a claim `required-claims` asks for: have the identity provider add it (an optional claim, a mapper), or remove the rule.",
        "TokenClaimValueNotAllowed" => "A claim, scope or role holds none of the values the rule accepts: grant the user or application the scope or role, or correct the rule's values.",
        "JwtInvalid" => "The token is not a well-formed JWT the policy accepts: send the whole token (three base64url parts joined by dots, no quotes or line breaks) as `Authorization: Bearer <token>`.",
        "TokenDecryptionFailed" => "The encrypted token (JWE) is not for a key in the policy's `decryption-keys` (or uses an algorithm it does not accept): configure the identity provider to encrypt for the gateway's key.",
        "KeysUnavailable" => "The gateway has no usable signing keys for the policy: check that the identity provider's discovery / JWKS URL is reachable from the gateway (`/readyz` stays 503 until they load).",
        "HeaderNotFound" => "Send the header the `check-header` statement names.",
        "HeaderValueNotAllowed" => "Send one of the values the `check-header` statement lists for that header.",
        "NoRoute" => "No route's `match:` accepts this host, path and method: see why each route did not match, and fix the URL or add a route.",
        "RequestHeaderFieldsTooLarge" => "Send fewer or smaller headers: they may total 64 KiB at most.",
        "RateLimitStoreUnavailable" => "The shared rate-limit store (Redis) did not answer: bring it back, or set `rate-limit-store-failure: open` to let calls through uncounted.",
        "CallerIpNotAllowed" => "The client address is not allowed by the `ip-filter`: call from an allowed address, list it, or (behind a load balancer) add the balancer to `server.trusted-proxies` so the forwarded address is used.",
        "CorsPreflight" => "Nothing to fix: the preflight is allowed and answered by the gateway.",
        "CorsOriginNotAllowed" => "Add the page's origin (and the method and headers it asks for) to the `cors` statement's `allowed-origins` (`allowed-methods`, `allowed-headers`).",
        "MockResponse" => "Nothing to fix: the policy's `mock-response` answers without calling the backend.",
        "ReturnResponse" => "Nothing to fix: the policy's `return-response` answers without calling the backend.",
        "InvalidRewrite" => "The `rewrite-uri` template produced a path that cannot be made canonical (a value with `..` or an encoded slash): fix the template or the value it takes.",
        "UpstreamUnavailable" => "The backend could not be reached: check that it runs at the route's upstream address.",
        "UpstreamTimeout" => "The backend did not answer within the route's `connect-timeout` / `timeout`: speed it up or raise them.",
        "ProxyError" => "The request could not be read or proxied: see the gateway's log line for this request id.",
        "SubscriptionKeyMissing" => "This API needs a subscription key: send it in the `Ocp-Apim-Subscription-Key` header (or the `subscription-key` query parameter, or the names the route's `subscription:` sets).",
        "SubscriptionKeyInvalid" => "The subscription key is not the key of an active subscription whose scope (all APIs, this API, or a product holding it) covers this route: check the key, the subscription's `state`, and that `run` was given it (`--subscription-key NAME=KEY`).",
        "ClientClosedRequest" => "The client closed the connection before the answer was complete: nothing to fix in the gateway; look at the client's own timeout.",
        "RateLimitExceeded" => "Too many calls in the window: wait for `Retry-After` seconds, or raise the statement's `calls` / `renewal-period`.",
        "QuotaExceeded" => "The quota ran out: wait until it renews, or raise `calls` / `bandwidth`.",
        "InvalidRequestTarget" => "Send an origin-form target starting with `/` (absolute-form only with the same host, `*` only with OPTIONS), without a `#fragment`.",
        "InvalidPath" => "Percent-encode the path's special characters (space as `%20`), and no control characters or broken `%` escapes.",
        "DoubleEncodedPath" => "Encode the path once: `%252e` is a `%2e` encoded twice.",
        "EncodedSlash" => "Do not encode `/` as `%2F` or use `\\` in the path (or set `path-normalisation.escaped-slashes: keep` if the backend needs it).",
        "PathTraversal" => "Remove the `..` segments that climb above the root.",
        "PathParameter" => "Remove the `;` path parameter (or set `path-normalisation.path-parameters: strip`).",
        "InvalidQuery" => "Percent-encode spaces, control characters and non-ASCII in the query.",
        "MethodCase" => "Write the method in upper case (`GET`, not `get`): methods are case-sensitive.",
        "InvalidHost" => "Send exactly one well-formed `Host` header.",
        "HostMismatch" => "The absolute-form URL and the `Host` header must name the same host.",
        "AmbiguousFraming" => {
            "Frame the body with one `Content-Length` or `Transfer-Encoding: chunked`, spelled \
             with `-`."
        }
        "TransferCodingNotImplemented" => {
            "Send the body with `Transfer-Encoding: chunked` alone or a `Content-Length`; a \
             compressed body is `Content-Encoding: gzip`, which passes untouched."
        }
        "ExpectationFailed" => "Send no `Expect` header, or `Expect: 100-continue` only.",
        "MissingHost" => "Send a `Host` header: HTTP/1.1 requires one (RFC 9112 3.2).",
        "MethodOverride" => {
            "Send the method itself (`DELETE`), without `X-HTTP-Method-Override` or a `_method` \
             parameter: the backend would run another method than the one authorised."
        }
        _ => return None,
    })
}

/// What a token fix sentence may look at: the policy, the token's header and (signature-checked)
/// claims, the key set, the time and the request's other headers.
#[derive(Debug)]
pub struct Facts<'a> {
    /// The policy that judged the token.
    pub policy: &'a Policy,
    /// The token's claims, when its signature was checked (or it was decoded at all).
    pub claims: Option<&'a Claims>,
    /// The token's `kid`.
    pub kid: Option<&'a str>,
    /// The token's `alg`.
    pub alg: Option<&'a str>,
    /// The kids of the keys the gateway holds for the policy.
    pub kids: Vec<String>,
    /// The time the token was judged at (Unix seconds).
    pub now: i64,
    /// The request's headers (to find a token sent in the wrong place).
    pub headers: &'a http::HeaderMap,
    /// The request's query.
    pub query: Option<&'a str>,
}

fn list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    format!("[{}]", quoted.join(", "))
}

fn claim_text(claims: &Claims, name: &str) -> Vec<String> {
    claims
        .lookup(name)
        .map(|c| portcullis_auth::ClaimValues::from_claim(c, Some(" ")).0)
        .unwrap_or_default()
}

/// Levenshtein distance, bounded use only (short identifiers).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Two values that differ by a slip: case, a trailing slash, or at most two characters.
fn near(a: &str, b: &str) -> bool {
    a != b
        && (a.eq_ignore_ascii_case(b)
            || a.trim_end_matches('/') == b.trim_end_matches('/')
            || distance(a, b) <= 2)
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

const ENTRA_V1: &str = "https://sts.windows.net/";
const ENTRA_V2: &str = "https://login.microsoftonline.com/";

/// The fix sentence for a refused token, as specific as the facts allow.
pub fn token_fix(err: &AuthError, f: &Facts<'_>) -> String {
    let specific = match err {
        AuthError::TokenNotPresent => not_present(f),
        AuthError::TokenExpired => expired(f),
        AuthError::TokenNotYetValid => not_yet_valid(f),
        AuthError::TokenSignatureInvalid => signature_invalid(f),
        AuthError::TokenSignatureKeyNotFound { kid } => Some(kid_not_found(kid.as_deref(), f)),
        AuthError::TokenIssuerNotAllowed => issuer(f),
        AuthError::TokenAudienceNotAllowed => audience(f),
        AuthError::TokenClaimNotFound { claims } => Some(claim_missing(claims, f)),
        AuthError::TokenClaimValueNotAllowed { claim, kind, .. } => {
            Some(value_not_allowed(claim, *kind, f))
        }
        AuthError::JwtInvalid { detail } => Some(invalid(detail, f)),
        AuthError::TokenDecryptionFailed { .. } => None,
        AuthError::KeysUnavailable => keys_unavailable(f),
    };
    specific
        .or_else(|| fix_for(err.reason()).map(str::to_owned))
        .unwrap_or_default()
}

fn source_text(source: &TokenSource) -> String {
    match source {
        TokenSource::Header {
            name,
            require_scheme: Some(scheme),
        } if name == http::header::AUTHORIZATION => format!("`Authorization: {scheme} <token>`"),
        TokenSource::Header { name, .. } => format!("the header `{name}`"),
        TokenSource::Query { name } => format!("the query parameter `{name}`"),
    }
}

/// A value that looks like a JWT (or a scheme followed by one).
fn holds_jwt(value: &str) -> bool {
    value.contains("eyJ") && value.matches('.').count() >= 2
}

fn not_present(f: &Facts<'_>) -> Option<String> {
    let want = source_text(&f.policy.token_source);
    let elsewhere = f
        .headers
        .iter()
        .find(|(_, v)| v.to_str().is_ok_and(holds_jwt))
        .map(|(name, _)| format!("the header `{name}`"))
        .or_else(|| {
            f.query?.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                holds_jwt(v).then(|| format!("the query parameter `{k}`"))
            })
        });
    Some(match elsewhere {
        Some(place) => format!(
            "The request carries a token in {place}, but the policy reads it from {want}: send it there (or change the policy's token source)."
        ),
        None => format!("The request carries no token: send it as {want}."),
    })
}

fn exp_of(f: &Facts<'_>, name: &str) -> Option<i64> {
    let c = f.claims?.get(name)?;
    c.as_number()
        .and_then(serde_json::Number::as_f64)
        .map(|v| v as i64)
}

fn expired(f: &Facts<'_>) -> Option<String> {
    let exp = exp_of(f, "exp")?;
    let ago = f.now - exp;
    let skew = f.policy.clock_skew;
    Some(format!(
        "The token expired {ago} s ago (`exp` {exp}, now {now}, `clock-skew` {skew} s): get a new token. If it was issued moments ago, the identity provider's clock is about {ago} s behind the gateway's: fix the clocks (NTP) or raise `clock-skew` above {ago}.",
        now = f.now
    ))
}

fn not_yet_valid(f: &Facts<'_>) -> Option<String> {
    let skew = f.policy.clock_skew;
    let (name, at) = match exp_of(f, "nbf") {
        Some(nbf) if nbf > f.now + skew as i64 => ("nbf", nbf),
        _ => ("iat", exp_of(f, "iat")?),
    };
    let ahead = at - f.now;
    Some(format!(
        "The token's `{name}` is {ahead} s in the future ({name} {at}, now {now}, `clock-skew` {skew} s): the identity provider's clock is about {ahead} s ahead of the gateway's. Fix the clocks (NTP) or raise `clock-skew` above {ahead}.",
        now = f.now
    ))
}

fn signature_invalid(f: &Facts<'_>) -> Option<String> {
    let alg = f.alg.unwrap_or("?");
    if alg.starts_with("HS") {
        return Some(format!(
            "The token is signed with a shared secret ({alg}) and the policy's secret does not verify it: the secrets differ (check `signing-keys` against the issuer's secret), or the token was changed."
        ));
    }
    let kid = f.kid?;
    Some(format!(
        "The key with kid `{kid}` does not verify the signature ({alg}): the token was changed after it was issued, or another key was published under the same kid (an identity provider that restarted with new keys?). Get a new token."
    ))
}

fn kid_not_found(kid: Option<&str>, f: &Facts<'_>) -> String {
    let kid = kid.or(f.kid).unwrap_or("?");
    let iss = f
        .claims
        .and_then(|c| c.get("iss"))
        .and_then(Claim::as_str)
        .map(|i| format!(" (its `iss` is `{i}`)"))
        .unwrap_or_default();
    format!(
        "kid `{kid}` is not among the {n} key(s) the gateway holds for this policy {kids}, even after refetching: the token{iss} was signed by another issuer, tenant or environment than the policy's key sources, or by a key the identity provider has not published yet.",
        n = f.kids.len(),
        kids = list(&f.kids)
    )
}

fn tenant_of(iss: &str) -> Option<&str> {
    let rest = iss
        .strip_prefix(ENTRA_V1)
        .or_else(|| iss.strip_prefix(ENTRA_V2))?;
    rest.split('/').next()
}

fn issuer(f: &Facts<'_>) -> Option<String> {
    let claims = f.claims?;
    let Some(iss) = claims.get("iss").and_then(Claim::as_str) else {
        return Some(
            "The token has no `iss` claim: the policy lists `issuers`, so a token must name one."
                .to_owned(),
        );
    };
    let expected = &f.policy.issuers;
    let tid = claims.get("tid").and_then(Claim::as_str);
    let listed = expected
        .iter()
        .any(|a| portcullis_auth::issuer_matches(a, iss, tid));
    if listed {
        if let Some(tid) = tid.filter(|t| !f.policy.tenants.iter().any(|x| x == t)) {
            if !f.policy.tenants.is_empty() {
                return Some(format!(
                    "The token's tenant `tid` `{tid}` is not in the policy's `tenants` {}: add it, or get a token from a listed tenant.",
                    list(&f.policy.tenants)
                ));
            }
        }
        return Some(format!(
            "`iss` `{iss}` is listed, but the key that signed the token is published for another issuer (a key of one discovery document verifies only that issuer's tokens): list this issuer's own `openid-config`."
        ));
    }
    let v1 = iss.starts_with(ENTRA_V1);
    let v2 = iss.starts_with(ENTRA_V2) && iss.trim_end_matches('/').ends_with("/v2.0");
    let wants_v2 = expected
        .iter()
        .any(|e| e.starts_with(ENTRA_V2) && e.trim_end_matches('/').ends_with("/v2.0"));
    let wants_v1 = expected.iter().any(|e| e.starts_with(ENTRA_V1));
    let tenant = tenant_of(iss).unwrap_or("{tenant}");
    if v1 && wants_v2 && !wants_v1 {
        return Some(format!(
            "The token is an Entra ID v1 token (`iss` `{iss}`) but the policy expects v2 issuers {}: set `\"accessTokenAcceptedVersion\": 2` in the API's app registration manifest so Entra issues v2 tokens, or add the v1 issuer `{ENTRA_V1}{tenant}/` to `issuers`.",
            list(expected)
        ));
    }
    if v2 && wants_v1 && !wants_v2 {
        return Some(format!(
            "The token is an Entra ID v2 token (`iss` `{iss}`) but the policy expects v1 issuers {}: add the v2 issuer `{ENTRA_V2}{tenant}/v2.0` to `issuers`, or set `accessTokenAcceptedVersion` back to 1 (null) in the app registration.",
            list(expected)
        ));
    }
    if let (Some(got), Some(want)) = (tenant_of(iss), expected.iter().find_map(|e| tenant_of(e))) {
        if got != want && want != "{tenantid}" {
            return Some(format!(
                "The token is from tenant `{got}` but the policy expects tenant `{want}` (`issuers` {}): get the token from that tenant, or add this tenant's issuer.",
                list(expected)
            ));
        }
    }
    if let Some(close) = expected.iter().find(|e| near(e, iss)) {
        return Some(format!(
            "`iss` `{iss}` is not in `issuers`, but `{close}` is almost the same: a typo (or a trailing `/`)? Issuers compare exactly."
        ));
    }
    Some(format!(
        "`iss` `{iss}` is not in the policy's `issuers` {}: add it if you trust that issuer, or get a token from a listed one.",
        list(expected)
    ))
}

fn audience(f: &Facts<'_>) -> Option<String> {
    let claims = f.claims?;
    let expected = &f.policy.audiences;
    let found = claim_text(claims, "aud");
    if found.is_empty() {
        return Some(format!(
            "The token has no `aud` claim, and the policy requires one of {}: request the token for the API (its scope or resource).",
            list(expected)
        ));
    }
    let which = match expected.as_slice() {
        [one] => format!("audience `{one}` is"),
        many => format!("none of the audiences {} is", list(many)),
    };
    let mut sentence = format!("{which} not in the token's `aud` {}", list(&found));
    if expected.iter().any(|e| found.iter().any(|a| near(e, a))) {
        sentence.push_str(": a typo?");
    } else if found.iter().any(|a| looks_like_guid(a))
        && expected.iter().any(|e| e.starts_with("api://"))
    {
        sentence.push_str(": Entra v2 tokens carry the application (client) ID as `aud`, v1 tokens the Application ID URI (`api://...`). Add the client ID to `audiences`.");
    } else if expected.iter().any(|e| looks_like_guid(e))
        && found.iter().any(|a| a.starts_with("api://"))
    {
        sentence.push_str(": this is a v1-style audience (the Application ID URI); the policy lists the client ID. Add the `api://` URI to `audiences`, or have Entra issue v2 tokens.");
    } else {
        sentence.push_str(": the token was issued for another API. Request it for one of the policy's audiences (the scope you ask for decides `aud`), or add its audience.");
    }
    Some(sentence)
}

fn claim_missing(missing: &[String], f: &Facts<'_>) -> String {
    let mut out = format!("The token lacks the required claim(s) {}", list(missing));
    let has = |n: &str| {
        f.claims
            .is_some_and(|c| c.lookup(n).is_some_and(|v| !v.is_null()))
    };
    for name in missing {
        let twin = match name.as_str() {
            "scp" => Some("scope"),
            "scope" => Some("scp"),
            "roles" => Some("realm_access.roles"),
            "role" => Some("roles"),
            _ => None,
        };
        if let Some(twin) = twin.filter(|t| has(t)) {
            out.push_str(&format!(
                ": it carries `{twin}` instead of `{name}` ({})",
                if name == "scp" || name == "scope" {
                    "Entra puts delegated scopes in `scp`, most other identity providers in `scope`; the `scopes` rule reads `scp` and else `scope`, so use it instead of a required claim"
                } else {
                    "name the claim the token carries"
                }
            ));
            return out + ".";
        }
    }
    let present: Vec<String> = f
        .claims
        .map(|c| c.iter().map(|(k, _)| k.to_owned()).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        ". The token has {}: have the identity provider add the claim (an optional claim or a mapper), or correct the rule's name.",
        list(&present)
    ));
    out
}

fn value_not_allowed(claim: &str, kind: ClaimKind, f: &Facts<'_>) -> String {
    let found = f.claims.map(|c| claim_text(c, claim)).unwrap_or_default();
    let p = f.policy;
    match kind {
        ClaimKind::Scope => {
            let rule = p.scopes.as_ref();
            let want = rule.map(|r| r.values.clone()).unwrap_or_default();
            let how = rule.map_or("all", |r| match r.r#match {
                portcullis_auth::Match::All => "all",
                portcullis_auth::Match::Any => "one",
            });
            format!(
                "The `scopes` rule wants {how} of {} in `{claim}`; the token's `{claim}` has {}: request the token with the missing scope (and grant it to the client), or correct the rule.",
                list(&want),
                list(&found)
            )
        }
        ClaimKind::Role => {
            let want = p.roles.as_ref().map(|r| r.values.clone()).unwrap_or_default();
            format!(
                "The `roles` rule wants {} in `{claim}`; the token has {}: assign the role to the user or application (app roles in Entra, realm/client roles in Keycloak), or correct the rule.",
                list(&want),
                list(&found)
            )
        }
        ClaimKind::Claim if (claim == "azp" || claim == "appid") && !p.client_application_ids.is_empty() => format!(
            "The calling application `{claim}` {} is not in `client-application-ids` {}: add its client ID, or call from a listed application.",
            list(&found),
            list(&p.client_application_ids)
        ),
        ClaimKind::Claim => {
            let want = p
                .required_claims
                .iter()
                .chain(p.any_of.iter().flat_map(|g| g.required_claims.iter()))
                .find(|r| r.name == claim)
                .map(|r| r.values.clone())
                .unwrap_or_default();
            let typo = if want.iter().any(|w| found.iter().any(|v| near(w, v))) {
                " (a typo?)"
            } else {
                ""
            };
            format!(
                "`required-claims` accepts {} for `{claim}`; the token's `{claim}` is {}{typo}: correct the rule's values or the claim.",
                list(&want),
                list(&found)
            )
        }
    }
}

fn invalid(detail: &str, f: &Facts<'_>) -> String {
    match detail {
        "wrong authorization scheme" | "malformed authorization header" => {
            let scheme = f
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' ').map(|(s, _)| s))
                .filter(|s| !holds_jwt(s))
                .map(|s| format!("the scheme `{s}`"))
                .unwrap_or_else(|| "no scheme".to_owned());
            format!(
                "The `Authorization` header has {scheme}; the policy reads {}: send `Authorization: Bearer <token>` (one space, nothing after the token).",
                source_text(&f.policy.token_source)
            )
        }
        "several token headers" | "several token parameters" => {
            "The request carries the token twice: send exactly one.".to_owned()
        }
        "missing exp" => "The token has no `exp` and the policy requires one (`require-expiration-time: true`): have the identity provider set a lifetime, or set `require-expiration-time: false`.".to_owned(),
        d if d.contains("none") || d.contains("unsigned") => format!(
            "The token is not signed ({d}) and the policy requires signed tokens: get a signed token."
        ),
        d => format!(
            "The token is not a well-formed JWT the policy accepts ({d}): send the whole token (three base64url parts joined by dots, no quotes or line breaks) where the policy reads it, {}.",
            source_text(&f.policy.token_source)
        ),
    }
}

fn keys_unavailable(f: &Facts<'_>) -> Option<String> {
    Some(format!(
        "The gateway holds no usable signing keys for policy `{}` (they were never fetched, are older than `max-stale`, or the discovery document has not told its issuer yet): check that the identity provider's discovery / JWKS URL is reachable from the gateway.",
        f.policy.name
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn facts<'a>(
        policy: &'a Policy,
        claims: Option<&'a Claims>,
        h: &'a http::HeaderMap,
    ) -> Facts<'a> {
        Facts {
            policy,
            claims,
            kid: Some("k1"),
            alg: Some("RS256"),
            kids: vec!["a".into(), "b".into()],
            now: 1_000,
            headers: h,
            query: None,
        }
    }

    #[test]
    fn audience_typo_is_named() {
        let mut p = Policy::new("p");
        p.audiences = vec!["api://orders".into()];
        let c = Claims::parse(r#"{"aud":"api://order"}"#.into()).unwrap();
        let h = http::HeaderMap::new();
        let s = token_fix(
            &AuthError::TokenAudienceNotAllowed,
            &facts(&p, Some(&c), &h),
        );
        assert_eq!(
            s,
            "audience `api://orders` is not in the token's `aud` [`api://order`]: a typo?"
        );
    }

    #[test]
    fn v1_issuer_where_v2_is_expected() {
        let mut p = Policy::new("p");
        p.issuers = vec!["https://login.microsoftonline.com/t1/v2.0".into()];
        let c = Claims::parse(r#"{"iss":"https://sts.windows.net/t1/"}"#.into()).unwrap();
        let h = http::HeaderMap::new();
        let s = token_fix(&AuthError::TokenIssuerNotAllowed, &facts(&p, Some(&c), &h));
        assert!(s.contains("v1 token"), "{s}");
        assert!(s.contains("accessTokenAcceptedVersion"), "{s}");
    }

    #[test]
    fn expired_counts_seconds() {
        let p = Policy::new("p");
        let c = Claims::parse(r#"{"exp":900}"#.into()).unwrap();
        let h = http::HeaderMap::new();
        let s = token_fix(&AuthError::TokenExpired, &facts(&p, Some(&c), &h));
        assert!(s.starts_with("The token expired 100 s ago"), "{s}");
    }

    #[test]
    fn scope_in_the_other_claim() {
        let mut p = Policy::new("p");
        p.required_claims = vec![portcullis_auth::ClaimRule {
            name: "scp".into(),
            r#match: Default::default(),
            separator: None,
            values: vec![],
        }];
        let c = Claims::parse(r#"{"scope":"read"}"#.into()).unwrap();
        let h = http::HeaderMap::new();
        let err = AuthError::TokenClaimNotFound {
            claims: vec!["scp".into()],
        };
        let s = token_fix(&err, &facts(&p, Some(&c), &h));
        assert!(s.contains("carries `scope` instead of `scp`"), "{s}");
    }

    #[test]
    fn token_in_the_wrong_header() {
        let p = Policy::new("p");
        let mut h = http::HeaderMap::new();
        h.insert("x-token", "eyJa.eyJb.c".parse().unwrap());
        let s = token_fix(&AuthError::TokenNotPresent, &facts(&p, None, &h));
        assert!(s.contains("in the header `x-token`"), "{s}");
        assert!(!s.contains("eyJa"), "never the token: {s}");
    }

    #[test]
    fn distance_and_near() {
        assert_eq!(distance("api://orders", "api://order"), 1);
        assert!(near("https://a/", "https://a"));
        assert!(!near("abc", "abc"));
        assert!(!near("orders", "payments"));
    }
}
