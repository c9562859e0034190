//! APIM policy XML import on arbitrary text.

/// The APIM target: `convert` never panics; when it converts, its YAML is well-formed YAML and
/// loading it as a gateway.yaml never panics (it may be refused: placeholders, unsupported parts).
pub fn run(data: &[u8]) {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(conv) = portcullis_apim::convert(xml, "fuzz.xml", &[]) else {
        return;
    };
    let _ = conv.report("fuzz.xml");
    if let Err(e) = serde_saphyr::from_str::<serde::de::IgnoredAny>(&conv.yaml) {
        panic!("convert wrote YAML that does not parse: {e}\n{}", conv.yaml);
    }
    let _ = crate::config::load(&conv.yaml);
}
