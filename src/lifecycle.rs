//! Nothing outlives its notebook. Two watches (owner ConfigMaps, notebook pods) feed:
//! - adoption: once KubeSpawner's notebook pod exists, the owner ConfigMap gets an
//!   ownerReference to it, so the cluster dies with the pod even if the hub never calls stop;
//! - the reaper: owner ConfigMaps whose notebook never appeared (or is gone) past a grace
//!   period, and Ray clusters this service rendered whose owner is missing, are deleted;
//! - quotas: how many clusters a user (and everyone) has, without an API call per spawn.
//!
//! Several replicas may run this at once: adoption is an idempotent server-side apply with its
//! own field manager, and every delete carries a uid precondition, so a second replica's
//! attempt is a harmless 404/409.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, OwnerReference, Time};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use crate::naming;
use crate::plan::{self, OWNER_SELECTOR};

/// KubeSpawner's marks on a notebook pod.
const NOTEBOOK_SELECTOR: &str = "component=singleuser-server";
const USERNAME_KEY: &str = "hub.jupyter.org/username";
const SERVERNAME_KEY: &str = "hub.jupyter.org/servername";
/// A field manager of its own, so a spawn's apply of the owner never drops the adoption.
const ADOPTION_MANAGER: &str = "singleuser-profiles-lifecycle";

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
        let of_user = owners.iter().filter(|cm| cm.labels().get(plan::USER_LABEL) == Some(&label)).count();
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

/// How long an owner may wait for its notebook, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Reaping {
    /// Zero disables the reaper (e.g. with a spawner that runs no pods).
    pub grace: Duration,
    pub interval: Duration,
}

/// Starts the watches, adoption and the reaper for `namespace`.
pub fn start(client: Client, namespace: &str, reaping: Reaping) -> (Owners, tokio::task::JoinHandle<()>) {
    let (owners, owners_writer) = reflector::store::<OwnerMeta>();
    let (pods, pods_writer) = reflector::store::<PodMeta>();
    let owner_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let owner_meta: Api<OwnerMeta> = Api::namespaced(client.clone(), namespace);
    let pod_meta: Api<PodMeta> = Api::namespaced(client.clone(), namespace);
    let owner_events = reflector::reflector(
        owners_writer,
        watcher(owner_meta, watcher::Config::default().labels(OWNER_SELECTOR))
            .modify(|o| o.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    let pod_events = reflector::reflector(
        pods_writer,
        watcher(pod_meta, watcher::Config::default().labels(NOTEBOOK_SELECTOR))
            .modify(|p| p.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();

    let namespace = namespace.to_owned();
    let store = owners.clone();
    let task = tokio::spawn(async move {
        let mut events = futures::stream::select(
            owner_events.map(|e| e.map(|_| ())).boxed(),
            pod_events.map(|e| e.map(|_| ())).boxed(),
        );
        let mut tick = tokio::time::interval(if reaping.grace.is_zero() {
            Duration::from_secs(3600)
        } else {
            reaping.interval
        });
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(())) => adopt_all(&owner_api, &store, &pods).await,
                    Some(Err(err)) => tracing::warn!(error = %err, "lifecycle watch failed; retrying"),
                    None => break,
                },
                _ = tick.tick() => {
                    if !reaping.grace.is_zero() {
                        reap(&client, &namespace, &owner_api, &store, &pods, reaping.grace).await;
                    }
                }
            }
        }
    });
    (Owners(owners), task)
}

/// The notebook a pod serves: (raw user, raw server), from KubeSpawner's annotations (raw
/// names) or, failing those, its labels.
fn notebook_of(pod: &PodMeta) -> Option<(String, String)> {
    let read = |key: &str| pod.annotations().get(key).or_else(|| pod.labels().get(key)).cloned();
    Some((read(USERNAME_KEY)?, read(SERVERNAME_KEY).unwrap_or_default()))
}

/// Notebook pods by the owner ConfigMap name they belong to.
fn notebooks(pods: &Store<PodMeta>) -> BTreeMap<String, Arc<PodMeta>> {
    pods.state()
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let (user, server) = notebook_of(&pod)?;
            Some((naming::owner_configmap_name(&user, &server), pod))
        })
        .collect()
}

fn owned_by_pod(owner: &OwnerMeta) -> bool {
    owner.owner_references().iter().any(|r| r.kind == "Pod")
}

