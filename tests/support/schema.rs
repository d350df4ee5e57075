//! Every result a test collects is checked against the committed result schema
//! (`schema/result.schema.json`): what subscribers are promised is what they get.

use std::sync::OnceLock;

use serde_json::Value;

fn result_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/result.schema.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let schema: Value = serde_json::from_str(&text).expect("result schema is JSON");
        jsonschema::validator_for(&schema).expect("result schema compiles")
    })
}

/// Panics, naming every violation, when `result` does not match the result schema.
pub fn assert_valid_result(result: &Value) {
    let errors: Vec<String> = result_validator()
        .iter_errors(result)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "result does not match schema/result.schema.json: {errors:?}\n{result}"
    );
}
