//! `cors`, `rate-limit`, `rate-limit-by-key`, `quota-by-key`, `check-header` and `ip-filter` ->
//! statements of the policy's
//! ordered `inbound:` list, in APIM's document order (validate-jwt takes its place in the list).
//!
//! Why an ordered list: APIM runs a policy's statements in document order, and the order matters
//! (a limit on the client IP before validate-jwt also counts requests with bad tokens; a limit on
//! `sub` after it keys on the verified claim). A counter key read from a token claim is tied to the
//! converted token check that validates that token and always lands after it: before validate-jwt,
//! APIM would key on the unverified token, which any caller can forge.

use std::net::IpAddr;

use crate::convert::{holds, Converter, Mark, Section, RESTRICTING};
use crate::expr::{self, JwtSource, KeyRead};
use crate::xml::{Attr, Element, Pos};
use crate::yaml::{Entry, Item, Node};

/// Longest `renewal-period` of a rate limit (APIM and gateway.yaml: 300 s).
const MAX_RATE_PERIOD: i64 = 300;
/// Longest `renewal-period` of a quota in gateway.yaml (APIM's `0`, "no renewal", becomes this).
const MAX_QUOTA_PERIOD: i64 = u32::MAX as i64;

/// Whether a response status counts.
type Counts = fn(u16) -> bool;

/// gateway.yaml's `increment-condition` values and the statuses each counts.
const CONDITIONS: [(&str, Counts); 5] = [
    ("2xx", |s| (200..300).contains(&s)),
    ("below-400", |s| s < 400),
    ("non-5xx", |s| !(500..600).contains(&s)),
    ("non-4xx", |s| !(400..500).contains(&s)),
    ("any", |_| true),
];

/// Where a converted statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The token check of converted policy `.0`.
    Token(usize),
    /// Every converted policy (cors, limits not keyed on a claim).
    Shared,
    /// A limit keyed on a claim of this token, not yet tied to a token check.
    Claim(JwtSource),
    /// A limit keyed on a claim of the token these policies validate (after their token check).
    Bound(Vec<usize>),
    /// A claim-keyed limit whose token no converted policy validates (reported, left out).
    Dropped,
}

/// One inbound statement in document order.
#[derive(Debug, Clone)]
pub struct Step {
    /// Where the element is.
    pub pos: Pos,
    /// Which policies it goes to.
    pub place: Place,
    /// `cors: {...}` or `rate-limit-by-key: {...}` (None for a token check, written by the renderer).
    pub entry: Option<Entry>,
    /// The statements it stands for in the summary (itself first, then those nested in it).
    pub tallies: Vec<usize>,
    /// The `set-header` statements in it (inbound): header, position, tally, whether a delete.
    pub headers: Vec<SetHeader>,
}

/// A converted `set-header` statement, checked against `forward-claims` once all are known.
#[derive(Debug, Clone)]
pub struct SetHeader {
    /// Header name as written.
    pub name: String,
    /// Where the element is.
    pub pos: Pos,
    /// Its summary entry.
    pub tally: usize,
    /// `exists-action="delete"`.
    pub delete: bool,
    /// `exists-action="override"` (or none): APIM always replaces the client's header, so when the
    /// statement is left out, a delete takes its place ([`Converter::delete_in_place`]).
    pub overrides: bool,
}

/// The inbound list of policy `index`: its token check, the shared statements and the limits keyed
/// on its claims, in document order; a claim-keyed limit written before the token check comes right
/// after it. Empty when the policy has nothing but its token check (then the keyed form is written).
pub fn inbound_of(steps: &[Step], index: Option<usize>, token: impl Fn() -> Item) -> Vec<Item> {
    let mut items = Vec::new();
    let mut waiting = Vec::new();
    let mut validated = false;
    let mut other = false;
    for step in steps {
        let item = || step.entry.clone().map(|e| Item::new(Node::Map(vec![e])));
        match &step.place {
            Place::Token(i) if Some(*i) == index => {
                items.push(token());
                validated = true;
                items.append(&mut waiting);
            }
            Place::Shared => {
                other = true;
                items.extend(item());
            }
            Place::Bound(to) if index.is_some_and(|i| to.contains(&i)) => {
                other = true;
                if validated {
                    items.extend(item());
                } else {
                    waiting.extend(item());
                }
            }
            _ => {}
        }
    }
    if other {
        items
    } else {
        Vec::new()
    }
}

