//! `policies:`: validate-jwt (and validate-azure-ad-token, see [`crate::azure`]) plus the
//! policy-level rules (scopes, roles, forward-claims, mode ...), compiled to the auth core's
//! [`Policy`].

use std::sync::Arc;

use http::HeaderName;
use portcullis_auth::{ClaimRule, Match, Policy, Requirements, RolesRule, ScopesRule, TokenSource};

use crate::conditions::{self, Place};
use crate::groups;
use crate::keys;
use crate::model::{KeyLifecycle, KeySource, PolicyModel};
use crate::statements::{self, CounterKey, LimitKind, Statement};
use crate::transforms::{self, Branch, Choose, Scope};
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

/// Policy-level rules that belong to the token check.
const TOKEN_RULES: &[&str] = &[
    "scopes",
    "roles",
    "forward-claims",
    "mode",
    "insufficient-scope-httpcode",
    "forward-token",
];

const JWT_KEYS: &[&str] = &[
    "header-name",
    "query-parameter-name",
    "require-scheme",
    "failed-validation-httpcode",
    "failed-validation-error-message",
    "require-expiration-time",
    "require-signed-tokens",
    "try-all-signing-keys",
    "clock-skew",
    "output-token-variable-name",
    "openid-config",
    "issuer-signing-keys",
    "decryption-keys",
    "audiences",
    "issuers",
    "required-claims",
    "tenants",
    "any-of",
    "token-optional",
    "unknown-kid-cooldown",
    "refresh-interval",
    "min-refresh-interval",
    "max-stale",
];

/// Headers a claim must never be written into: hop-by-hop, framing, routing, the token itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A policy and where its name is written.
pub(crate) struct Named {
    pub pos: Pos,
    pub model: PolicyModel,
    /// The URL-template parameters its values read, and where.
    pub params: Vec<(Arc<str>, Pos)>,
}

/// Reads `policies:`.
pub(crate) fn read_all(cx: &mut Cx, node: Option<&Node>) -> Vec<Named> {
    let Some(f) = node.and_then(|n| Fields::open(cx, n, "policies")) else {
        return Vec::new();
    };
    let identity_headers = identity_headers(&f);
    let mut out = Vec::new();
    for (name, key, body) in f.entries() {
        if name.trim().is_empty() || name.eq_ignore_ascii_case("none") {
            cx.error(
                key.pos,
                format!("`{name}` cannot name a policy (`none` marks an anonymous route)"),
            );
            continue;
        }
        let (model, params) = read_one(cx, name, body, &identity_headers);
        out.push(Named {
            pos: key.pos,
            model,
            params,
        });
    }
    out
}

/// Every header named in any policy's `forward-claims`, normalised: read before the statements,
/// which must not set them.
fn identity_headers(f: &Fields<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (_, _, body) in f.entries() {
        let Kind::Map(entries) = &body.kind else {
            continue;
        };
        let claims = entries.iter().filter(
            |(k, _)| matches!(&k.kind, Kind::Str { value, .. } if value == "forward-claims"),
        );
        for (_, claims) in claims {
            if let Kind::Map(headers) = &claims.kind {
                for (h, _) in headers {
                    if let Kind::Str { value, .. } = &h.kind {
                        out.push(transforms::normalise(value));
                    }
                }
            }
        }
    }
    out
}

