//! Pure: two enabled mappings that read the same source and call the same target would deliver
//! every record twice. The newer one is refused in status and runs no pollers; the older one is
//! untouched, so adding a copy by mistake never disturbs what already works.
use kube::ResourceExt;
use kube::api::DynamicObject;

use super::status::untyped_ready;
use super::validate;
use crate::api::{AwsConnection, EventSourceMappingSpec, Source};
use crate::target::target_url;

/// Where a mapping's records come from and go to, as far as two specs can be compared without
/// asking AWS (a stream named in one mapping and given by ARN in another is not recognised).
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    source: String,
    target: String,
}

impl Delivery {
    fn of(spec: &EventSourceMappingSpec, namespace: &str) -> Option<Self> {
        Some(Self {
            source: source_identity(&spec.source)?,
            target: target_url(&spec.target, namespace)?,
        })
    }
}

fn source_identity(source: &Source) -> Option<String> {
    let (kind, id, aws): (&str, &str, &AwsConnection) =
        match (&source.sqs, &source.kinesis, &source.dynamodb_streams) {
            (Some(sqs), None, None) => ("sqs", &sqs.queue_url, &sqs.aws),
            (None, Some(kinesis), None) => (
                "kinesis",
                kinesis
                    .stream_arn
                    .as_deref()
                    .or(kinesis.stream_name.as_deref())?,
                &kinesis.aws,
            ),
            (None, None, Some(dynamodb)) => ("dynamodb", &dynamodb.stream_arn, &dynamodb.aws),
            _ => return None,
        };
    Some(format!(
        "{kind} {id} region={} endpoint={}",
        aws.region.as_deref().unwrap_or(""),
        aws.endpoint_url.as_deref().unwrap_or("")
    ))
}

/// The queue URL, stream ARN or stream name as written: a cheap first look that spares parsing
/// every other mapping.
fn raw_source_id(object: &DynamicObject) -> Option<&str> {
    let source = object.data.pointer("/spec/source")?;
    [
        "/sqs/queueUrl",
        "/kinesis/streamArn",
        "/kinesis/streamName",
        "/dynamodbStreams/streamArn",
    ]
    .iter()
    .find_map(|pointer| source.pointer(pointer)?.as_str())
}

/// Older first: creation time, then namespace and name, so two mappings never refuse each other.
fn age_rank(object: &DynamicObject) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        object.metadata.creation_timestamp.as_ref().map(|t| t.0),
        object.namespace().unwrap_or_default(),
        object.name_any(),
    )
}

/// A mapping that delivers nothing: disabled, being deleted, or refused for its spec.
fn inactive(object: &DynamicObject) -> bool {
    object.metadata.deletion_timestamp.is_some()
        || object.data.pointer("/spec/enabled") == Some(&serde_json::Value::Bool(false))
        || untyped_ready(object)
            .is_some_and(|c| c["reason"] == "InvalidSpec" || c["reason"] == "MalformedSpec")
}

/// The oldest other active mapping (`NAMESPACE/NAME`) that reads the same source and calls the
/// same target as `object` (whose parsed spec is `spec`), if `object` is active and newer.
pub fn older_duplicate<'a>(
    object: &DynamicObject,
    spec: &EventSourceMappingSpec,
    others: impl IntoIterator<Item = &'a DynamicObject>,
) -> Option<String> {
    // Only the spec counts for `object` itself: its status may still describe an older spec.
    if !spec.enabled {
        return None;
    }
    let namespace = object.namespace().unwrap_or_default();
    let mine = Delivery::of(spec, &namespace)?;
    let my_id = raw_source_id(object)?;
    let my_rank = age_rank(object);
    others
        .into_iter()
        .filter(|other| raw_source_id(other) == Some(my_id) && !inactive(other))
        .map(|other| (age_rank(other), other))
        .filter(|(rank, _)| *rank < my_rank)
        .filter(|(_, other)| {
            validate::parse(other).ok().is_some_and(|parsed| {
                let other_namespace = other.namespace().unwrap_or_default();
                Delivery::of(&parsed.spec, &other_namespace).as_ref() == Some(&mine)
            })
        })
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .map(|((_, namespace, name), _)| format!("{namespace}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(name: &str, created: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn orders(target_port: u16) -> serde_json::Value {
        json!({
            "source": {"sqs": {"queueUrl": "https://sqs.us-east-1.amazonaws.com/1/orders"}},
            "target": {"service": {"name": "orders", "port": target_port}},
        })
    }

    fn duplicate_of(object: &DynamicObject, all: &[DynamicObject]) -> Option<String> {
        let spec = validate::parse(object).unwrap().spec;
        older_duplicate(object, &spec, all)
    }

    #[test]
    fn the_newer_of_two_identical_mappings_is_the_duplicate() {
        let old = mapping("a-old", "2026-01-01T00:00:00Z", orders(8080));
        let new = mapping("b-new", "2026-01-02T00:00:00Z", orders(8080));
        let all = [old.clone(), new.clone()];
        assert_eq!(duplicate_of(&new, &all).as_deref(), Some("shop/a-old"));
        assert_eq!(
            duplicate_of(&old, &all),
            None,
            "the older one keeps running"
        );
    }

    #[test]
    fn same_age_is_decided_by_name() {
        let a = mapping("a", "2026-01-01T00:00:00Z", orders(8080));
        let b = mapping("b", "2026-01-01T00:00:00Z", orders(8080));
        let all = [a.clone(), b.clone()];
        assert_eq!(duplicate_of(&b, &all).as_deref(), Some("shop/a"));
        assert_eq!(duplicate_of(&a, &all), None);
    }

    #[test]
    fn another_target_or_source_is_no_duplicate() {
        let old = mapping("old", "2026-01-01T00:00:00Z", orders(8080));
        let other_port = mapping("new", "2026-01-02T00:00:00Z", orders(9090));
        assert_eq!(
            duplicate_of(&other_port, &[old.clone(), other_port.clone()]),
            None
        );
        let mut spec = orders(8080);
        spec["source"]["sqs"]["queueUrl"] = json!("https://sqs.us-east-1.amazonaws.com/1/other");
        let other_queue = mapping("new", "2026-01-02T00:00:00Z", spec);
        assert_eq!(
            duplicate_of(&other_queue, &[old, other_queue.clone()]),
            None
        );
    }

    #[test]
    fn a_service_named_by_url_is_the_same_target() {
        let old = mapping("old", "2026-01-01T00:00:00Z", orders(8080));
        let mut spec = orders(8080);
        spec["target"] = json!({"url": "http://orders.shop.svc:8080/"});
        let new = mapping("new", "2026-01-02T00:00:00Z", spec);
        assert_eq!(
            duplicate_of(&new, &[old, new.clone()]).as_deref(),
            Some("shop/old")
        );
    }

    #[test]
    fn inactive_mappings_duplicate_nothing() {
        let mut disabled = orders(8080);
        disabled["enabled"] = json!(false);
        let old = mapping("old", "2026-01-01T00:00:00Z", disabled);
        let new = mapping("new", "2026-01-02T00:00:00Z", orders(8080));
        assert_eq!(duplicate_of(&new, &[old, new.clone()]), None);

        let mut invalid = mapping("old", "2026-01-01T00:00:00Z", orders(8080));
        invalid.data["status"] =
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec"}]});
        assert_eq!(duplicate_of(&new, &[invalid, new.clone()]), None);
    }
}
