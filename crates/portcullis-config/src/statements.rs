//! A policy's inbound statements, in the order they run: APIM evaluates a policy document's
//! statements in document order (`rate-limit-by-key` on the client IP before `validate-jwt`,
//! another keyed on `sub` after it). Two ways to write them:
//!
//! - **Ordered**: `inbound: [ {cors: ...}, {rate-limit-by-key: ...}, {validate-jwt: ...}, ... ]`,
//!   run in list order (what `import-apim` writes, preserving APIM's order).
//! - **Keyed** (the first form, still valid): `cors:`, `validate-jwt:` (or
//!   `validate-azure-ad-token:`), `rate-limit:`, `rate-limit-by-key:` (one or a list) and
//!   `quota-by-key:` (one or a list), `ip-filter:` and `check-header:` as policy keys, run in this
//!   fixed order: ip-filter, cors, check-header, validate-jwt, rate-limit, rate-limit-by-key...,
//!   quota-by-key... (the caller's address first: it costs nothing and needs nothing else).
//!
//! Whatever the order, a CORS preflight runs only the `cors` statement (as in APIM), so preflights
//! never need a token. A statement keyed on a claim must come after `validate-jwt`. The
//! transformation statements (`set-variable`, `set-header`, `return-response`, `choose`) exist only
//! in the ordered form (and the `outbound:` list): see `transforms`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::model::IpNet;
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node};

/// One inbound statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `cors`.
    Cors(Arc<Cors>),
    /// `validate-jwt` / `validate-azure-ad-token` with the policy-level claim rules: the policy's
    /// token check (at most one per policy).
    ValidateJwt,
    /// `rate-limit`, `rate-limit-by-key`, `quota-by-key`.
    Limit(Arc<Limit>),
    /// `ip-filter`.
    IpFilter(Arc<IpFilter>),
    /// `check-header`.
    CheckHeader(Arc<CheckHeader>),
    /// `set-query-parameter` (see [`crate::upstream`]).
    SetQueryParameter(Arc<crate::upstream::SetQueryParameter>),
    /// `rewrite-uri`.
    RewriteUri(Arc<crate::upstream::RewriteUri>),
    /// `set-backend-service`: the backend, resolved from `base-url` or `backend-id`.
    SetBackendService(crate::model::BackendId),
    /// `mock-response`: answers without the backend.
    MockResponse(Arc<crate::upstream::MockResponse>),
    /// `set-variable`.
    SetVariable(Arc<crate::transforms::SetVariable>),
    /// `set-header` (inbound: on the request to the backend; outbound: on the response).
    SetHeader(Arc<crate::transforms::SetHeader>),
    /// `return-response`: answer without calling the backend.
    ReturnResponse(Arc<crate::transforms::ReturnResponse>),
    /// `choose`: the first branch whose condition holds.
    Choose(Arc<crate::transforms::Choose>),
}

impl Statement {
    /// The APIM element name.
    pub fn element(&self) -> &'static str {
        match self {
            Statement::Cors(_) => "cors",
            Statement::ValidateJwt => "validate-jwt",
            Statement::Limit(l) => l.kind.element(),
            Statement::IpFilter(_) => "ip-filter",
            Statement::CheckHeader(_) => "check-header",
            Statement::SetVariable(_) => "set-variable",
            Statement::SetHeader(_) => "set-header",
            Statement::ReturnResponse(_) => "return-response",
            Statement::Choose(_) => "choose",
            Statement::SetQueryParameter(_) => "set-query-parameter",
            Statement::RewriteUri(_) => "rewrite-uri",
            Statement::SetBackendService(_) => "set-backend-service",
            Statement::MockResponse(_) => "mock-response",
        }
    }
}

