//! Issuer matching, with Entra's multi-tenant issuer templates.
//!
//! Why templates: an Entra app that accepts every tenant discovers its keys at `/common` or
//! `/organizations`, whose documents publish the issuer
//! `https://login.microsoftonline.com/{tenantid}/v2.0`. No literal issuer can be configured for
//! "any tenant", so, as Microsoft's own libraries do, the token's `tid` claim is put in place of
//! `{tenantid}` and the result must equal `iss` exactly. The `tid` must be a lower-case GUID, the
//! only shape Entra issues: anything else (`../`, `/`, upper case, an empty string) could stretch a
//! template over issuers it was never meant to cover.
//!
//! A template only says which tenant a token claims to be from; it is safe only together with
//! the key binding ([`crate::VerifyingKey::speaks_for`]): a template-matched issuer is accepted
//! from keys of the document that published the template (Entra's), never from another source's
//! keys that happen to be in the same policy. `tenants` then narrows the tenants accepted.

/// The placeholder Entra's multi-tenant discovery documents put where the tenant id goes.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// Whether `issuer` is a multi-tenant template (holds [`TENANT_PLACEHOLDER`]).
pub fn is_template(issuer: &str) -> bool {
    issuer.contains(TENANT_PLACEHOLDER)
}

/// A tenant id as Entra writes it: a GUID (8-4-4-4-12) of lower-case hex digits.
pub fn is_tenant_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// Whether the token's `iss` is the issuer `pattern` names: the same text, or, when `pattern` is a
/// template, the same text once the token's `tid` (which must be a lower-case GUID) replaces every
/// `{tenantid}`. Compared in place, without building the substituted string.
pub fn issuer_matches(pattern: &str, iss: &str, tid: Option<&str>) -> bool {
    let mut parts = pattern.split(TENANT_PLACEHOLDER);
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = iss.strip_prefix(first) else {
        return false;
    };
    for part in parts {
        let Some(tid) = tid.filter(|t| is_tenant_id(t)) else {
            return false;
        };
        let Some(after) = rest.strip_prefix(tid).and_then(|r| r.strip_prefix(part)) else {
            return false;
        };
        rest = after;
    }
    // Without a placeholder, `first` was the whole pattern: plain equality.
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

    #[test]
    fn plain_issuers_match_exactly() {
        assert!(issuer_matches("https://a/", "https://a/", None));
        assert!(!issuer_matches("https://a/", "https://a", None));
        assert!(!issuer_matches("https://a/", "https://a/x", Some(T)));
    }

    #[test]
    fn templates_take_the_tid() {
        let iss = format!("https://login.microsoftonline.com/{T}/v2.0");
        assert!(issuer_matches(TEMPLATE, &iss, Some(T)));
        assert!(!issuer_matches(TEMPLATE, &iss, None));
        let other = "0b5b3b2e-3c46-4d7b-8b56-9d1e1d3e4f50";
        assert!(!issuer_matches(TEMPLATE, &iss, Some(other)));
        assert!(!issuer_matches(TEMPLATE, &format!("{iss}/"), Some(T)));
        assert!(!issuer_matches(TEMPLATE, TEMPLATE, Some(T)));
    }

    #[test]
    fn only_lower_case_guids_fill_a_template() {
        let upper = T.to_ascii_uppercase();
        let iss = format!("https://login.microsoftonline.com/{upper}/v2.0");
        assert!(!issuer_matches(TEMPLATE, &iss, Some(&upper)));
        for bad in ["", "x", "../evil", "72f988bf/86f1-41af-91ab-2d7cd011db47"] {
            let iss = format!("https://login.microsoftonline.com/{bad}/v2.0");
            assert!(!issuer_matches(TEMPLATE, &iss, Some(bad)), "{bad:?}");
        }
        assert!(is_tenant_id(T));
        assert!(!is_tenant_id(&T[1..]));
    }
}
