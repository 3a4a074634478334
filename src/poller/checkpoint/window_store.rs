//! Tumbling-window state in ConfigMaps, one per (mapping, shard), beside the shard's Lease.
//!
//! A window's state can reach 1 MB ([`MAX_STATE_BYTES`]); Lease annotations hold at most
//! 256 KiB, a ConfigMap 1 MiB. The ConfigMap holds the state with the checkpoint it is valid
//! for, so the two are written in one request and a SIGKILL never separates them; the Lease's
//! own checkpoint may run ahead (it also passes filtered records), but a shard with window
//! state resumes from the ConfigMap's checkpoint.
//!
//! Writes are conditional on the resourceVersion this replica last read or wrote: a replica
//! that lost the shard cannot overwrite the state of its new holder without the new holder
//! noticing (its next write conflicts, and it reloads the state from the object).
//!
//! [`MAX_STATE_BYTES`]: crate::poller::window::MAX_STATE_BYTES

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::value::RawValue;

use super::{LeaseError, shard_lease_name};
use crate::meta::labels;
use crate::poller::window::{StoredWindow, Window};

/// Label telling window state ConfigMaps from the mapping's other objects.
pub const WINDOW_STATE_LABEL: &str = "esm.dev/window-state";

const CHECKPOINT_KEY: &str = "checkpoint";
const WINDOW_START_KEY: &str = "window-start";
const WINDOW_END_KEY: &str = "window-end";
const STATE_KEY: &str = "state";
const HOLDER_KEY: &str = "holder";

/// The window states of one mapping, written as one replica.
pub(super) struct ConfigMapWindows {
    api: Api<ConfigMap>,
    mapping: String,
    owner: OwnerReference,
    holder: String,
    /// resourceVersion last read or written per shard: the condition of the next write.
    versions: Mutex<HashMap<String, String>>,
}

