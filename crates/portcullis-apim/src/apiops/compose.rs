//! The effective policy of an operation: the scopes global -> product -> API -> operation composed
//! as APIM composes them, into one `<policies>` document the single-document converter reads.
//!
//! The rules (APIM's):
//! - In each section (`inbound`, `backend`, `outbound`, `on-error`) of a scope's policy, `<base />`
//!   stands for the same section of the scope above, composed the same way; the statements before
//!   it run first, those after it last.
//! - A section **without** `<base />` does not run the statements of the scopes above in that
//!   section at all (it replaces them). A policy document without a section is treated the same
//!   way (an empty section, no `<base />`), and reported.
//! - A scope without a policy file inherits everything (as if each section were only `<base />`).
//! - A folder without a global `policy.xml` gets APIM's default global policy
//!   (`<backend><forward-request /></backend>`). A composed `<backend>` without `<forward-request />`
//!   (a `<backend>` without `<base />` and without it) makes APIM answer without calling the
//!   backend; the gateway always forwards, so that is reported.
//! - `<include-fragment fragment-id="x" />` is replaced by the statements of
//!   `policy fragments/x/policy.xml`, wherever it stands (also inside `choose` branches).
//!
//! Every element keeps the position of the file it was written in, so the converter's report names
//! the right file and line.

use std::collections::BTreeMap;

use crate::diag::Diagnostic;
use crate::xml::{Element, Pos};

use super::folder::Policy;

/// The four sections, in APIM's order.
pub(crate) const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on-error"];

/// How deep fragments may include fragments before the inclusion is refused (a cycle).
const MAX_FRAGMENT_DEPTH: usize = 8;

/// One scope of the chain: its name in the report and its policy (None: no policy file).
pub(crate) struct Level<'a> {
    pub scope: &'a str,
    pub policy: Option<&'a Policy>,
}

/// What composing produced: the document, and what was reported about it.
pub(crate) struct Composed {
    /// `<policies>` with the four sections (empty sections left out).
    pub document: Element,
    /// Notes (a section without `<base />` hiding statements) and problems (a fragment that does
    /// not exist, a policy that is not `<policies>`).
    pub diags: Vec<Diagnostic>,
    /// Statements left out by composing itself (an unknown fragment), for the statement count.
    pub dropped: Vec<(Pos, String)>,
}

