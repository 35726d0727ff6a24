//! The `Store` custom resource: spec with defaults and API-server-side validation, and status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use mercato_contract::{Component, DEFAULT_ACCESS_TOKEN_TTL_SECS, DEFAULT_REFRESH_TOKEN_TTL_SECS};
use schemars::JsonSchema;

use crate::images::ImageDefaults;
use serde::{Deserialize, Serialize};

/// Longest Store name whose derived names still fit Kubernetes' 63-character limits: the
/// longest Service is `<store>-payment-db` (+11), and its StatefulSet's pods carry a
/// `controller-revision-hash` label `<store>-payment-db-<hash up to 10>` (+22).
pub const MAX_STORE_NAME_LEN: usize = 40;

/// Longest name of a Store with `spec.backup`: a CronJob's name may have at most 52
/// characters (its Jobs append `-<minutes since 1970>`), and the longest is
/// `<store>-payment-db-backup` (+18).
pub const MAX_STORE_NAME_LEN_WITH_BACKUP: usize = 34;

/// PostgreSQL image used when a Store names none. Debian-based on purpose: the official
/// Debian images run as uid 999, which the pod security context relies on (Alpine uses 70).
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:17";

/// A Mercato online store: auth, product, order and payment services, each with its own
/// PostgreSQL, a gateway in front of them, and a storefront (the web shop) behind the gateway.
#[derive(CustomResource, JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mercato.dev",
    version = "v1alpha1",
    kind = "Store",
    plural = "stores",
    shortname = "mst",
    category = "mercato",
    namespaced,
    status = "StoreStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A Mercato online store: auth, product, order and payment services (each with its own PostgreSQL) behind a gateway, and a storefront (the web shop) the gateway serves at / and /shop/.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message(
        "metadata.name must be at most 40 characters: derived names such as <name>-payment-db must fit in 63"
    ),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must start with a letter and contain only lowercase letters, digits and '-' (it prefixes Service names)"
    ),
    validation = Rule::new("!has(self.spec) || !has(self.spec.backup) || self.metadata.name.size() <= 34").message(
        "metadata.name must be at most 34 characters when spec.backup is set: CronJob names such as <name>-payment-db-backup must fit in 52"
    )
)]
#[serde(rename_all = "camelCase", default)]
pub struct StoreSpec {
    /// The authentication service and its database.
    pub auth: ServiceSpec,
    /// The product catalogue service and its database.
    pub product: ServiceSpec,
    /// The order service and its database.
    pub order: ServiceSpec,
    /// The payment service and its database.
    pub payment: ServiceSpec,
    /// The gateway: the store's only entry point.
    pub gateway: GatewaySpec,
    /// The storefront: the web shop's server-rendered pages, which the gateway serves at
    /// `/`, `/shop/` and `/assets/`; a client of the gateway's public API.
    pub storefront: StorefrontSpec,
    /// Lifetimes of the tokens the auth service issues.
    pub tokens: TokenSpec,
    /// What happens to the databases' volumes when the Store is deleted.
    pub deletion_policy: DeletionPolicy,
    /// Default-deny NetworkPolicies plus exactly the edges the store needs.
    pub network_policies: NetworkPoliciesSpec,
    /// Prometheus Operator objects for the store (a PodMonitor and a PrometheusRule with
    /// its alerts), created when their CRDs exist in the cluster.
    pub monitoring: MonitoringSpec,
    /// Where the services send their OpenTelemetry traces; unset, none leave the pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    /// Scheduled logical backups (`pg_dump`) of every database onto a volume that outlives
    /// the Store; unset, none are made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Pull policy of every container of the store.
    pub image_pull_policy: ImagePullPolicy,
    /// Secrets (of type `kubernetes.io/dockerconfigjson`, in the Store's namespace) with
    /// the credentials of private registries, for every pod of the store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<PullSecret>,
}

