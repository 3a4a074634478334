//! One open shard in memory, for the engine benchmark and tests that run the stream engine
//! without AWS.
use std::collections::VecDeque;
use std::sync::Mutex;

use super::{RecordPage, Shard, ShardPosition, ShardedStream, StreamError, StreamRecord};

/// An open shard holding prepared records, read in order once. Iterators are not followed:
/// nothing fails, so the engine never reads a position twice.
pub struct MemoryShard {
    stream_arn: String,
    shard_id: String,
    records: Mutex<VecDeque<StreamRecord>>,
}

impl MemoryShard {
    pub fn new(stream_arn: &str, shard_id: &str, records: VecDeque<StreamRecord>) -> Self {
        Self {
            stream_arn: stream_arn.into(),
            shard_id: shard_id.into(),
            records: Mutex::new(records),
        }
    }
}

impl ShardedStream for MemoryShard {
    async fn stream_arn(&self) -> Result<String, StreamError> {
        Ok(self.stream_arn.clone())
    }

    async fn list_shards(&self) -> Result<Vec<Shard>, StreamError> {
        Ok(vec![Shard {
            shard_id: self.shard_id.clone(),
            parent_shard_ids: Vec::new(),
            open: true,
        }])
    }

    async fn shard_iterator(&self, _: &str, _: &ShardPosition) -> Result<String, StreamError> {
        Ok("iterator".into())
    }

    async fn get_records(&self, _: &str, limit: u32) -> Result<RecordPage, StreamError> {
        let mut records = self.records.lock().expect("shard lock");
        let count = (limit as usize).min(records.len());
        Ok(RecordPage {
            records: records.drain(..count).collect(),
            next_iterator: Some("iterator".into()),
            millis_behind_latest: Some(0),
        })
    }
}