/// APIM's `ip-filter`: `allow` passes only the listed callers, `forbid` refuses them (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilter {
    /// `action`: `true` for `allow`, `false` for `forbid`.
    pub allow: bool,
    /// `address` elements (a single address, or a CIDR range).
    pub addresses: Vec<IpNet>,
    /// `address-range` elements, `from` to `to` inclusive, both of one family.
    pub ranges: Vec<(IpAddr, IpAddr)>,
}

impl IpFilter {
    /// Whether `ip` is listed (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn lists(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.addresses.iter().any(|n| n.contains(ip))
            || self.ranges.iter().any(|(from, to)| match (from, to, ip) {
                (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => (*a..=*b).contains(&x),
                (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => (*a..=*b).contains(&x),
                _ => false,
            })
    }

    /// Whether a caller at `ip` may pass (an unknown address passes only a `forbid` filter).
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(ip) => self.lists(ip) == self.allow,
            None => !self.allow,
        }
    }
}

/// APIM's `check-header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckHeader {
    /// `name`.
    pub name: HeaderName,
    /// `value` elements: any one passes; empty: the header must only be present.
    pub values: Vec<String>,
    /// `ignore-case` (default false): compare the values case-insensitively.
    pub ignore_case: bool,
    /// `failed-check-httpcode`.
    pub failed_check_httpcode: u16,
    /// `failed-check-error-message`.
    pub failed_check_error_message: String,
}

/// Why a request failed a `check-header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// The header is present with an allowed value (or any value when none is listed).
    Passed,
    /// The header is absent.
    NotFound,
    /// The header is present, but none of its values is listed.
    ValueNotAllowed,
}

impl CheckHeader {
    /// Checks a request's headers.
    pub fn check(&self, headers: &http::HeaderMap) -> HeaderCheck {
        let mut present = headers.get_all(&self.name).iter().peekable();
        if present.peek().is_none() {
            return HeaderCheck::NotFound;
        }
        if self.values.is_empty() {
            return HeaderCheck::Passed;
        }
        let ok = present.any(|v| {
            let v = v.as_bytes();
            self.values.iter().any(|want| {
                if self.ignore_case {
                    want.as_bytes().eq_ignore_ascii_case(v)
                } else {
                    want.as_bytes() == v
                }
            })
        });
        if ok {
            HeaderCheck::Passed
        } else {
            HeaderCheck::ValueNotAllowed
        }
    }
}

/// `*` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyOr<T> {
    /// `*`.
    Any,
    /// The listed values.
    List(Vec<T>),
}

/// APIM's `cors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `allowed-origins` (`scheme://host[:port]`, compared case-insensitively, or `*`).
    pub allowed_origins: AnyOr<String>,
    /// `allowed-methods` (default GET and POST; `*`: any).
    pub allowed_methods: AnyOr<Method>,
    /// `allowed-methods`' `preflight-result-max-age` attribute, seconds.
    pub preflight_result_max_age: Option<u64>,
    /// `allowed-headers` (lower case; `*`: any).
    pub allowed_headers: AnyOr<String>,
    /// `expose-headers`.
    pub expose_headers: Vec<String>,
    /// `allow-credentials` (default false; never with a `*` origin).
    pub allow_credentials: bool,
    /// `terminate-unmatched-request` (default true): an unmatched preflight, or an unmatched GET/HEAD
    /// with an Origin, is answered with an empty 200 and never forwarded.
    pub terminate_unmatched_request: bool,
}

/// Which statement a [`Limit`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `rate-limit`: one counter per statement (APIM keys it by subscription; Portcullis has none).
    RateLimit,
    /// `rate-limit-by-key`.
    RateLimitByKey,
    /// `quota-by-key`.
    QuotaByKey,
}

impl LimitKind {
    /// The APIM element name.
    pub fn element(self) -> &'static str {
        match self {
            LimitKind::RateLimit => "rate-limit",
            LimitKind::RateLimitByKey => "rate-limit-by-key",
            LimitKind::QuotaByKey => "quota-by-key",
        }
    }
}