/// A Secret holding registry credentials.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PullSecret {
    /// Name of the Secret, in the Store's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// One backend service: its Deployment and its PostgreSQL.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Container image; defaults to the operator's `<registry>/<component>:<tag>` (`mercato/<component>:<operator version>` unless the operator is configured otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Pod replicas (0 stops the service).
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// Container resources.
    #[schemars(schema_with = "resources_schema")]
    pub resources: ResourceRequirements,
    /// The service's own PostgreSQL.
    pub database: DatabaseSpec,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: 1,
            resources: resources(("50m", "64Mi"), ("500m", "256Mi")),
            database: DatabaseSpec::default(),
        }
    }
}

/// An IPv4 or IPv6 CIDR (the API server of Kubernetes 1.28 has no `isCIDR()` in CEL).
const CIDR_PATTERN: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]+/[0-9]{1,3})$";

/// The gateway: its Deployment and how its Service is exposed.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    /// Container image; defaults to the operator's `<registry>/gateway:<tag>` (`mercato/gateway:<operator version>` unless the operator is configured otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Pod replicas (0 stops the gateway).
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// Container resources.
    #[schemars(schema_with = "resources_schema")]
    pub resources: ResourceRequirements,
    /// How the gateway's Service is exposed.
    pub service: GatewayServiceSpec,
    /// CIDRs of the proxies in front of the gateway (an ingress controller, a load
    /// balancer that appends `X-Forwarded-For`). The gateway takes the client address from
    /// `X-Forwarded-For` only through these hops; empty (the default) trusts none, so a
    /// client cannot choose its own address for rate limits and login lock-outs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(regex(
            pattern = CIDR_PATTERN
        ))
    )]
    pub trusted_proxies: Vec<String>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: 1,
            resources: resources(("50m", "64Mi"), ("500m", "256Mi")),
            service: GatewayServiceSpec::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The storefront: its Deployment. It has no database and no Service of its own outside the
/// namespace: the gateway routes the shop's pages to it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StorefrontSpec {
    /// Run the web shop. `false` removes its objects (its cookie key too, so sessions end)
    /// and the gateway serves the API only.
    pub enabled: bool,
    /// Container image; defaults to the operator's `<registry>/storefront:<tag>` (`mercato/storefront:<operator version>` unless the operator is configured otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Pod replicas (0 stops the web shop; the gateway then answers its pages with 503).
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// Container resources.
    #[schemars(schema_with = "resources_schema")]
    pub resources: ResourceRequirements,
    /// When the shop's cookies are marked `Secure`: `Auto` when the request reached the
    /// gateway over HTTPS (as a proxy in `gateway.trustedProxies` says); `Always` when the
    /// shop is only ever served over HTTPS, whatever the hops in front of it say.
    pub secure_cookies: SecureCookies,
}

impl Default for StorefrontSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            replicas: 1,
            resources: resources(("50m", "64Mi"), ("500m", "256Mi")),
            secure_cookies: SecureCookies::default(),
        }
    }
}

/// `spec.storefront.secureCookies`: the storefront's `STOREFRONT_SECURE_COOKIES`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecureCookies {
    #[default]
    Auto,
    Always,
}

impl SecureCookies {
    /// The value the storefront reads.
    pub fn as_env(self) -> &'static str {
        match self {
            SecureCookies::Auto => "auto",
            SecureCookies::Always => "always",
        }
    }
}

/// The gateway Service's type and, for node-exposed types, its node port.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.nodePort) || self.type != 'ClusterIP'",
    "message": "gateway.service.nodePort can only be set when gateway.service.type is NodePort or LoadBalancer"
}, {
    "rule": "!has(self.externalTrafficPolicy) || self.type != 'ClusterIP'",
    "message": "gateway.service.externalTrafficPolicy can only be set when gateway.service.type is NodePort or LoadBalancer"
}]))]
pub struct GatewayServiceSpec {
    /// Service type.
    #[serde(rename = "type")]
    pub type_: GatewayServiceType,
    /// Fixed node port (30000-32767); the cluster picks one when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// `Local` keeps the client's source address (the gateway then sees each client, with
    /// no proxy to trust) and sends traffic only to nodes running a gateway pod; `Cluster`
    /// (Kubernetes' default) spreads it over every node but rewrites the source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<ExternalTrafficPolicy>,
}

