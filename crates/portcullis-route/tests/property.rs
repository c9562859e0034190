//! Property test of the canonicaliser and the matcher together: for random request paths built
//! from the pieces routing tricks are made of (`.`, `..`, `/`, `%2e`, `%2f`, `\`, `;`, case,
//! unreserved escapes, double escapes), whenever the gateway accepts a path:
//! - the canonical path is a fixed point (canonicalising what the backend receives changes nothing);
//! - the route the gateway chooses for the canonical path is the route chosen for what a backend
//!   makes of that path, for backends that decode every escape, resolve dot segments, merge slashes
//!   and treat `\` as `/` (IIS), strip `;` parameters (Tomcat) and route case-insensitively
//!   (ASP.NET Core). The backend model is written here independently of the crate.
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

fn routes() -> Vec<(&'static str, RouteMatch)> {
    let prefix = |p: &str| RouteMatch {
        path_prefix: Some(p.to_owned()),
        ..RouteMatch::default()
    };
    vec![
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
