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
