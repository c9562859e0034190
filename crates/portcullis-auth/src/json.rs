//! Strict JSON for token headers and claims, and [`Claims`]: the payload parsed once into a flat
//! tape over its own text.
//!
//! Why strict: `serde_json` silently keeps the last of two equal keys, so `{"sub":"a","sub":"b"}`
//! would mean different things to us and to another parser that keeps the first. A token whose JSON
//! two parsers could read differently is rejected: duplicate keys are refused at every depth.
//! Nesting depth stays bounded by `serde_json`'s recursion limit (128), which turns into an error,
//! never a stack overflow.
//!
//! Why a tape and not a `serde_json::Map`: building a `Map<String, Value>` costs about 30
//! allocations for an ordinary access token and was more than half of the work outside the
//! signature check. The tape keeps the payload text and records each value as one node (strings
//! as spans into the text); a string with escapes is unescaped once into a side pool. A token costs
//! two allocations (text and tape), three when a string has escapes. Claim rules read values in
//! place; [`Claim::to_value`] builds a `serde_json::Value` only where one is wanted.
//!
//! The tape is written by a `serde_json` visitor, so the grammar, number parsing and UTF-8 checks
//! are serde_json's; only the representation is ours.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Objects with more members than this have their keys checked for duplicates by sorting, not by
/// comparing each new key with every earlier one (bounded work for a huge signed payload).
const LINEAR_DUPLICATE_CHECK: usize = 32;

/// A span of text: in the payload, or (for a string that had escapes) in the pool.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
    pooled: bool,
}

/// The length and first seven bytes of a key, packed: keys are compared by tag first (one integer
/// comparison instead of a `memcmp` call), and for keys under eight bytes equal tags mean equal keys.
pub(crate) fn key_tag(key: &[u8]) -> u64 {
    let len = key.len().min(0xff) as u64;
    key.iter()
        .take(7)
        .enumerate()
        .fold(len << 56, |tag, (i, b)| tag | u64::from(*b) << (8 * i))
}

/// Whether a key with tag `tag` whose bytes are `have` is `want` (whose tag is `want_tag`).
pub(crate) fn same_key(tag: u64, have: &[u8], want_tag: u64, want: &[u8]) -> bool {
    tag == want_tag && (want.len() < 8 || have == want)
}

/// The index of the first node after the value at `index` (containers record it; a scalar is one
/// node).
fn end_of(nodes: &[Node], index: usize) -> usize {
    match nodes.get(index) {
        Some(Node::Array { end, .. } | Node::Object { end, .. }) => *end as usize,
        _ => index + 1,
    }
}

/// One value of the tape. Containers are followed by their contents; `end` is the index of the
/// first node after them, so a reader can step over a whole subtree.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(Span),
    /// An object member's name, with its [`key_tag`].
    Key(Span, u64),
    /// `len` elements follow.
    Array {
        len: u32,
        end: u32,
    },
    /// `len` members follow, each a `Key` node and then the value's nodes.
    Object {
        len: u32,
        end: u32,
    },
}

/// A token's claims: a JSON object read with duplicate keys refused at every depth.
///
/// Look claims up with [`Claims::get`] (a top-level name) or [`Claims::lookup`] (verbatim name,
/// else a dotted path); values are [`Claim`]s read in place.
#[derive(Clone)]
pub struct Claims {
    text: String,
    pool: String,
    nodes: Vec<Node>,
    /// The top-level keys as (tag, key node index): a claim lookup scans these integers, not the
    /// tape (several lookups per request: exp, nbf, iat, iss, aud, scp, ...).
    top: Vec<(u64, u32)>,
}

impl Claims {
    /// Parse a JSON object. Duplicate keys (at any depth), trailing bytes, a non-object, nesting
    /// deeper than 128 or input over 4 GiB: an error.
    pub fn parse(text: String) -> Result<Claims, serde_json::Error> {
        if u32::try_from(text.len()).is_err() {
            return Err(de::Error::custom("claims too large"));
        }
        let mut builder = Builder::new(text.as_bytes(), text.len() / 16 + 8);
        let mut de = serde_json::Deserializer::from_str(&text);
        de.deserialize_map(ValueVisitor(&mut builder))?;
        de.end()?;
        let members = builder.object_len(0);
        let mut top = Vec::with_capacity(members);
        top.extend(builder.keys(0, members));
        let Builder { pool, nodes, .. } = builder;
        Ok(Claims {
            text,
            pool,
            nodes,
            top,
        })
    }

