//! End to end in deployments mode, on a real node (`hack/start-cluster.sh`): the chart
//! installs the operator from the local image, each mapping becomes a Deployment of poller
//! pods, and the example target runs as a Deployment behind a Service. The emulators run on
//! the host, bound to the node IP, each with a selector-less Service + EndpointSlice, so pods
//! reach every endpoint by its DNS name.
//!
//! Runs when `ESM_CLUSTER_KUBECONFIG` names such a cluster (hack/test.sh starts one and
//! builds the images when it runs as root on a machine with cgroups); otherwise the test says
//! so and passes. Assertions are what the semantics promise — every record delivered, per-key
//! order, duplicates bounded and reported — with generous deadlines, never timings.
mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEventRecord;
use esm_operator::api::{EventSourceMapping, State};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use support::control_plane::{ControlPlane, TestNamespace, repo_root};
use support::emulators::{Emulators, dynamodb_table, kinesis_stream, kinesis_stream_active};
use support::records::{assert_complete_and_ordered, keyed_records};
use support::streams::put_kinesis;
use support::wait;

const OPERATOR_IMAGE: &str = "localhost/esm-operator/esm-operator";
const RELEASE: &str = "esm-operator";
const OPERATOR_NAMESPACE: &str = "esm-system";
/// Deadline of anything that starts pods or moves records: generous, a busy 2-core machine.
const SLOW: Duration = Duration::from_secs(300);

/// The cluster of `hack/start-cluster.sh`, from the variables it prints.
struct Cluster {
    plane: ControlPlane,
    client: Client,
    node_ip: IpAddr,
    /// The API server's URL and CA, for calls with a ServiceAccount token alone.
    server: String,
    ca: PathBuf,
    crictl: Vec<String>,
    emulators: Emulators,
}

fn cluster_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Cluster {
    async fn from_env() -> Option<Arc<Cluster>> {
        let Some(kubeconfig) = cluster_env("ESM_CLUSTER_KUBECONFIG") else {
            eprintln!(
                "SKIPPED tests/pods.rs: no real cluster (ESM_CLUSTER_KUBECONFIG is unset). \
                 hack/test.sh starts one (hack/start-cluster.sh) and builds the images when it \
                 runs as root on a machine with cgroups; by hand: \
                 eval \"$(hack/start-cluster.sh)\" && hack/build-images.sh && cargo test --test pods"
            );
            return None;
        };
        let var = |name: &str| cluster_env(name).unwrap_or_else(|| panic!("{name} is unset"));
        let bin = PathBuf::from(var("ESM_CLUSTER_BIN"));
        let state = PathBuf::from(var("ESM_CLUSTER_STATE"));
        let plane = ControlPlane::of_cluster(kubeconfig.into(), bin.clone(), state.clone());
        let node_ip: IpAddr = var("ESM_CLUSTER_NODE_IP").parse().expect("a node IP");
        let emulators = Emulators::start_on(&["moto", "kinesis", "dynamodb"], &node_ip.to_string());
        let crictl = vec![
            bin.join("crictl").to_string_lossy().into_owned(),
            "--runtime-endpoint".into(),
            var("ESM_CLUSTER_CRI"),
        ];
        Some(Arc::new(Cluster {
            client: plane.client().await,
            plane,
            server: var("ESM_CLUSTER_SERVER"),
            ca: state.join("pki/ca.crt"),
            node_ip,
            crictl,
            emulators,
        }))
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.plane.kubectl_ok(&all)).expect("kubectl prints JSON")
    }

    fn helm_ok(&self, args: &[&str]) -> String {
        let output = self
            .plane
            .helm()
            .args(args)
            .current_dir(repo_root())
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `helm install` or `helm upgrade` of the chart with the local image; scaling rates
    /// shortened so that a ramp shows within a test (values as a user would set them).
    fn helm_install(&self, command: &str, extra: &[&str]) {
        let repository = format!("image.repository={OPERATOR_IMAGE}");
        let mut args = vec![
            command,
            RELEASE,
            "charts/esm-operator",
            "-n",
            OPERATOR_NAMESPACE,
            "--set",
            &repository,
            "--set",
            "image.tag=dev",
            "--set",
            "logFormat=plain",
            "--set",
            "scaling.initialConcurrency=1",
            "--set",
            "scaling.rampPerMinute=120",
            "--set",
            "scaling.intervalSeconds=2",
            "--set",
            "scaling.scaleDownWindowSeconds=20",
            "--wait",
            "--timeout",
            "5m",
        ];
        if command == "install" {
            args.push("--create-namespace");
        }
        args.extend(extra);
        self.helm_ok(&args);
    }

    fn operator_pods(&self) -> Vec<Value> {
        let pods = self.kubectl_json(&[
            "-n",
            OPERATOR_NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=controller",
        ]);
        pods["items"].as_array().cloned().unwrap_or_default()
    }

    /// The one Ready operator pod's UID, once there is exactly one.
    async fn operator_ready(&self) -> String {
        wait::until("one Ready operator pod", SLOW, || async {
            let pods = self.operator_pods();
            match pods.as_slice() {
                [pod] if json_ready(pod) => pod["metadata"]["uid"].as_str().map(str::to_owned),
                _ => None,
            }
        })
        .await
    }

    /// The operator's /metrics through its Service's ClusterIP (kube-proxy's rules serve the
    /// host too).
    async fn scrape_operator(&self) -> String {
        let service = self.kubectl_json(&[
            "-n",
            OPERATOR_NAMESPACE,
            "get",
            "service",
            &format!("{RELEASE}-metrics"),
        ]);
        let ip = service["spec"]["clusterIP"].as_str().expect("a ClusterIP");
        let port = service["spec"]["ports"][0]["port"]
            .as_u64()
            .expect("a port");
        let url = format!("http://{ip}:{port}/metrics");
        wait::until(
            "the operator's /metrics through its Service",
            SLOW,
            || async {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())?;
                response.text().await.ok()
            },
        )
        .await
    }
}

