//! Access to the corpus under tests/corpus.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Every corpus document name (`01-entra-v2-openid.xml` ...), sorted.
pub fn documents() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    names
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The conversion of a corpus document, named by its file name (as the goldens are).
pub fn convert(name: &str) -> portcullis_apim::Conversion {
    portcullis_apim::convert(&read(name), name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"))
}
