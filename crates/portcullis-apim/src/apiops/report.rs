//! What `import-apim --apiops` prints on stderr: every finding (`file:line:col: unsupported ...`,
//! once even when a global statement is in every operation's policy), then per API what was
//! imported, per operation its route and policy and what of its policy was left out, then the
//! coverage line.
//!
//! Why per operation: the folder is a whole service; "what does `GET /orders/{id}` do here that
//! APIM did not" is the question a user has, and each operation's composed policy differs.

use std::fmt;

use crate::diag::Kind;

/// A diagnostic with its file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The file, as displayed (the folder as given joined with the file's path).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Unsupported (the import is partial) or a note.
    pub kind: Kind,
    /// The element, attribute or thing concerned.
    pub subject: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Unsupported => "unsupported",
            Kind::Note => "note",
        };
        write!(
            f,
            "{}:{}:{}: {kind} {}: {}",
            self.file, self.line, self.col, self.subject, self.reason
        )
    }
}

/// One operation of an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationReport {
    /// `GET`.
    pub method: String,
    /// The template as the specification writes it.
    pub template: String,
    /// The route made for it (None: dropped).
    pub route: Option<String>,
    /// `route x, policy y: converted 5/6 statements; ...` or why it was dropped.
    pub outcome: String,
}

/// One API folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReport {
    /// The API name.
    pub name: String,
    /// Its `apiInformation.json`.
    pub file: String,
    /// `path /orders, upstream ...` or why it is not served.
    pub summary: String,
    /// Its operations.
    pub operations: Vec<OperationReport>,
}

/// How much of the folder was imported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Operations of the served APIs, and of the APIs not imported (whose count is known).
    pub operations: usize,
    /// Operations with a route.
    pub imported: usize,
    /// Policy statements of the composed policies written.
    pub statements: usize,
    /// Of which converted.
    pub converted: usize,
}

fn percent(part: usize, whole: usize) -> usize {
    (part * 100).checked_div(whole).unwrap_or(100)
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coverage: {}/{} operations imported ({}%), {}/{} policy statements converted ({}%)",
            self.imported,
            self.operations,
            percent(self.imported, self.operations),
            self.converted,
            self.statements,
            percent(self.converted, self.statements)
        )
    }
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every finding, sorted by file and position, each once.
    pub findings: Vec<Finding>,
    /// Per API folder, in folder order.
    pub apis: Vec<ApiReport>,
    /// The coverage line.
    pub coverage: Coverage,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        for api in &self.apis {
            writeln!(f, "api {} ({}): {}", api.name, api.file, api.summary)?;
            for op in &api.operations {
                writeln!(f, "  {} {}: {}", op.method, op.template, op.outcome)?;
            }
        }
        writeln!(f, "{}", self.coverage)
    }
}
