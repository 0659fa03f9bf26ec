//! Nothing outlives its notebook. A kube-runtime [`Controller`] reconciles each owner ConfigMap
//! on its own, triggered by changes to it and to notebook pods:
//! - adoption: once KubeSpawner's notebook pod exists, the owner ConfigMap gets an
//!   ownerReference to it, so the cluster dies with the pod even if the hub never calls stop;
//! - the reaper: an owner whose notebook never appeared (or is gone) is deleted once its grace
//!   period is over (the reconcile requeues itself for that moment);
//! - failures are logged, counted and retried for that owner alone, with exponential backoff.
//!
//! A periodic sweep deletes Ray clusters this service rendered whose owner is missing (garbage
//! collection cannot see those), and the owners' store answers quotas without an API call.
//!
//! Several replicas may run this at once: adoption is an idempotent server-side apply with its
//! own field manager, and every delete carries a uid precondition, so a second replica's
//! attempt is a harmless 404/409.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use crate::labels::{
    self, NOTEBOOK_SELECTOR, NOTEBOOK_SERVERNAME_KEY, NOTEBOOK_USERNAME_KEY, OWNER_SELECTOR,
};
use crate::metrics::Metrics;
use crate::naming;
use crate::ray::RayCluster;

/// A field manager of its own, so a spawn's apply of the owner never drops the adoption.
const ADOPTION_MANAGER: &str = "singleuser-profiles-lifecycle";
/// Retries of one owner's failed reconcile: 1 s, 2 s, 4 s, ... at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Watched objects are kept as metadata only, without managedFields: everything here reads
/// names, labels, annotations, uids and ownerReferences, and a thousand whole notebook pods
/// would otherwise sit in memory.
type OwnerMeta = PartialObjectMeta<ConfigMap>;
type PodMeta = PartialObjectMeta<Pod>;

/// The owner ConfigMaps of the watched namespace, as last seen.
#[derive(Clone)]
pub struct Owners(Store<OwnerMeta>);

impl Owners {
    /// Clusters held: by this user, and by everyone.
    pub fn count(&self, user: &str) -> (usize, usize) {
        let owners = self.0.state();
        let label = naming::label_value(user);
        let of_user = owners.iter().filter(|cm| cm.labels().get(labels::USER_LABEL) == Some(&label)).count();
        (of_user, owners.len())
    }

    pub fn exists(&self, name: &str) -> bool {
        self.0.state().iter().any(|cm| cm.name_any() == name)
    }
}

/// Caps on concurrent clusters; 0 = no cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quota {
    pub per_user: usize,
    pub total: usize,
}

/// Why a new cluster would exceed a cap.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaError {
    #[error(
        "user `{user}` already has {held} Ray cluster(s), the limit per user is {limit}: stop one of them first"
    )]
    PerUser { user: String, held: usize, limit: usize },
    #[error(
        "the service already runs {held} Ray clusters, its limit is {limit}: try again later or ask an admin"
    )]
    Total { held: usize, limit: usize },
}

impl Quota {
    /// Respawning a server that already has its cluster never counts as a new one.
    pub fn check(&self, owners: &Owners, user: &str, owner_name: &str) -> Result<(), QuotaError> {
        if owners.exists(owner_name) {
            return Ok(());
        }
        let (of_user, total) = owners.count(user);
        if self.per_user > 0 && of_user >= self.per_user {
            return Err(QuotaError::PerUser { user: user.to_owned(), held: of_user, limit: self.per_user });
        }
        if self.total > 0 && total >= self.total {
            return Err(QuotaError::Total { held: total, limit: self.total });
        }
        Ok(())
    }
}

/// How long an owner may wait for its notebook, and how often to sweep for stray clusters.
#[derive(Debug, Clone, Copy)]
pub struct Reaping {
    /// Zero disables the reaper (e.g. with a spawner that runs no pods).
    pub grace: Duration,
    pub interval: Duration,
}

/// What one reconcile could not do; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("adopting {owner} by its notebook pod {pod} failed: {source}")]
    Adopt { owner: String, pod: String, source: kube::Error },
    #[error("reaping {owner} failed: {source}")]
    Reap { owner: String, source: kube::Error },
}