fn json_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// One test namespace: the AWS credentials Secret, the emulators' Services and the example
/// target (Deployment + Service `target`), whose records land in `records` on the host.
struct Scenario {
    cluster: Arc<Cluster>,
    ns: TestNamespace,
    records: PathBuf,
}

impl Scenario {
    async fn new(cluster: &Arc<Cluster>, prefix: &str) -> Scenario {
        let ns = cluster.plane.namespace(&cluster.client, prefix).await;
        let records = std::env::temp_dir().join(format!("esm-e2e-{}", ns.name));
        std::fs::create_dir_all(&records).expect("a records directory");
        // The target runs as the image's nonroot user.
        std::fs::set_permissions(
            &records,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod the records directory");
        let scenario = Scenario {
            cluster: cluster.clone(),
            ns,
            records,
        };
        scenario.apply(
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws"},
                "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}}"#,
        );
        for name in ["moto", "kinesis", "dynamodb"] {
            let port = port_of(cluster.emulators.endpoint(name));
            scenario.host_service(name, port);
        }
        let records = scenario.records.to_string_lossy().into_owned();
        scenario.apply(&manifest("target.yaml", &[("RECORDS_DIR", &records)]));
        // Ready before any mapping: a batch sent to a target not listening yet is retried
        // (SQS: after the visibility timeout), which only makes the scenarios slower.
        let deployments: Api<Deployment> =
            Api::namespaced(cluster.client.clone(), &scenario.ns.name);
        wait::until("the example target Ready", SLOW, || async {
            let status = deployments.get("target").await.ok()?.status?;
            (status.ready_replicas == Some(1)).then_some(())
        })
        .await;
        scenario
    }

    fn name(&self) -> &str {
        &self.ns.name
    }

    fn apply(&self, manifest: &str) {
        self.cluster.plane.kubectl_apply(self.name(), manifest);
    }

    /// A DNS name for a host process: a selector-less Service and an EndpointSlice with the
    /// node IP.
    fn host_service(&self, name: &str, port: u16) {
        let (port, ip) = (port.to_string(), self.cluster.node_ip.to_string());
        self.apply(&manifest(
            "host-service.yaml",
            &[("NAME", name), ("PORT", &port), ("NODE_IP", &ip)],
        ));
    }

    /// The in-cluster URL of emulator `name`.
    fn endpoint(&self, name: &str) -> String {
        let port = port_of(self.cluster.emulators.endpoint(name));
        format!("http://{name}.{}.svc.cluster.local:{port}", self.name())
    }

    fn aws(&self, name: &str) -> Value {
        json!({"region": "us-east-1", "endpointUrl": self.endpoint(name),
               "credentialsSecretRef": {"name": "aws"}})
    }

    fn mappings(&self) -> Api<EventSourceMapping> {
        Api::namespaced(self.cluster.client.clone(), self.name())
    }

    /// Applies mapping `name` delivering to `target` (a Service of this namespace).
    fn mapping(&self, name: &str, target: &str, source: Value, extra: Value) {
        let mut spec = json!({
            "source": source,
            "target": {"service": {"name": target, "port": 8080}},
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.apply(
            &json!({"apiVersion": "esm.dev/v1alpha1", "kind": "EventSourceMapping",
                    "metadata": {"name": name}, "spec": spec})
            .to_string(),
        );
    }

    fn poller_pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client.clone(), self.name())
    }

    async fn poller_pods(&self, mapping: &str) -> Vec<Pod> {
        self.poller_pods_api()
            .list(&ListParams::default().labels(&format!("esm.dev/mapping={mapping}")))
            .await
            .expect("list poller pods")
            .items
    }

    /// Waits until mapping `name` is Enabled for its current generation with `replicas` poller
    /// pods (when given, else as many as its status asks for), all Running and Ready, and no
    /// other pod; returns the mapping.
    async fn enabled(&self, name: &str, replicas: Option<i32>) -> EventSourceMapping {
        let what = format!("{name} Enabled with {replicas:?} Running+Ready poller pods");
        wait::until(&what, SLOW, || async {
            let mapping = self.mappings().get(name).await.ok()?;
            let status = mapping.status.as_ref()?;
            let desired = status.replicas?;
            (status.state == Some(State::Enabled)
                && status.observed_generation == mapping.metadata.generation
                && replicas.is_none_or(|r| r == desired)
                && status.ready_replicas == Some(desired))
            .then_some(())?;
            let pods = self.poller_pods(name).await;
            (pods.len() == desired as usize && pods.iter().all(pod_ready)).then_some(())?;
            Some(mapping)
        })
        .await
    }

    /// Waits until status says `lastProcessingResult: OK`.
    async fn processing_ok(&self, name: &str) {
        wait::until(&format!("{name} lastProcessingResult OK"), SLOW, || async {
            let mapping = self.mappings().get(name).await.ok()?;
            (mapping.status?.last_processing_result.as_deref() == Some("OK")).then_some(())
        })
        .await;
    }

    /// Every record line the example target wrote so far.
    fn target_records(&self) -> Vec<Value> {
        let path = self.records.join("records.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The payloads (SQS body, Kinesis data, DynamoDB NewImage `v`) the target got from
    /// `source` (`aws:sqs`, ...) whose ARN ends with `arn_suffix`.
    fn delivered(&self, source: &str, arn_suffix: &str) -> Vec<String> {
        self.target_records()
            .into_iter()
            .filter(|r| r["eventSource"] == source)
            .filter(|r| {
                r["eventSourceARN"]
                    .as_str()
                    .is_some_and(|arn| arn.ends_with(arn_suffix))
            })
            .map(|record| payload(&record))
            .collect()
    }

    /// Waits until every expected payload arrived; returns all that arrived.
    async fn all_delivered(
        &self,
        source: &str,
        arn_suffix: &str,
        expected: &[(String, String)],
    ) -> Vec<String> {
        let want: BTreeSet<&str> = expected.iter().map(|(_, data)| data.as_str()).collect();
        let what = format!("{} records from {source} {arn_suffix}", want.len());
        wait::until(&what, SLOW, || async {
            let got = self.delivered(source, arn_suffix);
            let seen: BTreeSet<&str> = got.iter().map(String::as_str).collect();
            want.is_subset(&seen).then(|| got.clone())
        })
        .await
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.records);
    }
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {endpoint}"))
}

/// A manifest of hack/manifests/ with its `${NAME}` placeholders replaced.
fn manifest(file: &str, values: &[(&str, &str)]) -> String {
    let path = repo_root().join("hack/manifests").join(file);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(!text.contains("${"), "{file}: a placeholder is left");
    text
}

/// What a record carries: the SQS body, the Kinesis data, or DynamoDB's NewImage `v`.
fn payload(record: &Value) -> String {
    match record["eventSource"].as_str() {
        Some("aws:sqs") => record["body"].as_str().unwrap_or_default().to_owned(),
        Some("aws:kinesis") => {
            let record: KinesisEventRecord =
                serde_json::from_value(record.clone()).expect("a Kinesis record");
            String::from_utf8(record.kinesis.data.0).expect("UTF-8 data")
        }
        Some("aws:dynamodb") => record["dynamodb"]["NewImage"]["v"]["S"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        other => panic!("a record from {other:?}"),
    }
}

/// How many payloads arrived more than once.
fn duplicates(delivered: &[String]) -> usize {
    delivered.len() - delivered.iter().collect::<BTreeSet<_>>().len()
}

// ------------------------------------------------------------------------------ sources ---

async fn sqs_queue(cluster: &Cluster, name: &str, fifo: bool) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&cluster.emulators.sdk_config("moto"));
    let mut create = sqs.create_queue().queue_name(name);
    if fifo {
        create = create.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    let url = create
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    (sqs, url)
}

async fn send_messages(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    records: &[(String, String)],
    fifo: bool,
) {
    for (i, chunk) in records.chunks(10).enumerate() {
        let mut batch = sqs.send_message_batch().queue_url(url);
        for (j, (key, data)) in chunk.iter().enumerate() {
            let mut entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}-{j}"))
                .message_body(data);
            if fifo {
                entry = entry.message_group_id(key).message_deduplication_id(data);
            }
            batch = batch.entries(entry.build().unwrap());
        }
        let sent = batch.send().await.expect("SendMessageBatch");
        assert!(
            sent.failed.is_empty(),
            "SendMessageBatch: {:?}",
            sent.failed
        );
    }
}

/// One mapping per source, each delivering to the example target by its Service name.
async fn every_source_delivers_through_poller_pods(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-sources").await;
    let records = keyed_records(60, 6, 0);

    let (sqs, standard_url) = sqs_queue(&cluster, &format!("{}-standard", s.name()), false).await;
    let (_, fifo_url) = sqs_queue(&cluster, &format!("{}-orders.fifo", s.name()), true).await;
    let (kinesis, stream) = kinesis_stream(&cluster.emulators, 2).await;
    let (dynamodb, table, stream_arn) = dynamodb_table(&cluster.emulators, false).await;

    let mut queue = s.aws("moto");
    queue["queueUrl"] = standard_url.clone().into();
    s.mapping("standard", "target", json!({"sqs": queue}), json!({}));
    let mut queue = s.aws("moto");
    queue["queueUrl"] = fifo_url.clone().into();
    s.mapping("fifo", "target", json!({"sqs": queue}), json!({}));
    let mut source = s.aws("kinesis");
    source["streamName"] = stream.clone().into();
    s.mapping(
        "kinesis",
        "target",
        json!({"kinesis": source}),
        json!({"startingPosition": "TRIM_HORIZON"}),
    );
    let mut source = s.aws("dynamodb");
    source["streamArn"] = stream_arn.clone().into();
    s.mapping(
        "dynamodb",
        "target",
        json!({"dynamodbStreams": source}),
        json!({"startingPosition": "TRIM_HORIZON"}),
    );
    // Replicas: one for each (concurrency 1..2 fits batchesPerReplica 10).
    for name in ["standard", "fifo", "kinesis", "dynamodb"] {
        s.enabled(name, Some(1)).await;
    }

    send_messages(&sqs, &standard_url, &records, false).await;
    send_messages(&sqs, &fifo_url, &records, true).await;
    put_kinesis(&kinesis, &stream, &records).await;
    for (key, data) in &records {
        dynamodb
            .put_item()
            .table_name(&table)
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(key.clone()),
            )
            .item(
                "v",
                aws_sdk_dynamodb::types::AttributeValue::S(data.clone()),
            )
            .send()
            .await
            .expect("PutItem");
    }

