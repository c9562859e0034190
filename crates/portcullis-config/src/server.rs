//! The `server:` block: listeners, admin, token cache, shutdown, threads and their scheduling,
//! telemetry.

use std::time::Duration;

use portcullis_route::{EscapedSlashes, Normalization, PathParameters};

use crate::model::{
    IpNet, Listener, RateLimitStore, RedisStore, Server, StoreFailure, Tls, TraceSecret,
    TraceSettings,
};
use crate::walk::{self, Cx, Fields};
use crate::yaml::{Kind, Node, Pos};

const SERVER_KEYS: &[&str] = &[
    "listen",
    "admin",
    "token-cache",
    "shutdown-grace",
    "threads",
    "work-stealing",
    "path-normalisation",
    "trusted-proxies",
    "rate-limit-store",
    "rate-limit-store-failure",
    "rate-limit-store-timeout",
    "rate-limit-store-pool-size",
    "trace",
    "telemetry",
];

/// Explanations `server.trace` keeps when `max-entries` is not given.
pub const DEFAULT_TRACE_ENTRIES: usize = 100;
/// How long `server.trace` keeps an explanation when `ttl` is not given.
pub const DEFAULT_TRACE_TTL: Duration = Duration::from_secs(600);
/// The header a caller sends the trace key in when `header` is not given.
pub const DEFAULT_TRACE_HEADER: &str = "portcullis-trace";
/// Shortest trace key: a key is all that stands between a caller and the explanations.
const MIN_TRACE_KEY: usize = 16;

/// Verified-token cache size when `token-cache` is not given.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: u64 = 100_000;
/// Shutdown grace when `shutdown-grace` is not given.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bound on one Redis counter operation when `rate-limit-store-timeout` is not given.
pub const DEFAULT_RATE_LIMIT_STORE_TIMEOUT: Duration = Duration::from_millis(100);
/// Multiplexed Redis connections when `rate-limit-store-pool-size` is not given.
pub const DEFAULT_RATE_LIMIT_STORE_POOL_SIZE: usize = 4;
/// Longest `rate-limit-store-timeout`: a request waits this long at most per limit.
const MAX_RATE_LIMIT_STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `server:`; `doc` is where the document starts (for "missing" errors). `--listen` and
/// `--admin` (`opts`) replace the file's listeners and admin address (the file's are still
/// checked when written; a file without `listen` is fine when `--listen` is given).
pub(crate) fn read(
    cx: &mut Cx,
    node: Option<&Node>,
    doc: Pos,
    opts: &crate::LoadOptions,
) -> Server {
    let mut server = read_file(cx, node, doc, opts.listen.is_empty());
    if !opts.listen.is_empty() {
        server.listen = opts
            .listen
            .iter()
            .map(|addr| Listener {
                addr: addr.clone(),
                tls: Vec::new(),
                h2c: false,
            })
            .collect();
    }
    if let Some(admin) = &opts.admin {
        server.admin = Some(admin.clone());
    }
    server
}

/// Whether `text` is a listen (or admin) address: `host:port`, `[v6]:port` (port 0: any free
/// port).
pub fn is_listen_address(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner.ends_with(']') && inner.len() > 1
        } else {
            !host.is_empty() && !host.contains([':', '/', ' '])
        };
        host_ok && port.parse::<u16>().is_ok()
    })
}

fn read_file(cx: &mut Cx, node: Option<&Node>, doc: Pos, listen_required: bool) -> Server {
    let mut server = Server {
        listen: Vec::new(),
        admin: None,
        token_cache_max_entries: DEFAULT_TOKEN_CACHE_ENTRIES,
        shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        threads: None,
        work_stealing: false,
        normalisation: Normalization::default(),
        trusted_proxies: Vec::new(),
        rate_limit_store: RateLimitStore::InProcess,
        trace: None,
        telemetry: None,
    };
    let Some(f) = node.and_then(|n| Fields::new(cx, n, "server", SERVER_KEYS)) else {
        let pos = node.map_or(doc, |n| n.pos);
        if listen_required {
            cx.error(
                pos,
                "no listen address: add `server: { listen: \"127.0.0.1:8080\" }`",
            );
        }
        return server;
    };
    server.listen = listeners(cx, &f, listen_required);
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
    if let Some(n) = f.get("work-stealing") {
        if let Some(b) = walk::boolean(cx, n, "work-stealing") {
            server.work_stealing = b;
        }
    }
    if let Some(n) = f.get("path-normalisation") {
        server.normalisation = normalisation(cx, n);
    }
    if let Some(n) = f.get("trusted-proxies") {
        server.trusted_proxies = trusted_proxies(cx, n);
    }
    server.rate_limit_store = rate_limit_store(cx, &f);
    if let Some(n) = f.get("trace") {
        server.trace = trace(cx, n);
        if server.trace.is_some() && server.admin.is_none() {
            cx.error(
                n.pos,
                "`trace` keeps explanations for the admin listener's `/trace/<id>`: add `server.admin`",
            );
        }
    }
    if let Some(n) = f.get("telemetry") {
        server.telemetry = crate::telemetry::read(cx, n);
    }
    server
}

