//! Watch caches of every kind of child, so that a reconcile reads what the controller's
//! watches already hold instead of GETting each child again.
//!
//! The controller must watch every child kind anyway (a deleted or edited child has to
//! trigger a reconcile); each of those watches now also fills a reflector store, and the
//! reconciler reads children from there. An unchanged Store then costs no request at all
//! (it cost 45 GETs and two LISTs before; `make bench`, operator part, counts them).
//!
//! A cache can be stale for a moment, which is harmless here: the reflector applies a
//! watch event to its store before the event triggers a reconcile, so a reconcile caused by
//! a change sees that change; a cache that says "absent" for an object that exists makes
//! the reconciler apply it (server-side apply is create-or-update) or, for a Secret, try to
//! create it and fall back to reading it on 409; and a cache that has not finished its
//! first list is not used at all (the reconciler GETs, as without a cache).

use std::collections::BTreeMap;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::meta::managed_selector;

/// Every kind of child a Store has, in the order the reconciler applies them.
pub fn child_kinds() -> [ApiResource; 9] {
    [
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ]
}

/// Kinds that carry the Store's labels but not its owner reference, watched to explain a
/// component that is not ready (the pods of its workloads and the claims of its databases,
/// `diagnose`), to tell a failed backup (the Jobs of the backup CronJobs), and, for the
/// backup claim the reconciler applies, to read it back.
pub fn observed_kinds() -> [ApiResource; 3] {
    [
        ApiResource::erase::<Pod>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
        ApiResource::erase::<Job>(&()),
    ]
}

/// What a cache knows about one object.
#[derive(Debug)]
pub enum Cached<T> {
    /// The cache is synced and holds this (`None`: the object does not exist).
    Known(T),
    /// No synced cache for this kind: ask the API server.
    Unknown,
}

/// The reflector stores of every child kind, keyed by kind.
#[derive(Clone, Default)]
pub struct ChildCache {
    stores: BTreeMap<String, Store<DynamicObject>>,
}

impl std::fmt::Debug for ChildCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildCache")
            .field("kinds", &self.stores.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A watch of one kind that fills the cache as it is polled; the controller polls it as one
/// of its triggers.
pub struct Feed {
    pub resource: ApiResource,
    /// A child kind (its owner reference leads to the Store), rather than an observed one
    /// (its `app.kubernetes.io/instance` label does).
    pub owned: bool,
    pub stream: std::pin::Pin<Box<dyn Stream<Item = Result<DynamicObject, watcher::Error>> + Send>>,
}

impl ChildCache {
    /// A cache of every child kind and observed kind carrying our managed-by label, in
    /// `namespace` (all when `None`), and the watch streams that fill it. Nothing is cached
    /// until the streams are polled.
    pub fn watch(client: &Client, namespace: Option<&str>) -> (ChildCache, Vec<Feed>) {
        let config = watcher::Config::default().labels(&managed_selector());
        let mut cache = ChildCache::default();
        let mut feeds = Vec::new();
        let owned = child_kinds().map(|r| (r, true));
        let observed = observed_kinds().map(|r| (r, false));
        for (resource, owned) in owned.into_iter().chain(observed) {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            let writer = Writer::new(resource.clone());
            cache
                .stores
                .insert(resource.kind.clone(), writer.as_reader());
            let stream =
                reflector::reflector(writer, watcher(api, config.clone()).default_backoff())
                    .touched_objects()
                    .boxed();
            feeds.push(Feed {
                resource,
                owned,
                stream,
            });
        }
        (cache, feeds)
    }

    /// The store of `kind`, if it has finished its first list.
    fn synced(&self, kind: &str) -> Option<&Store<DynamicObject>> {
        let store = self.stores.get(kind)?;
        matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))).then_some(store)
    }

    /// The kinds cached.
    pub fn kinds(&self) -> Vec<ApiResource> {
        child_kinds()
            .into_iter()
            .chain(observed_kinds())
            .filter(|r| self.stores.contains_key(&r.kind))
            .collect()
    }

    /// Whether every kind's first list is in.
    pub fn is_synced(&self) -> bool {
        self.stores.keys().all(|k| self.synced(k).is_some())
    }

    /// The object `resource`/`name` in `namespace`, as the watch last saw it.
    pub fn get(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Cached<Option<DynamicObject>> {
        let Some(store) = self.synced(&resource.kind) else {
            return Cached::Unknown;
        };
        let key = ObjectRef::new_with(name, resource.clone()).within(namespace);
        Cached::Known(store.get(&key).map(|o| (*o).clone()))
    }

    /// The objects of `resource` in `namespace` whose labels include all of `labels`.
    pub fn list(
        &self,
        resource: &ApiResource,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Cached<Vec<DynamicObject>> {
        let Some(store) = self.synced(&resource.kind) else {
            return Cached::Unknown;
        };
        Cached::Known(
            store
                .state()
                .into_iter()
                .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
                .filter(|o| {
                    let have = o.labels();
                    labels.iter().all(|(k, v)| have.get(k) == Some(v))
                })
                .map(|o| (*o).clone())
                .collect(),
        )
    }
}
