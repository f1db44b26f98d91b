//! Checks answers of the activation-key API against its OpenAPI document (`docs/activation-key-api.openapi.json`):
//! the status code must be documented for the operation, and the body must match the documented schema.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/activation-key-api.openapi.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the OpenAPI document exists"))
            .expect("the OpenAPI document is JSON")
    })
}

/// `path` is the documented template (e.g. `/activation-keys/{operationId}`), `method` lower case.
pub fn check(method: &str, path: &str, status: u16, body: &Value) -> anyhow::Result<()> {
    let doc = document();
    let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
    let operation = format!("/paths/{}/{method}", escape(path));
    doc.pointer(&operation).with_context(|| format!("{method} {path} is not documented"))?;
    let mut response_pointer = format!("{operation}/responses/{status}");
    let mut response =
        doc.pointer(&response_pointer).ok_or_else(|| anyhow!("{method} {path} does not document {status}"))?;
    if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        response_pointer = reference.trim_start_matches('#').to_string();
        response = doc.pointer(&response_pointer).ok_or_else(|| anyhow!("dangling {reference}"))?;
    }
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        return Ok(());
    };
    // Validate with the whole document as the root, so `#/components/...` references resolve.
    let reference = schema.get("$ref").and_then(Value::as_str).context("response schemas are component references")?;
    let mut root = doc.clone();
    root["$ref"] = Value::String(reference.to_string());
    let validator = jsonschema::validator_for(&root).map_err(|e| anyhow!("schema: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    if !errors.is_empty() {
        bail!("{method} {path} {status}: body does not match the document: {}\n{body}", errors.join("; "));
    }
    Ok(())
}