/// `trace: { key | key-file, header, max-entries, ttl }`.
fn trace(cx: &mut Cx, node: &Node) -> Option<TraceSettings> {
    let f = Fields::new(
        cx,
        node,
        "trace",
        &["key", "key-file", "header", "max-entries", "ttl"],
    )?;
    let key = match (f.get("key"), f.get("key-file")) {
        (Some(_), Some(file)) => {
            cx.error(file.pos, "give `key` or `key-file`, not both");
            None
        }
        (Some(n), None) => walk::non_empty(cx, n, "key").map(|k| (n, k.to_owned())),
        (None, Some(n)) => walk::non_empty(cx, n, "key-file").and_then(|path| {
            let bytes = cx.read_file(n, "trace key file", path)?;
            match String::from_utf8(bytes) {
                Ok(text) => Some((n, text.trim().to_owned())),
                Err(_) => {
                    cx.error(n.pos, format!("trace key file `{path}` is not UTF-8 text"));
                    None
                }
            }
        }),
        (None, None) => {
            cx.error(
                f.pos,
                "`trace` needs a key: `key: \"{{TRACE_KEY}}\"` or `key-file: trace.key`",
            );
            None
        }
    };
    let key = key.and_then(|(n, k)| {
        let ok = k.len() >= MIN_TRACE_KEY
            && k.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Some(k)
        } else {
            cx.error(
                n.pos,
                format!("the trace key must be at least {MIN_TRACE_KEY} visible ASCII characters (no spaces)"),
            );
            None
        }
    });
    let header = match f.get("header") {
        Some(n) => walk::non_empty(cx, n, "header").and_then(|h| {
            let name = http::HeaderName::from_bytes(h.as_bytes()).ok();
            if name.is_none() {
                cx.error(n.pos, format!("`{h}` is not a valid header name"));
            }
            name
        }),
        None => Some(http::HeaderName::from_static(DEFAULT_TRACE_HEADER)),
    };
    let max_entries = match f.get("max-entries") {
        Some(n) => {
            walk::integer_in(cx, n, "max-entries", 1, 10_000).and_then(|v| usize::try_from(v).ok())
        }
        None => Some(DEFAULT_TRACE_ENTRIES),
    };
    let ttl = match f.get("ttl") {
        Some(n) => walk::positive_duration(cx, n, "ttl"),
        None => Some(DEFAULT_TRACE_TTL),
    };
    Some(TraceSettings {
        key: TraceSecret::new(key?),
        header: header?,
        max_entries: max_entries?,
        ttl: ttl?,
    })
}

/// `rate-limit-store: in-process | redis://[user:password@]host[:port][/db]` and its knobs
/// (`rate-limit-store-failure`, `-timeout`, `-pool-size`), which need a Redis store.
fn rate_limit_store(cx: &mut Cx, f: &Fields<'_>) -> RateLimitStore {
    let mut redis = match f.get("rate-limit-store") {
        Some(n) => match walk::non_empty(cx, n, "rate-limit-store") {
            Some("in-process") | None => None,
            Some(text) => redis_url(cx, n, text.trim()).map(|(url, display)| {
                (
                    n,
                    RedisStore {
                        url,
                        display,
                        failure: StoreFailure::Open,
                        timeout: DEFAULT_RATE_LIMIT_STORE_TIMEOUT,
                        pool_size: DEFAULT_RATE_LIMIT_STORE_POOL_SIZE,
                    },
                )
            }),
        },
        None => None,
    };
    // Knobs need a Redis store (an invalid URL still counts: its error is already reported).
    let store_given = f.get("rate-limit-store").is_some_and(
        |n| !matches!(&n.kind, Kind::Str { value, .. } if value.trim() == "in-process"),
    );
    let mut failure_node = None;
    for key in [
        "rate-limit-store-failure",
        "rate-limit-store-timeout",
        "rate-limit-store-pool-size",
    ] {
        let Some(n) = f.get(key) else { continue };
        if !store_given {
            cx.error(
                n.pos,
                format!("`{key}` needs a Redis store: add `rate-limit-store: redis://host:port`"),
            );
            continue;
        }
        let store = redis.as_mut().map(|(_, r)| r);
        match key {
            "rate-limit-store-failure" => {
                failure_node = Some(n);
                let failure = match walk::string(cx, n, key) {
                    Some("open") => Some(StoreFailure::Open),
                    Some("closed") => Some(StoreFailure::Closed),
                    Some(other) => {
                        cx.error(
                            n.pos,
                            format!("`{key}` must be `open` or `closed`, found `{other}`"),
                        );
                        None
                    }
                    None => None,
                };
                if let (Some(store), Some(failure)) = (store, failure) {
                    store.failure = failure;
                }
            }
            "rate-limit-store-timeout" => {
                let timeout = walk::duration(cx, n, key).and_then(|d| {
                    if d.is_zero() || d > MAX_RATE_LIMIT_STORE_TIMEOUT {
                        cx.error(n.pos, format!("`{key}` must be from 1ms to 10s"));
                        return None;
                    }
                    Some(d)
                });
                if let (Some(store), Some(timeout)) = (store, timeout) {
                    store.timeout = timeout;
                }
            }
            _ => {
                let size =
                    walk::integer_in(cx, n, key, 1, 64).and_then(|v| usize::try_from(v).ok());
                if let (Some(store), Some(size)) = (store, size) {
                    store.pool_size = size;
                }
            }
        }
    }
    match redis {
        Some((n, store)) => {
            if store.failure == StoreFailure::Open {
                cx.warning(
                    failure_node.map_or(n.pos, |f| f.pos),
                    "rate-limit-store-failure: open (the default): while Redis cannot answer, \
                     rate limits and quotas are not enforced (calls pass, counted in \
                     portcullis_rate_limit_store_errors_total); `closed` answers 503 instead",
                );
            }
            RateLimitStore::Redis(store)
        }
        None => RateLimitStore::InProcess,
    }
}

