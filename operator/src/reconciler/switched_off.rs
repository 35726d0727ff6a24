//! What a component the Store turned off left behind (`storefront.enabled: false`): its
//! Deployment, Service, ServiceAccount, Secret and policies are deleted, so nothing of it
//! runs or lingers, and turning it back on starts afresh (with a new cookie key).

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject};

use super::{Context, Sync};
use crate::builders;
use crate::crd::Store;
use crate::meta::Owner;

/// Deletes every object of `builders::switched_off` that exists and that this Store
/// controls (one of the same name that someone else made is left alone), policies and
/// workloads before the identities and Secrets they use. Run after the other children are
/// applied, so the gateway has stopped routing to the storefront before it goes. Failures
/// are recorded in `sync`, per object, like those of any other child.
pub(super) async fn remove(store: &Store, owner: &Owner, ctx: &Context, sync: &mut Sync) {
    for child in builders::switched_off(owner, &store.spec, &ctx.images)
        .into_iter()
        .rev()
    {
        let live = match ctx
            .read(&child.resource, &owner.namespace, &child.name)
            .await
        {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            Err(e) => {
                sync.fail(child.display(), &e);
                continue;
            }
        };
        if !owner.controls(live.owner_references()) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &owner.namespace, &child.resource);
        match api.delete(&child.name, &DeleteParams::default()).await {
            Ok(_) => sync.deleted.push(child.display()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => sync.fail(child.display(), &e),
        }
    }
}
