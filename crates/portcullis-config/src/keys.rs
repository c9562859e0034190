//! Key sources: `openid-config` and `issuer-signing-keys` entries, and `decryption-keys`.
//!
//! Static key material (jwks-file, n/e, certificate-file, base64, decryption keys) is read and
//! parsed here, with the auth core's own parsers, so a bad key fails `check` instead of the first
//! request. Diagnostics name the entry and the file, never the key material.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use portcullis_auth::{ContentEncryption, DecryptionKey, KeyManagement, VerifyingKey};

use crate::model::{KeyLifecycle, KeySource};
use crate::walk::{self, Cx, Fields};
use crate::yaml::Node;

/// The lifecycle knobs, accepted at policy level and on each remote source.
pub(crate) const LIFECYCLE_KEYS: &[&str] = &[
    "unknown-kid-cooldown",
    "refresh-interval",
    "min-refresh-interval",
    "max-stale",
];

const KEY_KINDS: &[&str] = &["jwks-uri", "jwks-file", "n", "certificate-file", "base64"];
const ENTRY_KEYS: &[&str] = &[
    "jwks-uri",
    "jwks-file",
    "id",
    "n",
    "e",
    "certificate-file",
    "base64",
    "unknown-kid-cooldown",
    "refresh-interval",
    "min-refresh-interval",
    "max-stale",
];

/// HMAC secrets shorter than this are weak for HS256 (RFC 7518 3.2).
const MIN_HMAC_SECRET: usize = 32;

/// Applies the lifecycle knobs present in `f` on top of `base`.
pub(crate) fn lifecycle(cx: &mut Cx, f: &Fields<'_>, base: KeyLifecycle) -> KeyLifecycle {
    let mut l = base;
    let knob = |cx: &mut Cx, key: &str, slot: &mut std::time::Duration| {
        if let Some(d) = f.get(key).and_then(|n| walk::positive_duration(cx, n, key)) {
            *slot = d;
        }
    };
    knob(cx, "unknown-kid-cooldown", &mut l.unknown_kid_cooldown);
    knob(cx, "refresh-interval", &mut l.refresh_interval);
    knob(cx, "min-refresh-interval", &mut l.min_refresh_interval);
    knob(cx, "max-stale", &mut l.max_stale);
    l
}

/// One `openid-config` entry: `{ url, issuers, <lifecycle knobs> }`.
pub(crate) fn openid_config(cx: &mut Cx, node: &Node, base: KeyLifecycle) -> Option<KeySource> {
    let mut known = vec!["url", "issuers"];
    known.extend_from_slice(LIFECYCLE_KEYS);
    let f = Fields::new(cx, node, "openid-config entry", &known)?;
    let Some(u) = f.get("url") else {
        cx.error(f.pos, "openid-config entry needs `url`");
        return None;
    };
    let url = key_url(cx, u, "url");
    let issuers = f
        .get("issuers")
        .map(|n| walk::string_list(cx, n, "issuers"))
        .unwrap_or_default();
    let lifecycle = lifecycle(cx, &f, base);
    Some(KeySource::OpenIdConfig {
        url: url?.to_owned(),
        issuers,
        lifecycle,
    })
}

/// A key or discovery URL: http(s), and a warning for plain http to anything but loopback (keys
/// fetched that way can be swapped by anyone on the path, and with them any token minted).
pub(crate) fn key_url<'n>(cx: &mut Cx, node: &'n Node, what: &str) -> Option<&'n str> {
    let (url, text) = walk::http_url(cx, node, what)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        cx.warning(
            node.pos,
            format!("`{what}` fetches signing keys over plain http from a non-loopback host: anyone on the path can replace them; use https"),
        );
    }
    Some(text)
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One `issuer-signing-keys` entry.
pub(crate) fn signing_key(cx: &mut Cx, node: &Node, base: KeyLifecycle) -> Option<KeySource> {
    let f = Fields::new(cx, node, "issuer-signing-keys entry", ENTRY_KEYS)?;
    let kinds: Vec<&str> = KEY_KINDS
        .iter()
        .copied()
        .filter(|k| f.key(k).is_some())
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] if f.key("e").is_some() => {
            cx.error(
                f.pos,
                "key entry has `e` but no `n` (an RSA key needs both)",
            );
            return None;
        }
        [] => {
            cx.error(
                f.pos,
                "key entry needs one of `jwks-uri`, `jwks-file`, `n`/`e`, `certificate-file`, `base64`",
            );
            return None;
        }
        [a, b, ..] => {
            cx.error(
                f.pos,
                format!("key entry has both `{a}` and `{b}`: one source per entry"),
            );
            return None;
        }
    };
    check_extras(cx, &f, kind);
    let id = f.text(cx, "id");
    let node = f.get(kind).or_else(|| f.key(kind))?;
    match kind {
        "jwks-uri" => {
            let url = key_url(cx, node, "jwks-uri");
            let lifecycle = lifecycle(cx, &f, base);
            Some(KeySource::JwksUri {
                url: url?.to_owned(),
                lifecycle,
            })
        }
        "jwks-file" => jwks_file(cx, node),
        "n" => rsa_components(cx, &f, id),
        "certificate-file" => certificate_file(cx, node, id),
        _ => hmac(cx, node, id),
    }
}

