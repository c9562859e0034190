//! Policy expressions read as APIM's editor reads them, before the XML parser sees the document.
//!
//! Why: APIM parses `@(...)` and `@{...}` expressions before the XML, so its editor, and the APIOps
//! extractor's default `rawxml` format, hold expressions as authored: raw `"`, `'`, `&&`, `<` and
//! `>` inside attribute values and element text (`condition="@(h == "gold" && n < 5)"`). A strict
//! XML parser refuses those documents. This pre-scan finds each expression the way a C# lexer would
//! (balanced `(`/`)` or `{`/`}`, skipping string and char literals, verbatim `@"..."` and
//! interpolated `$"..."` strings and comments) and swaps its raw markup characters for placeholder
//! bytes of the same length, which the tree builder swaps back in attribute values and text. Every
//! byte offset stays where it was, so positions after an expression are exact.
//!
//! Entity references (`&quot;`, `&lt;`, `&#34;` ...) are left for the XML parser to resolve and
//! read as the characters they stand for, so an expression written escaped and one written raw
//! reach the converter as the same text. Outside expressions nothing is masked: the XML stays
//! strict. XML comments, CDATA sections and processing instructions are skipped (an expression
//! there is not one).
//!
//! An expression never swallows markup silently: a raw `</` or `/>` in its code (outside strings
//! and comments, where C# cannot have them) is reported, as is an expression that does not close.
//! Without that, a missing `)` would fold the following elements, a `validate-jwt` say, into one
//! text value.

use std::borrow::Cow;

use super::{LineIndex, XmlError};

/// Placeholder and the markup character it stands for, inside expressions only. Characters U+0001
/// to U+0005 are not allowed in XML 1.0, so a document holding one is refused rather than misread.
const MASKS: [(char, u8); 5] = [
    ('\u{1}', b'<'),
    ('\u{2}', b'>'),
    ('\u{3}', b'&'),
    ('\u{4}', b'"'),
    ('\u{5}', b'\''),
];

/// The document with every markup character inside a policy expression replaced by its placeholder.
pub(super) fn mask(text: &str) -> Result<Cow<'_, str>, XmlError> {
    let error = |at: usize, message: String| XmlError {
        pos: LineIndex::new(text).pos(at),
        message,
    };
    if let Some((at, c)) = text.char_indices().find(|(_, c)| unmasked(*c).is_some()) {
        return Err(error(
            at,
            format!("character U+{:04X} is not allowed in XML", u32::from(c)),
        ));
    }
    let mut scanner = Scanner {
        src: text.as_bytes(),
        at: 0,
        masked: Vec::new(),
    };
    scanner.document().map_err(|p| match p {
        Problem::Unclosed { at, open, close } => error(
            at,
            format!(
                "policy expression `@{}` is not closed: no `{}` balances it (strings and comments \
                 inside it skipped)",
                char::from(open),
                char::from(close)
            ),
        ),
        Problem::Markup { at, start, close } => error(
            at,
            format!(
                "markup inside the policy expression at {}: is a `{}` missing?",
                LineIndex::new(text).pos(start),
                char::from(close)
            ),
        ),
    })?;
    if scanner.masked.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    let mut masked = scanner.masked.into_iter().peekable();
    let out = text
        .char_indices()
        .map(|(i, c)| match masked.next_if_eq(&i) {
            Some(_) => MASKS
                .iter()
                .find(|(_, m)| u32::from(*m) == u32::from(c))
                .map_or(c, |(p, _)| *p),
            None => c,
        })
        .collect();
    Ok(Cow::Owned(out))
}

/// The text with every placeholder replaced by the character it stands for.
pub(super) fn unmask(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| unmasked(c).is_some()) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| unmasked(c).unwrap_or(c)).collect())
}

/// The character placeholder `c` stands for; `None` when `c` is no placeholder.
fn unmasked(c: char) -> Option<char> {
    MASKS
        .iter()
        .find(|(p, _)| *p == c)
        .map(|(_, m)| char::from(*m))
}

