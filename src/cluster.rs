//! The Kubernetes edge for Ray clusters: apply a plan (all or nothing), wait for the head,
//! stop (delete the owner, garbage collection does the rest) and report status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind, Status};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::plan::{self, Owner, Plan};
use crate::ray::RayCluster;
use crate::{labels, naming, pointer};

/// The one field manager every write uses, so re-applying is a no-op and ownership is clear.
pub const FIELD_MANAGER: &str = "singleuser-profiles";

/// A client whose every API call is bounded in time (a spawn fails fast with 503 when the API
/// server is gone) and in concurrency (a spawn storm queues here instead of overloading the
/// API server, which would answer 429). Both bound only the wait for response headers, so
/// watches are unaffected.
///
/// Unlike kube's own stack, it offers HTTP/2 by ALPN (falling back to HTTP/1.1), so the calls in
/// flight and the watches share one connection instead of holding one TLS connection each
/// (BENCHMARKS.md round 8: ~2 MiB less at a storm's peak; the calls' own buffers are the rest).
/// Keep-alive pings find a connection that died silently, which would otherwise hang every
/// watch on it. The config's read and write timeouts are not applied: kubeconfigs cannot set
/// them and `serve` leaves them unset, as kube does by default.
pub fn bounded_client(
    config: kube::Config,
    call_timeout: Duration,
    concurrency: usize,
) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt as _;
    use tower::ServiceBuilder;

    let limits = ServiceBuilder::new()
        .concurrency_limit(concurrency)
        .layer(tower::timeout::TimeoutLayer::new(call_timeout));
    if config.proxy_url.is_some() {
        // Proxies are kube's business (its features decide which it speaks).
        return Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&limits).build());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                kube::Error::Service(format!("the kubeconfig's tls-server-name {name:?}: {e}").into())
            })?;
            tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => tls,
    };
    let connector = tls.enable_all_versions().wrap_connector(http);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(limits)
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}

/// Why the cluster did not do what a spawn, stop or status asked.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the API server rejected {object}: {reason}")]
    Rejected { object: String, reason: String, code: u16 },
    #[error(
        "{object}: the cluster does not serve kind {kind} of {api_version}; install its CRD or change the template"
    )]
    UnknownKind { object: String, api_version: String, kind: String },
    #[error("Ray cluster {cluster} did not become ready within {} s; it was removed", waited.as_secs())]
    NotReady { cluster: String, waited: Duration },
    #[error("the Kubernetes API server is unavailable: {0}")]
    Unavailable(String),
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
}

/// A spawn as applied: the objects as the API server stored them.
#[derive(Debug, Clone)]
pub struct Applied {
    pub objects: Vec<Value>,
    /// What a failure after this point must remove: the owner when this spawn created it, and
    /// the objects this spawn created (indexes into `objects`).
    owner_created: bool,
    created: Vec<usize>,
}

/// One of a user's Ray clusters, as `GET /users/{user}/clusters` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterStatus {
    pub name: String,
    pub namespace: String,
    pub server: String,
    pub profile: String,
    pub ready: bool,
    pub state: Option<String>,
    pub head_pod: Option<String>,
    pub head_pod_ip: Option<String>,
    pub dashboard_url: Option<String>,
    pub created: Option<String>,
    pub age_seconds: Option<i64>,
    pub objects: Vec<String>,
}

/// Applies plans and deletes what they made, through one client and a discovery cache.
#[derive(Clone)]
pub struct Clusters {
    client: Client,
    kinds: Arc<RwLock<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>>,
    spawn_slots: Arc<tokio::sync::Semaphore>,
}

/// Spawns written at once unless configured otherwise; see [`Clusters::spawn_slot`]. 128 kept
/// a 1,000-user storm within 1.1x of direct applies and under 64 MiB (BENCHMARKS.md).
pub const DEFAULT_SPAWN_CONCURRENCY: usize = 128;

impl Clusters {
    pub fn new(client: Client) -> Self {
        Self::with_spawn_concurrency(client, DEFAULT_SPAWN_CONCURRENCY)
    }

