//! Shared helpers of the integration tests.
#![allow(dead_code)] // each test crate uses a different part

pub mod emulators;
pub mod target;