    let queue_name = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    let standard = s
        .all_delivered("aws:sqs", &queue_name(&standard_url), &records)
        .await;
    let fifo = s
        .all_delivered("aws:sqs", &queue_name(&fifo_url), &records)
        .await;
    assert_complete_and_ordered(&fifo, &records);
    let streamed = s
        .all_delivered("aws:kinesis", &format!("stream/{stream}"), &records)
        .await;
    assert_complete_and_ordered(&streamed, &records);
    let changes = s.all_delivered("aws:dynamodb", "", &records).await;
    assert_complete_and_ordered(&changes, &records);
    eprintln!(
        "sources: duplicates standard {}, fifo {}, kinesis {}, dynamodb {}",
        duplicates(&standard),
        duplicates(&fifo),
        duplicates(&streamed),
        duplicates(&changes)
    );
    for name in ["standard", "fifo", "kinesis", "dynamodb"] {
        s.processing_ok(name).await;
        s.enabled(name, Some(1)).await;
    }
    eprintln!("sources: every record of every source delivered through poller pods");
}

// ------------------------------------------------------------------ concurrency cap ---

/// A slow target on the host (node IP) that counts the requests it holds at once.
struct SlowTarget {
    port: u16,
    held: Arc<Held>,
    server: tokio::task::JoinHandle<()>,
}