/// `spec.externalTrafficPolicy` of the gateway's Service.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalTrafficPolicy {
    Cluster,
    Local,
}

impl ExternalTrafficPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalTrafficPolicy::Cluster => "Cluster",
            ExternalTrafficPolicy::Local => "Local",
        }
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl GatewayServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayServiceType::ClusterIP => "ClusterIP",
            GatewayServiceType::NodePort => "NodePort",
            GatewayServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A service's PostgreSQL: one StatefulSet pod with a persistent volume, or with
/// `external` one the operator does not run.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
    "message": "database.storageClassName cannot be changed once the Store exists (StatefulSet volume claims are immutable)"
}, {
    "rule": "has(self.restoreFrom) == has(oldSelf.restoreFrom) && (!has(self.restoreFrom) || self.restoreFrom == oldSelf.restoreFrom)",
    "message": "database.restoreFrom cannot be set, changed or removed once the Store exists (it is read only when the database is created)"
}, {
    "rule": "has(self.external) == has(oldSelf.external)",
    "message": "database.external cannot be set or removed once the Store exists (the data would stay where it is); its secretName, urlKey and tlsMode may change"
}, {
    "rule": "!has(self.external) || !has(self.restoreFrom)",
    "message": "database.external and database.restoreFrom cannot be set together: the operator restores only into databases it runs"
}, {
    "rule": image_major_rule(),
    "message": "database.image cannot change PostgreSQL's major version (the tag's leading number): the data directory belongs to the old one. Keep the old major version, or dump the database and restore it into a new Store with database.restoreFrom"
}]))]
pub struct DatabaseSpec {
    /// PostgreSQL image (Debian-based official image or compatible, running as uid 999).
    /// Its major version (the tag's leading number: `15` in `postgres:15.4-bookworm`) is
    /// fixed once the database exists; minor versions may change.
    #[serde(skip_serializing_if = "Option::is_none")]
    // Bounded, so that the API server's cost estimate of the major-version rule's regexes
    // stays small; a full reference with a digest is under 300 characters.
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Size of the data volume, e.g. `1Gi`.
    #[schemars(regex(pattern = r"^[1-9][0-9]*(Mi|Gi|Ti)$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "database.storageSize cannot be changed once the Store exists (StatefulSet volume claims are immutable)"
    }]))]
    pub storage_size: String,
    /// StorageClass of the data volume; the cluster's default class when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
    /// Container resources of PostgreSQL.
    #[schemars(schema_with = "resources_schema")]
    pub resources: ResourceRequirements,
    /// A backup to fill the database with when it is created (an empty data volume); read
    /// only then, so it can neither be added to nor changed in an existing Store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
    /// A PostgreSQL the operator does not run (a cloud database, a CloudNativePG
    /// `Cluster`): the service connects to the URL in a Secret, and the operator makes no
    /// StatefulSet, Service, volume, credentials or backups for it (the other settings
    /// here are unused). Set only when the Store is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
}

/// Where an external database's connection URL is, and how to use TLS with it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// A Secret in the Store's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: String,
    /// The key of that Secret holding a `postgres://user:password@host:port/database` URL.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub url_key: String,
    /// TLS to the database (libpq's `sslmode`, given as `PGSSLMODE`; an `sslmode` in the
    /// URL takes precedence). `require` encrypts without checking the server's
    /// certificate; `verify-ca` and `verify-full` check it against the public roots.
    #[serde(default)]
    pub tls_mode: TlsMode,
}

