//! The Kubernetes config source: one watch over the namespace's ConfigMaps turned into catalog
//! snapshots. Errors never take the last good snapshot away.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use super::users::is_user_settings;
use super::{Catalog, ConfigMapSource, ProfileSelector, UserIndex};
use crate::metrics::Metrics;
use crate::plan::{MANAGED_BY, MANAGED_BY_LABEL};

/// What the request path reads: the newest catalog and whether it is complete.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    /// Users' own settings; changes here never rebuild the catalog.
    pub users: Arc<UserIndex>,
    /// True once the first full list arrived (or the folders were read).
    pub loaded: bool,
    /// The last watch error, cleared when the watch delivers again.
    pub watch_error: Option<String>,
    /// Where the config comes from, for the status endpoint.
    pub source: String,
}

/// Builds the snapshot of a folder source once.
pub fn fixed(catalog: Catalog, users: UserIndex, source: String) -> watch::Receiver<Snapshot> {
    let snapshot = Snapshot {
        catalog: Arc::new(catalog),
        users: Arc::new(users),
        loaded: true,
        watch_error: None,
        source,
    };
    watch::channel(snapshot).1
}

/// Starts watching `namespace` and returns the receiving end of the snapshots.
///
/// Every ConfigMap not written by this service is watched, because template ConfigMaps carry no
/// label of ours; the owner ConfigMaps this service creates per notebook are excluded so that a
/// spawn storm does not rebuild the catalog. Users' settings ConfigMaps (JSP's
/// `jupyterhub-singleuser-profile-<user>`) update the user index alone.
pub fn start(
    client: Client,
    namespace: &str,
    selector: ProfileSelector,
    metrics: Metrics,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let source = format!("ConfigMaps in namespace {namespace}");
    let (tx, rx) = watch::channel(Snapshot { source, ..Snapshot::default() });
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}!={MANAGED_BY}"));
    let task = tokio::spawn(async move {
        let mut known: BTreeMap<String, ConfigMapSource> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, ConfigMapSource>> = None;
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let changed = match event {
                Ok(Event::Init) => {
                    listing = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(cm)) => {
                    let cm = source_of(cm);
                    listing.get_or_insert_with(BTreeMap::new).insert(cm.name.clone(), cm);
                    false
                }
                Ok(Event::InitDone) => {
                    let all = listing.take().unwrap_or_default();
                    let (users, _) = UserIndex::split(&selector, all.values());
                    tx.send_modify(|s| s.users = Arc::new(users));
                    known = all.into_iter().filter(|(_, cm)| !is_user_settings(&selector, cm)).collect();
                    true
                }
                Ok(Event::Apply(cm)) => {
                    let cm = source_of(cm);
                    if is_user_settings(&selector, &cm) {
                        tx.send_modify(|s| {
                            Arc::make_mut(&mut s.users).apply(&cm);
                            s.watch_error = None;
                        });
                        // It may have been a profile source until its label went.
                        known.remove(&cm.name).is_some()
                    } else {
                        known.insert(cm.name.clone(), cm);
                        true
                    }
                }
                Ok(Event::Delete(cm)) => {
                    let name = source_of(cm).name;
                    tx.send_modify(|s| Arc::make_mut(&mut s.users).remove(&name));
                    known.remove(&name).is_some()
                }
                Err(err) => {
                    metrics.watch_errors.inc();
                    tracing::warn!(error = %err, "ConfigMap watch failed; serving the last good profiles while it retries");
                    tx.send_modify(|s| s.watch_error = Some(err.to_string()));
                    false
                }
            };
            if changed {
                publish(&tx, &selector, &known, &metrics);
            }
        }
    });
    (rx, task)
}

fn publish(
    tx: &watch::Sender<Snapshot>,
    selector: &ProfileSelector,
    known: &BTreeMap<String, ConfigMapSource>,
    metrics: &Metrics,
) {
    let previous = tx.borrow().catalog.clone();
    let catalog = Catalog::build(selector, known.values(), Some(&previous));
    for problem in catalog.problems().iter().filter(|p| !previous.problems().contains(p)) {
        tracing::warn!(configmap = %problem.configmap, key = ?problem.key, line = ?problem.line, "{problem}");
    }
    metrics.config_problems.set(catalog.problems().len() as i64);
    metrics.config_reloads.inc();
    metrics.config_loaded.set(1);
    tracing::info!(
        profile_configmaps = catalog.profile_sources().count(),
        templates = catalog.template_count(),
        problems = catalog.problems().len(),
        "profiles reloaded"
    );
    tx.send_modify(|s| {
        s.catalog = Arc::new(catalog);
        s.loaded = true;
        s.watch_error = None;
    });
}

fn source_of(cm: ConfigMap) -> ConfigMapSource {
    ConfigMapSource {
        name: cm.metadata.name.unwrap_or_default(),
        labels: cm.metadata.labels.unwrap_or_default(),
        data: cm.data.unwrap_or_default(),
    }
}
