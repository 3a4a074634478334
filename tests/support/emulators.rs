//! AWS emulators for integration tests, started with `hack/emulators.sh` in a private state
//! directory. The guard stops them on drop (also when the test panics); a reaper process
//! ([`super::reaper`]) stops them if the test process dies without unwinding (killed, aborted).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};

use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::SharedCredentialsProvider;
use tempfile::TempDir;

/// Running emulators; stopped when dropped.
pub struct Emulators {
    state: TempDir,
    endpoints: Vec<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/emulators.sh")
}

impl Emulators {
    /// Starts the named emulators (`moto`, `fauxqs`, `elasticmq`, `kinesis`, `dynamodb`) on
    /// loopback.
    pub fn start(names: &[&str]) -> Self {
        Self::start_on(names, "127.0.0.1")
    }

    /// Starts the named emulators listening on `address` (the e2e tests: the node IP, which
    /// pods reach).
    pub fn start_on(names: &[&str], address: &str) -> Self {
        Self::launch(names, &["--bind", address])
    }

    /// Starts the named emulators on loopback keeping their data on disk (only `elasticmq`
    /// can), so that [`Emulators::restart`] brings it back.
    pub fn start_persistent(names: &[&str]) -> Self {
        Self::launch(names, &["--persistent"])
    }

    /// `hack/emulators.sh start NAMES... OPTIONS...` in a new state directory.
    fn launch(names: &[&str], options: &[&str]) -> Self {
        let state = tempfile::Builder::new()
            .prefix("esm-emulators-")
            .tempdir()
            .expect("a state directory");
        spawn_reaper(state.path());
        let output = Command::new(script())
            .arg("start")
            .args(names)
            .arg("--state")
            .arg(state.path())
            .args(options)
            .stderr(Stdio::inherit())
            .output()
            .expect("hack/emulators.sh runs");
        // Built before checking the exit status, so a failed start still stops what started.
        let emulators = Self {
            endpoints: parse_exports(&String::from_utf8_lossy(&output.stdout)),
            state,
        };
        assert!(
            output.status.success(),
            "hack/emulators.sh start {names:?} failed ({})",
            output.status
        );
        emulators
    }

    /// Stops emulator `name` and starts it again on the same port (with its data when it was
    /// started persistent); returns once it answers again.
    pub async fn restart(&self, name: &str) {
        let mut restart = Command::new(script());
        restart
            .args(["restart", name, "--state"])
            .arg(self.state.path())
            .stdout(Stdio::null());
        super::control_plane::run_script(restart).await;
    }

    /// The endpoint of a started emulator, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self, name: &str) -> &str {
        let variable = format!("ESM_{}_ENDPOINT", name.to_uppercase());
        self.endpoints
            .iter()
            .find(|(key, _)| *key == variable)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("{name} was not started"))
    }

    /// SDK settings for emulator `name`: test credentials, us-east-1.
    pub fn sdk_config(&self, name: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint(name))
            .credentials_provider(SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("test", "test", None, None, "test"),
            ))
            .build()
    }
}

/// The emulator `name`, started on first use and shared by the tests of this binary that run
/// at the same time; stopped when the last of them drops it.
pub fn shared(name: &'static str) -> Arc<Emulators> {
    static RUNNING: Mutex<Option<HashMap<&'static str, Weak<Emulators>>>> = Mutex::new(None);
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let running = running.get_or_insert_with(HashMap::new);
    if let Some(emulators) = running.get(name).and_then(Weak::upgrade) {
        return emulators;
    }
    let emulators = Arc::new(Emulators::start(&[name]));
    running.insert(name, Arc::downgrade(&emulators));
    emulators
}

/// An SQS client on the `moto` emulator of `emulators` and a new standard queue named after
/// `prefix`: (client, queue URL).
pub async fn moto_queue(emulators: &Emulators, prefix: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(&emulators.sdk_config("moto"));
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name(prefix))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    (sqs, queue_url)
}

/// A new Kinesis stream of `shards` shards on the `kinesis` emulator, once it is ACTIVE.
pub async fn kinesis_stream(
    emulators: &Emulators,
    shards: i32,
) -> (aws_sdk_kinesis::Client, String) {
    let kinesis = aws_sdk_kinesis::Client::new(&emulators.sdk_config("kinesis"));
    let name = unique_name("orders");
    let created = kinesis
        .create_stream()
        .stream_name(&name)
        .shard_count(shards)
        .send()
        .await;
    // The name is ours alone: "in use" means the SDK retried a create that had worked (the
    // emulator answered too slowly under load).
    if let Err(err) = created
        && !err
            .as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception())
    {
        panic!("CreateStream: {err:?}");
    }
    kinesis_stream_active(&kinesis, &name).await;
    (kinesis, name)
}

/// Waits until stream `name` is ACTIVE (after creating it, splitting or merging shards).
pub async fn kinesis_stream_active(kinesis: &aws_sdk_kinesis::Client, name: &str) {
    super::wait::until(
        "an ACTIVE stream",
        std::time::Duration::from_secs(60),
        || async {
            let summary = kinesis
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .expect("DescribeStreamSummary");
            (summary.stream_description_summary?.stream_status
                == aws_sdk_kinesis::types::StreamStatus::Active)
                .then_some(())
        },
    )
    .await;
}

/// A new table on the `dynamodb` emulator keyed by `pk` (string) and, when `sort_key`, `sk`
/// (number), with a NEW_AND_OLD_IMAGES stream. Returns the client, the table name and the
/// stream ARN.
pub async fn dynamodb_table(
    emulators: &Emulators,
    sort_key: bool,
) -> (aws_sdk_dynamodb::Client, String, String) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        StreamSpecification, StreamViewType,
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&emulators.sdk_config("dynamodb"));
    let name = unique_name("orders");
    let mut keys = vec![("pk", ScalarAttributeType::S, KeyType::Hash)];
    if sort_key {
        keys.push(("sk", ScalarAttributeType::N, KeyType::Range));
    }
    let mut create = dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        );
    for (key, kind, role) in keys {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(key)
                    .attribute_type(kind)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(role)
                    .build()
                    .unwrap(),
            );
    }
    let stream_arn = create
        .send()
        .await
        .expect("CreateTable")
        .table_description
        .and_then(|table| table.latest_stream_arn)
        .expect("the table has a stream");
    (dynamodb, name, stream_arn)
}

/// A name no other test run uses.
pub fn unique_name(prefix: &str) -> String {
    // Tests of one binary run in parallel: the counter keeps two calls in the same clock tick
    // apart, the time keeps runs apart, the pid binaries.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let count = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}-{count}", std::process::id())
}

impl Drop for Emulators {
    fn drop(&mut self) {
        let status = Command::new(script())
            .arg("stop")
            .arg("--state")
            .arg(self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not stop the emulators in {}: {status:?}",
                self.state.path().display()
            );
        }
    }
}

/// `export NAME=VALUE` lines of `emulators.sh start`.
fn parse_exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Stops the emulators of `state` once this process has ended.
fn spawn_reaper(state: &Path) {
    super::reaper::after_exit(
        "[ -d \"$1\" ] && exec \"$0\" stop --state \"$1\"",
        &[script().as_os_str(), state.as_os_str()],
    );
}