fn default_url_key() -> String {
    "url".to_string()
}

/// libpq's `sslmode` values that sqlx implements.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    Prefer,
    #[default]
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    /// The value of `PGSSLMODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            image: None,
            storage_size: "1Gi".to_string(),
            storage_class_name: None,
            resources: resources(("100m", "256Mi"), ("1", "512Mi")),
            restore_from: None,
            external: None,
        }
    }
}

/// CEL for the PostgreSQL major version of the image reference `image`: the leading digits
/// of its tag, `''` without a tag (`registry:5000/postgres`), with a tag that does not start
/// with a digit (`latest`) or with a digest only. `builders::database::major_version` parses
/// alike, and tests hold the two together.
pub fn cel_major_version(image: &str) -> String {
    format!("{image}.find('^[^@]*').find(':[0-9]+[^:/]*$').find('[0-9]+')")
}

/// The transition rule refusing a change of `database.image`'s major version when both the
/// old and the new image name one. An unset image is the default (`postgres:17`) as the
/// operator that generated the CRD knows it.
fn image_major_rule() -> String {
    let image = |s: &str| format!("(has({s}.image) ? {s}.image : '{DEFAULT_POSTGRES_IMAGE}')");
    let old = cel_major_version(&image("oldSelf"));
    let new = cel_major_version(&image("self"));
    format!("{old} == '' || {new} == '' || {old} == {new}")
}

/// Which backup a new database is restored from: a claim or a bucket, and a dump there.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.claimName) != has(self.s3)",
    "message": "database.restoreFrom needs exactly one of claimName and s3"
}]))]
pub struct RestoreFrom {
    /// A PersistentVolumeClaim in the Store's namespace holding backups as a Store's backup
    /// CronJobs write them (`<component>/<time>.dump`): another Store's `<store>-backups`,
    /// or this Store's own when it was deleted and is created again. Mounted read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub claim_name: Option<String>,
    /// A bucket holding backups as a Store's backup CronJobs upload them
    /// (`<prefix>/<component>/<time>.dump`; the prefix defaults to this Store's name, so a
    /// Store created again under its old name finds its own backups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// The dump, e.g. `20261203T165513Z.dump`, or `latest` for the newest one there.
    #[schemars(regex(pattern = r"^(latest|[0-9]{8}T[0-9]{6}Z\.dump)$"))]
    pub file: String,
}

/// A cron schedule of five fields (minute, hour, day of month, month, day of week; names
/// such as `MON` or `JAN` in the last two) or one of the CronJob's `@hourly`-style macros.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9*/,-]+[ \t]+[0-9*/,-]+[ \t]+[0-9*/,?-]+[ \t]+[0-9A-Za-z*/,-]+[ \t]+[0-9A-Za-z*/,?-]+)$";

/// `spec.backup`: a CronJob per database that writes a checked `pg_dump` to `target`.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When each database is backed up, in cron syntax (`17 3 * * *`: daily at 03:17 in the
    /// kube-controller-manager's time zone, usually UTC).
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// How many dumps of each database are kept; older ones are removed after a backup
    /// succeeds.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: i32,
    /// Where the dumps are written.
    #[serde(default)]
    pub target: BackupTarget,
    /// The image of `mercato-backup`, which uploads dumps to a bucket and fetches them back
    /// for a restore from one; `<registry>/backup:<tag>` of the operator's settings when
    /// unset. Also used by `restoreFrom.s3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
}

fn default_retention() -> i32 {
    7
}

