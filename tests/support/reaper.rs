//! Cleanup that must happen even when the test process dies without unwinding (killed,
//! aborted): a detached shell waits for this process to end, then runs the cleanup.
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// Runs shell command `cleanup` once this process has ended, with `args` as `$0`, `$1`, ...
/// The shell runs in its own session (`setsid --fork`), so a signal to the test's process
/// group spares it.
pub fn after_exit(cleanup: &str, args: &[&OsStr]) {
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}",
        pid = std::process::id()
    );
    // --fork: setsid returns at once, the reaper lives on in its own session.
    let status = Command::new("setsid")
        .arg("--fork")
        .arg("sh")
        .arg("-c")
        .arg(watcher)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setsid starts the reaper");
    assert!(status.success(), "setsid failed: {status}");
}
