//! Pure: a mapping -> the child objects that run its pollers.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::api::EventSourceMapping;
use crate::meta::{MAPPING_LABEL, labels, spec_hash};
use crate::otlp::OtlpConfig;
use crate::telemetry::LogFormat;

/// Pod template annotation that changes whenever the pollers must restart.
pub const SPEC_HASH_ANNOTATION: &str = "esm.dev/spec-hash";
/// Port of the poller's admin server (`/metrics`, `/healthz`, `/readyz`).
pub const ADMIN_PORT: i32 = 8080;
/// Non-root user of the image (distroless `nonroot`).
const RUN_AS_USER: i64 = 65532;
/// Grace beyond the target timeout for a poller to finish its in-flight batches.
const SHUTDOWN_MARGIN_SECONDS: i64 = 15;

/// How the operator runs pollers; set from flags and the Helm chart.
#[derive(Clone, Debug, PartialEq)]
pub struct PollerConfig {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub default_resources: Option<ResourceRequirements>,
    pub log_format: LogFormat,
    /// The operator's span export, passed on so the pollers' call spans go to the same place.
    pub otlp: Option<OtlpConfig>,
}

/// Everything the controller applies for one mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Children {
    /// Absent when the mapping names its own ServiceAccount.
    pub service_account: Option<ServiceAccount>,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
}

/// Name of every child object of a mapping. Mapping names are at most 52 characters (a CEL rule
/// on the CRD), so this stays a valid label value and Deployment name.
pub fn child_name(mapping: &str) -> String {
    format!("esm-{mapping}")
}