/// A statement's attribute values as gateway.yaml nodes, in gateway.yaml's key order.
#[derive(Default)]
struct LimitOut {
    calls: Option<Node>,
    bandwidth: Option<Node>,
    period: Option<Node>,
    key: Option<Node>,
    claim: Option<JwtSource>,
    condition: Option<Node>,
    count: Option<Node>,
    headers: Vec<(&'static str, Node)>,
}

impl Converter {
    /// `rate-limit`, `rate-limit-by-key`, `quota-by-key`.
    pub(crate) fn limit(&mut self, el: &Element) {
        let element = el.name.as_str();
        let quota = element == "quota-by-key";
        let keyed = element != "rate-limit";
        let mut out = LimitOut::default();
        for a in &el.attrs {
            match a.name.as_str() {
                "calls" => out.calls = self.count(a, MAX_QUOTA_PERIOD),
                "bandwidth" if quota => out.bandwidth = self.count(a, MAX_QUOTA_PERIOD),
                "renewal-period" => out.period = self.period(a, quota),
                "counter-key" if keyed => {
                    if let Some((node, claim)) = self.counter_key(a) {
                        out.key = Some(node);
                        out.claim = claim;
                    }
                }
                "increment-condition" if keyed => out.condition = self.increment_condition(a),
                "increment-count" if keyed && !quota => out.count = self.count(a, 1_000_000),
                "increment-count" if quota => self.unsupported(
                    a.pos,
                    "increment-count",
                    "gateway.yaml's quota-by-key has no increment-count: each counted call adds 1",
                ),
                "retry-after-header-name"
                | "remaining-calls-header-name"
                | "total-calls-header-name"
                    if !quota =>
                {
                    if let Some(h) = self.header_attr(a) {
                        let key = match a.name.as_str() {
                            "retry-after-header-name" => "retry-after-header-name",
                            "remaining-calls-header-name" => "remaining-calls-header-name",
                            _ => "total-calls-header-name",
                        };
                        out.headers.push((key, Node::str(h)));
                    }
                }
                "retry-after-variable-name" | "remaining-calls-variable-name" if !quota => self
                    .note(
                        a.pos,
                        &a.name,
                        "ignored: the gateway has no policy variables (the values are in the response headers when their header names are set)",
                    ),
                "first-period-start" if quota => self.unsupported(
                    a.pos,
                    "first-period-start",
                    "not converted: the gateway's quota periods start with the first counted call of a key",
                ),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => self.unsupported(a.pos, other, format!("not a {element} attribute")),
            }
        }
        for child in &el.children {
            if !keyed && (child.name == "api" || child.name == "operation") {
                self.unsupported(
                    child.pos,
                    &child.name,
                    "per-API and per-operation limits are not converted: the gateway's rate-limit is one counter per statement",
                );
            } else {
                self.unsupported(child.pos, &child.name, format!("not a {element} element"));
            }
        }
        let mut missing = Vec::new();
        if quota {
            if out.calls.is_none() && out.bandwidth.is_none() {
                missing.push("calls or bandwidth");
            }
        } else if out.calls.is_none() {
            missing.push("calls");
        }
        if out.period.is_none() {
            missing.push("renewal-period");
        }
        if keyed && out.key.is_none() {
            missing.push("counter-key");
        }
        if !missing.is_empty() {
            return self.unsupported(
                el.pos,
                element,
                format!(
                    "not converted (no usable {}): the gateway does not limit these calls",
                    missing.join(", ")
                ),
            );
        }
        if !keyed {
            self.note(
                el.pos,
                element,
                "counted per subscription on routes with a `subscription:` check, as in APIM; callers without a subscription share one counter",
            );
        }
        let mut entries = Vec::new();
        let fields = [
            ("calls", out.calls),
            ("bandwidth", out.bandwidth),
            ("renewal-period", out.period),
            ("counter-key", out.key),
            ("increment-condition", out.condition),
            ("increment-count", out.count),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                entries.push(Entry::new(key, v));
            }
        }
        for (key, value) in out.headers {
            entries.push(Entry::new(key, value));
        }
        let place = match out.claim {
            Some(source) => Place::Claim(source),
            None => Place::Shared,
        };
        let entry = Entry::new(element, Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, place, entry);
    }

