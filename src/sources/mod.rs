//! Event sources, one file each behind narrow traits, and their shared AWS configuration.
pub mod aws;
pub mod dynamodb_streams;
pub mod kinesis;
pub mod sharded;
pub mod sqs;
