//! esm-operator: Lambda-style event source mappings for Kubernetes services.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod controller;
pub mod crd;
pub mod destination;
pub mod error;
pub mod event;
pub mod filter;
pub mod meta;
pub mod metrics;
pub mod otlp;
pub mod poller;
pub mod replay;
pub mod sources;
pub mod target;
pub mod telemetry;
pub mod trace;
