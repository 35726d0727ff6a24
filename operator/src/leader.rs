//! Leader election on a `coordination.k8s.io` Lease, so that two operator replicas never
//! reconcile at once.
//!
//! Expiry is judged by when this process last saw the lease record change, not by the
//! holder's `renewTime`, so clock skew between nodes cannot make two leaders (the approach
//! of client-go's leaderelection).
//!
//! Why not `kube-lease-manager` (0.13 fits kube 5 and k8s-openapi 0.29): it computes a
//! lease's expiry as the holder's `renewTime` plus its duration against this node's wall
//! clock, so a follower whose clock runs ahead by more than the lease duration takes over
//! from a live leader, and two replicas reconcile at once; that same `SystemTime` makes the
//! paused-clock tests below impossible to run against it; and it would add a second `rand`
//! (0.10) to the build. This file is about a hundred lines with those tests.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews; must leave room for a few failed attempts within the lease.
pub const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// How often a follower tries to take over.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The lease record last seen (holder, renewTime) and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> LeaseLock {
        LeaseLock {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt to acquire or renew the lease; `Ok(true)` while we hold it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() && !self.expired(&spec).await {
            return Ok(false);
        }

        let mut next = lease;
        let mut new_spec = spec.clone();
        new_spec.holder_identity = Some(self.identity.clone());
        new_spec.lease_duration_seconds = Some(seconds);
        new_spec.renew_time = Some(now.clone());
        if !mine {
            new_spec.acquire_time = Some(now);
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.spec = Some(new_spec);
        // `replace` carries the resourceVersion read above: if another replica wrote in
        // between, this fails with 409 and we stay a follower.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether another holder's record has gone unchanged for longer than its duration.
    async fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = format!("{:?}/{:?}", spec.holder_identity, spec.renew_time);
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let mut observed = self.observed.lock().await;
        match &*observed {
            Some((seen, at)) if *seen == record => at.elapsed() > duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }

    /// Gives the lease up so another replica can take over without waiting for expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fake_api::FakeApi;
    use http::Method;

    fn holder(fake: &FakeApi) -> (Option<String>, i64) {
        let lease = fake.get("leases", "ops", "mercato-operator").unwrap();
        (
            lease["spec"]["holderIdentity"].as_str().map(str::to_string),
            lease["spec"]["leaseTransitions"]
                .as_i64()
                .unwrap_or_default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn one_leader_at_a_time_and_takeover_only_after_expiry() {
        let (fake, client) = FakeApi::new();
        let lock = |id: &str| {
            LeaseLock::new(
                Api::namespaced(client.clone(), "ops"),
                "mercato-operator",
                id,
            )
        };
        let (a, b) = (lock("a"), lock("b"));

        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "a creates the lease"
        );
        assert!(!b.try_acquire_or_renew().await.unwrap(), "b must wait");
        tokio::time::advance(RENEW_PERIOD).await;
        assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "a renewal restarts b's clock"
        );
        tokio::time::advance(LEASE_DURATION - Duration::from_secs(1)).await;
        assert!(!b.try_acquire_or_renew().await.unwrap(), "not expired yet");
        assert_eq!(holder(&fake), (Some("a".into()), 0));

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            b.try_acquire_or_renew().await.unwrap(),
            "a stopped renewing: b takes over"
        );
        assert_eq!(holder(&fake), (Some("b".into()), 1));
        assert!(
            !a.try_acquire_or_renew().await.unwrap(),
            "a is now a follower"
        );

        b.release().await.unwrap();
        assert_eq!(holder(&fake).0, None);
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "a released lease is free at once"
        );
        assert_eq!(holder(&fake), (Some("a".into()), 2));
    }

    #[tokio::test]
    async fn losing_a_write_race_means_not_leading() {
        let (fake, client) = FakeApi::new();
        let a = LeaseLock::new(Api::namespaced(client, "ops"), "mercato-operator", "a");
        assert!(a.try_acquire_or_renew().await.unwrap());
        fake.fail(Method::PUT, "/leases/mercato-operator", 409, Some(1));
        assert!(!a.try_acquire_or_renew().await.unwrap());
        assert!(a.try_acquire_or_renew().await.unwrap());
    }
}
