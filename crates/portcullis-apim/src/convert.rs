//! The walk over an APIM policy document: sections, statements, and the conversion of validate-jwt,
//! validate-azure-ad-token, set-header (claims -> forward-claims) and `<set-header exists-action=
//! "delete">` of the token header (-> forward-token: false). cors, the rate limits, check-header and
//! ip-filter are converted in [`crate::inbound`], the request and response statements and `choose`
//! in [`crate::transform`]; every statement is recorded as a [`Step`] in document order, and every
//! statement element as a [`Tally`] for the summary (converted, dropped, incomplete). Everything
//! else is reported. A second `validate-jwt` reading the token as the first does is merged into
//! the first policy ([`crate::merge`]); any other second token check makes the routes refuse every
//! request ([`Converter::refused`]).
//!
//! Why fail closed: when a value cannot be converted, the output must not accept more than APIM did.
//! Unconvertible audiences, issuers and claim values are kept literally (they never match a real
//! token, so the check fails until edited); unconvertible switches keep their strict default.

use crate::diag::Diagnostic;
use crate::expr::{self, ClaimRead, JwtSource, TokenRead};
use crate::fields::Fields;
use crate::inbound::{Place, SetHeader, Step};
use crate::sources::{self, Cond};
use crate::xml::{Attr, Element, Pos};
use crate::yaml::{Entry, Item, Node};

const EXPRESSION: &str = "policy expressions are not evaluated by the gateway";
const KEPT_LITERALLY: &str =
    "policy expressions are not evaluated; kept literally, so this check fails closed until edited";

/// One converted token-validation policy.
#[derive(Debug)]
pub struct PolicyOut {
    /// Name under `policies:`.
    pub name: String,
    /// `validate-jwt` or `validate-azure-ad-token`.
    pub element: &'static str,
    /// Where the element is.
    pub pos: Pos,
    /// Its keys.
    pub fields: Fields,
    /// forward-claims: header, claim, position of the set-header.
    pub forward: Vec<(String, String, Pos)>,
    /// `forward-token: false` from a set-header deleting the token header.
    pub forward_token_off: Option<Pos>,
    /// output-token-variable-name.
    pub(crate) output_var: Option<String>,
    /// The header the token is read from (None: query parameter).
    pub(crate) token_header: Option<String>,
    /// In a branch of a `choose` whose branch is not known (it guards only some requests in APIM).
    pub(crate) in_choose: bool,
}

/// One statement element of the document, for the summary.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Where the element is.
    pub pos: Pos,
    /// Its name.
    pub name: String,
    /// Something was written for it (or it needs nothing: `forward-request`, unreachable).
    pub emitted: bool,
    /// A part of it was reported unsupported.
    pub partial: bool,
}

/// A change to summary entries after the fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Not written after all.
    Dropped,
    /// Written with an unsupported part.
    Partial,
}

/// Which section's statements are being converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `<inbound>`, a fragment or bare statements.
    Inbound,
    /// `<outbound>`.
    Outbound,
}

/// The state of one conversion.
#[derive(Debug)]
pub struct Converter {
    /// The documents positions point into ([`Pos::file`] indexes it); one for a single document.
    files: Vec<String>,
    stem: String,
    /// Converted policies in document order.
    pub policies: Vec<PolicyOut>,
    /// Every converted inbound statement (token checks, cors, limits) in document order.
    pub steps: Vec<Step>,
    /// Every converted outbound statement in document order.
    pub out_steps: Vec<Step>,
    /// `backends:` entries from `set-backend-service backend-id`: id and where first named.
    pub backends: Vec<(String, Pos)>,
    /// Every statement element, for the summary.
    pub tally: Vec<Tally>,
    /// The statement being converted (its summary entry).
    current: Option<usize>,
    /// Variables set by converted `set-variable`s, one scope per enclosing list.
    pub(crate) scopes: Vec<Vec<String>>,
    /// The section being converted.
    pub(crate) section: Section,
    /// Depth of `choose` statements being converted as `choose:` (their steps are conditional).
    pub(crate) nested: usize,
    /// Depth of `choose` branches converted the old way (branches holding a token check).
    pub(crate) split: usize,
    /// URL-template parameters the output reads (`${param:x}`, `{x}` in rewrite-uri).
    pub params: Vec<(String, Pos)>,
    /// Everything reported.
    pub diags: Vec<Diagnostic>,
    /// Converting a policy of an APIOps folder: its backends and OpenAPI examples are known (the
    /// notes asking to fill them in are not given).
    pub(crate) in_folder: bool,
    /// The HTTP method of the one operation the policy is converted for (APIOps), which decides
    /// the `context.Request.Method` conditions of a `choose` holding a token check.
    pub(crate) method: Option<String>,
    /// Where a check is that no one policy enforces with the others (a second token check, a
    /// choose between token checks whose branch is not known, a left-out choose holding a
    /// statement that refuses or limits requests; each reported as `unsupported` with the reason).
    /// When not empty, the routes refuse every request (the operation is not imported under
    /// `--apiops`).
    pub refused: Vec<Pos>,
}

impl Converter {
    /// A converter for the document called `file` (used in comments).
    pub fn new(file: &str) -> Converter {
        Converter::composed(vec![file.to_owned()], &policy_stem(file))
    }

