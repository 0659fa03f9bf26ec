//! The one place that builds the service: state, router and background tasks. `serve`, the
//! HTTP unit tests and the plane tests all build it here, so what they test is what runs.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use kube::Client;
use tokio::sync::watch;

use crate::api::renders::{DEFAULT_RENDER_CACHE_BYTES, Renders};
use crate::api::{self, AppState, Authenticator, Launcher, Limits, OAuth};
use crate::catalog::watch::{self as config_watch, Snapshot};
use crate::catalog::{Catalog, ProfileSelector, Rules, UserIndex};
use crate::cluster::{Clusters, DEFAULT_SPAWN_CONCURRENCY};
use crate::launcher::ImageList;
use crate::lifecycle::{self, Quota, Reaping};
use crate::metrics::Metrics;
use crate::settings::SettingsStore;
use crate::spawn::{Backend, ClusterBackend, Planner};

/// The built service: its router, its state, and its background tasks (stopped when dropped).
pub struct App {
    pub router: Router,
    pub state: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// What a cluster-mode service needs beyond its namespace.
pub struct ClusterSetup {
    pub client: Client,
    pub selector: ProfileSelector,
    /// Caps and template policy for the ConfigMaps watched.
    pub rules: Rules,
    pub reaping: Reaping,
    pub quota: Quota,
    pub spawn_concurrency: usize,
}

impl ClusterSetup {
    /// Defaults for everything but the client: the default selector, no reaping, no quotas.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            selector: ProfileSelector::default(),
            rules: Rules::default(),
            reaping: Reaping {
                grace: std::time::Duration::ZERO,
                interval: std::time::Duration::from_secs(30),
            },
            quota: Quota::default(),
            spawn_concurrency: DEFAULT_SPAWN_CONCURRENCY,
        }
    }
}

enum Source {
    /// The dry run's folders: users' settings saved go into this snapshot.
    Fixed(watch::Sender<Snapshot>),
    /// Driven by someone else: nothing is saved.
    Snapshot(watch::Receiver<Snapshot>),
    /// Boxed: the setup is large and built once.
    Cluster(Box<ClusterSetup>),
}

/// JSP's spawner API: where it is served, the images it offers, the browser login.
pub struct LauncherSetup {
    pub prefix: String,
    pub images: ImageList,
    pub oauth: Option<OAuth>,
}

impl Default for LauncherSetup {
    fn default() -> Self {
        Self { prefix: api::jsp::DEFAULT_PREFIX.to_owned(), images: ImageList::default(), oauth: None }
    }
}

/// Builds an [`App`]; see [`App::dry_run`], [`App::cluster`] and [`App::from_snapshot`].
pub struct AppBuilder {
    source: Source,
    namespace: String,
    auth: Authenticator,
    metrics: Metrics,
    limits: Limits,
    launcher: LauncherSetup,
    render_cache_bytes: u64,
}

impl App {
    /// Serves a fixed catalog (the folders) and writes nothing.
    pub fn dry_run(catalog: Catalog, users: UserIndex, source: String, namespace: &str) -> AppBuilder {
        AppBuilder::new(Source::Fixed(config_watch::fixed(catalog, users, source)), namespace)
    }

    /// Watches `namespace`'s ConfigMaps and applies for real.
    pub fn cluster(setup: ClusterSetup, namespace: &str) -> AppBuilder {
        AppBuilder::new(Source::Cluster(Box::new(setup)), namespace)
    }

    /// Serves whatever `snapshot` holds, writing nothing (tests drive the snapshot).
    pub fn from_snapshot(snapshot: watch::Receiver<Snapshot>, namespace: &str) -> AppBuilder {
        AppBuilder::new(Source::Snapshot(snapshot), namespace)
    }
}

impl AppBuilder {
    fn new(source: Source, namespace: &str) -> Self {
        Self {
            source,
            namespace: namespace.to_owned(),
            auth: Authenticator::default(),
            metrics: Metrics::default(),
            limits: Limits::default(),
            launcher: LauncherSetup::default(),
            render_cache_bytes: DEFAULT_RENDER_CACHE_BYTES,
        }
    }

    /// JSP's spawner API (default: at its default prefix, no images listed, tokens only).
    pub fn launcher(mut self, launcher: LauncherSetup) -> Self {
        self.launcher = launcher;
        self
    }

    /// Who may call (default: nobody is checked).
    pub fn auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Bytes of render answers kept (default: 8 MiB, as the flag's default).
    pub fn render_cache_bytes(mut self, bytes: u64) -> Self {
        self.render_cache_bytes = bytes;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the state and the router, and starts the background tasks (cluster mode: the
    /// ConfigMap watch and the lifecycle controller). Needs a Tokio runtime.
    pub fn build(self) -> App {
        let AppBuilder { source, namespace, auth, metrics, limits, launcher, render_cache_bytes } = self;
        let (snapshot, backend, store, tasks) = match source {
            Source::Fixed(sender) => {
                (sender.subscribe(), Backend::DryRun, SettingsStore::memory(sender), Vec::new())
            }
            Source::Snapshot(snapshot) => (snapshot, Backend::DryRun, SettingsStore::ReadOnly, Vec::new()),
            Source::Cluster(setup) => {
                let ClusterSetup { client, selector, rules, reaping, quota, spawn_concurrency } = *setup;
                let (snapshot, watch) =
                    config_watch::start(client.clone(), &namespace, selector, rules, metrics.clone());
                let (owners, lifecycle) =
                    lifecycle::start(client.clone(), &namespace, reaping, metrics.clone());
                let store =
                    SettingsStore::Cluster(Box::new(kube::Api::namespaced(client.clone(), &namespace)));
                let clusters = Clusters::with_spawn_concurrency(client, spawn_concurrency);
                let backend = Backend::Cluster(ClusterBackend { clusters, owners, quota });
                (snapshot, backend, store, vec![watch, lifecycle])
            }
        };
        let state = Arc::new(AppState {
            snapshot,
            backend,
            planner: Planner::default(),
            renders: Renders::new(render_cache_bytes),
            namespace,
            auth,
            metrics,
            launcher: Launcher {
                prefix: launcher.prefix,
                images: launcher.images,
                store,
                oauth: launcher.oauth,
            },
            shutting_down: Arc::new(AtomicBool::new(false)),
        });
        App { router: api::router(state.clone(), limits), state, tasks }
    }
}
