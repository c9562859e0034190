//! What a token must satisfy: issuers (with Entra's `{tenantid}` templates), `tenants`,
//! audiences, required claims and their key sources; one set in the keyed form, or several
//! alternatives under `any-of` (Envoy's `requires_any`). Also `token-optional` (Envoy's
//! `allow_missing`) and the warnings the three invite.
//!
//! Why `any-of` is a list of whole groups rather than pooled lists: a policy that trusts two
//! identity providers by listing both issuers and both audiences accepts issuer A's token minted
//! for B's audience. Each group carries its own key sources, so the key store tags their keys
//! with the group and the auth core accepts a token only when one group's rules all hold with a
//! key of that same group.

use portcullis_auth::{ClaimRule, Policy, Requirements};

use crate::keys::{self, LIFECYCLE_KEYS};
use crate::model::{KeyLifecycle, KeySource};
use crate::policy;
use crate::statements::{CounterKey, Statement};
use crate::walk::{self, Cx, Fields};
use crate::yaml::Node;

/// The keys of one requirement group (besides the lifecycle knobs): in the keyed form they sit in
/// `validate-jwt` itself, under `any-of` in each group.
pub(crate) const GROUP_KEYS: &[&str] = &[
    "openid-config",
    "issuer-signing-keys",
    "issuers",
    "audiences",
    "tenants",
    "required-claims",
];

/// Most groups one `any-of` may list (the key store tags keys with a 64-bit group set).
const MAX_GROUPS: usize = 64;

/// Reads one requirement group from `f` (validate-jwt itself, or an `any-of` entry): its key
/// sources (appended to `sources`), issuers, tenants, audiences and required claims.
/// `optional` is the statement's `token-optional`, for the warning on required claims.
pub(crate) fn requirements(
    cx: &mut Cx,
    f: &Fields<'_>,
    base: KeyLifecycle,
    optional: bool,
    sources: &mut Vec<KeySource>,
) -> Requirements {
    let start = sources.len();
    if let Some(n) = f.get("openid-config") {
        for item in walk::list(cx, n, "openid-config").unwrap_or(&[]) {
            sources.extend(keys::openid_config(cx, item, base));
        }
    }
    if let Some(n) = f.get("issuer-signing-keys") {
        for item in walk::list(cx, n, "issuer-signing-keys").unwrap_or(&[]) {
            sources.extend(keys::signing_key(cx, item, base));
        }
    }
    let audiences = list_field(cx, f, "audiences");
    let issuers = list_field(cx, f, "issuers");
    policy::attribute_issuers(&issuers, &mut sources[start..]);
    let required_claims: Vec<ClaimRule> = f
        .get("required-claims")
        .map(|n| policy::required_claims(cx, n))
        .unwrap_or_default();
    if let (true, false, Some(k)) = (
        optional,
        required_claims.is_empty(),
        f.key("required-claims"),
    ) {
        cx.warning(k.pos, optional_rule("required-claims"));
    }
    Requirements {
        issuers,
        audiences,
        tenants: tenants(cx, f),
        required_claims,
        key_sources: start..sources.len(),
    }
}

/// `any-of: [ {group}, ... ]` of validate-jwt: each group read with [`requirements`], its
/// lifecycle knobs defaulting to the statement's. The group keys may not also be written at the
/// statement level.
pub(crate) fn any_of(
    cx: &mut Cx,
    f: &Fields<'_>,
    node: &Node,
    base: KeyLifecycle,
    policy: &mut Policy,
    sources: &mut Vec<KeySource>,
) {
    for key in GROUP_KEYS {
        if let Some(k) = f.key(key) {
            cx.error(
                k.pos,
                format!(
                    "validate-jwt has `any-of`: write `{key}` in each any-of group it applies to"
                ),
            );
        }
    }
    let Some(items) = walk::list(cx, node, "any-of") else {
        return;
    };
    if items.is_empty() {
        cx.error(
            node.pos,
            "`any-of` is empty: list at least one requirement group",
        );
    }
    if items.len() > MAX_GROUPS {
        cx.error(
            node.pos,
            format!(
                "`any-of` lists {} groups: at most {MAX_GROUPS}",
                items.len()
            ),
        );
        return;
    }
    let mut known = GROUP_KEYS.to_vec();
    known.extend_from_slice(LIFECYCLE_KEYS);
    for (i, item) in items.iter().enumerate() {
        let errors_before = cx.errors();
        let Some(g) = Fields::new(cx, item, "any-of group", &known) else {
            continue;
        };
        let lifecycle = keys::lifecycle(cx, &g, base);
        let group = requirements(cx, &g, lifecycle, policy.token_optional, sources);
        if cx.errors() == errors_before && !item.has_unresolved() {
            let own = &sources[group.key_sources.clone()];
            if own.is_empty() {
                cx.warning(
                    g.pos,
                    format!("any-of group {} has no key sources (openid-config or issuer-signing-keys): no token can satisfy it", i + 1),
                );
            } else {
                let scope = format!("any-of group {} of policy `{}`", i + 1, policy.name);
                policy::rules_coverage(cx, &g, &scope, &group.issuers, &group.audiences, &[], own);
                multi_tenant_warning(cx, &g, &group, own);
            }
        }
        policy.any_of.push(group);
    }
}

