//! Mapping objects as the controller's untyped watch reads them (src/controller/validate.rs):
//! anything the API server stored, also under an older or looser schema.

use esm_operator::controller::validate::{parse, validate};
use kube::api::DynamicObject;
use serde_json::Value;

/// `mapping_spec`: the bytes are a JSON object as the watch receives it. When the typed parse
/// refuses it, the field it names (MalformedSpec) is one the object has; when it accepts it, the
/// mapping reads back the same after serialization, and validation names a field of the spec.
pub fn check(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(object) = serde_json::from_value::<DynamicObject>(raw.clone()) else {
        return;
    };
    let mapping = match parse(&object) {
        Ok(mapping) => mapping,
        Err(invalid) => {
            assert!(
                invalid.field.is_empty() || has_path(&raw, &invalid.field),
                "MalformedSpec names {:?}, which the object does not have: {invalid}",
                invalid.field
            );
            return;
        }
    };
    let written = serde_json::to_value(&mapping).expect("a mapping serializes");
    let object: DynamicObject =
        serde_json::from_value(written).expect("a serialized mapping is an object");
    let again = parse(&object).expect("a serialized mapping parses");
    assert_eq!(again.spec, mapping.spec, "the spec round trips");
    assert_eq!(again.status, mapping.status, "the status round trips");
    assert_eq!(again.metadata, mapping.metadata, "the metadata round trips");
    let now = "2026-11-23T10:00:00Z".parse().expect("a time");
    if let Err(invalid) = validate(&mapping, now) {
        assert!(
            invalid.field.starts_with("spec."),
            "validation names a field of the spec: {invalid}"
        );
    }
}

/// Does `value` have the field at `path` (serde_path_to_error's form: `spec.filters[1].pattern`)?
/// Keys may hold dots themselves (`metadata.labels.app.kubernetes.io/name`), so each way of
/// reading the path is tried.
fn has_path(value: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    if let Some(rest) = path.strip_prefix('[') {
        let Some((index, rest)) = rest.split_once(']') else {
            return false;
        };
        let item = index
            .parse::<usize>()
            .ok()
            .and_then(|i| value.as_array()?.get(i));
        return item.is_some_and(|item| has_path(item, rest.strip_prefix('.').unwrap_or(rest)));
    }
    let Some(object) = value.as_object() else {
        return false;
    };
    object.iter().any(|(key, below)| {
        path.strip_prefix(key.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with('[') && has_path(below, rest)
                || rest
                    .strip_prefix('.')
                    .is_some_and(|rest| has_path(below, rest))
        })
    })
}
