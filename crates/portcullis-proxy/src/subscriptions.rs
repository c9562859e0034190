//! APIM subscription keys: the keys the gateway was given, and the per-request check that runs
//! before a route's policy pipeline (as APIM checks the key before any policy).
//!
//! What APIM does, and so what this does (docs/configuration.md, `subscriptions`):
//! - the key is read from the route's header (`Ocp-Apim-Subscription-Key` by default), else from
//!   its query parameter (`subscription-key`); it is forwarded to the backend as received, as
//!   APIM forwards it (a policy that must hide it deletes it with `set-header` /
//!   `set-query-parameter`, as APIM users do);
//! - no key on a route that requires one: 401 `SubscriptionKeyMissing`; a key that belongs to no
//!   active subscription whose scope covers the route (all APIs, the route's API, one of its
//!   products): 401 `SubscriptionKeyInvalid`;
//! - a route that does not require a key ignores any key sent (APIM: "the subscription key is
//!   ignored"), and runs its `policy`;
//! - a product-scoped key runs that product's policy for the route; an API- or all-scoped key runs
//!   the route's `policy` (APIM: product policies do not apply to those);
//! - a CORS preflight carries no custom header, so a keyless preflight on a route whose `policy`
//!   answers preflights is let through to that policy's `cors` (APIM evaluates it in the API
//!   context; a product's `cors` sees a preflight only with the key in the query, as APIM's docs
//!   say).
//!
//! Keys never live here in clear: each is kept as its SHA-256 digest, and a presented key's digest
//! is compared with every known digest in constant time (`subtle`), so neither the comparison's
//! timing nor the key's length says how close a guess was. Keys are never logged; logs and
//! metrics carry the subscription's name.

use std::fmt;

use http::HeaderMap;
use portcullis_config::{Model, PolicyId, SubscriptionScope, SubscriptionState};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Reason of the 401 for a missing key.
pub const REASON_SUBSCRIPTION_KEY_MISSING: &str = "SubscriptionKeyMissing";
/// Reason of the 401 for a key that opens nothing here.
pub const REASON_SUBSCRIPTION_KEY_INVALID: &str = "SubscriptionKeyInvalid";

type KeyDigest = [u8; 32];

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// The subscription keys given to the gateway (`--subscription-key NAME=KEY`, a keys file,
/// [`crate::RunOptions`]), by subscription name, as digests. A subscription may have several
/// (APIM's primary and secondary). Its `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SubscriptionKeys {
    keys: Vec<(String, KeyDigest)>,
}

impl fmt::Debug for SubscriptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionKeys")
            .field("names", &self.names())
            .finish()
    }
}

impl SubscriptionKeys {
    /// No keys.
    pub fn new() -> SubscriptionKeys {
        SubscriptionKeys::default()
    }

    /// Adds a key of subscription `name` (only its digest is kept).
    pub fn add(&mut self, name: &str, key: &str) {
        self.keys.push((name.to_owned(), digest(key)));
    }

    /// Adds `NAME=KEY` (a `--subscription-key` argument). The error never contains the key.
    pub fn add_arg(&mut self, arg: &str) -> Result<(), String> {
        let (name, key) = split_arg(arg).ok_or_else(|| {
            "a subscription key must be given as NAME=KEY (the subscription's name, `=`, the key)"
                .to_owned()
        })?;
        self.add(name, key);
        Ok(())
    }

