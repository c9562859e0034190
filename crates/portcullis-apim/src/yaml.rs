//! A small YAML writer for the converted gateway.yaml: block style, every string double-quoted and
//! escaped, comments attached to entries (`# from policy.xml:12`).
//!
//! Why not serde_yaml: the output must carry comments pointing back to the XML, and quoting must be
//! uniform so that no value (`on`, `no`, `1e3`, `{{name}}`, `*`) is ever re-typed by a YAML reader.

use std::fmt::Write as _;

/// A YAML value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A string, always written double-quoted.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A mapping in insertion order.
    Map(Vec<Entry>),
    /// A sequence.
    Seq(Vec<Item>),
}

/// A mapping entry with optional comment lines written before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Node,
    /// Comment lines (without `#`).
    pub comments: Vec<String>,
}

/// A sequence item with optional comment lines written before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Value.
    pub value: Node,
    /// Comment lines (without `#`).
    pub comments: Vec<String>,
}

impl Node {
    /// A string node.
    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    /// A sequence of strings.
    pub fn strings<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Node {
        Node::Seq(
            values
                .into_iter()
                .map(|v| Item::new(Node::str(v)))
                .collect(),
        )
    }
}

impl Entry {
    /// An entry without comments.
    pub fn new(key: impl Into<String>, value: Node) -> Entry {
        Entry {
            key: key.into(),
            value,
            comments: Vec::new(),
        }
    }

    /// Add a comment line before the entry.
    pub fn comment(mut self, text: impl Into<String>) -> Entry {
        self.comments.push(text.into());
        self
    }
}

impl Item {
    /// An item without comments.
    pub fn new(value: Node) -> Item {
        Item {
            value,
            comments: Vec::new(),
        }
    }

    /// Add a comment line before the item.
    pub fn comment(mut self, text: impl Into<String>) -> Item {
        self.comments.push(text.into());
        self
    }
}

/// Write a top-level mapping as a YAML document.
pub fn write_document(entries: &[Entry]) -> String {
    let mut out = String::new();
    write_map(&mut out, entries, 0);
    out
}

fn write_comments(out: &mut String, comments: &[String], indent: usize) {
    for c in comments {
        for line in c.lines() {
            let _ = writeln!(out, "{:indent$}# {line}", "");
        }
    }
}

fn write_map(out: &mut String, entries: &[Entry], indent: usize) {
    for e in entries {
        write_comments(out, &e.comments, indent);
        let k = key(&e.key);
        if needs_explicit_key(&k) {
            let _ = write!(out, "{:indent$}? {k}\n{:indent$}:", "", "");
        } else {
            let _ = write!(out, "{:indent$}{k}:", "");
        }
        write_value(out, &e.value, indent);
    }
}

/// YAML limits an implicit key to 1024 characters; a longer one (a long header name from the XML)
/// is written as an explicit `? key` / `: value` pair, which has no limit.
fn needs_explicit_key(written: &str) -> bool {
    written.chars().count() > 1000
}

fn write_seq(out: &mut String, items: &[Item], indent: usize) {
    for item in items {
        write_comments(out, &item.comments, indent);
        match &item.value {
            Node::Map(entries)
                if entries
                    .first()
                    .is_some_and(|e| needs_explicit_key(&key(&e.key))) =>
            {
                let _ = writeln!(out, "{:indent$}-", "");
                write_map(out, entries, indent + 2);
            }
            Node::Map(entries) if !entries.is_empty() => {
                // the first entry on the dash line, the rest aligned under it
                let (first, rest) = entries.split_at(1);
                for e in first {
                    write_comments(out, &e.comments, indent);
                    let _ = write!(out, "{:indent$}- {}:", "", key(&e.key));
                    write_value(out, &e.value, indent + 2);
                }
                write_map(out, rest, indent + 2);
            }
            other => {
                let _ = write!(out, "{:indent$}-", "");
                write_value(out, other, indent);
            }
        }
    }
}

/// Write a value after `key:` or `-` (scalars inline, collections on the following lines).
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Str(s) => {
            let _ = writeln!(out, " {}", quote(s));
        }
        Node::Int(i) => {
            let _ = writeln!(out, " {i}");
        }
        Node::Bool(b) => {
            let _ = writeln!(out, " {b}");
        }
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Node::Seq(items) => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
    }
}

/// Keys made of `[A-Za-z0-9_-]` are written plain (gateway.yaml's own keys); others are quoted.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_owned()
    } else {
        quote(k)
    }
}

/// A double-quoted YAML scalar with `\`, `"` and every control character escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if c.is_control() || c == '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_everything_yaml_could_misread() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(quote("{{name}}"), r#""{{name}}""#);
    }

    #[test]
    fn keys_past_the_implicit_key_limit_are_explicit() {
        let long = "X".repeat(1200);
        let entry = || Entry::new(long.as_str(), Node::str("v"));
        let doc = write_document(&[
            entry(),
            Entry::new("list", Node::Seq(vec![Item::new(Node::Map(vec![entry()]))])),
        ]);
        assert_eq!(
            doc,
            format!("? {long}\n: \"v\"\nlist:\n  -\n    ? {long}\n    : \"v\"\n")
        );
    }

    #[test]
    fn nested_document_layout() {
        let doc = write_document(&[
            Entry::new("a", Node::Int(1)).comment("from x.xml:1"),
            Entry::new(
                "list",
                Node::Seq(vec![
                    Item::new(Node::Map(vec![
                        Entry::new("name", Node::str("n")),
                        Entry::new("values", Node::strings(["v"])),
                    ]))
                    .comment("from x.xml:2"),
                    Item::new(Node::Bool(true)),
                ]),
            ),
            Entry::new("X-Header", Node::Map(vec![])),
            Entry::new("on", Node::Seq(vec![])),
        ]);
        assert_eq!(
            doc,
            "# from x.xml:1\na: 1\nlist:\n  # from x.xml:2\n  - name: \"n\"\n    values:\n      - \"v\"\n  - true\nX-Header: {}\n\"on\": []\n"
        );
    }
}
