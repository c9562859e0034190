//! APIM policy XML -> gateway YAML.
//!
//! Why it exists: people replacing Azure API Management in development already have their policies
//! as XML; pasting the XML and getting a working gateway.yaml is the shortest road. The conversion is
//! pure ([`convert`]: text in, YAML text and diagnostics out); the command ([`run`]) reads the file
//! and writes the result. Nothing is dropped silently: every element, attribute or expression that
//! has no gateway.yaml equivalent is reported as `file:line:col: unsupported <what>: <reason>`, and
//! the [`Summary`] counts the statements converted and names those left out.
#![warn(missing_docs)]

pub mod apiops;
mod cli;
mod convert;
pub mod diag;
pub mod expr;
mod fields;
pub mod gateway;
mod inbound;
mod merge;
pub mod sources;
mod transform;
pub mod xml;
pub mod yaml;

pub use cli::{run, ImportArgs};
pub use diag::{Diagnostic, Kind};
pub use gateway::{RouteSpec, RouteSpecError};
pub use xml::{Pos, XmlError};

/// The result of converting one policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The gateway.yaml text.
    pub yaml: String,
    /// Everything not converted, and caveats, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many statements were converted, and which were not.
    pub summary: Summary,
}

/// The statement count printed after the diagnostics:
/// `converted 11/12 statements; dropped: line 34 <send-request>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Statement elements in the document (every policy element in a section, fragment or
    /// choose branch, except `<base />`).
    pub total: usize,
    /// Those converted (including those with an unsupported part).
    pub converted: usize,
    /// Those left out: position and element name, in document order.
    pub dropped: Vec<(Pos, String)>,
    /// Those converted with an unsupported part (an attribute or value left out, a condition not
    /// evaluated).
    pub incomplete: Vec<(Pos, String)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "converted {}/{} statements", self.converted, self.total)?;
        let list = |items: &[(Pos, String)]| {
            items
                .iter()
                .map(|(p, n)| format!("line {} <{n}>", p.line))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.dropped.is_empty() {
            write!(f, "; dropped: {}", list(&self.dropped))?;
        }
        if !self.incomplete.is_empty() {
            write!(f, "; incomplete: {}", list(&self.incomplete))?;
        }
        Ok(())
    }
}

impl Conversion {
    /// True when nothing was reported as unsupported (notes do not count).
    pub fn is_complete(&self) -> bool {
        self.diagnostics.iter().all(|d| d.kind == Kind::Note)
    }

    /// The diagnostics as lines `file:line:col: unsupported <what>: <reason>`.
    pub fn report(&self, file: &str) -> String {
        self.diagnostics
            .iter()
            .map(|d| format!("{}\n", d.display(file)))
            .collect()
    }

    /// What `import-apim` prints on stderr: the diagnostics, then the summary line
    /// (`file: converted 11/12 statements; dropped: line 34 <send-request>`).
    pub fn stderr(&self, file: &str) -> String {
        format!("{}{file}: {}\n", self.report(file), self.summary)
    }
}

/// Convert an APIM policy document (`<policies>`, a `<fragment>`, or bare policy elements).
/// `file` names the document in comments; `routes` become the routes (none: one catch-all route).
pub fn convert(xml: &str, file: &str, routes: &[RouteSpec]) -> Result<Conversion, XmlError> {
    let roots = xml::parse(xml)?;
    let mut conv = convert::Converter::new(file);
    conv.document(&roots);
    let yaml = gateway::render(&conv, file, routes);
    let (diagnostics, summary) = finish(conv);
    Ok(Conversion {
        yaml,
        diagnostics,
        summary,
    })
}

/// The diagnostics (sorted by position) and the statement count of a finished conversion.
pub(crate) fn finish(conv: convert::Converter) -> (Vec<Diagnostic>, Summary) {
    let mut diagnostics = conv.diags;
    diagnostics.sort_by_key(|d| (d.pos.file, d.pos.line, d.pos.col));
    let mut tally = conv.tally;
    tally.sort_by_key(|t| (t.pos.file, t.pos.line, t.pos.col));
    let summary = Summary {
        total: tally.len(),
        converted: tally.iter().filter(|t| t.emitted).count(),
        dropped: tally
            .iter()
            .filter(|t| !t.emitted)
            .map(|t| (t.pos, t.name.clone()))
            .collect(),
        incomplete: tally
            .iter()
            .filter(|t| t.emitted && t.partial)
            .map(|t| (t.pos, t.name.clone()))
            .collect(),
    };
    (diagnostics, summary)
}