/// What a [`SlowTarget`] saw: requests in flight now, the most at once, the payloads.
#[derive(Default)]
struct Held {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    payloads: std::sync::Mutex<Vec<String>>,
}

impl SlowTarget {
    async fn start(address: IpAddr, delay: Duration) -> SlowTarget {
        let held = Arc::new(Held::default());
        let app =
            axum::Router::new()
                .fallback(axum::routing::post(
                    move |axum::extract::State(held): axum::extract::State<Arc<Held>>,
                          body: String| async move {
                        let now = held.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        held.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let event: Value = serde_json::from_str(&body).unwrap_or_default();
                        held.payloads.lock().unwrap().extend(
                            event["Records"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(payload),
                        );
                        held.in_flight.fetch_sub(1, Ordering::SeqCst);
                        "{}"
                    },
                ))
                .with_state(held.clone());
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .expect("a port on the node IP");
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("slow target serves");
        });
        SlowTarget { port, held, server }
    }

    fn delivered(&self) -> Vec<String> {
        self.held.payloads.lock().unwrap().clone()
    }

    /// The most requests it held at once.
    fn most(&self) -> usize {
        self.held.most.load(Ordering::SeqCst)
    }
}

impl Drop for SlowTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `scalingConfig.maximumConcurrency` caps the sum over every poller pod: one replica of
/// batchesPerReplica 10 runs only the cap's loops, and a slow target never holds more.
async fn maximum_concurrency_caps_the_pods_together(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-cap").await;
    let slow = SlowTarget::start(cluster.node_ip, Duration::from_millis(500)).await;
    s.host_service("slow", slow.port);
    let (sqs, url) = sqs_queue(&cluster, &format!("{}-capped", s.name()), false).await;
    let mut queue = s.aws("moto");
    queue["queueUrl"] = url.clone().into();
    let mut spec = json!({"source": {"sqs": queue},
        "target": {"service": {"name": "slow", "port": slow.port}},
        "batchSize": 1, "scalingConfig": {"maximumConcurrency": 2},
        "poller": {"batchesPerReplica": 10}});
    spec["target"]["service"]["port"] = slow.port.into();
    s.apply(
        &json!({"apiVersion": "esm.dev/v1alpha1", "kind": "EventSourceMapping",
                "metadata": {"name": "capped"}, "spec": spec})
        .to_string(),
    );
    let records = keyed_records(40, 4, 0);
    send_messages(&sqs, &url, &records, false).await;
    s.enabled("capped", None).await;
    let want: BTreeSet<String> = records.iter().map(|(_, d)| d.clone()).collect();
    wait::until("40 messages at the slow target", SLOW, || async {
        let got: BTreeSet<String> = slow.delivered().into_iter().collect();
        want.is_subset(&got).then_some(())
    })
    .await;
    let most = slow.most();
    assert!(
        most <= 2,
        "the target held {most} requests at once; maximumConcurrency is 2"
    );
    eprintln!("cap: at most {most} concurrent requests with maximumConcurrency 2");
}