/// Where backups go: exactly one of the targets below (a claim when none is named).
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.pvc) != has(self.s3)",
    "message": "backup.target needs exactly one of pvc and s3"
}]))]
pub struct BackupTarget {
    /// A PersistentVolumeClaim `<store>-backups` in the Store's namespace, not owned by the
    /// Store: it stays when the Store is deleted (whatever its deletionPolicy) or stops
    /// backing up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcTarget>,
    /// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, R2, …), off the cluster: the
    /// production choice. Each run dumps into a scratch volume, checks the dump, uploads it
    /// to `<prefix>/<component>/<time>.dump` and then prunes the bucket to the retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

impl Default for BackupTarget {
    fn default() -> Self {
        Self {
            pvc: Some(PvcTarget::default()),
            s3: None,
        }
    }
}

/// An S3-compatible bucket and the folder in it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// The S3 API's URL, scheme and host (and port) only: `https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio.backups.svc:9000`. TLS servers must have a certificate from a public CA.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")
    )]
    pub endpoint: String,
    /// The bucket, which must exist.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// The folder in the bucket for this Store's dumps; the Store's name when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")
    )]
    pub prefix: Option<String>,
    /// The bucket's region (what the signatures are made for).
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,
    /// `Path` (`<endpoint>/<bucket>/<key>`, which every S3-compatible server takes) or
    /// `VirtualHost` (`<bucket>.<endpoint host>/<key>`).
    #[serde(default)]
    pub url_style: UrlStyle,
    /// A Secret in the Store's namespace with the keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and, for temporary credentials, `AWS_SESSION_TOKEN`),
    /// allowed to list, read, write and delete objects under the prefix.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub credentials_secret: String,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// How a bucket's objects are addressed.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UrlStyle {
    #[default]
    Path,
    VirtualHost,
}

impl UrlStyle {
    /// The value of `mercato-backup`'s `S3_URL_STYLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            UrlStyle::Path => "path",
            UrlStyle::VirtualHost => "virtual-host",
        }
    }
}

impl S3Target {
    /// The folder of Store `store`'s dumps of component `c`'s database.
    pub fn prefix_of(&self, store: &str, c: Component) -> String {
        let base = self.prefix.as_deref().unwrap_or(store).trim_matches('/');
        format!("{base}/{}", c.name())
    }

    /// The TCP port of the endpoint (its own, or the scheme's).
    pub fn port(&self) -> i32 {
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, r)| r);
        let host = rest.trim_end_matches('/');
        match host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
            Some(port) => port,
            None if self.endpoint.starts_with("http://") => 80,
            None => 443,
        }
    }
}

/// Where a Store's backups are written, resolved from `backup.target`.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    Pvc(&'a PvcTarget),
    S3(&'a S3Target),
}

impl BackupTarget {
    /// The target: the bucket when one is named, else the claim (the default claim when a
    /// `pvc: null` slipped past the CRD's rule).
    pub fn destination(&self) -> Destination<'_> {
        static DEFAULT_PVC: std::sync::LazyLock<PvcTarget> =
            std::sync::LazyLock::new(PvcTarget::default);
        match (&self.s3, &self.pvc) {
            (Some(s3), _) => Destination::S3(s3),
            (None, Some(pvc)) => Destination::Pvc(pvc),
            (None, None) => Destination::Pvc(&DEFAULT_PVC),
        }
    }
}

/// The backup volume claim.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct PvcTarget {
    /// Size of the backup volume, e.g. `5Gi` (room for `retention` dumps of each database).
    #[schemars(regex(pattern = r"^[1-9][0-9]*(Mi|Gi|Ti)$"))]
    pub size: String,
    /// StorageClass of the backup volume; the cluster's default class when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
}

impl Default for PvcTarget {
    fn default() -> Self {
        Self {
            size: "5Gi".to_string(),
            storage_class_name: None,
        }
    }
}

/// The default bound on how long a Secret update takes to reach a pod's files: the
/// kubelet's sync period (1 min) plus its cache TTL, plus the services' 5 s reload poll.
pub const DEFAULT_KEY_PROPAGATION_SECS: i64 = 120;

