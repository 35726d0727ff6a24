//! Tests that need the crate's insides: builders against a fixture Store, the CRD's
//! validation rules, and the reconciler against an in-memory API server.

// The fake API server takes the field manager and the RBAC table from here (see its
// module comment).
use crate::meta::MANAGER;
use crate::rbac::permits;

use std::time::{Duration, Instant};

/// Polls `done` every 10 ms until it holds, for at most 10 s.
pub async fn eventually(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

mod backup;
mod bucket;
mod builders;
mod controller;
mod crd;
mod external_db;
pub mod fake_api;
pub mod fixtures;
mod reconcile;
mod storefront;
mod upgrade;
