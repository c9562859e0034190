//! What the converter tells the user: every piece of the policy it could not convert (`unsupported`,
//! which makes the conversion partial) and every piece it converted with a caveat (`note`).
//!
//! Why not silent: an APIM policy that silently lost a check would let requests through that APIM
//! rejects, so each dropped element or attribute is named with its position in the XML.

use std::fmt;

use crate::xml::Pos;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Not converted: the output does not do what the XML does (exit 3).
    Unsupported,
    /// Converted, with a caveat worth reading.
    Note,
}

/// One diagnostic, positioned in the XML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the XML.
    pub pos: Pos,
    /// Unsupported or note.
    pub kind: Kind,
    /// The element or attribute concerned, as written (`validate-jwt`, `token-value`).
    pub subject: String,
    /// Why.
    pub reason: String,
}

impl Diagnostic {
    /// An unsupported element or attribute.
    pub fn unsupported(pos: Pos, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Diagnostic {
            pos,
            kind: Kind::Unsupported,
            subject: subject.into(),
            reason: reason.into(),
        }
    }

    /// A caveat on something converted.
    pub fn note(pos: Pos, subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Diagnostic {
            kind: Kind::Note,
            ..Diagnostic::unsupported(pos, subject, reason)
        }
    }

    /// `file:line:col: unsupported <subject>: <reason>` (or `note`).
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        Rendered { diag: self, file }
    }
}

struct Rendered<'a> {
    diag: &'a Diagnostic,
    file: &'a str,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        let kind = match d.kind {
            Kind::Unsupported => "unsupported",
            Kind::Note => "note",
        };
        write!(
            f,
            "{}:{}: {kind} {}: {}",
            self.file, d.pos, d.subject, d.reason
        )
    }
}
