//! One spawn, end to end: plan (resolve and render), quota, apply, wait for the Ray head, and
//! the answer the notebook's spawner gets. The HTTP edge and the CLI only parse and print.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::catalog::watch::Snapshot;
use crate::catalog::{Catalog, UserIndex};
use crate::cluster::{ClusterError, Clusters};
use crate::lifecycle::{Owners, Quota, QuotaError};
use crate::plan::{self, Plan, PlanError, PodSettings, SpawnRequest};
use crate::profile::{Resolved, UserSettings};

/// Where spawns go.
pub enum Backend {
    /// Nothing is written anywhere; spawn answers what it would apply.
    DryRun,
    /// A cluster: objects are applied for real.
    Cluster(ClusterBackend),
}

/// A cluster's clients and the caps on what may run in it.
pub struct ClusterBackend {
    pub clusters: Clusters,
    /// The owner ConfigMaps of the service's namespace, for quotas.
    pub owners: Owners,
    pub quota: Quota,
}

/// What was (or would be) applied for a notebook server, and what the notebook gets: the body
/// of `POST /api/v1/spawn` and `/render`, and of `render -o json`.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub dry_run: bool,
    pub cluster: String,
    pub namespace: String,
    pub owner: String,
    pub profile: Resolved,
    /// In JSP's order (see [`Plan::environment`]).
    pub environment: IndexMap<String, Value>,
    pub pod: PodSettings,
    pub objects: Vec<Value>,
}

impl Answer {
    /// What `plan` gives with `objects` (as applied, or as rendered in a dry run).
    fn new(plan: Plan, objects: Vec<Value>, dry_run: bool) -> Self {
        let (environment, pod, owner) = (plan.environment(&objects), plan.pod(), plan.owner.configmap_name());
        Self {
            dry_run,
            cluster: plan.cluster_name,
            namespace: plan.owner.namespace,
            owner,
            profile: plan.profile,
            environment,
            pod,
            objects,
        }
    }

    /// A dry run's answer: the objects as rendered.
    fn rendered(mut plan: Plan) -> Self {
        let objects = std::mem::take(&mut plan.objects);
        Self::new(plan, objects, true)
    }
}

/// Why a spawn did not happen; nothing it created is left behind.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("profiles are not loaded yet")]
    NotLoaded,
    /// Loaded, but no profile can give anyone a Ray cluster (see `Catalog::unusable`).
    #[error("{0}")]
    NoProfiles(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Plans (resolves and renders) off the async runtime's threads, a few at a time: a large
/// template or configuration costs CPU that would otherwise stall every request sharing the
/// thread, `/healthz` included. Waiting for a slot costs no thread.
#[derive(Debug)]
pub struct Planner {
    slots: tokio::sync::Semaphore,
}

impl Default for Planner {
    /// One slot per CPU: planning is CPU-bound.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    }
}

impl Planner {
    pub fn new(slots: usize) -> Self {
        Self { slots: tokio::sync::Semaphore::new(slots.max(1)) }
    }

    pub async fn plan(
        &self,
        catalog: Arc<Catalog>,
        users: Arc<UserIndex>,
        request: &SpawnRequest,
        namespace: &str,
    ) -> Result<Plan, PlanError> {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let (request, namespace) = (request.clone(), namespace.to_owned());
        let planned = tokio::task::spawn_blocking(move || {
            plan::plan_with(&catalog, users.get(&request.user), &request, &namespace)
        })
        .await;
        planned.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// [`render`] off the runtime's threads.
    pub async fn render(
        &self,
        catalog: Arc<Catalog>,
        users: Arc<UserIndex>,
        request: &SpawnRequest,
        namespace: &str,
    ) -> Result<Answer, SpawnError> {
        Ok(Answer::rendered(self.plan(catalog, users, request, namespace).await?))
    }
}

/// What would be applied, without writing anything; `settings` are the user's own.
pub fn render(
    catalog: &Catalog,
    settings: Option<&UserSettings>,
    request: &SpawnRequest,
    namespace: &str,
) -> Result<Answer, PlanError> {
    Ok(Answer::rendered(plan::plan_with(catalog, settings, request, namespace)?))
}

impl Backend {
    /// Plans against the newest catalog, checks the quotas, applies (all or nothing) and, for
    /// waiting profiles, waits for the Ray head. `namespace` is the service's own.
    pub async fn spawn(
        &self,
        planner: &Planner,
        snapshot: &watch::Receiver<Snapshot>,
        request: &SpawnRequest,
        namespace: &str,
    ) -> Result<Answer, SpawnError> {
        let ClusterBackend { clusters, owners, quota } = match self {
            Backend::DryRun => {
                let (catalog, users) = config(snapshot)?;
                return planner.render(catalog, users, request, namespace).await;
            }
            Backend::Cluster(cluster) => cluster,
        };
        // Planning and writing take a slot; waiting for the Ray head does not.
        let slot = clusters.spawn_slot().await;
        // Boxed: a spawn queued for a slot then holds a small future instead of the whole
        // state machine of planning, applying and waiting (~14 KB per queued spawn).
        Box::pin(async {
            let (catalog, users) = config(snapshot)?;
            let mut plan = planner.plan(catalog, users, request, namespace).await?;
            // Quotas count the watched namespace, where notebooks normally run.
            if plan.owner.namespace == namespace {
                quota.check(owners, &request.user, &plan.owner.configmap_name())?;
            }
            let applied = clusters.apply(&mut plan).await?;
            drop(slot);
            let objects = clusters.await_ready(&plan, applied).await?;
            Ok(Answer::new(plan, objects, false))
        })
        .await
    }
}

/// The newest catalog and users' settings, once the first full ConfigMap list is in and some
/// profile can give a Ray cluster.
pub fn config(snapshot: &watch::Receiver<Snapshot>) -> Result<(Arc<Catalog>, Arc<UserIndex>), SpawnError> {
    let snapshot = snapshot.borrow();
    if !snapshot.loaded {
        return Err(SpawnError::NotLoaded);
    }
    if let Some(reason) = snapshot.catalog.unusable() {
        return Err(SpawnError::NoProfiles(reason.to_owned()));
    }
    Ok((snapshot.catalog.clone(), snapshot.users.clone()))
}