fn read_one(
    cx: &mut Cx,
    name: &str,
    node: &Node,
    identity_headers: &[String],
) -> (PolicyModel, Vec<(Arc<str>, Pos)>) {
    let mut policy = Policy::new(name);
    let mut key_sources = Vec::new();
    let section = format!("policy `{name}`");
    // Every statement of the keyed form, the token check's rules, `inbound` and `outbound`.
    let keys = [statements::KEYED, TOKEN_RULES, &["inbound", "outbound"]].concat();
    let Some(f) = Fields::new(cx, node, &section, &keys) else {
        if node.kind == Kind::Null {
            cx.error(node.pos, format!("{section} is empty: add validate-jwt"));
        }
        return (
            compiled(policy, key_sources, Vec::new(), Vec::new()),
            Vec::new(),
        );
    };
    let mut scope = Scope {
        policy: name,
        outbound: false,
        validated: false,
        vars: Vec::new(),
        identity_headers,
        params: Vec::new(),
    };
    let inbound = match f.get("inbound") {
        Some(list) => {
            for key in statements::KEYED {
                if let Some(k) = f.key(key) {
                    cx.error(
                        k.pos,
                        format!(
                            "{section} has `inbound`: write `{key}` as a statement in that list"
                        ),
                    );
                }
            }
            let mut top = Top {
                policy: &mut policy,
                key_sources: &mut key_sources,
                validation: None,
            };
            ordered(cx, list, &mut scope, Some(&mut top))
        }
        None => keyed(cx, name, &f, &mut policy, &mut key_sources),
    };
    let outbound = match f.get("outbound") {
        Some(list) => {
            let mut scope = Scope {
                outbound: true,
                validated: inbound.iter().any(|s| matches!(s, Statement::ValidateJwt)),
                params: std::mem::take(&mut scope.params),
                ..scope
            };
            let out = ordered(cx, list, &mut scope, None);
            (out, scope.params)
        }
        None => (Vec::new(), scope.params),
    };
    let (outbound, params) = outbound;
    let validates = inbound.iter().any(|s| matches!(s, Statement::ValidateJwt));
    let written = f.key("validate-jwt").is_some() || f.key("validate-azure-ad-token").is_some();
    let any_statement = statements::KEYED.iter().any(|k| f.key(k).is_some());
    let listed = f.get("inbound").is_some() || f.get("outbound").is_some();
    if !validates && inbound.is_empty() && !any_statement && !listed {
        cx.error(
            f.pos,
            format!("{section} needs `validate-jwt` or `validate-azure-ad-token`"),
        );
    } else if !validates && !written {
        for key in TOKEN_RULES {
            if let Some(k) = f.key(key) {
                cx.error(
                    k.pos,
                    format!("`{key}` applies to the token check: {section} has no validate-jwt"),
                );
            }
        }
    }
    if f.get("inbound").is_none() {
        claim_keys_follow_validation(cx, &f, &inbound);
    }
    policy_rules(cx, &f, &mut policy);
    crate::groups::optional_token_warnings(cx, &f, &policy, &inbound);
    (compiled(policy, key_sources, inbound, outbound), params)
}

/// The keyed form, in its fixed order: ip-filter, cors, check-header, validate-jwt, rate-limit,
/// rate-limit-by-key..., quota-by-key....
fn keyed(
    cx: &mut Cx,
    name: &str,
    f: &Fields<'_>,
    policy: &mut Policy,
    key_sources: &mut Vec<KeySource>,
) -> Vec<Statement> {
    let section = format!("policy `{name}`");
    let mut out = Vec::new();
    if let Some(n) = f.get("ip-filter") {
        out.extend(statements::ip_filter(cx, n).map(|c| Statement::IpFilter(Arc::new(c))));
    }
    if let Some(n) = f.get("cors") {
        out.extend(statements::cors(cx, n).map(|c| Statement::Cors(Arc::new(c))));
    }
    if let Some(n) = f.get("check-header") {
        out.extend(statements::check_header(cx, n).map(|c| Statement::CheckHeader(Arc::new(c))));
    }
    match (f.get("validate-jwt"), f.get("validate-azure-ad-token")) {
        (Some(jwt), None) => {
            validate_jwt(cx, jwt, policy, key_sources);
            out.push(Statement::ValidateJwt);
        }
        (None, Some(aad)) => {
            crate::azure::read(cx, aad, policy, key_sources);
            out.push(Statement::ValidateJwt);
        }
        (Some(_), Some(aad)) => cx.error(
            aad.pos,
            format!("{section} has both validate-jwt and validate-azure-ad-token: use one"),
        ),
        (None, None) => {}
    }
    for key in ["rate-limit", "rate-limit-by-key", "quota-by-key"] {
        let Some(node) = f.get(key) else { continue };
        let Some(kind) = statements::limit_kind(key) else {
            continue;
        };
        let items: Vec<&Node> = match (&node.kind, kind) {
            (Kind::Seq(items), LimitKind::RateLimitByKey | LimitKind::QuotaByKey) => {
                items.iter().collect()
            }
            _ => vec![node],
        };
        for item in items {
            let id = format!("{name}#{}", out.len());
            out.extend(
                statements::limit(cx, item, kind, id).map(|l| Statement::Limit(Arc::new(l))),
            );
        }
    }
    out
}

