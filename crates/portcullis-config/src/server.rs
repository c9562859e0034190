//! The `server:` block: listeners, admin, token cache, shutdown, threads.

use std::time::Duration;

use portcullis_route::{EscapedSlashes, Normalization, PathParameters};

use crate::model::{IpNet, Listener, Server, Tls};
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

const SERVER_KEYS: &[&str] = &[
    "listen",
    "admin",
    "token-cache",
    "shutdown-grace",
    "threads",
    "path-normalisation",
    "trusted-proxies",
];

/// Verified-token cache size when `token-cache` is not given.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: u64 = 100_000;
/// Shutdown grace when `shutdown-grace` is not given.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Reads `server:`; `doc` is where the document starts (for "missing" errors).
pub(crate) fn read(cx: &mut Cx, node: Option<&Node>, doc: Pos) -> Server {
    let mut server = Server {
        listen: Vec::new(),
        admin: None,
        token_cache_max_entries: DEFAULT_TOKEN_CACHE_ENTRIES,
        shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        threads: None,
        normalisation: Normalization::default(),
        trusted_proxies: Vec::new(),
    };
    let Some(f) = node.and_then(|n| Fields::new(cx, n, "server", SERVER_KEYS)) else {
        let pos = node.map_or(doc, |n| n.pos);
        cx.error(
            pos,
            "no listen address: add `server: { listen: \"127.0.0.1:8080\" }`",
        );
        return server;
    };
    server.listen = listeners(cx, &f);
    if let Some(n) = f.get("admin") {
        server.admin = walk::string(cx, n, "admin").and_then(|a| addr(cx, n, "admin", a));
        if let Some(admin) = &server.admin {
            if server.listen.iter().any(|l| &l.addr == admin) && !admin.ends_with(":0") {
                cx.error(
                    n.pos,
                    format!("admin address `{admin}` is also a proxy listener"),
                );
            }
        }
    }
    if let Some(n) = f.get("token-cache") {
        if let Some(tc) = Fields::new(cx, n, "token-cache", &["max-entries"]) {
            if let Some(m) = tc.get("max-entries") {
                if let Some(v) = walk::integer_in(cx, m, "max-entries", 0, i128::from(u32::MAX)) {
                    server.token_cache_max_entries = u64::try_from(v).unwrap_or(0);
                }
            }
        }
    }
    if let Some(n) = f.get("shutdown-grace") {
        if let Some(d) = walk::duration(cx, n, "shutdown-grace") {
            server.shutdown_grace = d;
        }
    }
    if let Some(n) = f.get("threads") {
        server.threads =
            walk::integer_in(cx, n, "threads", 1, 1024).and_then(|t| usize::try_from(t).ok());
    }
    if let Some(n) = f.get("path-normalisation") {
        server.normalisation = normalisation(cx, n);
    }
    if let Some(n) = f.get("trusted-proxies") {
        server.trusted_proxies = trusted_proxies(cx, n);
    }
    server
}

