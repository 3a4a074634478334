//! One reconciliation: parse -> validate -> build -> apply (server-side apply) -> status.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::build::{self, Children};
use super::scaling::{self, Decision, Step};
use super::status::{self, NextStatus, Observation, Workload};
use super::validate::{self, InvalidSpec};
use super::{Context, Pollers};
use crate::api::{EventSourceMapping, EventSourceMappingStatus};
use crate::error::Result;
use crate::meta::{READY, set_condition};
use crate::poller::status::PROBLEM_PREFIX;

/// The one field manager for everything the controller applies.
pub const FIELD_MANAGER: &str = "esm-operator";
/// Re-check even without a watch event, to repair drift of children that are not watched.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again at in-process pollers that are starting or stopping.
const SETTLE_POLL: Duration = Duration::from_secs(1);

pub async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = object.namespace().unwrap_or_default();
    let _timer = ctx.metrics.reconcile_started(&namespace);
    // The stored status, the pollers' lastProcessingResult included: every status write is a
    // watch event, so the series follow it one reconciliation behind, malformed mappings too.
    let stored_status = object
        .data
        .get("status")
        .and_then(|status| serde_json::from_value(status.clone()).ok());
    ctx.metrics
        .status(&namespace, &object.name_any(), stored_status.as_ref());
    let mapping = match validate::parse(&object) {
        Ok(mapping) => mapping,
        Err(invalid) => return report_malformed(&object, &invalid, &ctx).await,
    };
    let now = now();
    let validation = validate::validate(&mapping, now);
    let deleting = mapping.meta().deletion_timestamp.is_some();
    let mut decision = None;
    let observation = match (&validation, deleting) {
        (_, true) => {
            ctx.metrics.forget(&namespace, &mapping.name_any());
            Observation::Deleting
        }
        (Err(invalid), false) => Observation::Invalid(invalid),
        (Ok(()), false) => {
            let duplicate_of = ctx.older_duplicate(&object, &mapping);
            let decided = scale(&mapping, duplicate_of.is_none(), &ctx, now).await;
            let workload = match &ctx.pollers {
                Pollers::Deployments(config) => {
                    let children = build::build(&mapping, config, decided.replicas());
                    observe(&apply_children(&mapping, &children, &ctx).await?)
                }
                Pollers::InProcess(pollers) => pollers.ensure(&mapping, decided.concurrency()),
            };
            decision = Some(decided);
            match duplicate_of {
                Some(of) => Observation::Duplicate { of, workload },
                None => Observation::Running(workload),
            }
        }
    };
    // In-process pollers report no watch events: look again soon while they start or stop.
    let settling = matches!(&ctx.pollers, Pollers::InProcess(_))
        && matches!(observation, Observation::Running(w) if !w.settled());
    let mut next = status::next_status(&mapping, observation, now);
    if let Some(decision) = &decision {
        next.owned.scaling = Some(decision.status.clone());
    }
    update_status(&mapping, next, &ctx).await?;
    let idle = decision
        .as_ref()
        .is_some_and(|d| scaling::idle_queue(&d.status.signals));
    if let Some(decision) = decision {
        ctx.metrics.scaled(
            &namespace,
            &mapping.name_any(),
            &decision.status,
            scaling::queue_cap(&mapping.spec, &ctx.scaling),
        );
        if let Some(step) = &decision.step {
            publish_step(&mapping, step, decision.replicas(), &ctx).await;
        }
    }
    ctx.succeeded(&mapping);
    let next_look = if settling {
        SETTLE_POLL
    } else if validation.is_ok() && mapping.spec.enabled && !deleting {
        if idle {
            ctx.scaling.idle_interval
        } else {
            ctx.scaling.interval
        }
    } else {
        RESYNC
    };
    Ok(Action::requeue(next_look))
}

/// The scaling decision from the source's signals (read at most once per interval) and the
/// previous decision in status; zero when the mapping is disabled or may not `run`.
async fn scale(mapping: &EventSourceMapping, run: bool, ctx: &Context, now: Timestamp) -> Decision {
    let previous = mapping.status.as_ref().and_then(|s| s.scaling.as_ref());
    if !mapping.spec.enabled {
        return scaling::decide(&mapping.spec, Err("disabled"), previous, now, &ctx.scaling);
    }
    if !run {
        // A mapping that may not run scales to zero as a disabled one does.
        let stopped = crate::api::EventSourceMappingSpec {
            enabled: false,
            ..mapping.spec.clone()
        };
        return scaling::decide(&stopped, Err("refused"), previous, now, &ctx.scaling);
    }
    let signals = ctx.signals.get(mapping).await;
    if let Err(error) = &signals {
        tracing::debug!(mapping = %mapping.name_any(), %error, "cannot read scaling signals");
    }
    let observed = signals.as_ref().map_err(String::as_str);
    scaling::decide(&mapping.spec, observed, previous, now, &ctx.scaling)
}

