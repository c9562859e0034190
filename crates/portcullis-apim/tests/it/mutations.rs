//! A short, deterministic slice of the fuzz/ `apim` and `config` targets for every `cargo test`:
//! byte mutations of every corpus document must convert or fail without panicking, and whatever
//! YAML the conversion writes (and mutations of that YAML) must load or be refused by
//! `portcullis_config` without panicking. The long, coverage-guided runs are scripts/fuzz
//! (docs/fuzzing.md).

use std::path::Path;

use crate::corpus;

/// Seeded: the same mutations on every run.
type Rng = rand::rngs::StdRng;

/// An index below `n` (`n` > 0).
fn below(rng: &mut Rng, n: usize) -> usize {
    rand::Rng::gen_range(rng, 0..n)
}

/// What mutations write: XML and YAML syntax, quotes, escapes, placeholders, non-ASCII.
const PIECES: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "&",
    "&amp;",
    "&#x0;",
    "&#1114111;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml ?>",
    "@(",
    ")",
    "{{",
    "}}",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "#",
    "|",
    ">-",
    "*a",
    "&a ",
    "!!str ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "~",
    "é",
    "\u{feff}",
    "\r",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut t = text.to_owned();
    for _ in 0..=below(rng, 4) {
        let mut at = below(rng, t.len() + 1);
        while !t.is_char_boundary(at) {
            at -= 1;
        }
        match below(rng, 3) {
            0 => t.insert_str(at, PIECES[below(rng, PIECES.len())]),
            1 => {
                let mut end = (at + 1 + below(rng, 16)).min(t.len());
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                t.replace_range(at..end, "");
            }
            _ => {
                let mut from = below(rng, t.len() + 1);
                while !t.is_char_boundary(from) {
                    from -= 1;
                }
                let mut to = (from + below(rng, 64)).min(t.len());
                while !t.is_char_boundary(to) {
                    to -= 1;
                }
                let piece = t[from..to].to_owned();
                t.insert_str(at, &piece);
            }
        }
    }
    t
}

fn no_values(_: &str) -> Option<String> {
    None
}

fn load(yaml: &str) {
    let _ = portcullis_config::load_str_with(yaml, Path::new("/nonexistent/gw.yaml"), &no_values);
}

#[test]
fn mutated_policies_and_their_yaml_never_panic() {
    let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(0x5eed_cafe_f00d_0002);
    let mut converted = 0;
    for name in corpus::documents() {
        let xml = corpus::read(&name);
        for _ in 0..40 {
            let mutated = mutate(&mut rng, &xml);
            let Ok(conv) = portcullis_apim::convert(&mutated, &name, &[]) else {
                continue;
            };
            converted += 1;
            let _ = conv.report(&name);
            load(&conv.yaml);
            load(&mutate(&mut rng, &conv.yaml));
        }
    }
    assert!(
        converted > 0,
        "no mutation converted: the test exercises nothing"
    );
}