    /// The whole object as a [`Claim`].
    pub fn root(&self) -> Claim<'_> {
        Claim {
            claims: self,
            index: 0,
        }
    }

    /// A top-level claim by exact name.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        let want = name.as_bytes();
        let want_tag = key_tag(want);
        // Integers first; the key's bytes are only read on an equal tag.
        let found = self.top.iter().find(|&&(tag, key)| {
            tag == want_tag
                && match self.nodes.get(key as usize) {
                    Some(Node::Key(span, _)) => {
                        same_key(tag, self.span(*span).as_bytes(), want_tag, want)
                    }
                    _ => false,
                }
        })?;
        Some(Claim {
            claims: self,
            index: found.1 + 1,
        })
    }

    /// A claim by verbatim name first, then as a dotted path (`realm_access.roles`). A name that
    /// exists verbatim, such as `http://schemas.microsoft.com/ws/2008/06/identity/claims/role`,
    /// wins over path splitting.
    pub fn lookup(&self, name: &str) -> Option<Claim<'_>> {
        if let Some(v) = self.get(name) {
            return Some(v);
        }
        let mut parts = name.split('.');
        let first = self.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.get(part))
    }

    /// The top-level members in payload order.
    pub fn iter(&self) -> Members<'_> {
        self.root().members()
    }

    /// How many top-level claims there are.
    pub fn len(&self) -> usize {
        match self.nodes.first() {
            Some(Node::Object { len, .. }) => *len as usize,
            _ => 0,
        }
    }

    /// Whether there are no claims.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's JSON text as it was signed.
    pub fn json(&self) -> &str {
        &self.text
    }

    /// Bytes held on the heap (for cache weighing).
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.pool.capacity()
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.top.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    /// The claims as a `serde_json` map (tests, diagnostics; not on the request path).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_value()))
            .collect()
    }

    fn span(&self, span: Span) -> &str {
        let range = span.start as usize..(span.start + span.len) as usize;
        let text = if span.pooled { &self.pool } else { &self.text };
        // Spans are taken from `&str`s serde_json handed out, so they sit on char boundaries.
        text.get(range).unwrap_or_default()
    }

    /// The index of the first node after the value at `index`.
    fn end_of(&self, index: u32) -> u32 {
        // Node indexes fit in u32 (`Builder::push`).
        end_of(&self.nodes, index as usize) as u32
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Claims").field(&self.text).finish()
    }
}

/// One JSON value inside [`Claims`], read in place.
#[derive(Clone, Copy)]
pub struct Claim<'c> {
    claims: &'c Claims,
    index: u32,
}

