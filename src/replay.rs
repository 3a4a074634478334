//! `esm-operator replay`: sends the records of a batch that an S3 on-failure destination kept
//! (the object's `payload`, the same `{"Records":[...]}` the target was sent) to a target again.
use serde_json::Value;

use crate::api::{AwsConnection, HttpEndpoint, Target};
use crate::target::{HttpTarget, Invoke, TargetClient};

/// Where the object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectSource {
    /// `s3://BUCKET/KEY`, read with the default AWS credential chain.
    S3 { bucket: String, key: String },
    /// A downloaded object.
    File(std::path::PathBuf),
}

impl std::str::FromStr for ObjectSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.strip_prefix("s3://") {
            Some(rest) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Self::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                }),
                _ => Err(format!("{text:?}: expected s3://BUCKET/KEY")),
            },
            None => Ok(Self::File(text.into())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {what}: {reason}")]
    Read { what: String, reason: String },
    #[error("{what} is not an S3 on-failure object: {reason}")]
    NotAFailureObject { what: String, reason: String },
    #[error("--target-url: {0}")]
    Target(String),
    #[error("the target did not take the {records} record(s): {reason}")]
    Refused { records: usize, reason: String },
}

/// What the target answered to the replayed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub records: usize,
    pub status: u16,
    /// The answer's body (a partial batch response says which records failed again).
    pub body: String,
}

/// Reads the object, checks it holds a batch, and POSTs the batch to `target_url`.
pub async fn replay(
    object: &ObjectSource,
    connection: &AwsConnection,
    target_url: &str,
    timeout_seconds: u32,
) -> Result<Replayed, ReplayError> {
    let (what, bytes) = read(object, connection).await?;
    let payload = batch_of(&what, &bytes)?;
    let records = payload["Records"].as_array().map_or(0, Vec::len);
    let client = TargetClient::new().map_err(|error| ReplayError::Target(error.to_string()))?;
    let target = HttpTarget::new(
        &client,
        &Target {
            endpoint: HttpEndpoint {
                service: None,
                url: Some(target_url.to_owned()),
            },
            timeout_seconds: Some(timeout_seconds),
        },
        "",
    )
    .map_err(|error| ReplayError::Target(error.to_string()))?;
    let body = serde_json::to_vec(&payload).expect("a parsed value serializes");
    let response = target
        .invoke(body, &crate::trace::TraceContext::new_trace())
        .await
        .map_err(|error| ReplayError::Refused {
            records,
            reason: error.to_string(),
        })?;
    let answer = String::from_utf8_lossy(&response.body).into_owned();
    if !(200..300).contains(&response.status) {
        return Err(ReplayError::Refused {
            records,
            reason: format!("HTTP {}: {answer}", response.status),
        });
    }
    Ok(Replayed {
        records,
        status: response.status,
        body: answer,
    })
}

async fn read(
    object: &ObjectSource,
    connection: &AwsConnection,
) -> Result<(String, Vec<u8>), ReplayError> {
    match object {
        ObjectSource::File(path) => {
            let what = path.display().to_string();
            std::fs::read(path)
                .map(|bytes| (what.clone(), bytes))
                .map_err(|error| ReplayError::Read {
                    what,
                    reason: error.to_string(),
                })
        }
        ObjectSource::S3 { bucket, key } => {
            let what = format!("s3://{bucket}/{key}");
            let sdk = crate::sources::aws::AwsBase::load()
                .await
                .connection(connection);
            let client = crate::destination::s3_client(&sdk, connection.endpoint_url.is_some());
            let failed = |reason: String| ReplayError::Read {
                what: what.clone(),
                reason,
            };
            let output = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|error| {
                    failed(aws_sdk_s3::error::DisplayErrorContext(&error).to_string())
                })?;
            let bytes = output
                .body
                .collect()
                .await
                .map_err(|error| failed(error.to_string()))?;
            Ok((what.clone(), bytes.into_bytes().to_vec()))
        }
    }
}

/// The object's `payload`, which must be a `{"Records":[...]}` event.
fn batch_of(what: &str, bytes: &[u8]) -> Result<Value, ReplayError> {
    let not = |reason: String| ReplayError::NotAFailureObject {
        what: what.to_owned(),
        reason,
    };
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|error| not(format!("not JSON ({error})")))?;
    let payload = object.get_mut("payload").map(Value::take).ok_or_else(|| {
        not("it has no `payload` key (only S3 destinations keep the records)".into())
    })?;
    if !payload.get("Records").is_some_and(Value::is_array) {
        return Err(not("`payload.Records` is not a list".into()));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_sources_parse() {
        assert_eq!(
            "s3://failed/aws/lambda/u/s/x".parse::<ObjectSource>(),
            Ok(ObjectSource::S3 {
                bucket: "failed".into(),
                key: "aws/lambda/u/s/x".into()
            })
        );
        assert!("s3://bucket-only".parse::<ObjectSource>().is_err());
        assert_eq!(
            "./object.json".parse::<ObjectSource>(),
            Ok(ObjectSource::File("./object.json".into()))
        );
    }

    #[test]
    fn only_objects_with_a_batch_replay() {
        let good = br#"{"requestContext":{},"payload":{"Records":[{"a":1}]}}"#;
        assert_eq!(batch_of("o", good).unwrap()["Records"][0]["a"], 1);
        for (bytes, expected) in [
            (&b"nope"[..], "not JSON"),
            (br#"{"requestContext":{}}"#, "no `payload`"),
            (br#"{"payload":{"Records":1}}"#, "not a list"),
        ] {
            let error = batch_of("o", bytes).unwrap_err().to_string();
            assert!(
                error.starts_with("o is not an S3 on-failure object"),
                "{error}"
            );
            assert!(error.contains(expected), "{error}");
        }
    }
}