/// Token lifetimes in seconds.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.refreshTokenTtlSeconds > self.accessTokenTtlSeconds",
    "message": "tokens.refreshTokenTtlSeconds must be greater than tokens.accessTokenTtlSeconds"
}]))]
pub struct TokenSpec {
    /// Access token lifetime (1 minute to 1 day).
    #[schemars(range(min = 60, max = 86400))]
    pub access_token_ttl_seconds: i64,
    /// Refresh token lifetime (5 minutes to 90 days).
    #[schemars(range(min = 300, max = 7776000))]
    pub refresh_token_ttl_seconds: i64,
    /// During a signing-key rotation (annotation `mercato.dev/rotate-signing-key`), how long
    /// a rewritten key Secret is given to reach every pod before the next step relies on
    /// it: the kubelet's sync period plus the services' reload interval (10 s to 1 hour).
    #[schemars(range(min = 10, max = 3600))]
    pub key_propagation_seconds: i64,
}

impl Default for TokenSpec {
    fn default() -> Self {
        // The contract's defaults are small constants; the casts cannot truncate.
        Self {
            access_token_ttl_seconds: DEFAULT_ACCESS_TOKEN_TTL_SECS as i64,
            refresh_token_ttl_seconds: DEFAULT_REFRESH_TOKEN_TTL_SECS as i64,
            key_propagation_seconds: DEFAULT_KEY_PROPAGATION_SECS,
        }
    }
}

/// What happens to the data when the Store is deleted.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the PostgreSQL volumes, their passwords and the first admin's Secret, so a Store of the same name finds its data again.
    #[default]
    Retain,
    /// Delete the PostgreSQL volumes with the Store.
    Delete,
}

/// NetworkPolicies on or off.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkPoliciesSpec {
    /// Create default-deny NetworkPolicies and allow only the store's own edges.
    pub enabled: bool,
    /// Where the pods may resolve names: the cluster DNS pods, and any node-local cache.
    pub dns: DnsSpec,
}

impl Default for NetworkPoliciesSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            dns: DnsSpec::default(),
        }
    }
}

/// How Prometheus watches the store.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct MonitoringSpec {
    /// Create the PodMonitor and PrometheusRule when the cluster has the Prometheus
    /// Operator's CRDs (`monitoring.coreos.com/v1`); without them nothing is created.
    pub enabled: bool,
    /// Extra labels on both, e.g. the `release` label a Prometheus selects them by.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How often each service's `/metrics` is scraped.
    #[schemars(regex(pattern = r"^[1-9][0-9]*(s|m)$"))]
    pub scrape_interval: String,
    /// The Prometheus pods that may reach the services' ops port (NetworkPolicy ingress);
    /// unset, no one but the gateway may (and the kubelet, for probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PeerSpec>,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            scrape_interval: "30s".to_string(),
            prometheus: None,
        }
    }
}

/// An OpenTelemetry collector that takes OTLP over HTTP.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The collector's OTLP/HTTP base URL, e.g.
    /// `http://otel-collector.observability:4318` (`OTEL_EXPORTER_OTLP_ENDPOINT` of every
    /// service and the gateway).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^https?://[^\s/]+(:[0-9]+)?(/.*)?$")
    )]
    pub otlp_endpoint: String,
    /// The collector's pods, let out to by the NetworkPolicies (on `port`).
    pub collector: PeerSpec,
    /// The port the collector's pods take OTLP/HTTP on.
    #[serde(default = "default_otlp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_otlp_port() -> i32 {
    4318
}

/// Pods in another namespace, by namespace name and labels.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// Namespace of the pods.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// Labels that select the pods in that namespace (at least one).
    #[schemars(extend("minProperties" = 1))]
    pub pod_labels: BTreeMap<String, String>,
}