// -------------------------------------------------------------------------- scaling ---

/// Replicas follow the sources, as pods: a Kinesis split adds a replica (one shard per
/// replica), a standard queue's backlog ramps replicas up, `enabled: false` takes the pods to
/// zero and `true` brings them back with nothing lost.
async fn scaling_is_seen_as_pods(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-scaling").await;
    // Kinesis: a replica runs one shard (batchesPerReplica 1).
    let (kinesis, stream) = kinesis_stream(&cluster.emulators, 1).await;
    let mut source = s.aws("kinesis");
    source["streamName"] = stream.clone().into();
    s.mapping(
        "split",
        "target",
        json!({"kinesis": source}),
        json!({"startingPosition": "TRIM_HORIZON", "poller": {"batchesPerReplica": 1}}),
    );
    s.enabled("split", Some(1)).await;
    let shard = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("ListShards")
        .shards
        .unwrap()[0]
        .clone();
    let range = shard.hash_key_range.unwrap();
    let start: u128 = range.starting_hash_key.parse().unwrap();
    let end: u128 = range.ending_hash_key.parse().unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(shard.shard_id)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    kinesis_stream_active(&kinesis, &stream).await;
    s.enabled("split", Some(2)).await;
    eprintln!("scaling: a Kinesis split raised the poller pods to 2");

    // Standard queue: a backlog at a slow target ramps replicas (batchesPerReplica 1, the
    // operator's initial concurrency 1, rampPerMinute 120 from the chart values).
    let slow = SlowTarget::start(cluster.node_ip, Duration::from_millis(300)).await;
    s.host_service("slow", slow.port);
    let (sqs, url) = sqs_queue(&cluster, &format!("{}-backlog", s.name()), false).await;
    let records = keyed_records(300, 10, 0);
    send_messages(&sqs, &url, &records, false).await;
    let mut queue = s.aws("moto");
    queue["queueUrl"] = url.clone().into();
    s.apply(
        &json!({"apiVersion": "esm.dev/v1alpha1", "kind": "EventSourceMapping",
                "metadata": {"name": "backlog"},
                "spec": {"source": {"sqs": queue},
                         "target": {"service": {"name": "slow", "port": slow.port}},
                         "batchSize": 1, "scalingConfig": {"maximumConcurrency": 4},
                         "poller": {"batchesPerReplica": 1}}})
        .to_string(),
    );
    wait::until(
        "the backlog ramps the pollers to 3+ Ready pods",
        SLOW,
        || async {
            let ready = s
                .poller_pods("backlog")
                .await
                .iter()
                .filter(|p| pod_ready(p))
                .count();
            (ready >= 3).then_some(())
        },
    )
    .await;
    let most = slow.most();
    assert!(
        most <= 4,
        "{most} requests at once above maximumConcurrency 4"
    );
    eprintln!("scaling: a standard-queue backlog ramped the poller pods");

    // enabled: false -> no pods; records sent meanwhile arrive after enabled: true.
    let mappings = s.mappings();
    support::controller::set_enabled(&mappings, "split", false).await;
    wait::until("split disabled with no pods", SLOW, || async {
        let mapping = mappings.get("split").await.ok()?;
        let disabled = mapping.status?.state == Some(State::Disabled);
        (disabled && s.poller_pods("split").await.is_empty()).then_some(())
    })
    .await;
    let later = keyed_records(40, 4, 1000);
    put_kinesis(&kinesis, &stream, &later).await;
    support::controller::set_enabled(&mappings, "split", true).await;
    s.enabled("split", Some(2)).await;
    let got = s
        .all_delivered("aws:kinesis", &format!("stream/{stream}"), &later)
        .await;
    assert_complete_and_ordered(&got, &later);
    eprintln!("scaling: enabled false took the pods to zero, true brought them back");
}