struct Context {
    owners: Api<ConfigMap>,
    pods: Store<PodMeta>,
    grace: Duration,
    metrics: Metrics,
    /// Consecutive failures per owner, for its backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Starts the watches, the controller and the stray-cluster sweep for `namespace`.
pub fn start(
    client: Client,
    namespace: &str,
    reaping: Reaping,
    metrics: Metrics,
) -> (Owners, tokio::task::JoinHandle<()>) {
    let (owners, owners_writer) = reflector::store::<OwnerMeta>();
    let (pods, pods_writer) = reflector::store::<PodMeta>();
    let owner_meta: Api<OwnerMeta> = Api::namespaced(client.clone(), namespace);
    let pod_meta: Api<PodMeta> = Api::namespaced(client.clone(), namespace);
    let owner_events = reflector::reflector(
        owners_writer,
        watcher::watcher(owner_meta, watcher::Config::default().labels(OWNER_SELECTOR))
            .modify(|o| o.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    let pod_events = reflector::reflector(
        pods_writer,
        watcher::watcher(pod_meta, watcher::Config::default().labels(NOTEBOOK_SELECTOR))
            .modify(|p| p.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();

    let ns = namespace.to_owned();
    let context = Arc::new(Context {
        owners: Api::namespaced(client.clone(), namespace),
        pods,
        grace: reaping.grace,
        metrics: metrics.clone(),
        failures: Mutex::default(),
    });
    let controller = Controller::for_stream(owner_events, owners.clone())
        .watches_stream(pod_events, move |pod: PodMeta| {
            let (user, server) = notebook_of(&pod)?;
            Some(ObjectRef::new(&naming::owner_configmap_name(&user, &server)).within(&ns))
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "lifecycle controller");
            }
        });

    let sweep = sweep_strays(client, namespace.to_owned(), Owners(owners.clone()), reaping, metrics);
    let task = tokio::spawn(async move {
        tokio::join!(controller, sweep);
    });
    (Owners(owners), task)
}

/// One owner: adopt it by its notebook pod, or reap it once its grace period is over.
async fn reconcile(owner: Arc<OwnerMeta>, ctx: Arc<Context>) -> Result<Action, LifecycleError> {
    let name = owner.name_any();
    if owner.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let notebook = ctx.pods.state().into_iter().find(|pod| {
        pod.metadata.deletion_timestamp.is_none()
            && notebook_of(pod)
                .is_some_and(|(user, server)| naming::owner_configmap_name(&user, &server) == name)
    });
    let action = match notebook {
        Some(pod) => adopt(&ctx, &owner, &pod).await?,
        None => reap(&ctx, &owner).await?,
    };
    ctx.failures.lock().expect("failures lock").remove(&name);
    Ok(action)
}

async fn adopt(ctx: &Context, owner: &OwnerMeta, pod: &PodMeta) -> Result<Action, LifecycleError> {
    let pod_uid = pod.uid().unwrap_or_default();
    if owner.owner_references().iter().any(|r| r.uid == pod_uid) {
        return Ok(Action::await_change());
    }
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": owner.name_any(),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod_uid}],
        },
    });
    ctx.owners
        .patch(&owner.name_any(), &PatchParams::apply(ADOPTION_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|source| LifecycleError::Adopt { owner: owner.name_any(), pod: pod.name_any(), source })?;
    tracing::info!(owner = %owner.name_any(), pod = %pod.name_any(), "cluster now lives and dies with its notebook pod");
    Ok(Action::await_change())
}

async fn reap(ctx: &Context, owner: &OwnerMeta) -> Result<Action, LifecycleError> {
    // An owner adopted by a pod that is gone is garbage collected by Kubernetes.
    if ctx.grace.is_zero() || owner.owner_references().iter().any(|r| r.kind == "Pod") {
        return Ok(Action::await_change());
    }
    let age = age(owner.metadata.creation_timestamp.as_ref());
    if age < ctx.grace {
        return Ok(Action::requeue(ctx.grace - age));
    }
    match ctx.owners.delete(&owner.name_any(), &delete_params(owner.uid())).await {
        Ok(_) => {
            tracing::info!(owner = %owner.name_any(), grace_seconds = ctx.grace.as_secs(), "reaped a cluster whose notebook never appeared")
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => return Err(LifecycleError::Reap { owner: owner.name_any(), source }),
    }
    Ok(Action::await_change())
}

/// Logs and counts the failure, and retries this owner alone: 1 s, 2 s, 4 s, ... 5 min.
fn error_policy(owner: Arc<OwnerMeta>, err: &LifecycleError, ctx: Arc<Context>) -> Action {
    ctx.metrics.lifecycle_errors.inc();
    let mut failures = ctx.failures.lock().expect("failures lock");
    let count = failures.entry(owner.name_any()).or_default();
    *count = count.saturating_add(1);
    let retry = backoff(*count);
    tracing::warn!(error = %err, retry_seconds = retry.as_secs(), "lifecycle: will retry");
    Action::requeue(retry)
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// The notebook a pod serves: (raw user, raw server), from KubeSpawner's annotations (raw
/// names) or, failing those, its labels.
fn notebook_of(pod: &PodMeta) -> Option<(String, String)> {
    let read = |key: &str| pod.annotations().get(key).or_else(|| pod.labels().get(key)).cloned();
    Some((read(NOTEBOOK_USERNAME_KEY)?, read(NOTEBOOK_SERVERNAME_KEY).unwrap_or_default()))
}

fn age(created: Option<&Time>) -> Duration {
    let created = created.map_or(0, |t| t.0.as_second());
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    Duration::from_secs(u64::try_from(now - created).unwrap_or(0))
}

/// A delete that only ever removes the very object seen (uid precondition), so replicas
/// reaping side by side cannot remove a newer object of the same name.
fn delete_params(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions { uid, resource_version: None }),
        ..Default::default()
    }
}

/// Every `interval`, deletes the Ray clusters of ours whose owner is missing and whose grace
/// period is over. A failed pass is logged and counted; the next one retries.
async fn sweep_strays(client: Client, namespace: String, owners: Owners, reaping: Reaping, metrics: Metrics) {
    if reaping.grace.is_zero() {
        return;
    }
    // Until the owners are listed every cluster would look ownerless: a restarted replica
    // must not delete them all.
    if owners.0.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(reaping.interval);
    loop {
        tick.tick().await;
        if let Err(err) = sweep_once(&client, &namespace, &owners, reaping.grace).await {
            metrics.lifecycle_errors.inc();
            tracing::warn!(error = %err, "sweeping for Ray clusters without an owner failed; the next pass retries");
        }
    }
}

async fn sweep_once(
    client: &Client,
    namespace: &str,
    owners: &Owners,
    grace: Duration,
) -> Result<(), kube::Error> {
    // Metadata only, in pages, and parsed into the few fields used here: whole RayClusters
    // made each pass a list of tens of MB with a thousand clusters, and even a metadata page
    // of 250 parsed whole (managedFields) briefly took ~9 MB.
    let request = kube::core::Request::new(RayCluster::url_path(&(), Some(namespace)));
    let mut list = Vec::new();
    let mut params = ListParams::default().labels(labels::MANAGED_SELECTOR).limit(250);
    loop {
        let page = request.list_metadata(&params).map_err(kube::Error::BuildRequest)?;
        let page = match client.request::<ClusterPage>(page).await {
            Ok(page) => page,
            // No KubeRay, no Ray clusters.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => return Err(err),
        };
        list.extend(page.items.into_iter().flatten().map(|item| item.metadata));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let live: HashSet<String> = owners.0.state().iter().filter_map(|o| o.uid()).collect();
    let rays: Api<RayCluster> = Api::namespaced(client.clone(), namespace);
    for rc in list {
        let owned = rc.owner_references.iter().any(|r| r.kind == "ConfigMap" && live.contains(&r.uid));
        if owned || age(rc.creation_timestamp.as_ref()) < grace {
            continue;
        }
        match rays.delete(&rc.name, &delete_params(rc.uid)).await {
            Ok(_) => tracing::info!(cluster = %rc.name, "reaped a Ray cluster whose owner is missing"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// A page of RayCluster metadata with only what the sweep reads; serde skips the rest
/// (managedFields above all) without building it.
#[derive(Deserialize)]
struct ClusterPage {
    metadata: ListMeta,
    /// `null` when nothing matches.
    items: Option<Vec<ClusterItem>>,
}

#[derive(Deserialize)]
struct ClusterItem {
    metadata: ClusterMeta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterMeta {
    name: String,
    uid: Option<String>,
    creation_timestamp: Option<Time>,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> PodMeta {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut pod = PodMeta::default();
        pod.metadata.annotations = Some(map(annotations));
        pod.metadata.labels = Some(map(labels));
        pod
    }

    #[test]
    fn notebooks_are_named_by_kubespawners_raw_annotations_first() {
        let p = pod(
            &[(NOTEBOOK_USERNAME_KEY, "Eje@RedHat.com"), (NOTEBOOK_SERVERNAME_KEY, "gpu")],
            &[(NOTEBOOK_USERNAME_KEY, "-45je")],
        );
        assert_eq!(notebook_of(&p), Some(("Eje@RedHat.com".into(), "gpu".into())));
        let p = pod(&[], &[(NOTEBOOK_USERNAME_KEY, "alice")]);
        assert_eq!(notebook_of(&p), Some(("alice".into(), String::new())));
        assert_eq!(notebook_of(&pod(&[], &[])), None);
    }

    #[test]
    fn quota_errors_name_the_limit() {
        let per_user = QuotaError::PerUser { user: "a".into(), held: 2, limit: 2 };
        assert!(per_user.to_string().contains("limit per user is 2"));
        assert!(QuotaError::Total { held: 9, limit: 9 }.to_string().contains("limit is 9"));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 4, 9, 10, 40].map(|n| backoff(n).as_secs()).into();
        assert_eq!(waits, [1, 2, 4, 8, 256, 300, 300]);
    }
}
