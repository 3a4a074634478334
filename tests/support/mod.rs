//! Shared test support: a real control plane (and, for source tests, emulators) started once per
//! test binary and stopped when the binary exits, also when a test fails.
#![allow(dead_code)] // each test binary uses a different part of the support

pub mod control_plane;
pub mod controller;
pub mod wait;
