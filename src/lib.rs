//! esm-operator: Lambda-style event source mappings for Kubernetes services.
#![forbid(unsafe_code)]

pub mod api;
pub mod crd;
