//! Property test of the canonicaliser and the matcher together: for random request paths built
//! from the pieces routing tricks are made of (`.`, `..`, `/`, `%2e`, `%2f`, `\`, `;`, case,
//! unreserved escapes, double escapes), whenever the gateway accepts a path:
//! - the canonical path is a fixed point (canonicalising what the backend receives changes nothing);
//! - the route the gateway chooses for the canonical path is the route chosen for what a backend
//!   makes of that path, for backends that decode every escape, resolve dot segments, merge slashes
//!   and treat `\` as `/` (IIS), strip `;` parameters (Tomcat) and route case-insensitively
//!   (ASP.NET Core). The backend model is written here independently of the crate.
//!
//! And for URL templates (`{id}`, `{*rest}`, templated prefixes):
//! - `covers` never claims wrongly: whenever route A covers route B, every path B matches, A
//!   matches (checked on random route pairs against every path of a small alphabet);
//! - captures put back into the template give the matched path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use http::Method;
use portcullis_route::{canonical_path, EscapedSlashes, Normalization, PathParameters, RouteMatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    ";",
    ";x=1",
    "a",
    "A",
    "%61",
    "%41",
    "api",
    "API",
    "Api",
    "orders",
    "public",
    "admin",
    "%7e",
    "~",
    "%25",
    "%252e",
    "%25%32%65",
    "%20",
    "x",
];

fn compiled(mut m: RouteMatch) -> RouteMatch {
    m.compile().unwrap();
    m
}

fn routes() -> Vec<(&'static str, RouteMatch)> {
    let prefix = |p: &str| RouteMatch {
        path_prefix: Some(p.to_owned()),
        ..RouteMatch::default()
    };
    let exact = |p: &str| RouteMatch {
        path: Some(p.to_owned()),
        ..RouteMatch::default()
    };
    vec![
        ("order", compiled(exact("/api/orders/{id}"))),
        ("public-tenant", compiled(prefix("/public/{tenant}/a"))),
        ("files", compiled(exact("/x/{*rest}"))),
        (
            "admin",
            RouteMatch {
                path: Some("/admin".to_owned()),
                ..RouteMatch::default()
            },
        ),
        ("orders", prefix("/api/orders")),
        ("api", prefix("/api")),
        ("public", prefix("/public")),
        ("catch-all", prefix("/")),
    ]
}