    /// `calls`, `bandwidth`, `increment-count`: a positive integer or a named value.
    fn count(&mut self, a: &Attr, max: i64) -> Option<Node> {
        if a.value.contains("{{") && !expr::is_expression(&a.value) {
            return Some(Node::str(a.value.trim()));
        }
        self.integer(a, 1, max).map(Node::Int)
    }

    /// `renewal-period` in seconds (rate limits: at most 300; a quota's `0` means no renewal).
    fn period(&mut self, a: &Attr, quota: bool) -> Option<Node> {
        if a.value.contains("{{") && !expr::is_expression(&a.value) {
            return Some(Node::str(a.value.trim()));
        }
        if !quota {
            return self.integer(a, 1, MAX_RATE_PERIOD).map(Node::Int);
        }
        let secs = self.integer(a, 0, MAX_QUOTA_PERIOD)?;
        if secs == 0 {
            self.note(
                a.pos,
                "renewal-period",
                format!("0 (a quota that never renews) becomes {MAX_QUOTA_PERIOD} seconds, the longest gateway.yaml period"),
            );
            return Some(Node::Int(MAX_QUOTA_PERIOD));
        }
        Some(Node::Int(secs))
    }

    /// A header-name attribute: a literal header name (or named value).
    fn header_attr(&mut self, a: &Attr) -> Option<String> {
        let v = self.plain(a)?.trim();
        if v.contains("{{") || is_token(v) {
            Some(v.to_owned())
        } else {
            self.unsupported(a.pos, &a.name, format!("\"{v}\" is not a header name"));
            None
        }
    }

    /// `counter-key` -> `client-ip`, `{header}`, `{claim}` or `{value}`; the token source of a claim.
    fn counter_key(&mut self, a: &Attr) -> Option<(Node, Option<JwtSource>)> {
        let map = |k: &str, v: String| Node::Map(vec![Entry::new(k, Node::str(v))]);
        if !expr::is_expression(&a.value) {
            return Some((map("value", a.value.clone()), None));
        }
        match expr::counter_key(&a.value) {
            Some(KeyRead::ClientIp) => Some((Node::str("client-ip"), None)),
            Some(KeyRead::Header(h)) if is_token(&h) => Some((map("header", h), None)),
            Some(KeyRead::Header(h)) => {
                self.unsupported(
                    a.pos,
                    "counter-key",
                    format!("\"{h}\" is not a header name"),
                );
                None
            }
            Some(KeyRead::Claim(read)) => {
                if let Some(d) = read.default {
                    self.note(
                        a.pos,
                        "counter-key",
                        format!("the default \"{d}\" is not kept: callers without claim {} share one counter (the empty key), as they share the default's counter in APIM", read.claim),
                    );
                }
                Some((map("claim", read.claim), Some(read.source)))
            }
            None if a.value.contains("context.Subscription") => {
                if let Some(default) = subscription_key(&a.value) {
                    if let Some(d) = default {
                        self.note(
                            a.pos,
                            "counter-key",
                            format!("the default \"{d}\" is not kept: callers without a subscription share one counter (the empty key), as they share the default's counter in APIM"),
                        );
                    }
                    return Some((Node::str("subscription"), None));
                }
                self.unsupported(
                    a.pos,
                    "counter-key",
                    "only the subscription's `Id` or `Name` is a subscription key here (`counter-key: subscription`); key the limit on a claim, a header or the client IP by hand",
                );
                None
            }
            None => {
                self.unsupported(
                    a.pos,
                    "counter-key",
                    "only the client IP, a request header, a token claim or a literal key are converted (see docs/import-apim.md for the shapes)",
                );
                None
            }
        }
    }

    /// `increment-condition` -> the gateway value counting exactly the same statuses, else the
    /// narrowest one counting more (reported: the converted limit counts more responses).
    fn increment_condition(&mut self, a: &Attr) -> Option<Node> {
        let Some(counts) = expr::status_condition(&a.value) else {
            self.unsupported(
                a.pos,
                "increment-condition",
                "only comparisons of context.Response.StatusCode are converted; every response counts (the default), which limits more than APIM",
            );
            return None;
        };
        let known = CONDITIONS;
        let statuses = || expr::FIRST_STATUS..=expr::LAST_STATUS;
        let exact = known
            .iter()
            .find(|(_, f)| statuses().zip(&counts).all(|(s, c)| f(s) == *c));
        if let Some((name, _)) = exact {
            return (*name != "any").then(|| Node::str(*name));
        }
        let (name, _) = known
            .iter()
            .filter(|(_, f)| statuses().zip(&counts).all(|(s, c)| !c || f(s)))
            .min_by_key(|(_, f)| statuses().filter(|s| f(*s)).count())?;
        self.unsupported(
            a.pos,
            "increment-condition",
            format!("counts a set of statuses gateway.yaml cannot express; converted as `{name}`, which also counts some responses APIM does not"),
        );
        (*name != "any").then(|| Node::str(*name))
    }