/// Where a counter key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterKey {
    /// The client IP (the connection's peer; see `server.trusted-proxies`).
    ClientIp,
    /// A claim of the verified token (name or dotted path); the statement must follow validate-jwt.
    Claim(String),
    /// A request header's value (absent: the empty key).
    Header(HeaderName),
    /// A constant (one counter for every caller); named values are substituted before.
    Constant(String),
    /// The name of the subscription whose key the route's `subscription:` check accepted (APIM's
    /// `context.Subscription`); the empty key when none was. `rate-limit` counts by it, as APIM
    /// counts `rate-limit` per subscription.
    Subscription,
}

/// Which responses count (APIM's `increment-condition`, in the shapes people write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementCondition {
    /// Every request (the default).
    Any,
    /// Only 2xx responses.
    Success,
    /// Every response but 4xx.
    Non4xx,
    /// Every response but 5xx.
    Non5xx,
    /// Only responses below 400.
    Below400,
}

impl IncrementCondition {
    /// Whether a response with this status counts.
    pub fn counts(self, status: u16) -> bool {
        match self {
            IncrementCondition::Any => true,
            IncrementCondition::Success => (200..300).contains(&status),
            IncrementCondition::Non4xx => !(400..500).contains(&status),
            IncrementCondition::Non5xx => !(500..600).contains(&status),
            IncrementCondition::Below400 => status < 400,
        }
    }
}

/// `rate-limit`, `rate-limit-by-key` or `quota-by-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Which statement.
    pub kind: LimitKind,
    /// Counter namespace: `policy#n` (n: the statement's place in the policy), so two statements
    /// never share counters and a reload keeps them.
    pub id: String,
    /// `calls` (quota: `None` when only `bandwidth` is limited).
    pub calls: Option<u64>,
    /// `bandwidth` in kilobytes (quota only).
    pub bandwidth_kb: Option<u64>,
    /// `renewal-period`.
    pub renewal_period: Duration,
    /// `counter-key` (`rate-limit`: a constant).
    pub counter_key: CounterKey,
    /// `increment-condition`.
    pub increment_condition: IncrementCondition,
    /// `increment-count` (default 1).
    pub increment_count: u64,
    /// `retry-after-header-name` (default `Retry-After`).
    pub retry_after_header_name: HeaderName,
    /// `remaining-calls-header-name`.
    pub remaining_calls_header_name: Option<HeaderName>,
    /// `total-calls-header-name`.
    pub total_calls_header_name: Option<HeaderName>,
}

impl Limit {
    /// Rate limits count in a sliding window, quotas in fixed ones.
    pub fn sliding(&self) -> bool {
        self.kind != LimitKind::QuotaByKey
    }
}

/// Policy keys that are statements in the keyed form.
pub(crate) const KEYED: &[&str] = &[
    "cors",
    "validate-jwt",
    "validate-azure-ad-token",
    "rate-limit",
    "rate-limit-by-key",
    "quota-by-key",
    "ip-filter",
    "check-header",
];

/// Statements that exist only in the ordered `inbound:` list (and `outbound:`), never as keys.
pub(crate) const ORDERED_ONLY: &[&str] =
    &["set-variable", "set-header", "return-response", "choose"];

/// Statements an `outbound:` list may hold.
pub(crate) const OUTBOUND: &[&str] = &["set-variable", "set-header", "choose"];

