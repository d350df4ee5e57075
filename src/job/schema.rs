//! The JSON Schemas of the job and the result, generated from the wire types with
//! schemars and committed under `schema/`. The test here fails when the committed
//! files and the types drift apart; `PICKET_SCHEMA_WRITE=1 cargo test --lib schema`
//! writes them anew.

use std::path::PathBuf;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use super::{Reason, Report, SchemaVersion, WireJob, SCHEMA_VERSION};

/// A job's `id`: a string or a number.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(super) enum JobId {
    Text(String),
    Number(u64),
}

impl JsonSchema for SchemaVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchemaVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Version of the result schema; raised when a field changes meaning or goes away, not when one is added.",
            "type": "integer",
            "const": SCHEMA_VERSION,
        })
    }
}

// A string with today's codes as examples, not a closed enum: the contract lets codes be
// added, and a subscriber validating against this file must not reject a result for one.
impl JsonSchema for Reason {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Reason".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        json_schema!({
            "type": "string",
            "examples": codes,
        })
    }
}

/// Result fields added by the monitors change (CONTRACT.md, "Monitors") that the
/// committed schema already describes by hand, before `Report` has them. Once they are
/// in `Report`, this list must be emptied and the files regenerated.
const PENDING: &[&str] = &[];

fn document(mut schema: Schema, title: &str) -> Value {
    schema.insert("title".into(), title.into());
    schema.insert("x-picket-schema-version".into(), SCHEMA_VERSION.into());
    schema.to_value()
}

/// `schema` with `field` required: a field that every message written has, though
/// reading tolerates its absence (`serde(default)`, which schemars takes as optional).
fn always_written(mut schema: Schema, field: &str) -> Schema {
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.insert(0, field.into());
    }
    schema
}

/// The two documents as they should be committed: (file name, JSON).
fn generated() -> Vec<(&'static str, Value)> {
    vec![
        (
            "job.schema.json",
            document(
                schemars::schema_for!(WireJob),
                "picket job (amqp.jobs_queue)",
            ),
        ),
        (
            "result.schema.json",
            document(
                always_written(schemars::schema_for!(Report), "schema"),
                "picket result (amqp.results_exchange, routing key = verdict)",
            ),
        ),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// `doc` without the properties listed in [`PENDING`].
fn without_pending(mut doc: Value) -> Value {
    if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        for key in PENDING {
            props.remove(*key);
        }
    }
    if let Some(required) = doc.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|k| !PENDING.iter().any(|p| k == p));
    }
    doc
}

/// `doc` with the [`PENDING`] properties that `committed` describes, kept in place.
fn with_pending(mut doc: Value, committed: &Value) -> Value {
    let kept: Vec<(String, Value)> = PENDING
        .iter()
        .filter_map(|k| Some((k.to_string(), committed["properties"].get(*k)?.clone())))
        .collect();
    if let Some(props) = doc.get_mut("properties").and_then(Value::as_object_mut) {
        props.extend(kept);
    }
    doc
}

#[test]
fn committed_schemas_match_the_wire_types() {
    let write = std::env::var_os("PICKET_SCHEMA_WRITE").is_some();
    for (name, doc) in generated() {
        let path = dir().join(name);
        if let Some(props) = doc.get("properties").and_then(Value::as_object) {
            let landed: Vec<_> = PENDING.iter().filter(|k| props.contains_key(**k)).collect();
            assert!(
                landed.is_empty(),
                "{landed:?} are in the types now: empty PENDING in src/job/schema.rs and regenerate"
            );
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let committed: Value = serde_json::from_str(&committed).unwrap_or(Value::Null);
        if write {
            let text = serde_json::to_string_pretty(&with_pending(doc, &committed))
                .expect("schema serializes");
            std::fs::write(&path, text + "\n").expect("write schema");
            continue;
        }
        assert_eq!(
            without_pending(committed),
            doc,
            "{} drifted from the types: run PICKET_SCHEMA_WRITE=1 cargo test --lib schema, \
             then review the diff (and raise SCHEMA_VERSION if a field changed meaning)",
            path.display()
        );
    }
}
