//! gateway.yaml: YAML -> position-carrying tree -> checked [`Model`].
//!
//! Why these stages (tree -> model -> runtime): `portcullis check` must report every problem at once
//! with `file:line:col`, semantic ones included, without starting anything. Derived serde structs
//! stop at the first problem, so the file is read into a tree that keeps every node's position and
//! a checker walks it, collecting diagnostics. The model is plain data; the runtime (key store,
//! proxy) is built from it by other crates. Static key material (jwks-file, n/e, certificate-file,
//! base64) is read and parsed here so a bad key file fails `check`.

#![warn(missing_docs)]

mod azure;
pub mod conditions;
pub mod diag;
mod groups;
pub mod health;
mod keys;
pub mod model;
mod policy;
mod routes;
mod server;
pub mod statements;
mod subscriptions;
pub mod telemetry;
pub mod transforms;
pub mod upstream;
pub mod upstream_map;
pub mod upstream_tls;
pub mod values;
pub mod vars;
mod walk;
mod yaml;

pub use azure::DEFAULT_AUTHORITY;
pub use conditions::{ClaimTest, Condition, Test};
pub use diag::{Diagnostic, Severity};
pub use health::{
    HealthCheck, DEFAULT_DNS_REFRESH, DEFAULT_HEALTHY_THRESHOLD, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_UNHEALTHY_THRESHOLD,
};
pub use model::*;
pub use portcullis_route::{Normalization, RouteMatch};
pub use routes::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use server::{
    is_listen_address, DEFAULT_RATE_LIMIT_STORE_POOL_SIZE, DEFAULT_RATE_LIMIT_STORE_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_TOKEN_CACHE_ENTRIES, DEFAULT_TRACE_ENTRIES,
    DEFAULT_TRACE_HEADER, DEFAULT_TRACE_TTL,
};
pub use statements::{
    AnyOr, CheckHeader, Cors, CounterKey, HeaderCheck, IncrementCondition, IpFilter, Limit,
    LimitKind, Statement,
};
pub use subscriptions::is_subscription_name;
pub use transforms::{
    is_connection_header, is_framing_header, Branch, Choose, ExistsAction, ReturnResponse,
    SetHeader, SetVariable,
};
pub use upstream::{Examples, MockResponse, Piece, RewriteUri, SetQueryParameter};
pub use upstream_map::{map_upstream, UpstreamMap, UpstreamMapError};
pub use upstream_tls::{ClientIdentity, HostHeader, UpstreamTls};
pub use values::{Part, Source, Value, ValueError};
pub use vars::Lookup;

use std::path::Path;

use diag::Diags;
use walk::{Cx, Fields};
use yaml::{Kind, Pos};

/// What `load` returns: the model and its warnings, or every diagnostic when there is an error.
pub type LoadResult = Result<(Model, Vec<Diagnostic>), Vec<Diagnostic>>;

/// What `portcullis run` (and embedders) change about a config as it is loaded, without editing
/// the file; applied again by every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--map-upstream FROM=TO`: rewrites the origin of route upstreams, `backends:` URLs and
    /// `set-backend-service` base URLs as they are read (first matching mapping wins).
    pub map_upstream: Vec<UpstreamMap>,
    /// `--listen ADDR`: plain-HTTP proxy listeners replacing `server.listen` (empty: the file's).
    pub listen: Vec<String>,
    /// `--admin ADDR`: replaces `server.admin`.
    pub admin: Option<String>,
}

/// Load, parse and check a gateway config file. `Ok` carries the model and any warnings; `Err`
/// carries every error (and warnings) found, each with file:line:col. Named values (`{{name}}`)
/// come from the environment.
pub fn load(path: &Path) -> LoadResult {
    load_with(path, &LoadOptions::default())
}

/// As [`load`], with `opts` applied.
pub fn load_with(path: &Path, opts: &LoadOptions) -> LoadResult {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::error(
            path.display().to_string(),
            0,
            0,
            format!("cannot read config: {e}"),
        )]
    })?;
    load_str_opts(&text, path, &vars::from_env, opts)
}