    /// A converter for a policy composed from several documents (`files`, indexed by
    /// [`Pos::file`]), whose first policy is called `name`.
    pub fn composed(files: Vec<String>, name: &str) -> Converter {
        Converter {
            files,
            stem: name.to_owned(),
            policies: Vec::new(),
            steps: Vec::new(),
            out_steps: Vec::new(),
            backends: Vec::new(),
            tally: Vec::new(),
            current: None,
            scopes: vec![Vec::new()],
            section: Section::Inbound,
            nested: 0,
            split: 0,
            params: Vec::new(),
            diags: Vec::new(),
            in_folder: false,
            method: None,
            refused: Vec::new(),
        }
    }

    /// The list the current section's statements go to.
    pub(crate) fn list(&mut self) -> &mut Vec<Step> {
        match self.section {
            Section::Inbound => &mut self.steps,
            Section::Outbound => &mut self.out_steps,
        }
    }

    /// Record a converted statement of the current section (and mark it written).
    pub(crate) fn push_step(&mut self, pos: Pos, place: Place, entry: Entry) {
        self.push_step_with(pos, place, entry, Vec::new(), Vec::new());
    }

    /// [`Self::push_step`] with the summary entries and `set-header`s nested in it.
    pub(crate) fn push_step_with(
        &mut self,
        pos: Pos,
        place: Place,
        entry: Entry,
        nested: Vec<usize>,
        headers: Vec<SetHeader>,
    ) {
        let tallies: Vec<usize> = self.current.into_iter().chain(nested).collect();
        self.emitted();
        self.list().push(Step {
            pos,
            place,
            entry: Some(entry),
            tallies,
            headers,
        });
    }

    /// The current statement produced output.
    pub(crate) fn emitted(&mut self) {
        if let Some(t) = self.current.and_then(|i| self.tally.get_mut(i)) {
            t.emitted = true;
        }
    }

    /// Whether the current statement produced output.
    pub(crate) fn current_emitted(&self) -> bool {
        self.current
            .and_then(|i| self.tally.get(i))
            .is_some_and(|t| t.emitted)
    }

    /// Change summary entries after the fact.
    pub(crate) fn mark(&mut self, tallies: &[usize], mark: Mark) {
        for &i in tallies {
            if let Some(t) = self.tally.get_mut(i) {
                match mark {
                    Mark::Dropped => t.emitted = false,
                    Mark::Partial => t.partial = true,
                }
            }
        }
    }

    /// Count `el` and the statements nested in it (choose branches) without converting them.
    pub(crate) fn tally_of(&mut self, el: &Element, emitted: bool) -> Vec<usize> {
        let mut out = vec![self.tally.len()];
        self.tally.push(Tally {
            pos: el.pos,
            name: el.name.clone(),
            emitted,
            partial: false,
        });
        if el.name == "choose" {
            for branch in &el.children {
                for child in branch.children.iter().filter(|c| c.name != "base") {
                    out.extend(self.tally_of(child, emitted));
                }
            }
        }
        out
    }

    /// `# from file:line`
    pub fn origin(&self, pos: Pos) -> String {
        let file = self
            .files
            .get(pos.file as usize)
            .map_or("?", String::as_str);
        format!("from {file}:{}", pos.line)
    }

    /// The policy name derived from the file name (the first converted policy's name).
    pub fn stem(&self) -> &str {
        &self.stem
    }

    pub(crate) fn unsupported(&mut self, pos: Pos, subject: &str, reason: impl Into<String>) {
        if let Some(t) = self.current.and_then(|i| self.tally.get_mut(i)) {
            t.partial = true;
        }
        self.diags
            .push(Diagnostic::unsupported(pos, subject, reason));
    }

    /// A statement not converted whose absence would let through requests APIM refuses:
    /// reported as [`Converter::unsupported`], and its position kept in `refused`, so the routes
    /// refuse every request (or, under `--apiops`, the operation is not imported).
    pub(crate) fn refuse(&mut self, pos: Pos, subject: &str, reason: impl Into<String>) {
        self.unsupported(pos, subject, reason);
        self.refused.push(pos);
    }

    pub(crate) fn note(&mut self, pos: Pos, subject: &str, reason: impl Into<String>) {
        self.diags.push(Diagnostic::note(pos, subject, reason));
    }

    /// Convert the top-level elements of a document (`<policies>`, `<fragment>` or bare statements).
    pub fn document(&mut self, roots: &[Element]) {
        for root in roots {
            match root.name.as_str() {
                "policies" => root.children.iter().for_each(|s| self.section(s)),
                "fragment" => self.statements(&root.children),
                _ => {
                    self.statement(root);
                }
            }
        }
        self.bind_claim_keys();
        self.check_forwarded_headers();
    }

    fn section(&mut self, section: &Element) {
        let reason = match section.name.as_str() {
            "inbound" => return self.statements(&section.children),
            "outbound" => {
                self.section = Section::Outbound;
                self.statements(&section.children);
                self.section = Section::Inbound;
                return;
            }
            "backend" => "backend policies are not converted: the gateway forwards to the route's upstream",
            "on-error" => "on-error is not converted: the gateway answers failures itself with {\"statusCode\", \"message\"} (failed-validation-httpcode and -error-message)",
            _ => {
                return self.unsupported(
                    section.pos,
                    &section.name,
                    "not a policy section (inbound, backend, outbound, on-error)",
                )
            }
        };
        for el in &section.children {
            let plain_forward = el.name == "forward-request" && el.attrs.is_empty();
            if el.name == "base" {
                continue;
            }
            self.tally_of(el, plain_forward);
            if !plain_forward {
                self.unsupported(el.pos, &el.name, reason);
            }
        }
    }

