//! `validate-azure-ad-token`: APIM's Entra ID policy, expanded to plain validate-jwt terms.
//!
//! A tenant GUID gives the tenant's v2.0 discovery document (keys) and both issuers Entra uses:
//! v1 `https://sts.windows.net/<tid>/` and v2 `https://login.microsoftonline.com/<tid>/v2.0`.
//! With an `authority:` override (a sovereign cloud, or a stand-in such as the dev token server)
//! nothing is assumed about its issuer strings: both of the tenant's discovery documents,
//! `{authority}/<tid>/.well-known/openid-configuration` (v1) and
//! `{authority}/<tid>/v2.0/.well-known/openid-configuration` (v2), are fetched and the issuers
//! they name are the ones accepted, each bound to its own document's keys, as MSAL and
//! Microsoft.IdentityModel do.
//!
//! `common` and `organizations` accept tokens of any tenant. Their discovery documents publish the
//! issuer template `https://login.microsoftonline.com/{tenantid}/v2.0`, and so does the policy:
//! its issuers are the v1 and v2 templates, matched with the token's `tid` (a lower-case GUID put
//! in place of `{tenantid}` must give `iss` exactly), and the document's keys are bound to them.
//! `tenants:` narrows the tenants accepted (warned when absent), and such a policy must name
//! `client-application-ids`, `backend-application-ids` or `audiences` so that only tokens minted
//! for this API pass.

use portcullis_auth::{Policy, TENANT_PLACEHOLDER};

use crate::groups;
use crate::keys::{self, LIFECYCLE_KEYS};
use crate::model::{KeyLifecycle, KeySource};
use crate::policy;
use crate::walk::{self, Cx, Fields};
use crate::yaml::Node;

/// Entra ID's public authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const V1_ISSUER_HOST: &str = "https://sts.windows.net";

const AAD_KEYS: &[&str] = &[
    "tenant-id",
    "authority",
    "header-name",
    "query-parameter-name",
    "failed-validation-httpcode",
    "failed-validation-error-message",
    "output-token-variable-name",
    "client-application-ids",
    "backend-application-ids",
    "audiences",
    "required-claims",
    "tenants",
    "token-optional",
    "decryption-keys",
    "try-all-signing-keys",
];

