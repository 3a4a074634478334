//! What each fuzz target checks, one function per target taking the fuzzer's bytes; a check
//! panics when a property breaks.
//!
//! The checks live here rather than in fuzz_targets/ so that two builds share them: the fuzz
//! crate (a library the one-line targets call, built by cargo-fuzz on nightly) and the main
//! crate's tests/fuzz_corpus.rs, which includes this file by path and replays the committed
//! seeds and crash reproducers on stable Rust in CI's test command. They are assertions, not
//! API, so they stay out of the library. Both builds have the crates used here: the main crate
//! as a dependency (or dev-dependency), the fuzz crate through its own Cargo.toml.

pub mod filter;
pub mod mapping_spec;
pub mod partial_batch_response;
pub mod records;

/// A target's check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target: its name (fuzz_targets/NAME.rs, fuzz/corpus/NAME/, fuzz/regressions/NAME/) and
/// its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("filter_pattern", filter::pattern),
    ("filter_record", filter::record),
    ("partial_batch_response", partial_batch_response::check),
    ("mapping_spec", mapping_spec::check),
    ("sqs_record", records::sqs),
    ("kinesis_record", records::kinesis),
    ("dynamodb_record", records::dynamodb),
];