fn route_for(table: &[(&'static str, RouteMatch)], path: &str) -> &'static str {
    table
        .iter()
        .find(|(_, m)| m.matches(&Method::GET, None, path))
        .map_or("none", |(n, _)| n)
}

/// What a lenient backend makes of a path: every escape decoded, `\` as `/`, `;` parameters
/// stripped, dot segments resolved (clamped at the root), slashes merged.
fn backend_view(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                decoded.push(v);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segs: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    format!("/{}", segs.join("/"))
}

fn random_path(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..10);
    let mut p = String::from("/");
    for _ in 0..n {
        p.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
    }
    p
}

fn run(opts: Normalization, seed: u64) -> (usize, usize) {
    let table = routes();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..50_000 {
        let raw = random_path(&mut rng);
        let Ok(canon) = canonical_path(&raw, &opts) else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let again = canonical_path(&canon, &opts).expect("a canonical path is accepted");
        assert_eq!(again, canon, "not a fixed point: {raw:?}");
        let gateway = route_for(&table, &canon);
        let backend = route_for(&table, &backend_view(&canon));
        assert_eq!(
            gateway,
            backend,
            "{raw:?} -> {canon:?} routes to {gateway} but a backend reads {:?} ({backend})",
            backend_view(&canon)
        );
    }
    (accepted, refused)
}

#[test]
fn the_backend_reads_the_route_the_gateway_matched() {
    let (accepted, refused) = run(Normalization::default(), 1);
    // Both arms must be exercised, or the test proves nothing.
    assert!(
        accepted > 5_000 && refused > 5_000,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn the_same_holds_with_path_parameters_stripped() {
    let opts = Normalization {
        escaped_slashes: EscapedSlashes::Reject,
        path_parameters: PathParameters::Strip,
    };
    let (accepted, _) = run(opts, 2);
    assert!(accepted > 5_000);
}

// ---------------------------------------------------------------- templates: covers and captures

const SEGS: &[&str] = &["a", "A", "b", "api"];

/// A random route: 0-3 segments of literals and `{pN}`, exact or prefix, maybe a `{*rest}` last,
/// maybe case-sensitive, maybe a method list.
fn random_route(rng: &mut StdRng) -> RouteMatch {
    let n = rng.gen_range(0..4);
    let mut path = String::new();
    for i in 0..n {
        path.push('/');
        if rng.gen_bool(0.35) {
            path.push_str(&format!("{{p{i}}}"));
        } else {
            path.push_str(SEGS[rng.gen_range(0..SEGS.len())]);
        }
    }
    let prefix = rng.gen_bool(0.5);
    if !prefix && rng.gen_bool(0.2) {
        path.push_str("/{*rest}");
    }
    if path.is_empty() {
        path.push('/');
    }
    let mut m = RouteMatch {
        case_sensitive: rng.gen_bool(0.3),
        ..RouteMatch::default()
    };
    if prefix {
        m.path_prefix = Some(path);
    } else {
        m.path = Some(path);
    }
    m.methods = match rng.gen_range(0..3) {
        0 => vec![Method::GET],
        1 => vec![Method::GET, Method::POST],
        _ => Vec::new(),
    };
    compiled(m)
}

/// Every canonical path of up to 4 segments over [`SEGS`], with and without a trailing slash.
fn all_paths() -> Vec<String> {
    let mut out = vec!["/".to_owned()];
    let mut level = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for p in &level {
            for s in SEGS {
                let q = format!("{p}/{s}");
                out.push(q.clone());
                out.push(format!("{q}/"));
                next.push(q);
            }
        }
        level = next;
    }
    out
}

#[test]
fn covers_is_never_claimed_wrongly_with_templates() {
    let mut rng = StdRng::seed_from_u64(3);
    let paths = all_paths();
    let methods = [Method::GET, Method::HEAD, Method::POST, Method::DELETE];
    let (mut covered, mut strictly) = (0, 0);
    for _ in 0..4_000 {
        let (a, b) = (random_route(&mut rng), random_route(&mut rng));
        if !a.covers(&b) {
            continue;
        }
        covered += 1;
        strictly += usize::from(a != b);
        for path in &paths {
            for m in &methods {
                assert!(
                    !b.matches(m, None, path) || a.matches(m, None, path),
                    "{a:?} claims to cover {b:?}, but {m} {path} matches only the later one"
                );
            }
        }
    }
    // Both arms must be exercised: covering pairs (templates over literals, prefixes over paths).
    assert!(
        covered > 200 && strictly > 200,
        "{covered} covered, {strictly} distinct"
    );
}

#[test]
fn covers_is_claimed_for_what_templates_plainly_shadow() {
    let exact = |p: &str| {
        compiled(RouteMatch {
            path: Some(p.to_owned()),
            ..RouteMatch::default()
        })
    };
    let prefix = |p: &str| {
        compiled(RouteMatch {
            path_prefix: Some(p.to_owned()),
            ..RouteMatch::default()
        })
    };
    assert!(exact("/orders/{id}").covers(&exact("/orders/special")));
    assert!(!exact("/orders/special").covers(&exact("/orders/{id}")));
    assert!(prefix("/tenants/{t}").covers(&exact("/tenants/a/api/{x}")));
    assert!(exact("/files/{*p}").covers(&prefix("/files/a")));
    assert!(!exact("/files/{*p}").covers(&prefix("/files")));
    assert!(prefix("/files").covers(&exact("/files/{*p}")));
    assert!(!exact("/orders/{id}").covers(&exact("/orders/{id}/lines")));
}

#[test]
fn captures_rebuild_the_matched_path() {
    let mut rng = StdRng::seed_from_u64(4);
    let paths = all_paths();
    let mut checked = 0;
    for _ in 0..300 {
        let route = random_route(&mut rng);
        let Some(t) = route.template.clone() else {
            continue;
        };
        for path in &paths {
            if !route.matches(&Method::GET, None, path) {
                continue;
            }
            let caps = route.captures(path);
            let mut rebuilt = String::new();
            for seg in t.segments() {
                rebuilt.push('/');
                match seg {
                    portcullis_route::Segment::Literal(l) => rebuilt.push_str(l),
                    portcullis_route::Segment::Param(n) | portcullis_route::Segment::Rest(n) => {
                        let v = &caps.iter().find(|(k, _)| k == n).unwrap().1;
                        rebuilt.push_str(v);
                    }
                }
            }
            let trim = |p: &str| p.trim_end_matches('/').to_ascii_lowercase();
            let want = if t.is_prefix() {
                trim(
                    &path[..route
                        .below_prefix(path)
                        .map_or(path.len(), |r| path.len() - r.len())],
                )
            } else {
                trim(path)
            };
            assert_eq!(trim(&rebuilt), want, "{route:?} on {path}");
            checked += 1;
        }
    }
    assert!(checked > 1_000, "{checked}");
}
