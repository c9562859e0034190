//! Diagnostics: `file:line:col: severity: message`, collected, never thrown one at a time.

use std::fmt;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Makes the config invalid (exit 2).
    Error,
    /// Dangerous but allowed.
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File as given on the command line.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// Human message.
    pub message: String,
}

impl Diagnostic {
    /// An error.
    pub fn error(file: impl Into<String>, line: usize, col: usize, msg: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            col,
            severity: Severity::Error,
            message: msg.into(),
        }
    }

    /// A warning.
    pub fn warning(
        file: impl Into<String>,
        line: usize,
        col: usize,
        msg: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, line, col, msg)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, sev, self.message
        )
    }
}

/// Collects diagnostics for one file while the checker walks it.
#[derive(Debug)]
pub(crate) struct Diags {
    file: String,
    items: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn new(file: String) -> Self {
        Diags {
            file,
            items: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, pos: crate::yaml::Pos, msg: impl Into<String>) {
        let d = Diagnostic::error(self.file.clone(), pos.line, pos.col, msg);
        self.items.push(d);
    }

    pub(crate) fn warning(&mut self, pos: crate::yaml::Pos, msg: impl Into<String>) {
        let d = Diagnostic::warning(self.file.clone(), pos.line, pos.col, msg);
        self.items.push(d);
    }

    /// How many errors so far (callers skip follow-on checks after an error in a section).
    pub(crate) fn errors(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Every diagnostic in file order (stable for equal positions), and whether any is an error.
    pub(crate) fn finish(mut self) -> (Vec<Diagnostic>, bool) {
        self.items.sort_by_key(|d| (d.line, d.col));
        let failed = self.items.iter().any(|d| d.severity == Severity::Error);
        (self.items, failed)
    }
}
