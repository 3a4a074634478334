//! The poller engine.

pub mod checkpoint;