    /// One list of statements; those after a converted `return-response` or `mock-response` never
    /// run (in APIM either) and are left out with a note.
    pub(crate) fn statements(&mut self, els: &[Element]) {
        let mut ended: Option<(Pos, bool)> = None;
        for el in els.iter().filter(|el| el.name != "base") {
            if let Some((at, refusal)) = ended {
                self.tally_of(el, true);
                let why = if refusal {
                    format!(
                        "left out: it never runs, every request is refused at line {} before it",
                        at.line
                    )
                } else {
                    format!(
                        "left out: it never runs, APIM answers at line {} before it",
                        at.line
                    )
                };
                self.note(el.pos, &el.name, why);
                continue;
            }
            let index = self.statement(el);
            let answers = el.name == "return-response" || el.name == "mock-response";
            if answers && self.tally[index].emitted {
                ended = Some((el.pos, false));
            } else if self.refused_by(index) {
                ended = Some((el.pos, true));
            }
        }
    }

    /// Whether statement `index` was converted as a refusal of every request
    /// ([`Converter::refuse_all`]).
    fn refused_by(&mut self, index: usize) -> bool {
        self.list().last().is_some_and(|s| {
            s.tallies.first() == Some(&index)
                && s.entry.as_ref().is_some_and(|e| e.key == "return-response")
        })
    }

    /// Convert one statement element; returns its summary entry.
    fn statement(&mut self, el: &Element) -> usize {
        let index = self.tally.len();
        self.tally.push(Tally {
            pos: el.pos,
            name: el.name.clone(),
            emitted: false,
            partial: false,
        });
        let outer = self.current.replace(index);
        let outbound = self.section == Section::Outbound;
        match el.name.as_str() {
            "set-header" => self.set_header(el),
            "set-variable" => self.set_variable(el),
            "choose" => self.choose(el),
            _ if refuses_requests(el) => self.refusal_not_converted(el),
            _ if outbound => self.unsupported(
                el.pos,
                &el.name,
                "not converted in <outbound>: only set-header, set-variable and choose are",
            ),
            "validate-jwt" => self.validate_jwt(el),
            "validate-azure-ad-token" => self.validate_azure_ad_token(el),
            "check-header" => self.check_header(el),
            "cors" => self.cors(el),
            "ip-filter" => self.ip_filter(el),
            "rate-limit" | "rate-limit-by-key" | "quota-by-key" => self.limit(el),
            "set-query-parameter" => self.set_query_parameter(el),
            "rewrite-uri" | "set-backend-service" => self.routing(el),
            "return-response" => self.return_response(el),
            "mock-response" => self.mock_response(el),
            other => self.unsupported(
                el.pos,
                other,
                "no gateway.yaml equivalent (see the table in docs/import-apim.md)",
            ),
        }
        self.current = outer;
        index
    }

    /// A statement of [`refuses_requests`]: reported, and the routes refuse every request.
    fn refusal_not_converted(&mut self, el: &Element) {
        let what = if REFUSING.contains(&el.name.as_str()) {
            "APIM refuses the requests that fail it"
        } else {
            "an action that is not detect or ignore (prevent) makes APIM refuse what fails it"
        };
        self.refuse(
            el.pos,
            &el.name,
            format!("no gateway.yaml equivalent, and {what}: left out, those would pass, so the routes refuse every request"),
        );
    }

    fn choose(&mut self, el: &Element) {
        if self.split == 0 && !choose_holds(el, TOKEN_CHECKS) {
            return self.conditional(el);
        }
        self.emitted();
        if let Some(taken) = self.branch_for_method(el) {
            return self.method_branch(el, taken);
        }
        self.split += 1;
        self.split_choose(el);
        self.split -= 1;
    }

    /// The branch APIM runs for the operation's method (`Some(None)`: no branch), when the
    /// operation's method is known and every condition up to the branch taken reads only
    /// `context.Request.Method`; `None` when that cannot be decided.
    fn branch_for_method(&self, el: &Element) -> Option<Option<usize>> {
        let method = self.method.as_deref()?;
        let last = el.children.len().saturating_sub(1);
        for (i, b) in el.children.iter().enumerate() {
            match b.name.as_str() {
                "when" => {
                    let cond = sources::condition(&b.attr("condition")?.value)?;
                    if method_holds(&cond, method)? {
                        return Some(Some(i));
                    }
                }
                "otherwise" if i == last => return Some(Some(i)),
                _ => return None,
            }
        }
        Some(None)
    }

    /// A `choose` holding a token check, for one operation whose method decides the branch: the
    /// branch taken is converted as the operation's own statements, the others never run for it.
    fn method_branch(&mut self, el: &Element, taken: Option<usize>) {
        let method = self.method.clone().unwrap_or_default();
        for (i, b) in el.children.iter().enumerate() {
            if Some(i) == taken {
                self.note(
                    b.pos,
                    &b.name,
                    format!(
                        "the branch APIM runs for {method}: converted for this {method} operation"
                    ),
                );
                self.statements(&b.children);
                continue;
            }
            for child in b.children.iter().filter(|c| c.name != "base") {
                self.tally_of(child, true);
            }
        }
    }

