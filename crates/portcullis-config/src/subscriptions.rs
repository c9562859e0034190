//! `subscriptions:` and a route's `subscription:`: APIM's subscription keys.
//!
//! Why the keys are not in the file: a gateway.yaml is committed, reviewed and printed; a key in it
//! would be a credential in Git. The file names the subscriptions and what each opens (its scope
//! and state); the keys reach the gateway from `portcullis run --subscription-key NAME=KEY` or a
//! keys file, which `portcullis_proxy` checks against these names.
//!
//! The semantics follow APIM (docs/configuration.md, `subscriptions`): a key is valid for a route
//! when its subscription is active and its scope is all APIs, the route's `api`, or one of the
//! route's `products`; a product key runs that product's policy, any other key (and a keyless call
//! on a route that does not require one) runs the route's `policy`. A call without a key on a
//! route whose API is in an *open* product (`open-product`, a product without a subscription
//! requirement) is let through and runs that product's policy, as APIM does.

use crate::model::{
    ProductPolicy, Route, RouteSubscription, Subscription, SubscriptionScope, SubscriptionState,
    DEFAULT_SUBSCRIPTION_QUERY,
};

/// [`crate::model::DEFAULT_SUBSCRIPTION_HEADER`] as a header name (lower case).
const DEFAULT_SUBSCRIPTION_HEADER_LOWER: &str = "ocp-apim-subscription-key";
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Node, Pos};

const SUBSCRIPTION_KEYS: &[&str] = &["scope", "product", "api", "state"];
const ROUTE_SUBSCRIPTION_KEYS: &[&str] = &[
    "api",
    "required",
    "header-name",
    "query-parameter-name",
    "products",
    "open-product",
];

/// A subscription and where it is written.
pub(crate) struct Placed {
    pub pos: Pos,
    pub subscription: Subscription,
}

/// Whether `name` can be a subscription name: given as `NAME=KEY` on the command line, so no `=`,
/// no white space and no control characters.
pub fn is_subscription_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '=' || c.is_whitespace() || c.is_control())
}

/// Reads the top-level `subscriptions:` mapping (names unique by construction: mapping keys).
pub(crate) fn read_all(cx: &mut Cx, node: Option<&Node>) -> Vec<Placed> {
    let Some(f) = node.and_then(|n| Fields::open(cx, n, "subscriptions")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, key, body) in f.entries() {
        if !is_subscription_name(name) {
            cx.error(
                key.pos,
                format!("subscription name `{name}` must be non-empty, without `=`, spaces or control characters (it is given as NAME=KEY)"),
            );
            continue;
        }
        if let Some(subscription) = read_one(cx, name, body) {
            out.push(Placed {
                pos: key.pos,
                subscription,
            });
        }
    }
    out
}

fn read_one(cx: &mut Cx, name: &str, node: &Node) -> Option<Subscription> {
    let section = format!("subscription `{name}`");
    let f = Fields::new(cx, node, &section, SUBSCRIPTION_KEYS)?;
    let errors = cx.errors();
    let state = match f.get("state") {
        None => SubscriptionState::Active,
        Some(n) => state(cx, n)?,
    };
    let product = f.text(cx, "product");
    let api = f.text(cx, "api");
    let Some(scope_node) = f.get("scope") else {
        cx.error(
            f.pos,
            format!("{section} needs `scope`: `product`, `api` or `all`"),
        );
        return None;
    };
    let scope = match walk::string(cx, scope_node, "scope")? {
        "all" => SubscriptionScope::All,
        "product" => match &product {
            Some(p) => SubscriptionScope::Product(p.clone()),
            None => {
                cx.error(
                    f.pos,
                    format!("{section} has `scope: product` but no `product`"),
                );
                return None;
            }
        },
        "api" => match &api {
            Some(a) => SubscriptionScope::Api(a.clone()),
            None => {
                cx.error(f.pos, format!("{section} has `scope: api` but no `api`"));
                return None;
            }
        },
        other => {
            cx.error(
                scope_node.pos,
                format!("`scope` must be `product`, `api` or `all`, found `{other}`"),
            );
            return None;
        }
    };
    let stray = match scope {
        SubscriptionScope::Product(_) => f.key("api").map(|k| (k, "api")),
        SubscriptionScope::Api(_) => f.key("product").map(|k| (k, "product")),
        SubscriptionScope::All => f
            .key("product")
            .map(|k| (k, "product"))
            .or(f.key("api").map(|k| (k, "api"))),
    };
    if let Some((k, what)) = stray {
        cx.error(
            k.pos,
            format!("`{what}` does not go with this `scope` (a subscription has one scope)"),
        );
    }
    (cx.errors() == errors).then(|| Subscription {
        name: name.to_owned(),
        scope,
        state,
    })
}

