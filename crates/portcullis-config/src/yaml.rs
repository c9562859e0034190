//! A position-carrying YAML tree.
//!
//! Why not derive `Deserialize` on config structs: serde stops at the first problem, and `check` must
//! report every problem at once. So the file is read once into this tree (every node keeps its
//! `line:col`, duplicate keys are kept so they can be reported), and the checker walks it.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

/// 1-based line and column of a node (0:0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_location(loc: serde_saphyr::Location) -> Pos {
        Pos {
            line: usize::try_from(loc.line()).unwrap_or(0),
            col: usize::try_from(loc.column()).unwrap_or(0),
        }
    }
}

/// One YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// A string; `substituted` when a `{{name}}` placeholder was replaced in it, which lets a
    /// placeholder stand for a number or a boolean.
    Str {
        value: String,
        substituted: bool,
    },
    Seq(Vec<Node>),
    /// A string whose named value could not be resolved (already reported; readers stay quiet).
    Unresolved,
    /// Entries in file order, duplicates kept.
    Map(Vec<(Node, Node)>),
}

impl Kind {
    /// What the node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing (null)",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str { .. } => "a string",
            Kind::Seq(_) => "a list",
            Kind::Unresolved => "an unresolved named value",
            Kind::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// True when a named value in this subtree could not be resolved (its error is already
    /// reported, so conclusions drawn from the subtree would mislead).
    pub fn has_unresolved(&self) -> bool {
        match &self.kind {
            Kind::Unresolved => true,
            Kind::Seq(items) => items.iter().any(Node::has_unresolved),
            Kind::Map(entries) => entries.iter().any(|(_, v)| v.has_unresolved()),
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Kind>::deserialize(d)?;
        Ok(Node {
            pos: Pos::from_location(spanned.referenced),
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        i128::try_from(v)
            .map(Kind::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str {
            value: v.to_owned(),
            substituted: false,
        })
    }

    fn visit_string<E>(self, value: String) -> Result<Kind, E> {
        Ok(Kind::Str {
            value,
            substituted: false,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Kind::Map(entries))
    }
}

/// A YAML syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses YAML text into a tree. An empty document is `Null`.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    // YAML 1.2 core booleans only: `n:` (an RSA modulus) and `no`/`on` stay strings.
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
    };
    match serde_saphyr::from_str_with_options::<Option<Node>>(text, options) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => Ok(Node {
            pos: Pos { line: 1, col: 1 },
            kind: Kind::Null,
        }),
        Err(err) => {
            let pos = err.location().map(Pos::from_location).unwrap_or_default();
            Err(SyntaxError {
                pos,
                message: plain_message(&err),
            })
        }
    }
}

/// The error's message without saphyr's source snippet or its own "at line X" suffix (the
/// diagnostic carries the position).
fn plain_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn positions_and_kinds() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        let Kind::Map(entries) = n.kind else { panic!() };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        assert_eq!(entries[0].1.kind, Kind::Int(1));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
        assert_eq!(items[1].pos.line, 4);
    }

    #[test]
    fn duplicates_are_kept() {
        let n = parse("a: 1\na: 2\n").unwrap();
        let Kind::Map(entries) = n.kind else { panic!() };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 2 });
        assert!(!e.message.contains("line"), "{e:?}");
        let e = parse("a:\n  b: 1\n c: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let n = parse("n: x\ny: no\nz: true\n").unwrap();
        let Kind::Map(entries) = n.kind else { panic!() };
        assert!(matches!(&entries[0].0.kind, Kind::Str { value, .. } if value == "n"));
        assert!(matches!(&entries[1].1.kind, Kind::Str { value, .. } if value == "no"));
        assert_eq!(entries[2].1.kind, Kind::Bool(true));
    }

    #[test]
    fn empty_is_null() {
        assert_eq!(parse("").unwrap().kind, Kind::Null);
        assert_eq!(parse("# only a comment\n").unwrap().kind, Kind::Null);
    }
}