    /// The old conversion of a `choose` holding a token check: every branch's statements converted
    /// as if unconditional, each token check a policy of its own (routes decide what they guard).
    fn split_choose(&mut self, el: &Element) {
        for branch in &el.children {
            match branch.name.as_str() {
                "when" => {
                    let pos = branch.attr("condition").map_or(branch.pos, |a| a.pos);
                    self.unsupported(
                        pos,
                        "when condition",
                        "conditions are not evaluated; the policies inside are converted and the route decides which requests they guard",
                    );
                    self.statements(&branch.children);
                }
                "otherwise" => {
                    if !branch.children.is_empty() {
                        self.note(
                            branch.pos,
                            "otherwise",
                            "converted like the when branches: the route decides which requests it guards",
                        );
                    }
                    self.statements(&branch.children);
                }
                other => self.unsupported(branch.pos, other, "not a choose branch"),
            }
        }
    }

    fn new_policy(&mut self, el: &Element, element: &'static str) -> PolicyOut {
        let n = self.policies.len();
        let name = if n == 0 {
            self.stem.clone()
        } else {
            format!("{}-{}", self.stem, n + 1)
        };
        PolicyOut {
            name,
            element,
            pos: el.pos,
            fields: Fields::default(),
            forward: Vec::new(),
            forward_token_off: None,
            output_var: None,
            token_header: Some("Authorization".to_owned()),
            in_choose: self.split > 0,
        }
    }

    fn validate_jwt(&mut self, el: &Element) {
        let mut p = self.new_policy(el, "validate-jwt");
        let mut scheme: Option<&Attr> = None;
        let mut has_source = false;
        for a in &el.attrs {
            match a.name.as_str() {
                "header-name" | "query-parameter-name" | "token-value" => {
                    has_source |= self.token_source(&mut p, a);
                }
                "require-scheme" => scheme = Some(a),
                "require-expiration-time" | "require-signed-tokens" => {
                    if let Some(b) = self.boolean(a) {
                        p.fields.set(&a.name, Node::Bool(b));
                    }
                }
                "clock-skew" => {
                    if let Some(s) = self.integer(a, 0, i64::from(u32::MAX)) {
                        p.fields.set("clock-skew", Node::Int(s));
                    }
                }
                _ => self.common_attr(&mut p, a),
            }
        }
        if !has_source {
            self.unsupported(
                el.pos,
                "validate-jwt",
                "no usable header-name, query-parameter-name or token-value; `header-name: Authorization` is emitted in its place",
            );
            p.fields.set("header-name", Node::str("Authorization"));
        }
        if let Some(a) = scheme {
            self.require_scheme(&mut p, a);
        }
        for child in &el.children {
            match child.name.as_str() {
                "openid-config" => self.openid_config(&mut p, child),
                "issuer-signing-keys" => self.signing_keys(&mut p, child),
                "issuers" => self.string_list(&mut p, child, "issuer", "issuers"),
                _ => self.common_child(&mut p, child),
            }
        }
        self.push_policy(p);
    }

    /// Record a converted token policy and its place among the inbound statements. Every converted
    /// token policy makes APIM's key-matching decision: a `kid` that names no configured key tries
    /// every key (Microsoft.IdentityModel's `TryAllIssuerSigningKeys`), where a hand-written
    /// gateway.yaml keeps the strict default.
    fn push_policy(&mut self, mut p: PolicyOut) {
        p.fields.set("try-all-signing-keys", Node::Bool(true));
        if !self.policies.is_empty() {
            let name = &p.name;
            let why = if self.split > 0 {
                format!("a choose between token checks whose branch is not known (its conditions are not evaluated): converted as a separate policy `{name}`, and the routes refuse every request (a route uses one policy; point routes at the policy of the branch their requests take)")
            } else {
                match self.merge_second(&p) {
                    Ok(()) => return,
                    Err(why) => format!("a second token check in one policy (APIM runs both; the gateway validates one token per policy, and the two are not merged: {why}): converted as a separate policy `{name}` no route uses, and the routes refuse every request"),
                }
            };
            self.refuse(p.pos, p.element, why);
        }
        // a token check no route enforces is not counted as converted
        if self.policies.is_empty() {
            self.emitted();
        }
        self.steps.push(Step {
            pos: p.pos,
            place: Place::Token(self.policies.len()),
            entry: None,
            tallies: self.current.into_iter().collect(),
            headers: Vec::new(),
        });
        self.policies.push(p);
    }

