//! Every permission the operator needs, declared once. `mercato-operator rbac` prints the
//! ClusterRole rules from this table (`make crds` writes them into the chart, and a test
//! fails when the chart's copy is stale); the in-memory API server of the tests answers 403
//! to any request this table does not allow, so a new call without its permission fails
//! the tests instead of a real cluster.

use serde::Serialize;

/// One RBAC rule: verbs on resources of one API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Written as RBAC's `apiGroups` list; one group per rule keeps the table readable.
    #[serde(rename = "apiGroups", serialize_with = "as_list")]
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

fn as_list<S: serde::Serializer>(group: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    [*group].serialize(s)
}

/// Children: read from the watch caches (list, watch) or, before those are synced, by GET;
/// server-side applied (patch, and create when the apply creates); replaced (update) when
/// someone's edit makes every apply invalid (`apply::take_back`); deleted when no longer
/// desired (a PDB after scaling to one replica, NetworkPolicies turned off, the storefront's
/// objects when a Store turns it off, the backup CronJobs when it turns backups off), or stopped by the `Delete` deletion policy (the
/// databases' StatefulSets).
const CHILD: &[&str] = &[
    "get", "list", "watch", "create", "patch", "update", "delete",
];

/// The operator's ClusterRole, bound cluster-wide or in the watched namespace only.
pub const RULES: &[Rule] = &[
    // Watched; the cleanup finalizer is added and removed by JSON patch.
    Rule {
        api_group: "mercato.dev",
        resources: &["stores"],
        verbs: &["list", "watch", "patch"],
    },
    // Status is written by server-side apply.
    Rule {
        api_group: "mercato.dev",
        resources: &["stores/status"],
        verbs: &["patch"],
    },
    // Created once, metadata re-applied, never replaced. Deleted only when the Store turns
    // off the component that reads it (the storefront's cookie key), and then only one the
    // Store controls; the operator can already rewrite Secrets (patch), so delete grants it
    // no new power over their contents.
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    // The ConfigMap holds the backup and restore scripts; deleted when the Store neither
    // backs up nor restores.
    Rule {
        api_group: "",
        resources: &["services", "serviceaccounts", "configmaps"],
        verbs: CHILD,
    },
    // Claims are watched to say when a database's volume is not bound; the `Delete`
    // deletion policy removes the databases' claims. The backup claim `<store>-backups` is
    // applied like a child (but never deleted by the operator).
    Rule {
        api_group: "",
        resources: &["persistentvolumeclaims"],
        verbs: CHILD,
    },
    // Pods are watched (never changed) to say why a component is not ready: unschedulable,
    // an image that cannot be pulled, a crash loop.
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["list", "watch"],
    },
    Rule {
        api_group: "apps",
        resources: &["deployments"],
        verbs: CHILD,
    },
    Rule {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: CHILD,
    },
    // The backup CronJobs; deleted when the Store turns backups off.
    Rule {
        api_group: "batch",
        resources: &["cronjobs"],
        verbs: CHILD,
    },
    // The backup CronJobs' Jobs are watched (never changed) to tell a failed backup.
    Rule {
        api_group: "batch",
        resources: &["jobs"],
        verbs: &["list", "watch"],
    },
    Rule {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: CHILD,
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: CHILD,
    },
    // Events are created, and patched when they repeat.
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
    // The Store's PodMonitor and PrometheusRule, only in clusters that have the Prometheus
    // Operator's CRDs; pruned when a Store turns monitoring off.
    Rule {
        api_group: "monitoring.coreos.com",
        resources: &["podmonitors", "prometheusrules"],
        verbs: &["get", "list", "create", "patch", "update", "delete"],
    },
];

/// Leader election, granted by a Role in the operator's own namespace: `create` for any
/// Lease (the object does not exist yet), `get` and `update` for the one named by
/// `LEASE_NAME` (the chart sets `resourceNames`).
pub const LEADER_ELECTION: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["create", "get", "update"],
}];

/// Whether `verb` on `resource` (`plural` or `plural/subresource`) of `group` is granted.
pub fn permits(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .chain(LEADER_ELECTION)
        .any(|r| r.api_group == group && r.resources.contains(&resource) && r.verbs.contains(&verb))
}

/// The ClusterRole's `rules`, as YAML (what `make crds` writes into the chart).
pub fn rules_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated by `mercato-operator rbac` from operator/src/rbac.rs; do not edit.\n{}",
        serde_yaml::to_string(RULES)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_grants_what_it_lists_and_nothing_else() {
        assert!(permits("apps", "deployments", "update"));
        assert!(permits("mercato.dev", "stores/status", "patch"));
        assert!(!permits("mercato.dev", "stores/status", "update"));
        assert!(
            !permits("", "secrets", "update"),
            "Secrets are never replaced"
        );
        assert!(
            !permits("", "secrets", "deletecollection"),
            "Secrets are deleted one by one, by name"
        );
        assert!(permits("apps", "deployments", "delete"));
        assert!(!permits("apps", "deployments", "deletecollection"));
        assert!(!permits("", "pods", "get"), "pods are only watched");
    }

    #[test]
    fn rules_render_as_rbac_rules() {
        let yaml = rules_yaml().unwrap();
        let rules: Vec<serde_yaml::Value> =
            serde_yaml::from_str(yaml.split_once('\n').unwrap().1).unwrap();
        assert_eq!(rules.len(), RULES.len());
        assert_eq!(rules[0]["apiGroups"][0].as_str(), Some("mercato.dev"));
        assert_eq!(rules[0]["verbs"][2].as_str(), Some("patch"));
    }
}
