//! What a request is, for routing: the canonical form of its target, method and host, and the one
//! route matcher that both the proxy and `portcullis check` (its shadowed-route analysis) use.
//!
//! Why a crate of its own: the gateway authorises a request under the route its path matches and
//! then forwards that path to a backend. If the gateway and the backend read the path differently
//! (`/public/../api/orders`, `%2e%2e`, `//api`, `/API/orders`, `/api;x=1/orders`), a request is
//! authorised under one route and served under another. The rule here is: **match on a canonical
//! form, forward exactly the canonical form that was matched, refuse what cannot be made
//! canonical safely**. Keeping the canonicaliser and the matcher in one small pure crate (no I/O,
//! no pingora) means `check` and the proxy cannot disagree, and the property tests run in seconds.
//!
//! - [`target`]: request-target canonicalisation (RFC 3986 6.2.2 normalisation, dot segments,
//!   merged slashes, refusals for encoded separators, double escapes, control characters...),
//!   method and host canonical forms.
//! - [`matcher`]: [`RouteMatch`] (host, exact path or path prefix, methods, case sensitivity),
//!   its `matches` and its `covers` (shadowing).
//! - [`headers`]: request headers that change how a request is handled (an `Upgrade` without
//!   `Connection: upgrade`, method overrides, framing).
//! - [`query`]: raw query editing (`set-query-parameter`, `rewrite-uri`'s unmatched parameters).
//! - [`template`]: URL templates in route paths (`/orders/{id}`, `/files/{*path}`).
#![warn(missing_docs)]

pub mod headers;
pub mod matcher;
pub mod query;
pub mod target;
pub mod template;

pub use matcher::{Mismatch, RouteMatch};
pub use target::{
    canonical_host, canonical_path, canonicalize, check_method, EscapedSlashes, Normalization,
    PathParameters, Refusal, Target,
};
pub use template::{is_param_name, PathTemplate, Segment, TemplateError};