    /// A second token check outside any `choose` merged into the first policy when one policy
    /// decides every token as APIM's two checks do ([`crate::merge`]), and nothing between them
    /// answers, refuses or limits requests (APIM runs those before the second check, on requests
    /// it then refuses); `Err` with the reason when not.
    fn merge_second(&mut self, p: &PolicyOut) -> Result<(), String> {
        let first = &self.policies[0];
        if self.policies.len() > 1 {
            return Err("a third token check is not merged".to_owned());
        }
        if first.in_choose {
            return Err("the first is in a choose branch".to_owned());
        }
        let after = self
            .steps
            .iter()
            .position(|s| s.place == Place::Token(0))
            .map_or(0, |i| i + 1);
        let between = self.steps[after..]
            .iter()
            .find(|s| s.entry.as_ref().is_some_and(|e| entry_holds(e, ANSWERS)));
        if let Some(step) = between {
            return Err(format!(
                "the statement at line {} answers, refuses or limits requests between them",
                step.pos.line
            ));
        }
        let fields = crate::merge::merged(first, p)?;
        let name = first.name.clone();
        let first = &mut self.policies[0];
        first.fields = fields;
        if first.output_var.is_none() {
            first.output_var.clone_from(&p.output_var);
        }
        self.emitted();
        self.note(
            p.pos,
            p.element,
            format!("merged into policy `{name}` with the token check before it (APIM runs both on the same token: the issuers and audiences both accept, the required claims of both)"),
        );
        Ok(())
    }

    fn validate_azure_ad_token(&mut self, el: &Element) {
        let mut p = self.new_policy(el, "validate-azure-ad-token");
        let mut tenant = false;
        for a in &el.attrs {
            match a.name.as_str() {
                "tenant-id" => {
                    if let Some(v) = self.plain(a) {
                        p.fields.set("tenant-id", Node::str(v));
                        tenant = true;
                    }
                }
                "header-name" | "query-parameter-name" | "token-value" => {
                    self.token_source(&mut p, a);
                }
                "authentication-endpoint" => self.unsupported(
                    a.pos,
                    &a.name,
                    "sovereign-cloud endpoints are not converted; set `authority:` on the policy by hand",
                ),
                _ => self.common_attr(&mut p, a),
            }
        }
        if !tenant {
            self.unsupported(
                el.pos,
                "validate-azure-ad-token",
                "no usable tenant-id; `tenant-id: \"common\"` is emitted in its place, edit it",
            );
            p.fields.set("tenant-id", Node::str("common"));
        }
        for child in &el.children {
            match child.name.as_str() {
                "client-application-ids" | "backend-application-ids" => {
                    self.string_list(&mut p, child, "application-id", &child.name)
                }
                _ => self.common_child(&mut p, child),
            }
        }
        self.push_policy(p);
    }

    /// Attributes both token policies share.
    fn common_attr(&mut self, p: &mut PolicyOut, a: &Attr) {
        match a.name.as_str() {
            "failed-validation-httpcode" => {
                if let Some(code) = self.integer(a, 100, 599) {
                    p.fields.set(&a.name, Node::Int(code));
                }
            }
            "failed-validation-error-message" => {
                if let Some(v) = self.plain(a) {
                    p.fields.set(&a.name, Node::str(v));
                }
            }
            "output-token-variable-name" => p.output_var = Some(a.value.clone()),
            "id" => self.note(a.pos, "id", "policy ids are not kept"),
            _ => self.unsupported(a.pos, &a.name, format!("not a {} attribute", p.element)),
        }
    }

    /// Child elements both token policies share.
    fn common_child(&mut self, p: &mut PolicyOut, child: &Element) {
        match child.name.as_str() {
            "audiences" => self.string_list(p, child, "audience", "audiences"),
            "required-claims" => self.required_claims(p, child),
            "decryption-keys" => self.decryption_keys(p, child),
            "zumo-master-key" => self.unsupported(
                child.pos,
                "zumo-master-key",
                "legacy Azure Mobile Services key, not supported",
            ),
            other => self.unsupported(child.pos, other, format!("not a {} element", p.element)),
        }
    }

    /// header-name / query-parameter-name / token-value; true when a source was set.
    fn token_source(&mut self, p: &mut PolicyOut, a: &Attr) -> bool {
        let read = match a.name.as_str() {
            "token-value" => match expr::token_read(&a.value) {
                Some(read) => read,
                None => {
                    self.unsupported(
                        a.pos,
                        "token-value",
                        "only a plain header or query-parameter read is converted (context.Request.Headers.GetValueOrDefault(\"...\") or context.Request.Url.Query.GetValueOrDefault(\"...\"))",
                    );
                    return false;
                }
            },
            name => match self.plain(a) {
                Some(v) if name == "header-name" => TokenRead::Header(v.to_owned()),
                Some(v) => TokenRead::Query(v.to_owned()),
                None => return false,
            },
        };
        if p.fields.has("header-name") || p.fields.has("query-parameter-name") {
            self.unsupported(
                a.pos,
                &a.name,
                "APIM takes exactly one of header-name, query-parameter-name, token-value; the first is kept",
            );
            return true;
        }
        match read {
            TokenRead::Header(h) => {
                p.fields.set("header-name", Node::str(h.clone()));
                p.token_header = Some(h);
            }
            TokenRead::Query(q) => {
                p.fields.set("query-parameter-name", Node::str(q));
                p.token_header = None;
            }
        }
        true
    }