    pub fn with_spawn_concurrency(client: Client, spawns: usize) -> Self {
        let spawn_slots = Arc::new(tokio::sync::Semaphore::new(spawns.max(1)));
        Self { client, kinds: Arc::default(), spawn_slots }
    }

    /// Waits for a turn to write a spawn. Spawns past the limit queue here holding only their
    /// request, not their plan and API answers: a storm of 1,000 students stays small.
    pub async fn spawn_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.spawn_slots.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Applies the owner ConfigMap, then every rendered object owned by it, those at once: they
    /// need the owner's uid, not each other, so a spawn takes two round trips instead of one
    /// per object. On any failure, what this spawn created is removed before the error is
    /// returned; every apply has ended by then, so none lands after the roll-back.
    ///
    /// The plan's rendered objects are moved out as they are sent (the stored ones replace
    /// them), so a spawn never holds both copies at once.
    pub async fn apply(&self, plan: &mut Plan) -> Result<Applied, ClusterError> {
        let owner = &plan.owner;
        let profile = plan.profile.slug.clone().unwrap_or_default();
        let owner_cm = owner.configmap(&plan.cluster_name, &profile, &plan.objects);
        let (owner_obj, owner_created) = self.apply_object(&owner_cm).await?;
        let uid = pointer::str(&owner_obj, "/metadata/uid").unwrap_or_default().to_owned();
        let owner_ref = json!([{
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": owner.configmap_name(),
            "uid": uid,
            "blockOwnerDeletion": true,
        }]);

        let outcomes =
            futures::future::join_all(std::mem::take(&mut plan.objects).into_iter().map(|mut object| {
                object["metadata"]["ownerReferences"] = owner_ref.clone();
                async move { self.apply_object(&object).await }
            }))
            .await;
        let mut created = Vec::new();
        let mut applied = Vec::with_capacity(outcomes.len());
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok((stored, was_created)) => {
                    if was_created {
                        created.push(applied.len());
                    }
                    applied.push(stored);
                }
                Err(err) => {
                    if let Some(first) = &failure {
                        tracing::debug!(error = %err, first = %first, "another object of the failed spawn failed too");
                    } else {
                        failure = Some(err);
                    }
                }
            }
        }
        if let Some(err) = failure {
            self.roll_back(owner, owner_created, created.iter().map(|&i| &applied[i])).await;
            return Err(err);
        }
        Ok(Applied { objects: applied, owner_created, created })
    }

    /// With a waiting profile, waits (bounded) for the Ray head; on timeout or failure, what
    /// the spawn created is removed. Returns the objects, the RayCluster as it became ready.
    pub async fn await_ready(&self, plan: &Plan, applied: Applied) -> Result<Vec<Value>, ClusterError> {
        let Applied { mut objects, owner_created, created } = applied;
        let (Some(timeout), Some(index)) = (plan.wait(), objects.iter().position(plan::is_ray_cluster))
        else {
            return Ok(objects);
        };
        let outcome = match self.wait_ready(&objects[index], timeout).await {
            Ok(Some(ready)) => {
                objects[index] = ready;
                return Ok(objects);
            }
            Ok(None) => ClusterError::NotReady { cluster: plan.cluster_name.clone(), waited: timeout },
            Err(err) => err,
        };
        self.roll_back(&plan.owner, owner_created, created.iter().map(|&i| &objects[i])).await;
        Err(outcome)
    }

    /// Deletes the owner ConfigMap; garbage collection removes the rest. Returns whether it existed.
    pub async fn stop(&self, owner: &Owner) -> Result<bool, ClusterError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &owner.namespace);
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match api.delete(&owner.configmap_name(), &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(err) => Err(classify(err)),
        }
    }

    /// The user's clusters in `namespace`: one owner ConfigMap list and one RayCluster list.
    pub async fn status(&self, user: &str, namespace: &str) -> Result<Vec<ClusterStatus>, ClusterError> {
        let user_label = format!("{}={}", labels::USER_LABEL, naming::label_value(user));
        let owner_params = ListParams::default().labels(&format!("{},{user_label}", labels::OWNER_SELECTOR));
        let params = ListParams::default().labels(&format!("{},{user_label}", labels::MANAGED_SELECTOR));
        let owners: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let owners = owners.list(&owner_params).await.map_err(classify)?;
        let ray_clusters: BTreeMap<String, RayCluster> =
            match Api::<RayCluster>::namespaced(self.client.clone(), namespace).list(&params).await {
                Ok(list) => {
                    list.items.into_iter().filter_map(|rc| Some((rc.metadata.name.clone()?, rc))).collect()
                }
                // Without KubeRay there are no Ray clusters to report, only their owners.
                Err(kube::Error::Api(status)) if status.code == 404 => BTreeMap::new(),
                Err(err) => return Err(classify(err)),
            };
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut out: Vec<ClusterStatus> = owners
            .items
            .into_iter()
            .filter(|cm| cm.data.as_ref().and_then(|d| d.get("user")).map(String::as_str) == Some(user))
            .map(|cm| {
                let data = cm.data.clone().unwrap_or_default();
                let name = data.get("cluster").cloned().unwrap_or_default();
                let rc = ray_clusters.get(&name);
                let status = rc.and_then(|rc| rc.status.as_ref());
                let head = status.and_then(|s| s.head.as_ref());
                let created = cm.metadata.creation_timestamp.as_ref().map(|t| t.0);
                ClusterStatus {
                    ready: rc.is_some_and(RayCluster::head_ready),
                    state: status.and_then(|s| s.state.clone()),
                    head_pod: head.and_then(|h| h.pod_name.clone()),
                    head_pod_ip: head.and_then(|h| h.pod_ip.clone()),
                    dashboard_url: data.get("dashboard_url").cloned(),
                    created: created.map(|t| t.to_string()),
                    age_seconds: created.map(|t| now.as_second() - t.as_second()),
                    namespace: namespace.to_owned(),
                    server: data.get("server").cloned().unwrap_or_default(),
                    profile: data.get("profile").cloned().unwrap_or_default(),
                    objects: data
                        .get("objects")
                        .map(|o| o.lines().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    name,
                }
            })
            .collect();
        out.sort_by(|a, b| a.server.cmp(&b.server));
        Ok(out)
    }

    /// Server-side apply of one object; also tells whether this call created it (201).
    async fn apply_object(&self, object: &Value) -> Result<(Value, bool), ClusterError> {
        let described = describe(object);
        let (ar, caps) = self.resource(&gvk_of(object)).await.map_err(|err| match err {
            ClusterError::UnknownKind { api_version, kind, .. } => {
                ClusterError::UnknownKind { object: described.clone(), api_version, kind }
            }
            other => other,
        })?;
        let name = pointer::str(object, "/metadata/name").unwrap_or_default();
        let namespace = pointer::str(object, "/metadata/namespace");
        let url = match caps.scope {
            Scope::Namespaced => DynamicObject::url_path(&ar, namespace),
            Scope::Cluster => DynamicObject::url_path(&ar, None),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let request = kube::core::Request::new(url)
            .patch(name, &params, &Patch::Apply(object))
            .map_err(|e| ClusterError::Kube(kube::Error::BuildRequest(e)))?;
        let response = self.client.send(request.map(kube::client::Body::from)).await.map_err(classify)?;
        let code = response.status();
        let body = response.into_body().collect_bytes().await.map_err(classify)?;
        if !code.is_success() {
            let status: Status = serde_json::from_slice(&body).unwrap_or_else(|_| {
                Status::failure(&String::from_utf8_lossy(&body), "").with_code(code.as_u16())
            });
            if code.is_server_error() || code.as_u16() == 429 {
                return Err(ClusterError::Kube(kube::Error::Api(status.boxed())));
            }
            return Err(ClusterError::Rejected {
                object: described,
                reason: status.message,
                code: code.as_u16(),
            });
        }
        let stored =
            serde_json::from_slice(&body).map_err(|e| ClusterError::Kube(kube::Error::SerdeError(e)))?;
        Ok((without_managed_fields(stored), code == http::StatusCode::CREATED))
    }

    /// Resolves a kind through discovery once; later calls hit the cache.
    async fn resource(&self, gvk: &GroupVersionKind) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        if let Some(found) = self.kinds.read().await.get(gvk) {
            return Ok(found.clone());
        }
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok(found) => {
                self.kinds.write().await.insert(gvk.clone(), found.clone());
                Ok(found)
            }
            Err(kube::Error::Discovery(_)) => Err(unknown_kind(gvk)),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(unknown_kind(gvk)),
            Err(err) => Err(classify(err)),
        }
    }

    /// Waits for KubeRay to report the head pod ready; `None` on timeout.
    async fn wait_ready(&self, rc: &Value, timeout: Duration) -> Result<Option<Value>, ClusterError> {
        let namespace = pointer::str(rc, "/metadata/namespace").unwrap_or_default();
        let name = pointer::str(rc, "/metadata/name").unwrap_or_default();
        let api = Api::<RayCluster>::namespaced(self.client.clone(), namespace);
        let ready = |rc: Option<&RayCluster>| rc.is_some_and(RayCluster::head_ready);
        match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api, name, ready)).await {
            Ok(Ok(obj)) => Ok(obj.and_then(|o| serde_json::to_value(o).ok()).map(without_managed_fields)),
            Ok(Err(err)) => Err(ClusterError::Unavailable(err.to_string())),
            Err(_) => Ok(None),
        }
    }

    /// Removes what a failed spawn created: the owner when it is new (garbage collection
    /// follows), and the created objects directly so nothing lingers meanwhile.
    async fn roll_back<'a>(
        &self,
        owner: &Owner,
        owner_created: bool,
        created: impl DoubleEndedIterator<Item = &'a Value>,
    ) {
        for object in created.rev() {
            if let Err(err) = self.delete_object(object).await {
                tracing::warn!(object = %describe(object), error = %err, "rolling back a failed spawn: delete failed");
            }
        }
        if owner_created && let Err(err) = self.stop(owner).await {
            tracing::warn!(owner = %owner.configmap_name(), error = %err, "rolling back a failed spawn: owner delete failed");
        }
    }

    async fn delete_object(&self, object: &Value) -> Result<(), ClusterError> {
        let (ar, caps) = self.resource(&gvk_of(object)).await?;
        let name = pointer::str(object, "/metadata/name").unwrap_or_default();
        let api = match (caps.scope, pointer::str(object, "/metadata/namespace")) {
            (Scope::Namespaced, Some(ns)) => {
                Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
            }
            _ => Api::<DynamicObject>::all_with(self.client.clone(), &ar),
        };
        let params =
            DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(classify(err)),
        }
    }
}

