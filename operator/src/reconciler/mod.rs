//! The Store reconciler: Secrets once, every other child by server-side apply, the deletion
//! policy in a finalizer, status from the children, events, and backoff on errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use mercato_contract::{Component, names};
use serde_json::json;
use tracing::{info, warn};

use crate::apply::{Child, Outcome, ensure};
use crate::builders::{self, SecretData, secrets};
use crate::crd::{DeletionPolicy, Store, StoreStatus};
use crate::meta::{FINALIZER, MANAGER, Owner, store_selector};
use crate::metrics::Metrics;
use crate::status::{self, Observed};

/// How long a ready store waits before the next periodic reconcile (watches on every
/// child trigger one sooner whenever something changes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How long a store that is still rolling out waits, in case a readiness change is missed.
pub const RECHECK: Duration = Duration::from_secs(30);
/// First and largest retry delay after a failed reconcile.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Event notes are limited to 1 kB by the API server.
const NOTE_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {object}: {source}")]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Store has no namespace or uid")]
    MissingIdentity,
    #[error(
        "Secret {secret} lacks key(s) {keys}; restore them, or delete the Secret to have new credentials generated"
    )]
    SecretIncomplete { secret: String, keys: String },
    #[error(
        "Secret {present} exists but {missing} does not, so the JWT key pair cannot be completed; delete {present} to have a new pair generated"
    )]
    HalfKeyPair { present: String, missing: String },
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short, stable name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { .. } => "kube_api",
            Error::MissingIdentity => "missing_identity",
            Error::SecretIncomplete { .. } => "secret_incomplete",
            Error::HalfKeyPair { .. } => "half_key_pair",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.kind(),
                _ => "finalizer",
            },
        }
    }
}

fn api_err(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Api {
        action,
        object,
        source,
    }
}

/// What the reconciler shares between reconciles.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per Store, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<Store>, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance,
            },
        );
        Context {
            client,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn reset_backoff(&self, store: &Store) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&ObjectRef::from_obj(store));
        }
    }

    /// The delay before retrying `store` after one more failure: 5 s, 10 s, 20 s, … 5 min.
    fn next_backoff(&self, store: &Store) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut f) => {
                let n = f.entry(ObjectRef::from_obj(store)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
    }

    async fn publish(
        &self,
        store: &Store,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let mut note = note;
        if note.len() > NOTE_LIMIT {
            let mut cut = NOTE_LIMIT;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push('…');
        }
        let event = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &store.object_ref(&())).await {
            warn!(error = %e, store = %store.name_any(), "could not publish event");
        }
    }
}

