//! Event sources, one file each behind a narrow trait, and their shared AWS configuration.
pub mod aws;
pub mod sqs;
