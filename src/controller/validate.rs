//! Pure checks of a mapping, beyond what the CRD schema and its CEL rules enforce: objects stored
//! under an older or looser schema, and rules that need code (filter patterns, clocks).
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;

use crate::api::{EventSourceMapping, EventSourceMappingSpec, StartingPosition};

/// Why a mapping cannot be run; `field` is the JSON path of the offending field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
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
        return Err(InvalidSpec::new(
            "spec.source",
            "exactly one of sqs, kinesis, dynamodbStreams must be set",
        ));
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
    if let Some(criteria) = &spec.filter_criteria {
        crate::filter::FilterSet::parse_for(
            kind,
            criteria.filters.iter().map(|f| f.pattern.as_str()),
        )
        .map_err(|err| InvalidSpec::new("spec.filterCriteria", err.to_string()))?;
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