    /// Adds the keys of a keys file's text: `NAME=KEY` lines, `#` comments and blank lines.
    /// The error names the line, never the key.
    pub fn add_file(&mut self, text: &str) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, key) =
                split_arg(line).ok_or_else(|| format!("line {}: expected NAME=KEY", i + 1))?;
            self.add(name, key);
        }
        Ok(())
    }

    /// The subscription names keys were given for, in order, without repeats.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (name, _) in &self.keys {
            if !out.contains(&name.as_str()) {
                out.push(name);
            }
        }
        out
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the keys against `model`'s `subscriptions:`: `Err` names a subscription the config
    /// does not have (a start-up error: a typo would silently open nothing); `Ok` carries a
    /// warning per subscription without a key (its callers all get 401).
    pub fn check(&self, model: &Model) -> Result<Vec<String>, String> {
        if let Some(unknown) = self
            .names()
            .into_iter()
            .find(|n| !model.subscriptions.iter().any(|s| s.name == *n))
        {
            let known: Vec<&str> = model
                .subscriptions
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            let known = if known.is_empty() {
                "the config has no `subscriptions:`".to_owned()
            } else {
                format!("known: {}", known.join(", "))
            };
            return Err(format!(
                "a key is given for subscription `{unknown}`, which the config does not name ({known})"
            ));
        }
        Ok(model
            .subscriptions
            .iter()
            .filter(|s| !self.keys.iter().any(|(n, _)| *n == s.name))
            .map(|s| {
                format!(
                    "subscription `{}` has no key (--subscription-key {}=KEY): no call can use it",
                    s.name, s.name
                )
            })
            .collect())
    }
}

/// `NAME=KEY` split at the first `=` (white space around either side dropped); both sides
/// non-empty, the name a valid subscription name.
fn split_arg(arg: &str) -> Option<(&str, &str)> {
    let (name, key) = arg.split_once('=')?;
    let (name, key) = (name.trim(), key.trim());
    (portcullis_config::is_subscription_name(name) && !key.is_empty()).then_some((name, key))
}

/// One subscription at run time.
#[derive(Debug)]
struct Entry {
    name: String,
    scope: SubscriptionScope,
    active: bool,
}

/// The subscriptions of a config generation with the keys given at start (kept across reloads).
#[derive(Debug, Default)]
pub struct Subscriptions {
    entries: Vec<Entry>,
    /// (index in `entries`, key digest), every key of every named subscription.
    keys: Vec<(usize, KeyDigest)>,
}

/// A route's `subscription:` at run time.
#[derive(Debug, Clone)]
pub struct RouteSubscription {
    api: Option<String>,
    required: bool,
    header: http::HeaderName,
    query: String,
    /// Product -> the policy its keys run (`None`: anonymous).
    products: Vec<(String, Option<PolicyId>)>,
    /// The open product's index in `products`: what a call without a key runs.
    open_product: Option<usize>,
}

impl RouteSubscription {
    /// The query parameter the key may be sent in.
    pub fn query_name(&self) -> &str {
        &self.query
    }

    /// From the model (product policies resolved to ids; the checker made sure they exist).
    pub fn build(s: &portcullis_config::RouteSubscription, model: &Model) -> RouteSubscription {
        RouteSubscription {
            api: s.api.clone(),
            required: s.required,
            header: s.header_name.clone(),
            query: s.query_parameter_name.clone(),
            products: s
                .products
                .iter()
                .map(|p| {
                    let id = p.policy.as_deref().and_then(|n| model.policy_id(n));
                    (p.product.clone(), id)
                })
                .collect(),
            open_product: s
                .open_product
                .as_ref()
                .and_then(|open| s.products.iter().position(|p| p.product == *open)),
        }
    }

    /// The open product and the policy a call without a key runs in its context.
    fn open(&self) -> Option<&(String, Option<PolicyId>)> {
        self.products.get(self.open_product?)
    }
}

/// What the check decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with this policy (`None`: anonymous); `subscription` is the index of the subscription
    /// whose key was accepted, if any.
    Pass {
        /// The policy to run.
        policy: Option<PolicyId>,
        /// The accepted subscription ([`Subscriptions::name`]).
        subscription: Option<usize>,
    },
    /// 401: no key.
    Missing,
    /// 401: a key that opens nothing here.
    Invalid,
}

/// Where the key was found.
enum Presented<'r> {
    None,
    One(std::borrow::Cow<'r, str>),
    /// The header (or, without it, the parameter) sent more than once: which copy a backend
    /// would read is its choice, so none is accepted.
    Several,
}

