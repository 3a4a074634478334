//! AWS emulators for integration tests, started with `hack/emulators.sh` in a private state
//! directory. The guard stops them on drop (also when the test panics); a reaper process stops
//! them if the test process dies without unwinding (killed, aborted).
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
    /// Starts the named emulators (`moto`, `fauxqs`, `kinesis`, `dynamodb`).
    pub fn start(names: &[&str]) -> Self {
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

/// A name no other test run uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
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

/// A detached shell (own session, so a signal to the test's process group spares it) that
/// waits for this process to end and then stops the emulators of `state`.
fn spawn_reaper(state: &Path) {
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; [ -d \"$1\" ] && exec \"$0\" stop --state \"$1\"",
        pid = std::process::id()
    );
    // --fork: setsid returns at once, the reaper lives on in its own session.
    let status = Command::new("setsid")
        .arg("--fork")
        .arg("sh")
        .arg("-c")
        .arg(watcher)
        .arg(script())
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setsid starts the reaper");
    assert!(status.success(), "setsid failed: {status}");
}