impl ConfigMapWindows {
    pub(super) fn new(
        api: Api<ConfigMap>,
        mapping: String,
        owner: OwnerReference,
        holder: String,
    ) -> Self {
        Self {
            api,
            mapping,
            owner,
            holder,
            versions: Mutex::new(HashMap::new()),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lost(&self, shard_id: &str) -> LeaseError {
        self.versions().remove(shard_id);
        LeaseError::Lost {
            shard_id: shard_id.into(),
            holder: self.holder.clone(),
        }
    }

    /// The object of `shard_id` when it belongs to this incarnation of the mapping.
    async fn get(&self, shard_id: &str) -> Result<Option<ConfigMap>, LeaseError> {
        let name = shard_lease_name(&self.mapping, shard_id);
        Ok(self.api.get_opt(&name).await?.filter(|object| {
            object
                .owner_references()
                .iter()
                .any(|owner| owner.uid == self.owner.uid)
        }))
    }

    pub(super) async fn load(&self, shard_id: &str) -> Result<Option<StoredWindow>, LeaseError> {
        let Some(object) = self.get(shard_id).await? else {
            self.versions().remove(shard_id);
            return Ok(None);
        };
        let stored = parse(&object).map_err(|reason| LeaseError::BadWindowState {
            shard_id: shard_id.into(),
            object: format!("ConfigMap {}", object.name_any()),
            reason,
        })?;
        self.versions().insert(
            shard_id.into(),
            object.resource_version().unwrap_or_default(),
        );
        Ok(Some(stored))
    }

    pub(super) async fn save(
        &self,
        shard_id: &str,
        stored: &StoredWindow,
    ) -> Result<(), LeaseError> {
        let name = shard_lease_name(&self.mapping, shard_id);
        let version = self.versions().get(shard_id).cloned();
        let mut object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some({
                    let mut labels = labels(&self.mapping);
                    labels.insert(WINDOW_STATE_LABEL.into(), "shard".into());
                    labels
                }),
                owner_references: Some(vec![self.owner.clone()]),
                resource_version: version.clone(),
                ..ObjectMeta::default()
            },
            data: Some(data(stored, &self.holder)),
            ..ConfigMap::default()
        };
        let written = match version {
            Some(_) => {
                self.api
                    .replace(&name, &PostParams::default(), &object)
                    .await
            }
            None => {
                object.metadata.resource_version = None;
                self.api.create(&PostParams::default(), &object).await
            }
        };
        match written {
            Ok(written) => {
                self.versions().insert(
                    shard_id.into(),
                    written.resource_version().unwrap_or_default(),
                );
                Ok(())
            }
            // Written by another replica since this one read it (or created meanwhile), or
            // deleted: the state this replica works from is not the stored one any more.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                Err(self.lost(shard_id))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub(super) async fn remove(&self, shard_id: &str) -> Result<(), LeaseError> {
        let name = shard_lease_name(&self.mapping, shard_id);
        let Some(version) = self.versions().remove(shard_id) else {
            return Ok(());
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or written by another replica since: theirs to remove.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

fn data(stored: &StoredWindow, holder: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (STATE_KEY.to_owned(), stored.state.get().to_owned()),
        (HOLDER_KEY.to_owned(), holder.to_owned()),
    ]);
    if let Some(checkpoint) = &stored.checkpoint {
        data.insert(CHECKPOINT_KEY.into(), checkpoint.clone());
    }
    if let Some(window) = &stored.window {
        data.insert(WINDOW_START_KEY.into(), window.start.to_string());
        data.insert(WINDOW_END_KEY.into(), window.end.to_string());
    }
    data
}

/// The stored window of a ConfigMap; the reason names the key that cannot be read.
fn parse(object: &ConfigMap) -> Result<StoredWindow, String> {
    let empty = BTreeMap::new();
    let data = object.data.as_ref().unwrap_or(&empty);
    let time = |key: &str| -> Result<Option<Timestamp>, String> {
        data.get(key)
            .map(|text| {
                text.parse::<Timestamp>().map_err(|error| {
                    format!("data.{key} {text:?} is not an RFC 3339 time: {error}")
                })
            })
            .transpose()
    };
    let window = match (time(WINDOW_START_KEY)?, time(WINDOW_END_KEY)?) {
        (Some(start), Some(end)) if start < end => Some(Window { start, end }),
        (None, None) => None,
        _ => {
            return Err(format!(
                "data.{WINDOW_START_KEY} and data.{WINDOW_END_KEY} must both be set, start before end"
            ));
        }
    };
    let state = data
        .get(STATE_KEY)
        .ok_or_else(|| format!("data.{STATE_KEY} is missing"))?;
    let state = RawValue::from_string(state.clone())
        .map_err(|error| format!("data.{STATE_KEY} is not JSON: {error}"))?;
    Ok(StoredWindow {
        checkpoint: data.get(CHECKPOINT_KEY).cloned(),
        window,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn stored_window_round_trips_through_the_configmap_data() {
        let stored = StoredWindow {
            checkpoint: Some("49590338271490256608559692538361571095921575989136588898".into()),
            window: Some(Window {
                start: "2026-01-01T00:02:00Z".parse().unwrap(),
                end: "2026-01-01T00:04:00Z".parse().unwrap(),
            }),
            state: RawValue::from_string(r#"{"k1": 4}"#.into()).unwrap(),
        };
        let data = data(&stored, "pod-1");
        assert_eq!(data[HOLDER_KEY], "pod-1");
        let parsed = parse(&ConfigMap {
            data: Some(data),
            ..ConfigMap::default()
        })
        .unwrap();
        assert_eq!(parsed, stored);
        let between = StoredWindow {
            checkpoint: None,
            window: None,
            state: RawValue::from_string("{}".into()).unwrap(),
        };
        let parsed = parse(&ConfigMap {
            data: Some(super::data(&between, "pod-1")),
            ..ConfigMap::default()
        })
        .unwrap();
        assert_eq!(parsed, between);
    }

    #[test]
    fn unreadable_state_names_the_key() {
        let start = "2026-01-01T00:02:00Z";
        for (data, says) in [
            (vec![], "data.state is missing"),
            (vec![("state", "{nope")], "data.state is not JSON"),
            (
                vec![("state", "{}"), ("window-start", "noon")],
                "data.window-start \"noon\" is not an RFC 3339 time",
            ),
            (
                vec![("state", "{}"), ("window-start", start)],
                "must both be set",
            ),
        ] {
            let error = parse(&object(&data)).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }
}
