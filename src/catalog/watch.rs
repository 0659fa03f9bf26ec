//! The Kubernetes config source: one watch over the namespace's ConfigMaps turned into catalog
//! snapshots. Errors never take the last good snapshot away, and never readiness: a replica that
//! has loaded its profiles keeps serving them while the watch retries (kubert's rule). Watch
//! trouble shows in `/api/v1/status`, the `watch_errors` metric and the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::Serialize;
use tokio::sync::watch;

use super::users::is_user_settings;
use super::{Catalog, ConfigMapSource, ProfileSelector, Rules, UserIndex};
use crate::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::metrics::Metrics;

/// What the request path reads: the newest catalog and whether it is complete.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    /// Users' own settings; changes here never rebuild the catalog.
    pub users: Arc<UserIndex>,
    /// True once the first full list arrived (or the folders were read).
    pub loaded: bool,
    /// The watch's most recent failure, until the watch delivers again.
    pub watch_error: Option<WatchError>,
    /// Where the config comes from, for the status endpoint.
    pub source: String,
}

/// A failure of the ConfigMap watch, as the status endpoint shows it.
///
/// It is cleared by the watch's next event. After a transient failure the watch resumes from
/// its resourceVersion without an event, so in a quiet namespace this can outlive the trouble:
/// `at` says how old it is, and the `watch_errors` metric whether failures continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchError {
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// Builds the snapshot of a folder source once; the dry run saves users' settings through the
/// sender.
pub fn fixed(catalog: Catalog, users: UserIndex, source: String) -> watch::Sender<Snapshot> {
    let snapshot = Snapshot {
        catalog: Arc::new(catalog),
        users: Arc::new(users),
        loaded: true,
        watch_error: None,
        source,
    };
    watch::channel(snapshot).0
}

/// Starts watching `namespace` and returns the receiving end of the snapshots.
///
/// Every ConfigMap not written by this service is watched, because template ConfigMaps carry no
/// label of ours; the owner ConfigMaps this service creates per notebook are excluded so that a
/// spawn storm does not rebuild the catalog.
pub fn start(
    client: Client,
    namespace: &str,
    selector: ProfileSelector,
    rules: Rules,
    metrics: Metrics,
) -> (watch::Receiver<Snapshot>, tokio::task::JoinHandle<()>) {
    let source = format!("ConfigMaps in namespace {namespace}");
    let (tx, rx) = watch::channel(Snapshot { source, ..Snapshot::default() });
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}!={MANAGED_BY}"));
    let events = watcher::watcher(api, config).default_backoff();
    (rx, tokio::spawn(run(events, tx, selector, rules, metrics)))
}

/// Turns watch events into snapshots until the stream ends. Takes the stream rather than a
/// client so that tests can feed it any sequence of events and errors.
pub async fn run<S>(
    events: S,
    tx: watch::Sender<Snapshot>,
    selector: ProfileSelector,
    rules: Rules,
    metrics: Metrics,
) where
    S: Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Send,
{
    let mut events = std::pin::pin!(events);
    let mut known: BTreeMap<String, ConfigMapSource> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, ConfigMapSource>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                metrics.watch_errors.inc();
                tracing::warn!(error = %err, "ConfigMap watch failed; serving the last good profiles while it retries");
                let error = WatchError { message: err.to_string(), at: now() };
                tx.send_modify(|s| s.watch_error = Some(error));
                continue;
            }
        };
        if tx.borrow().watch_error.is_some() {
            tracing::info!("ConfigMap watch delivering again");
            tx.send_modify(|s| s.watch_error = None);
        }
        match event {
            Event::Init => listing = Some(BTreeMap::new()),
            Event::InitApply(cm) => {
                let cm = source_of(cm);
                listing.get_or_insert_with(BTreeMap::new).insert(cm.name.clone(), cm);
            }
            Event::InitDone => {
                let all = listing.take().unwrap_or_default();
                let (users, _) = UserIndex::split(&selector, all.values());
                tx.send_modify(|s| s.users = Arc::new(users));
                known = all.into_iter().filter(|(_, cm)| !is_user_settings(&selector, cm)).collect();
                publish(&tx, &selector, &rules, &known, &metrics);
            }
            // A user's settings change that user's entry only: no catalog rebuild.
            Event::Apply(cm) if is_user_settings(&selector, &source_of_ref(&cm)) => {
                let cm = source_of(cm);
                tx.send_modify(|s| Arc::make_mut(&mut s.users).apply(&cm));
                // It may have been a profile source until its label went.
                if known.remove(&cm.name).is_some() {
                    publish(&tx, &selector, &rules, &known, &metrics);
                }
            }
            Event::Apply(cm) => {
                let cm = source_of(cm);
                known.insert(cm.name.clone(), cm);
                publish(&tx, &selector, &rules, &known, &metrics);
            }
            Event::Delete(cm) => {
                let name = source_of(cm).name;
                tx.send_modify(|s| Arc::make_mut(&mut s.users).remove(&name));
                if known.remove(&name).is_some() {
                    publish(&tx, &selector, &rules, &known, &metrics);
                }
            }
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn publish(
    tx: &watch::Sender<Snapshot>,
    selector: &ProfileSelector,
    rules: &Rules,
    known: &BTreeMap<String, ConfigMapSource>,
    metrics: &Metrics,
) {
    let previous = tx.borrow().catalog.clone();
    let catalog = Catalog::build_with(selector, rules, known.values(), Some(&previous));
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
    });
}

