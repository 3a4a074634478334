//! Replays the fuzz targets' committed inputs on stable Rust: every seed (fuzz/corpus/TARGET/)
//! and every reproducer of a crash found and fixed (fuzz/regressions/TARGET/), through the same
//! checks the fuzzer runs (fuzz/checks/, included here by path; see docs/fuzzing.md). A seed
//! that panics or breaks a property fails the test, so a fixed bug stays fixed without nightly
//! or libFuzzer.

#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::path::Path;

#[test]
fn committed_fuzz_inputs_pass_their_checks() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (target, check) in checks::TARGETS {
        let mut seeds = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                assert_ne!(kind, "corpus", "{target} has no seed corpus");
                continue;
            };
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                let input = std::fs::read(&path).expect("a readable input");
                if let Err(panic) = std::panic::catch_unwind(|| check(&input)) {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{}: {message}", path.display()));
                }
                seeds += 1;
            }
        }
        assert!(seeds > 0, "{target}: no inputs");
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their checks:\n{}",
        failures.join("\n")
    );
}
