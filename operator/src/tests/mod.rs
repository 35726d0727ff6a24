//! Tests that need the crate's insides: builders against a fixture Store, the CRD's
//! validation rules, and the reconciler against an in-memory API server.

// The fake API server takes the field manager and the RBAC table from here (see its
// module comment).
use crate::meta::MANAGER;
use crate::rbac::permits;

mod builders;
mod controller;
mod crd;
pub mod fake_api;
pub mod fixtures;
mod reconcile;
