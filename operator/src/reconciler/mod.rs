//! The Store reconciler: Secrets once, every other child by server-side apply, the deletion
//! policy in a finalizer, status from the children, events, and backoff on errors.
//!
//! Each child is brought to its desired state on its own: a child that cannot be applied
//! is reported (in the `Degraded` condition and a Warning event, by name) and retried with
//! backoff, while every other child is still repaired in the same pass.

mod cleanup;
mod rollout;
mod rotation;
mod secrets;
mod switched_off;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use mercato_contract::Component;
use serde_json::json;
use tracing::{info, warn};

use crate::apply::{Child, Outcome, ensure};
use crate::builders;
use crate::builders::monitoring::{PodMonitor, PrometheusRule};
use crate::cache::{Cached, ChildCache, observed_kinds};
use crate::crd::{Store, StoreSpec, StoreStatus};
use crate::images::ImageDefaults;
use crate::meta::{FINALIZER, LABEL_COMPONENT, MANAGER, Owner, Role, store_labels, store_selector};
use crate::metrics::Metrics;
use crate::status::{self, Observed};
use crate::{diagnose, truncate};

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
    #[error("{action} {object}: {}", brief(.source))]
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
    #[error("{}", children_message(.0))]
    Children(Vec<ChildFailure>),
    #[error("signing-key rotation: {0}")]
    Rotation(String),
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
            Error::Children(_) => "children",
            Error::Rotation(_) => "rotation",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.kind(),
                _ => "finalizer",
            },
        }
    }
}

/// A child that could not be brought to its desired state in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFailure {
    /// `Kind/name`.
    pub object: String,
    /// What the API server said, briefly.
    pub message: String,
}

/// Longest message kept per failed child in conditions and events.
const FAILURE_MESSAGE_LIMIT: usize = 200;

fn children_message(failures: &[ChildFailure]) -> String {
    let each: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "{} ({})",
                f.object,
                truncate(&f.message, FAILURE_MESSAGE_LIMIT)
            )
        })
        .collect();
    let n = failures.len();
    let what = if n == 1 { "child" } else { "children" };
    format!("{n} {what} could not be applied: {}", each.join("; "))
}

/// What the API server said, without the Rust `Debug` rendering that `kube::Error`'s
/// `Display` appends: the Status message for an API error, the error's text otherwise.
pub fn brief(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
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
    /// Images of the components a Store does not pin (the operator's settings).
    pub images: ImageDefaults,
    /// The controller's watch caches of the children; without them (or before their first
    /// list is in) children are read from the API server.
    cache: Option<ChildCache>,
    /// Consecutive failures per Store, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<Store>, u32>>,
    /// Whether the cluster has the Prometheus Operator's CRDs (PodMonitor, PrometheusRule),
    /// as the controller last found: only then are the Stores' monitors applied.
    pub monitoring: Arc<AtomicBool>,
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
            images: ImageDefaults::default(),
            cache: None,
            failures: Mutex::new(HashMap::new()),
            monitoring: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A context for another controller of the same operator (one per watched namespace):
    /// the same client, recorder, metrics and images; its own cache and backoff.
    pub fn fork(&self) -> Context {
        Context {
            client: self.client.clone(),
            recorder: self.recorder.clone(),
            metrics: self.metrics.clone(),
            images: self.images.clone(),
            cache: None,
            failures: Mutex::new(HashMap::new()),
            monitoring: self.monitoring.clone(),
        }
    }

    /// With the default images of the components set by the operator's configuration.
    pub fn with_images(mut self, images: ImageDefaults) -> Context {
        self.images = images;
        self
    }

    /// Reads children from `cache` once it is synced.
    pub fn with_cache(mut self, cache: ChildCache) -> Context {
        self.cache = Some(cache);
        self
    }

    /// The live object `name` of kind `resource`: from the watch cache when it is synced,
    /// else from the API server.
    async fn read(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        if let Some(Cached::Known(live)) = self
            .cache
            .as_ref()
            .map(|c| c.get(resource, namespace, name))
        {
            return Ok(live);
        }
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, resource)
            .get_opt(name)
            .await
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
        let note = truncate(&note, NOTE_LIMIT);
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
            FinalizerEvent::Cleanup(store) => cleanup::cleanup(&store, &ctx).await,
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
    /// Children taken back from another manager's edit that apply could not merge, with
    /// what was overridden.
    overridden: Vec<String>,
    failed: Vec<ChildFailure>,
    observed: Observed,
    /// Where the signing-key rotation stands after this pass.
    key: Option<crate::rotation::Step>,
}