fn describe(object: &Value) -> String {
    let kind = pointer::str(object, "/kind").unwrap_or("object");
    let name = pointer::str(object, "/metadata/name").unwrap_or("<unnamed>");
    format!("{kind} {name}")
}

/// An object as the API server stored it, without its field-manager bookkeeping: that is most
/// of its size and no caller reads it, so dropping it keeps a spawn storm's memory and every
/// spawn answer small.
fn without_managed_fields(mut object: Value) -> Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    object
}

fn gvk_of(object: &Value) -> GroupVersionKind {
    let api_version = pointer::str(object, "/apiVersion").unwrap_or_default();
    let kind = pointer::str(object, "/kind").unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

fn unknown_kind(gvk: &GroupVersionKind) -> ClusterError {
    let api_version =
        if gvk.group.is_empty() { gvk.version.clone() } else { format!("{}/{}", gvk.group, gvk.version) };
    ClusterError::UnknownKind { object: gvk.kind.clone(), api_version, kind: gvk.kind.clone() }
}

/// Transport failures mean the API server is unavailable (503 to callers); the rest stays as is.
fn classify(err: kube::Error) -> ClusterError {
    match &err {
        kube::Error::HyperError(_) | kube::Error::Service(_) => ClusterError::Unavailable(err.to_string()),
        kube::Error::Api(status) if status.code == 503 || status.code == 504 => {
            ClusterError::Unavailable(status.message.clone())
        }
        _ => ClusterError::Kube(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_split_into_group_version_kind() {
        let gvk = gvk_of(&json!({"apiVersion": "ray.io/v1", "kind": "RayCluster"}));
        assert_eq!(
            (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()),
            ("ray.io", "v1", "RayCluster")
        );
        let core = gvk_of(&json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
    }
}