async fn adopt_all(api: &Api<ConfigMap>, owners: &Store<OwnerMeta>, pods: &Store<PodMeta>) {
    let notebooks = notebooks(pods);
    for owner in owners.state() {
        let Some(pod) = notebooks.get(&owner.name_any()) else { continue };
        let pod_uid = pod.uid().unwrap_or_default();
        if owner.owner_references().iter().any(|r| r.uid == pod_uid) {
            continue;
        }
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": owner.name_any(),
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod_uid}],
            },
        });
        match api
            .patch(&owner.name_any(), &PatchParams::apply(ADOPTION_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(owner = %owner.name_any(), pod = %pod.name_any(), "cluster now lives and dies with its notebook pod")
            }
            Err(err) => {
                tracing::warn!(owner = %owner.name_any(), error = %err, "adopting an owner by its notebook pod failed; will retry")
            }
        }
    }
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

async fn reap(
    client: &Client,
    namespace: &str,
    api: &Api<ConfigMap>,
    owners: &Store<OwnerMeta>,
    pods: &Store<PodMeta>,
    grace: Duration,
) {
    let notebooks = notebooks(pods);
    for owner in owners.state() {
        if owned_by_pod(&owner)
            || notebooks.contains_key(&owner.name_any())
            || age(owner.metadata.creation_timestamp.as_ref()) < grace
        {
            continue;
        }
        match api.delete(&owner.name_any(), &delete_params(owner.uid())).await {
            Ok(_) => {
                tracing::info!(owner = %owner.name_any(), grace_seconds = grace.as_secs(), "reaped a cluster whose notebook never appeared")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => tracing::warn!(owner = %owner.name_any(), error = %err, "reaping failed; will retry"),
        }
    }

    // Ray clusters whose owner is gone (garbage collection covers those whose ownerReference
    // survived; this covers the rest).
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ray.io", "v1", "RayCluster"),
        "rayclusters",
    );
    let rays: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let managed = format!("{}={}", plan::MANAGED_BY_LABEL, plan::MANAGED_BY);
    // Metadata only, in pages, and parsed into the few fields used here: whole RayClusters
    // made each pass a list of tens of MB with a thousand clusters, and even a metadata page
    // of 250 parsed whole (managedFields) briefly took ~9 MB.
    let request = kube::core::Request::new(DynamicObject::url_path(&ar, Some(namespace)));
    let mut list = Vec::new();
    let mut params = ListParams::default().labels(&managed).limit(250);
    loop {
        let Ok(page) = request.list_metadata(&params) else { return };
        let Ok(page) = client.request::<ClusterPage>(page).await else { return };
        list.extend(page.items.into_iter().flatten().map(|item| item.metadata));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let live: std::collections::HashSet<String> = owners.state().iter().filter_map(|o| o.uid()).collect();
    for rc in list {
        let owned = rc.owner_references.iter().any(|r| r.kind == "ConfigMap" && live.contains(&r.uid));
        if owned || age(rc.creation_timestamp.as_ref()) < grace {
            continue;
        }
        match rays.delete(&rc.name, &delete_params(rc.uid)).await {
            Ok(_) => tracing::info!(cluster = %rc.name, "reaped a Ray cluster whose owner is missing"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => tracing::warn!(cluster = %rc.name, error = %err, "reaping failed; will retry"),
        }
    }
}

/// A page of RayCluster metadata with only what the reaper reads; serde skips the rest
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
        let p = pod(&[(USERNAME_KEY, "Eje@RedHat.com"), (SERVERNAME_KEY, "gpu")], &[(USERNAME_KEY, "-45je")]);
        assert_eq!(notebook_of(&p), Some(("Eje@RedHat.com".into(), "gpu".into())));
        let p = pod(&[], &[(USERNAME_KEY, "alice")]);
        assert_eq!(notebook_of(&p), Some(("alice".into(), String::new())));
        assert_eq!(notebook_of(&pod(&[], &[])), None);
    }

    #[test]
    fn quota_errors_name_the_limit() {
        let per_user = QuotaError::PerUser { user: "a".into(), held: 2, limit: 2 };
        assert!(per_user.to_string().contains("limit per user is 2"));
        assert!(QuotaError::Total { held: 9, limit: 9 }.to_string().contains("limit is 9"));
    }
}