/// Why an expression cannot be read; offsets into the document.
enum Problem {
    /// The expression whose `@` is at `at` does not close.
    Unclosed { at: usize, open: u8, close: u8 },
    /// A raw `</` or `/>` at `at` in the code of the expression whose `@` is at `start`.
    Markup { at: usize, start: usize, close: u8 },
}

/// What the lexer is inside, innermost last.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// C# code up to the `close` that balances `open` (`depth` of them open).
    Code { open: u8, close: u8, depth: usize },
    /// A string literal: verbatim (`""` escapes, no `\`) and/or interpolated (`{...}` holes).
    Str { verbatim: bool, interpolated: bool },
}

struct Scanner<'s> {
    src: &'s [u8],
    at: usize,
    /// Byte offsets of the raw markup characters inside expressions, ascending.
    masked: Vec<usize>,
}

impl Scanner<'_> {
    /// Walks the document, skipping what cannot hold an expression, lexing each expression.
    fn document(&mut self) -> Result<(), Problem> {
        while self.at < self.src.len() {
            let rest = &self.src[self.at..];
            let skip = [("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>")]
                .into_iter()
                .find(|(open, _)| rest.starts_with(open.as_bytes()));
            if let Some((open, end)) = skip {
                self.at += open.len();
                self.skip_past(end.as_bytes());
                continue;
            }
            let bracket = match rest {
                [b'@', b'(', ..] => Some((b'(', b')')),
                [b'@', b'{', ..] => Some((b'{', b'}')),
                _ => None,
            };
            match bracket {
                Some((open, close)) => {
                    let start = self.at;
                    self.at += 2;
                    self.expression(start, open, close)?;
                }
                None => self.at += 1,
            }
        }
        Ok(())
    }

    fn skip_past(&mut self, end: &[u8]) {
        self.at = self.src[self.at..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(self.src.len(), |p| self.at + p + end.len());
    }

    /// The character at `at` as the C# compiler reads it (an entity reference decoded: its ASCII
    /// character, 0x80 for any other) and how many bytes it takes.
    fn look(&self, at: usize) -> Option<(u8, usize)> {
        let b = *self.src.get(at)?;
        if b == b'&' {
            if let Some(reference) = reference(&self.src[at..]) {
                return Some(reference);
            }
        }
        Some((b, 1))
    }

    fn peek(&self) -> Option<u8> {
        self.look(self.at).map(|(c, _)| c)
    }

    fn peek2(&self) -> Option<u8> {
        let (_, n) = self.look(self.at)?;
        self.look(self.at + n).map(|(c, _)| c)
    }

    /// The next character, consumed; a raw markup character is marked for masking.
    fn bump(&mut self) -> Option<u8> {
        let (c, n) = self.look(self.at)?;
        if n == 1 && matches!(c, b'<' | b'>' | b'&' | b'"' | b'\'') {
            self.masked.push(self.at);
        }
        self.at += n;
        Some(c)
    }

    /// One expression, its `@` at `start` and its opening bracket consumed.
    fn expression(&mut self, start: usize, open: u8, close: u8) -> Result<(), Problem> {
        let unclosed = || Problem::Unclosed {
            at: start,
            open,
            close,
        };
        let mut stack = vec![Frame::Code {
            open,
            close,
            depth: 1,
        }];
        while let Some(top) = stack.last_mut() {
            match top {
                Frame::Code { open, close, depth } => {
                    let rest = &self.src[self.at..];
                    if rest.starts_with(b"</") || rest.starts_with(b"/>") {
                        return Err(Problem::Markup {
                            at: self.at,
                            start,
                            close: *close,
                        });
                    }
                    let c = self.bump().ok_or_else(unclosed)?;
                    match c {
                        b'"' => stack.push(Frame::Str {
                            verbatim: false,
                            interpolated: false,
                        }),
                        b'\'' => self.char_literal().ok_or_else(unclosed)?,
                        b'@' | b'$' => {
                            if let Some(frame) = self.string_prefix(c) {
                                stack.push(frame);
                            }
                        }
                        b'/' if self.peek() == Some(b'/') => self.line_comment(),
                        b'/' if self.peek() == Some(b'*') => {
                            self.block_comment().ok_or_else(unclosed)?;
                        }
                        c if c == *open => *depth += 1,
                        c if c == *close => {
                            *depth -= 1;
                            if *depth == 0 {
                                stack.pop();
                            }
                        }
                        _ => {}
                    }
                }
                Frame::Str {
                    verbatim,
                    interpolated,
                } => {
                    let (verbatim, interpolated) = (*verbatim, *interpolated);
                    match self.bump().ok_or_else(unclosed)? {
                        b'\\' if !verbatim => {
                            self.bump().ok_or_else(unclosed)?;
                        }
                        b'"' if verbatim && self.peek() == Some(b'"') => {
                            self.bump();
                        }
                        b'"' => {
                            stack.pop();
                        }
                        b'{' if interpolated && self.peek() == Some(b'{') => {
                            self.bump();
                        }
                        b'{' if interpolated => stack.push(Frame::Code {
                            open: b'{',
                            close: b'}',
                            depth: 1,
                        }),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// After `@` or `$` in code: the string it starts (`@"`, `$"`, `$@"`, `@$"`), consumed up to
    /// its opening quote; `None` for anything else (a verbatim identifier such as `@class`).
    fn string_prefix(&mut self, first: u8) -> Option<Frame> {
        let (verbatim, interpolated, skip) = match (first, self.peek(), self.peek2()) {
            (b'@', Some(b'"'), _) => (true, false, 1),
            (b'$', Some(b'"'), _) => (false, true, 1),
            (b'@', Some(b'$'), Some(b'"')) | (b'$', Some(b'@'), Some(b'"')) => (true, true, 2),
            _ => return None,
        };
        for _ in 0..skip {
            self.bump();
        }
        Some(Frame::Str {
            verbatim,
            interpolated,
        })
    }

    /// A char literal after its opening `'`; `None` when the document ends inside it.
    fn char_literal(&mut self) -> Option<()> {
        loop {
            match self.bump()? {
                b'\\' => {
                    self.bump()?;
                }
                b'\'' => return Some(()),
                _ => {}
            }
        }
    }

    /// A `//` comment from its second `/` to the end of the line.
    fn line_comment(&mut self) {
        while let Some(c) = self.bump() {
            if c == b'\n' {
                return;
            }
        }
    }

    /// A `/* */` comment from its `*`; `None` when the document ends inside it.
    fn block_comment(&mut self) -> Option<()> {
        self.bump()?;
        loop {
            if self.bump()? == b'*' && self.peek() == Some(b'/') {
                self.bump();
                return Some(());
            }
        }
    }
}

/// The entity reference at the start of `s` (`&quot;`, `&#34;`, `&#x22;` ...): the ASCII character
/// it stands for (0x80 for any other) and its length; `None` when `s` does not start with one.
fn reference(s: &[u8]) -> Option<(u8, usize)> {
    let end = s.iter().take(12).position(|&b| b == b';')?;
    let name = std::str::from_utf8(&s[1..end]).ok()?;
    // the five predefined entities as the XML parser reads them, each one ASCII character
    let c = match quick_xml::escape::resolve_predefined_entity(name) {
        Some(text) => text.bytes().next()?,
        None => {
            let digits = name.strip_prefix('#')?;
            let code = match digits.strip_prefix('x') {
                Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()?
                }
                None if digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
                _ => return None,
            };
            char::from_u32(code)?;
            u8::try_from(code).ok().filter(u8::is_ascii).unwrap_or(0x80)
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::{parse, Element, Pos};
    use super::*;

    /// The one root of `doc`.
    fn root(doc: &str) -> Element {
        let mut roots = parse(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(roots.len(), 1);
        roots.remove(0)
    }

    /// The `condition` of `<when condition=...>` holding `expr` as written.
    fn condition(expr: &str) -> String {
        let doc = format!("<when condition=\"{expr}\"><x/></when>");
        let when = root(&doc);
        assert_eq!(when.children.len(), 1, "{doc}");
        when.attr("condition").unwrap().value.clone()
    }

    /// The text of `<set-body>` holding `expr`.
    fn body(expr: &str) -> String {
        root(&format!("<set-body>{expr}</set-body>")).text
    }

    fn pos(line: usize, col: usize) -> Pos {
        Pos { line, col, file: 0 }
    }

    #[test]
    fn raw_quotes_and_operators_in_attributes() {
        let raw =
            r#"@(context.Request.Headers.GetValueOrDefault("X","") == "gold" && n < 5 || n > 9)"#;
        assert_eq!(condition(raw), raw);
        // written escaped, the same expression
        let escaped = "@(context.Request.Headers.GetValueOrDefault(&quot;X&quot;,&quot;&quot;) == &quot;gold&quot; &amp;&amp; n &lt; 5 || n &gt; 9)";
        assert_eq!(condition(escaped), raw);
        // mixed: a string opened raw may close escaped
        assert_eq!(condition("@(a == \"x)&quot;)"), "@(a == \"x)\")");
        // single-quoted attribute with raw double quotes and a raw char literal
        let when = root("<when condition='@(s.IndexOf('\\'') < 0 && t == \"a\")'/>");
        assert_eq!(
            when.attr("condition").unwrap().value,
            "@(s.IndexOf('\\'') < 0 && t == \"a\")"
        );
    }

    #[test]
    fn raw_markup_in_element_text() {
        let code = r#"@{ if (a < 5 && b) { return "x"; } return "y"; }"#;
        assert_eq!(body(code), code);
        assert_eq!(
            body("@{ return a &lt; 5 &amp;&amp; b ? &quot;x&quot; : \"y\"; }"),
            r#"@{ return a < 5 && b ? "x" : "y"; }"#
        );
    }

    #[test]
    fn nesting_and_strings_holding_brackets() {
        for expr in [
            r#"@(f(g(h("(", ")")), ')'))"#,
            r#"@{ var o = new { a = "}", b = '}' }; if (x) { return "{"; } return "}}"; }"#,
            r#"@(s.Replace("\")", "<"))"#,
            r#"@(@"C:\dir\" + @"say ""hi"" ) < >")"#,
            r#"@{ return $"{a} {{literal}} {d["k)"]} {(b ? "x" : "y")}" + $@"{c}""}" + @$"q" ; }"#,
            "@{ // don't stop at ) or } or \"\n  /* nor ) } ' \" here */ return @class; }",
            "@(context.Variables.GetValueOrDefault<Jwt>(\"jwt\")?.Subject)",
            "@(x.Where(h => h.Key != \"a\").Select<string, int>(v => v.Length > 2 ? 1 : 0).Sum() >= 1)",
        ] {
            assert_eq!(body(expr), expr, "text");
            // in an attribute the expression's own `"` are raw as well
            let doc = format!("<w a=\"{expr}\" b=\"after\"/>");
            let w = root(&doc);
            assert_eq!(w.attr("a").unwrap().value, expr, "{doc}");
            assert_eq!(w.attr("b").unwrap().value, "after", "{doc}");
        }
    }

    #[test]
    fn positions_after_expressions_are_exact() {
        let doc = "<policies>\n  <when condition=\"@(h(\"é\") == \"<>\" && n < 1)\" x=\"1\">\n    <v>@{ return \"}\" }</v><y z=\"2\"/>\n  </when>\n</policies>";
        let when = &root(doc).children[0];
        assert_eq!(when.attr("x").unwrap().pos, pos(2, 48));
        let y = &when.children[1];
        assert_eq!((y.name.as_str(), y.pos), ("y", pos(3, 27)));
        assert_eq!(y.attr("z").unwrap().pos, pos(3, 30));
        // an error after an expression: the position of the real mistake
        let err = parse("<a b=\"@(x && \"y\")\">\n  <c d=\"1\" d=\"2\"/>\n</a>").unwrap_err();
        assert_eq!(err.pos.line, 2, "{err}");
    }

    #[test]
    fn expression_at_the_end_of_the_document() {
        assert_eq!(mask("x @(a < \"b\")").unwrap(), "x @(a \u{1} \u{4}b\u{4})");
        assert_eq!(mask("x @{ }").unwrap(), "x @{ }");
        assert_eq!(mask("<a/>@").unwrap(), "<a/>@");
        let err = parse("<a>x</a>\n@(").unwrap_err();
        assert_eq!(err.pos, pos(2, 1), "{err}");
    }

    #[test]
    fn unclosed_expressions_are_invalid_xml_with_a_position() {
        // the string swallows the `)`: the expression runs into the next end tag
        let err = parse("<p>\n  <when condition=\"@(a == \"x)\">\n  </when>\n</p>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "3:3: invalid XML: markup inside the policy expression at 2:20: is a `)` missing?"
        );
        // the document ends inside it
        let err = parse("<p>\n  <when condition=\"@(a == \"x)\">").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("2:20: invalid XML: policy expression `@(` is not closed"),
            "{err}"
        );
        let err = parse("<p>\n<v>@{ if (a) { return 1; }</v>\n</p>").unwrap_err();
        assert_eq!(err.pos, pos(2, 27), "{err}");
        assert!(err.message.contains("is a `}` missing?"), "{err}");
        assert!(err.message.contains("expression at 2:4"), "{err}");
        // a missing `)` never folds the next elements into one value
        let err = parse("<i><v>@(a</v><validate-jwt h=\"x\"/><v>)</v></i>").unwrap_err();
        assert_eq!(err.pos, pos(1, 10), "{err}");
        for doc in [
            "<v>@(\"abc)</v>",
            "<v>@(/* ) </v>",
            "<v>@('a)</v>",
            "<v>@($\"{{x)</v>",
        ] {
            let err = parse(doc).unwrap_err();
            assert_eq!(err.pos, pos(1, 4), "{doc}: {err}");
        }
    }

    #[test]
    fn xml_stays_strict_outside_expressions() {
        for (doc, at) in [
            ("<a b=\"x \"y\"\"/>", pos(1, 1)),
            ("<a>1 < 2</a>", pos(1, 7)),
            ("<a>\n x && y</a>", pos(2, 1)),
            ("<a b=\"x & y\"/>", pos(1, 1)),
            ("<a b=\"@(x)\" \"/>", pos(1, 1)),
        ] {
            let err = parse(doc).unwrap_err();
            assert_eq!(err.pos.line, at.line, "{doc}: {err}");
        }
        // comments, CDATA and processing instructions hold no expression
        let a = root("<a><!-- @( --><![CDATA[@{ \" ]]><?pi @( ?>t</a>");
        assert_eq!(a.text, "@{ \" t");
        // the placeholders themselves are not XML characters
        let err = parse("<a>\n x\u{3}</a>").unwrap_err();
        assert_eq!(err.pos, pos(2, 3), "{err}");
        assert!(err.message.contains("U+0003"), "{err}");
    }

    #[test]
    fn references_read_as_their_characters() {
        assert_eq!(reference(b"&quot;x"), Some((b'"', 6)));
        assert_eq!(reference(b"&#34;"), Some((b'"', 5)));
        assert_eq!(reference(b"&#x3C;"), Some((b'<', 6)));
        assert_eq!(reference(b"&#xE9;"), Some((0x80, 6)));
        assert_eq!(reference(b"&#x+3C;"), None);
        assert_eq!(reference(b"&& b;"), None);
        assert_eq!(reference(b"&nbsp;"), None);
        assert_eq!(unmask("a\u{1}\u{2}\u{3}\u{4}\u{5}"), "a<>&\"'");
    }

    /// Random documents of the characters the scanner looks at: it never panics, and masking
    /// keeps the length and is undone exactly.
    #[test]
    fn random_documents_never_panic_and_round_trip() {
        let alphabet: Vec<char> = "@(){}\"'<>/&;*$\\\n a#x!-[]?é\u{1}".chars().collect();
        let mut seed: u64 = 0x1234_5678;
        for _ in 0..20_000 {
            let mut doc = String::from("<a b=\"");
            for _ in 0..seed % 40 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                doc.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Ok(masked) = mask(&doc) {
                assert_eq!(masked.len(), doc.len(), "{doc:?}");
                assert_eq!(unmask(&masked), doc, "{doc:?}");
            }
            let _ = parse(&doc);
        }
    }
}
