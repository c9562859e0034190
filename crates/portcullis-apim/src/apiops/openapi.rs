//! The operations of an API, from its OpenAPI document (3.x or Swagger 2.0, JSON or YAML): method,
//! URL template and operationId, with the line of the template for the report.
//!
//! Why `paths` only: in an APIOps export each operation's template is relative to the API (APIM
//! writes the API's `path` into `servers`/`basePath`, which [`super`] takes from
//! `apiInformation.json` instead), and the operationId is APIM's operation name, which names the
//! operation's policy folder.

use serde_json::Value;

use super::folder::Spec;

/// HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operation {
    /// operationId (APIM's operation name), when the document gives one.
    pub id: Option<String>,
    /// Upper-case method.
    pub method: String,
    /// The URL template as written (`/orders/{id}`, maybe with a `?query` part).
    pub template: String,
    /// The line of the template in the document.
    pub line: usize,
}

/// The parsed document, or why it is not one.
pub(crate) fn parse(spec: &Spec) -> Result<Value, String> {
    let doc: Value = if spec.extension == "json" {
        serde_json::from_str(&spec.text)
            .map_err(|e| format!("{}:{}: invalid JSON: {e}", e.line(), e.column()))?
    } else {
        serde_saphyr::from_str(&spec.text).map_err(|e| format!("1:1: invalid YAML: {e}"))?
    };
    if doc.get("openapi").is_none() && doc.get("swagger").is_none() {
        return Err("1:1: not an OpenAPI document (no `openapi` or `swagger` key)".to_owned());
    }
    Ok(doc)
}

/// Every operation of the document, in path then method order.
pub(crate) fn operations(spec: &Spec, doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (template, item) in paths {
        let line = line_of(&spec.text, template);
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            out.push(Operation {
                id: op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                method: method.to_ascii_uppercase(),
                template: template.clone(),
                line,
            });
        }
    }
    out
}

/// The line where `key` is first written as a key (`"key"` or `key:`), else 1.
pub(crate) fn line_of(text: &str, key: &str) -> usize {
    let quoted = format!("\"{key}\"");
    let single = format!("'{key}'");
    let bare = format!("{key}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(&quoted) || t.starts_with(&single) || t.starts_with(&bare)
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(text: &str, extension: &str) -> Spec {
        Spec {
            file: 0,
            path: "x".into(),
            text: text.to_owned(),
            extension: extension.to_owned(),
        }
    }

    #[test]
    fn v3_yaml_and_v2_json() {
        let s = spec(
            "openapi: 3.0.1\npaths:\n  /orders:\n    get:\n      operationId: list\n  '/orders/{id}':\n    delete:\n      operationId: del\n",
            "yaml",
        );
        let ops = operations(&s, &parse(&s).unwrap());
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].method.as_str(), ops[0].line), ("GET", 3));
        assert_eq!(ops[1].template, "/orders/{id}");
        assert_eq!((ops[1].id.as_deref(), ops[1].line), (Some("del"), 6));
        let s = spec(
            r#"{"swagger": "2.0", "paths": {"/a": {"post": {"operationId": "p"}}}}"#,
            "json",
        );
        let ops = operations(&s, &parse(&s).unwrap());
        assert_eq!(ops[0].method, "POST");
        assert!(parse(&spec("{}", "json")).is_err());
        assert!(parse(&spec("{", "json"))
            .unwrap_err()
            .contains("invalid JSON"));
    }
}
