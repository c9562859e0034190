//! Typed reads from the YAML tree that report, rather than stop at, what is wrong.
//!
//! Every reader returns `None` after recording a diagnostic, so the checker carries on and the user
//! sees every problem of the file in one run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Diags;
use crate::yaml::{Kind, Node, Pos};

/// Checking context: the diagnostics and the directory relative paths are resolved against.
pub(crate) struct Cx {
    pub diags: Diags,
    pub base_dir: PathBuf,
    /// `backends:` (the first `named_backends`), then each distinct `set-backend-service`
    /// `base-url` as the policies are read: becomes [`crate::Model::backends`].
    pub backends: Vec<crate::model::Backend>,
    /// How many of `backends` come from `backends:` (what `backend-id` may name).
    pub named_backends: usize,
    /// `--map-upstream FROM=TO`: applied to every upstream URL as it is read ([`upstream_url`]).
    pub upstream_map: Vec<crate::UpstreamMap>,
}

impl Cx {
    /// Errors recorded so far.
    pub fn errors(&self) -> usize {
        self.diags.errors()
    }

    pub fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.error(pos, msg);
    }

    pub fn warning(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.warning(pos, msg);
    }

    /// A path from the config, relative to the config file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Reads a file named in the config; reports it when unreadable.
    pub fn read_file(&mut self, node: &Node, what: &str, path: &str) -> Option<Vec<u8>> {
        match std::fs::read(self.resolve(path)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.error(node.pos, format!("cannot read {what} `{path}`: {e}"));
                None
            }
        }
    }
}

/// The string-keyed entries of a mapping, first occurrence of each key.
pub(crate) struct Fields<'n> {
    /// Where the mapping starts.
    pub pos: Pos,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// A mapping whose keys must be among `known`; unknown, duplicate and non-string keys are
    /// reported. `None` (reported) when the node is not a mapping.
    pub fn new(cx: &mut Cx, node: &'n Node, section: &str, known: &[&str]) -> Option<Self> {
        let fields = Fields::open(cx, node, section)?;
        for (key, key_node, _) in &fields.entries {
            if !known.contains(key) {
                let hint = suggest(key, known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                cx.error(
                    key_node.pos,
                    format!("unknown key `{key}` in {section}{hint}"),
                );
            }
        }
        Some(fields)
    }

    /// A mapping with free-form keys (policy names, header names); duplicates and non-string keys
    /// are reported.
    pub fn open(cx: &mut Cx, node: &'n Node, section: &str) -> Option<Self> {
        let Kind::Map(raw) = &node.kind else {
            if node.kind != Kind::Null && node.kind != Kind::Unresolved {
                cx.error(
                    node.pos,
                    format!(
                        "{section} must be a mapping, found {}",
                        node.kind.describe()
                    ),
                );
            }
            return None;
        };
        let mut entries: Vec<(&str, &Node, &Node)> = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let Kind::Str { value: key, .. } = &k.kind else {
                cx.error(
                    k.pos,
                    format!(
                        "keys in {section} must be strings, found {}",
                        k.kind.describe()
                    ),
                );
                continue;
            };
            if let Some((_, first, _)) = entries.iter().find(|(name, _, _)| *name == key) {
                let line = first.pos.line;
                cx.error(
                    k.pos,
                    format!("duplicate key `{key}` in {section} (first at line {line})"),
                );
                continue;
            }
            entries.push((key.as_str(), k, v));
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    /// The value of `key`, when present and not null.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| *k == key && v.kind != Kind::Null)
            .map(|(_, _, v)| *v)
    }

    /// An optional non-empty string value (reported when present but wrong).
    pub fn text(&self, cx: &mut Cx, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|n| non_empty(cx, n, key))
            .map(str::to_owned)
    }

    /// An optional delimiter string: whitespace such as `" "` is a real value, only `""` is wrong.
    pub fn delimiter(&self, cx: &mut Cx, key: &str) -> Option<String> {
        let node = self.get(key)?;
        let s = string(cx, node, key)?;
        if s.is_empty() {
            cx.error(node.pos, format!("`{key}` must not be empty"));
            return None;
        }
        Some(s.to_owned())
    }

    /// The key node of `key` (for "set here" positions), null values included.
    pub fn key(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| *k)
    }

    /// Entries in file order: (key, key node, value node).
    pub fn entries(&self) -> &[(&'n str, &'n Node, &'n Node)] {
        &self.entries
    }
}

/// The closest known key within edit distance 2, for "did you mean".
pub(crate) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= 2 || k.starts_with(word) || word.starts_with(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn expected(cx: &mut Cx, node: &Node, what: &str, wanted: &str) {
    if node.kind == Kind::Unresolved {
        return;
    }
    let hint = match node.kind {
        Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) if wanted == "a string" => " (quote it)",
        _ => "",
    };
    cx.error(
        node.pos,
        format!(
            "`{what}` must be {wanted}, found {}{hint}",
            node.kind.describe()
        ),
    );
}

/// A string value.
pub(crate) fn string<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n str> {
    match &node.kind {
        Kind::Str { value, .. } => Some(value),
        _ => {
            expected(cx, node, what, "a string");
            None
        }
    }
}

/// A string that is not empty.
pub(crate) fn non_empty<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n str> {
    let s = string(cx, node, what)?;
    if s.trim().is_empty() {
        cx.error(node.pos, format!("`{what}` must not be empty"));
        return None;
    }
    Some(s)
}