// --------------------------------------------------------------------------- faults ---

/// The container ids of a pod, through the CRI.
fn containers_of(cluster: &Cluster, namespace: &str, pod: &str) -> Vec<String> {
    let output = Command::new(&cluster.crictl[0])
        .args(&cluster.crictl[1..])
        .args(["ps", "-q", "--label"])
        .arg(format!("io.kubernetes.pod.name={pod}"))
        .arg("--label")
        .arg(format!("io.kubernetes.pod.namespace={namespace}"))
        .output()
        .expect("run crictl ps");
    assert!(output.status.success(), "crictl ps failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// SIGKILL of a pod's containers' processes, as the kernel's OOM killer would.
fn sigkill(cluster: &Cluster, namespace: &str, pod: &str) {
    let containers = containers_of(cluster, namespace, pod);
    assert!(!containers.is_empty(), "no containers of {pod}");
    for id in containers {
        let output = Command::new(&cluster.crictl[0])
            .args(&cluster.crictl[1..])
            .args(["inspect", &id])
            .output()
            .expect("run crictl inspect");
        let info: Value = serde_json::from_slice(&output.stdout).expect("crictl inspect JSON");
        let pid = info["info"]["pid"].as_i64().expect("a container pid");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid}");
    }
}

/// A Kinesis run with records flowing while one poller pod is deleted, a shard is split and
/// another pod is SIGKILLed: nothing lost, each key in order, duplicates counted.
async fn kinesis_survives_pod_faults_and_a_reshard(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-faults").await;
    let (kinesis, stream) = kinesis_stream(&cluster.emulators, 2).await;
    let mut source = s.aws("kinesis");
    source["streamName"] = stream.clone().into();
    s.mapping(
        "faults",
        "target",
        json!({"kinesis": source}),
        json!({"startingPosition": "TRIM_HORIZON", "batchSize": 20,
               "poller": {"batchesPerReplica": 1}}),
    );
    s.enabled("faults", Some(2)).await;
    let mut expected = Vec::new();
    let mut wave = 0;
    let mut put_wave = async |expected: &mut Vec<(String, String)>| {
        let records = keyed_records(200, 8, wave * 1000);
        wave += 1;
        put_kinesis(&kinesis, &stream, &records).await;
        expected.extend(records);
    };
    put_wave(&mut expected).await;

    let pods = s.poller_pods("faults").await;
    let victim = pods[0].name_any();
    s.poller_pods_api()
        .delete(&victim, &Default::default())
        .await
        .expect("delete a poller pod");
    put_wave(&mut expected).await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .expect("ListShards")
        .shards
        .unwrap();
    let range = shards[0].hash_key_range.clone().unwrap();
    let start: u128 = range.starting_hash_key.parse().unwrap();
    let end: u128 = range.ending_hash_key.parse().unwrap();
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(shards[0].shard_id.clone())
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("SplitShard");
    kinesis_stream_active(&kinesis, &stream).await;
    put_wave(&mut expected).await;

    let running = wait::until("a Running poller pod to kill", SLOW, || async {
        s.poller_pods("faults")
            .await
            .into_iter()
            .find(pod_ready)
            .map(|p| p.name_any())
    })
    .await;
    sigkill(&cluster, s.name(), &running);
    put_wave(&mut expected).await;

    let got = s
        .all_delivered("aws:kinesis", &format!("stream/{stream}"), &expected)
        .await;
    assert_complete_and_ordered(&got, &expected);
    let mapping = s.enabled("faults", Some(3)).await;
    eprintln!(
        "faults: {} records through a pod delete, a split and a SIGKILL: 0 lost, per-key order kept, {} duplicates; {} replicas after the split",
        expected.len(),
        duplicates(&got),
        mapping.status.unwrap().replicas.unwrap()
    );
}

// ---------------------------------------------------------------- credentials, RBAC ---

/// The poller ServiceAccount may read its mapping and its credentials Secret, and nothing
/// else: another Secret, the pods and a Deployment create are forbidden, proven with a token
/// of that ServiceAccount.
async fn pollers_read_credentials_and_nothing_more(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-rbac").await;
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"},
            "stringData": {"password": "not for pollers"}}"#,
    );
    let (sqs, url) = sqs_queue(&cluster, &format!("{}-rbac", s.name()), false).await;
    let mut queue = s.aws("moto");
    queue["queueUrl"] = url.clone().into();
    s.mapping("rbac", "target", json!({"sqs": queue}), json!({}));
    s.enabled("rbac", Some(1)).await;
    // Delivered with the Secret's credentials, read with the poller's own token.
    let records = keyed_records(5, 1, 0);
    send_messages(&sqs, &url, &records, false).await;
    s.all_delivered("aws:sqs", url.rsplit('/').next().unwrap(), &records)
        .await;
    s.processing_ok("rbac").await;
    let token = cluster
        .plane
        .kubectl_ok(&["-n", s.name(), "create", "token", "esm-rbac"])
        .trim()
        .to_owned();
    // The token alone: no kubeconfig, whose client certificate would authenticate first.
    let as_poller = |args: &[&str]| {
        let output = Command::new(cluster.plane.assets.join("kubectl"))
            .args(["--kubeconfig=/dev/null", "--server", &cluster.server])
            .arg(format!("--certificate-authority={}", cluster.ca.display()))
            .args(["--token", &token, "-n", s.name()])
            .args(args)
            .output()
            .expect("run kubectl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for allowed in [
        &["get", "eventsourcemapping", "rbac"][..],
        &["get", "secret", "aws"],
    ] {
        let (ok, err) = as_poller(allowed);
        assert!(ok, "the poller may {allowed:?}: {err}");
    }
    for forbidden in [
        &["get", "secret", "other"][..],
        &["get", "pods"],
        &["create", "deployment", "x", "--image=x"],
    ] {
        let (ok, err) = as_poller(forbidden);
        assert!(
            !ok && err.to_lowercase().contains("forbidden"),
            "the poller must not {forbidden:?}: {err}"
        );
    }
    eprintln!("rbac: the poller token reads its mapping and Secret; other calls are Forbidden");
}