    fn require_scheme(&mut self, p: &mut PolicyOut, a: &Attr) {
        let on_authorization = p
            .token_header
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case("authorization"));
        if !on_authorization {
            self.note(
                a.pos,
                "require-scheme",
                "ignored: APIM only applies it to the Authorization header, and so does the gateway",
            );
        } else if let Some(v) = self.plain(a) {
            p.fields.set("require-scheme", Node::str(v));
        }
    }

    fn openid_config(&mut self, p: &mut PolicyOut, el: &Element) {
        let mut url = None;
        for a in &el.attrs {
            match a.name.as_str() {
                "url" => url = self.plain(a).map(str::to_owned),
                "validate-connectivity" => self.note(
                    a.pos,
                    "validate-connectivity",
                    "ignored: the gateway fetches the document at start and reports it on /readyz",
                ),
                other => self.unsupported(a.pos, other, "not an openid-config attribute"),
            }
        }
        match url {
            Some(url) => {
                let item = Item::new(Node::Map(vec![Entry::new("url", Node::str(url))]))
                    .comment(self.origin(el.pos));
                p.fields.push("openid-config", item, "");
            }
            None if el.attr("url").is_none() => {
                self.unsupported(el.pos, "openid-config", "has no url attribute")
            }
            None => {}
        }
    }

    fn signing_keys(&mut self, p: &mut PolicyOut, el: &Element) {
        for key in &el.children {
            if key.name != "key" {
                self.unsupported(key.pos, &key.name, "not an issuer-signing-keys element");
            } else if let Some(node) = self.signing_key(key) {
                let item = Item::new(node).comment(self.origin(key.pos));
                p.fields.push("issuer-signing-keys", item, "");
            }
        }
    }

    fn signing_key(&mut self, key: &Element) -> Option<Node> {
        let (mut id, mut n, mut e) = (None, None, None);
        for a in &key.attrs {
            match a.name.as_str() {
                "id" => id = self.plain(a),
                "n" => n = Some(a),
                "e" => e = Some(a),
                "certificate-id" => {
                    self.unsupported(
                        a.pos,
                        "certificate-id",
                        format!("APIM certificates are not available to the gateway: export certificate \"{}\" as PEM and add `- certificate-file: <path>` to issuer-signing-keys", a.value),
                    );
                    return None;
                }
                other => self.unsupported(a.pos, other, "not a key attribute"),
            }
        }
        let mut entries: Vec<Entry> = id
            .map(|v| Entry::new("id", Node::str(v)))
            .into_iter()
            .collect();
        match (n, e) {
            (Some(n), Some(e)) => {
                let (n, e) = (self.plain(n)?, self.plain(e)?);
                entries.push(Entry::new("n", Node::str(n)));
                entries.push(Entry::new("e", Node::str(e)));
            }
            (None, None) => entries.push(Entry::new("base64", Node::str(self.inline_key(key)?))),
            _ => {
                self.unsupported(key.pos, "key", "n and e must be given together");
                return None;
            }
        }
        Some(Node::Map(entries))
    }

    /// A `<key>`'s inline base64 text, whitespace removed; reported when empty or an expression.
    fn inline_key(&mut self, key: &Element) -> Option<String> {
        let text = key.trimmed_text();
        if expr::is_expression(text) {
            self.unsupported(key.pos, "key", EXPRESSION);
            return None;
        }
        if text.is_empty() {
            self.unsupported(key.pos, "key", "has no key material");
            return None;
        }
        Some(text.chars().filter(|c| !c.is_whitespace()).collect())
    }

    /// `<decryption-keys>`: an inline base64 key becomes `- value: ...` (with its `id`); a
    /// `certificate-id` names APIM's certificate store, which the gateway cannot read: reported,
    /// with the PEM file entry to write instead.
    fn decryption_keys(&mut self, p: &mut PolicyOut, el: &Element) {
        for key in &el.children {
            if key.name != "key" {
                self.unsupported(key.pos, &key.name, "not a decryption-keys element");
                continue;
            }
            let mut id = None;
            let mut certificate = false;
            for a in &key.attrs {
                match a.name.as_str() {
                    "id" => id = self.plain(a),
                    "certificate-id" => {
                        certificate = true;
                        self.unsupported(
                            a.pos,
                            "certificate-id",
                            format!("APIM certificates are not available to the gateway: export the private key of certificate \"{}\" as PEM and add `- file: <path>` to decryption-keys", a.value),
                        );
                    }
                    other => self.unsupported(a.pos, other, "not a decryption key attribute"),
                }
            }
            if certificate {
                continue;
            }
            let Some(value) = self.inline_key(key) else {
                continue;
            };
            let mut entries: Vec<Entry> = id
                .map(|v| Entry::new("id", Node::str(v)))
                .into_iter()
                .collect();
            entries.push(Entry::new("value", Node::str(value)));
            let item = Item::new(Node::Map(entries)).comment(self.origin(key.pos));
            p.fields.push("decryption-keys", item, "");
        }
    }

    /// `<audiences><audience>..</audience></audiences>` and the like.
    fn string_list(&mut self, p: &mut PolicyOut, el: &Element, child_name: &str, key: &str) {
        let comment = self.origin(el.pos);
        for child in &el.children {
            if child.name != child_name {
                self.unsupported(child.pos, &child.name, format!("not a {} element", el.name));
                continue;
            }
            let value = self.literal_text(child);
            p.fields.push(key, Item::new(Node::str(value)), &comment);
        }
    }

    /// Element text; an expression is reported and kept literally (fails closed).
    fn literal_text(&mut self, el: &Element) -> String {
        let text = el.trimmed_text();
        if expr::is_expression(text) {
            self.unsupported(el.pos, &el.name, KEPT_LITERALLY);
        }
        text.to_owned()
    }

    fn required_claims(&mut self, p: &mut PolicyOut, el: &Element) {
        for claim in &el.children {
            if claim.name != "claim" {
                self.unsupported(claim.pos, &claim.name, "not a required-claims element");
                continue;
            }
            let item = Item::new(Node::Map(self.claim(claim))).comment(self.origin(claim.pos));
            p.fields.push("required-claims", item, "");
        }
    }

    fn claim(&mut self, claim: &Element) -> Vec<Entry> {
        let mut entries = Vec::new();
        for a in &claim.attrs {
            let expression = expr::is_expression(&a.value);
            match a.name.as_str() {
                "name" | "separator" => {
                    if expression {
                        self.unsupported(a.pos, &a.name, KEPT_LITERALLY);
                    }
                    entries.push(Entry::new(a.name.as_str(), Node::str(a.value.as_str())));
                }
                "match" => match a.value.as_str() {
                    "all" | "any" => entries.push(Entry::new("match", Node::str(a.value.as_str()))),
                    _ => self.unsupported(
                        a.pos,
                        "match",
                        format!(
                            "\"{}\" is not all or any; the default (all) applies",
                            a.value
                        ),
                    ),
                },
                other => self.unsupported(a.pos, other, "not a claim attribute"),
            }
        }
        if claim.attr("name").is_none() {
            self.unsupported(
                claim.pos,
                "claim",
                "has no name; kept with an empty name, which never matches",
            );
            entries.insert(0, Entry::new("name", Node::str("")));
        }
        let mut values = Vec::new();
        for v in &claim.children {
            if v.name == "value" {
                values.push(Item::new(Node::str(self.literal_text(v))));
            } else {
                self.unsupported(v.pos, &v.name, "not a claim element");
            }
        }
        if !values.is_empty() {
            entries.push(Entry::new("values", Node::Seq(values)));
        }
        entries
    }

    /// A delete of the token header of a converted policy -> `forward-token: false`; false when
    /// no converted policy reads that header.
    pub(crate) fn delete_token_header(&mut self, el: &Element, header: &str) -> bool {
        let policy = self.policies.iter_mut().rev().find(|p| {
            p.token_header
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(header))
        });
        match policy {
            Some(p) => {
                p.forward_token_off = Some(el.pos);
                self.emitted();
                true
            }
            None => false,
        }
    }

    /// A claim of a converted policy's token into `header` (`forward-claims`); false (reported)
    /// when no converted policy validates the token read.
    pub(crate) fn forward_claim(&mut self, el: &Element, value: &Element, header: String) -> bool {
        let text = value.trimmed_text();
        let Some(read) = expr::claim_read(text) else {
            self.unsupported(
                value.pos,
                "set-header value",
                "only an expression reading one claim of the validated token is converted (see docs/import-apim.md for the shapes)",
            );
            return false;
        };
        let ClaimRead {
            source,
            claim,
            default,
        } = read;
        let index = self.policies.iter().rposition(|p| match &source {
            JwtSource::Variable(v) => p.output_var.as_deref() == Some(v.as_str()),
            JwtSource::Header(h) => p
                .token_header
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(h)),
        });
        let Some(index) = index else {
            let why = match &source {
                JwtSource::Variable(v) => format!("variable \"{v}\" is not the output-token-variable-name of a converted validate-jwt or validate-azure-ad-token before it"),
                JwtSource::Header(h) => format!("AsJwt() reads header {h}, which no converted policy before it validates; forward-claims only forwards claims of a validated token"),
            };
            self.unsupported(value.pos, "set-header value", why);
            return false;
        };
        if let Some(d) = default {
            self.unsupported(
                value.pos,
                "set-header value",
                format!("the default \"{d}\" for an absent claim is not supported: the header is left unset"),
            );
        }
        self.emitted();
        let forward = &mut self.policies[index].forward;
        if let Some(pos) = forward
            .iter()
            .position(|(h, _, _)| h.eq_ignore_ascii_case(&header))
        {
            forward.remove(pos);
        }
        forward.push((header, claim, el.pos));
        true
    }

    /// An attribute value that must not be an expression; reported and `None` when it is.
    pub(crate) fn plain<'a>(&mut self, a: &'a Attr) -> Option<&'a str> {
        if expr::is_expression(&a.value) {
            self.unsupported(a.pos, &a.name, EXPRESSION);
            None
        } else {
            Some(a.value.as_str())
        }
    }

    pub(crate) fn boolean(&mut self, a: &Attr) -> Option<bool> {
        let v = self.plain(a)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.unsupported(
                    a.pos,
                    &a.name,
                    format!("\"{v}\" is not true or false; the default applies"),
                );
                None
            }
        }
    }

    pub(crate) fn integer(&mut self, a: &Attr, min: i64, max: i64) -> Option<i64> {
        let v = self.plain(a)?;
        match v.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.unsupported(
                    a.pos,
                    &a.name,
                    format!("\"{v}\" is not an integer from {min} to {max}; the default applies"),
                );
                None
            }
        }
    }
}

