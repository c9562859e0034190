//! A small element tree over quick-xml, with every element and attribute carrying its `line:col`.
//!
//! Why a tree and not streaming events: the converter reads validate-jwt's attributes and children in
//! any order and reports each unsupported piece with its position, which is simplest over a tree.
//! Why the pre-scan (module `mask`): APIM parses `@(...)` and `@{...}` expressions before the
//! XML, so documents as authored in its editor (and as the APIOps extractor writes them, `rawxml`)
//! hold raw `"`, `&&`, `<` and `>` inside expressions, generics such as
//! `GetValueOrDefault<Jwt>(...)` included. Those characters are swapped for placeholder bytes of
//! the same length before parsing and restored in attribute values and text after, which keeps
//! every byte offset exact.

use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

mod mask;

/// A 1-based line and column (columns count characters), and which document it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// The document: 0 for a single document; an index into the file list of a composed policy
    /// (an APIOps import builds one policy from the global, product, API and operation files).
    pub file: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Name as written.
    pub name: String,
    /// Unescaped value.
    pub value: String,
    /// Where the name starts.
    pub pos: Pos,
}

/// One element with its attributes, child elements and text (entities resolved, CDATA included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Name as written (namespace prefix included).
    pub name: String,
    /// Where its `<` is.
    pub pos: Pos,
    /// Attributes in document order.
    pub attrs: Vec<Attr>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Concatenated text content, untrimmed.
    pub text: String,
}

impl Element {
    /// The attribute called `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// The trimmed text content.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// The document is not well-formed XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: invalid XML: {message}")]
pub struct XmlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// The parser's message.
    pub message: String,
}

/// Byte offsets to line:col.
struct LineIndex<'s> {
    text: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    fn new(text: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Pos {
            line,
            col: col + 1,
            file: 0,
        }
    }

    /// The offset of `part` (a slice borrowed from the text) or `fallback` when it is not one.
    fn offset_of(&self, part: &[u8], fallback: usize) -> usize {
        let base = self.text.as_ptr() as usize;
        let at = (part.as_ptr() as usize).wrapping_sub(base);
        if at <= self.text.len() {
            at
        } else {
            fallback
        }
    }
}

/// Parse a whole document into its top-level elements.
pub fn parse(text: &str) -> Result<Vec<Element>, XmlError> {
    let masked = mask::mask(text)?;
    let index = LineIndex::new(&masked);
    let mut reader = Reader::from_str(&masked);
    let error = |reader: &Reader<&[u8]>, message: String| XmlError {
        pos: index.pos(usize::try_from(reader.error_position()).unwrap_or(usize::MAX)),
        message,
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut roots: Vec<Element> = Vec::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(0);
        let event = reader
            .read_event()
            .map_err(|e| error(&reader, e.to_string()))?;
        match event {
            Event::Start(start) => stack.push(element(&start, &index, before)?),
            Event::Empty(start) => {
                let el = element(&start, &index, before)?;
                attach(&mut stack, &mut roots, el);
            }
            Event::End(_) => {
                if let Some(el) = stack.pop() {
                    attach(&mut stack, &mut roots, el);
                }
            }
            Event::Text(t) => push_text(
                &mut stack,
                &t.decode().map_err(|e| error(&reader, e.to_string()))?,
            ),
            Event::CData(t) => push_text(
                &mut stack,
                &t.decode().map_err(|e| error(&reader, e.to_string()))?,
            ),
            Event::GeneralRef(r) => {
                let resolved = resolve_ref(&r).map_err(|m| XmlError {
                    pos: index.pos(before),
                    message: m,
                })?;
                push_text(&mut stack, &resolved);
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError {
            pos: open.pos,
            message: format!("element <{}> is not closed", open.name),
        });
    }
    Ok(roots)
}

/// As [`parse`], every position marked as being in document `file` (see [`Pos::file`]).
pub fn parse_in(text: &str, file: u32) -> Result<Vec<Element>, XmlError> {
    let mut roots = parse(text).map_err(|mut e| {
        e.pos.file = file;
        e
    })?;
    fn mark(el: &mut Element, file: u32) {
        el.pos.file = file;
        el.attrs.iter_mut().for_each(|a| a.pos.file = file);
        el.children.iter_mut().for_each(|c| mark(c, file));
    }
    roots.iter_mut().for_each(|r| mark(r, file));
    Ok(roots)
}

fn attach(stack: &mut [Element], roots: &mut Vec<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => roots.push(el),
    }
}