// ------------------------------------------------------- spec change, operator lifecycle ---

/// A spec change rolls the poller pods (Updating -> Enabled) with no record lost.
async fn spec_change_rolls_the_pods(s: &Scenario, sqs: &aws_sdk_sqs::Client, url: &str) {
    let before: BTreeSet<String> = s
        .poller_pods("roll")
        .await
        .iter()
        .map(|p| p.uid().unwrap())
        .collect();
    let records = keyed_records(100, 5, 0);
    send_messages(sqs, url, &records[..50], false).await;
    s.mappings()
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"batchSize": 5}})),
        )
        .await
        .expect("patch batchSize");
    let states = std::sync::Mutex::new(BTreeSet::new());
    let (states_seen, before) = (&states, &before);
    wait::until("the roll to finish", SLOW, || async move {
        let mapping = s.mappings().get("roll").await.ok()?;
        let status = mapping.status.clone()?;
        if let Some(state) = status.state {
            states_seen.lock().unwrap().insert(format!("{state:?}"));
        }
        let pods = s.poller_pods("roll").await;
        let rolled = !pods.is_empty()
            && pods
                .iter()
                .all(|p| pod_ready(p) && !before.contains(&p.uid().unwrap()));
        (rolled
            && status.state == Some(State::Enabled)
            && status.observed_generation == mapping.metadata.generation)
            .then_some(())
    })
    .await;
    let states = states.into_inner().unwrap();
    assert!(
        states.contains("Updating"),
        "the spec change was not shown as Updating: {states:?}"
    );
    send_messages(sqs, url, &records[50..], false).await;
    let got = s
        .all_delivered("aws:sqs", url.rsplit('/').next().unwrap(), &records)
        .await;
    eprintln!(
        "roll: new pods for the new spec, states seen {states:?}, {} duplicates",
        duplicates(&got)
    );
}

