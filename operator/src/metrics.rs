//! Prometheus metrics of the reconciler: reconciles and their duration by outcome, failures
//! by error kind, and when each Store's signing key began signing (for a key-age alert).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or `error`.
    pub outcome: &'static str,
}

/// One Store. (`store_namespace`, not `namespace`: Prometheus sets `namespace` to the
/// operator pod's own.)
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store_namespace: String,
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The error's kind, e.g. `kube_api`, `secret_incomplete`.
    pub error: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram>,
    key_since: Family<StoreLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mercato_operator");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "reconciles",
            "Store reconciles by outcome",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed Store reconciles by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of Store reconciles by outcome",
            duration.clone(),
        );
        let key_since = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "signing_key_since_timestamp_seconds",
            "When each Store's signing key settled (its last rotation ended, or the Store was created), Unix time",
            key_since.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            key_since,
        }
    }
}

impl Metrics {
    pub fn observe(&self, outcome: Result<(), &'static str>, took: Duration) {
        let label = OutcomeLabels {
            outcome: if outcome.is_ok() { "success" } else { "error" },
        };
        self.reconciles.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Err(kind) = outcome {
            self.failures
                .get_or_create(&FailureLabels { error: kind })
                .inc();
        }
    }

    /// Records when `store`'s signing key settled (Unix seconds).
    pub fn signing_key_since(&self, namespace: &str, store: &str, unix_seconds: i64) {
        self.key_since
            .get_or_create(&StoreLabels {
                store_namespace: namespace.to_string(),
                store: store.to_string(),
            })
            .set(unix_seconds);
    }

    /// Forgets a deleted Store's series.
    pub fn forget_store(&self, namespace: &str, store: &str) {
        self.key_since.remove(&StoreLabels {
            store_namespace: namespace.to_string(),
            store: store.to_string(),
        });
    }

    /// Reconciles so far with `outcome` (`success` or `error`).
    pub fn reconciles(&self, outcome: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_outcome_and_failures_by_kind() {
        let m = Metrics::default();
        m.observe(Ok(()), Duration::from_millis(20));
        m.observe(Err("kube_api"), Duration::from_millis(20));
        let text = m.render();
        assert!(
            text.contains(r#"mercato_operator_reconciles_total{outcome="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"mercato_operator_reconciles_total{outcome="error"} 1"#));
        assert!(text.contains(r#"mercato_operator_reconcile_failures_total{error="kube_api"} 1"#));
        assert!(
            text.contains(
                r#"mercato_operator_reconcile_duration_seconds_count{outcome="success"} 1"#
            )
        );
    }
}