/// What only the policy's own `inbound` list may hold: the token check.
struct Top<'p> {
    policy: &'p mut Policy,
    key_sources: &'p mut Vec<KeySource>,
    /// Where the token check is written (a policy has one).
    validation: Option<Pos>,
}

/// The ordered form: `inbound: [ {statement: body}, ... ]`, an `outbound` list (`top` is `None`
/// and `scope.outbound` is set) or a `choose` branch (`top` is `None`).
fn ordered(
    cx: &mut Cx,
    node: &Node,
    scope: &mut Scope<'_>,
    top: Option<&mut Top<'_>>,
) -> Vec<Statement> {
    let what = if scope.outbound {
        "outbound"
    } else {
        "inbound"
    };
    let Some(items) = walk::list(cx, node, what) else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(node.pos, format!("`{what}` is empty"));
    }
    list(cx, items, scope, top, &format!("{}#", scope.policy))
}

/// The statements of a list, in order. `id` prefixes the counter ids of its limits (`policy#`,
/// `policy#3.1.` inside a `choose`), so every limit of a policy has its own, stable across
/// reloads.
fn list(
    cx: &mut Cx,
    items: &[Node],
    scope: &mut Scope<'_>,
    mut top: Option<&mut Top<'_>>,
    id: &str,
) -> Vec<Statement> {
    let keys = [
        statements::KEYED,
        statements::ORDERED_ONLY,
        crate::upstream::KEYS,
    ]
    .concat();
    let what = if scope.outbound {
        "an outbound statement"
    } else {
        "an inbound statement"
    };
    let mut out = Vec::new();
    let mut answered: Option<(Pos, &str)> = None;
    for (index, item) in items.iter().enumerate() {
        let Some(f) = Fields::new(cx, item, what, &keys) else {
            continue;
        };
        let [(key, k, body)] = f.entries() else {
            cx.error(
                f.pos,
                format!("{what} is one key: `- set-header: {{...}}`, `- choose: [...]` ..."),
            );
            continue;
        };
        if let Some((pos, by)) = answered {
            cx.error(
                k.pos,
                format!(
                    "`{key}` is never reached: the {by} at line {} answers first",
                    pos.line
                ),
            );
        }
        if scope.outbound && !statements::OUTBOUND.contains(key) {
            cx.error(
                k.pos,
                format!("`{key}` is not an outbound statement (outbound: set-header, set-variable, choose)"),
            );
            continue;
        }
        let policy_level = matches!(*key, "cors" | "validate-jwt" | "validate-azure-ad-token");
        let Some(top) = top.as_deref_mut().filter(|_| policy_level) else {
            if policy_level {
                cx.error(
                    k.pos,
                    format!("`{key}` applies to the whole policy: it cannot be inside `choose`"),
                );
                continue;
            }
            let here = format!("{id}{index}");
            out.extend(statement(cx, key, k, body, scope, &here));
            if *key == "return-response" || *key == "mock-response" {
                answered = answered.or(Some((k.pos, key)));
            }
            continue;
        };
        match *key {
            "cors" => out.extend(statements::cors(cx, body).map(|c| Statement::Cors(Arc::new(c)))),
            _ => {
                if let Some(first) = top.validation {
                    cx.error(
                        k.pos,
                        format!(
                            "a policy validates one token: the first token check is at line {}",
                            first.line
                        ),
                    );
                    continue;
                }
                top.validation = Some(k.pos);
                if *key == "validate-jwt" {
                    validate_jwt(cx, body, top.policy, top.key_sources);
                } else {
                    crate::azure::read(cx, body, top.policy, top.key_sources);
                }
                scope.validated = true;
                out.push(Statement::ValidateJwt);
            }
        }
    }
    out
}

