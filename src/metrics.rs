//! Prometheus metrics: what an operator looks at first at 3 a.m.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// A known method or `other` (see `api::count_requests`).
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// A stable error code, or `ok`.
    pub outcome: String,
}

/// Every metric the service exports, cheap to clone into handlers and watchers.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub spawn_seconds: Family<OutcomeLabels, Histogram>,
    pub render_seconds: Family<OutcomeLabels, Histogram>,
    pub render_cache_hits: Counter,
    pub config_problems: Gauge,
    pub config_reloads: Counter,
    pub config_loaded: Gauge,
    pub watch_errors: Counter,
    pub lifecycle_errors: Counter,
    pub http_connections: Gauge,
    registry: std::sync::Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("singleuser_profiles");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        // 1 ms .. ~65 s: a dry-run render sits at the bottom, a spawn that waits for Ray at the top.
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let spawn_seconds =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(buckets as fn() -> Histogram);
        registry.register("spawn_duration_seconds", "Spawn latency by outcome", spawn_seconds.clone());
        let render_seconds =
            Family::<OutcomeLabels, Histogram>::new_with_constructor(buckets as fn() -> Histogram);
        registry.register(
            "render_duration_seconds",
            "Dry-run render latency by outcome",
            render_seconds.clone(),
        );
        let render_cache_hits = Counter::default();
        registry.register(
            "render_cache_hits",
            "Dry-run renders answered from the answers already given for the same configuration",
            render_cache_hits.clone(),
        );
        let config_problems = Gauge::default();
        registry.register(
            "config_problems",
            "ConfigMaps or keys that failed to parse (their last good version keeps serving)",
            config_problems.clone(),
        );
        let config_reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Catalog rebuilds after ConfigMap changes",
            config_reloads.clone(),
        );
        let config_loaded = Gauge::default();
        registry.register(
            "config_loaded",
            "1 once the first full ConfigMap list is loaded",
            config_loaded.clone(),
        );
        let watch_errors = Counter::default();
        registry.register(
            "watch_errors",
            "ConfigMap watch errors (the last good snapshot keeps serving)",
            watch_errors.clone(),
        );
        let lifecycle_errors = Counter::default();
        registry.register(
            "lifecycle_errors",
            "Failed adoptions, reaps and stray-cluster sweeps (each is retried)",
            lifecycle_errors.clone(),
        );
        let http_connections = Gauge::default();
        registry.register("http_connections", "Open HTTP connections", http_connections.clone());
        Self {
            requests,
            spawn_seconds,
            render_seconds,
            render_cache_hits,
            config_problems,
            config_reloads,
            config_loaded,
            watch_errors,
            lifecycle_errors,
            http_connections,
            registry: std::sync::Arc::new(registry),
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
