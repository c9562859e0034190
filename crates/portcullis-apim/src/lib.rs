//! APIM policy XML -> gateway YAML.
//!
//! Why it exists: people replacing Azure API Management in development already have their policies
//! as XML; pasting the XML and getting a working gateway.yaml is the shortest road. The conversion is
//! pure ([`convert`]: text in, YAML text and diagnostics out); the command ([`run`]) reads the file
//! and writes the result. Nothing is dropped silently: every element, attribute or expression that
//! has no gateway.yaml equivalent is reported as `file:line:col: unsupported <what>: <reason>`.
#![warn(missing_docs)]

mod cli;
mod convert;
pub mod diag;
pub mod expr;
mod fields;
pub mod gateway;
mod inbound;
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
}

/// Convert an APIM policy document (`<policies>`, a `<fragment>`, or bare policy elements).
/// `file` names the document in comments; `routes` become the routes (none: one catch-all route).
pub fn convert(xml: &str, file: &str, routes: &[RouteSpec]) -> Result<Conversion, XmlError> {
    let roots = xml::parse(xml)?;
    let mut conv = convert::Converter::new(file);
    conv.document(&roots);
    let yaml = gateway::render(&conv, file, routes);
    let mut diagnostics = conv.diags;
    diagnostics.sort_by_key(|d| d.pos);
    Ok(Conversion { yaml, diagnostics })
}