/// The children of `mapping`, its Deployment at `replicas` (from [`super::scaling`]).
pub fn build(mapping: &EventSourceMapping, config: &PollerConfig, replicas: i32) -> Children {
    let name = mapping.name_any();
    let namespace = mapping.namespace().unwrap_or_default();
    let child = child_name(&name);
    let meta = ObjectMeta {
        name: Some(child.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&name)),
        owner_references: mapping.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    let poller = mapping.spec.poller.clone().unwrap_or_default();
    let service_account_name = poller
        .service_account_name
        .clone()
        .unwrap_or_else(|| child.clone());
    let service_account = poller
        .service_account_name
        .is_none()
        .then(|| ServiceAccount {
            metadata: meta.clone(),
            ..ServiceAccount::default()
        });
    let role = Role {
        metadata: meta.clone(),
        rules: Some(poller_rules(mapping)),
    };
    let role_binding = RoleBinding {
        metadata: meta.clone(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: child.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account_name.clone(),
            namespace: Some(namespace.clone()),
            ..Subject::default()
        }]),
    };

    let selector = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "esm-poller".to_string(),
        ),
        (MAPPING_LABEL.to_string(), name.clone()),
    ]);
    let timeout = mapping.spec.target.timeout().as_secs() as i64;
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http-admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let value = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let mut env = vec![
        value(
            "ESM_LOG_FORMAT",
            &format!("{:?}", config.log_format).to_lowercase(),
        ),
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(otlp) = &config.otlp {
        env.push(value("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint));
        env.push(value("OTEL_SERVICE_NAME", &otlp.service_name));
    }
    let container = Container {
        name: "poller".into(),
        image: Some(poller.image.clone().unwrap_or_else(|| config.image.clone())),
        image_pull_policy: config.image_pull_policy.clone(),
        args: Some(vec![
            "poller".into(),
            "--namespace".into(),
            namespace.clone(),
            "--mapping".into(),
            name.clone(),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http-admin".into()),
            container_port: ADMIN_PORT,
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: poller
            .resources
            .clone()
            .or_else(|| config.default_resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let pod_labels = labels(&name);
    let deployment = Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            // Stream shards move between replicas through leases; a surge replica would only
            // wait for them, so replace pods one by one.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        SPEC_HASH_ANNOTATION.to_string(),
                        spec_hash(mapping),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account_name),
                    containers: vec![container],
                    node_selector: (!poller.node_selector.is_empty())
                        .then(|| poller.node_selector.clone()),
                    tolerations: (!poller.tolerations.is_empty())
                        .then(|| poller.tolerations.clone()),
                    termination_grace_period_seconds: Some(timeout + SHUTDOWN_MARGIN_SECONDS),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    Children {
        service_account,
        role,
        role_binding,
        deployment,
    }
}

/// What a poller of this mapping may do: hold its shard leases, read its mapping, report status
/// and events, read the credentials Secrets the mapping names, and keep tumbling-window state.
fn poller_rules(mapping: &EventSourceMapping) -> Vec<PolicyRule> {
    let name = mapping.name_any();
    let rule =
        |group: &str, resources: &[&str], verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec![group.into()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            resource_names: names,
            ..PolicyRule::default()
        };
    let mut rules = vec![
        rule(
            "coordination.k8s.io",
            &["leases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
            None,
        ),
        rule(
            "esm.dev",
            &["eventsourcemappings"],
            &["get", "list", "watch"],
            Some(vec![name.clone()]),
        ),
        rule(
            "esm.dev",
            &["eventsourcemappings/status"],
            &["get", "patch"],
            Some(vec![name]),
        ),
        rule("events.k8s.io", &["events"], &["create", "patch"], None),
    ];
    if mapping.spec.tumbling_window_in_seconds.unwrap_or(0) > 0 {
        // Window state, one ConfigMap per shard beside its Lease (poller::checkpoint).
        rules.push(rule(
            "",
            &["configmaps"],
            &["get", "create", "update", "delete"],
            None,
        ));
    }
    let secrets = credentials_secrets(mapping);
    if !secrets.is_empty() {
        rules.push(rule("", &["secrets"], &["get"], Some(secrets)));
    }
    rules
}

/// Secrets named by the source and the on-failure destination, sorted and without repeats.
fn credentials_secrets(mapping: &EventSourceMapping) -> Vec<String> {
    let spec = &mapping.spec;
    let source = &spec.source;
    let connections = [
        source.sqs.as_ref().map(|s| &s.aws),
        source.kinesis.as_ref().map(|s| &s.aws),
        source.dynamodb_streams.as_ref().map(|s| &s.aws),
        spec.destination_config
            .as_ref()
            .and_then(|d| d.on_failure.sqs.as_ref())
            .map(|s| &s.aws),
    ];
    let mut names: Vec<String> = connections
        .into_iter()
        .flatten()
        .filter_map(|aws| aws.credentials_secret_ref.as_ref().map(|r| r.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixtures_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build")
    }

    fn fixture(name: &str) -> EventSourceMapping {
        let path = fixtures_dir().join(format!("{name}.yaml"));
        let yaml = std::fs::read_to_string(&path).expect("fixture exists");
        serde_yaml::from_str(&yaml).expect("fixture is a mapping")
    }

    fn config() -> PollerConfig {
        PollerConfig {
            image: "ghcr.io/esm-operator/esm-operator:0.1.0".into(),
            image_pull_policy: None,
            default_resources: serde_json::from_value(serde_json::json!({
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"memory": "128Mi"},
            }))
            .unwrap(),
            log_format: LogFormat::Json,
            otlp: None,
        }
    }

    /// Each fixture's children are compared with `expected/NAME.yaml`; run with UPDATE_GOLDEN=1
    /// to rewrite them after an intended change, and review the diff.
    #[test]
    fn children_match_golden_files() {
        let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .filter_map(|e| {
                let path = e.unwrap().path();
                (path.extension()? == "yaml")
                    .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        names.sort();
        assert!(names.len() >= 4);
        for name in names {
            let mapping = fixture(&name);
            let replicas = i32::from(mapping.spec.enabled);
            let actual = serde_yaml::to_string(&build(&mapping, &config(), replicas)).unwrap();
            let golden = fixtures_dir().join("expected").join(format!("{name}.yaml"));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                std::fs::write(&golden, &actual).unwrap();
            }
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            assert!(
                expected == actual,
                "{name}: children differ from {} (UPDATE_GOLDEN=1 to rewrite):\n{actual}",
                golden.display()
            );
        }
    }

    #[test]
    fn own_service_account_is_bound_and_none_is_created() {
        let children = build(&fixture("dynamodb-own-service-account"), &config(), 1);
        assert!(children.service_account.is_none());
        let subjects = children.role_binding.subjects.unwrap();
        assert_eq!(subjects[0].name, "audit-irsa");
        let pod = children.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("audit-irsa"));
    }

    #[test]
    fn pollers_may_read_only_the_named_credentials_secrets() {
        let rules = build(&fixture("kinesis-full"), &config(), 1)
            .role
            .rules
            .unwrap();
        let secrets: Vec<_> = rules
            .iter()
            .filter(|r| {
                r.resources
                    .as_ref()
                    .is_some_and(|r| r.contains(&"secrets".to_string()))
            })
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].verbs, ["get"]);
        assert_eq!(
            secrets[0].resource_names.as_deref(),
            Some(&["aws-clicks".to_string(), "aws-dlq".to_string()][..])
        );
        let no_secrets = build(&fixture("sqs-standard"), &config(), 1)
            .role
            .rules
            .unwrap();
        assert!(!no_secrets.iter().any(|r| {
            r.resources
                .as_ref()
                .unwrap()
                .contains(&"secrets".to_string())
        }));
    }

    #[test]
    fn spec_hash_changes_with_what_pollers_read_only() {
        let base = fixture("sqs-standard");
        let mut disabled = base.clone();
        disabled.spec.enabled = false;
        assert_eq!(
            spec_hash(&base),
            spec_hash(&disabled),
            "enabled only scales"
        );
        let mut longer_timeout = base.clone();
        longer_timeout.spec.target.timeout_seconds = Some(60);
        assert_ne!(spec_hash(&base), spec_hash(&longer_timeout));
    }

    fn poller_container(children: Children) -> Container {
        let pod = children.deployment.spec.unwrap().template.spec.unwrap();
        pod.containers.into_iter().next().unwrap()
    }

    #[test]
    fn mapping_resources_override_the_operator_default() {
        let full = poller_container(build(&fixture("kinesis-full"), &config(), 1));
        let limits = full.resources.unwrap().limits.unwrap();
        assert_eq!(limits["memory"].0, "256Mi");
        let plain = poller_container(build(&fixture("sqs-standard"), &config(), 1));
        assert_eq!(plain.resources, config().default_resources);
    }

    #[test]
    fn pollers_export_spans_where_the_operator_does() {
        let env_of = |config: &PollerConfig| -> BTreeMap<String, Option<String>> {
            poller_container(build(&fixture("sqs-standard"), config, 1))
                .env
                .unwrap()
                .into_iter()
                .map(|var| (var.name, var.value))
                .collect()
        };
        let off = env_of(&config());
        assert!(!off.keys().any(|name| name.starts_with("OTEL_")), "{off:?}");
        let exporting = PollerConfig {
            otlp: Some(OtlpConfig {
                endpoint: "http://collector.observability:4318".into(),
                service_name: "esm-shop".into(),
            }),
            ..config()
        };
        let on = env_of(&exporting);
        assert_eq!(
            on["OTEL_EXPORTER_OTLP_ENDPOINT"].as_deref(),
            Some("http://collector.observability:4318")
        );
        assert_eq!(on["OTEL_SERVICE_NAME"].as_deref(), Some("esm-shop"));
        assert_eq!(on.len(), off.len() + 2, "the other variables stay");
    }
}
