//! The AWS SDK configuration of a mapping's connection (region, endpoint override, credentials),
//! shared by every source.
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::{AwsConnection, CredentialsSecretRef};

pub const DEFAULT_ACCESS_KEY_ID_KEY: &str = "AWS_ACCESS_KEY_ID";
pub const DEFAULT_SECRET_ACCESS_KEY_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const DEFAULT_SESSION_TOKEN_KEY: &str = "AWS_SESSION_TOKEN";

/// Longest one attempt of a call may take beyond what it asks the service to wait for (SQS's
/// long polling). The SDK sets no read timeout of its own: a connection that goes silent (a
/// network blackhole, a hung endpoint) would hold a poller's call, and the shard or queue
/// behind it, for good, also after the network came back. A timed-out attempt is retried on a
/// fresh connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The SDK's own connect timeout (behavior version 2023-11-09 and later), kept.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Timeouts of calls that ask the service to wait up to `wait`.
pub fn call_timeouts(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + CALL_TIMEOUT)
        .build()
}

/// Why a connection's credentials could not be read; names the Secret, the key and the field.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{field}: cannot read Secret {namespace}/{name}: {source}")]
    Read {
        field: String,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("{field}: Secret {name} has no key {key:?}")]
    MissingKey {
        field: String,
        name: String,
        key: String,
    },
    #[error("{field}: key {key:?} of Secret {name} is not UTF-8 text")]
    NotText {
        field: String,
        name: String,
        key: String,
    },
}

/// What every AWS client of a process shares: the default credential chain with its cache
/// (web identity / EKS pod identity credentials are fetched once and refreshed before they
/// expire, not once per mapping and again at every scaling read), the region and endpoint of
/// the environment, and one HTTP client (its connection pools and TLS roots, ~0.2 MiB each).
/// A connection's configuration is this with the connection's region, endpoint and Secret
/// credentials on top. One per process (per tokio runtime: pooled connections belong to the
/// runtime that opened them).
#[derive(Clone, Debug)]
pub struct AwsBase(Arc<SdkConfig>);

impl AwsBase {
    /// From the environment. Its call timeouts allow SQS's longest receive wait; the stream
    /// sources shorten them (their calls never wait).
    pub async fn load() -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(call_timeouts(crate::sources::sqs::MAX_WAIT))
            .load()
            .await;
        Self(Arc::new(config))
    }

    /// `connection`'s configuration: its region and endpoint when set, the default credential
    /// chain.
    pub fn connection(&self, connection: &AwsConnection) -> SdkConfig {
        let mut builder = self.0.to_builder();
        if let Some(region) = &connection.region {
            builder.set_region(Some(Region::new(region.clone())));
        }
        if let Some(endpoint) = &connection.endpoint_url {
            builder.set_endpoint_url(Some(endpoint.clone()));
        }
        builder.build()
    }
}

/// The SDK configuration for `connection` ([`AwsBase::connection`]) with credentials from its
/// Secret (read through the Kubernetes API) when it names one. `field` is the connection's
/// path in the spec, for errors (`spec.source.sqs`).
pub async fn sdk_config(
    base: &AwsBase,
    client: &kube::Client,
    namespace: &str,
    connection: &AwsConnection,
    field: &str,
) -> Result<SdkConfig, CredentialsError> {
    let config = base.connection(connection);
    let Some(reference) = &connection.credentials_secret_ref else {
        return Ok(config);
    };
    let field = format!("{field}.credentialsSecretRef");
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&reference.name)
        .await
        .map_err(|source| CredentialsError::Read {
            field: field.clone(),
            namespace: namespace.to_owned(),
            name: reference.name.clone(),
            source: Box::new(source),
        })?;
    let credentials = credentials_from_secret(&secret, reference, &field)?;
    Ok(config
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .build())
}

/// Static credentials from a Secret's keys (defaults `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`).
pub fn credentials_from_secret(
    secret: &Secret,
    reference: &CredentialsSecretRef,
    field: &str,
) -> Result<Credentials, CredentialsError> {
    let value = |key: &str| -> Result<Option<String>, CredentialsError> {
        let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) else {
            return Ok(None);
        };
        String::from_utf8(bytes.0.clone())
            .map(|text| Some(text.trim().to_owned()))
            .map_err(|_| CredentialsError::NotText {
                field: field.to_owned(),
                name: reference.name.clone(),
                key: key.to_owned(),
            })
    };
    let required = |key: &str| -> Result<String, CredentialsError> {
        value(key)?.ok_or_else(|| CredentialsError::MissingKey {
            field: field.to_owned(),
            name: reference.name.clone(),
            key: key.to_owned(),
        })
    };
    let access_key_id = required(
        reference
            .access_key_id_key
            .as_deref()
            .unwrap_or(DEFAULT_ACCESS_KEY_ID_KEY),
    )?;
    let secret_access_key = required(
        reference
            .secret_access_key_key
            .as_deref()
            .unwrap_or(DEFAULT_SECRET_ACCESS_KEY_KEY),
    )?;
    let session_token = value(
        reference
            .session_token_key
            .as_deref()
            .unwrap_or(DEFAULT_SESSION_TOKEN_KEY),
    )?;
    Ok(Credentials::new(
        access_key_id,
        secret_access_key,
        session_token,
        None,
        "esm-operator-secret",
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn reference() -> CredentialsSecretRef {
        CredentialsSecretRef {
            name: "aws".into(),
            access_key_id_key: None,
            secret_access_key_key: None,
            session_token_key: None,
        }
    }

    const FIELD: &str = "spec.source.sqs.credentialsSecretRef";

    #[test]
    fn default_keys() {
        let creds = credentials_from_secret(
            &secret(&[
                ("AWS_ACCESS_KEY_ID", b"AKID\n"),
                ("AWS_SECRET_ACCESS_KEY", b"shh"),
            ]),
            &reference(),
            FIELD,
        )
        .unwrap();
        assert_eq!(creds.access_key_id(), "AKID");
        assert_eq!(creds.secret_access_key(), "shh");
        assert_eq!(creds.session_token(), None);
    }

    #[test]
    fn custom_keys_and_session_token() {
        let reference = CredentialsSecretRef {
            access_key_id_key: Some("id".into()),
            secret_access_key_key: Some("key".into()),
            session_token_key: Some("token".into()),
            ..reference()
        };
        let creds = credentials_from_secret(
            &secret(&[("id", b"A"), ("key", b"B"), ("token", b"C")]),
            &reference,
            FIELD,
        )
        .unwrap();
        assert_eq!(creds.access_key_id(), "A");
        assert_eq!(creds.session_token(), Some("C"));
    }

    #[test]
    fn errors_name_the_secret_and_key() {
        let err =
            credentials_from_secret(&secret(&[("AWS_ACCESS_KEY_ID", b"A")]), &reference(), FIELD)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.source.sqs.credentialsSecretRef: Secret aws has no key \"AWS_SECRET_ACCESS_KEY\""
        );
        let err = credentials_from_secret(
            &secret(&[
                ("AWS_ACCESS_KEY_ID", b"\xff"),
                ("AWS_SECRET_ACCESS_KEY", b"B"),
            ]),
            &reference(),
            FIELD,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"AWS_ACCESS_KEY_ID\" of Secret aws is not UTF-8"),
            "{err}"
        );
    }
}