/// `tenants`: lower-cased GUIDs; an empty list is an error (leave the key out to allow any).
pub(crate) fn tenants(cx: &mut Cx, f: &Fields<'_>) -> Vec<String> {
    let Some(n) = f.get("tenants") else {
        if let Some(k) = f.key("tenants") {
            cx.error(
                k.pos,
                "empty `tenants`: list tenant ids, or leave `tenants` out",
            );
        }
        return Vec::new();
    };
    let Some(items) = walk::list(cx, n, "tenants") else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(
            n.pos,
            "empty `tenants`: list tenant ids, or leave `tenants` out",
        );
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = walk::non_empty(cx, item, "tenants entry") else {
            continue;
        };
        let tid = text.trim().to_ascii_lowercase();
        if portcullis_auth::is_tenant_id(&tid) {
            out.push(tid);
        } else {
            cx.error(
                item.pos,
                format!("`{text}` is not a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47)"),
            );
        }
    }
    out
}

/// `token-optional: true|false` (default false).
pub(crate) fn token_optional(cx: &mut Cx, f: &Fields<'_>) -> bool {
    f.get("token-optional")
        .and_then(|n| walk::boolean(cx, n, "token-optional"))
        .unwrap_or(false)
}

/// Warns when a group accepts every Entra tenant: an issuer template, or a discovery document of
/// Entra's multi-tenant endpoints (`/common`, `/organizations`, whose issuer is a template), and
/// no `tenants` to narrow it.
pub(crate) fn multi_tenant_warning(
    cx: &mut Cx,
    f: &Fields<'_>,
    group: &Requirements,
    sources: &[KeySource],
) {
    if !group.tenants.is_empty() {
        return;
    }
    let template = group
        .issuers
        .iter()
        .any(|i| portcullis_auth::is_template(i));
    let multi_tenant_document = sources.iter().any(|s| match s {
        KeySource::OpenIdConfig { url, issuers, .. } => {
            multi_tenant_url(url) || issuers.iter().any(|i| portcullis_auth::is_template(i))
        }
        _ => false,
    });
    if template || multi_tenant_document {
        cx.warning(
            f.pos,
            "multi-tenant issuer (`{tenantid}`): tokens of every Entra tenant are accepted; list the tenants you serve in `tenants:`",
        );
    }
}

/// A URL whose path names Entra's multi-tenant authorities (`/common/...`, `/organizations/...`).
fn multi_tenant_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.path_segments().is_some_and(|mut s| {
            s.next()
                .is_some_and(|first| first == "common" || first == "organizations")
        })
    })
}

/// The warning on a rule that only a present token can fail.
pub(crate) fn optional_rule(key: &str) -> String {
    format!("`{key}` applies only to requests that carry a token: token-optional lets requests without one through, with no identity")
}

/// Warnings about what `token-optional` leaves unchecked: scopes, roles (required claims are
/// warned where they are read), and limits keyed on a claim (every request without a token
/// counts under one empty key).
pub(crate) fn optional_token_warnings(
    cx: &mut Cx,
    f: &Fields<'_>,
    policy: &Policy,
    inbound: &[Statement],
) {
    if !policy.token_optional {
        return;
    }
    for key in ["scopes", "roles"] {
        if let Some(k) = f.key(key) {
            cx.warning(k.pos, optional_rule(key));
        }
    }
    for s in inbound {
        if let Statement::Limit(l) = s {
            if let CounterKey::Claim(c) = &l.counter_key {
                cx.warning(
                    f.pos,
                    format!(
                        "{} keyed on claim `{c}`: with token-optional, requests without a token all count under one empty key",
                        l.kind.element()
                    ),
                );
            }
        }
    }
}

fn list_field(cx: &mut Cx, f: &Fields<'_>, key: &str) -> Vec<String> {
    f.get(key)
        .map(|n| walk::string_list(cx, n, key))
        .unwrap_or_default()
}