/// Checks a Redis URL; returns it and a form without the password, for logs.
fn redis_url(cx: &mut Cx, node: &Node, text: &str) -> Option<(String, String)> {
    let bad = |cx: &mut Cx, why: &str| {
        cx.error(
            node.pos,
            format!("`rate-limit-store` must be `in-process` or `redis://host[:port][/db]`: {why}"),
        );
        None
    };
    let Ok(url) = url::Url::parse(text) else {
        return bad(cx, &format!("`{text}` is not a URL"));
    };
    match url.scheme() {
        "redis" => {}
        "rediss" => return bad(cx, "TLS to Redis (`rediss://`) is not supported"),
        other => return bad(cx, &format!("unsupported scheme `{other}`")),
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return bad(cx, "the URL has no host");
    };
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return bad(cx, &format!("the database `{db}` is not a number"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return bad(cx, "query strings and fragments are not supported");
    }
    let port = url.port().unwrap_or(6379);
    let mut display = String::from("redis://");
    if !url.username().is_empty() {
        display.push_str(url.username());
        if url.password().is_some() {
            display.push_str(":***");
        }
        display.push('@');
    } else if url.password().is_some() {
        display.push_str(":***@");
    }
    display.push_str(&format!("{host}:{port}"));
    if !db.is_empty() {
        display.push_str(&format!("/{db}"));
    }
    Some((text.to_owned(), display))
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

fn listeners(cx: &mut Cx, f: &Fields<'_>, required: bool) -> Vec<Listener> {
    let Some(node) = f.get("listen") else {
        if required {
            cx.error(
                f.pos,
                "no listen address: add `listen: \"127.0.0.1:8080\"` to server",
            );
        }
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
        return addr(cx, node, "listen", value).map(|addr| Listener {
            addr,
            tls: Vec::new(),
            h2c: false,
        });
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
    let f = Fields::new(cx, node, "listen entry", &["addr", "tls", "h2c"])?;
    let Some(a) = f.get("addr") else {
        cx.error(f.pos, "listen entry needs `addr`");
        return None;
    };
    let addr = walk::string(cx, a, "addr").and_then(|s| addr(cx, a, "addr", s))?;
    let tls = f
        .get("tls")
        .map(|t| certificates(cx, t))
        .unwrap_or_default();
    let h2c = match f.get("h2c") {
        Some(n) => {
            let on = walk::boolean(cx, n, "h2c").unwrap_or(false);
            if on && f.get("tls").is_some() {
                cx.error(
                    n.pos,
                    "`h2c` is for plain listeners: a TLS listener offers HTTP/2 by ALPN already",
                );
            }
            on
        }
        None => false,
    };
    Some(Listener { addr, tls, h2c })
}

/// `tls`: one `{cert, key}` pair or a list of them (chosen by SNI, the first is the default).
fn certificates(cx: &mut Cx, node: &Node) -> Vec<Tls> {
    match &node.kind {
        Kind::Seq(items) => {
            if items.is_empty() {
                cx.error(
                    node.pos,
                    "`tls` lists no certificate: give `{cert, key}` or a list of them",
                );
            }
            items.iter().filter_map(|item| tls(cx, item)).collect()
        }
        _ => tls(cx, node).into_iter().collect(),
    }
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
    if is_listen_address(text) {
        Some(text.to_owned())
    } else {
        cx.error(
            node.pos,
            format!("`{what}` must be `host:port` (such as 127.0.0.1:8080), found `{text}`"),
        );
        None
    }
}
