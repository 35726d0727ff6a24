//! The Store's Secrets: generated once, never overwritten. Only their metadata (labels,
//! owner) is brought back when it drifts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, Patch, PatchParams, PostParams};
use mercato_contract::names;

use super::{Context, Error, Sync, api_err};
use crate::apply::{Child, is_up_to_date};
use crate::builders::{SecretData, secrets};
use crate::crd::StoreSpec;
use crate::meta::{MANAGER, Owner};

/// Creates the Secrets `store` needs that do not exist yet and returns the data of all of
/// them. A Secret that exists is never rewritten: only its metadata (labels, owner) is
/// brought back.
pub(super) async fn ensure(
    store: &StoreSpec,
    owner: &Owner,
    ctx: &Context,
    sync: &mut Sync,
) -> Result<SecretData, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let resource = ApiResource::erase::<Secret>(&());
    let specs = secrets::specs(&owner.name, store);
    let mut live = BTreeMap::new();
    for spec in &specs {
        let object = format!("Secret/{}", spec.name);
        let got = ctx
            .read(&resource, &owner.namespace, &spec.name)
            .await
            .map_err(api_err("read", object.clone()))?
            .map(|o| serde_json::to_value(o).and_then(serde_json::from_value::<Secret>))
            .transpose()
            .map_err(|e| api_err("read", object)(kube::Error::SerdeError(e)))?;
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
        if !is_up_to_date(&child, &live_json) {
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
