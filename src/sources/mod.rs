//! Event sources, one file each behind narrow traits.

pub mod dynamodb_streams;
pub mod kinesis;
pub mod sharded;