/// The DNS servers the store's pods may reach (UDP and TCP 53). The defaults match CoreDNS
/// and kube-dns as most distributions deploy them; other distributions label them otherwise,
/// and NodeLocal DNSCache answers on a link-local address that no pod selector matches.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct DnsSpec {
    /// Namespace of the cluster DNS pods.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// Labels that select the cluster DNS pods in that namespace (at least one).
    #[schemars(extend("minProperties" = 1))]
    pub pod_labels: BTreeMap<String, String>,
    /// Addresses of DNS servers outside any pod, e.g. `169.254.20.10/32` for NodeLocal
    /// DNSCache.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(regex(
            pattern = CIDR_PATTERN
        ))
    )]
    pub cidrs: Vec<String>,
}

impl Default for DnsSpec {
    fn default() -> Self {
        Self {
            namespace: "kube-system".to_string(),
            pod_labels: BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
            cidrs: Vec::new(),
        }
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// A Kubernetes quantity (`resource.Quantity`): the pattern Kubernetes' own generated schemas
/// use, less the minus sign, since no request or limit may be negative. `256Mi`, `0.5`,
/// `500m`, `1Gi` and `1e3` match; `256MB` does not. (`pattern` constrains strings only; a
/// bare number is a valid quantity.)
pub const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// `requests` and `limits` of a container, as in a Pod (without the alpha `claims`): a
/// compact schema instead of k8s-openapi's, whose Quantity docs repeat at every use. The
/// values are checked as quantities here, so `memory: 256MB` is refused when the Store is
/// applied, not later when its Deployment is.
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = serde_json::json!({
        "type": "object",
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
        },
    });
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "requests": quantities.clone(),
            "limits": quantities,
        },
    })
}

/// Requests and limits as `(cpu, memory)` pairs. CPU is limited too, so that one store
/// cannot starve its neighbours (and policy scanners expect it); raise it in the Store.
pub(crate) fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(pair(limits)),
        claims: None,
    }
}

/// Observed state of a Store, computed from its children.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// The Store generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the conditions: Progressing, Ready or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `Progressing` and `Degraded`, per the Kubernetes API conventions.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Readiness per component, by component name.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,
    /// Where the gateway answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret holding the first admin's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
    /// The JWT signing key and where its rotation stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyStatus>,
    /// With `spec.backup`: the backups of each database, by component name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, BackupStatus>,
}

/// When a database's backup CronJob last ran, and last succeeded.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the last backup Job was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last backup Job that succeeded finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
}

/// The signing key in use, and the rotation in progress if any.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyStatus {
    /// Key id (RFC 7638 thumbprint) of the newest key: the one auth signs with, or will
    /// once the phase reaches `Signing`.
    pub kid: String,
    pub phase: KeyPhase,
    /// When the current phase began.
    pub since: Time,
    /// The key being rotated out; published until the tokens it signed have expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_kid: Option<String>,
    /// The value of the `mercato.dev/rotate-signing-key` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

/// Where a signing-key rotation stands.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPhase {
    /// One key, published and signing.
    Idle,
    /// The new public key is in the JWKS beside the old one; waiting until every pod has
    /// loaded it. Auth still signs with the old key.
    Publishing,
    /// Auth has been given the new key; waiting until it has loaded it.
    Signing,
    /// Auth signs with the new key; the old public key stays published until the last
    /// token it signed has expired.
    Retiring,
}

impl KeyPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPhase::Idle => "Idle",
            KeyPhase::Publishing => "Publishing",
            KeyPhase::Signing => "Signing",
            KeyPhase::Retiring => "Retiring",
        }
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Progressing,
    Ready,
    Degraded,
}

/// Replicas of one component, and whether its database is up.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas the Store asks for.
    pub replicas: i32,
    /// Replicas that are ready and run the current pod template.
    pub ready_replicas: i32,
    /// Whether the component's PostgreSQL is ready (absent for the gateway and the
    /// storefront, which have none, and for an external database, which the operator does
    /// not run: the service becomes ready only once it has connected to it and migrated it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_ready: Option<bool>,
}