/// Reads `ip-filter`.
pub(crate) fn ip_filter(cx: &mut Cx, node: &Node) -> Option<IpFilter> {
    let f = Fields::new(
        cx,
        node,
        "ip-filter",
        &["action", "addresses", "address-ranges"],
    )?;
    let errors = cx.errors();
    let allow = match f.get("action") {
        Some(n) => match walk::string(cx, n, "action") {
            Some("allow") => true,
            Some("forbid") => false,
            Some(other) => {
                cx.error(
                    n.pos,
                    format!("ip-filter `action` must be `allow` or `forbid`, found `{other}`"),
                );
                false
            }
            None => false,
        },
        None => {
            cx.error(f.pos, "ip-filter needs `action` (`allow` or `forbid`)");
            false
        }
    };
    let mut addresses = Vec::new();
    if let Some(n) = f.get("addresses") {
        let items = walk::list(cx, n, "addresses").unwrap_or_default();
        if items.is_empty() && matches!(n.kind, Kind::Seq(_)) {
            cx.error(n.pos, "`addresses` is empty");
        }
        for item in items {
            let Some(text) = walk::non_empty(cx, item, "address") else {
                continue;
            };
            match IpNet::parse(text) {
                Some(net) => addresses.push(net),
                None => cx.error(
                    item.pos,
                    format!("`{text}` is not an IP address (or `address/prefix`)"),
                ),
            }
        }
    }
    let mut ranges = Vec::new();
    if let Some(n) = f.get("address-ranges") {
        let items = walk::list(cx, n, "address-ranges").unwrap_or_default();
        if items.is_empty() && matches!(n.kind, Kind::Seq(_)) {
            cx.error(n.pos, "`address-ranges` is empty");
        }
        for item in items {
            let Some(r) = Fields::new(cx, item, "address-range", &["from", "to"]) else {
                continue;
            };
            let mut end = |key: &str| match r.get(key) {
                Some(n) => walk::non_empty(cx, n, key).and_then(|t| {
                    t.parse::<IpAddr>().ok().map(|ip| (n, ip)).or_else(|| {
                        cx.error(n.pos, format!("`{t}` is not an IP address"));
                        None
                    })
                }),
                None => {
                    cx.error(r.pos, format!("an address range needs `{key}`"));
                    None
                }
            };
            let (from, to) = (end("from"), end("to"));
            let (Some((_, from)), Some((to_node, to))) = (from, to) else {
                continue;
            };
            let (from, to) = (from.to_canonical(), to.to_canonical());
            if from.is_ipv4() != to.is_ipv4() {
                cx.error(
                    to_node.pos,
                    format!(
                        "an address range is one family: `{from}` to `{to}` mixes IPv4 and IPv6"
                    ),
                );
            } else if from > to {
                cx.error(
                    to_node.pos,
                    format!("an address range runs upwards: `{from}` is after `{to}`"),
                );
            } else {
                ranges.push((from, to));
            }
        }
    }
    if f.get("addresses").is_none() && f.get("address-ranges").is_none() {
        cx.error(
            f.pos,
            "ip-filter needs `addresses`, `address-ranges` or both",
        );
    }
    let filter = IpFilter {
        allow,
        addresses,
        ranges,
    };
    (cx.errors() == errors).then_some(filter)
}

/// Reads `check-header`.
pub(crate) fn check_header(cx: &mut Cx, node: &Node) -> Option<CheckHeader> {
    let keys = [
        "name",
        "values",
        "ignore-case",
        "failed-check-httpcode",
        "failed-check-error-message",
    ];
    let f = Fields::new(cx, node, "check-header", &keys)?;
    let errors = cx.errors();
    let name = match f.get("name") {
        Some(n) => walk::non_empty(cx, n, "name").and_then(|t| header_name(cx, n, t)),
        None => {
            cx.error(f.pos, "check-header needs `name` (the header to check)");
            None
        }
    };
    let values = match f.get("values") {
        Some(n) => {
            let before = cx.errors();
            let values = walk::string_list(cx, n, "values");
            if values.is_empty() && cx.errors() == before {
                cx.error(
                    n.pos,
                    "`values` is empty: leave it out to require only that the header is present",
                );
            }
            values
        }
        None => Vec::new(),
    };
    let ignore_case = f
        .get("ignore-case")
        .and_then(|n| walk::boolean(cx, n, "ignore-case"))
        .unwrap_or(false);
    let status = match f.get("failed-check-httpcode") {
        Some(n) => walk::failure_status(cx, n, "failed-check-httpcode"),
        None => {
            cx.error(
                f.pos,
                "check-header needs `failed-check-httpcode` (400-599)",
            );
            None
        }
    };
    let message = match f.get("failed-check-error-message") {
        Some(n) => walk::string(cx, n, "failed-check-error-message").map(str::to_owned),
        None => {
            cx.error(f.pos, "check-header needs `failed-check-error-message`");
            None
        }
    };
    let check = CheckHeader {
        name: name?,
        values,
        ignore_case,
        failed_check_httpcode: status?,
        failed_check_error_message: message?,
    };
    (cx.errors() == errors).then_some(check)
}

