//! Readable constructors for test Stores (`Store::test()`, `.with(..)`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::apply::Child;
use crate::builders::{self, SecretData, secrets};
use crate::crd::{Store, StoreSpec, StoreStatus};
use crate::images::ImageDefaults;
use crate::meta::{FINALIZER, Owner};

pub const NAMESPACE: &str = "shop";
pub const UID: &str = "7c0b3d4e-0000-4000-8000-000000000001";

impl Store {
    /// `demo` in `shop`, as read back from the API server: uid, generation 1, finalizer
    /// present, every default.
    pub fn test() -> Store {
        Store {
            metadata: ObjectMeta {
                name: Some("demo".into()),
                namespace: Some(NAMESPACE.into()),
                uid: Some(UID.into()),
                generation: Some(1),
                finalizers: Some(vec![FINALIZER.into()]),
                ..ObjectMeta::default()
            },
            spec: StoreSpec::default(),
            status: None,
        }
    }

    pub fn with(mut self, change: impl FnOnce(&mut StoreSpec)) -> Store {
        change(&mut self.spec);
        self
    }

    pub fn with_status(mut self, status: StoreStatus) -> Store {
        self.status = Some(status);
        self
    }

    pub fn owner(&self) -> Owner {
        Owner::of(self).expect("test stores have a namespace and uid")
    }

    /// Every child the store should have, Secrets included, with fresh credentials.
    pub fn children(&self) -> (Vec<Child>, SecretData) {
        let owner = self.owner();
        let data = secrets::generate(&owner.name);
        let out = builders::desired(&owner, &self.spec, &ImageDefaults::default(), &data);
        (out, data)
    }
}