/// `path-normalisation: { escaped-slashes: reject | keep, path-parameters: reject | strip }`.
/// Both loosen what the gateway accepts, so each is warned about where it is set.
fn normalisation(cx: &mut Cx, node: &Node) -> Normalization {
    let mut out = Normalization::default();
    let keys = ["escaped-slashes", "path-parameters"];
    let Some(f) = Fields::new(cx, node, "path-normalisation", &keys) else {
        return out;
    };
    if let Some(n) = f.get("escaped-slashes") {
        match walk::string(cx, n, "escaped-slashes") {
            Some("reject") => {}
            Some("keep") => {
                out.escaped_slashes = EscapedSlashes::Keep;
                cx.warning(
                    n.pos,
                    "escaped-slashes: keep forwards %2F and %5C undecoded: a backend that decodes them into separators reads a path the gateway did not match",
                );
            }
            Some(other) => cx.error(
                n.pos,
                format!("`escaped-slashes` must be `reject` or `keep`, found `{other}`"),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("path-parameters") {
        match walk::string(cx, n, "path-parameters") {
            Some("reject") => {}
            Some("strip") => out.path_parameters = PathParameters::Strip,
            Some(other) => cx.error(
                n.pos,
                format!("`path-parameters` must be `reject` or `strip`, found `{other}`"),
            ),
            None => {}
        }
    }
    out
}

/// `trusted-proxies`: addresses or CIDR ranges; a range holding every address is warned about.
fn trusted_proxies(cx: &mut Cx, node: &Node) -> Vec<IpNet> {
    let Some(items) = walk::list(cx, node, "trusted-proxies") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(text) = walk::non_empty(cx, item, "trusted-proxies") else {
            continue;
        };
        let Some(net) = IpNet::parse(text.trim()) else {
            cx.error(
                item.pos,
                format!("`{text}` is not an IP address or CIDR range (`10.0.0.0/8`, `::1`)"),
            );
            continue;
        };
        if net.prefix == 0 {
            cx.warning(
                item.pos,
                format!(
                    "trusted-proxies `{text}` trusts every client: any caller can then set \
                     X-Forwarded-For, -Proto, -Host and -Port"
                ),
            );
        }
        out.push(net);
    }
    out
}

fn listeners(cx: &mut Cx, f: &Fields<'_>) -> Vec<Listener> {
    let Some(node) = f.get("listen") else {
        cx.error(
            f.pos,
            "no listen address: add `listen: \"127.0.0.1:8080\"` to server",
        );
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    if items.is_empty() {
        cx.error(node.pos, "no listen address: `listen` is empty");
    }
    let mut out: Vec<Listener> = Vec::new();
    for item in items {
        let Some(listener) = listener(cx, item) else {
            continue;
        };
        if out.iter().any(|l| l.addr == listener.addr) && !listener.addr.ends_with(":0") {
            cx.error(
                item.pos,
                format!("duplicate listen address `{}`", listener.addr),
            );
        }
        out.push(listener);
    }
    out
}

fn listener(cx: &mut Cx, node: &Node) -> Option<Listener> {
    if let Kind::Str { value, .. } = &node.kind {
        return addr(cx, node, "listen", value).map(|addr| Listener { addr, tls: None });
    }
    if node.kind == Kind::Unresolved {
        return None;
    }
    if !matches!(node.kind, Kind::Map(_)) {
        cx.error(
            node.pos,
            format!(
                "`listen` entries must be \"host:port\" strings or {{addr, tls}}, found {}",
                node.kind.describe()
            ),
        );
        return None;
    }
    let f = Fields::new(cx, node, "listen entry", &["addr", "tls"])?;
    let Some(a) = f.get("addr") else {
        cx.error(f.pos, "listen entry needs `addr`");
        return None;
    };
    let addr = walk::string(cx, a, "addr").and_then(|s| addr(cx, a, "addr", s))?;
    let tls = f.get("tls").and_then(|t| tls(cx, t));
    Some(Listener { addr, tls })
}

fn tls(cx: &mut Cx, node: &Node) -> Option<Tls> {
    let f = Fields::new(cx, node, "tls", &["cert", "key"])?;
    let file = |cx: &mut Cx, key: &str| {
        let Some(n) = f.get(key) else {
            cx.error(f.pos, format!("tls needs `{key}` (a PEM file)"));
            return None;
        };
        let path = walk::non_empty(cx, n, key)?;
        let bytes = cx.read_file(n, &format!("tls {key}"), path)?;
        if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            cx.error(n.pos, format!("tls {key} `{path}` is not a PEM file"));
            return None;
        }
        Some(cx.resolve(path))
    };
    let cert = file(cx, "cert");
    let key = file(cx, "key");
    Some(Tls {
        cert: cert?,
        key: key?,
    })
}

/// Checks `host:port` (IPv6 in brackets; port 0 allowed).
fn addr(cx: &mut Cx, node: &Node, what: &str, text: &str) -> Option<String> {
    let ok = text.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner.ends_with(']') && inner.len() > 1
        } else {
            !host.is_empty() && !host.contains([':', '/', ' '])
        };
        host_ok && port.parse::<u16>().is_ok()
    });
    if ok {
        Some(text.to_owned())
    } else {
        cx.error(
            node.pos,
            format!("`{what}` must be `host:port` (such as 127.0.0.1:8080), found `{text}`"),
        );
        None
    }
}