impl Sync {
    fn record(&mut self, outcome: Outcome, what: String) {
        match outcome {
            Outcome::Created => self.created.push(what),
            Outcome::Updated => self.updated.push(what),
            Outcome::Replaced {
                rejection,
                overridden,
            } => {
                self.overridden.push(format!(
                    "{what}: server-side apply was rejected ({}); replaced it with its desired state, overriding the changes of {}",
                    truncate(&rejection, FAILURE_MESSAGE_LIMIT),
                    overridden.join(", ")
                ));
                self.updated.push(what);
            }
            Outcome::Unchanged => {}
        }
    }

    fn fail(&mut self, object: String, error: &kube::Error) {
        self.failed.push(ChildFailure {
            object,
            message: brief(error),
        });
    }
}

async fn apply(store: &Store, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(store).ok_or(Error::MissingIdentity)?;
    let mut sync = match sync_children(store, &owner, ctx).await {
        Ok(sync) => sync,
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
            return Err(error);
        }
    };
    let failed = (!sync.failed.is_empty()).then(|| Error::Children(sync.failed.clone()));
    let message = failed.as_ref().map(Error::to_string);
    let mut new = status::compute(
        store,
        Some(&sync.observed),
        message.as_deref(),
        status::now(),
    );
    let key = sync.key.take();
    if let Some(step) = &key {
        new.signing_key = Some(step.status.clone());
    }
    if let Some(k) = new
        .signing_key
        .as_ref()
        .filter(|k| k.phase == crate::crd::KeyPhase::Idle)
    {
        ctx.metrics
            .signing_key_since(&owner.namespace, &owner.name, k.since.0.as_second());
    }
    let ready = new.phase == Some(crate::crd::Phase::Ready);
    let held = !sync.observed.held_rollouts.is_empty();
    // Warnings to publish, each once per change of its condition's message.
    let newly = |type_, reason| newly_true(store, &new, type_, reason);
    let warnings = [
        (
            status::COMPONENTS_FAILING,
            "Reconcile",
            newly(status::DEGRADED, status::COMPONENTS_FAILING),
        ),
        (
            status::BACKUP_FAILED,
            "Backup",
            newly(status::BACKUP_FAILED, ""),
        ),
        (
            status::UPGRADE_BLOCKED,
            "Reconcile",
            newly(status::UPGRADE_BLOCKED, ""),
        ),
    ];
    patch_status(store, &owner, ctx, new).await?;
    // After the status that records it, so a failed status write repeats the step first.
    if let Some(note) = key.as_ref().and_then(|k| k.event.clone()) {
        let phase = key.as_ref().map_or("", |k| k.status.phase.as_str());
        info!(store = %owner.name, namespace = %owner.namespace, phase, "{note}");
        ctx.publish(
            store,
            EventType::Normal,
            &format!("SigningKey{phase}"),
            "RotateSigningKey",
            note,
        )
        .await;
    }
    let wake = key.and_then(|k| k.wake);
    for (reason, action, note) in warnings {
        if let Some(note) = note {
            warn!(store = %owner.name, namespace = %owner.namespace, "{note}");
            ctx.publish(store, EventType::Warning, reason, action, note)
                .await;
        }
    }
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
    for note in sync.overridden {
        warn!(store = %owner.name, namespace = %owner.namespace, "{note}");
        ctx.publish(store, EventType::Warning, "Overridden", "Reconcile", note)
            .await;
    }
    match failed {
        Some(error) => {
            ctx.publish(
                store,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                error.to_string(),
            )
            .await;
            Err(error)
        }
        None => {
            ctx.reset_backoff(store);
            // Deployments' status changes wake the controller too; a held rollout is
            // looked at again soon regardless.
            let every = if ready && !held { RESYNC } else { RECHECK };
            // A rotation's phases are due at set times; wake for the next one.
            Ok(Action::requeue(wake.map_or(every, |w| w.min(every))))
        }
    }
}

/// The message of condition `type_` (with reason `reason`, unless that is empty) when it
/// has become true, or says something else than the status said before (one event per
/// change, not one per reconcile): components failing (`Degraded`), `BackupFailed`,
/// `UpgradeBlocked`.
fn newly_true(store: &Store, new: &StoreStatus, type_: &str, reason: &str) -> Option<String> {
    let message = |s: &StoreStatus| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == type_ && c.status == "True" && (reason.is_empty() || c.reason == reason)
            })
            .map(|c| c.message.clone())
    };
    let now = message(new)?;
    let before = store.status.as_ref().and_then(message);
    (before.as_ref() != Some(&now)).then_some(now)
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

