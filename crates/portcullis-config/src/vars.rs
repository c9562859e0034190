//! Named values: `{{name}}` in any string value is replaced before checking.
//!
//! APIM policies refer to named values this way, and `import-apim` keeps them; the demo uses them
//! for ports known only at run time. A value comes from the lookup (the environment by default):
//! first `name` itself, then `name` upper-cased with `-` and `.` as `_`.

use crate::diag::Diags;
use crate::yaml::{Kind, Node};

/// Looks a named value up.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The environment as a [`Lookup`].
pub fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Replaces every placeholder in every string value of the tree (keys are left alone).
pub(crate) fn resolve(node: &mut Node, lookup: Lookup<'_>, diags: &mut Diags) {
    match &mut node.kind {
        Kind::Str { value, substituted } if value.contains("{{") => {
            match substitute(value, lookup) {
                Ok(v) => {
                    *value = v;
                    *substituted = true;
                }
                Err(msg) => {
                    diags.error(node.pos, msg);
                    node.kind = Kind::Unresolved;
                }
            }
        }
        Kind::Seq(items) => items.iter_mut().for_each(|n| resolve(n, lookup, diags)),
        Kind::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| resolve(v, lookup, diags)),
        _ => {}
    }
}

/// The text with each `{{name}}` replaced; an error names the first missing value.
fn substitute(text: &str, lookup: Lookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unclosed named value `{{` (write `{{name}}`)".to_owned());
        };
        let name = after[..end].trim();
        if name.is_empty() {
            return Err("empty named value `{{}}`".to_owned());
        }
        let value = lookup(name)
            .or_else(|| lookup(&env_name(name)))
            .ok_or_else(|| {
                format!(
                    "named value `{{{{{name}}}}}` is not set (set the environment variable `{}`)",
                    env_name(name)
                )
            })?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment variable a named value is also looked up under:
/// `tenant-id.main` -> `TENANT_ID_MAIN`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "port" => Some("8080".into()),
            "TENANT_ID" => Some("abc".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_falls_back_to_env_style() {
        assert_eq!(
            substitute("h:{{port}}/{{tenant-id}}", &vars).as_deref(),
            Ok("h:8080/abc")
        );
        assert_eq!(substitute("{{ port }}", &vars).as_deref(), Ok("8080"));
        assert_eq!(substitute("plain", &vars).as_deref(), Ok("plain"));
    }

    #[test]
    fn missing_and_malformed() {
        let e = substitute("{{nope.x}}", &vars).unwrap_err();
        assert!(e.contains("`{{nope.x}}`") && e.contains("NOPE_X"), "{e}");
        assert!(substitute("{{port", &vars).is_err());
        assert!(substitute("{{}}", &vars).is_err());
    }
}