/// The name and labels of a ConfigMap, which decide where it goes.
fn source_of_ref(cm: &ConfigMap) -> ConfigMapSource {
    ConfigMapSource {
        name: cm.metadata.name.clone().unwrap_or_default(),
        labels: cm.metadata.labels.clone().unwrap_or_default(),
        data: Default::default(),
    }
}

fn source_of(cm: ConfigMap) -> ConfigMapSource {
    ConfigMapSource {
        name: cm.metadata.name.unwrap_or_default(),
        labels: cm.metadata.labels.unwrap_or_default(),
        data: cm.data.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::stream;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::profile::PROFILES_KEY;

    fn profiles_cm() -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "jupyter-singleuser-profiles"},
            "data": {PROFILES_KEY: "profiles:\n- name: globals\n"},
        }))
        .unwrap()
    }

    fn failure() -> watcher::Error {
        watcher::Error::WatchFailed(kube::Error::LinesCodecMaxLineLengthExceeded)
    }

    /// Feeds `events` to the loop, then nothing more (the stream stays open, as a resumed watch
    /// in a quiet namespace does), and returns the snapshots' receiver once they are consumed.
    async fn feed(events: Vec<Result<Event<ConfigMap>, watcher::Error>>) -> watch::Receiver<Snapshot> {
        feed_counting(events, Metrics::default()).await
    }

    async fn feed_counting(
        events: Vec<Result<Event<ConfigMap>, watcher::Error>>,
        metrics: Metrics,
    ) -> watch::Receiver<Snapshot> {
        let (tx, rx) = watch::channel(Snapshot::default());
        let silence = stream::iter(events).chain(stream::pending());
        tokio::spawn(run(silence, tx, ProfileSelector::default(), Rules::default(), metrics));
        // The loop runs on this runtime; let it drain what it was given.
        tokio::time::sleep(Duration::from_millis(50)).await;
        rx
    }

    #[tokio::test]
    async fn an_error_followed_by_silence_keeps_the_loaded_profiles_and_reports_the_error() {
        let rx = feed(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(profiles_cm())),
            Ok(Event::InitDone),
            Err(failure()),
        ])
        .await;
        let snapshot = rx.borrow().clone();
        assert!(snapshot.loaded, "loaded stays true through a watch error");
        assert_eq!(snapshot.catalog.profile_sources().collect::<Vec<_>>(), ["jupyter-singleuser-profiles"]);
        let error = snapshot.watch_error.expect("the error is reported");
        assert!(error.message.contains("watch stream failed"), "{error:?}");
    }

    #[tokio::test]
    async fn the_next_event_clears_the_error() {
        let rx =
            feed(vec![Ok(Event::Init), Ok(Event::InitDone), Err(failure()), Ok(Event::Apply(profiles_cm()))])
                .await;
        let snapshot = rx.borrow().clone();
        assert_eq!(snapshot.watch_error, None);
        assert_eq!(snapshot.catalog.profile_sources().count(), 1);
    }

    fn settings_cm(name: &str, data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": data})).unwrap()
    }

    #[tokio::test]
    async fn a_users_settings_update_their_entry_and_rebuild_no_catalog() {
        let rx = feed(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(profiles_cm())),
            Ok(Event::InitApply(settings_cm(
                "jupyterhub-singleuser-profile-alice",
                serde_json::json!({"profile": "gpu: 1\n"}),
            ))),
            Ok(Event::InitDone),
        ])
        .await;
        let first = rx.borrow().clone();
        assert_eq!(first.users.get("alice").unwrap().presets.clone().unwrap().unwrap().gpu, Some(1));
        assert_eq!(first.catalog.profile_sources().collect::<Vec<_>>(), ["jupyter-singleuser-profiles"]);

        let metrics = Metrics::default();
        let events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(profiles_cm())),
            Ok(Event::InitDone),
            Ok(Event::Apply(settings_cm(
                "jupyterhub-singleuser-profile-bob-envs",
                serde_json::json!({"A": "1"}),
            ))),
            Ok(Event::Apply(settings_cm(
                "jupyterhub-singleuser-profile-bob",
                serde_json::json!({"profile": "gpu: 2\n"}),
            ))),
            Ok(Event::Delete(settings_cm("jupyterhub-singleuser-profile-bob-envs", serde_json::json!({})))),
        ];
        let rx = feed_counting(events, metrics.clone()).await;
        let snapshot = rx.borrow().clone();
        let bob = snapshot.users.get("bob").unwrap();
        assert_eq!(bob.presets.clone().unwrap().unwrap().gpu, Some(2));
        assert!(bob.envs.is_none(), "the deleted env ConfigMap is gone");
        assert_eq!(metrics.config_reloads.get(), 1, "only the first list built the catalog");
        assert_eq!(snapshot.catalog.profile_sources().collect::<Vec<_>>(), ["jupyter-singleuser-profiles"]);
    }

    #[tokio::test]
    async fn an_error_before_the_first_list_leaves_nothing_loaded() {
        let rx = feed(vec![Err(failure())]).await;
        assert!(!rx.borrow().loaded);
        assert!(rx.borrow().watch_error.is_some());
    }
}
