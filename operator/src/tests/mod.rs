//! Tests that need the crate's insides: builders against a fixture Store, the CRD's
//! validation rules, and the reconciler against an in-memory API server.

mod builders;
mod crd;
pub mod fake_api;
pub mod fixtures;
mod reconcile;