/// Longest `renewal-period` of a rate limit (APIM: 300 s).
const MAX_RATE_PERIOD: u64 = 300;

/// Reads `cors`.
pub(crate) fn cors(cx: &mut Cx, node: &Node) -> Option<Cors> {
    let keys = [
        "allowed-origins",
        "allowed-methods",
        "preflight-result-max-age",
        "allowed-headers",
        "expose-headers",
        "allow-credentials",
        "terminate-unmatched-request",
    ];
    let f = Fields::new(cx, node, "cors", &keys)?;
    let errors = cx.errors();
    let allowed_origins = match f.get("allowed-origins") {
        Some(n) => any_or(cx, n, "allowed-origins", origin),
        None => {
            cx.error(
                f.pos,
                "cors needs `allowed-origins` (a list of origins, or `*`)",
            );
            AnyOr::List(Vec::new())
        }
    };
    let allowed_methods = match f.get("allowed-methods") {
        Some(n) => any_or(cx, n, "allowed-methods", |cx, n, text| {
            let upper = text.to_ascii_uppercase();
            Method::from_bytes(upper.as_bytes()).ok().or_else(|| {
                cx.error(n.pos, format!("`{text}` is not an HTTP method"));
                None
            })
        }),
        None => AnyOr::List(vec![Method::GET, Method::POST]),
    };
    let allowed_headers = match f.get("allowed-headers") {
        Some(n) => any_or(cx, n, "allowed-headers", |cx, n, text| {
            header_name(cx, n, text).map(|h| h.as_str().to_owned())
        }),
        None => AnyOr::List(Vec::new()),
    };
    let expose_headers = f
        .get("expose-headers")
        .map(|n| walk::string_list(cx, n, "expose-headers"))
        .unwrap_or_default();
    let allow_credentials = f
        .get("allow-credentials")
        .and_then(|n| walk::boolean(cx, n, "allow-credentials"))
        .unwrap_or(false);
    if allow_credentials && allowed_origins == AnyOr::Any {
        let pos = f.get("allow-credentials").map_or(f.pos, |n| n.pos);
        cx.error(
            pos,
            "cors: allow-credentials cannot be combined with allowed-origins `*` (browsers refuse it, and it would let every site read credentialed answers): list the origins",
        );
    }
    let cors = Cors {
        allowed_origins,
        allowed_methods,
        preflight_result_max_age: f
            .get("preflight-result-max-age")
            .and_then(|n| walk::integer_in(cx, n, "preflight-result-max-age", 0, 86_400))
            .and_then(|v| u64::try_from(v).ok()),
        allowed_headers,
        expose_headers,
        allow_credentials,
        terminate_unmatched_request: f
            .get("terminate-unmatched-request")
            .and_then(|n| walk::boolean(cx, n, "terminate-unmatched-request"))
            .unwrap_or(true),
    };
    (cx.errors() == errors).then_some(cors)
}