/// As [`load`], from text already in memory (`path` names it in diagnostics and anchors relative
/// key-file paths).
pub fn load_str(text: &str, path: &Path) -> LoadResult {
    load_str_with(text, path, &vars::from_env)
}

/// As [`load_str`], with named values (`{{name}}`) looked up by `lookup` instead of the
/// environment (the demo passes its run-time ports this way).
pub fn load_str_with(text: &str, path: &Path, lookup: Lookup<'_>) -> LoadResult {
    load_str_opts(text, path, lookup, &LoadOptions::default())
}

/// As [`load_str_with`], with `opts` applied (what `portcullis run` and a reload call).
pub fn load_str_opts(
    text: &str,
    path: &Path,
    lookup: Lookup<'_>,
    opts: &LoadOptions,
) -> LoadResult {
    let mut cx = Cx {
        diags: Diags::new(path.display().to_string()),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        backends: Vec::new(),
        named_backends: 0,
        upstream_map: opts.map_upstream.clone(),
    };
    let mut root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.error(e.pos, e.message);
            return Err(cx.diags.finish().0);
        }
    };
    vars::resolve(&mut root, lookup, &mut cx.diags);
    let model = check(&mut cx, &root, path, opts);
    match cx.diags.finish() {
        (diags, true) => Err(diags),
        (diags, false) => Ok((model, diags)),
    }
}

/// Walks the whole document; problems go to `cx`.
fn check(cx: &mut Cx, root: &yaml::Node, path: &Path, opts: &LoadOptions) -> Model {
    let doc = Pos { line: 1, col: 1 };
    let f = match &root.kind {
        Kind::Null => None,
        _ => Fields::new(
            cx,
            root,
            "the document",
            &["server", "backends", "policies", "routes", "subscriptions"],
        ),
    };
    let get = |key: &str| f.as_ref().and_then(|f| f.get(key));
    let server = server::read(cx, get("server"), doc, opts);
    cx.backends = upstream::read_backends(cx, get("backends"));
    cx.named_backends = cx.backends.len();
    let named = policy::read_all(cx, get("policies"));
    let names: Vec<&str> = named.iter().map(|p| p.model.policy.name.as_str()).collect();
    let params_used = |policy: &str| {
        named
            .iter()
            .find(|p| p.model.policy.name == policy)
            .map(|p| p.model.route_params_used())
            .unwrap_or_default()
    };
    let routes = routes::read_all(
        cx,
        get("routes"),
        &names,
        &params_used,
        doc,
        &server.normalisation,
    );
    let subscriptions = subscriptions::read_all(cx, get("subscriptions"));
    subscriptions::warn_unused(cx, &subscriptions, &routes);
    for p in &named {
        let name = p.model.policy.name.as_str();
        let users: Vec<&Route> = routes
            .iter()
            .filter(|r| r.policies().contains(&Some(name)))
            .collect();
        if users.is_empty() {
            cx.warning(p.pos, format!("policy `{name}` is not used by any route"));
        }
        params_warnings(cx, &p.params, name, &users);
    }
    Model {
        source: path.to_path_buf(),
        server,
        policies: named.into_iter().map(|p| p.model).collect(),
        routes,
        backends: std::mem::take(&mut cx.backends),
        subscriptions: subscriptions.into_iter().map(|p| p.subscription).collect(),
    }
}

/// `${param:x}` in a policy used by a route whose path has no `{x}` (or `{*x}`): the value is
/// always empty there, which is almost certainly a mistake.
fn params_warnings(
    cx: &mut Cx,
    params: &[(std::sync::Arc<str>, Pos)],
    policy: &str,
    users: &[&Route],
) {
    for (param, pos) in params {
        let has = |r: &&&Route| {
            [&r.matcher.path, &r.matcher.path_prefix]
                .into_iter()
                .flatten()
                .any(|p| {
                    p.contains(&format!("{{{param}}}")) || p.contains(&format!("{{*{param}}}"))
                })
        };
        for route in users.iter().filter(|r| !has(r)) {
            cx.warning(
                *pos,
                format!(
                    "policy `{policy}` reads `${{param:{param}}}` but route `{}` has no `{{{param}}}` in its path: the value is always empty there",
                    route.name
                ),
            );
        }
    }
}