fn presented<'r>(
    s: &'r RouteSubscription,
    headers: &'r HeaderMap,
    query: Option<&'r str>,
) -> Presented<'r> {
    let mut values = headers.get_all(&s.header).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => return Presented::Several,
        (Some(v), None) => {
            return match v.to_str() {
                Ok("") => Presented::None,
                Ok(text) => Presented::One(text.into()),
                // Not text: it cannot be a key anyone was given.
                Err(_) => Presented::One("\u{fffd}".into()),
            };
        }
        (None, _) => {}
    }
    let mut values = portcullis_route::query::values(query.unwrap_or(""), &s.query);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Presented::Several,
        (Some(v), None) if v.is_empty() => Presented::None,
        (Some(v), None) => Presented::One(v),
        (None, _) => Presented::None,
    }
}

impl Subscriptions {
    /// The model's subscriptions with `keys` (keys of names the model does not have are left
    /// out: a reload may drop a subscription; start-up refuses them, see
    /// [`SubscriptionKeys::check`]).
    pub fn build(model: &Model, keys: &SubscriptionKeys) -> Subscriptions {
        let entries: Vec<Entry> = model
            .subscriptions
            .iter()
            .map(|s| Entry {
                name: s.name.clone(),
                scope: s.scope.clone(),
                active: s.state == SubscriptionState::Active,
            })
            .collect();
        let keys = keys
            .keys
            .iter()
            .filter_map(|(name, d)| Some((entries.iter().position(|e| e.name == *name)?, *d)))
            .collect();
        Subscriptions { entries, keys }
    }

    /// The name of subscription `index` (logs, metrics).
    pub fn name(&self, index: usize) -> &str {
        self.entries.get(index).map_or("-", |e| e.name.as_str())
    }

    /// The subscriptions whose key is `key`: every known digest is compared, in constant time,
    /// whatever matched first.
    fn owners(&self, key: &str) -> Vec<usize> {
        let presented = digest(key);
        let mut out = Vec::new();
        for (index, known) in &self.keys {
            if bool::from(known.ct_eq(&presented)) {
                out.push(*index);
            }
        }
        out
    }

    /// The check of a request on a route with `subscription:` (`default`: the route's `policy`;
    /// `keyless_preflight`: the request is a CORS preflight that `default`'s `cors` answers).
    pub fn check(
        &self,
        route: &RouteSubscription,
        default: Option<PolicyId>,
        headers: &HeaderMap,
        query: Option<&str>,
        keyless_preflight: bool,
    ) -> Verdict {
        // A call without a key (any call, when keys are not required) runs in the open
        // product's context when the API is in one (APIM: "check first for the existence of a
        // product that includes the API but doesn't require a subscription"), else the route's.
        let keyless = Verdict::Pass {
            policy: route.open().map_or(default, |(_, policy)| *policy),
            subscription: None,
        };
        if !route.required {
            return keyless;
        }
        let key = match presented(route, headers, query) {
            Presented::None if keyless_preflight || route.open_product.is_some() => return keyless,
            Presented::None => return Verdict::Missing,
            Presented::Several => return Verdict::Invalid,
            Presented::One(key) => key,
        };
        for index in self.owners(&key) {
            let Some(entry) = self.entries.get(index).filter(|e| e.active) else {
                continue;
            };
            let policy = match &entry.scope {
                SubscriptionScope::All => Some(default),
                SubscriptionScope::Api(api) => {
                    (route.api.as_deref() == Some(api.as_str())).then_some(default)
                }
                SubscriptionScope::Product(product) => route
                    .products
                    .iter()
                    .find(|(p, _)| p == product)
                    .map(|(_, policy)| *policy),
            };
            if let Some(policy) = policy {
                return Verdict::Pass {
                    policy,
                    subscription: Some(index),
                };
            }
        }
        Verdict::Invalid
    }
}