/// The operator pod is replaced (delete, then `helm upgrade` with a changed value): the
/// mapping's Deployment and pods stay as they are, it stays Enabled, records keep flowing;
/// `helm uninstall` leaves the CRD and the mappings, and removes the operator.
async fn operator_lifecycle(cluster: Arc<Cluster>) {
    let s = Scenario::new(&cluster, "e2e-lifecycle").await;
    let (sqs, url) = sqs_queue(&cluster, &format!("{}-roll", s.name()), false).await;
    let mut queue = s.aws("moto");
    queue["queueUrl"] = url.clone().into();
    s.mapping("roll", "target", json!({"sqs": queue}), json!({}));
    s.enabled("roll", Some(1)).await;
    spec_change_rolls_the_pods(&s, &sqs, &url).await;

    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), s.name());
    let snapshot = async || {
        let deployment = deployments
            .get("esm-roll")
            .await
            .expect("the poller Deployment");
        let pods: BTreeSet<String> = s
            .poller_pods("roll")
            .await
            .iter()
            .map(|p| p.uid().unwrap())
            .collect();
        (deployment.uid(), deployment.metadata.generation, pods)
    };
    let before = snapshot().await;

    let operator = cluster.operator_ready().await;
    let pod = cluster.operator_pods()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster.plane.kubectl_ok(&[
        "-n",
        OPERATOR_NAMESPACE,
        "delete",
        "pod",
        &pod,
        "--wait=false",
    ]);
    let restarted = wait::until("a new operator pod", SLOW, || async {
        let uid = cluster.operator_ready().await;
        (uid != operator).then_some(uid)
    })
    .await;
    let mapping = s.enabled("roll", Some(1)).await;
    let after = snapshot().await;
    assert_eq!(before, after, "an operator restart changed the pollers");
    let records = keyed_records(20, 2, 500);
    send_messages(&sqs, &url, &records, false).await;
    s.all_delivered("aws:sqs", url.rsplit('/').next().unwrap(), &records)
        .await;
    eprintln!(
        "lifecycle: the operator restarted; the pollers did not (generation {:?})",
        mapping.metadata.generation
    );

    cluster.helm_install("upgrade", &["--set", "logLevel=debug"]);
    wait::until("helm upgrade to replace the operator pod", SLOW, || async {
        let uid = cluster.operator_ready().await;
        (uid != restarted).then_some(())
    })
    .await;
    s.enabled("roll", Some(1)).await;
    eprintln!("lifecycle: helm upgrade rolled the operator");

    // The documented removal: mappings deleted while the operator runs lose their pollers.
    s.mappings()
        .delete("roll", &Default::default())
        .await
        .expect("delete mapping roll");
    wait::until("roll's pollers gone", SLOW, || async {
        (deployments.get_opt("esm-roll").await.ok()?.is_none()
            && s.poller_pods("roll").await.is_empty())
        .then_some(())
    })
    .await;
    let mut queue = s.aws("moto");
    queue["queueUrl"] = url.clone().into();
    s.mapping("kept", "target", json!({"sqs": queue}), json!({}));
    s.enabled("kept", Some(1)).await;
    cluster.helm_ok(&["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait"]);
    wait::until("the operator pod gone", SLOW, || async {
        cluster.operator_pods().is_empty().then_some(())
    })
    .await;
    cluster
        .plane
        .kubectl_ok(&["get", "crd", "eventsourcemappings.esm.dev"]);
    s.mappings()
        .get("kept")
        .await
        .expect("the mapping survives helm uninstall");
    eprintln!("lifecycle: helm uninstall removed the operator and kept the CRD and mappings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_mode_end_to_end() {
    let Some(cluster) = Cluster::from_env().await else {
        return;
    };
    // A leftover release of an interrupted run would make `install` fail.
    let _ = cluster
        .plane
        .helm()
        .args(["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait"])
        .output();
    cluster.helm_install("install", &[]);
    cluster.operator_ready().await;
    let metrics = cluster.scrape_operator().await;
    assert!(
        metrics.contains("esm_controller_reconcile_duration_seconds"),
        "the operator's metrics: {}",
        &metrics[..metrics.len().min(500)]
    );
    eprintln!("install: the operator pod is Ready and its /metrics answers through its Service");

    tokio::join!(
        every_source_delivers_through_poller_pods(cluster.clone()),
        maximum_concurrency_caps_the_pods_together(cluster.clone()),
        scaling_is_seen_as_pods(cluster.clone()),
        kinesis_survives_pod_faults_and_a_reshard(cluster.clone()),
        pollers_read_credentials_and_nothing_more(cluster.clone()),
    );
    operator_lifecycle(cluster.clone()).await;
}