/// An event for each change of concurrency; a repeated step counts up its series.
async fn publish_step(mapping: &EventSourceMapping, step: &Step, replicas: i32, ctx: &Context) {
    let event = Event {
        type_: EventType::Normal,
        reason: if step.to > step.from {
            "ScaledUp".into()
        } else {
            "ScaledDown".into()
        },
        note: Some(format!(
            "concurrency {} -> {} ({replicas} replicas): {}",
            step.from, step.to, step.reason
        )),
        // The recorder folds events of one action and reason into a series that keeps the first
        // note: naming the step in the action keeps every step visible.
        action: format!("Scale{}To{}", step.from, step.to),
        secondary: None,
    };
    ctx.publish(&event, &mapping.object_ref(&())).await;
}

/// Whole seconds: the API server stores condition times at that precision, so a status computed
/// twice compares equal and is not rewritten.
fn now() -> Timestamp {
    let now = Timestamp::now();
    now.checked_sub(now.subsec_nanosecond().nanoseconds())
        .unwrap_or(now)
}

async fn apply_children(
    mapping: &EventSourceMapping,
    children: &Children,
    ctx: &Context,
) -> Result<Deployment> {
    let namespace = mapping.namespace().unwrap_or_default();
    let client = &ctx.client;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let child_name = build::child_name(&mapping.name_any());
    match &children.service_account {
        Some(account) => {
            apply(&service_accounts, account).await?;
        }
        // The mapping now names its own ServiceAccount: remove the one made for it before.
        None => match service_accounts
            .delete(&child_name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        },
    }
    apply(
        &Api::<Role>::namespaced(client.clone(), &namespace),
        &children.role,
    )
    .await?;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), &namespace),
        &children.role_binding,
    )
    .await?;
    apply(
        &Api::<Deployment>::namespaced(client.clone(), &namespace),
        &children.deployment,
    )
    .await
}

/// Server-side apply; the API server leaves an unchanged object untouched (no new
/// resourceVersion), so repeating it is free.
async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource + Serialize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

fn observe(deployment: &Deployment) -> Workload {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0)
        >= deployment.metadata.generation.unwrap_or(0)
        && status.observed_generation.is_some();
    Workload {
        desired,
        current: status.replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        rolled_out: observed && status.updated_replicas.unwrap_or(0) >= desired,
    }
}

async fn update_status(
    mapping: &EventSourceMapping,
    next: NextStatus,
    ctx: &Context,
) -> Result<()> {
    let api: Api<EventSourceMapping> =
        Api::namespaced(ctx.client.clone(), &mapping.namespace().unwrap_or_default());
    if let Some(result) = &next.processing_result {
        // A merge patch, not an apply: pollers own this field once they run, and an apply that
        // later left it out would delete their value.
        let patch = json!({"status": {"lastProcessingResult": result}});
        api.patch_status(
            &mapping.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let previous = status::owned_part(&mapping.status.clone().unwrap_or_default());
    let next = next.owned;
    if previous == next {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "esm.dev/v1alpha1",
        "kind": "EventSourceMapping",
        "status": next,
    });
    api.patch_status(
        &mapping.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if previous.state != next.state || ready_reason(&previous) != ready_reason(&next) {
        let warning = ready_reason(&next).filter(|r| status::REFUSED_REASONS.contains(r));
        let event = Event {
            type_: if warning.is_some() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: match warning {
                Some(reason) => reason.into(),
                None => format!("{:?}", next.state.expect("next status has a state")),
            },
            note: ready_condition(&next).map(|c| c.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.publish(&event, &mapping.object_ref(&())).await;
    }
    Ok(())
}

fn ready_condition(status: &EventSourceMappingStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == READY)
}

fn ready_reason(status: &EventSourceMappingStatus) -> Option<&str> {
    ready_condition(status).map(|c| c.reason.as_str())
}

/// A stored object that does not fit the API types (written under an older or looser CRD):
/// say which field in an event and in its status, and wait for it to be fixed.
async fn report_malformed(
    object: &DynamicObject,
    invalid: &InvalidSpec,
    ctx: &Context,
) -> Result<Action> {
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    tracing::warn!(%namespace, %name, error = %invalid, "malformed mapping");
    let already = status::untyped_ready(object)
        .is_some_and(|c| c["reason"] == "MalformedSpec" && c["message"] == invalid.to_string());
    if !already {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            "False",
            "MalformedSpec",
            &invalid.to_string(),
            object.metadata.generation,
            now(),
        );
        let patch = json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "status": {
                "lastProcessingResult": format!("{PROBLEM_PREFIX}malformed spec: {invalid}"),
                "conditions": conditions,
                "observedGeneration": object.metadata.generation,
            },
        });
        // Untyped: the typed API could not read this object back.
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &super::mapping_resource());
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("esm.dev/v1alpha1".into()),
            kind: Some("EventSourceMapping".into()),
            name: Some(name.clone()),
            namespace: Some(namespace),
            uid: object.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "MalformedSpec".into(),
            note: Some(invalid.to_string()),
            action: "Reconcile".into(),
            secondary: None,
        };
        ctx.publish(&event, &reference).await;
    }
    Ok(Action::await_change())
}