/// Which tenant(s) a policy accepts.
enum Tenant {
    One(String),
    Any(&'static str),
}

/// Reads a validate-azure-ad-token block into `policy` and `sources`.
pub(crate) fn read(cx: &mut Cx, node: &Node, policy: &mut Policy, sources: &mut Vec<KeySource>) {
    let mut known = AAD_KEYS.to_vec();
    known.extend_from_slice(LIFECYCLE_KEYS);
    let errors_before = cx.errors();
    let Some(f) = Fields::new(cx, node, "validate-azure-ad-token", &known) else {
        return;
    };
    policy.token_source = policy::token_source(cx, &f, None);
    policy::failure(cx, &f, policy);
    policy::output_token_variable(cx, &f);
    let lifecycle = keys::lifecycle(cx, &f, KeyLifecycle::default());
    let authority = authority(cx, &f);
    policy.client_application_ids = ids(cx, &f, "client-application-ids");
    policy.audiences = ids(cx, &f, "backend-application-ids");
    policy.audiences.extend(ids(cx, &f, "audiences"));
    policy.token_optional = groups::token_optional(cx, &f);
    if let Some(n) = f.get("required-claims") {
        policy.required_claims = policy::required_claims(cx, n);
        if let (true, Some(k)) = (policy.token_optional, f.key("required-claims")) {
            cx.warning(k.pos, groups::optional_rule("required-claims"));
        }
    }
    policy.tenants = groups::tenants(cx, &f);
    policy::decryption_keys(cx, &f, policy);
    policy::try_all_signing_keys(cx, &f, policy);
    let Some(tenant) = tenant(cx, &f) else {
        return;
    };
    let base = authority.as_deref().unwrap_or(DEFAULT_AUTHORITY);
    let tid = match tenant {
        Tenant::One(tid) => tid,
        Tenant::Any(which) => {
            any_tenant_checks(cx, &f, policy, which);
            which.to_owned()
        }
    };
    match authority.as_deref() {
        // Entra's public cloud: the issuers are known, and the v2 document's keys sign the
        // tenant's v1 tokens too (today's behaviour, kept).
        None => {
            policy.issuers = issuers(&tid);
            sources.push(KeySource::OpenIdConfig {
                url: format!("{base}/{tid}/v2.0/.well-known/openid-configuration"),
                issuers: policy.issuers.clone(),
                lifecycle,
            });
        }
        // Another authority (a sovereign cloud, a stand-in): the issuers are what its v1 and v2
        // discovery documents name, as MSAL and Microsoft.IdentityModel take them, so a stand-in
        // serving Entra's real issuer strings (`https://sts.windows.net/<tid>/`) works. Each
        // document's keys speak for its own issuer.
        Some(_) => {
            policy.issuers = Vec::new();
            for version in ["", "/v2.0"] {
                sources.push(KeySource::OpenIdConfig {
                    url: format!("{base}/{tid}{version}/.well-known/openid-configuration"),
                    issuers: Vec::new(),
                    lifecycle,
                });
            }
        }
    }
    if cx.errors() == errors_before && !node.has_unresolved() {
        policy::coverage_warnings(cx, &f, policy, sources);
    }
}

/// The v1 and v2 issuers of a tenant in Entra's public cloud (`common`/`organizations`: the
/// `{tenantid}` templates).
fn issuers(tid: &str) -> Vec<String> {
    let tid = if tid == "common" || tid == "organizations" {
        TENANT_PLACEHOLDER
    } else {
        tid
    };
    vec![
        format!("{V1_ISSUER_HOST}/{tid}/"),
        format!("{DEFAULT_AUTHORITY}/{tid}/v2.0"),
    ]
}

fn any_tenant_checks(cx: &mut Cx, f: &Fields<'_>, policy: &Policy, which: &str) {
    if policy.audiences.is_empty() && policy.client_application_ids.is_empty() {
        cx.error(
            f.pos,
            format!("tenant-id `{which}` accepts tokens of every Entra tenant: set client-application-ids, backend-application-ids or audiences"),
        );
    } else if policy.tenants.is_empty() {
        cx.warning(
            f.pos,
            format!("tenant-id `{which}` accepts tokens of every Entra tenant: list the tenants you serve in `tenants:`"),
        );
    }
}

/// `authority`, without a trailing slash; `None` for Entra's public cloud.
fn authority(cx: &mut Cx, f: &Fields<'_>) -> Option<String> {
    let n = f.get("authority")?;
    let text = keys::key_url(cx, n, "authority")?;
    let text = text.trim_end_matches('/').to_owned();
    (text != DEFAULT_AUTHORITY).then_some(text)
}

fn tenant(cx: &mut Cx, f: &Fields<'_>) -> Option<Tenant> {
    let Some(n) = f.get("tenant-id") else {
        cx.error(f.pos, "validate-azure-ad-token needs `tenant-id`");
        return None;
    };
    let text = walk::non_empty(cx, n, "tenant-id")?.trim();
    match text.to_ascii_lowercase().as_str() {
        "common" => Some(Tenant::Any("common")),
        "organizations" => Some(Tenant::Any("organizations")),
        t if is_guid(t) => Some(Tenant::One(t.to_owned())),
        _ => {
            cx.error(
                n.pos,
                format!("tenant-id must be a GUID, `common` or `organizations`, found `{text}`"),
            );
            None
        }
    }
}

/// Application ids (GUIDs, or app-id URIs such as `api://orders`); an empty list is allowed.
fn ids(cx: &mut Cx, f: &Fields<'_>, key: &str) -> Vec<String> {
    let Some(n) = f.get(key) else {
        return Vec::new();
    };
    walk::string_list(cx, n, key)
}

/// 8-4-4-4-12 hex digits.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
    }

    #[test]
    fn issuer_shapes() {
        assert_eq!(
            issuers("t"),
            [
                "https://sts.windows.net/t/",
                "https://login.microsoftonline.com/t/v2.0"
            ]
        );
        assert_eq!(
            issuers("common"),
            [
                "https://sts.windows.net/{tenantid}/",
                "https://login.microsoftonline.com/{tenantid}/v2.0"
            ]
        );
    }
}
