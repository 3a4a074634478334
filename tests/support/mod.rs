//! Shared test support: a real control plane and AWS emulators started once per test binary
//! and stopped when the binary exits, also when a test fails; an in-test HTTP target.
#![allow(dead_code)] // each test binary uses a different part of the support

pub mod control_plane;
pub mod controller;
pub mod emulators;
pub mod ledger;
pub mod reaper;
pub mod records;
pub mod streams;
pub mod target;
pub mod toxiproxy;
pub mod wait;