    /// `cors` -> `cors:` (allowed-origins, allowed-methods, preflight-result-max-age,
    /// allowed-headers, expose-headers, allow-credentials, terminate-unmatched-request).
    pub(crate) fn cors(&mut self, el: &Element) {
        let mut credentials: Option<(&Attr, bool)> = None;
        let mut terminate = None;
        for a in &el.attrs {
            match a.name.as_str() {
                "allow-credentials" => credentials = self.boolean(a).map(|b| (a, b)),
                "terminate-unmatched-request" => terminate = self.boolean(a),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => self.unsupported(a.pos, other, "not a cors attribute"),
            }
        }
        let (mut origins, mut methods, mut headers, mut expose) = (None, None, None, None);
        let mut max_age = None;
        for child in &el.children {
            match child.name.as_str() {
                "allowed-origins" => origins = Some(self.cors_list(child, "origin", origin)),
                "allowed-methods" => {
                    for a in &child.attrs {
                        if a.name == "preflight-result-max-age" {
                            max_age = self.integer(a, 0, 86_400);
                        } else {
                            self.unsupported(a.pos, &a.name, "not an allowed-methods attribute");
                        }
                    }
                    methods = Some(self.cors_list(child, "method", method));
                }
                "allowed-headers" => headers = Some(self.cors_list(child, "header", header)),
                "expose-headers" => expose = Some(self.cors_list(child, "header", header)),
                other => self.unsupported(child.pos, other, "not a cors element"),
            }
        }
        let origins = origins.unwrap_or_default();
        if origins.is_empty() {
            return self.unsupported(
                el.pos,
                "cors",
                "not converted: no allowed origin the gateway can use, so cross-origin browser calls are not answered with CORS headers",
            );
        }
        let mut entries = vec![Entry::new(
            "allowed-origins",
            Node::strings(origins.clone()),
        )];
        if let Some(m) = methods.filter(|m| !m.is_empty()) {
            entries.push(Entry::new("allowed-methods", Node::strings(m)));
        }
        if let Some(age) = max_age {
            entries.push(Entry::new("preflight-result-max-age", Node::Int(age)));
        }
        if let Some(h) = headers.filter(|h| !h.is_empty()) {
            entries.push(Entry::new("allowed-headers", Node::strings(h)));
        }
        if let Some(h) = expose.filter(|h| !h.is_empty()) {
            entries.push(Entry::new("expose-headers", Node::strings(h)));
        }
        match credentials {
            Some((a, true)) if origins.iter().any(|o| o == "*") => self.unsupported(
                a.pos,
                "allow-credentials",
                "not combined with allowed origin `*` (browsers refuse it, and it would let every site read credentialed answers): left false; list the origins to allow credentials",
            ),
            Some((_, b)) => entries.push(Entry::new("allow-credentials", Node::Bool(b))),
            None => {}
        }
        if let Some(t) = terminate {
            entries.push(Entry::new("terminate-unmatched-request", Node::Bool(t)));
        }
        let first = self
            .steps
            .iter()
            .find(|s| s.entry.as_ref().is_some_and(|e| e.key == "cors"))
            .map(|s| s.pos);
        if let Some(first) = first {
            return self.unsupported(
                el.pos,
                "cors",
                format!(
                    "a policy has one cors statement: the first (line {}) is kept",
                    first.line
                ),
            );
        }
        let entry = Entry::new("cors", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, Place::Shared, entry);
    }