/// The CRD as installed: `Store::crd()` with `spec` optional and defaulted to `{}`, so that
/// a Store of only a name is accepted and every default below applies.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Store::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(required) = schema.required.as_mut() {
            required.retain(|r| r != "spec");
            if required.is_empty() {
                schema.required = None;
            }
        }
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.default = Some(JSON(serde_json::json!({})));
        }
    }
    crd
}

impl StoreSpec {
    /// The image of `mercato-backup`: `backup.image`, else the operator's default.
    pub fn backup_image(&self, defaults: &ImageDefaults) -> String {
        self.backup
            .as_ref()
            .and_then(|b| b.image.clone())
            .unwrap_or_else(|| defaults.backup())
    }

    /// The settings of a backend service; `None` for the gateway and the storefront, which
    /// have no database.
    pub fn service(&self, component: Component) -> Option<&ServiceSpec> {
        match component {
            Component::Auth => Some(&self.auth),
            Component::Product => Some(&self.product),
            Component::Order => Some(&self.order),
            Component::Payment => Some(&self.payment),
            Component::Gateway | Component::Storefront => None,
        }
    }

    /// Whether the Store runs `component`: every one but a storefront it turned off.
    pub fn enabled(&self, component: Component) -> bool {
        match component {
            Component::Storefront => self.storefront.enabled,
            Component::Auth
            | Component::Product
            | Component::Order
            | Component::Payment
            | Component::Gateway => true,
        }
    }

    /// The external database of a backend service, if it has one.
    pub fn external_database(&self, component: Component) -> Option<&ExternalDatabase> {
        self.service(component)?.database.external.as_ref()
    }

    /// The backend services whose PostgreSQL the operator runs (all but those with an
    /// external database), in `Component::WITH_DATABASE` order.
    pub fn operated_databases(&self) -> impl Iterator<Item = Component> + '_ {
        Component::WITH_DATABASE
            .into_iter()
            .filter(|c| self.external_database(*c).is_none())
    }

    /// The components the Store runs, in `Component::ALL` order.
    pub fn components(&self) -> impl Iterator<Item = Component> + '_ {
        Component::ALL.into_iter().filter(|c| self.enabled(*c))
    }

    /// The pods' `imagePullSecrets`; `None` when the Store names none.
    pub fn pull_secrets(&self) -> Option<Vec<LocalObjectReference>> {
        (!self.image_pull_secrets.is_empty()).then(|| {
            self.image_pull_secrets
                .iter()
                .map(|s| LocalObjectReference {
                    name: s.name.clone(),
                })
                .collect()
        })
    }

    /// The workload settings every component has.
    pub fn workload(&self, component: Component) -> Workload<'_> {
        fn backend(s: &ServiceSpec) -> (Option<&str>, i32, &ResourceRequirements) {
            (s.image.as_deref(), s.replicas, &s.resources)
        }
        let (image, replicas, resources) = match component {
            Component::Auth => backend(&self.auth),
            Component::Product => backend(&self.product),
            Component::Order => backend(&self.order),
            Component::Payment => backend(&self.payment),
            Component::Gateway => (
                self.gateway.image.as_deref(),
                self.gateway.replicas,
                &self.gateway.resources,
            ),
            Component::Storefront => (
                self.storefront.image.as_deref(),
                self.storefront.replicas,
                &self.storefront.resources,
            ),
        };
        Workload {
            image,
            replicas,
            resources,
        }
    }
}

/// The part of a component's spec shared by the services, the gateway and the storefront.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    image: Option<&'a str>,
    pub replicas: i32,
    pub resources: &'a ResourceRequirements,
}

impl Workload<'_> {
    /// The Store's image for `component`, else the operator's default.
    pub fn image(&self, component: Component, defaults: &ImageDefaults) -> String {
        self.image
            .map_or_else(|| defaults.image(component), str::to_string)
    }
}

impl DatabaseSpec {
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_POSTGRES_IMAGE)
    }
}
