//! Runs one step of the signing-key rotation (see `crate::rotation`): rewrites the key
//! Secrets it asks for, the only sanctioned rewrite of a Secret, and hands back the status.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use mercato_contract::credentials::generate_jwt_keys;
use mercato_contract::{ROTATE_SIGNING_KEY_ANNOTATION, names};

use super::{Context, Error, Sync, api_err};
use crate::apply::Child;
use crate::builders::{SecretData, secrets};
use crate::crd::Store;
use crate::meta::{MANAGER, Owner};
use crate::rotation::{self, Data, Step, Timing};

/// Takes the rotation one step, writing the Secrets it changes (the signing Secret first:
/// it holds the next key before any JWKS lists it) and updating `data` to match.
pub(super) async fn advance(
    store: &Store,
    owner: &Owner,
    ctx: &Context,
    data: &mut SecretData,
    sync: &mut Sync,
) -> Result<Step, Error> {
    let signing_name = names::jwt_signing_secret(&owner.name);
    let jwks_name = names::jwks_secret(&owner.name);
    let empty = Data::new();
    let step = rotation::step(
        crate::status::now(),
        store.status.as_ref().and_then(|s| s.signing_key.as_ref()),
        store
            .annotations()
            .get(ROTATE_SIGNING_KEY_ANNOTATION)
            .map(String::as_str),
        data.get(&signing_name).unwrap_or(&empty),
        data.get(&jwks_name).unwrap_or(&empty),
        Timing::of(&store.spec.tokens),
        generate_jwt_keys,
    )
    .map_err(|e| Error::Rotation(e.to_string()))?;
    for (name, wanted) in [(&signing_name, &step.signing), (&jwks_name, &step.jwks)] {
        if let Some(wanted) = wanted {
            rewrite(store, owner, ctx, name, wanted.clone(), sync).await?;
            data.insert(name.clone(), wanted.clone());
        }
    }
    Ok(step)
}

/// Server-side applies a key Secret with new data: keys this manager applied before and
/// the new data lacks (`next.pem`) are removed.
async fn rewrite(
    store: &Store,
    owner: &Owner,
    ctx: &Context,
    name: &str,
    data: Data,
    sync: &mut Sync,
) -> Result<(), Error> {
    let spec = secrets::specs(&owner.name, &store.spec)
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::Rotation(format!("no Secret spec named {name}")))?;
    let child = Child::new(&secrets::secret(owner, &spec, data));
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&child.object),
    )
    .await
    .map_err(api_err("apply", child.display()))?;
    sync.updated.push(child.display());
    Ok(())
}