/// Whether a `choose` holds, in any branch (at any depth), one of the statements `names`.
pub(crate) fn choose_holds(el: &Element, names: &[&str]) -> bool {
    choose_holds_any(el, &|c| names.contains(&c.name.as_str()))
}

/// Whether a `choose` holds, in any branch (at any depth), a statement that refuses or limits
/// requests ([`RESTRICTING`], or one [`refuses_requests`] without a gateway.yaml equivalent).
pub(crate) fn choose_restricts(el: &Element) -> bool {
    choose_holds_any(el, &|c| {
        RESTRICTING.contains(&c.name.as_str()) || refuses_requests(c)
    })
}

/// Whether a `choose` holds, in any branch (at any depth), a statement [`refuses_requests`] (in
/// `<outbound>` too: the validations refuse responses there).
pub(crate) fn choose_refuses(el: &Element) -> bool {
    choose_holds_any(el, &refuses_requests)
}

fn choose_holds_any(el: &Element, pred: &dyn Fn(&Element) -> bool) -> bool {
    el.children
        .iter()
        .flat_map(|b| &b.children)
        .any(|c| pred(c) || (c.name == "choose" && choose_holds_any(c, pred)))
}

/// APIM statements with no gateway.yaml equivalent whose purpose is to refuse requests: left out,
/// every request APIM refuses with them would reach the backend, so they fail closed
/// ([`Converter::refused`]). The rate limits are not among them (a missing limit lets through
/// volume, not a caller APIM refuses), nor `validate-status-code` (it decides only the status the
/// client sees of a response the backend has already produced).
const REFUSING: &[&str] = &[
    "validate-client-certificate",
    "validate-graphql-request",
    "validate-odata-request",
    "llm-content-safety",
];

