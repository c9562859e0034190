//! The statements that shape the request and answer without the backend: `set-header` (inbound and
//! outbound), `set-query-parameter`, `rewrite-uri`, `set-backend-service`, `return-response`,
//! `mock-response`, `set-variable` and `choose` -> the same statements in the policy's `inbound:` /
//! `outbound:` list, with APIM expressions turned into `${...}` value sources and structured
//! conditions ([`crate::sources`]).
//!
//! Why a statement is left out whole when one of its values or conditions is not recognised: a
//! header set to a guessed value, or a branch taken on a guessed condition, would send the backend
//! something APIM never sends. Leaving the statement out is reported (exit 3); nothing is ever
//! evaluated differently without a report. A left-out `set-header` that APIM would use to replace
//! or remove a header becomes a delete of it, so the copy APIM replaces (the client's inbound, the
//! backend's outbound) never passes; when its name is unknown the routes refuse every request. A
//! left-out `choose` holding a statement that refuses or limits requests makes the routes refuse
//! every request too. A `choose` whose branches hold a token check keeps the
//! older conversion (each branch's token check its own policy, see [`crate::convert`]), and the new
//! statements inside such branches are left out, since their condition would not be evaluated.

use crate::convert::{choose_refuses, choose_restricts, Converter, Mark, Section};
use crate::expr::{self, JwtSource};
use crate::inbound::{is_token, Place, SetHeader, Step};
use crate::sources::{self, Cond, Part, Source};
use crate::xml::{Attr, Element, Pos};
use crate::yaml::{Entry, Item, Node};

/// A header name as gateway.yaml compares them: lower case, `_` as `-`.
fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

const SHAPES: &str = "this expression is not converted (see docs/import-apim.md for the shapes); the statement is left out";

/// `exists-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Override,
    Skip,
    Append,
    Delete,
}

impl Action {
    /// An `exists-action` value (`None`: not one of the four).
    fn parse(value: &str) -> Option<Action> {
        match value.trim() {
            "override" => Some(Action::Override),
            "skip" => Some(Action::Skip),
            "append" => Some(Action::Append),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Override => "override",
            Action::Skip => "skip",
            Action::Append => "append",
            Action::Delete => "delete",
        }
    }
}

/// What is known of a `set-header` / `set-query-parameter` that cannot be read whole.
struct Unread {
    /// The header name, when readable.
    name: Option<String>,
    /// `exists-action`, when readable.
    action: Option<Action>,
}

/// A parsed `set-header` / `set-query-parameter`.
struct Setter<'e> {
    name: String,
    action: Action,
    /// `exists-action` as written (for notes).
    action_attr: Option<&'e Attr>,
    values: Vec<&'e Element>,
}

impl Converter {
    /// Report and return true inside a `choose` converted the old way (its conditions are not
    /// evaluated, so a statement there would run for every request).
    fn unconditional(&mut self, el: &Element) -> bool {
        if self.split == 0 {
            return false;
        }
        self.unsupported(
            el.pos,
            &el.name,
            "left out: this choose holds a token check, so its branches are converted without their conditions, and this statement would run for every request",
        );
        true
    }