    /// `check-header` -> `check-header:` (name, values, ignore-case, failed-check-httpcode,
    /// failed-check-error-message). A `<value>` that is an expression is left out (the check gets
    /// stricter, reported); with no value left the statement is not converted (it would get looser).
    pub(crate) fn check_header(&mut self, el: &Element) {
        let (mut name, mut code, mut message, mut ignore_case) = (None, None, None, None);
        for a in &el.attrs {
            match a.name.as_str() {
                "name" => {
                    name = self
                        .plain(a)
                        .map(str::trim)
                        .and_then(|t| self.header_name(a, t))
                }
                "failed-check-httpcode" => code = self.integer(a, 400, 599),
                "failed-check-error-message" => message = self.plain(a).map(str::to_owned),
                "ignore-case" => ignore_case = self.boolean(a),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => self.unsupported(a.pos, other, "not a check-header attribute"),
            }
        }
        let mut values = Vec::new();
        let mut dropped = false;
        for child in &el.children {
            if child.name != "value" {
                self.unsupported(child.pos, &child.name, "not a check-header element");
                continue;
            }
            let text = child.trimmed_text();
            if expr::is_expression(text) {
                dropped = true;
                self.unsupported(
                    child.pos,
                    "value",
                    "policy expressions are not evaluated; left out (callers sending this value are refused)",
                );
            } else {
                values.push(text.to_owned());
            }
        }
        let mut missing = Vec::new();
        if name.is_none() {
            missing.push("name");
        }
        if code.is_none() {
            missing.push("failed-check-httpcode");
        }
        if message.is_none() {
            missing.push("failed-check-error-message");
        }
        if dropped && values.is_empty() {
            missing.push("literal value");
        }
        let (Some(name), Some(code), Some(message)) = (name, code, message) else {
            return self.not_checked(el, &missing);
        };
        if !missing.is_empty() {
            return self.not_checked(el, &missing);
        }
        let mut entries = vec![Entry::new("name", Node::str(name))];
        if !values.is_empty() {
            entries.push(Entry::new("values", Node::strings(values)));
        }
        if let Some(b) = ignore_case {
            entries.push(Entry::new("ignore-case", Node::Bool(b)));
        }
        entries.push(Entry::new("failed-check-httpcode", Node::Int(code)));
        entries.push(Entry::new("failed-check-error-message", Node::str(message)));
        self.shared(el, "check-header", entries);
    }

    /// A `check-header` or `ip-filter` that is not converted: reported, and the routes refuse every
    /// request ([`Converter::refused`]), since leaving it out would let through the callers APIM
    /// refuses with it.
    fn not_checked(&mut self, el: &Element, missing: &[&str]) {
        self.refuse(
            el.pos,
            &el.name,
            format!(
                "not converted (no usable {}): left out, the callers APIM refuses with it would pass, so the routes refuse every request",
                missing.join(", ")
            ),
        );
    }

    pub(crate) fn header_name(&mut self, a: &Attr, text: &str) -> Option<String> {
        match header(text) {
            Ok(h) => Some(h),
            Err(why) => {
                self.unsupported(a.pos, &a.name, why);
                None
            }
        }
    }