fn any_or<T>(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    mut item: impl FnMut(&mut Cx, &Node, &str) -> Option<T>,
) -> AnyOr<T> {
    if let Kind::Str { value, .. } = &node.kind {
        if value == "*" {
            return AnyOr::Any;
        }
    }
    let Some(items) = walk::list(cx, node, what) else {
        return AnyOr::List(Vec::new());
    };
    if items.is_empty() {
        cx.error(node.pos, format!("`{what}` is empty"));
    }
    let mut out = Vec::new();
    for n in items {
        let Some(text) = walk::non_empty(cx, n, what) else {
            continue;
        };
        if text == "*" {
            if items.len() > 1 {
                cx.error(n.pos, format!("`{what}`: `*` stands alone"));
            }
            return AnyOr::Any;
        }
        if let Some(v) = item(cx, n, text) {
            out.push(v);
        }
    }
    AnyOr::List(out)
}

fn origin(cx: &mut Cx, node: &Node, text: &str) -> Option<String> {
    let ok = url::Url::parse(text).ok().is_some_and(|u| {
        (u.scheme() == "http" || u.scheme() == "https")
            && u.has_host()
            && (u.path() == "/" || u.path().is_empty())
            && u.query().is_none()
            && !text.ends_with('/')
    });
    if !ok {
        cx.error(
            node.pos,
            format!("an origin is `scheme://host[:port]` with nothing after it, found `{text}`"),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

/// A header name, reported at `node` when it is not one.
pub(crate) fn header_name(cx: &mut Cx, node: &Node, text: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(text.as_bytes()).ok().or_else(|| {
        cx.error(node.pos, format!("`{text}` is not a header name"));
        None
    })
}

/// Reads `rate-limit`, `rate-limit-by-key` or `quota-by-key`.
pub(crate) fn limit(cx: &mut Cx, node: &Node, kind: LimitKind, id: String) -> Option<Limit> {
    let element = kind.element();
    let keys: &[&str] = match kind {
        LimitKind::RateLimit => &[
            "calls",
            "renewal-period",
            "retry-after-header-name",
            "remaining-calls-header-name",
            "total-calls-header-name",
        ],
        LimitKind::RateLimitByKey => &[
            "calls",
            "renewal-period",
            "counter-key",
            "increment-condition",
            "increment-count",
            "retry-after-header-name",
            "remaining-calls-header-name",
            "total-calls-header-name",
        ],
        LimitKind::QuotaByKey => &[
            "calls",
            "bandwidth",
            "renewal-period",
            "counter-key",
            "increment-condition",
        ],
    };
    let f = Fields::new(cx, node, element, keys)?;
    let errors = cx.errors();
    let calls = f
        .get("calls")
        .and_then(|n| walk::integer_in(cx, n, "calls", 1, i128::from(u32::MAX)))
        .and_then(|v| u64::try_from(v).ok());
    let bandwidth_kb = f
        .get("bandwidth")
        .and_then(|n| walk::integer_in(cx, n, "bandwidth", 1, i128::from(u32::MAX)))
        .and_then(|v| u64::try_from(v).ok());
    match kind {
        LimitKind::QuotaByKey if calls.is_none() && bandwidth_kb.is_none() => {
            cx.error(f.pos, "quota-by-key needs `calls`, `bandwidth` or both");
        }
        LimitKind::RateLimit | LimitKind::RateLimitByKey if f.get("calls").is_none() => {
            cx.error(f.pos, format!("{element} needs `calls`"));
        }
        _ => {}
    }
    let renewal_period = match f.get("renewal-period") {
        Some(n) => walk::duration(cx, n, "renewal-period").and_then(|d| {
            let secs = d.as_secs();
            let max = if kind == LimitKind::QuotaByKey {
                u64::from(u32::MAX)
            } else {
                MAX_RATE_PERIOD
            };
            if secs == 0 || secs > max || d.subsec_nanos() != 0 {
                cx.error(
                    n.pos,
                    format!("`renewal-period` must be whole seconds from 1 to {max}"),
                );
                return None;
            }
            Some(d)
        }),
        None => {
            cx.error(f.pos, format!("{element} needs `renewal-period` (seconds)"));
            None
        }
    };
    let counter_key = match (kind, f.get("counter-key")) {
        (LimitKind::RateLimit, _) => CounterKey::Subscription,
        (_, Some(n)) => counter_key(cx, n).unwrap_or(CounterKey::ClientIp),
        (_, None) => {
            cx.error(f.pos, format!("{element} needs `counter-key`"));
            CounterKey::ClientIp
        }
    };
    let increment_condition = f
        .get("increment-condition")
        .and_then(|n| increment_condition(cx, n))
        .unwrap_or(IncrementCondition::Any);
    let increment_count = f
        .get("increment-count")
        .and_then(|n| walk::integer_in(cx, n, "increment-count", 1, 1_000_000))
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(1);
    let mut header = |key: &str| {
        f.get(key)
            .and_then(|n| walk::non_empty(cx, n, key).map(|t| (n, t)))
            .and_then(|(n, t)| header_name(cx, n, t))
    };
    let retry_after_header_name =
        header("retry-after-header-name").unwrap_or(http::header::RETRY_AFTER);
    let remaining_calls_header_name = header("remaining-calls-header-name");
    let total_calls_header_name = header("total-calls-header-name");
    let limit = Limit {
        kind,
        id,
        calls,
        bandwidth_kb,
        renewal_period: renewal_period?,
        counter_key,
        increment_condition,
        increment_count,
        retry_after_header_name,
        remaining_calls_header_name,
        total_calls_header_name,
    };
    (cx.errors() == errors).then_some(limit)
}

/// `counter-key: client-ip | subscription | {claim: NAME} | {header: NAME} | {value: TEXT}`.
fn counter_key(cx: &mut Cx, node: &Node) -> Option<CounterKey> {
    if let Kind::Str { value, .. } = &node.kind {
        match value.as_str() {
            "client-ip" => return Some(CounterKey::ClientIp),
            "subscription" => return Some(CounterKey::Subscription),
            _ => {}
        }
        cx.error(
            node.pos,
            format!("`counter-key` must be `client-ip`, `subscription`, `{{claim: NAME}}`, `{{header: NAME}}` or `{{value: TEXT}}`, found `{value}`"),
        );
        return None;
    }
    let f = Fields::new(cx, node, "counter-key", &["claim", "header", "value"])?;
    match f.entries() {
        [("claim", _, v)] => {
            walk::non_empty(cx, v, "claim").map(|c| CounterKey::Claim(c.to_owned()))
        }
        [("header", _, v)] => walk::non_empty(cx, v, "header")
            .and_then(|h| header_name(cx, v, h))
            .map(CounterKey::Header),
        [("value", _, v)] => {
            walk::string(cx, v, "value").map(|c| CounterKey::Constant(c.to_owned()))
        }
        _ => {
            cx.error(
                f.pos,
                "`counter-key` takes exactly one of `claim`, `header`, `value` (or the string `client-ip` or `subscription`)",
            );
            None
        }
    }
}

fn increment_condition(cx: &mut Cx, node: &Node) -> Option<IncrementCondition> {
    let text = walk::string(cx, node, "increment-condition")?;
    let cond = match text {
        "any" => IncrementCondition::Any,
        "2xx" => IncrementCondition::Success,
        "non-4xx" => IncrementCondition::Non4xx,
        "non-5xx" => IncrementCondition::Non5xx,
        "below-400" => IncrementCondition::Below400,
        other => {
            cx.error(
                node.pos,
                format!("`increment-condition` must be `any`, `2xx`, `non-4xx`, `non-5xx` or `below-400`, found `{other}`"),
            );
            return None;
        }
    };
    Some(cond)
}

/// The statement kind named by a keyed-form key or an ordered-form item key.
pub(crate) fn limit_kind(key: &str) -> Option<LimitKind> {
    match key {
        "rate-limit" => Some(LimitKind::RateLimit),
        "rate-limit-by-key" => Some(LimitKind::RateLimitByKey),
        "quota-by-key" => Some(LimitKind::QuotaByKey),
        _ => None,
    }
}
