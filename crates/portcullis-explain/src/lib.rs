//! Why a request passes or is refused, in words: the explanation model that `portcullis explain`
//! prints and that a traced request (`server.trace`) leaves at the admin listener, the fix sentence
//! for every reason code, and the report of a token (decoded header and claims, each claim rule with
//! expected and found values).
//!
//! Why a crate of its own: the wording is what a newcomer reads when a token is refused, so it must
//! be tested thoroughly, and those tests should not wait for pingora to build. Nothing here decides
//! anything: the proxy's own route matching, pipeline and auth core decide, and record what they
//! decided into an [`Explanation`] (only when a recorder is present; see `portcullis-proxy`). This
//! crate turns those records and the typed [`portcullis_auth::AuthError`] into sentences. Like the
//! auth core it reads no clock and does no I/O: time comes in as a parameter.
#![warn(missing_docs)]

pub mod advice;
pub mod model;
pub mod render;
pub mod token;

pub use advice::{fix_for, token_fix, Facts};
pub use model::{
    Explanation, Outcome, RequestSummary, RouteCheck, RuleCheck, StepNote, TokenReport, Verdict,
};
pub use render::render_text;
pub use token::{excerpt, report, TokenInput};