    /// `ip-filter` -> `ip-filter:` (action, addresses, address-ranges). An address that is an
    /// expression or not an IP address is left out and reported.
    pub(crate) fn ip_filter(&mut self, el: &Element) {
        let mut action = None;
        for a in &el.attrs {
            match a.name.as_str() {
                "action" => match self.plain(a).map(str::trim) {
                    Some(v @ ("allow" | "forbid")) => action = Some(v),
                    Some(v) => self.unsupported(
                        a.pos,
                        "action",
                        format!("\"{v}\" is neither allow nor forbid"),
                    ),
                    None => {}
                },
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => self.unsupported(a.pos, other, "not an ip-filter attribute"),
            }
        }
        let effect = if action == Some("forbid") {
            "this caller is not refused"
        } else {
            "this caller is refused"
        };
        let (mut addresses, mut ranges) = (Vec::new(), Vec::new());
        // an address or range left out (a forbid list then lets its callers through)
        let mut lost = false;
        for child in &el.children {
            match child.name.as_str() {
                "address" => {
                    let text = child.trimmed_text();
                    lost |= expr::is_expression(text) || text.parse::<IpAddr>().is_err();
                    if expr::is_expression(text) {
                        self.unsupported(
                            child.pos,
                            "address",
                            format!("policy expressions are not evaluated; left out ({effect})"),
                        );
                    } else if text.parse::<IpAddr>().is_ok() {
                        addresses.push(text.to_owned());
                    } else {
                        self.unsupported(
                            child.pos,
                            "address",
                            format!("\"{text}\" is not an IP address; left out"),
                        );
                    }
                }
                "address-range" => {
                    let end = |name: &str| {
                        child
                            .attr(name)
                            .map(|a| a.value.trim())
                            .filter(|v| !expr::is_expression(v))
                            .and_then(|v| v.parse::<IpAddr>().ok())
                    };
                    match (end("from"), end("to")) {
                        (Some(from), Some(to)) if from.is_ipv4() == to.is_ipv4() && from <= to => {
                            let range = vec![
                                Entry::new("from", Node::str(from.to_string())),
                                Entry::new("to", Node::str(to.to_string())),
                            ];
                            ranges.push(Item::new(Node::Map(range)));
                        }
                        _ => {
                            lost = true;
                            self.unsupported(
                            child.pos,
                            "address-range",
                            format!("`from` and `to` must be IP addresses of one family, `from` first (expressions are not evaluated); left out ({effect})"),
                        )
                        }
                    }
                }
                other => self.unsupported(child.pos, other, "not an ip-filter element"),
            }
        }
        let Some(action) = action else {
            return self.not_checked(el, &["action"]);
        };
        if addresses.is_empty() && ranges.is_empty() && action == "allow" {
            // an allow list nobody is on: APIM refuses every caller it cannot find in it
            self.unsupported(
                el.pos,
                "ip-filter",
                "no usable address or address-range in an allow list: converted as a return-response refusing every caller (403), never as no filter",
            );
            return self.refuse_all(el.pos);
        }
        if addresses.is_empty() && ranges.is_empty() {
            return self.not_checked(el, &["address or address-range"]);
        }
        if lost && action == "forbid" {
            // an allow list only narrows when an entry is left out (refusing more than APIM); a
            // forbid list would let the left-out callers through
            return self.refuse(
                el.pos,
                "ip-filter",
                "not converted: an address or address-range of this forbid list is left out (see above), and the callers APIM refuses with it would pass, so the routes refuse every request",
            );
        }
        let mut entries = vec![Entry::new("action", Node::str(action))];
        if !addresses.is_empty() {
            entries.push(Entry::new("addresses", Node::strings(addresses)));
        }
        if !ranges.is_empty() {
            entries.push(Entry::new("address-ranges", Node::Seq(ranges)));
        }
        self.shared(el, "ip-filter", entries);
    }

    /// In place of the current statement, a `return-response` refusing every request (see
    /// [`refuse_entry`]); the statements after it in the same list never run.
    pub(crate) fn refuse_all(&mut self, pos: Pos) {
        let entry = refuse_entry().comment(format!(
            "{}: refuses every request (not converted, see the report)",
            self.origin(pos)
        ));
        self.push_step(pos, Place::Shared, entry);
    }

    /// In place of an overriding (or deleting) `set-header` of `name` that is not converted: a
    /// delete of the header, so that the client's own copy never reaches the backend (outbound:
    /// the backend's never reaches the client) where APIM always replaces it (the statement stays
    /// reported, and counted as not converted).
    pub(crate) fn delete_in_place(&mut self, name: &str, pos: Pos) {
        let tally = self.tally.len().saturating_sub(1);
        let step = if self.section == Section::Outbound {
            // the inbound forward-claims check has nothing to do with the response
            Step {
                headers: Vec::new(),
                ..self.delete_step(name, pos, tally, "the backend's")
            }
        } else {
            self.delete_step(name, pos, tally, "the client's own")
        };
        self.list().push(step);
    }

    /// `statement` (`set-header` or `set-query-parameter`) deleting `name`, in place of one that
    /// is left out while APIM replaces or removes it; `whose` copy it removes.
    pub(crate) fn left_out_delete(
        &self,
        statement: &str,
        name: &str,
        pos: Pos,
        whose: &str,
    ) -> Entry {
        let entries = vec![
            Entry::new("name", Node::str(name)),
            Entry::new("exists-action", Node::str("delete")),
        ];
        Entry::new(statement, Node::Map(entries)).comment(format!(
            "{}: not converted (see the report); {whose} {name} is removed, as APIM replaces it",
            self.origin(pos)
        ))
    }

    /// The `set-header` delete step of [`Self::delete_in_place`]; `whose` copy of the header it
    /// removes.
    pub(crate) fn delete_step(&self, name: &str, pos: Pos, tally: usize, whose: &str) -> Step {
        Step {
            pos,
            place: Place::Shared,
            entry: Some(self.left_out_delete("set-header", name, pos, whose)),
            tallies: Vec::new(),
            headers: vec![SetHeader {
                name: name.to_owned(),
                pos,
                tally,
                delete: true,
                overrides: false,
            }],
        }
    }