/// A boolean (or a placeholder that resolved to `true`/`false`).
pub(crate) fn boolean(cx: &mut Cx, node: &Node, what: &str) -> Option<bool> {
    match &node.kind {
        Kind::Bool(b) => Some(*b),
        Kind::Str {
            value,
            substituted: true,
        } if value == "true" || value == "false" => Some(value == "true"),
        _ => {
            expected(cx, node, what, "true or false");
            None
        }
    }
}

/// An integer (or a placeholder that resolved to one).
pub(crate) fn integer(cx: &mut Cx, node: &Node, what: &str) -> Option<i128> {
    match &node.kind {
        Kind::Int(i) => Some(*i),
        Kind::Str {
            value,
            substituted: true,
        } if value.parse::<i128>().is_ok() => value.parse().ok(),
        _ => {
            expected(cx, node, what, "an integer");
            None
        }
    }
}

/// An integer in `min..=max`.
pub(crate) fn integer_in(
    cx: &mut Cx,
    node: &Node,
    what: &str,
    min: i128,
    max: i128,
) -> Option<i128> {
    let i = integer(cx, node, what)?;
    if i < min || i > max {
        cx.error(
            node.pos,
            format!("`{what}` must be between {min} and {max}, found {i}"),
        );
        return None;
    }
    Some(i)
}

/// An HTTP status for a failure answer (400-599).
pub(crate) fn failure_status(cx: &mut Cx, node: &Node, what: &str) -> Option<u16> {
    let i = integer(cx, node, what)?;
    match u16::try_from(i) {
        Ok(code) if (400..=599).contains(&code) => Some(code),
        _ => {
            cx.error(
                node.pos,
                format!("`{what}` must be an HTTP error status (400-599), found {i}"),
            );
            None
        }
    }
}

/// A duration: integer seconds, or text such as `30s`, `1h`, `500ms`, `1h 30m`.
pub(crate) fn duration(cx: &mut Cx, node: &Node, what: &str) -> Option<Duration> {
    match &node.kind {
        Kind::Int(i) if *i < 0 => {
            cx.error(
                node.pos,
                format!("`{what}` must not be negative, found {i}"),
            );
            None
        }
        Kind::Int(i) => match u64::try_from(*i) {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                cx.error(node.pos, format!("`{what}` is too large"));
                None
            }
        },
        Kind::Str { value, .. } => parse_duration_text(cx, node, what, value),
        _ => {
            expected(
                cx,
                node,
                what,
                "a duration (\"30s\", \"1h\", \"500ms\" or seconds)",
            );
            None
        }
    }
}

fn parse_duration_text(cx: &mut Cx, node: &Node, what: &str, text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.starts_with('-') {
        cx.error(
            node.pos,
            format!("`{what}` must not be negative, found {text}"),
        );
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.error(
                node.pos,
                format!("`{what}` is not a duration (\"30s\", \"1h\", \"500ms\" or seconds): {e}"),
            );
            None
        }
    }
}

/// A duration that must be above zero.
pub(crate) fn positive_duration(cx: &mut Cx, node: &Node, what: &str) -> Option<Duration> {
    let d = duration(cx, node, what)?;
    if d.is_zero() {
        cx.error(node.pos, format!("`{what}` must be greater than zero"));
        return None;
    }
    Some(d)
}

/// The items of a list (a null value is an empty list).
pub(crate) fn list<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n [Node]> {
    match &node.kind {
        Kind::Seq(items) => Some(items),
        _ => {
            expected(cx, node, what, "a list");
            None
        }
    }
}

/// A list of non-empty strings. Empty list allowed (callers decide).
pub(crate) fn string_list(cx: &mut Cx, node: &Node, what: &str) -> Vec<String> {
    let Some(items) = list(cx, node, what) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| non_empty(cx, item, what).map(str::to_owned))
        .collect()
}

/// An upstream URL (route upstream, `backends:` url, `set-backend-service` base-url): as
/// [`http_url`], after `--map-upstream` ([`Cx::upstream_map`]) rewrote its origin. The text is
/// the mapped URL; a problem with it is reported at the node, naming the mapping's result.
pub(crate) fn upstream_url(cx: &mut Cx, node: &Node, what: &str) -> Option<(url::Url, String)> {
    let (url, text) = http_url(cx, node, what)?;
    match crate::map_upstream(&cx.upstream_map, text) {
        None => Some((url, text.to_owned())),
        Some(mapped) => match url::Url::parse(&mapped) {
            Ok(u) if u.has_host() => Some((u, mapped)),
            _ => {
                cx.error(
                    node.pos,
                    format!("`{what}` `{text}` mapped by --map-upstream to `{mapped}`, which is not a valid URL"),
                );
                None
            }
        },
    }
}

/// A URL with an http or https scheme and a host: parsed, and as written (which is what is used,
/// so that nothing is re-encoded behind the user's back).
pub(crate) fn http_url<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<(url::Url, &'n str)> {
    let text = non_empty(cx, node, what)?.trim();
    match url::Url::parse(text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.has_host() => Some((u, text)),
        Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
            cx.error(
                node.pos,
                format!(
                    "`{what}` must be an http or https URL, found scheme `{}`",
                    u.scheme()
                ),
            );
            None
        }
        Ok(_) => {
            cx.error(node.pos, format!("`{what}` has no host: `{text}`"));
            None
        }
        Err(e) => {
            cx.error(
                node.pos,
                format!("`{what}` is not a valid URL: {e}: `{text}`"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("audience", &["audiences", "issuers"]),
            Some("audiences")
        );
        assert_eq!(suggest("zzz", &["audiences", "issuers"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