/// One pass over every child. Only a failure to settle the Secrets ends it early: every
/// workload's pod template carries a hash of the Secrets it reads, so applying workloads
/// without their Secrets' data would roll pods onto credentials that do not exist. Any
/// other child that fails is recorded and the pass goes on.
async fn sync_children(store: &Store, owner: &Owner, ctx: &Context) -> Result<Sync, Error> {
    let mut sync = Sync::default();
    let mut secret_data = secrets::ensure(&store.spec, owner, ctx, &mut sync).await?;
    // A rotation that cannot go on is reported like a child that cannot be applied (and
    // retried with backoff); it does not keep the other children from being repaired.
    match rotation::advance(store, owner, ctx, &mut secret_data, &mut sync).await {
        Ok(step) => sync.key = Some(step),
        Err(e) => sync.failed.push(ChildFailure {
            object: format!(
                "Secret/{}",
                mercato_contract::names::jwt_signing_secret(&owner.name)
            ),
            message: e.to_string(),
        }),
    }
    // The Secrets were settled above: created once, never re-applied with other data.
    let monitoring = ctx.monitoring.load(Ordering::Relaxed);
    let mut children: Vec<Child> = builders::desired(owner, &store.spec, &ctx.images, &secret_data)
        .into_iter()
        .filter(|c| c.kind() != "Secret")
        .collect();
    if monitoring {
        children.extend(builders::monitoring(owner, &store.spec));
    }
    // Every child as it is, first: whether a component is rolling out decides whether
    // another may start to.
    let mut lives = Vec::with_capacity(children.len());
    for child in &children {
        lives.push(
            ctx.read(&child.resource, &owner.namespace, &child.name)
                .await,
        );
    }
    let mut rolling = children.iter().zip(&lives).find_map(|(child, live)| {
        if child.kind() != "Deployment" {
            return None;
        }
        let d = live
            .as_ref()
            .ok()?
            .as_ref()?
            .clone()
            .try_parse::<Deployment>()
            .ok()?;
        rollout::holds_others(&d).then_some(child.component?)
    });
    for (child, live) in children.iter_mut().zip(lives) {
        let live = match live {
            Ok(live) => live,
            Err(e) => {
                sync.fail(child.display(), &e);
                continue;
            }
        };
        if let (Some(c), Some(l)) = (child.component, live.as_ref())
            && child.kind() == "Deployment"
            && rollout::changes_pods(child, l)
        {
            match rolling {
                Some(other) if other != c => {
                    sync.observed.held_rollouts.push(c);
                    observe(&mut sync.observed, child, l.clone());
                    continue;
                }
                _ => rolling = Some(c),
            }
        }
        if child.kind() == "StatefulSet"
            && let Some(l) = &live
        {
            builders::database::keep_fetch_image(child, l);
        }
        let child = &*child;
        if let Some(blocked) = blocked_upgrade(&store.spec, child, live.as_ref()) {
            // Applying it would start the new server on the old data directory, which
            // fails; the StatefulSet keeps running what it runs, and status says why.
            if let (Some(c), Some(live)) = (child.component, live) {
                sync.observed.blocked_upgrades.insert(c, blocked);
                observe(&mut sync.observed, child, live);
            }
            continue;
        }
        match ensure(&ctx.client, &owner.namespace, child, live.clone()).await {
            Ok((outcome, applied)) => {
                sync.record(outcome, child.display());
                observe(&mut sync.observed, child, applied);
            }
            Err(e) => {
                sync.fail(child.display(), &e);
                // Status still shows what runs.
                if let Some(live) = live {
                    observe(&mut sync.observed, child, live);
                }
            }
        }
    }
    if !sync.observed.held_rollouts.is_empty() {
        sync.observed.rolling = rolling;
    }
    switched_off::remove(store, owner, ctx, &mut sync).await;
    // After the databases, which may still mount the scripts until they are applied.
    prune::<CronJob>(owner, ctx, &children, &mut sync).await;
    prune::<ConfigMap>(owner, ctx, &children, &mut sync).await;
    prune::<PodDisruptionBudget>(owner, ctx, &children, &mut sync).await;
    prune::<NetworkPolicy>(owner, ctx, &children, &mut sync).await;
    if monitoring {
        prune::<PodMonitor>(owner, ctx, &children, &mut sync).await;
        prune::<PrometheusRule>(owner, ctx, &children, &mut sync).await;
    }
    if let Some(cache) = &ctx.cache {
        sync.observed.causes = causes(cache, owner, &store.spec);
    }
    if store.spec.backup.is_some() {
        backup_jobs(owner, ctx, &mut sync).await;
    }
    Ok(sync)
}