    /// A statement every converted policy runs, in document order.
    pub(crate) fn shared(&mut self, el: &Element, key: &str, entries: Vec<Entry>) {
        let entry = Entry::new(key, Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, Place::Shared, entry);
    }

    /// The values of `<allowed-origins><origin>` and the like; `*` stands alone.
    fn cors_list(
        &mut self,
        el: &Element,
        child_name: &str,
        check: fn(&str) -> Result<String, String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for child in &el.children {
            if child.name != child_name {
                self.unsupported(
                    child.pos,
                    &child.name,
                    format!("not an {} element", el.name),
                );
                continue;
            }
            let text = child.trimmed_text();
            if expr::is_expression(text) {
                self.unsupported(
                    child.pos,
                    child_name,
                    "policy expressions are not evaluated; left out",
                );
                continue;
            }
            if text == "*" {
                return vec!["*".to_owned()];
            }
            match check(text) {
                Ok(v) if v != text => {
                    self.note(
                        child.pos,
                        child_name,
                        format!("\"{text}\" written as \"{v}\""),
                    );
                    out.push(v);
                }
                Ok(v) => out.push(v),
                Err(why) => self.unsupported(child.pos, child_name, format!("{why}; left out")),
            }
        }
        out
    }

    /// Tie each claim-keyed limit to the converted token checks that validate its token: every one
    /// before it (token checks in `choose` branches are alternatives), else the first one after it
    /// (reported: APIM reads the unverified token there).
    pub(crate) fn bind_claim_keys(&mut self) {
        let shared = self
            .steps
            .iter()
            .filter(|s| {
                s.place == Place::Shared && s.entry.as_ref().is_some_and(|e| e.key != "cors")
            })
            .map(|s| s.pos)
            .next();
        // under --apiops no policy is written for an operation whose checks no one policy enforces
        // (Converter::refused): then the note would name policies that do not exist
        let written = !self.in_folder || self.refused.is_empty();
        if let (Some(pos), true) = (shared, written && self.policies.len() > 1) {
            let names: Vec<&str> = self.policies.iter().map(|p| p.name.as_str()).collect();
            let names = names.join(", ");
            self.note(
                pos,
                "rate limits",
                format!("the limits not keyed on a claim are written into every converted policy ({names}); each policy counts on its own"),
            );
        }
        let mut deletes: Vec<(usize, Vec<Step>)> = Vec::new();
        for i in 0..self.steps.len() {
            let Place::Claim(source) = self.steps[i].place.clone() else {
                continue;
            };
            let pos = self.steps[i].pos;
            let validates: Vec<(usize, Pos)> = self
                .policies
                .iter()
                .enumerate()
                .filter(|(_, p)| match &source {
                    JwtSource::Variable(v) => p.output_var.as_deref() == Some(v.as_str()),
                    JwtSource::Header(h) => p
                        .token_header
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(h)),
                })
                .map(|(i, p)| (i, p.pos))
                .collect();
            let before: Vec<usize> = validates
                .iter()
                .filter(|(_, at)| *at < pos)
                .map(|(p, _)| *p)
                .collect();
            let after = validates.iter().find(|(_, at)| *at > pos);
            let element = self.steps[i]
                .entry
                .as_ref()
                .map_or(String::new(), |e| e.key.clone());
            self.steps[i].place = match (before.is_empty(), after) {
                (false, _) => Place::Bound(before),
                (true, Some((p, at))) => {
                    let why = if element.contains("limit") || element == "quota-by-key" {
                        format!("keyed on a token claim before validate-jwt (line {}): APIM would read the unverified token here, so any caller could pick its own counter; moved right after that token check, where the gateway keys on the verified claim (requests it rejects are not counted by this limit)", at.line)
                    } else {
                        format!("reads a token claim before validate-jwt (line {}): APIM would read the unverified token here, which any caller can forge; moved right after that token check, where the gateway reads the verified claim", at.line)
                    };
                    self.unsupported(pos, &element, why);
                    self.mark(&self.steps[i].tallies.clone(), Mark::Partial);
                    Place::Bound(vec![*p])
                }
                (true, None) => {
                    let token = match &source {
                        JwtSource::Variable(v) => format!("variable \"{v}\", which is not the output-token-variable-name of a converted validate-jwt or validate-azure-ad-token"),
                        JwtSource::Header(h) => format!("header {h}, which no converted validate-jwt or validate-azure-ad-token validates"),
                    };
                    let mut why = if element.contains("limit") || element == "quota-by-key" {
                        format!("not converted: keyed on a claim of the token in {token}; the gateway keys limits only on verified claims")
                    } else {
                        format!("not converted: reads a claim of the token in {token}; the gateway reads only verified claims")
                    };
                    // an answer, or a choose holding a refusal or limit, left out would let
                    // through requests APIM refuses
                    let refusing = self.steps[i].entry.as_ref().is_some_and(|e| {
                        e.key == "return-response"
                            || (e.key == "choose" && holds(&e.value, RESTRICTING))
                    });
                    if refusing {
                        why.push_str("; it holds a statement that answers, refuses or limits requests, so the routes refuse every request");
                        self.refused.push(pos);
                    }
                    self.unsupported(pos, &element, why);
                    self.mark(&self.steps[i].tallies.clone(), Mark::Dropped);
                    let overriding: Vec<Step> = self.steps[i]
                        .headers
                        .iter()
                        .filter(|h| h.overrides)
                        .map(|h| self.delete_step(&h.name, h.pos, h.tally, "the client's own"))
                        .collect();
                    deletes.push((i + 1, overriding));
                    Place::Dropped
                }
            };
        }
        for (at, steps) in deletes.into_iter().rev() {
            self.steps.splice(at..at, steps);
        }
    }
}