/// How a scope reads in an explanation.
fn scope_text(scope: &SubscriptionScope) -> String {
    match scope {
        SubscriptionScope::All => "scope `all`".to_owned(),
        SubscriptionScope::Api(api) => format!("API `{api}`"),
        SubscriptionScope::Product(product) => format!("product `{product}`"),
    }
}

impl Subscriptions {
    /// The scopes that cover `route` (all APIs, its API, its products), and the active
    /// subscriptions that have one of them: what a refused request's fix sentence names.
    fn covering(&self, route: &RouteSubscription) -> (Vec<String>, Vec<&str>) {
        let mut scopes = vec![scope_text(&SubscriptionScope::All)];
        scopes.extend(route.api.iter().map(|a| format!("API `{a}`")));
        scopes.extend(route.products.iter().map(|(p, _)| format!("product `{p}`")));
        let covers = |scope: &SubscriptionScope| match scope {
            SubscriptionScope::All => true,
            SubscriptionScope::Api(api) => route.api.as_deref() == Some(api.as_str()),
            SubscriptionScope::Product(p) => route.products.iter().any(|(q, _)| q == p),
        };
        let names = self
            .entries
            .iter()
            .filter(|e| e.active && covers(&e.scope))
            .map(|e| e.name.as_str())
            .collect();
        (scopes, names)
    }

    /// The `subscription key` step of an explanation for a request that passed the check: which
    /// subscription's key was accepted (its name and scope, never the key) and which policy that
    /// chose (`policy`: its name, `None` for no policy).
    pub fn explain_pass(
        &self,
        route: &RouteSubscription,
        policy: Option<&str>,
        subscription: Option<usize>,
    ) -> String {
        let runs = |whose: &str| match policy {
            Some(name) => format!("runs {whose} policy `{name}`"),
            None => format!("runs no policy ({whose} is `none`)"),
        };
        let Some(entry) = subscription.and_then(|i| self.entries.get(i)) else {
            if let Some((product, _)) = route.open() {
                let sent = if route.required {
                    "no key sent"
                } else {
                    "no key needed (`required: false`): any key sent is ignored"
                };
                return format!(
                    "{sent}: the call runs in open product `{product}`'s context; {}",
                    runs("the product's")
                );
            }
            return if route.required {
                format!(
                    "no key needed: a CORS preflight the route's policy answers; {}",
                    runs("the route's")
                )
            } else {
                format!(
                    "no key needed (`required: false`): any key sent is ignored; {}",
                    runs("the route's")
                )
            };
        };
        let whose = match &entry.scope {
            SubscriptionScope::Product(_) => "the product's",
            _ => "the route's",
        };
        format!(
            "key of subscription `{}` ({}) accepted; {}",
            entry.name,
            scope_text(&entry.scope),
            runs(whose)
        )
    }