/// Compose `levels` (outermost first).
pub(crate) fn compose(levels: &[Level<'_>], fragments: &BTreeMap<String, Policy>) -> Composed {
    let mut out = Composed {
        document: Element {
            name: "policies".to_owned(),
            ..Element::default()
        },
        diags: Vec::new(),
        dropped: Vec::new(),
    };
    for section in SECTIONS {
        // A folder without a global policy.xml runs APIM's default global policy, whose only
        // statement is `<backend><forward-request /></backend>`.
        let default_global = levels
            .first()
            .is_some_and(|l| l.scope == "global" && l.policy.is_none());
        let mut acc: Vec<Element> = if section == "backend" && default_global {
            vec![Element {
                name: "forward-request".to_owned(),
                ..Element::default()
            }]
        } else {
            Vec::new()
        };
        // where the statements of the section were last replaced (no <base />)
        let mut replaced: Option<Pos> = None;
        for level in levels {
            let Some(policy) = level.policy else {
                continue;
            };
            let Some(root) = policy.roots.iter().find(|r| r.name == "policies") else {
                if section == "inbound" {
                    let pos = policy.roots.first().map(|r| r.pos).unwrap_or(Pos {
                        line: 1,
                        col: 1,
                        file: policy.file,
                    });
                    out.diags.push(Diagnostic::unsupported(
                        pos,
                        "policy",
                        format!(
                            "the {} policy is not a <policies> document; it is left out",
                            level.scope
                        ),
                    ));
                }
                acc.clear();
                continue;
            };
            let own = root.children.iter().find(|s| s.name == section);
            let hidden = count(&acc);
            let Some(own) = own else {
                replaced = Some(root.pos);
                if hidden > 0 {
                    out.diags.push(Diagnostic::note(
                        root.pos,
                        section,
                        format!("the {} policy has no <{section}>: the {hidden} statement(s) of the scopes above in <{section}> do not run, as in APIM", level.scope),
                    ));
                }
                acc.clear();
                continue;
            };
            let mut next = Vec::new();
            let mut based = false;
            for el in &own.children {
                if el.name == "base" {
                    based = true;
                    next.extend(acc.iter().cloned());
                } else {
                    next.push(el.clone());
                }
            }
            if !based {
                replaced = Some(own.pos);
            }
            if !based && hidden > 0 {
                out.diags.push(Diagnostic::note(
                    own.pos,
                    section,
                    format!("no <base />: the {hidden} statement(s) of the scopes above in <{section}> do not run, as in APIM"),
                ));
            }
            acc = next;
        }
        let children = inline(&acc, fragments, 0, &mut out);
        if section == "backend" && !children.iter().any(|c| contains(c, "forward-request")) {
            if let Some(pos) = replaced {
                out.diags.push(Diagnostic::unsupported(
                    pos,
                    "backend",
                    "the composed <backend> has no <forward-request />: APIM does not call the backend (it answers 200 with an empty body unless a policy answers); the gateway forwards to the route's upstream",
                ));
            }
        }
        if !children.is_empty() {
            out.document.children.push(Element {
                name: section.to_owned(),
                children,
                ..Element::default()
            });
        }
    }
    out
}

/// Statements of a list, those nested in `choose` branches included.
fn count(els: &[Element]) -> usize {
    els.iter()
        .map(|e| {
            1 + if e.name == "choose" {
                e.children.iter().map(|b| count(&b.children)).sum()
            } else {
                0
            }
        })
        .sum()
}

/// `els` with every `<include-fragment>` replaced by its fragment's statements.
fn inline(
    els: &[Element],
    fragments: &BTreeMap<String, Policy>,
    depth: usize,
    out: &mut Composed,
) -> Vec<Element> {
    let mut result = Vec::new();
    for el in els {
        if el.name != "include-fragment" {
            let mut el = el.clone();
            if el.name == "choose" {
                for branch in &mut el.children {
                    branch.children = inline(&branch.children, fragments, depth, out);
                }
            }
            result.push(el);
            continue;
        }
        let id = el.attr("fragment-id").map(|a| a.value.as_str());
        let fragment = id.and_then(|id| fragments.get(id));
        let body = fragment.and_then(|f| f.roots.iter().find(|r| r.name == "fragment"));
        match (id, body) {
            (Some(_), Some(body)) if depth < MAX_FRAGMENT_DEPTH => {
                result.extend(inline(&body.children, fragments, depth + 1, out));
            }
            _ => {
                let reason = match id {
                    None => "has no fragment-id".to_owned(),
                    Some(id) if fragment.is_none() => {
                        format!("fragment \"{id}\" is not in policy fragments/ (left out)")
                    }
                    Some(id) if body.is_none() => {
                        format!("policy fragments/{id}/policy.xml is not a <fragment> (left out)")
                    }
                    Some(id) => format!("fragment \"{id}\" includes fragments more than {MAX_FRAGMENT_DEPTH} deep (a cycle?); left out"),
                };
                out.diags
                    .push(Diagnostic::unsupported(el.pos, "include-fragment", reason));
                out.dropped.push((el.pos, el.name.clone()));
            }
        }
    }
    result
}

/// Whether `el` or anything in it is called `name`.
pub(crate) fn contains(el: &Element, name: &str) -> bool {
    el.name == name || el.children.iter().any(|c| contains(c, name))
}

/// `<forward-request timeout="N">` in the composed `<backend>`: the attribute is taken out (the
/// route's `timeout` does it) and N returned; other attributes stay (and are reported by the
/// converter).
pub(crate) fn take_forward_timeout(document: &mut Element) -> Option<u64> {
    let backend = document.children.iter_mut().find(|s| s.name == "backend")?;
    let forward = backend
        .children
        .iter_mut()
        .find(|c| c.name == "forward-request")?;
    let at = forward.attrs.iter().position(|a| a.name == "timeout")?;
    let seconds = forward.attrs[at]
        .value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)?;
    forward.attrs.remove(at);
    Some(seconds)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::xml;

    fn policy(text: &str, file: u32) -> Policy {
        Policy {
            file,
            roots: xml::parse_in(text, file).unwrap(),
        }
    }

    fn names(doc: &Element, section: &str) -> Vec<String> {
        doc.children
            .iter()
            .find(|s| s.name == section)
            .map(|s| {
                s.children
                    .iter()
                    .map(|c| c.attr("name").map_or(c.name.clone(), |a| a.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn base_placement_and_absence() {
        let global = policy(
            "<policies><inbound><set-header name=\"g\"/></inbound><outbound><set-header name=\"go\"/></outbound></policies>",
            0,
        );
        let api = policy(
            "<policies><inbound><set-header name=\"a\"/><base/></inbound><outbound><set-header name=\"ao\"/></outbound></policies>",
            1,
        );
        let op = policy(
            "<policies><inbound><base/><set-header name=\"o\"/></inbound></policies>",
            2,
        );
        let levels = [
            Level {
                scope: "global",
                policy: Some(&global),
            },
            Level {
                scope: "product",
                policy: None,
            },
            Level {
                scope: "API",
                policy: Some(&api),
            },
            Level {
                scope: "operation",
                policy: Some(&op),
            },
        ];
        let c = compose(&levels, &BTreeMap::new());
        assert_eq!(names(&c.document, "inbound"), ["a", "g", "o"]);
        // the operation has no <outbound>: nothing of the API's or global's runs
        assert!(names(&c.document, "outbound").is_empty());
        // the API's <outbound> has no <base/>: reported; no <backend> anywhere: reported
        assert_eq!(c.diags.len(), 3, "{:?}", c.diags);
        assert!(c.diags[0].reason.contains("no <forward-request />"));
        assert!(c.diags[1].reason.contains("no <base />"));
        assert_eq!(c.diags[1].pos.file, 1);
    }

    #[test]
    fn without_a_global_policy_apim_default_forwards() {
        let api = policy(
            "<policies><inbound><base/></inbound><backend><base/></backend></policies>",
            0,
        );
        let levels = [
            Level {
                scope: "global",
                policy: None,
            },
            Level {
                scope: "API",
                policy: Some(&api),
            },
        ];
        let c = compose(&levels, &BTreeMap::new());
        assert_eq!(names(&c.document, "backend"), ["forward-request"]);
        assert!(c.diags.is_empty(), "{:?}", c.diags);
        // a <backend> without <base /> and without forward-request: APIM never calls the backend
        let op = policy(
            "<policies><backend><set-header name=\"x\"/></backend></policies>",
            1,
        );
        let levels = [
            Level {
                scope: "global",
                policy: None,
            },
            Level {
                scope: "operation",
                policy: Some(&op),
            },
        ];
        let c = compose(&levels, &BTreeMap::new());
        assert!(c
            .diags
            .iter()
            .any(|d| d.reason.contains("no <forward-request />") && d.pos.file == 1));
    }

    #[test]
    fn fragments_are_inlined_and_unknown_ones_reported() {
        let api = policy(
            "<policies><inbound><include-fragment fragment-id=\"f\"/><choose><when condition=\"x\"><include-fragment fragment-id=\"nope\"/></when></choose></inbound></policies>",
            0,
        );
        let mut fragments = BTreeMap::new();
        fragments.insert(
            "f".to_owned(),
            policy(
                "<fragment><set-header name=\"f1\"/><set-header name=\"f2\"/></fragment>",
                1,
            ),
        );
        let levels = [Level {
            scope: "API",
            policy: Some(&api),
        }];
        let c = compose(&levels, &fragments);
        assert_eq!(names(&c.document, "inbound"), ["f1", "f2", "choose"]);
        assert_eq!(c.dropped.len(), 1);
        assert!(c.diags[0].reason.contains("\"nope\""));
    }
}