/// Reports keys that do not belong with the entry's kind.
fn check_extras(cx: &mut Cx, f: &Fields<'_>, kind: &str) {
    if kind != "n" {
        if let Some(k) = f.key("e") {
            cx.error(k.pos, "`e` belongs to an `n`/`e` RSA key entry");
        }
    }
    if kind != "jwks-uri" {
        for knob in LIFECYCLE_KEYS {
            if let Some(k) = f.key(knob) {
                cx.error(
                    k.pos,
                    format!(
                        "`{knob}` applies to remote keys (jwks-uri, openid-config), not `{kind}`"
                    ),
                );
            }
        }
    }
    if kind == "jwks-uri" || kind == "jwks-file" {
        if let Some(k) = f.key("id") {
            cx.error(
                k.pos,
                format!("`id` applies to single keys (n/e, certificate-file, base64); a `{kind}` document carries its own kids"),
            );
        }
    }
}

fn jwks_file(cx: &mut Cx, node: &Node) -> Option<KeySource> {
    let path = walk::non_empty(cx, node, "jwks-file")?;
    let bytes = cx.read_file(node, "jwks-file", path)?;
    let label = format!("jwks-file {path}");
    match portcullis_auth::parse_jwks(&bytes, &label) {
        Ok(parsed) => {
            for skipped in &parsed.skipped {
                let kid = skipped.kid.as_deref().unwrap_or("(no kid)");
                cx.warning(
                    node.pos,
                    format!("jwks-file `{path}`: key {kid} skipped: {}", skipped.reason),
                );
            }
            if parsed.keys.is_empty() {
                cx.error(node.pos, format!("jwks-file `{path}` has no usable key"));
                return None;
            }
            Some(KeySource::Static {
                label,
                keys: parsed.keys,
            })
        }
        Err(e) => {
            cx.error(node.pos, format!("malformed jwks-file `{path}`: {e}"));
            None
        }
    }
}

fn rsa_components(cx: &mut Cx, f: &Fields<'_>, id: Option<String>) -> Option<KeySource> {
    let n_node = f.get("n").or_else(|| f.key("n"))?;
    let n = walk::non_empty(cx, n_node, "n");
    let e = match f.get("e") {
        Some(node) => walk::non_empty(cx, node, "e"),
        None => {
            cx.error(
                f.pos,
                "key entry has `n` but no `e` (an RSA key needs both)",
            );
            None
        }
    };
    let (n, e) = (n?, e?);
    let label = format!("inline n/e kid={}", id.as_deref().unwrap_or("(none)"));
    match VerifyingKey::from_rsa_components(id, n, e, &label) {
        Ok(key) => Some(KeySource::Static {
            label,
            keys: vec![key],
        }),
        Err(err) => {
            cx.error(n_node.pos, format!("malformed RSA key: {err}"));
            None
        }
    }
}

fn certificate_file(cx: &mut Cx, node: &Node, id: Option<String>) -> Option<KeySource> {
    let path = walk::non_empty(cx, node, "certificate-file")?;
    let bytes = cx.read_file(node, "certificate-file", path)?;
    let label = format!("certificate-file {path}");
    match VerifyingKey::from_pem(id, &bytes, &label) {
        Ok(keys) => Some(KeySource::Static { label, keys }),
        Err(e) => {
            cx.error(
                node.pos,
                format!("malformed certificate-file `{path}`: {e}"),
            );
            None
        }
    }
}