/// The Jobs of the store's backup CronJobs, by database (from the watch cache once it has
/// synced, else one LIST), for the `BackupFailed` condition.
async fn backup_jobs(owner: &Owner, ctx: &Context, sync: &mut Sync) {
    let resource = ApiResource::erase::<Job>(&());
    let cached = ctx
        .cache
        .as_ref()
        .map(|c| c.list(&resource, &owner.namespace, &store_labels(&owner.name)));
    let jobs: Vec<Job> = match cached {
        Some(Cached::Known(objects)) => typed(objects),
        _ => {
            let api: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            match api
                .list(&ListParams::default().labels(&store_selector(&owner.name)))
                .await
            {
                Ok(list) => list.items,
                Err(e) => {
                    sync.fail("Job".to_string(), &e);
                    return;
                }
            }
        }
    };
    for c in Component::WITH_DATABASE {
        let component = Role::backup(c).component;
        let of_c: Vec<Job> = jobs
            .iter()
            .filter(|j| j.labels().get(LABEL_COMPONENT) == Some(&component))
            .cloned()
            .collect();
        sync.observed.backup_jobs.insert(c, of_c);
    }
}

/// Why each component and database of the store is not ready, as far as its pods and
/// claims in the watch caches say (nothing before the caches have synced).
fn causes(cache: &ChildCache, owner: &Owner, spec: &StoreSpec) -> BTreeMap<String, String> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let of = |resource: &ApiResource, role: &Role| -> Vec<DynamicObject> {
        let mut labels = store_labels(&owner.name);
        labels.insert(LABEL_COMPONENT.to_string(), role.component.clone());
        match cache.list(resource, &owner.namespace, &labels) {
            Cached::Known(objects) => objects,
            Cached::Unknown => Vec::new(),
        }
    };
    let [pods, claims, _] = observed_kinds();
    let mut out = BTreeMap::new();
    for c in spec.components() {
        let role = Role::service(c);
        if let Some(cause) = diagnose::pods(&typed(of(&pods, &role)), now) {
            out.insert(role.component, cause);
        }
        if c.has_database() {
            let role = Role::database(c);
            let cause = diagnose::pods(&typed(of(&pods, &role)), now)
                .or_else(|| diagnose::claims(&typed(of(&claims, &role))));
            if let Some(cause) = cause {
                out.insert(role.component, cause);
            }
        }
    }
    out
}

/// For a database StatefulSet whose live postgres container runs another PostgreSQL major
/// version than the Store asks for: the two images (the CRD refuses such an edit of the
/// Store, but not a new default image of an upgraded operator, nor a CRD without the rule).
fn blocked_upgrade(
    spec: &StoreSpec,
    child: &Child,
    live: Option<&DynamicObject>,
) -> Option<status::BlockedUpgrade> {
    if child.kind() != "StatefulSet" {
        return None;
    }
    let desired = spec.service(child.component?)?.database.image();
    let sts = live?.clone().try_parse::<StatefulSet>().ok()?;
    let running = builders::database::postgres_image(&sts)?;
    builders::database::major_upgrade(running, desired).then(|| status::BlockedUpgrade {
        live: running.to_string(),
        desired: desired.to_string(),
    })
}

/// Cached objects as the typed objects they are (those that do not parse are skipped).
fn typed<T: Resource + serde::de::DeserializeOwned>(objects: Vec<DynamicObject>) -> Vec<T> {
    objects
        .into_iter()
        .filter_map(|o| o.try_parse().ok())
        .collect()
}

/// Keeps the children that status is computed from.
fn observe(observed: &mut Observed, child: &Child, live: DynamicObject) {
    let Some(c) = child.component else { return };
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
        "CronJob" => {
            if let Ok(j) = live.try_parse::<CronJob>() {
                observed.cron_jobs.insert(c, j);
            }
        }
        _ => {}
    }
}

/// Deletes the objects of kind `K` this Store controls that are no longer desired (a PDB
/// after scaling to one replica, NetworkPolicies after turning them off). Failures are
/// recorded in `sync`, per object.
async fn prune<K>(owner: &Owner, ctx: &Context, desired: &[Child], sync: &mut Sync)
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
    let resource = ApiResource::erase::<K>(&());
    let cached = ctx
        .cache
        .as_ref()
        .map(|c| c.list(&resource, &owner.namespace, &store_labels(&owner.name)));
    // (name, owner references) of this store's objects of the kind.
    let present: Vec<(String, Vec<_>)> = match cached {
        Some(Cached::Known(objects)) => objects
            .into_iter()
            .map(|o| (o.name_any(), o.owner_references().to_vec()))
            .collect(),
        _ => match api
            .list(&ListParams::default().labels(&store_selector(&owner.name)))
            .await
        {
            Ok(list) => list
                .into_iter()
                .map(|o| (o.name_any(), o.owner_references().to_vec()))
                .collect(),
            Err(e) => {
                sync.fail(kind, &e);
                return;
            }
        },
    };
    for (name, references) in present {
        if !owner.controls(&references) || keep.contains(name.as_str()) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => sync.deleted.push(format!("{kind}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => sync.fail(format!("{kind}/{name}"), &e),
        }
    }
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
