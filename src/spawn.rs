//! One spawn, end to end: plan (resolve and render), quota, apply, wait for the Ray head, and
//! the answer the notebook's spawner gets. The HTTP edge and the CLI only parse and print.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

/// Plans (resolves and renders) a few at a time, on the request's own thread while plans are
/// cheap, and off the async runtime's threads once one was not: a plan of the repo's profiles
/// takes ~30 µs, less than handing it to another thread costs (BENCHMARKS.md round 7), while a
/// large template or configuration can take milliseconds that would stall every request
/// sharing the thread, `/healthz` included. Waiting for a slot costs no thread.
#[derive(Debug)]
pub struct Planner {
    slots: tokio::sync::Semaphore,
    /// How long the last plan took (µs), whichever thread it ran on.
    last_micros: Arc<AtomicU64>,
}

/// A plan that took longer sends the next one off the runtime's threads. Tokio's guidance is
/// 10–100 µs between two `.await`s; this leaves room for a loaded machine.
const INLINE_PLAN_MICROS: u64 = 500;

impl Default for Planner {
    /// One slot per CPU: planning is CPU-bound.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    }
}

impl Planner {
    pub fn new(slots: usize) -> Self {
        Self { slots: tokio::sync::Semaphore::new(slots.max(1)), last_micros: Arc::default() }
    }

    pub async fn plan(
        &self,
        catalog: Arc<Catalog>,
        users: Arc<UserIndex>,
        request: &SpawnRequest,
        namespace: &str,
    ) -> Result<Plan, PlanError> {
        let (request, namespace) = (request.clone(), namespace.to_owned());
        self.run(move || plan::plan_with(&catalog, users.get(&request.user), &request, &namespace)).await
    }

    /// Runs `work` in a slot, inline or off the runtime's threads as the last plan's time says.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let _slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let last = self.last_micros.clone();
        // Timed inside, so waiting for a blocking thread on a busy machine does not count.
        let timed = move || {
            let started = Instant::now();
            let out = work();
            last.store(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            out
        };
        if self.last_micros.load(Ordering::Relaxed) < INLINE_PLAN_MICROS {
            return timed();
        }
        let planned = tokio::task::spawn_blocking(timed).await;
        planned.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// [`render`] through the planner (see [`Planner`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Which thread ran the work, after it took `micros`.
    fn work(micros: u64) -> impl FnOnce() -> std::thread::ThreadId + Send + 'static {
        move || {
            std::thread::sleep(std::time::Duration::from_micros(micros));
            std::thread::current().id()
        }
    }

    #[tokio::test]
    async fn cheap_plans_run_inline_and_one_that_took_long_sends_the_next_off_the_runtime() {
        let planner = Planner::new(1);
        let here = std::thread::current().id();
        assert_eq!(planner.run(work(0)).await, here, "a first plan runs inline");
        assert_eq!(planner.run(work(5 * INLINE_PLAN_MICROS)).await, here, "a slow plan is only known after");
        assert_ne!(planner.run(work(0)).await, here, "the plan after a slow one runs off the runtime");
        assert_eq!(planner.run(work(0)).await, here, "and once one is cheap again, the next is inline");
    }
}