/// One statement other than the policy-level ones (cors, the token check).
fn statement(
    cx: &mut Cx,
    key: &str,
    k: &Node,
    body: &Node,
    scope: &mut Scope<'_>,
    id: &str,
) -> Option<Statement> {
    match key {
        "ip-filter" => statements::ip_filter(cx, body).map(|c| Statement::IpFilter(Arc::new(c))),
        "check-header" => {
            statements::check_header(cx, body).map(|c| Statement::CheckHeader(Arc::new(c)))
        }
        "set-variable" => {
            transforms::set_variable(cx, body, scope).map(|s| Statement::SetVariable(Arc::new(s)))
        }
        "set-header" => {
            transforms::set_header(cx, body, scope).map(|s| Statement::SetHeader(Arc::new(s)))
        }
        "return-response" => transforms::return_response(cx, body, scope)
            .map(|s| Statement::ReturnResponse(Arc::new(s))),
        "choose" => choose(cx, body, scope, id).map(|c| Statement::Choose(Arc::new(c))),
        other if crate::upstream::KEYS.contains(&other) => {
            crate::upstream::read(cx, other, body, scope)
        }
        other => {
            let kind = statements::limit_kind(other)?;
            let limit = statements::limit(cx, body, kind, id.to_owned())?;
            if let (CounterKey::Claim(c), false) = (&limit.counter_key, scope.validated) {
                cx.error(
                    k.pos,
                    format!(
                        "{other} keyed on claim `{c}` runs before validate-jwt (or without it): put it after the token check"
                    ),
                );
            }
            Some(Statement::Limit(Arc::new(limit)))
        }
    }
}

/// Reads `choose: [ {when, steps}, ..., {otherwise} ]`.
fn choose(cx: &mut Cx, node: &Node, scope: &mut Scope<'_>, id: &str) -> Option<Choose> {
    let items = walk::list(cx, node, "choose")?;
    if items.is_empty() {
        cx.error(node.pos, "`choose` is empty: list `when` branches");
        return None;
    }
    let errors = cx.errors();
    let mut branches = Vec::new();
    let mut otherwise = Vec::new();
    for (b, item) in items.iter().enumerate() {
        let Some(f) = Fields::new(cx, item, "a choose branch", &["when", "steps", "otherwise"])
        else {
            continue;
        };
        let here = format!("{id}.{b}.");
        if let Some(k) = f.key("otherwise") {
            if f.key("when").is_some() || f.key("steps").is_some() {
                cx.error(k.pos, "`otherwise` stands alone: `- otherwise: [...]`");
                continue;
            }
            if b + 1 != items.len() {
                cx.error(k.pos, "`otherwise` is the last branch of a choose");
            }
            let mut inner = scope.branch();
            otherwise = branch_steps(cx, f.get("otherwise"), k, &mut inner, &here, "otherwise");
            scope.params.append(&mut inner.params);
            continue;
        }
        let Some(when) = f.get("when") else {
            cx.error(
                f.pos,
                "a choose branch needs `when` (a condition) and `steps`, or is `otherwise`",
            );
            continue;
        };
        let place = Place {
            outbound: scope.outbound,
            validated: scope.validated,
            vars: &scope.vars,
        };
        let when = conditions::condition(cx, when, &place);
        let mut inner = scope.branch();
        let steps = match f.key("steps") {
            Some(k) => branch_steps(cx, f.get("steps"), k, &mut inner, &here, "steps"),
            None => {
                cx.error(f.pos, "a choose branch needs `steps`");
                Vec::new()
            }
        };
        scope.params.append(&mut inner.params);
        if let Some(when) = when {
            branches.push(Branch { when, steps });
        }
    }
    if branches.is_empty() && cx.errors() == errors {
        cx.error(node.pos, "a choose needs at least one `when` branch");
    }
    (cx.errors() == errors).then_some(Choose {
        branches,
        otherwise,
    })
}