impl<'c> Claim<'c> {
    fn node(self) -> &'c Node {
        // Indexes only come from the tape's own structure, so they are in range.
        self.claims
            .nodes
            .get(self.index as usize)
            .unwrap_or(&Node::Null)
    }

    /// Whether the value is `null`.
    pub fn is_null(self) -> bool {
        matches!(self.node(), Node::Null)
    }

    /// The value as a boolean.
    pub fn as_bool(self) -> Option<bool> {
        match self.node() {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a JSON number.
    pub fn as_number(self) -> Option<&'c Number> {
        match self.node() {
            Node::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The value as text, when it is a string (escapes decoded).
    pub fn as_str(self) -> Option<&'c str> {
        match self.node() {
            Node::String(span) | Node::Key(span, _) => Some(self.claims.span(*span)),
            _ => None,
        }
    }

    /// Whether the value is an array.
    pub fn is_array(self) -> bool {
        matches!(self.node(), Node::Array { .. })
    }

    /// Whether the value is an object.
    pub fn is_object(self) -> bool {
        matches!(self.node(), Node::Object { .. })
    }

    /// The elements of an array (nothing for any other value).
    pub fn elements(self) -> Elements<'c> {
        let remaining = match self.node() {
            Node::Array { len, .. } => *len,
            _ => 0,
        };
        Elements {
            claims: self.claims,
            next: self.index + 1,
            remaining,
        }
    }

    /// The members of an object in payload order (nothing for any other value).
    pub fn members(self) -> Members<'c> {
        let remaining = match self.node() {
            Node::Object { len, .. } => *len,
            _ => 0,
        };
        Members {
            claims: self.claims,
            next: self.index + 1,
            remaining,
        }
    }

    /// An object's member by exact name (`None` for any other value).
    /// (Nested objects only: top-level names go through [`Claims::get`]'s index.)
    pub fn get(self, name: &str) -> Option<Claim<'c>> {
        self.members().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The value as a `serde_json::Value` (objects with sorted keys, as serde_json's `Map`).
    pub fn to_value(self) -> Value {
        match self.node() {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(span) | Node::Key(span, _) => {
                Value::String(self.claims.span(*span).to_owned())
            }
            Node::Array { .. } => Value::Array(self.elements().map(Claim::to_value).collect()),
            Node::Object { .. } => Value::Object(
                self.members()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl PartialEq<Value> for Claim<'_> {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

/// The elements of an array claim; see [`Claim::elements`].
#[derive(Clone)]
pub struct Elements<'c> {
    claims: &'c Claims,
    next: u32,
    remaining: u32,
}

impl<'c> Iterator for Elements<'c> {
    type Item = Claim<'c>;

    fn next(&mut self) -> Option<Claim<'c>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let index = self.next;
        self.next = self.claims.end_of(index);
        Some(Claim {
            claims: self.claims,
            index,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

/// The members of an object claim; see [`Claim::members`].
#[derive(Clone)]
pub struct Members<'c> {
    claims: &'c Claims,
    next: u32,
    remaining: u32,
}

impl<'c> Iterator for Members<'c> {
    type Item = (&'c str, Claim<'c>);

    fn next(&mut self) -> Option<(&'c str, Claim<'c>)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let key = match self.claims.nodes.get(self.next as usize) {
            Some(Node::Key(span, _)) => self.claims.span(*span),
            _ => "",
        };
        let index = self.next + 1;
        self.next = self.claims.end_of(index);
        Some((
            key,
            Claim {
                claims: self.claims,
                index,
            },
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

/// Parse one JSON value of `bytes`' text strictly and throw it away (JOSE header members we do
/// not act on: parsed, not skipped, so the duplicate-key and nesting rules still apply).
pub(crate) struct StrictIgnored;

impl<'de> de::Deserialize<'de> for StrictIgnored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IgnoredVisitor).map(|()| StrictIgnored)
    }
}

/// Scalars are checked by serde_json itself and cost nothing; only containers are put on a
/// throwaway tape, for the duplicate-key rule.
struct IgnoredVisitor;

impl<'de> Visitor<'de> for IgnoredVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // The same rule as the tape's: a number must be finite.
        Number::from_f64(v)
            .map(drop)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        ValueVisitor(&mut Builder::new(&[], 0)).visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ValueVisitor(&mut Builder::new(&[], 0)).visit_map(map)
    }
}

/// Writes the tape while serde_json parses.
struct Builder<'t> {
    /// The input: strings serde_json lends from it become spans, anything else goes to the pool.
    text: &'t [u8],
    pool: String,
    nodes: Vec<Node>,
}

impl<'t> Builder<'t> {
    fn new(text: &'t [u8], nodes: usize) -> Builder<'t> {
        Builder {
            text,
            pool: String::new(),
            nodes: Vec::with_capacity(nodes),
        }
    }

    fn bytes(&self, span: Span) -> &[u8] {
        let range = span.start as usize..(span.start + span.len) as usize;
        let text = if span.pooled {
            self.pool.as_bytes()
        } else {
            self.text
        };
        text.get(range).unwrap_or_default()
    }

    /// A span for `s`: in the input when serde_json lent it from there, else copied to the pool.
    fn span<E: de::Error>(&mut self, s: &str) -> Result<Span, E> {
        let base = self.text.as_ptr() as usize;
        let at = (s.as_ptr() as usize).wrapping_sub(base);
        let (start, pooled) = if at <= self.text.len() && s.len() <= self.text.len() - at {
            (at, false)
        } else {
            let start = self.pool.len();
            self.pool.push_str(s);
            (start, true)
        };
        let start = u32::try_from(start).map_err(|_| E::custom("claims too large"))?;
        let len = u32::try_from(s.len()).map_err(|_| E::custom("claims too large"))?;
        Ok(Span { start, len, pooled })
    }

    fn push<E: de::Error>(&mut self, node: Node) -> Result<u32, E> {
        let index = u32::try_from(self.nodes.len()).map_err(|_| E::custom("claims too large"))?;
        self.nodes.push(node);
        Ok(index)
    }

    /// Write a container's node once its contents are on the tape.
    fn close(&mut self, index: u32, node: Node) {
        if let Some(slot) = self.nodes.get_mut(index as usize) {
            *slot = node;
        }
    }

    fn end(&self) -> u32 {
        // `push` refused any index past u32::MAX.
        self.nodes.len() as u32
    }

    /// The `(tag, key node index)` of the first `count` members of the object at `object` (all
    /// complete, so each value's `end` is set and the walk can step over it). No allocation: the
    /// duplicate check reads the keys from the tape itself.
    fn keys(&self, object: u32, count: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
        let mut at = object as usize + 1;
        (0..count).filter_map(move |_| {
            let key = match self.nodes.get(at) {
                // `push` refused any index past u32::MAX.
                Some(Node::Key(_, tag)) => Some((*tag, at as u32)),
                _ => None,
            };
            at = end_of(&self.nodes, at + 1);
            key
        })
    }

    /// Whether the object at `object` already has, among its first `count` members, this key.
    fn has_key(&self, object: u32, count: usize, tag: u64, name: &[u8]) -> bool {
        self.keys(object, count)
            .any(|(t, k)| same_key(t, self.key_bytes(k), tag, name))
    }

    fn key_bytes(&self, key: u32) -> &[u8] {
        match self.nodes.get(key as usize) {
            Some(Node::Key(span, _)) => self.bytes(*span),
            _ => &[],
        }
    }

    fn object_len(&self, object: u32) -> usize {
        match self.nodes.get(object as usize) {
            Some(Node::Object { len, .. }) => *len as usize,
            _ => 0,
        }
    }

    /// Whether the object's `count` members hold a duplicate (objects past the linear bound).
    fn has_duplicate_sorted(&self, object: u32, count: usize) -> bool {
        let mut names: Vec<&[u8]> = self
            .keys(object, count)
            .map(|(_, k)| self.key_bytes(k))
            .collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    }
}

/// Deserializes one value onto the tape.
struct ValueSeed<'b, 't>(&'b mut Builder<'t>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

/// Deserializes an object key to a span.
struct KeySeed<'b, 't>(&'b mut Builder<'t>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Span;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Span, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Span;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
        self.0.span(v)
    }
}

/// Puts one value (and everything inside it) on the tape.
struct ValueVisitor<'b, 't>(&'b mut Builder<'t>);

impl<'de> Visitor<'de> for ValueVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value (the claims themselves: an object)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Node::Bool(v)).map(drop)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Node::Number(v.into())).map(drop)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Node::Number(v.into())).map(drop)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let n = Number::from_f64(v).ok_or_else(|| E::custom("non-finite number"))?;
        self.0.push(Node::Number(n)).map(drop)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let span = self.0.span(v)?;
        self.0.push(Node::String(span)).map(drop)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(Node::Null).map(drop)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        let index = b.push(Node::Array { len: 0, end: 0 })?;
        let mut len = 0u32;
        while seq.next_element_seed(ValueSeed(b))?.is_some() {
            len += 1;
        }
        let end = b.end();
        b.close(index, Node::Array { len, end });
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let index = b.push(Node::Object { len: 0, end: 0 })?;
        // The first members' key tags, on the stack: a new key is compared with them as integers,
        // and only an equal tag of a long key sends the check to the bytes on the tape.
        let mut tags = [0u64; LINEAR_DUPLICATE_CHECK];
        let mut len = 0usize;
        while let Some(key) = map.next_key_seed(KeySeed(b))? {
            let name = b.bytes(key);
            let tag = key_tag(name);
            if let Some(seen) = tags.get(..len) {
                if seen.contains(&tag) && (name.len() < 8 || b.has_key(index, len, tag, name)) {
                    return Err(de::Error::custom("duplicate key"));
                }
            }
            if let Some(slot) = tags.get_mut(len) {
                *slot = tag;
            }
            b.push(Node::Key(key, tag))?;
            map.next_value_seed(ValueSeed(b))?;
            len += 1;
        }
        if len > LINEAR_DUPLICATE_CHECK && b.has_duplicate_sorted(index, len) {
            return Err(de::Error::custom("duplicate key"));
        }
        let end = b.end();
        // Each member pushed a node, so `len` fits in u32 like the node count.
        b.close(
            index,
            Node::Object {
                len: len as u32,
                end,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::Claims;

    fn parse(s: &str) -> Result<Claims, serde_json::Error> {
        Claims::parse(s.to_owned())
    }

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth() {
        assert!(parse(r#"{"a":1,"a":2}"#).is_err());
        assert!(parse(r#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse(r#"{"a":[{"b":1,"b":1}]}"#).is_err());
        // The same name spelt with an escape is the same key.
        assert!(parse(r#"{"a":1,"\u0061":2}"#).is_err());
        // Equal keys in sibling objects are fine.
        assert!(parse(r#"{"a":{"b":1},"c":{"b":1}}"#).is_ok());
        let c = parse(r#"{"a":{"b":[1,"x",null,true,1.5]}}"#).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_node_stays_three_words() {
        // The tape's memory per value (and the cache weight per claim) assumes this.
        assert_eq!(std::mem::size_of::<super::Node>(), 24);
    }

    #[test]
    fn keys_sharing_a_tag_are_told_apart() {
        // Same length and first seven bytes: the tag is equal, the keys are not.
        let long = "x".repeat(300);
        let text = format!(
            r#"{{"abcdefgX":1,"abcdefgY":2,"abcdefg":3,"abcdef":4,"{long}a":5,"{long}b":6}}"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.get("abcdefgX").unwrap(), json!(1));
        assert_eq!(c.get("abcdefgY").unwrap(), json!(2));
        assert_eq!(c.get("abcdefg").unwrap(), json!(3));
        assert_eq!(c.get("abcdef").unwrap(), json!(4));
        assert_eq!(c.get(&format!("{long}b")).unwrap(), json!(6));
        assert!(c.get("abcdefgZ").is_none());
        assert!(c.get("abcde").is_none());
        assert!(parse(r#"{"abcdefgX":1,"abcdefgX":2}"#).is_err());
        assert!(parse(&format!(r#"{{"{long}a":1,"{long}a":2}}"#)).is_err());
    }

    #[test]
    fn duplicate_keys_in_large_objects_are_rejected() {
        let members: Vec<String> = (0..200).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", members.join(","));
        assert_eq!(parse(&ok).unwrap().len(), 200);
        for dup in ["k0", "k150", "k199"] {
            let bad = format!("{{{},\"{dup}\":0}}", members.join(","));
            assert!(parse(&bad).is_err(), "{dup}");
        }
    }

    #[test]
    fn only_objects_and_bounded_depth() {
        assert!(parse("[1]").is_err());
        assert!(parse("\"x\"").is_err());
        assert!(parse(r#"{"a":1} x"#).is_err());
        assert!(parse("").is_err());
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn reads_the_same_values_as_serde_json() {
        let text = r#"{"s":"x\"y\u00e9\n","n":-3,"u":18446744073709551615,"f":1.5e3,"t":true,
            "z":null,"a":[1,[2,{"k":"v"}],"w"],"o":{"p":{"q":[]},"r":{}},"e\/k":"\/"}"#;
        let claims = parse(text).unwrap();
        let expected: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).unwrap();
        assert_eq!(claims.to_map(), expected);
        assert_eq!(claims.get("s").unwrap().as_str(), Some("x\"y\u{e9}\n"));
        assert_eq!(claims.get("e/k").unwrap().as_str(), Some("/"));
        assert_eq!(
            claims.get("f").unwrap().as_number().unwrap().as_f64(),
            Some(1500.0)
        );
        assert_eq!(claims.lookup("o.p.q").unwrap(), json!([]));
        assert_eq!(claims.get("a").unwrap().elements().count(), 3);
        let keys: Vec<&str> = claims.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["s", "n", "u", "f", "t", "z", "a", "o", "e/k"]);
        assert!(claims.get("missing").is_none());
        assert!(claims.get("a").unwrap().get("0").is_none());
    }

    #[test]
    fn lookup_prefers_the_verbatim_name() {
        let c = parse(r#"{"a.b":"verbatim","a":{"b":"path","c":{"d":1}}}"#).unwrap();
        assert_eq!(c.lookup("a.b").unwrap(), json!("verbatim"));
        assert_eq!(c.lookup("a.c.d").unwrap(), json!(1));
        assert!(c.lookup("a.x").is_none());
        assert!(c.lookup("a.b.c").is_none());
    }

    /// The reading a strict parser must give: serde_json's values, with duplicate keys at any
    /// depth refused (the `Map`-building visitor this module replaced, kept as the oracle).
    mod oracle {
        use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
        use serde_json::{Map, Value};
        use std::fmt;

        pub struct Strict(pub Value);

        impl<'de> Deserialize<'de> for Strict {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(V).map(Strict)
            }
        }

        struct V;

        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(v.into())
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(v.into())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .ok_or_else(|| E::custom("non-finite"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Strict(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut out = Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    let Strict(v) = map.next_value()?;
                    if out.insert(k, v).is_some() {
                        return Err(de::Error::custom("duplicate key"));
                    }
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// Random JSON text, often with duplicate or escaped keys, sometimes broken.
    fn random_json(rng: &mut rand::rngs::StdRng, depth: u32, out: &mut String) {
        use rand::Rng;
        const KEYS: [&str; 8] = [
            "a",
            "\\u0061",
            "sub",
            "s\\u0075b",
            "\\/",
            "/",
            "é",
            "abcdefgh",
        ];
        const SCALARS: [&str; 14] = [
            "0",
            "-0",
            "1.5e3",
            "-12",
            "18446744073709551615",
            "18446744073709551616",
            "1e400",
            "true",
            "false",
            "null",
            "\"x\"",
            "\"\\n\\\"\"",
            "\"\\ud83d\\ude00\"",
            "01",
        ];
        let pick = rng.gen_range(0..10);
        if depth == 0 || pick < 5 {
            out.push_str(SCALARS[rng.gen_range(0..SCALARS.len())]);
        } else if pick < 7 {
            out.push('[');
            for i in 0..rng.gen_range(0..4) {
                if i > 0 {
                    out.push(',');
                }
                random_json(rng, depth - 1, out);
            }
            out.push(']');
        } else {
            out.push('{');
            for i in 0..rng.gen_range(0..6) {
                if i > 0 {
                    out.push_str(if rng.gen_bool(0.9) { "," } else { " , " });
                }
                out.push('"');
                out.push_str(KEYS[rng.gen_range(0..KEYS.len())]);
                out.push_str("\":");
                random_json(rng, depth - 1, out);
            }
            out.push('}');
        }
    }

    #[test]
    fn same_reading_as_the_strict_oracle() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut text = String::from("{");
            for i in 0..rng.gen_range(0..5) {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!("\"k{}\":", rng.gen_range(0..6)));
                random_json(&mut rng, 4, &mut text);
            }
            text.push('}');
            if rng.gen_bool(0.1) && !text.is_empty() {
                // Break it: drop a byte (on a char boundary).
                let mut at = rng.gen_range(0..text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.remove(at);
            }
            let want =
                serde_json::from_str::<oracle::Strict>(&text)
                    .ok()
                    .and_then(|oracle::Strict(v)| match v {
                        serde_json::Value::Object(map) => Some(map),
                        _ => None,
                    });
            let got = parse(&text);
            match (&want, &got) {
                (Some(map), Ok(claims)) => {
                    accepted += 1;
                    assert_eq!(&claims.to_map(), map, "{text}");
                    assert_eq!(claims.len(), map.len(), "{text}");
                    for (k, v) in map {
                        assert_eq!(
                            claims.get(k).map(|c| c.to_value()).as_ref(),
                            Some(v),
                            "{text}"
                        );
                    }
                }
                (None, Err(_)) => refused += 1,
                _ => panic!(
                    "oracle {:?} vs tape {:?} for {text}",
                    want.is_some(),
                    got.is_ok()
                ),
            }
        }
        // Both verdicts are well exercised.
        assert!(
            accepted > 2_000 && refused > 2_000,
            "{accepted} / {refused}"
        );
    }
}