fn push_text(stack: &mut [Element], text: &str) {
    if let Some(el) = stack.last_mut() {
        el.text.push_str(&mask::unmask(text));
    }
}

/// `&amp;` and friends, and character references.
fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c.to_string());
    }
    let name = r.decode().map_err(|e| e.to_string())?;
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(s) => Ok(s.to_owned()),
        None => Err(format!("unknown entity &{name};")),
    }
}

fn element(
    start: &BytesStart<'_>,
    index: &LineIndex<'_>,
    before: usize,
) -> Result<Element, XmlError> {
    let name_bytes = start.name();
    let at = index
        .offset_of(name_bytes.as_ref(), before + 1)
        .saturating_sub(1);
    let name = String::from_utf8_lossy(name_bytes.as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| XmlError {
            pos: index.pos(at),
            message: e.to_string(),
        })?;
        let attr_at = index.offset_of(attr.key.as_ref(), at);
        let value = attr.unescape_value().map_err(|e| XmlError {
            pos: index.pos(attr_at),
            message: e.to_string(),
        })?;
        attrs.push(Attr {
            name: String::from_utf8_lossy(attr.key.as_ref()).into_owned(),
            value: mask::unmask(&value).into_owned(),
            pos: index.pos(attr_at),
        });
    }
    Ok(Element {
        name,
        pos: index.pos(at),
        attrs,
        ..Element::default()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn positions_of_elements_and_attributes() {
        let doc = "<policies>\n  <inbound>\n    <validate-jwt header-name=\"Authorization\" />\n  </inbound>\n</policies>\n";
        let roots = parse(doc).unwrap();
        let jwt = &roots[0].children[0].children[0];
        assert_eq!(jwt.name, "validate-jwt");
        assert_eq!(
            jwt.pos,
            Pos {
                line: 3,
                col: 5,
                file: 0
            }
        );
        assert_eq!(
            jwt.attrs[0].pos,
            Pos {
                line: 3,
                col: 19,
                file: 0
            }
        );
        assert_eq!(jwt.attrs[0].value, "Authorization");
    }

    #[test]
    fn generics_inside_expressions_are_accepted() {
        let doc = "<set-header name=\"x\"><value>@(context.Variables.GetValueOrDefault<Jwt>(\"jwt\")?.Subject)</value></set-header>";
        let roots = parse(doc).unwrap();
        assert_eq!(
            roots[0].children[0].text,
            "@(context.Variables.GetValueOrDefault<Jwt>(\"jwt\")?.Subject)"
        );
    }

    #[test]
    fn entities_and_cdata_are_text() {
        let roots = parse("<a>x &amp; y<![CDATA[<z>]]>&#65;</a>").unwrap();
        assert_eq!(roots[0].text, "x & y<z>A");
    }

    #[test]
    fn mismatched_end_tag_reports_position() {
        let err = parse("<policies>\n  <inbound>\n  </outbound>\n</policies>").unwrap_err();
        assert_eq!(err.pos.line, 3, "{err}");
    }

    #[test]
    fn unclosed_element_reports_its_start() {
        let err = parse("<policies>\n  <inbound>\n").unwrap_err();
        assert_eq!(
            err.pos,
            Pos {
                line: 2,
                col: 3,
                file: 0
            },
            "{err}"
        );
    }
}