fn state(cx: &mut Cx, node: &Node) -> Option<SubscriptionState> {
    Some(match walk::string(cx, node, "state")? {
        "active" => SubscriptionState::Active,
        "suspended" => SubscriptionState::Suspended,
        "cancelled" => SubscriptionState::Cancelled,
        "expired" => SubscriptionState::Expired,
        "rejected" => SubscriptionState::Rejected,
        "submitted" => SubscriptionState::Submitted,
        other => {
            cx.error(
                node.pos,
                format!("`state` must be one of active, suspended, cancelled, expired, rejected, submitted; found `{other}`"),
            );
            return None;
        }
    })
}

/// Reads a route's `subscription:`; product policy names are checked by `policy_name` (the same
/// check as the route's `policy`).
pub(crate) fn read_route(
    cx: &mut Cx,
    node: &Node,
    policy_name: &mut dyn FnMut(&mut Cx, &Node) -> Option<Option<String>>,
) -> Option<RouteSubscription> {
    let f = Fields::new(cx, node, "subscription", ROUTE_SUBSCRIPTION_KEYS)?;
    let required = f
        .get("required")
        .and_then(|n| walk::boolean(cx, n, "required"))
        .unwrap_or(true);
    let header_name = match f.get("header-name") {
        None => Some(http::HeaderName::from_static(
            DEFAULT_SUBSCRIPTION_HEADER_LOWER,
        )),
        Some(n) => walk::non_empty(cx, n, "header-name").and_then(|text| {
            let parsed = http::HeaderName::from_bytes(text.as_bytes()).ok();
            if parsed.is_none() {
                cx.error(
                    n.pos,
                    format!("`header-name` is not a valid header name: `{text}`"),
                );
            }
            parsed
        }),
    };
    let query_parameter_name = f
        .text(cx, "query-parameter-name")
        .unwrap_or_else(|| DEFAULT_SUBSCRIPTION_QUERY.to_owned());
    let mut products = Vec::new();
    if let Some(p) = f
        .get("products")
        .and_then(|n| Fields::open(cx, n, "products"))
    {
        for (product, key, value) in p.entries() {
            if product.trim().is_empty() {
                cx.error(key.pos, "a product needs a name");
                continue;
            }
            if let Some(policy) = policy_name(cx, value) {
                products.push(ProductPolicy {
                    product: (*product).to_owned(),
                    policy,
                });
            }
        }
    }
    let open_product = f.get("open-product").and_then(|n| {
        let name = walk::non_empty(cx, n, "open-product")?;
        if !products.iter().any(|p| p.product == name) {
            cx.error(
                n.pos,
                format!("`open-product` `{name}` is not one of this route's `products` (which give the policy its calls run)"),
            );
            return None;
        }
        Some(name.to_owned())
    });
    Some(RouteSubscription {
        api: f.text(cx, "api"),
        required,
        header_name: header_name?,
        query_parameter_name,
        products,
        open_product,
    })
}

/// A subscription whose keys open no route is almost certainly a typo in its scope (or a route
/// missing its `subscription:`): warned, at the subscription.
pub(crate) fn warn_unused(cx: &mut Cx, subscriptions: &[Placed], routes: &[Route]) {
    let checked = || routes.iter().filter_map(|r| r.subscription.as_ref());
    for p in subscriptions {
        let s = &p.subscription;
        let opens = match &s.scope {
            SubscriptionScope::All => checked().next().is_some(),
            SubscriptionScope::Api(api) => checked().any(|r| r.api.as_deref() == Some(api)),
            SubscriptionScope::Product(product) => {
                checked().any(|r| r.products.iter().any(|p| &p.product == product))
            }
        };
        if !opens {
            let what = match &s.scope {
                SubscriptionScope::All => "no route has a `subscription:`".to_owned(),
                SubscriptionScope::Api(api) => {
                    format!("no route's `subscription.api` is `{api}`")
                }
                SubscriptionScope::Product(product) => {
                    format!("no route's `subscription.products` lists `{product}`")
                }
            };
            cx.warning(
                p.pos,
                format!("subscription `{}` opens nothing: {what}", s.name),
            );
        }
    }
}
