//! The deletion policy, carried out by the finalizer before the Store goes away.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use mercato_contract::{Component, names};
use serde_json::json;
use tracing::info;

use super::{Context, Error, api_err, gone_ok};
use crate::builders::{backup, secrets};
use crate::crd::{DeletionPolicy, Store};
use crate::meta::{Owner, store_selector};

/// Carries out the deletion policy before the Store (and with it every child, through the
/// owner references) goes away.
pub(super) async fn cleanup(store: &Store, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(store).ok_or(Error::MissingIdentity)?;
    ctx.metrics.forget_store(&owner.namespace, &owner.name);
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
            let mut kept_backups = false;
            // The backups are kept whatever the policy: they are what a deleted Store is
            // recreated from.
            let backups = backup::claim_name(&owner.name);
            for pvc in list {
                let name = pvc.name_any();
                if name == backups {
                    kept_backups = true;
                    continue;
                }
                if gone_ok(
                    pvcs.delete(&name, &DeleteParams::default()).await,
                    "PersistentVolumeClaim",
                    &name,
                )? {
                    deleted.push(name);
                }
            }
            let note = format!(
                "deletionPolicy Delete: deleted PersistentVolumeClaims {}{}",
                deleted.join(", "),
                if kept_backups {
                    format!("; kept the backups in {backups}")
                } else {
                    String::new()
                }
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
            for spec in secrets::specs(&owner.name, &store.spec)
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
