//! Two `validate-jwt` of one composed policy (the API's checking the audience, the operation's
//! adding a required claim) merged into one, when that one decides every token exactly as APIM's
//! two do.
//!
//! Why only then: a gateway policy validates one token; APIM runs both checks on it and the token
//! must pass each. Both must read the same token in the same way (token source, keys, switches,
//! answer), so that only the claim rules differ, and those compose exactly: `iss` holds one value,
//! so "in both issuer lists" is the intersection (none in common: APIM refuses every token, which
//! the merge cannot express, so the import fails closed as before); `aud` may hold several values,
//! so "one of them in each list" is one list only when one list holds the other (the smaller one
//! then); required claims are every rule of both. Anything else keeps the fail-closed handling of
//! [`crate::convert::Converter::refused`].

use crate::convert::PolicyOut;
use crate::fields::Fields;
use crate::yaml::{Entry, Item, Node};

/// The claim rules that compose; every other key must be the same in both checks.
const COMPOSED: &[&str] = &["audiences", "issuers", "required-claims"];

/// The fields of one policy deciding as `first` and then `second` do; `Err` with the reason when
/// no one policy does.
pub(crate) fn merged(first: &PolicyOut, second: &PolicyOut) -> Result<Fields, String> {
    if first.element != "validate-jwt" || second.element != "validate-jwt" {
        return Err("only two validate-jwt are merged".to_owned());
    }
    if first.output_var.is_some()
        && second.output_var.is_some()
        && first.output_var != second.output_var
    {
        return Err("their output-token-variable-name differ".to_owned());
    }
    let rest = |p: &PolicyOut| -> Vec<(String, Node)> {
        p.fields
            .entries()
            .into_iter()
            .filter(|e| !COMPOSED.contains(&e.key.as_str()))
            .map(|e| (e.key, bare(&e.value)))
            .collect()
    };
    let (a, b) = (rest(first), rest(second));
    let value =
        |l: &[(String, Node)], k: &str| l.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let mut differ: Vec<&str> = Vec::new();
    for (k, _) in a.iter().chain(&b) {
        if value(&a, k) != value(&b, k) && !differ.contains(&k.as_str()) {
            differ.push(k);
        }
    }
    if !differ.is_empty() {
        return Err(format!(
            "they do not read the token in the same way ({} differ)",
            differ.join(", ")
        ));
    }
    let mut out = Fields::default();
    for e in first.fields.entries() {
        if !COMPOSED.contains(&e.key.as_str()) {
            out.set_entry(e);
        }
    }
    let issuers = match (list(first, "issuers"), list(second, "issuers")) {
        (Some(x), Some(y)) => {
            let both: Vec<Item> = x.into_iter().filter(|i| y.contains(i)).collect();
            if both.is_empty() {
                return Err(
                    "no issuer is in both issuers lists (APIM refuses every token)".to_owned(),
                );
            }
            Some(both)
        }
        (x, y) => x.or(y),
    };
    let audiences = match (list(first, "audiences"), list(second, "audiences")) {
        (Some(x), Some(y)) if x.iter().all(|i| y.contains(i)) => Some(x),
        (Some(x), Some(y)) if y.iter().all(|i| x.contains(i)) => Some(y),
        (Some(_), Some(_)) => {
            return Err("neither audiences list holds the other (a token listing audiences of both passes APIM's two checks, which no one list expresses)".to_owned())
        }
        (x, y) => x.or(y),
    };
    let origins = |key: &str| -> String {
        let comments: Vec<String> = [first, second]
            .iter()
            .filter_map(|p| p.fields.get(key))
            .flat_map(|e| e.comments.clone())
            .collect();
        comments.join("; ")
    };
    for (key, items) in [("audiences", audiences), ("issuers", issuers)] {
        if let Some(items) = items {
            out.set_entry(Entry::new(key, Node::Seq(items)).comment(origins(key)));
        }
    }
    let claims: Vec<Item> = [first, second]
        .iter()
        .filter_map(|p| p.fields.get("required-claims"))
        .flat_map(|e| match &e.value {
            Node::Seq(items) => items.clone(),
            _ => Vec::new(),
        })
        .collect();
    if !claims.is_empty() {
        out.set_entry(Entry::new("required-claims", Node::Seq(claims)));
    }
    Ok(out)
}

/// The values of a list key, comments aside.
fn list(p: &PolicyOut, key: &str) -> Option<Vec<Item>> {
    match &p.fields.get(key)?.value {
        Node::Seq(items) => Some(items.iter().map(|i| Item::new(bare(&i.value))).collect()),
        _ => None,
    }
}

/// A node without its comments (two keys written from different lines compare equal).
fn bare(node: &Node) -> Node {
    match node {
        Node::Map(entries) => Node::Map(
            entries
                .iter()
                .map(|e| Entry::new(e.key.as_str(), bare(&e.value)))
                .collect(),
        ),
        Node::Seq(items) => Node::Seq(items.iter().map(|i| Item::new(bare(&i.value))).collect()),
        other => other.clone(),
    }
}
