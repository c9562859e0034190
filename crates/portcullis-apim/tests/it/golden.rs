//! Golden outputs: for every corpus document, the YAML (`NAME.yaml`) and the diagnostics exactly as
//! `import-apim` prints them (`NAME.stderr`). `UPDATE_GOLDEN=1` rewrites them; review the diff.

use crate::corpus;

/// Compares `actual` with the golden file at `path` (or rewrites it under `UPDATE_GOLDEN=1`);
/// a difference is added to `failures`. Shared by the corpus and the APIOps folders.
pub(crate) fn check_golden(path: &std::path::Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
}

#[test]
fn corpus_matches_golden_outputs() {
    let mut failures = Vec::new();
    let docs = corpus::documents();
    assert!(docs.len() >= 15, "corpus too small: {docs:?}");
    for name in &docs {
        let stem = name.trim_end_matches(".xml");
        let (yaml, stderr) = match portcullis_apim::convert(&corpus::read(name), name, &[]) {
            Ok(conv) => (Some(conv.yaml.clone()), conv.stderr(name)),
            Err(e) => (None, format!("{name}:{e}\n")),
        };
        let dir = corpus::dir();
        check_golden(&dir.join(format!("{stem}.stderr")), &stderr, &mut failures);
        match yaml {
            Some(yaml) => check_golden(&dir.join(format!("{stem}.yaml")), &yaml, &mut failures),
            None => assert!(
                !dir.join(format!("{stem}.yaml")).exists(),
                "{name}: stale golden yaml"
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_unsupported_line_names_file_line_col() {
    for name in corpus::documents() {
        let Ok(conv) = portcullis_apim::convert(&corpus::read(&name), &name, &[]) else {
            continue;
        };
        for line in conv.report(&name).lines() {
            let rest = line.strip_prefix(&format!("{name}:")).unwrap();
            let mut parts = rest.splitn(3, ':');
            let line_no: usize = parts.next().unwrap().parse().unwrap();
            let col: usize = parts.next().unwrap().parse().unwrap();
            assert!(line_no > 0 && col > 0, "{line}");
            let msg = parts.next().unwrap();
            assert!(
                msg.starts_with(" unsupported ") || msg.starts_with(" note "),
                "{line}"
            );
        }
    }
}

#[test]
fn converted_values_round_trip_through_yaml_quoting() {
    let xml = r#"<validate-jwt header-name="Authorization" failed-validation-error-message="Say &quot;no&quot; \ twice: yes&#10;no">
        <issuer-signing-keys><key>c2VjcmV0</key></issuer-signing-keys>
        <audiences><audience>on</audience><audience>*</audience><audience>1e3</audience></audiences>
    </validate-jwt>"#;
    let conv = portcullis_apim::convert(xml, "q.xml", &[]).unwrap();
    assert!(conv.is_complete(), "{}", conv.report("q.xml"));
    assert!(
        conv.yaml
            .contains(r#"failed-validation-error-message: "Say \"no\" \\ twice: yes\nno""#),
        "{}",
        conv.yaml
    );
    assert!(conv.yaml.contains("- \"on\"\n"), "{}", conv.yaml);
    assert!(conv.yaml.contains("- \"1e3\"\n"), "{}", conv.yaml);
}