fn hmac(cx: &mut Cx, node: &Node, id: Option<String>) -> Option<KeySource> {
    let text = walk::non_empty(cx, node, "base64")?;
    let Some(secret) = decode_base64(text.trim()) else {
        cx.error(
            node.pos,
            "`base64` is not base64 (standard or URL-safe alphabet)",
        );
        return None;
    };
    if secret.is_empty() {
        cx.error(node.pos, "`base64` HMAC secret is empty");
        return None;
    }
    if secret.len() < MIN_HMAC_SECRET {
        cx.warning(
            node.pos,
            format!(
                "HMAC secret is {} bytes; use at least {MIN_HMAC_SECRET} for HS256",
                secret.len()
            ),
        );
    }
    let label = format!("base64 secret kid={}", id.as_deref().unwrap_or("(none)"));
    let key = VerifyingKey::from_hmac_secret(id, &secret, &label);
    Some(KeySource::Static {
        label,
        keys: vec![key],
    })
}

const DECRYPTION_KEY_FIELDS: &[&str] = &["value", "file", "id", "alg", "enc"];

/// `decryption-keys`: `[{ value: <base64 symmetric key> | file: <RSA private key PEM>, id?, alg?,
/// enc? }]`, tried in order (APIM's `decryption-keys`: inline base64 keys, or a certificate's
/// private key, here a PEM file).
pub(crate) fn decryption_keys(cx: &mut Cx, node: &Node) -> Vec<DecryptionKey> {
    let Some(items) = walk::list(cx, node, "decryption-keys") else {
        return Vec::new();
    };
    if items.is_empty() {
        cx.error(
            node.pos,
            "empty `decryption-keys`: list at least one key, or remove the key",
        );
    }
    items
        .iter()
        .filter_map(|item| decryption_key(cx, item))
        .collect()
}

fn decryption_key(cx: &mut Cx, node: &Node) -> Option<DecryptionKey> {
    let f = Fields::new(cx, node, "decryption-keys entry", DECRYPTION_KEY_FIELDS)?;
    let errors_before = cx.errors();
    let id = f.text(cx, "id");
    let alg = f.get("alg").and_then(|n| {
        let name = walk::non_empty(cx, n, "alg")?.trim();
        KeyManagement::parse_configured(name)
            .map_err(|e| cx.error(n.pos, e.0))
            .ok()
    });
    let enc = f.get("enc").map(|n| enc_list(cx, n)).unwrap_or_default();
    let material = match (f.get("value"), f.get("file")) {
        (Some(v), None) => Some((v, true)),
        (None, Some(p)) => Some((p, false)),
        (Some(_), Some(p)) => {
            cx.error(
                p.pos,
                "decryption key has both `value` and `file`: one key per entry",
            );
            None
        }
        (None, None) => {
            cx.error(
                f.pos,
                "decryption key needs `value` (base64 symmetric key) or `file` (RSA private key PEM)",
            );
            None
        }
    };
    let (node, symmetric) = material?;
    if cx.errors() != errors_before {
        return None;
    }
    if symmetric {
        let text = walk::non_empty(cx, node, "value")?;
        let Some(secret) = decode_base64(text.trim()) else {
            cx.error(
                node.pos,
                "decryption key `value` is not base64 (standard or URL-safe alphabet)",
            );
            return None;
        };
        let label = format!("decryption key kid={}", id.as_deref().unwrap_or("(none)"));
        DecryptionKey::symmetric(id, &secret, alg, enc, &label)
            .map_err(|e| cx.error(node.pos, format!("decryption key `value`: {e}")))
            .ok()
    } else {
        let path = walk::non_empty(cx, node, "file")?;
        let bytes = cx.read_file(node, "decryption key file", path)?;
        let label = format!("decryption key file {path}");
        DecryptionKey::rsa_from_pem(id, &bytes, alg, enc, &label)
            .map_err(|e| cx.error(node.pos, format!("decryption key file `{path}`: {e}")))
            .ok()
    }
}

/// `enc`: one content encryption name or a list of them.
fn enc_list(cx: &mut Cx, node: &Node) -> Vec<ContentEncryption> {
    let items: Vec<&Node> = match &node.kind {
        crate::yaml::Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    items
        .into_iter()
        .filter_map(|item| {
            let name = walk::non_empty(cx, item, "enc")?.trim();
            ContentEncryption::parse_configured(name)
                .map_err(|e| cx.error(item.pos, e.0))
                .ok()
        })
        .collect()
}

/// Standard or URL-safe alphabet, padding optional.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|a| GeneralPurpose::new(a, config).decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_alphabets_and_padding() {
        assert_eq!(decode_base64("AQID").as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(decode_base64("-_8").as_deref(), Some(&[0xfbu8, 0xff][..]));
        assert_eq!(decode_base64("+/8=").as_deref(), Some(&[0xfbu8, 0xff][..]));
        assert_eq!(decode_base64("!!"), None);
    }
}