    /// The detail and fix sentence of a refused check (`verdict` `Missing` or `Invalid`) for
    /// `portcullis explain`: where the key is read, and which scopes and subscriptions would open
    /// the route. Names only, never a key.
    pub fn explain_refusal(
        &self,
        route: &RouteSubscription,
        route_name: &str,
        verdict: Verdict,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> (String, String) {
        let (scopes, names) = self.covering(route);
        let names = match names.is_empty() {
            true => "none is configured and active: add one to `subscriptions:`".to_owned(),
            false => format!("active ones that do: {}", names.join(", ")),
        };
        let place = format!(
            "the `{}` header or the `{}` query parameter",
            route.header, route.query
        );
        if verdict == Verdict::Missing {
            return (
                format!("route `{route_name}` needs a subscription key; the request sends none"),
                format!(
                    "Send the key of a subscription covering route `{route_name}` in {place}: a subscription of {} ({names}).",
                    scopes.join(", ")
                ),
            );
        }
        if matches!(presented(route, headers, query), Presented::Several) {
            return (
                format!("the subscription key is sent more than once in {place}"),
                format!("Send the subscription key once, in {place}: a key sent twice is refused (which copy a backend reads is its choice)."),
            );
        }
        (
            format!("no active subscription with the key sent covers route `{route_name}`"),
            format!(
                "The key is not the key of an active subscription covering route `{route_name}`: send the key of a subscription of {} ({names}); check its `state`, and that the gateway (and explain) is given it with `--subscription-key NAME=KEY`.",
                scopes.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const CONFIG: &str = r#"
server: { listen: "127.0.0.1:0" }
policies:
  base: { inbound: [ { set-header: { name: x-p, value: base } } ] }
  gold: { inbound: [ { set-header: { name: x-p, value: gold } } ] }
subscriptions:
  gold-dev: { scope: product, product: gold }
  free-dev: { scope: product, product: free }
  orders: { scope: api, api: orders }
  billing: { scope: api, api: billing }
  all: { scope: all }
  old: { scope: all, state: suspended }
routes:
  - name: r
    upstream: "http://127.0.0.1:1"
    subscription: { api: orders, products: { gold: gold, free: none } }
    policy: base
"#;

    fn setup() -> (Subscriptions, RouteSubscription, Model) {
        let (model, _) =
            portcullis_config::load_str(CONFIG, std::path::Path::new("t.yaml")).unwrap();
        let mut keys = SubscriptionKeys::new();
        for arg in [
            "gold-dev=g1",
            "gold-dev=g2",
            "free-dev=f",
            "orders=o",
            "billing=b",
            "all=a",
            "old=x",
        ] {
            keys.add_arg(arg).unwrap();
        }
        assert_eq!(keys.check(&model).unwrap(), Vec::<String>::new());
        let route = model.routes[0].subscription.as_ref().unwrap();
        let route = RouteSubscription::build(route, &model);
        (Subscriptions::build(&model, &keys), route, model)
    }

    fn with_header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ocp-apim-subscription-key", v.parse().unwrap());
        h
    }

    #[test]
    fn scopes_choose_the_policy() {
        let (subs, route, model) = setup();
        let base = model.policy_id("base");
        let gold = model.policy_id("gold");
        let check = |h: &HeaderMap, q: Option<&str>| subs.check(&route, base, h, q, false);
        let none = HeaderMap::new();
        let pass = |policy, name: &str| Verdict::Pass {
            policy,
            subscription: model.subscriptions.iter().position(|s| s.name == name),
        };
        assert_eq!(check(&none, None), Verdict::Missing);
        assert_eq!(check(&with_header(""), None), Verdict::Missing);
        assert_eq!(check(&with_header("g2"), None), pass(gold, "gold-dev"));
        assert_eq!(
            check(&none, Some("subscription-key=g1")),
            pass(gold, "gold-dev")
        );
        assert_eq!(
            check(&none, Some("subscription-key=f")),
            pass(None, "free-dev")
        );
        assert_eq!(check(&with_header("o"), None), pass(base, "orders"));
        assert_eq!(check(&with_header("a"), None), pass(base, "all"));
        // The header wins over the query.
        assert_eq!(
            check(&with_header("a"), Some("subscription-key=g1")),
            pass(base, "all")
        );
        assert_eq!(
            check(&with_header("b"), None),
            Verdict::Invalid,
            "another API"
        );
        assert_eq!(
            check(&with_header("x"), None),
            Verdict::Invalid,
            "suspended"
        );
        assert_eq!(check(&with_header("g"), None), Verdict::Invalid, "a prefix");
        assert_eq!(check(&with_header("g1 "), None), Verdict::Invalid);
        assert_eq!(
            check(&none, Some("subscription-key=g1&subscription-key=g1")),
            Verdict::Invalid,
            "a parameter sent twice"
        );
        let mut twice = with_header("g1");
        twice.append("ocp-apim-subscription-key", "g1".parse().unwrap());
        assert_eq!(check(&twice, None), Verdict::Invalid, "a header sent twice");
        // A keyless preflight goes to the route's policy; a preflight with a key is checked.
        assert_eq!(
            subs.check(&route, base, &none, None, true),
            Verdict::Pass {
                policy: base,
                subscription: None
            }
        );
        assert_eq!(
            subs.check(&route, base, &with_header("nope"), None, true),
            Verdict::Invalid
        );
    }

    #[test]
    fn a_route_that_does_not_require_a_key_ignores_it() {
        let (subs, mut route, model) = setup();
        route.required = false;
        let base = model.policy_id("base");
        for h in [HeaderMap::new(), with_header("nope"), with_header("g1")] {
            assert_eq!(
                subs.check(&route, base, &h, None, false),
                Verdict::Pass {
                    policy: base,
                    subscription: None
                }
            );
        }
    }

    #[test]
    fn a_call_without_a_key_runs_in_the_open_products_context() {
        let (subs, _, model) = setup();
        let config = CONFIG.replace(
            "products: { gold: gold, free: none } }",
            "products: { gold: gold, free: none }, open-product: gold }",
        );
        let (open_model, _) =
            portcullis_config::load_str(&config, std::path::Path::new("t.yaml")).unwrap();
        let mut route = RouteSubscription::build(
            open_model.routes[0].subscription.as_ref().unwrap(),
            &open_model,
        );
        let (base, gold) = (model.policy_id("base"), model.policy_id("gold"));
        let keyless = Verdict::Pass {
            policy: gold,
            subscription: None,
        };
        let none = HeaderMap::new();
        assert_eq!(subs.check(&route, base, &none, None, false), keyless);
        assert_eq!(
            subs.check(&route, base, &with_header(""), None, false),
            keyless
        );
        assert_eq!(subs.check(&route, base, &none, None, true), keyless);
        // A key is still checked: a valid one runs its scope's policy, any other is refused.
        assert_eq!(
            subs.check(&route, base, &with_header("o"), None, false),
            Verdict::Pass {
                policy: base,
                subscription: model.subscriptions.iter().position(|s| s.name == "orders"),
            }
        );
        assert_eq!(
            subs.check(&route, base, &with_header("nope"), None, false),
            Verdict::Invalid
        );
        // Keys not required: every call is keyless, in the open product's context.
        route.required = false;
        for h in [none, with_header("nope"), with_header("o")] {
            assert_eq!(subs.check(&route, base, &h, None, false), keyless);
        }
        let said = subs.explain_pass(&route, Some("gold"), None);
        assert!(said.contains("open product `gold`"), "{said}");
        // The open product must be one of the route's products.
        let config = CONFIG.replace(
            "products: { gold: gold, free: none } }",
            "products: { gold: gold, free: none }, open-product: silver }",
        );
        let err = portcullis_config::load_str(&config, std::path::Path::new("t.yaml"))
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(
            err.contains("`open-product` `silver` is not one of"),
            "{err}"
        );
    }

    #[test]
    fn keys_are_checked_against_the_config_and_never_shown() {
        let (_, _, model) = setup();
        let mut keys = SubscriptionKeys::new();
        keys.add_file("# keys\n\ngold-dev = secret-1\n  all=secret=2\n")
            .unwrap();
        let warnings = keys.check(&model).unwrap();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("`free-dev` has no key"));
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("gold-dev") && !shown.contains("secret"),
            "{shown}"
        );
        keys.add_arg("typo=secret-3").unwrap();
        let err = keys.check(&model).unwrap_err();
        assert!(err.contains("`typo`") && !err.contains("secret"), "{err}");
        let err = SubscriptionKeys::new().add_arg("secret-only").unwrap_err();
        assert!(!err.contains("secret-only"));
        let err = SubscriptionKeys::new()
            .add_file("ok=1\nsecret-line\n")
            .unwrap_err();
        assert_eq!(err, "line 2: expected NAME=KEY");
        assert!(SubscriptionKeys::new().add_arg("name=").is_err());
        assert!(SubscriptionKeys::new().add_arg("=key").is_err());
    }
}