/// Validations that refuse only where an action is `prevent` (`detect` and `ignore` never do).
const VALIDATIONS: &[&str] = &[
    "validate-content",
    "validate-headers",
    "validate-parameters",
];

/// Whether `el` is an APIM statement without a gateway.yaml equivalent that refuses requests (or
/// responses): one of [`REFUSING`], or one of [`VALIDATIONS`] with an action (at any depth) that is
/// not `detect` or `ignore` (`prevent`, an expression, or unknown: taken as refusing).
pub(crate) fn refuses_requests(el: &Element) -> bool {
    fn prevents(el: &Element) -> bool {
        el.attrs.iter().any(|a| {
            (a.name == "action" || a.name.ends_with("-action"))
                && !matches!(a.value.trim(), "detect" | "ignore")
        }) || el.children.iter().any(prevents)
    }
    let name = el.name.as_str();
    REFUSING.contains(&name) || (VALIDATIONS.contains(&name) && prevents(el))
}

/// Statements that refuse or limit requests: a `choose` holding one cannot be left out without
/// letting through requests APIM refuses, so such a choose fails closed (see
/// [`Converter::refused`]).
pub(crate) const RESTRICTING: &[&str] = &[
    "return-response",
    "rate-limit",
    "rate-limit-by-key",
    "quota",
    "quota-by-key",
    "ip-filter",
    "check-header",
    "validate-jwt",
    "validate-azure-ad-token",
];

/// gateway.yaml statements that answer, refuse or limit requests (a second token check is not
/// merged across them).
const ANSWERS: &[&str] = &[
    "return-response",
    "mock-response",
    "rate-limit",
    "rate-limit-by-key",
    "quota-by-key",
    "ip-filter",
    "check-header",
];

/// Whether a gateway.yaml node holds, at any depth, a key of `keys`.
pub(crate) fn holds(node: &Node, keys: &[&str]) -> bool {
    match node {
        Node::Map(entries) => entries.iter().any(|e| entry_holds(e, keys)),
        Node::Seq(items) => items.iter().any(|i| holds(&i.value, keys)),
        _ => false,
    }
}

/// Whether a gateway.yaml entry is, or holds at any depth, a key of `keys`.
fn entry_holds(e: &Entry, keys: &[&str]) -> bool {
    keys.contains(&e.key.as_str()) || holds(&e.value, keys)
}

/// Token checks: a `choose` holding one decides which policy guards a request.
const TOKEN_CHECKS: &[&str] = &["validate-jwt", "validate-azure-ad-token"];

/// Whether a condition holds for requests of `method`; `None` when it reads anything else.
fn method_holds(cond: &Cond, method: &str) -> Option<bool> {
    match cond {
        Cond::Method(m) => Some(m == method),
        Cond::Not(inner) => method_holds(inner, method).map(|b| !b),
        Cond::All(items) | Cond::Any(items) => {
            let all = matches!(cond, Cond::All(_));
            let values: Vec<Option<bool>> = items.iter().map(|c| method_holds(c, method)).collect();
            // C#'s && and || need only one operand to decide
            if values.contains(&Some(!all)) {
                Some(!all)
            } else if values.iter().all(Option::is_some) {
                Some(all)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A policy name from the file name: `entra-v2.policy.xml` -> `entra-v2`.
fn policy_stem(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let stem = base.split('.').next().unwrap_or(base);
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "apim".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::policy_stem;

    #[test]
    fn stems() {
        assert_eq!(policy_stem("dir/Entra V2.policy.xml"), "entra-v2");
        assert_eq!(policy_stem("..."), "apim");
    }
}