/// A branch's statements (`steps` or `otherwise`), in a scope of their own.
fn branch_steps(
    cx: &mut Cx,
    node: Option<&Node>,
    key: &Node,
    scope: &mut Scope<'_>,
    id: &str,
    what: &str,
) -> Vec<Statement> {
    let Some(node) = node else {
        cx.error(key.pos, format!("`{what}` is empty"));
        return Vec::new();
    };
    let Some(items) = walk::list(cx, node, what) else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(node.pos, format!("`{what}` is empty"));
    }
    list(cx, items, scope, None, id)
}

/// A counter keyed on a claim needs the verified token: it must come after validate-jwt.
fn claim_keys_follow_validation(cx: &mut Cx, f: &Fields<'_>, inbound: &[Statement]) {
    let mut validated = false;
    for s in inbound {
        match s {
            Statement::ValidateJwt => validated = true,
            Statement::Limit(l) if !validated => {
                if let CounterKey::Claim(c) = &l.counter_key {
                    cx.error(
                        f.pos,
                        format!(
                            "{} keyed on claim `{c}` runs before validate-jwt (or without it): put it after the token check",
                            l.kind.element()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

fn compiled(
    policy: Policy,
    key_sources: Vec<KeySource>,
    inbound: Vec<Statement>,
    outbound: Vec<Statement>,
) -> PolicyModel {
    PolicyModel {
        policy: Arc::new(policy),
        key_sources,
        inbound,
        outbound,
    }
}

/// scopes, roles, forward-claims, mode, insufficient-scope-httpcode, forward-token.
fn policy_rules(cx: &mut Cx, f: &Fields<'_>, policy: &mut Policy) {
    if let Some(n) = f.get("scopes") {
        policy.scopes =
            rule(cx, n, "scopes", false).map(|(m, values, _)| ScopesRule { r#match: m, values });
    }
    if let Some(n) = f.get("roles") {
        policy.roles = rule(cx, n, "roles", true).map(|(m, values, claim)| RolesRule {
            r#match: m,
            values,
            claim: claim.unwrap_or_else(|| portcullis_auth::DEFAULT_ROLES_CLAIM.to_owned()),
        });
    }
    if let Some(n) = f.get("forward-claims") {
        policy.forward_claims = forward_claims(cx, n);
    }
    if let Some(n) = f.get("mode") {
        match walk::string(cx, n, "mode") {
            Some("enforce") => policy.report_only = false,
            Some("report-only") => {
                policy.report_only = true;
                cx.warning(
                    n.pos,
                    "mode: report-only forwards requests whose token fails validation",
                );
            }
            Some(other) => cx.error(
                n.pos,
                format!("`mode` must be `enforce` or `report-only`, found `{other}`"),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("insufficient-scope-httpcode") {
        policy.insufficient_scope_httpcode =
            walk::failure_status(cx, n, "insufficient-scope-httpcode");
    }
    let forward_token = f.get("forward-token");
    if let Some(n) = forward_token {
        if let Some(b) = walk::boolean(cx, n, "forward-token") {
            policy.forward_token = b;
        }
    }
    if let (true, TokenSource::Query { name }) = (policy.forward_token, &policy.token_source) {
        cx.warning(
            forward_token.map_or(f.pos, |n| n.pos),
            format!(
                "the token in query parameter `{name}` is forwarded to the backend in the URL, \
                 where access logs record it; `forward-token: false` removes that parameter \
                 (and only it) before forwarding"
            ),
        );
    }
}

/// `{ match, values[, claim] }` for scopes and roles; `values` must not be empty.
fn rule(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    with_claim: bool,
) -> Option<(Match, Vec<String>, Option<String>)> {
    let known: &[&str] = if with_claim {
        &["match", "values", "claim"]
    } else {
        &["match", "values"]
    };
    let f = Fields::new(cx, node, what, known)?;
    let m = match_of(cx, &f);
    let claim = f.text(cx, "claim");
    let values = match f.get("values") {
        Some(n) => walk::string_list(cx, n, "values"),
        None => Vec::new(),
    };
    if values.is_empty() {
        let pos = f.get("values").map_or(f.pos, |n| n.pos);
        cx.error(
            pos,
            format!("empty `values` in {what}: list at least one value"),
        );
        return None;
    }
    Some((m, values, claim))
}

/// `match` of a rule: `all` (default) or `any`.
fn match_of(cx: &mut Cx, f: &Fields<'_>) -> Match {
    f.get("match")
        .and_then(|n| match_kind(cx, n))
        .unwrap_or_default()
}

fn match_kind(cx: &mut Cx, node: &Node) -> Option<Match> {
    match walk::string(cx, node, "match")? {
        "all" => Some(Match::All),
        "any" => Some(Match::Any),
        other => {
            cx.error(
                node.pos,
                format!("`match` must be `all` or `any`, found `{other}`"),
            );
            None
        }
    }
}

fn forward_claims(cx: &mut Cx, node: &Node) -> Vec<(HeaderName, String)> {
    let Some(f) = Fields::open(cx, node, "forward-claims") else {
        return Vec::new();
    };
    let mut out: Vec<(HeaderName, String)> = Vec::new();
    for (header, key, claim) in f.entries() {
        let Some(claim) = walk::non_empty(cx, claim, &format!("forward-claims: {header}")) else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(header.as_bytes()) else {
            cx.error(key.pos, format!("`{header}` is not a valid header name"));
            continue;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) {
            cx.error(
                key.pos,
                format!("`{header}` cannot carry a claim (reserved header)"),
            );
            continue;
        }
        if out.iter().any(|(h, _)| *h == name) {
            cx.error(
                key.pos,
                format!("header `{header}` is listed twice in forward-claims"),
            );
            continue;
        }
        out.push((name, claim.to_owned()));
    }
    out
}

/// Where the token is read from: header-name (default Authorization) or query-parameter-name.
pub(crate) fn token_source(cx: &mut Cx, f: &Fields<'_>, scheme: Option<String>) -> TokenSource {
    let header = f.get("header-name");
    let query = f.get("query-parameter-name");
    if let (Some(_), Some(q)) = (header, query) {
        cx.error(
            q.pos,
            "header-name and query-parameter-name are both set: the token comes from one place",
        );
    }
    if let Some(q) = query.filter(|_| header.is_none()) {
        if let Some(name) = walk::non_empty(cx, q, "query-parameter-name") {
            return TokenSource::Query {
                name: name.to_owned(),
            };
        }
    }
    let name = header
        .and_then(|h| {
            let text = walk::non_empty(cx, h, "header-name")?;
            HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| cx.error(h.pos, format!("`{text}` is not a valid header name")))
                .ok()
        })
        .unwrap_or(http::header::AUTHORIZATION);
    TokenSource::Header {
        name,
        require_scheme: scheme,
    }
}

/// failed-validation-httpcode and failed-validation-error-message.
pub(crate) fn failure(cx: &mut Cx, f: &Fields<'_>, policy: &mut Policy) {
    if let Some(n) = f.get("failed-validation-httpcode") {
        if let Some(code) = walk::failure_status(cx, n, "failed-validation-httpcode") {
            policy.failed_validation_httpcode = code;
        }
    }
    if let Some(n) = f.get("failed-validation-error-message") {
        policy.failed_validation_error_message =
            walk::string(cx, n, "failed-validation-error-message").map(str::to_owned);
    }
}

/// `output-token-variable-name`: APIM stores the token in a variable; nothing here reads it.
pub(crate) fn output_token_variable(cx: &mut Cx, f: &Fields<'_>) {
    if let Some(k) = f.key("output-token-variable-name") {
        cx.warning(
            k.pos,
            "output-token-variable-name is ignored: use forward-claims to pass claims to the backend",
        );
    }
}

/// required-claims: `[{ name, match, separator, values }]`.
pub(crate) fn required_claims(cx: &mut Cx, node: &Node) -> Vec<ClaimRule> {
    let Some(items) = walk::list(cx, node, "required-claims") else {
        return Vec::new();
    };
    let keys = ["name", "match", "separator", "values"];
    items
        .iter()
        .filter_map(|item| {
            let f = Fields::new(cx, item, "required-claims entry", &keys)?;
            let name = match f.get("name") {
                Some(n) => walk::non_empty(cx, n, "name"),
                None => {
                    cx.error(f.pos, "required-claims entry needs `name`");
                    None
                }
            };
            let m = match_of(cx, &f);
            let separator = f.delimiter(cx, "separator");
            let values = claim_values(cx, &f);
            Some(ClaimRule {
                name: name?.to_owned(),
                r#match: m,
                separator,
                values: values?,
            })
        })
        .collect()
}

/// A claim's `values`: absent means presence only; an explicit empty list is an error.
fn claim_values(cx: &mut Cx, f: &Fields<'_>) -> Option<Vec<String>> {
    let Some(key) = f.key("values") else {
        return Some(Vec::new());
    };
    let Some(node) = f.get("values") else {
        cx.error(
            key.pos,
            "empty `values`: omit the key to require only the claim's presence",
        );
        return None;
    };
    let values = walk::string_list(cx, node, "values");
    if values.is_empty() {
        cx.error(
            node.pos,
            "empty `values`: omit the key to require only the claim's presence",
        );
        return None;
    }
    Some(values)
}

fn validate_jwt(cx: &mut Cx, node: &Node, policy: &mut Policy, sources: &mut Vec<KeySource>) {
    let errors_before = cx.errors();
    let Some(f) = Fields::new(cx, node, "validate-jwt", JWT_KEYS) else {
        return;
    };
    let scheme = f.text(cx, "require-scheme");
    policy.token_source = token_source(cx, &f, scheme);
    scheme_applies(cx, &f, &policy.token_source);
    failure(cx, &f, policy);
    output_token_variable(cx, &f);
    escape_hatches(cx, &f, policy);
    try_all_signing_keys(cx, &f, policy);
    if let Some(n) = f.get("clock-skew") {
        policy.clock_skew = clock_skew(cx, n).unwrap_or(0);
    }
    policy.token_optional = groups::token_optional(cx, &f);
    let base = keys::lifecycle(cx, &f, KeyLifecycle::default());
    decryption_keys(cx, &f, policy);
    if let Some(n) = f.get("any-of") {
        groups::any_of(cx, &f, n, base, policy, sources);
        return;
    }
    let rules = groups::requirements(cx, &f, base, policy.token_optional, sources);
    policy.audiences = rules.audiences;
    policy.issuers = rules.issuers;
    policy.tenants = rules.tenants;
    policy.required_claims = rules.required_claims;
    if cx.errors() == errors_before && !node.has_unresolved() {
        coverage_warnings(cx, &f, policy, sources);
        let own = Requirements {
            issuers: policy.issuers.clone(),
            tenants: policy.tenants.clone(),
            ..Requirements::default()
        };
        groups::multi_tenant_warning(cx, &f, &own, sources);
    }
}

/// `decryption-keys` (validate-jwt and validate-azure-ad-token): encrypted tokens are decrypted
/// with these before the nested signed token is verified.
pub(crate) fn decryption_keys(cx: &mut Cx, f: &Fields<'_>, policy: &mut Policy) {
    if let Some(n) = f.get("decryption-keys") {
        policy.decryption_keys = portcullis_auth::DecryptionKeys::new(keys::decryption_keys(cx, n));
    }
}

/// require-scheme only means something with the Authorization header (as in APIM).
fn scheme_applies(cx: &mut Cx, f: &Fields<'_>, source: &TokenSource) {
    let Some(k) = f.key("require-scheme") else {
        return;
    };
    let applies =
        matches!(source, TokenSource::Header { name, .. } if name == http::header::AUTHORIZATION);
    if !applies {
        cx.warning(
            k.pos,
            "require-scheme is ignored: it only applies to the Authorization header",
        );
    }
}

/// require-expiration-time and require-signed-tokens, each warned about when turned off.
fn escape_hatches(cx: &mut Cx, f: &Fields<'_>, policy: &mut Policy) {
    if let Some(n) = f.get("require-expiration-time") {
        if let Some(b) = walk::boolean(cx, n, "require-expiration-time") {
            policy.require_expiration_time = b;
            if !b {
                cx.warning(
                    n.pos,
                    "require-expiration-time: false accepts tokens that never expire",
                );
            }
        }
    }
    if let Some(n) = f.get("require-signed-tokens") {
        if let Some(b) = walk::boolean(cx, n, "require-signed-tokens") {
            policy.require_signed_tokens = b;
            if !b {
                cx.warning(
                    n.pos,
                    "require-signed-tokens: false accepts unsigned (alg: none) tokens that anyone can forge",
                );
            }
        }
    }
}

/// `try-all-signing-keys` (validate-jwt and validate-azure-ad-token): APIM's key matching, set by
/// `import-apim`; hand-written configs keep the strict default (a `kid` selects its key).
pub(crate) fn try_all_signing_keys(cx: &mut Cx, f: &Fields<'_>, policy: &mut Policy) {
    if let Some(n) = f.get("try-all-signing-keys") {
        if let Some(b) = walk::boolean(cx, n, "try-all-signing-keys") {
            policy.try_all_signing_keys = b;
        }
    }
}

/// Whole seconds, as an integer or a duration; negative is an error.
fn clock_skew(cx: &mut Cx, node: &Node) -> Option<u64> {
    if let Kind::Int(i) = node.kind {
        if i < 0 {
            cx.error(
                node.pos,
                format!("negative clock-skew ({i}): use 0 or more seconds"),
            );
            return None;
        }
    }
    let d = walk::duration(cx, node, "clock-skew")?;
    if d.subsec_nanos() != 0 {
        cx.error(node.pos, "clock-skew must be whole seconds");
        return None;
    }
    Some(d.as_secs())
}

/// A policy with a single openid-config entry: the policy's `issuers` are that document's too
/// (Entra v1 tokens checked with the v2 document, Google's two spellings), unless the entry names
/// its own. With several entries each document's keys speak only for its own issuer and its
/// entry's `issuers`, so one identity provider's key cannot mint another's tokens.
pub(crate) fn attribute_issuers(policy_issuers: &[String], sources: &mut [KeySource]) {
    let mut discovery = sources.iter_mut().filter_map(|s| match s {
        KeySource::OpenIdConfig { issuers, .. } => Some(issuers),
        _ => None,
    });
    if let (Some(only), None) = (discovery.next(), discovery.next()) {
        if only.is_empty() {
            only.extend_from_slice(policy_issuers);
        }
    }
}

/// [`rules_coverage`] for a policy's single requirement group.
pub(crate) fn coverage_warnings(
    cx: &mut Cx,
    f: &Fields<'_>,
    policy: &Policy,
    sources: &[KeySource],
) {
    let scope = format!("policy `{}`", policy.name);
    rules_coverage(
        cx,
        f,
        &scope,
        &policy.issuers,
        &policy.audiences,
        &policy.client_application_ids,
        sources,
    );
}

/// Warnings about checks that cannot happen: no keys, remote keys without audiences, no issuers.
/// `scope` names what is checked ("policy `x`", "any-of group 2 of policy `x`").
pub(crate) fn rules_coverage(
    cx: &mut Cx,
    f: &Fields<'_>,
    scope: &str,
    issuers: &[String],
    audiences: &[String],
    client_application_ids: &[String],
    sources: &[KeySource],
) {
    if sources.is_empty() {
        cx.warning(
            f.pos,
            format!("{scope} has no key sources (openid-config or issuer-signing-keys): no token can validate"),
        );
        return;
    }
    let remote = sources
        .iter()
        .any(|s| !matches!(s, KeySource::Static { .. }));
    if remote && audiences.is_empty() && client_application_ids.is_empty() {
        cx.warning(
            f.pos,
            format!("{scope} takes remote keys but checks no audience: tokens the issuer minted for any other API are accepted"),
        );
    }
    let discovered = sources
        .iter()
        .any(|s| matches!(s, KeySource::OpenIdConfig { .. }));
    if issuers.is_empty() && !discovered {
        cx.warning(
            f.pos,
            format!("{scope} cannot check the issuer: add `issuers` or an openid-config"),
        );
    }
}