/// A `return-response` answering as the gateway's `ip-filter` refuses a caller (403
/// `{"statusCode":403,"message":"Forbidden"}`): what a check the gateway cannot evaluate becomes,
/// so that no request passes it.
pub(crate) fn refuse_entry() -> Entry {
    Entry::new(
        "return-response",
        Node::Map(vec![
            Entry::new("status", Node::Int(403)),
            Entry::new(
                "headers",
                Node::Map(vec![Entry::new(
                    "Content-Type",
                    Node::str("application/json"),
                )]),
            ),
            Entry::new(
                "body",
                Node::str(r#"{"statusCode":403,"message":"Forbidden"}"#),
            ),
        ]),
    )
}

/// An HTTP token (header names, methods).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header(text: &str) -> Result<String, String> {
    if is_token(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("\"{text}\" is not a header name"))
    }
}

fn method(text: &str) -> Result<String, String> {
    if is_token(text) {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(format!("\"{text}\" is not an HTTP method"))
    }
}

/// `scheme://host[:port]`; a trailing `/` is dropped (browsers never send one).
fn origin(text: &str) -> Result<String, String> {
    if text.contains("{{") {
        return Ok(text.to_owned());
    }
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ', '*']) => {
            Ok(trimmed.to_owned())
        }
        _ => Err(format!(
            "\"{text}\" is not an origin (scheme://host[:port], or `*`)"
        )),
    }
}

/// `@(context.Subscription.Id)` or `.Name` (also `?.`, and `?? "default"` after it), spaces
/// anywhere: the accepted subscription, which `counter-key: subscription` reads (`Some`, with the
/// default when one is given). `Key` is left out: APIM counts a subscription's two keys apart.
fn subscription_key(value: &str) -> Option<Option<String>> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = compact.strip_prefix("@(")?.strip_suffix(')')?;
    let rest = ["context.Subscription.", "context.Subscription?."]
        .iter()
        .find_map(|p| inner.strip_prefix(p))?;
    let (field, default) = match rest.split_once("??") {
        Some((field, default)) => {
            let text = default.strip_prefix('"')?.strip_suffix('"')?;
            (field, Some(text.to_owned()))
        }
        None => (rest, None),
    };
    matches!(field, "Id" | "Name").then_some(default)
}

#[cfg(test)]
mod tests {
    use super::subscription_key;

    #[test]
    fn subscription_counter_keys() {
        let some = |d: Option<&str>| Some(d.map(str::to_owned));
        assert_eq!(subscription_key("@(context.Subscription.Id)"), some(None));
        assert_eq!(
            subscription_key("@( context.Subscription.Name )"),
            some(None)
        );
        assert_eq!(
            subscription_key(r#"@(context.Subscription?.Id ?? "anonymous")"#),
            some(Some("anonymous"))
        );
        for other in [
            "@(context.Subscription.Key)",
            "@(context.Subscription.Id + context.Request.IpAddress)",
            "@(context.Subscription?.Id ?? anonymous)",
            "context.Subscription.Id",
            "@(context.Subscription.Id",
        ] {
            assert_eq!(subscription_key(other), None, "{other}");
        }
    }
}
