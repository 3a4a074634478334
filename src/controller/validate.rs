//! Pure checks of a mapping, beyond what the CRD schema and its CEL rules enforce: objects stored
//! under an older or looser schema, and rules that need code (filter patterns, clocks).
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;

use crate::api::{EventSourceMapping, EventSourceMappingSpec, StartingPosition};

/// Why a mapping cannot be run; `field` is the JSON path of the offending field, empty when the
/// object as a whole is at fault (the message then says what is missing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", crate::error::field_prefix(.field))]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

impl InvalidSpec {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a mapping from its raw form, naming the field that does not fit the API types.
pub fn parse(object: &DynamicObject) -> Result<EventSourceMapping, InvalidSpec> {
    let value = serde_json::to_value(object).map_err(|e| InvalidSpec::new("", e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        InvalidSpec::new(field, err.into_inner().to_string())
    })
}

/// Checks a parsed mapping at time `now`.
pub fn validate(mapping: &EventSourceMapping, now: Timestamp) -> Result<(), InvalidSpec> {
    let spec = &mapping.spec;
    let Some(kind) = spec.source_kind() else {
        return Err(InvalidSpec::new("spec.source", crate::api::ONE_SOURCE));
    };
    check_target(spec)?;
    match (kind.is_stream(), spec.starting_position) {
        (true, None) => {
            return Err(InvalidSpec::new(
                "spec.startingPosition",
                "required for Kinesis and DynamoDB Streams sources",
            ));
        }
        (false, Some(_)) => {
            return Err(InvalidSpec::new(
                "spec.startingPosition",
                "not allowed for SQS sources",
            ));
        }
        _ => {}
    }
    if spec.starting_position == Some(StartingPosition::AtTimestamp) {
        match &spec.starting_position_timestamp {
            None => {
                return Err(InvalidSpec::new(
                    "spec.startingPositionTimestamp",
                    "required when startingPosition is AT_TIMESTAMP",
                ));
            }
            Some(ts) if ts.0 > now => {
                return Err(InvalidSpec::new(
                    "spec.startingPositionTimestamp",
                    format!("{} is in the future", ts.0),
                ));
            }
            Some(_) => {}
        }
    }
    if !kind.is_stream() && spec.destination_config.is_some() {
        // The CRD refuses it too; this is for objects stored before that rule.
        return Err(InvalidSpec::new(
            "spec.destinationConfig",
            "only supported for Kinesis and DynamoDB Streams sources; an SQS mapping never gives up on a message: configure a dead-letter queue in the queue's redrive policy",
        ));
    }
    if spec.tumbling_window_in_seconds.unwrap_or(0) > 0 {
        // The CRD refuses these too; this is for objects stored before those rules.
        if spec.bisect_batch_on_target_error == Some(true) {
            return Err(InvalidSpec::new(
                "spec.bisectBatchOnTargetError",
                "cannot be used with tumblingWindowInSeconds: a window's calls carry its state in shard order",
            ));
        }
        if spec.effective_parallelization_factor() > 1 {
            return Err(InvalidSpec::new(
                "spec.parallelizationFactor",
                "must be 1 with tumblingWindowInSeconds: a window's state is one per shard",
            ));
        }
    }
    if let Some(criteria) = &spec.filter_criteria {
        crate::filter::FilterSet::parse_for(
            kind,
            criteria.filters.iter().map(|f| f.pattern.as_str()),
        )
        .map_err(|err| match err.field() {
            Some(field) => InvalidSpec::new(format!("spec.{field}"), err.reason()),
            None => InvalidSpec::new("spec.filterCriteria", err.to_string()),
        })?;
    }
    Ok(())
}

fn check_target(spec: &EventSourceMappingSpec) -> Result<(), InvalidSpec> {
    let endpoint = &spec.target.endpoint;
    if endpoint.service.is_some() == endpoint.url.is_some() {
        return Err(InvalidSpec::new(
            "spec.target",
            "exactly one of service, url must be set",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> EventSourceMapping {
        let path = format!(
            "{}/tests/fixtures/build/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn fixtures_are_valid() {
        for name in [
            "sqs-standard",
            "kinesis-full",
            "dynamodb-own-service-account",
            "sqs-disabled",
        ] {
            validate(&load(name), now()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn timestamp_in_the_future_is_refused() {
        let mut mapping = load("kinesis-full");
        mapping.spec.starting_position = Some(StartingPosition::AtTimestamp);
        mapping.spec.starting_position_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2027-01-01T00:00:00Z".parse().unwrap(),
            ));
        let err = validate(&mapping, now()).unwrap_err();
        assert_eq!(err.field, "spec.startingPositionTimestamp");
        assert!(err.message.contains("in the future"), "{err}");
    }

    #[test]
    fn tumbling_windows_refuse_bisect_and_parallel_lanes() {
        let mut mapping = load("kinesis-full");
        mapping.spec.tumbling_window_in_seconds = Some(60);
        mapping.spec.bisect_batch_on_target_error = Some(false);
        mapping.spec.parallelization_factor = Some(1);
        assert!(validate(&mapping, now()).is_ok());
        mapping.spec.bisect_batch_on_target_error = Some(true);
        assert_eq!(
            validate(&mapping, now()).unwrap_err().field,
            "spec.bisectBatchOnTargetError"
        );
        mapping.spec.bisect_batch_on_target_error = None;
        mapping.spec.parallelization_factor = Some(2);
        assert_eq!(
            validate(&mapping, now()).unwrap_err().field,
            "spec.parallelizationFactor"
        );
        // Without a window both are fine.
        mapping.spec.tumbling_window_in_seconds = Some(0);
        mapping.spec.bisect_batch_on_target_error = Some(true);
        assert!(validate(&mapping, now()).is_ok());
    }

    #[test]
    fn a_destination_on_a_queue_is_refused_not_ignored() {
        let mut mapping = load("sqs-standard");
        mapping.spec.destination_config = load("kinesis-full").spec.destination_config;
        assert!(mapping.spec.destination_config.is_some());
        assert_eq!(
            validate(&mapping, now()).unwrap_err().field,
            "spec.destinationConfig"
        );
    }

    #[test]
    fn bad_filter_pattern_names_the_filter_and_key() {
        let mut mapping = load("sqs-standard");
        mapping.spec.filter_criteria = serde_json::from_value(serde_json::json!({
            "filters": [{"pattern": "{\"body\":{\"a\":[\"x\"]}}"}, {"pattern": "{\"body\":{\"n\":[{\"numeric\":[\">\"]}]}}"}]
        }))
        .unwrap();
        let err = validate(&mapping, now()).unwrap_err();
        assert_eq!(err.field, "spec.filterCriteria.filters[1].pattern");
        assert!(err.message.starts_with("body.n: "), "{err}");
        assert_eq!(
            err.to_string().matches("filterCriteria").count(),
            1,
            "{err}"
        );
    }

    #[test]
    fn plain_text_pattern_on_stream_data_is_refused() {
        let mut mapping = load("kinesis-full");
        mapping.spec.filter_criteria = serde_json::from_value(serde_json::json!({
            "filters": [{"pattern": "{\"data\":[{\"prefix\":\"x\"}]}"}]
        }))
        .unwrap();
        assert!(validate(&mapping, now()).is_err());
    }

    #[test]
    fn parse_names_the_malformed_field() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": "m", "namespace": "n"},
            "spec": {
                "source": {"sqs": {"queueUrl": "http://q/q"}},
                "target": {"service": {"name": "t", "port": 8080}},
                "batchSize": "lots"
            }
        }))
        .unwrap();
        let err = parse(&object).unwrap_err();
        assert_eq!(err.field, "spec.batchSize");
    }

    #[test]
    fn an_object_without_spec_is_reported_without_an_empty_field() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": "m", "namespace": "n"},
        }))
        .unwrap();
        let err = parse(&object).unwrap_err();
        assert_eq!(err.field, "");
        assert_eq!(err.to_string(), "missing field `spec`");
    }
}
