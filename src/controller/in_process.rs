//! `--pollers in-process`: the controller runs every mapping's pollers itself, as tasks, with
//! the same engine as the `poller` subcommand. One pod for small clusters, and the mode that
//! works where no kubelet runs pods (local runs, tests).
use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::Workload;
use crate::api::EventSourceMapping;
use crate::poller::queue::ActivitySnapshot;
use crate::poller::report::ACTIVITY_PERIOD;
use crate::poller::{PollerContext, PollerHandle, run_mapping};

/// The pollers of every mapping this controller has seen, by `namespace/name`.
pub struct InProcessPollers {
    context: PollerContext,
    running: Mutex<HashMap<String, RunningMapping>>,
}

struct RunningMapping {
    /// A mapping deleted and created again under the same name gets fresh pollers.
    uid: Option<String>,
    handle: PollerHandle,
    /// The mapping's concurrency: how many receive loops its pollers run.
    concurrency: watch::Sender<usize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl InProcessPollers {
    pub fn new(context: PollerContext) -> Self {
        Self {
            context,
            running: Mutex::default(),
        }
    }

    /// Makes sure the mapping's pollers run (they follow its spec and `enabled` themselves) with
    /// `concurrency` receive loops, and says how they look: one ready "replica" while the engine
    /// polls.
    pub fn ensure(&self, mapping: &EventSourceMapping, concurrency: u32) -> Workload {
        let key = key(
            &mapping.namespace().unwrap_or_default(),
            &mapping.name_any(),
        );
        let mut running = self.running.lock().expect("pollers lock");
        let stale = running
            .get(&key)
            .is_some_and(|r| r.uid != mapping.metadata.uid || r.task.is_finished());
        if let Some(stale) = stale.then(|| running.remove(&key)).flatten() {
            let _ = stale.stop.send(true);
        }
        let concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
        let pollers = running
            .entry(key)
            .or_insert_with(|| self.start(mapping, concurrency));
        pollers.concurrency.send_if_modified(|loops| {
            let changed = *loops != concurrency;
            *loops = concurrency;
            changed
        });
        let polling = i32::from(pollers.handle.running.get());
        Workload {
            desired: i32::from(mapping.spec.enabled),
            current: polling,
            ready: polling,
            // The engine restarts on spec changes by itself; there is no rollout to wait for.
            rolled_out: true,
        }
    }

    /// What the mapping's pollers saw in the last [`ACTIVITY_PERIOD`] (nothing when they do
    /// not run).
    pub fn activity(&self, mapping: &EventSourceMapping) -> ActivitySnapshot {
        let key = key(
            &mapping.namespace().unwrap_or_default(),
            &mapping.name_any(),
        );
        let running = self.running.lock().expect("pollers lock");
        running
            .get(&key)
            .filter(|pollers| pollers.uid == mapping.metadata.uid)
            .map(|pollers| pollers.handle.activity.snapshot(ACTIVITY_PERIOD))
            .unwrap_or_default()
    }

    fn start(&self, mapping: &EventSourceMapping, concurrency: usize) -> RunningMapping {
        let (concurrency, loops) = watch::channel(concurrency);
        let handle = PollerHandle {
            loops: Some(loops),
            ..PollerHandle::default()
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_mapping(
            self.context.clone(),
            mapping.namespace().unwrap_or_default(),
            mapping.name_any(),
            handle.clone(),
            stopped,
        ));
        RunningMapping {
            uid: mapping.metadata.uid.clone(),
            handle,
            concurrency,
            stop,
            task,
        }
    }

    /// Stops the pollers of mappings that no longer exist (`exists(namespace, name)` is false).
    pub async fn retain(&self, exists: impl Fn(&str, &str) -> bool) {
        let (keys, gone): (Vec<String>, Vec<RunningMapping>) = {
            let mut running = self.running.lock().expect("pollers lock");
            let keys: Vec<String> = running
                .keys()
                .filter(|key| {
                    let (namespace, name) = key.split_once('/').expect("keys are namespace/name");
                    !exists(namespace, name)
                })
                .cloned()
                .collect();
            let gone = keys.iter().filter_map(|k| running.remove(k)).collect();
            (keys, gone)
        };
        stop_all(gone).await;
        // The mappings are gone: so are their metric series (a poller process just exits).
        for key in keys {
            let (namespace, name) = key.split_once('/').expect("keys are namespace/name");
            self.context.metrics.forget(namespace, name);
        }
    }

    /// Stops every mapping's pollers, letting in-flight batches finish.
    pub async fn shutdown(&self) {
        let all: Vec<RunningMapping> = self
            .running
            .lock()
            .expect("pollers lock")
            .drain()
            .map(|(_, r)| r)
            .collect();
        stop_all(all).await;
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

async fn stop_all(pollers: Vec<RunningMapping>) {
    for pollers in &pollers {
        let _ = pollers.stop.send(true);
    }
    for pollers in pollers {
        if let Err(err) = pollers.task.await {
            tracing::warn!(error = %err, "a mapping's pollers ended abnormally");
        }
    }
}