    /// The name, exists-action and values of a set-header or set-query-parameter; reported, and
    /// `Err` with what is known of it, when the statement cannot be converted.
    fn setter<'e>(&mut self, el: &'e Element) -> Result<Setter<'e>, Unread> {
        let mut name = None;
        let mut action = Action::Override;
        let mut action_attr = None;
        let mut action_known = true;
        let mut ok = true;
        for a in &el.attrs {
            match a.name.as_str() {
                "name" => name = self.plain(a).map(|v| v.trim().to_owned()),
                "exists-action" => {
                    action_attr = Some(a);
                    let text = self.plain(a).map(str::trim);
                    action = match (text, text.and_then(Action::parse)) {
                        (_, Some(known)) => known,
                        (Some(other), None) => {
                            self.unsupported(
                                a.pos,
                                "exists-action",
                                format!("\"{other}\" is not override, skip, append or delete; the statement is left out"),
                            );
                            ok = false;
                            action_known = false;
                            Action::Override
                        }
                        (None, None) => {
                            ok = false;
                            action_known = false;
                            Action::Override
                        }
                    }
                }
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => {
                    self.unsupported(a.pos, other, format!("not a {} attribute", el.name));
                    ok = false;
                }
            }
        }
        let mut values = Vec::new();
        for child in &el.children {
            if child.name == "value" {
                values.push(child);
            } else {
                self.unsupported(child.pos, &child.name, format!("not a {} element", el.name));
                ok = false;
            }
        }
        let name = name.filter(|n| !n.is_empty());
        let unread = |name: Option<String>| Unread {
            name,
            action: action_known.then_some(action),
        };
        let Some(name) = name else {
            if el.attr("name").is_none() {
                self.unsupported(el.pos, &el.name, "has no name; left out");
            }
            return Err(unread(None));
        };
        if action != Action::Delete && values.is_empty() {
            self.unsupported(el.pos, &el.name, "has no <value>; left out");
            return Err(unread(Some(name)));
        }
        if !ok {
            return Err(unread(Some(name)));
        }
        Ok(Setter {
            name,
            action,
            action_attr,
            values,
        })
    }

    /// A `set-header` that is left out whole ([`Self::setter`] could not read it): when APIM may
    /// replace or remove the header (its exists-action is override, delete, or not known), the
    /// copy it would replace must not pass: deleted in its place when the name is known, else the
    /// routes refuse every request ([`Converter::refused`]).
    fn unread_set_header(&mut self, el: &Element, unread: Unread) {
        if matches!(unread.action, Some(Action::Skip | Action::Append)) {
            return;
        }
        match unread.name {
            Some(name) if name.contains("{{") || is_token(&name) => {
                self.delete_in_place(&name, el.pos)
            }
            _ => {
                self.refuse(
                    el.pos,
                    "set-header",
                    "the header it replaces or removes is not known, so the routes refuse every request (APIM would not let the client's or backend's copy through)",
                );
            }
        }
    }

    /// `set-header`, inbound or outbound.
    pub(crate) fn set_header(&mut self, el: &Element) {
        let s = match self.setter(el) {
            Ok(s) => s,
            Err(unread) => return self.unread_set_header(el, unread),
        };
        if !(s.name.contains("{{") || is_token(&s.name)) {
            return self.unsupported(
                el.pos,
                "set-header",
                format!("\"{}\" is not a header name; left out", s.name),
            );
        }
        if portcullis_config::is_framing_header(&s.name.to_ascii_lowercase()) {
            return self.unsupported(
                el.pos,
                "set-header",
                format!("{} is a hop-by-hop or framing header, which the gateway manages itself; left out", s.name),
            );
        }
        let replaces = matches!(s.action, Action::Override | Action::Delete);
        let name = s.name.clone();
        if !self.set_header_converted(el, s) && replaces {
            // Left out (reported): APIM always replaces (or removes) the header, so the client's
            // own copy must not reach the backend, nor the backend's the client, either.
            self.delete_in_place(&name, el.pos);
        }
    }

    /// The rest of [`Self::set_header`]: false when the statement is left out (reported).
    fn set_header_converted(&mut self, el: &Element, s: Setter<'_>) -> bool {
        let inbound = self.section == Section::Inbound;
        let top = inbound && self.nested == 0;
        if top && s.action == Action::Delete && self.delete_token_header(el, &s.name) {
            return true;
        }
        if top && s.action != Action::Delete && s.values.len() == 1 && !self.set_before(&s.name) {
            let value = s.values[0];
            if let Some(read) = expr::claim_read(value.trimmed_text()) {
                if read.default.is_none() || self.split > 0 {
                    if let (Some(a), Action::Skip | Action::Append) = (s.action_attr, s.action) {
                        self.note(
                            a.pos,
                            "exists-action",
                            format!("\"{}\" becomes override: forward-claims always replaces the client's header", s.action.name()),
                        );
                    }
                    return self.forward_claim(el, value, s.name);
                }
            }
        }
        if self.unconditional(el) {
            return false;
        }
        let mut reads = Vec::new();
        let mut entries = vec![Entry::new("name", Node::str(s.name.clone()))];
        if s.action_attr.is_some() || s.action == Action::Delete {
            entries.push(Entry::new("exists-action", Node::str(s.action.name())));
        }
        if s.action == Action::Delete {
            if let Some(v) = s.values.first() {
                self.note(v.pos, "value", "ignored: a delete sets no value");
            }
        } else if !self.values_entry(&s.values, &mut entries, &mut reads) {
            return false;
        }
        let Some(place) = self.place_of(&reads, el) else {
            return false;
        };
        let headers = if inbound {
            vec![SetHeader {
                name: s.name,
                pos: el.pos,
                tally: self.tally.len() - 1,
                delete: s.action == Action::Delete,
                overrides: s.action == Action::Override,
            }]
        } else {
            Vec::new()
        };
        let entry = Entry::new("set-header", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step_with(el.pos, place, entry, Vec::new(), headers);
        true
    }

    /// Whether a converted `set-header` statement before this one sets `name` (then a claim read
    /// into it stays a statement, keeping APIM's order, instead of becoming forward-claims; a
    /// delete before it is what forward-claims does anyway).
    fn set_before(&self, name: &str) -> bool {
        self.steps
            .iter()
            .flat_map(|s| &s.headers)
            .any(|h| !h.delete && h.name.eq_ignore_ascii_case(name))
    }

    /// `value: ...` or `values: [...]`; false (reported) when a value is not converted.
    fn values_entry(
        &mut self,
        values: &[&Element],
        entries: &mut Vec<Entry>,
        reads: &mut Vec<JwtSource>,
    ) -> bool {
        let mut out = Vec::new();
        for v in values {
            match self.value_text(v.trimmed_text(), v.pos, "value", reads) {
                Some(t) => out.push(t),
                None => return false,
            }
        }
        if out.len() == 1 {
            entries.push(Entry::new("value", Node::str(out.remove(0))));
        } else {
            entries.push(Entry::new("values", Node::strings(out)));
        }
        true
    }

    /// The place of a statement reading claims of `reads` (all of one token); reported when they
    /// read several tokens.
    fn place_of(&mut self, reads: &[JwtSource], el: &Element) -> Option<Place> {
        let mut distinct: Vec<&JwtSource> = Vec::new();
        for r in reads {
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        match distinct.as_slice() {
            [] => Some(Place::Shared),
            [one] => Some(Place::Claim((*one).clone())),
            _ => {
                self.unsupported(
                    el.pos,
                    &el.name,
                    "reads claims of several tokens; the gateway reads the claims of the one token its policy validates; left out",
                );
                None
            }
        }
    }

    /// A value (literal or recognised expression) as gateway.yaml value text; reported when not.
    pub(crate) fn value_text(
        &mut self,
        text: &str,
        pos: Pos,
        subject: &str,
        reads: &mut Vec<JwtSource>,
    ) -> Option<String> {
        let text = if expr::is_expression(text) {
            text.trim()
        } else {
            text
        };
        // a literal is kept as written (element texts arrive trimmed)
        let Some(parts) = sources::value(text) else {
            self.unsupported(pos, subject, SHAPES);
            return None;
        };
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Lit(l) => out.push_str(&l.replace("${", "$${")),
                Part::Src(src, default) => {
                    match self.source_text(&src, default.as_deref(), pos, reads) {
                        Ok(t) => out.push_str(&t),
                        Err(why) => {
                            self.unsupported(
                                pos,
                                subject,
                                format!("{why}; the statement is left out"),
                            );
                            return None;
                        }
                    }
                }
            }
        }
        Some(out)
    }

    /// `${...}` for one source.
    fn source_text(
        &mut self,
        src: &Source,
        default: Option<&str>,
        pos: Pos,
        reads: &mut Vec<JwtSource>,
    ) -> Result<String, String> {
        let body = match src {
            Source::Header(h) if is_token(h) => format!("header:{h}"),
            Source::Header(h) => return Err(format!("\"{h}\" is not a header name")),
            Source::Query(q) if plain_name(q) => format!("query:{q}"),
            Source::Param(p) if identifier(p) => {
                self.params.push((p.clone(), pos));
                format!("param:{p}")
            }
            Source::Var(v) if identifier(v) => {
                if !self.scopes.iter().any(|s| s.contains(v)) {
                    return Err(format!(
                        "variable \"{v}\" is not set by a converted set-variable before it"
                    ));
                }
                format!("var:{v}")
            }
            Source::Claim(token, claim) if plain_name(claim) => {
                if self.section == Section::Outbound {
                    return Err(
                        "claims are read in inbound statements only: set a variable from the claim in <inbound> and read the variable".to_owned(),
                    );
                }
                reads.push(token.clone());
                format!("claim:{claim}")
            }
            Source::ClientIp => "client-ip".to_owned(),
            Source::Method => "method".to_owned(),
            Source::Path => "path".to_owned(),
            Source::Host => "host".to_owned(),
            other => {
                return Err(format!(
                    "the name read by {other:?} is not usable in gateway.yaml"
                ))
            }
        };
        match default {
            Some(d) if d.contains(['}', '|']) || d.contains("${") => Err(format!(
                "the default \"{d}\" contains `}}`, `|` or `${{`, which a gateway.yaml source cannot hold"
            )),
            Some(d) => Ok(format!("${{{body}|{d}}}")),
            None => Ok(format!("${{{body}}}")),
        }
    }

    /// `set-query-parameter`. One that is left out while APIM replaces or removes the parameter
    /// (exists-action override, delete, or not known) must not let the client's own copy through:
    /// a delete of the parameter takes its place, or, with no readable name, the routes refuse every
    /// request ([`Converter::refused`]), as for `set-header`.
    pub(crate) fn set_query_parameter(&mut self, el: &Element) {
        let unread = match self.set_query_parameter_converted(el) {
            Ok(()) => return,
            Err(unread) => unread,
        };
        if matches!(unread.action, Some(Action::Skip | Action::Append)) {
            return;
        }
        match unread.name {
            Some(name) if !name.chars().any(char::is_control) => {
                let entry =
                    self.left_out_delete("set-query-parameter", &name, el.pos, "the client's own");
                // not counted as converted: the statement itself is left out
                self.list().push(Step {
                    pos: el.pos,
                    place: Place::Shared,
                    entry: Some(entry),
                    tallies: Vec::new(),
                    headers: Vec::new(),
                });
            }
            _ => {
                self.refuse(
                    el.pos,
                    "set-query-parameter",
                    "the parameter it replaces or removes is not known, so the routes refuse every request (APIM would not let the client's copy through)",
                );
            }
        }
    }

    /// The conversion of [`Self::set_query_parameter`]; `Err` (reported) with what is known of a
    /// statement left out.
    fn set_query_parameter_converted(&mut self, el: &Element) -> Result<(), Unread> {
        if self.unconditional(el) {
            // what the setter would read, without reporting it again
            let action = match el.attr("exists-action") {
                None => Some(Action::Override),
                Some(a) => Action::parse(&a.value),
            };
            let name = el
                .attr("name")
                .map(|a| a.value.trim().to_owned())
                .filter(|n| !n.is_empty() && !expr::is_expression(n));
            return Err(Unread { name, action });
        }
        let s = self.setter(el)?;
        let left_out = Unread {
            name: Some(s.name.clone()),
            action: Some(s.action),
        };
        let mut reads = Vec::new();
        let mut entries = vec![Entry::new("name", Node::str(s.name.clone()))];
        if s.action_attr.is_some() || s.action == Action::Delete {
            entries.push(Entry::new("exists-action", Node::str(s.action.name())));
        }
        if s.action != Action::Delete && !self.values_entry(&s.values, &mut entries, &mut reads) {
            return Err(left_out);
        }
        let Some(place) = self.place_of(&reads, el) else {
            return Err(left_out);
        };
        let entry =
            Entry::new("set-query-parameter", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, place, entry);
        Ok(())
    }

    /// `rewrite-uri` and `set-backend-service`: when one is not converted, the routes refuse every
    /// request ([`Converter::refused`]): left out, the request would reach the route's upstream at
    /// the client's own path (or the API's default backend), a path or host APIM never sends it to.
    pub(crate) fn routing(&mut self, el: &Element) {
        if el.name == "rewrite-uri" {
            self.rewrite_uri(el);
        } else {
            self.set_backend_service(el);
        }
        if !self.current_emitted() {
            let what = if el.name == "rewrite-uri" {
                "the backend would get the client's path instead of the one APIM rewrites it to"
            } else {
                "the request would go to the route's upstream instead of the backend APIM sends it to"
            };
            self.refuse(
                el.pos,
                &el.name,
                format!("not converted: {what}, so the routes refuse every request"),
            );
        }
    }

    /// `rewrite-uri template copy-unmatched-params`.
    fn rewrite_uri(&mut self, el: &Element) {
        if self.unconditional(el) {
            return;
        }
        let (mut template, mut copy) = (None, None);
        let mut reads = Vec::new();
        for a in &el.attrs {
            match a.name.as_str() {
                "template" => match self.value_text(&a.value, a.pos, "template", &mut reads) {
                    Some(t) => template = Some(t),
                    None => return,
                },
                "copy-unmatched-params" => copy = self.boolean(a),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => {
                    return self.unsupported(
                        a.pos,
                        other,
                        "not a rewrite-uri attribute; the statement is left out",
                    )
                }
            }
        }
        let Some(template) = template else {
            return self.unsupported(el.pos, "rewrite-uri", "has no template; left out");
        };
        if !template.starts_with('/') {
            return self.unsupported(
                el.pos,
                "rewrite-uri",
                format!("the template \"{template}\" does not start with `/`; left out"),
            );
        }
        for name in template_params(&template) {
            self.params.push((name, el.pos));
        }
        let mut entries = vec![Entry::new("template", Node::str(template))];
        if let Some(b) = copy {
            entries.push(Entry::new("copy-unmatched-params", Node::Bool(b)));
        }
        let Some(place) = self.place_of(&reads, el) else {
            return;
        };
        let entry = Entry::new("rewrite-uri", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, place, entry);
    }

    /// `set-backend-service base-url | backend-id`.
    fn set_backend_service(&mut self, el: &Element) {
        if self.unconditional(el) {
            return;
        }
        let (mut url, mut id) = (None, None);
        for a in &el.attrs {
            match a.name.as_str() {
                "base-url" => url = self.plain(a).map(|v| (v.trim().to_owned(), a.pos)),
                "backend-id" => id = self.plain(a).map(|v| (v.trim().to_owned(), a.pos)),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other if other.starts_with("sf-") || other.starts_with("dapr-") => {
                    return self.unsupported(
                        a.pos,
                        other,
                        "Service Fabric and Dapr backends are not supported by the gateway; the statement is left out",
                    )
                }
                other => {
                    return self.unsupported(
                        a.pos,
                        other,
                        "not a set-backend-service attribute; the statement is left out",
                    )
                }
            }
        }
        if !el.children.is_empty() {
            return self.unsupported(
                el.pos,
                "set-backend-service",
                "child elements are not converted; the statement is left out",
            );
        }
        let entry = match (url, id) {
            (Some((url, pos)), None) => {
                let usable =
                    url.contains("{{") || url.starts_with("http://") || url.starts_with("https://");
                if !usable {
                    return self.unsupported(
                        pos,
                        "base-url",
                        format!("\"{url}\" is not an http(s) URL; the statement is left out"),
                    );
                }
                Entry::new("base-url", Node::str(url))
            }
            (None, Some((id, pos))) => {
                if !id.contains("{{") && !identifier(&id) {
                    return self.unsupported(
                        pos,
                        "backend-id",
                        format!(
                            "\"{id}\" is not usable as a backends: key; the statement is left out"
                        ),
                    );
                }
                if !self.backends.iter().any(|(b, _)| *b == id) {
                    if !self.in_folder {
                        self.note(
                            pos,
                            "backend-id",
                            format!("APIM backend \"{id}\" becomes `backends: {id}: {{url: ...}}` with a placeholder URL: fill in its URL"),
                        );
                    }
                    self.backends.push((id.clone(), pos));
                }
                Entry::new("backend-id", Node::str(id))
            }
            (None, None) => {
                return self.unsupported(
                    el.pos,
                    "set-backend-service",
                    "has neither a usable base-url nor backend-id; left out",
                )
            }
            (Some(_), Some(_)) => {
                return self.unsupported(
                    el.pos,
                    "set-backend-service",
                    "has both base-url and backend-id; left out",
                )
            }
        };
        let entry =
            Entry::new("set-backend-service", Node::Map(vec![entry])).comment(self.origin(el.pos));
        self.push_step(el.pos, Place::Shared, entry);
    }

    /// `return-response`; when it is not converted, the routes refuse every request
    /// ([`Converter::refused`]): left out, the requests APIM answers here (a refusal, often) would
    /// reach the backend.
    pub(crate) fn return_response(&mut self, el: &Element) {
        self.return_response_converted(el);
        if !self.current_emitted() {
            self.refuse(
                el.pos,
                "return-response",
                "not converted: APIM answers here without the backend, so the routes refuse every request",
            );
        }
    }

    /// `return-response` with `set-status`, `set-header` and `set-body` inside.
    fn return_response_converted(&mut self, el: &Element) {
        if self.unconditional(el) {
            return;
        }
        for a in &el.attrs {
            match a.name.as_str() {
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                "response-variable-name" => {
                    return self.unsupported(
                        a.pos,
                        "response-variable-name",
                        "the gateway has no response variables (send-request is not converted); the statement is left out",
                    )
                }
                other => {
                    return self.unsupported(
                        a.pos,
                        other,
                        "not a return-response attribute; the statement is left out",
                    )
                }
            }
        }
        let mut reads = Vec::new();
        let (mut status, mut reason, mut body) = (None, None, None);
        let mut headers: Vec<(String, Vec<String>)> = Vec::new();
        for child in &el.children {
            match child.name.as_str() {
                "set-status" => {
                    for a in &child.attrs {
                        match a.name.as_str() {
                            "code" => match self.integer(a, 100, 599) {
                                Some(c) => status = Some(c),
                                None => return self.left_out(el),
                            },
                            "reason" => match self.plain(a) {
                                Some(r) => reason = Some(r.to_owned()),
                                None => return self.left_out(el),
                            },
                            other => {
                                self.unsupported(a.pos, other, "not a set-status attribute");
                                return self.left_out(el);
                            }
                        }
                    }
                }
                "set-header" => {
                    let Ok(s) = self.setter(child) else {
                        return self.left_out(el);
                    };
                    if !is_token(&s.name) {
                        self.unsupported(
                            child.pos,
                            "set-header",
                            format!("\"{}\" is not a header name", s.name),
                        );
                        return self.left_out(el);
                    }
                    let mut values = Vec::new();
                    for v in &s.values {
                        match self.value_text(v.trimmed_text(), v.pos, "value", &mut reads) {
                            Some(t) => values.push(t),
                            None => return self.left_out(el),
                        }
                    }
                    let at = headers
                        .iter()
                        .position(|(h, _)| h.eq_ignore_ascii_case(&s.name));
                    match (s.action, at) {
                        (Action::Delete, Some(i)) => {
                            headers.remove(i);
                        }
                        (Action::Delete, None) | (Action::Skip, Some(_)) => {}
                        (Action::Append, Some(i)) => headers[i].1.extend(values),
                        (Action::Override, Some(i)) => headers[i].1 = values,
                        (_, None) => headers.push((s.name, values)),
                    }
                }
                "set-body" => {
                    if let Some(a) = child.attrs.iter().find(|a| a.name != "id") {
                        self.unsupported(
                            a.pos,
                            &a.name,
                            "set-body templates (liquid) and xsi-nil are not converted",
                        );
                        return self.left_out(el);
                    }
                    match self.value_text(child.trimmed_text(), child.pos, "set-body", &mut reads) {
                        Some(t) => body = Some(t),
                        None => return self.left_out(el),
                    }
                }
                other => {
                    self.unsupported(child.pos, other, "not converted inside return-response");
                    return self.left_out(el);
                }
            }
        }
        let mut entries = Vec::new();
        if let Some(s) = status {
            entries.push(Entry::new("status", Node::Int(s)));
        }
        if let Some(r) = reason {
            entries.push(Entry::new("reason", Node::str(r)));
        }
        if !headers.is_empty() {
            let map = headers
                .into_iter()
                .map(|(h, mut v)| {
                    let node = if v.len() == 1 {
                        Node::str(v.remove(0))
                    } else {
                        Node::strings(v)
                    };
                    Entry::new(h, node)
                })
                .collect();
            entries.push(Entry::new("headers", Node::Map(map)));
        }
        match body {
            Some(b) if matches!(status, Some(204 | 304)) && !b.is_empty() => {
                if let Some(set_body) = el.children.iter().find(|c| c.name == "set-body") {
                    self.note(
                        set_body.pos,
                        "set-body",
                        "left out: a 204 or 304 answer has no body (HTTP drops it in APIM too)",
                    );
                }
            }
            Some(b) => entries.push(Entry::new("body", Node::str(b))),
            None => {}
        }
        let Some(place) = self.place_of(&reads, el) else {
            return;
        };
        let entry = Entry::new("return-response", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, place, entry);
    }

    fn left_out(&mut self, el: &Element) {
        self.unsupported(el.pos, &el.name, "left out (see above)");
    }

    /// `mock-response status-code content-type`.
    pub(crate) fn mock_response(&mut self, el: &Element) {
        if self.unconditional(el) {
            return;
        }
        let mut entries = Vec::new();
        for a in &el.attrs {
            match a.name.as_str() {
                "status-code" => match self.integer(a, 100, 599) {
                    Some(c) => entries.push(Entry::new("status-code", Node::Int(c))),
                    None => return self.left_out(el),
                },
                "content-type" => match self.plain(a) {
                    Some(t) => entries.push(Entry::new("content-type", Node::str(t.trim()))),
                    None => return self.left_out(el),
                },
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => {
                    self.unsupported(a.pos, other, "not a mock-response attribute");
                    return self.left_out(el);
                }
            }
        }
        if !self.in_folder {
            self.note(
                el.pos,
                "mock-response",
                "the body is the example of the route's OpenAPI operation only when the route has `openapi: {spec, operation}` (add it by hand); otherwise the answer is empty",
            );
        }
        let entry = Entry::new("mock-response", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, Place::Shared, entry);
    }

    /// `set-variable name value`.
    pub(crate) fn set_variable(&mut self, el: &Element) {
        if self.unconditional(el) {
            return;
        }
        let (mut name, mut value) = (None, None);
        let mut reads = Vec::new();
        for a in &el.attrs {
            match a.name.as_str() {
                "name" => name = self.plain(a).map(|v| (v.trim().to_owned(), a.pos)),
                "value" => value = Some(a),
                "id" => self.note(a.pos, "id", "policy ids are not kept"),
                other => {
                    self.unsupported(a.pos, other, "not a set-variable attribute");
                    return self.left_out(el);
                }
            }
        }
        let Some((name, pos)) = name else {
            return self.unsupported(el.pos, "set-variable", "has no usable name; left out");
        };
        if !identifier(&name) {
            return self.unsupported(
                pos,
                "name",
                format!("\"{name}\" is not a gateway.yaml variable name (letters, digits, `_`, `-`); left out"),
            );
        }
        let Some(value) = value else {
            return self.unsupported(el.pos, "set-variable", "has no value; left out");
        };
        let Some(text) = self.value_text(&value.value, value.pos, "value", &mut reads) else {
            return;
        };
        let Some(place) = self.place_of(&reads, el) else {
            return;
        };
        if let Some(scope) = self.scopes.last_mut() {
            scope.push(name.clone());
        }
        let entries = vec![
            Entry::new("name", Node::str(name)),
            Entry::new("value", Node::str(text)),
        ];
        let entry = Entry::new("set-variable", Node::Map(entries)).comment(self.origin(el.pos));
        self.push_step(el.pos, place, entry);
    }

    /// `choose` -> `choose:` with structured conditions; left out whole (with everything in it)
    /// when a condition or branch is not converted.
    pub(crate) fn conditional(&mut self, el: &Element) {
        let mut reads = Vec::new();
        let mut branches: Vec<(Option<Node>, &Element)> = Vec::new();
        let mut failed = false;
        let last = el.children.len().saturating_sub(1);
        for (i, b) in el.children.iter().enumerate() {
            match b.name.as_str() {
                "when" => match b.attr("condition") {
                    Some(a) => match self.condition_node(a, &mut reads) {
                        Some(n) => branches.push((Some(n), b)),
                        None => failed = true,
                    },
                    None => {
                        self.unsupported(b.pos, "when", "has no condition");
                        failed = true;
                    }
                },
                "otherwise" if i == last => branches.push((None, b)),
                "otherwise" => {
                    self.unsupported(b.pos, "otherwise", "must be the last branch");
                    failed = true;
                }
                other => {
                    self.unsupported(b.pos, other, "not a choose branch");
                    failed = true;
                }
            }
        }
        if failed {
            let mut n = 0;
            for b in &el.children {
                for child in b.children.iter().filter(|c| c.name != "base") {
                    n += self.tally_of(child, false).len();
                }
            }
            if (self.section == Section::Inbound && choose_restricts(el)) || choose_refuses(el) {
                // left out, its checks would let through requests APIM refuses or limits
                return self.refuse(
                    el.pos,
                    "choose",
                    format!("not converted with the {n} statement(s) in its branches (APIM runs the branch whose condition holds, and running another one, or all, is not the same); it holds a statement that refuses or limits requests, so the routes refuse every request"),
                );
            }
            return self.unsupported(
                el.pos,
                "choose",
                format!("left out with the {n} statement(s) in its branches: APIM runs the branch whose condition holds, and running another one (or all) is not the same"),
            );
        }
        self.nested += 1;
        let mut items = Vec::new();
        let mut nested = Vec::new();
        let mut headers = Vec::new();
        for (cond, b) in branches {
            self.scopes.push(Vec::new());
            let start = self.list().len();
            let first = self.tally.len();
            self.statements(&b.children);
            let steps: Vec<Step> = self.list().drain(start..).collect();
            self.scopes.pop();
            nested.extend(first..self.tally.len());
            let mut list = Vec::new();
            for st in steps {
                if let Place::Claim(src) = &st.place {
                    reads.push(src.clone());
                }
                let Some(entry) = st.entry else { continue };
                if entry.key == "cors" {
                    self.unsupported(
                        st.pos,
                        "cors",
                        "cors is a policy-level statement, not allowed inside choose; left out",
                    );
                    self.mark(&st.tallies, Mark::Dropped);
                    continue;
                }
                headers.extend(st.headers);
                list.push(Item::new(Node::Map(vec![entry])));
            }
            if cond.is_none() && list.is_empty() {
                continue; // an empty otherwise does nothing
            }
            items.push(Item::new(Node::Map(match cond {
                Some(c) => vec![Entry::new("when", c), Entry::new("steps", Node::Seq(list))],
                None => vec![Entry::new("otherwise", Node::Seq(list))],
            })));
        }
        self.nested -= 1;
        let Some(place) = self.place_of(&reads, el) else {
            self.mark(&nested, Mark::Dropped);
            return;
        };
        if items.is_empty() {
            return self.emitted();
        }
        let entry = Entry::new("choose", Node::Seq(items)).comment(self.origin(el.pos));
        self.push_step_with(el.pos, place, entry, nested, headers);
    }

    /// A `when condition` as a gateway.yaml condition; reported when not convertible.
    fn condition_node(&mut self, a: &Attr, reads: &mut Vec<JwtSource>) -> Option<Node> {
        let Some(cond) = sources::condition(&a.value) else {
            self.unsupported(
                a.pos,
                "when condition",
                "this condition is not converted (see docs/import-apim.md for the shapes)",
            );
            return None;
        };
        match self.cond_node(&cond, a.pos, reads) {
            Ok(n) => Some(n),
            Err(why) => {
                self.unsupported(a.pos, "when condition", why);
                None
            }
        }
    }

    fn cond_node(
        &mut self,
        c: &Cond,
        pos: Pos,
        reads: &mut Vec<JwtSource>,
    ) -> Result<Node, String> {
        let one = |k: &str, v: Node| Node::Map(vec![Entry::new(k, v)]);
        let named = |k: &str, name: &str, op: &str, v: &str| {
            one(
                k,
                Node::Map(vec![
                    Entry::new("name", Node::str(name)),
                    Entry::new(op, Node::str(v)),
                ]),
            )
        };
        let outbound = self.section == Section::Outbound;
        let claim = |token: &JwtSource, reads: &mut Vec<JwtSource>| {
            if outbound {
                return Err("claim conditions are inbound only".to_owned());
            }
            reads.push(token.clone());
            Ok(())
        };
        Ok(match c {
            Cond::Method(m) if is_token(m) && m.to_ascii_uppercase() == *m => {
                one("method", Node::str(m.as_str()))
            }
            Cond::Method(m) => {
                return Err(format!(
                    "\"{m}\" is not an upper-case method: APIM's comparison never holds"
                ))
            }
            Cond::HeaderPresent(h) | Cond::Header(h, _, _) if !is_token(h) => {
                return Err(format!("\"{h}\" is not a header name"))
            }
            Cond::HeaderPresent(h) => one("header-present", Node::str(h.as_str())),
            Cond::Header(h, v, ignore) => {
                let mut entries = vec![
                    Entry::new("name", Node::str(h.as_str())),
                    Entry::new("equals", Node::str(v.as_str())),
                ];
                if *ignore {
                    entries.push(Entry::new("ignore-case", Node::Bool(true)));
                }
                one("header", Node::Map(entries))
            }
            Cond::QueryPresent(q) => one("query-present", Node::str(q.as_str())),
            Cond::Query(q, v) => named("query", q, "equals", v),
            Cond::ClaimEquals(t, n, v) => {
                claim(t, reads)?;
                named("claim", n, "equals", v)
            }
            Cond::ClaimContains(t, n, v) => {
                claim(t, reads)?;
                named("claim", n, "contains", v)
            }
            Cond::ClaimPresent(t, n) => {
                claim(t, reads)?;
                one("claim-present", Node::str(n.as_str()))
            }
            Cond::Variable(v, value) => {
                if !self.scopes.iter().any(|s| s.contains(v)) {
                    return Err(format!(
                        "variable \"{v}\" is not set by a converted set-variable before it"
                    ));
                }
                named("variable", v, "equals", value)
            }
            Cond::PathPrefix(p) if p.starts_with('/') => {
                self.note(
                    pos,
                    "when condition",
                    format!("Url.Path.StartsWith(\"{p}\") becomes `path-prefix`, which matches whole segments of the gateway's canonical path (APIM compares characters, so it would also match {p}x)"),
                );
                let p = if p.len() > 1 {
                    p.trim_end_matches('/')
                } else {
                    p
                };
                one("path-prefix", Node::str(p))
            }
            Cond::PathPrefix(p) => return Err(format!("\"{p}\" does not start with `/`")),
            Cond::Status(list) if !outbound => {
                let _ = list;
                return Err("context.Response is only known in <outbound>".to_owned());
            }
            Cond::Status(list) if list.is_empty() => {
                return Err("the status comparison never holds".to_owned())
            }
            Cond::Status(list) => one(
                "status",
                Node::Seq(
                    list.iter()
                        .map(|s| Item::new(Node::Int(i64::from(*s))))
                        .collect(),
                ),
            ),
            Cond::Any(items) if items.iter().all(|i| matches!(i, Cond::Status(_))) => {
                let mut all: Vec<u16> = items
                    .iter()
                    .flat_map(|i| match i {
                        Cond::Status(l) => l.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                all.sort_unstable();
                all.dedup();
                self.cond_node(&Cond::Status(all), pos, reads)?
            }
            Cond::All(items) | Cond::Any(items) => {
                let key = if matches!(c, Cond::All(_)) {
                    "all"
                } else {
                    "any"
                };
                let mut out = Vec::new();
                for i in items {
                    out.push(Item::new(self.cond_node(i, pos, reads)?));
                }
                one(key, Node::Seq(out))
            }
            Cond::Not(inner) => one("not", self.cond_node(inner, pos, reads)?),
        })
    }

    /// `set-header` statements on a header that `forward-claims` fills: the gateway lets only the
    /// verified claim set it (a delete is what forward-claims does anyway).
    pub(crate) fn check_forwarded_headers(&mut self) {
        let forwarded: Vec<(String, Pos)> = self
            .policies
            .iter()
            .flat_map(|p| p.forward.iter().map(|(h, _, pos)| (normalised(h), *pos)))
            .collect();
        if forwarded.is_empty() {
            return;
        }
        for i in 0..self.steps.len() {
            let headers = self.steps[i].headers.clone();
            for h in headers {
                let Some((_, at)) = forwarded.iter().find(|(f, _)| *f == normalised(&h.name))
                else {
                    continue;
                };
                if h.delete {
                    self.diags.push(crate::diag::Diagnostic::note(
                        h.pos,
                        "set-header",
                        format!(
                            "left out: forward-claims (line {}) removes the client's {} itself",
                            at.line, h.name
                        ),
                    ));
                } else {
                    self.diags.push(crate::diag::Diagnostic::unsupported(
                        h.pos,
                        "set-header",
                        format!("left out: {} carries a verified claim (forward-claims, line {}), which nothing else may set in the gateway", h.name, at.line),
                    ));
                    self.mark(&[h.tally], Mark::Dropped);
                }
                let step = &mut self.steps[i];
                if step.entry.as_ref().is_some_and(|e| e.key == "set-header") {
                    step.place = Place::Dropped;
                } else if let Some(e) = step.entry.as_mut() {
                    remove_set_header(&mut e.value, &h.name);
                }
            }
        }
    }
}

/// Remove every `set-header` of `name` nested in a statement's value.
fn remove_set_header(node: &mut Node, name: &str) {
    match node {
        Node::Seq(items) => {
            items.retain(|i| !is_set_header_of(&i.value, name));
            items
                .iter_mut()
                .for_each(|i| remove_set_header(&mut i.value, name));
        }
        Node::Map(entries) => entries
            .iter_mut()
            .for_each(|e| remove_set_header(&mut e.value, name)),
        _ => {}
    }
}

fn is_set_header_of(node: &Node, name: &str) -> bool {
    let Node::Map(entries) = node else {
        return false;
    };
    let Some(Entry {
        key,
        value: Node::Map(fields),
        ..
    }) = entries.first()
    else {
        return false;
    };
    key == "set-header"
        && fields.iter().any(|f| {
            f.key == "name" && matches!(&f.value, Node::Str(n) if n.eq_ignore_ascii_case(name))
        })
}

/// `[A-Za-z_][A-Za-z0-9_-]*`: URL-template parameter and variable names.
pub(crate) fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A query parameter or claim name usable inside `${...}` (no `}`, `|`, `$`, controls).
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['}', '|', '$', '{'])
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The `{name}` parameters of a rewrite-uri template (not `{{named values}}` or `${...}`).
fn template_params(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = t.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            let prev = i.checked_sub(1).map(|p| bytes[p]);
            if bytes.get(i + 1) == Some(&b'{') {
                i = t[i..].find("}}").map_or(bytes.len(), |e| i + e + 2);
                continue;
            }
            if prev != Some(b'$') {
                if let Some(end) = t[i..].find('}') {
                    let name = t[i + 1..i + end].trim_start_matches('*');
                    if identifier(name) {
                        out.push(name.to_owned());
                    }
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parameters() {
        assert_eq!(
            template_params("/v2/{id}/x/{*rest}?a={{nv}}&b=${query:q}"),
            ["id", "rest"]
        );
    }
}