/// Reconciles one Store (the controller's reconcile function).
pub async fn reconcile(store: Arc<Store>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = store.namespace().ok_or(Error::MissingIdentity)?;
    let api: Api<Store> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, store, |event| async {
        match event {
            FinalizerEvent::Apply(store) => apply(&store, &ctx).await,
            FinalizerEvent::Cleanup(store) => cleanup(&store, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe(
        result.as_ref().map(|_| ()).map_err(Error::kind),
        started.elapsed(),
    );
    result
}

/// Retries a failed Store with exponential backoff (the controller's error policy).
pub fn error_policy(store: Arc<Store>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(&store);
    warn!(store = %store.name_any(), namespace = ?store.namespace(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What one pass over the children did.
#[derive(Debug, Default)]
struct Sync {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
    observed: Observed,
}

impl Sync {
    fn record(&mut self, outcome: Outcome, what: String) {
        match outcome {
            Outcome::Created => self.created.push(what),
            Outcome::Updated => self.updated.push(what),
            Outcome::Unchanged => {}
        }
    }
}

async fn apply(store: &Store, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(store).ok_or(Error::MissingIdentity)?;
    match sync_children(store, &owner, ctx).await {
        Ok(sync) => {
            let new = status::compute(store, Some(&sync.observed), None, status::now());
            let ready = new.phase == Some(crate::crd::Phase::Ready);
            patch_status(store, &owner, ctx, new).await?;
            for (list, reason, verb) in [
                (&sync.created, "Created", "created"),
                (&sync.updated, "Updated", "updated"),
                (&sync.deleted, "Deleted", "deleted"),
            ] {
                if !list.is_empty() {
                    info!(store = %owner.name, namespace = %owner.namespace, objects = ?list, "{verb} children");
                    let note = format!("{verb} {}: {}", list.len(), list.join(", "));
                    ctx.publish(store, EventType::Normal, reason, "Reconcile", note)
                        .await;
                }
            }
            ctx.reset_backoff(store);
            Ok(Action::requeue(if ready { RESYNC } else { RECHECK }))
        }
        Err(error) => {
            let message = error.to_string();
            let new = status::compute(store, None, Some(&message), status::now());
            if let Err(e) = patch_status(store, &owner, ctx, new).await {
                warn!(error = %e, store = %owner.name, "could not record the failure in status");
            }
            ctx.publish(
                store,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                message,
            )
            .await;
            Err(error)
        }
    }
}

/// Server-side applies the status when it differs from the one the Store carries.
async fn patch_status(
    store: &Store,
    owner: &Owner,
    ctx: &Context,
    new: StoreStatus,
) -> Result<(), Error> {
    if store.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<Store> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let patch = json!({
        "apiVersion": Store::api_version(&()),
        "kind": Store::kind(&()),
        "status": new,
    });
    api.patch_status(
        &owner.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(api_err("patch status of", format!("Store/{}", owner.name)))?;
    Ok(())
}

async fn sync_children(store: &Store, owner: &Owner, ctx: &Context) -> Result<Sync, Error> {
    let mut sync = Sync::default();
    let secret_data = ensure_secrets(owner, ctx, &mut sync).await?;
    let children = builders::children(owner, &store.spec, &secret_data);
    for child in &children {
        let (outcome, live) = ensure(&ctx.client, &owner.namespace, child)
            .await
            .map_err(api_err("apply", child.display()))?;
        sync.record(outcome, child.display());
        observe(&mut sync.observed, owner, child, live);
    }
    prune::<PodDisruptionBudget>(owner, ctx, &children, &mut sync).await?;
    prune::<NetworkPolicy>(owner, ctx, &children, &mut sync).await?;
    Ok(sync)
}

/// Keeps the children that status is computed from.
fn observe(observed: &mut Observed, owner: &Owner, child: &Child, live: DynamicObject) {
    let component = Component::ALL.into_iter().find(|c| {
        child.name == names::component(&owner.name, *c)
            || child.name == names::database(&owner.name, *c)
    });
    let Some(c) = component else { return };
    match child.kind() {
        "Deployment" => {
            if let Ok(d) = live.try_parse::<Deployment>() {
                observed.deployments.insert(c, d);
            }
        }
        "StatefulSet" => {
            if let Ok(s) = live.try_parse::<StatefulSet>() {
                observed.stateful_sets.insert(c, s);
            }
        }
        "Service" if c == Component::Gateway => {
            observed.gateway_service = live.try_parse::<Service>().ok();
        }
        _ => {}
    }
}

/// Creates the Secrets that do not exist yet and returns the data of all of them. A Secret
/// that exists is never rewritten: only its metadata (labels, owner) is brought back.
async fn ensure_secrets(
    owner: &Owner,
    ctx: &Context,
    sync: &mut Sync,
) -> Result<SecretData, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let specs = secrets::specs(&owner.name);
    let mut live = BTreeMap::new();
    for spec in &specs {
        let got = api
            .get_opt(&spec.name)
            .await
            .map_err(api_err("read", format!("Secret/{}", spec.name)))?;
        live.insert(spec.name.clone(), got);
    }

    // The key pair is only ever generated whole.
    let signing = names::jwt_signing_secret(&owner.name);
    let jwks = names::jwks_secret(&owner.name);
    match (live[&signing].is_some(), live[&jwks].is_some()) {
        (true, false) => {
            return Err(Error::HalfKeyPair {
                present: signing,
                missing: jwks,
            });
        }
        (false, true) => {
            return Err(Error::HalfKeyPair {
                present: jwks,
                missing: signing,
            });
        }
        _ => {}
    }

    let fresh = if live.values().any(Option::is_none) {
        secrets::generate(&owner.name)
    } else {
        SecretData::new()
    };
    let mut data = SecretData::new();
    for spec in &specs {
        let object = match &live[&spec.name] {
            Some(existing) => existing.clone(),
            None => {
                let generated = fresh.get(&spec.name).cloned().unwrap_or_default();
                let child = Child::new(&secrets::secret(owner, spec, generated));
                match create_secret(&api, &child).await {
                    Ok(created) => {
                        sync.created.push(child.display());
                        created
                    }
                    // Someone created it in between: theirs stands.
                    Err(kube::Error::Api(s)) if s.code == 409 => api
                        .get(&spec.name)
                        .await
                        .map_err(api_err("read", child.display()))?,
                    Err(e) => return Err(api_err("create", child.display())(e)),
                }
            }
        };
        let existing = object.data.clone().unwrap_or_default();
        let missing = secrets::missing_keys(spec, Some(&existing));
        if !missing.is_empty() {
            return Err(Error::SecretIncomplete {
                secret: spec.name.clone(),
                keys: missing.join(", "),
            });
        }
        // Same data, our metadata: applied only if labels, owner or hash drifted.
        let child = Child::new(&secrets::secret(owner, spec, existing.clone()));
        let live_json = serde_json::to_value(&object).unwrap_or_default();
        if !child.is_up_to_date(&live_json) {
            api.patch(
                &spec.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&child.object),
            )
            .await
            .map_err(api_err("apply", child.display()))?;
            sync.updated.push(child.display());
        }
        data.insert(spec.name.clone(), existing);
    }
    Ok(data)
}

/// Creates a Secret, failing with 409 if it exists, so generated data can never overwrite
/// credentials already in use.
async fn create_secret(api: &Api<Secret>, child: &Child) -> Result<Secret, kube::Error> {
    let secret: Secret =
        serde_json::from_value(child.object.clone()).map_err(kube::Error::SerdeError)?;
    let params = PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.to_string()),
    };
    api.create(&params, &secret).await
}

/// Deletes the objects of kind `K` this Store controls that are no longer desired (a PDB
/// after scaling to one replica, NetworkPolicies after turning them off).
async fn prune<K>(
    owner: &Owner,
    ctx: &Context,
    desired: &[Child],
    sync: &mut Sync,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let keep: BTreeSet<&str> = desired
        .iter()
        .filter(|c| c.kind() == kind)
        .map(|c| c.name.as_str())
        .collect();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let list = api
        .list(&ListParams::default().labels(&store_selector(&owner.name)))
        .await
        .map_err(api_err("list", kind.clone()))?;
    for obj in list {
        let name = obj.name_any();
        let ours = obj
            .owner_references()
            .iter()
            .any(|r| r.uid == owner.reference().uid && r.controller == Some(true));
        if ours
            && !keep.contains(name.as_str())
            && gone_ok(
                api.delete(&name, &DeleteParams::default()).await,
                &kind,
                &name,
            )?
        {
            sync.deleted.push(format!("{kind}/{name}"));
        }
    }
    Ok(())
}

/// The outcome of deleting `kind/name`: `Ok(false)` when it was already gone. (The call
/// stays at each site, on a typed `Api`, so the chart's RBAC check can see every delete.)
fn gone_ok<T>(result: Result<T, kube::Error>, kind: &str, name: &str) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(api_err("delete", format!("{kind}/{name}"))(e)),
    }
}

/// Carries out the deletion policy before the Store (and with it every child, through the
/// owner references) goes away.
async fn cleanup(store: &Store, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(store).ok_or(Error::MissingIdentity)?;
    match store.spec.deletion_policy {
        DeletionPolicy::Delete => {
            // Stop the databases first, so no pod holds a claim while it is deleted.
            let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            for c in Component::WITH_DATABASE {
                let name = names::database(&owner.name, c);
                gone_ok(
                    sts.delete(&name, &DeleteParams::background()).await,
                    "StatefulSet",
                    &name,
                )?;
            }
            let pvcs: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &owner.namespace);
            let list = pvcs
                .list(&ListParams::default().labels(&store_selector(&owner.name)))
                .await
                .map_err(api_err("list", "PersistentVolumeClaim"))?;
            let mut deleted = Vec::new();
            for pvc in list {
                let name = pvc.name_any();
                if gone_ok(
                    pvcs.delete(&name, &DeleteParams::default()).await,
                    "PersistentVolumeClaim",
                    &name,
                )? {
                    deleted.push(name);
                }
            }
            let note = format!(
                "deletionPolicy Delete: deleted PersistentVolumeClaims {}",
                deleted.join(", ")
            );
            info!(store = %owner.name, namespace = %owner.namespace, "{note}");
            ctx.publish(store, EventType::Normal, "Cleanup", "Delete", note)
                .await;
        }
        DeletionPolicy::Retain => {
            // The volumes stay (claims from volumeClaimTemplates have no owner); so must the
            // Secrets whose contents the retained databases hold (the database passwords and
            // the first admin's), or a Store of the same name could not use its data.
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            let mut kept = Vec::new();
            for spec in secrets::specs(&owner.name)
                .into_iter()
                .filter(|s| s.retained)
            {
                let name = spec.name;
                let Some(secret) = api
                    .get_opt(&name)
                    .await
                    .map_err(api_err("read", format!("Secret/{name}")))?
                else {
                    continue;
                };
                let others: Vec<_> = secret
                    .owner_references()
                    .iter()
                    .filter(|r| r.uid != owner.reference().uid)
                    .cloned()
                    .collect();
                if others.len() != secret.owner_references().len() {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"ownerReferences": others}})),
                    )
                    .await
                    .map_err(api_err("release", format!("Secret/{name}")))?;
                }
                kept.push(name);
            }
            let note = format!(
                "deletionPolicy Retain: kept the PersistentVolumeClaims and Secrets {}",
                kept.join(", ")
            );
            info!(store = %owner.name, namespace = %owner.namespace, "{note}");
            ctx.publish(store, EventType::Normal, "Cleanup", "Retain", note)
                .await;
        }
    }
    Ok(Action::await_change())
}
