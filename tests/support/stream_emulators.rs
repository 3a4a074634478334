//! Kinesis (kinesis-mock) and DynamoDB Local for the stream source tests, started by
//! `hack/emulators.sh` into a temp state dir and stopped when the last test using one drops
//! it, also when that test panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_types::SdkConfig;
use aws_types::sdk_config::SharedCredentialsProvider;

/// A running emulator.
pub struct Emulator {
    pub endpoint: String,
    name: &'static str,
    state: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/emulators.sh")
}

/// The emulator `name` (`kinesis` or `dynamodb`), started on first use and shared by the tests
/// of this binary that run at the same time.
pub fn shared(name: &'static str) -> Arc<Emulator> {
    static RUNNING: Mutex<Option<HashMap<&'static str, Weak<Emulator>>>> = Mutex::new(None);
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let running = running.get_or_insert_with(HashMap::new);
    if let Some(emulator) = running.get(name).and_then(Weak::upgrade) {
        return emulator;
    }
    let emulator = Arc::new(Emulator::start(name));
    running.insert(name, Arc::downgrade(&emulator));
    emulator
}

impl Emulator {
    fn start(name: &'static str) -> Emulator {
        let state = tempfile::Builder::new()
            .prefix(&format!("esm-{name}-"))
            .tempdir()
            .expect("temp dir for the emulator state");
        let output = Command::new(script())
            .args(["start", name, "--state"])
            .arg(state.path())
            .output()
            .expect("run hack/emulators.sh");
        // Built before the checks so that a failed start still stops what it started.
        let mut emulator = Emulator {
            endpoint: String::new(),
            name,
            state,
        };
        assert!(
            output.status.success(),
            "hack/emulators.sh start {name} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let variable = format!("export ESM_{}_ENDPOINT=", name.to_uppercase());
        emulator.endpoint = stdout
            .lines()
            .find_map(|line| line.strip_prefix(&variable))
            .unwrap_or_else(|| panic!("no {variable} in:\n{stdout}"))
            .to_string();
        emulator
    }

    /// SDK settings for this emulator: test credentials, us-east-1.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "test",
            )))
            .build()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let stopped = Command::new(script())
            .args(["stop", self.name, "--state"])
            .arg(self.state.path())
            .status();
        if !matches!(stopped, Ok(status) if status.success()) {
            eprintln!("hack/emulators.sh stop {} failed: {stopped:?}", self.name);
        }
    }
}

/// A name no other test run uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
